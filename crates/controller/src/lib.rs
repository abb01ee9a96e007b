//! `ime-controller`: the cache's decisions, as a pure state machine.
//!
//! The engine keeps threads, locks, the memory store, the disk and the read and write
//! paths; every decision about *which* region is cached, loaded, evicted or held back is
//! taken here, by a [`Controller`] that owns:
//!
//! - the region map (`ime-region`'s [`ime_region::RegionMap`]: lifecycle states, epochs,
//!   applied indexes, snapshots, safe points);
//! - the peer table: every region heard of, as Raft has it, led here or not, with its
//!   last applied index and size;
//! - which memory range holds each cached region, and what GC has collected in it;
//! - pins, leader-transfer warm-ups and their deadlines, loads deferred behind evictions,
//!   and fences over disk changes outside the write path;
//! - admission: may this region load now — queued, fenced, deferred or refused with a
//!   typed [`Refusal`] — one answer whoever asks (the embedder, a warm-up, a pin, the
//!   policy, a reload after a merge, a deferred retry).
//!
//! It has no thread, clock, lock or I/O (a tidy test keeps it so; the one exception is
//! each region's applied index, a counter [`Controller::try_on_applied`] moves on through
//! a shared reference): time and the memory in
//! use come in as an [`Env`], and every call returns what the engine must do as ordered
//! [`Decisions`] — drop this memory range, split that one, queue a load, queue a delete,
//! fire these callbacks, report this gap. The event table ([`Controller::on_event`]) is
//! one exhaustive `match` over `RaftEvent`, tested event by event in transcripts.
//!
//! ```
//! use ime_controller::{Action, Admission, Config, Controller, Decisions, Env};
//! use ime_observer::RaftEvent;
//! use ime_region::{EvictReason, KeyRange, Region, RegionEpoch, RegionId};
//!
//! let mut ctl = Controller::new(Config::default());
//! let region = Region::new(RegionId(1), KeyRange::new("a", "m").unwrap(), RegionEpoch::new(1, 1));
//! let env = Env::default();
//! let mut out = Decisions::new();
//! assert_eq!(ctl.request_load(region.clone(), 0, env, &mut out), Ok(Admission::Queued));
//! assert!(out.actions().iter().any(|a| matches!(a, Action::Load(RegionId(1)))));
//!
//! // A snapshot applied to the region: it is evicted before the call returns.
//! let mut out = Decisions::new();
//! let event = RaftEvent::ApplySnapshot { before: None, after: region, applied_index: 9 };
//! ctl.on_event(&event, env, &mut out).unwrap();
//! assert!(out.actions().iter().any(|a| matches!(
//!     a,
//!     Action::Evicted { reason: EvictReason::ApplySnapshot, .. }
//! )));
//! ```
#![forbid(unsafe_code)]
// A new variant of an enum the controller matches (events, outcomes, states) must not
// compile until every match says what it does with it.
#![deny(clippy::wildcard_enum_match_arm)]

mod config;
mod controller;
mod decision;
mod events;
mod loads;

pub use config::{
    ByteSize, Config, ConfigError, ReadableDuration, TSO_LOGICAL_BITS, TimestampSource,
};
pub use controller::{Cached, Controller, FenceId, Peer, Warmup};
pub use decision::{
    Action, Admission, Decisions, Env, Fallback, GcTarget, LoadSource, LoadStart, Refusal,
    SplitPart,
};
