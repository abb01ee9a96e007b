//! `ime-metrics`: the hybrid engine's counters, defined once.
//!
//! [`Metrics`] holds them in a Prometheus registry of their own — cached regions by state,
//! memory, snapshots by source (memory, or the reason they fell back to disk), evictions
//! by reason and how long they took, loads, GC collections and their durations, gaps,
//! Raft events, fences, compactions, cross-check differences, read latencies by source,
//! wasted snapshots (the read path's counters are sharded by thread: readers never share
//! one), bytes loaded and freed, the oldest and newest safe point — and reads them back
//! as a typed [`Stats`] snapshot: a counter that does not exist does not compile, where
//! one looked up by name would silently read 0.
//!
//! An embedder mounts them in its own registry through [`SharedMetrics`].
//!
//! ```
//! use ime_metrics::{LoadResult, Metrics, SharedMetrics, Source};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let metrics = Arc::new(Metrics::new());
//! metrics.served(Source::Memory);
//! metrics.loaded(LoadResult::Ok, Duration::from_millis(3));
//! let stats = metrics.stats();
//! assert_eq!((stats.snapshots.from_memory, stats.loads.ok), (1, 1));
//! metrics.set_gauges(&[], 4096, 1024);
//! assert!(metrics.text().contains("ime_memory_bytes 4096"));
//! assert!(metrics.text().contains("ime_memory_spare_bytes 1024"));
//!
//! // Beside the embedder's own metrics, in its registry.
//! let theirs = prometheus::Registry::new();
//! theirs.register(Box::new(SharedMetrics(Arc::clone(&metrics)))).unwrap();
//! let names: Vec<String> = theirs.gather().iter().map(|f| f.name().to_owned()).collect();
//! assert!(names.iter().any(|n| n == "ime_memory_bytes"), "{names:?}");
//! ```
#![forbid(unsafe_code)]

mod latency;
mod metrics;
mod reads;
mod sharded;
mod stats;

pub use latency::{ReadLatencies, ReadOp, TIMED_ONE_IN};
pub use metrics::{Metrics, SharedMetrics};
pub use reads::{Difference, IterWork, MvccWork, ReadCounters, WorkTally};
pub(crate) use sharded::ShardedCounts;
pub use stats::{
    CollectResult, Collections, CompactResult, Compactions, FenceEvent, Fences, GapSource, Gaps,
    LoadResult, Loads, Snapshots, Source, Stats,
};
