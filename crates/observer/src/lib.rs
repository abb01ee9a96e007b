//! `ime-observer`: how IME hears about everything the Raft layer does to regions.
//!
//! - [`RaftEvent`]: one closed enum with every event that can change a region's range,
//!   epoch, role or data; each variant documents what the cache must do. Consumers
//!   `match` it exhaustively, so a new event does not compile until it is handled.
//! - [`EventBus`]: observers registered with a priority; per-region FIFO delivery;
//!   synchronous dispatch for events that change what a read may see (the publish call
//!   returns only after every observer has returned), a bounded queue for statistics and
//!   hints where an overflow is reported as a [`DeliveryGap`], never dropped silently;
//!   an observer's panic or error is contained and reported.
//! - The journal ([`JournalWriter`], [`read_journal`], [`replay`]): length-prefixed,
//!   checksummed bincode records, so a bug report comes with a file that replays the exact
//!   sequence.
//! - [`FaultyObserver`]: drops, delays or duplicates chosen kinds, to test gap detection.
//!
//! # Example: journal the seed sequence of tikv/tikv#17405 and replay it
//!
//! ```
//! use std::sync::Arc;
//! use ime_observer::*;
//! use ime_region::{KeyRange, Region, RegionEpoch, RegionId, SplitChild};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("ime-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("seed.journal");
//!
//! let bus = EventBus::new()?;
//! let journal = Arc::new(JournalObserver::new(JournalWriter::create(&path)?));
//! bus.register(journal, 100);
//!
//! let r = |v| Region::new(RegionId(34855), KeyRange::new("a", "z").unwrap(), RegionEpoch::new(v, 5));
//! let report = bus.publish(RaftEvent::ApplySnapshot { before: Some(r(221)), after: r(222), applied_index: 150 });
//! assert!(report.failures.is_empty());
//! let left = Region::new(RegionId(34855), KeyRange::new("a", "m")?, RegionEpoch::new(223, 5));
//! let right = Region::new(RegionId(40000), KeyRange::new("m", "z")?, RegionEpoch::new(223, 5));
//! let _ = bus.publish(RaftEvent::Split {
//!     before: r(222),
//!     children: vec![SplitChild { region: left, applied_index: 151 }, SplitChild { region: right, applied_index: 5 }],
//! });
//! bus.close();
//!
//! let recorder = Recorder::new("replay");
//! let (contents, errors) = replay(&path, &recorder)?;
//! assert!(errors.is_empty() && contents.truncated_at.is_none());
//! let kinds: Vec<_> = recorder.events().iter().map(RaftEvent::kind).collect();
//! assert_eq!(kinds, [EventKind::ApplySnapshot, EventKind::Split]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod bus;
mod event;
mod fault;
mod journal;
mod observer;
mod recorder;

pub use bus::{BusConfig, EventBus, ObserverFailure, ObserverId, ObserverStats, PublishReport};
pub use event::{Delivery, EventKind, PeerRole, RaftEvent};
pub use fault::{FaultAction, FaultRule, FaultyObserver};
pub use journal::{
    JournalContents, JournalEntry, JournalError, JournalObserver, JournalWriter, MAGIC, MAX_RECORD,
    read_journal, replay,
};
pub use observer::{DeliveryGap, GapCause, ObserverResult, RaftObserver};
pub use recorder::{Observed, Recorder};
