//! `ime-metrics`: the hybrid engine's counters, defined once.
//!
//! [`Metrics`] holds them in a Prometheus registry of their own — cached regions by state,
//! memory, snapshots by source (memory, or the reason they fell back to disk), evictions
//! by reason and how long they took, loads, GC collections and their durations, gaps,
//! Raft events, fences, compactions, cross-check differences — and reads them back as a
//! typed [`Stats`] snapshot: a counter that does not exist does not compile, where one
//! looked up by name would silently read 0.
//!
//! ```
//! use ime_metrics::{LoadResult, Metrics, Source};
//! use std::time::Duration;
//!
//! let metrics = Metrics::new();
//! metrics.served(Source::Memory);
//! metrics.loaded(LoadResult::Ok, Duration::from_millis(3));
//! let stats = metrics.stats();
//! assert_eq!((stats.snapshots.from_memory, stats.loads.ok), (1, 1));
//! assert!(metrics.render(&[("Active", 1)], 4096).contains("ime_memory_bytes 4096"));
//! ```
#![forbid(unsafe_code)]

mod metrics;
mod reads;
mod stats;

pub use metrics::Metrics;
pub use reads::{Difference, IterWork, MvccWork, ReadCounters, WorkTally};
pub use stats::{
    CollectResult, Collections, CompactResult, Compactions, FenceEvent, Fences, GapSource, Gaps,
    LoadResult, Loads, Snapshots, Source, Stats,
};
