//! `ime-engine`, the hybrid engine; its overview, promise and example follow (`README.md`).
#![doc = include_str!("../README.md")]
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

pub use batch::HybridWriteBatch;
pub use engine::{Engine, WriteOutcome};
pub use error::EngineError;
pub use fence::BypassFence;
pub use ime_controller::{
    Admission, ByteSize, Config, ConfigError, Fallback, ReadableDuration, Refusal,
    TSO_LOGICAL_BITS, Warmup,
};
pub use ime_disk::DiskReader;
pub use ime_memkv::mvcc::{KvPair, MvccError};
pub use ime_metrics::{
    Collections, Compactions, Difference, Fences, Gaps, Loads, MvccWork, ReadOp, Snapshots, Stats,
    TIMED_ONE_IN,
};
pub use ime_region::ApplyHeader;
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
