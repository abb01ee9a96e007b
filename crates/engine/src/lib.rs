//! `ime-engine`: the hybrid engine — a disk engine (the source of truth) and an in-memory
//! cache of hot regions that serves consistent MVCC reads, whatever Raft does.
//!
//! The facade carries out what `ime-controller` decides — for each `RaftEvent` (through
//! [`Engine::on_event`], or a bus via [`Engine::observer`]), load, eviction and fence —
//! with threads, locks, the memory store (`ime-memkv`) and the disk (`ime-disk`).
//!
//! # The promise
//! A read served from memory returns exactly what the disk returns at the same snapshot:
//! - a write goes to disk, then to memory; while it is between the two, readers of its
//!   regions read the state just before it, so a snapshot sees a batch on both sides or
//!   on neither;
//! - a snapshot is served from memory only when the region is Active, its cached epoch
//!   version equals the reader's, it holds every entry up to the reader's applied index
//!   and read_ts is above its safe point;
//! - every event that changes data outside the write path (snapshot apply, ingest, delete
//!   range, flashback, merge catch-up, peer destroy) evicts before the call returns, and
//!   its data reaches the disk only through a fence ([`Engine::begin_bypass`]): no load
//!   of the fenced ranges takes its disk snapshot until the fence is finished, so no load
//!   can copy data that is about to be replaced;
//! - a write, event or read that reveals a missed event evicts with `EpochGap` or
//!   `IndexGap` — never a panic.
//!
//! # Example
//! ```
//! use ime_disk::{Cf, MemDisk};
//! use ime_engine::{ApplyHeader, Config, Engine, HybridWriteBatch};
//! use ime_region::{KeyRange, ReadRequest, Region, RegionEpoch, RegionId};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new(MemDisk::new(), Config::default())?;
//! let epoch = RegionEpoch::new(1, 1);
//! let region = Region::new(RegionId(1), KeyRange::new("a", "z")?, epoch);
//! engine.load_region(region, 0)?;
//! assert!(engine.wait_idle(Duration::from_secs(10)));
//!
//! let mut batch = HybridWriteBatch::new();
//! batch
//!     .prepare(ApplyHeader { region: RegionId(1), epoch, first_index: 1, last_index: 1 })
//!     .put(Cf::Default, "k", "v");
//! engine.write(&batch)?;
//!
//! let read = |applied_index| ReadRequest { epoch_version: 1, applied_index, read_ts: 100 };
//! let snapshot = engine.snapshot(RegionId(1), read(1));
//! assert!(snapshot.from_memory());
//! assert_eq!(snapshot.get(Cf::Default, b"k")?, Some(b"v".to_vec()));
//! // A reader that applied an entry the cache never saw: evicted, served from disk.
//! let ahead = engine.snapshot(RegionId(1), read(5));
//! assert!(!ahead.from_memory());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
// A new variant of an enum the engine matches (events, read misses, eviction reasons,
// lifecycle states, tasks) must not compile until every match says what it does with it.
#![deny(clippy::wildcard_enum_match_arm)]

mod background;
mod batch;
mod engine;
mod error;
mod events;
mod fence;
mod mvcc;
mod read;
#[cfg(feature = "testing")]
mod reference;
mod shared;
#[cfg(feature = "testing")]
mod testing;

pub use ime_controller as controller;
/// The layers below, re-exported so that an embedder (the simulator) needs only this crate.
pub use ime_disk as disk;
pub use ime_eviction as eviction;
pub use ime_observer as observer;
pub use ime_region as region;

pub use background::Difference;
pub use batch::{ApplyHeader, HybridWriteBatch};
pub use engine::{Engine, WriteOutcome};
pub use error::EngineError;
pub use fence::BypassFence;
pub use ime_controller::{
    Admission, ByteSize, Config, ConfigError, Fallback, ReadableDuration, Refusal, Warmup,
};
pub use ime_disk::DiskReader;
pub use ime_memkv::mvcc::{KvPair, MvccError};
pub use ime_metrics::{Collections, Compactions, Fences, Gaps, Loads, Snapshots, Stats};
pub use read::{HybridIter, HybridSnapshot};
#[cfg(feature = "testing")]
pub use reference::reference_scan;
pub use shared::{Background, TaskKind};
#[cfg(feature = "testing")]
pub use testing::LoadStage;

impl<D: ime_disk::DiskEngine> Engine<D> {
    /// Compares every Active region's memory with the disk at one sequence number and
    /// returns the differences (none, when the engine keeps its promise). The ticker runs
    /// it every `cross-check-interval` when that is set.
    pub fn cross_check(&self) -> Vec<Difference> {
        self.core.cross_check()
    }
}
