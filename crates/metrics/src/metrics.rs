//! Prometheus metrics: cached regions by state, memory, hits and fallbacks by reason,
//! evictions by reason and their duration, loads, GC, gaps and events.

use std::time::{Duration, Instant};

use ime_controller::Action;
use ime_observer::EventKind;
use ime_region::{EvictReason, RegionEpoch, RegionId, RegionInfo, RegionState};

use crate::sharded::ShardedCounterVec;
use crate::{
    CollectResult, CompactResult, FenceEvent, GapSource, LoadResult, ReadLatencies, ReadOp, Source,
    Stats,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The engine's metrics, in their own registry (an embedder can gather it with its own).
pub struct Metrics {
    registry: Registry,
    regions: IntGaugeVec,
    memory: IntGauge,
    /// Spare arrays the memory store keeps for its next loads, beside `memory`.
    spare: IntGauge,
    /// Snapshots by source, a series per `Source::ALL` in order: sharded by thread, so
    /// that reader threads never share a counter (nor look a label up).
    reads: ShardedCounterVec,
    evictions: IntCounterVec,
    eviction_seconds: HistogramVec,
    loads: IntCounterVec,
    load_seconds: HistogramVec,
    gc_seconds: HistogramVec,
    gaps: IntCounterVec,
    events: IntCounterVec,
    differences: IntCounterVec,
    compactions: IntCounterVec,
    gc_collections: IntCounterVec,
    fences: IntCounterVec,
    latencies: ReadLatencies,
    /// Sharded: readers that drop snapshots unread count without meeting.
    wasted: ShardedCounterVec,
    bytes: IntCounterVec,
    safe_points: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    register(registry, &metric);
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = prometheus::exponential_buckets(0.0001, 4.0, 10).unwrap_or_default();
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|_| unreachable_metric(name));
    register(registry, &metric);
    metric
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: &M) {
    if let Err(err) = registry.register(Box::new(metric.clone())) {
        tracing::error!(%err, "metric not registered");
    }
}

/// Metric definitions are constants: a failure here is a programming error caught by
/// every test, never a runtime condition.
#[allow(
    clippy::panic,
    reason = "constant metric definitions; every test builds them"
)]
pub(crate) fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let regions = IntGaugeVec::new(
            Opts::new("ime_regions", "Cached regions by state."),
            &["state"],
        )
        .unwrap_or_else(|_| unreachable_metric("ime_regions"));
        register(&registry, &regions);
        let memory = IntGauge::new("ime_memory_bytes", "Bytes the memory store holds.")
            .unwrap_or_else(|_| unreachable_metric("ime_memory_bytes"));
        register(&registry, &memory);
        let spare = IntGauge::new(
            "ime_memory_spare_bytes",
            "Bytes of emptied run and memtable-copy arrays kept for the next loads and compactions, beside ime_memory_bytes.",
        )
        .unwrap_or_else(|_| unreachable_metric("ime_memory_spare_bytes"));
        register(&registry, &spare);
        let latencies = ReadLatencies::new();
        register(&registry, &latencies);
        let wasted = ShardedCounterVec::single(
            "ime_wasted_snapshots_total",
            "Snapshots served from memory and dropped without a read.",
        )
        .unwrap_or_else(|| unreachable_metric("ime_wasted_snapshots_total"));
        register(&registry, &wasted);
        let safe_points = IntGaugeVec::new(
            Opts::new(
                "ime_safe_point",
                "The oldest and the newest safe point of the cached regions (TSO).",
            ),
            &["which"],
        )
        .unwrap_or_else(|_| unreachable_metric("ime_safe_point"));
        register(&registry, &safe_points);
        let reads = ShardedCounterVec::new(
            "ime_snapshots_total",
            "Snapshots by source: memory, or the reason they fell back to disk.",
            "source",
            Source::ALL.iter().map(|s| s.label()).collect(),
        )
        .unwrap_or_else(|| unreachable_metric("ime_snapshots_total"));
        register(&registry, &reads);
        Metrics {
            regions,
            memory,
            spare,
            reads,
            evictions: counter(
                &registry,
                "ime_evictions_total",
                "Evictions by reason.",
                &["reason"],
            ),
            eviction_seconds: histogram(
                &registry,
                "ime_eviction_duration_seconds",
                "From eviction to the region's memory being freed, by reason.",
                &["reason"],
            ),
            loads: counter(
                &registry,
                "ime_loads_total",
                "Loads by result.",
                &["result"],
            ),
            load_seconds: histogram(
                &registry,
                "ime_load_duration_seconds",
                "Load durations.",
                &["result"],
            ),
            gc_seconds: histogram(
                &registry,
                "ime_gc_duration_seconds",
                "GC compaction durations.",
                &["cf"],
            ),
            gc_collections: counter(
                &registry,
                "ime_gc_collections_total",
                "GC collections by result: collected, lost (a concurrent compaction \
                 installed first; retried), range_gone (split or evicted; the next round \
                 collects the children), failed.",
                &["result"],
            ),
            fences: counter(
                &registry,
                "ime_fences_total",
                "Fences over disk changes outside the write path: begun, finished, \
                 abandoned (dropped without finish: their ranges stay evicted), and \
                 held_loads (loads a fence held back until it lifted).",
                &["result"],
            ),
            gaps: counter(
                &registry,
                "ime_gaps_total",
                "Detected gaps by kind (IndexGap: a missed applied-index report; EpochGap: a \
                 missed epoch change; delivery: events the bus lost).",
                &["kind"],
            ),
            events: counter(
                &registry,
                "ime_raft_events_total",
                "Raft events handled, by kind.",
                &["kind"],
            ),
            differences: counter(
                &registry,
                "ime_cross_check_differences_total",
                "Differences the cross-checker found between memory and disk.",
                &["cf"],
            ),
            compactions: counter(
                &registry,
                "ime_compactions_total",
                "Compactions of memtables grown past their threshold, by result.",
                &["result"],
            ),
            bytes: counter(
                &registry,
                "ime_memory_bytes_total",
                "Bytes loaded into memory (loads) and freed (evicted regions deleted).",
                &["what"],
            ),
            latencies,
            wasted,
            safe_points,
            registry,
        }
    }

    /// A snapshot served from `source`.
    pub fn served(&self, source: Source) {
        self.reads.inc(source as usize);
    }

    /// A snapshot served from `source`, taken since `started` (counted, and timed when
    /// it was one to time: see [`ReadLatencies::start`]).
    #[inline]
    pub fn served_since(&self, source: Source, started: Option<Instant>) {
        self.served(source);
        let memory = source == Source::Memory;
        self.latencies.observe(ReadOp::Snapshot, memory, started);
    }

    /// A read `op` on a snapshot served from memory (`memory`) or disk took since
    /// `started` (when it was one to time: see [`ReadLatencies::start`]).
    #[inline]
    pub fn read_took(&self, op: ReadOp, memory: bool, started: Option<Instant>) {
        self.latencies.observe(op, memory, started);
    }

    /// The read latencies, for inspection.
    pub fn latencies(&self) -> &ReadLatencies {
        &self.latencies
    }

    /// A snapshot served from memory was dropped without a read: its registration held
    /// GC back for nothing.
    pub fn wasted_snapshot(&self) {
        self.wasted.inc(0);
    }

    /// A load copied `bytes` into memory.
    pub fn bytes_loaded(&self, bytes: u64) {
        self.bytes.with_label_values(&["loaded"]).inc_by(bytes);
    }

    /// Deleting an evicted region freed `bytes`.
    pub fn bytes_freed(&self, bytes: u64) {
        self.bytes.with_label_values(&["freed"]).inc_by(bytes);
    }

    /// A region evicted for `reason`.
    pub fn evicted(&self, reason: EvictReason) {
        self.evictions.with_label_values(&[reason.as_str()]).inc();
    }

    /// An eviction for `reason` ended (its memory freed) `took` after it began.
    pub fn eviction_took(&self, reason: EvictReason, took: Duration) {
        self.eviction_seconds
            .with_label_values(&[reason.as_str()])
            .observe(took.as_secs_f64());
    }

    /// A load ended with `result` after `took`.
    pub fn loaded(&self, result: LoadResult, took: Duration) {
        self.loads.with_label_values(&[result.label()]).inc();
        self.load_seconds
            .with_label_values(&[result.label()])
            .observe(took.as_secs_f64());
    }

    /// A GC compaction took `took`.
    pub fn gc_took(&self, took: Duration) {
        self.gc_seconds
            .with_label_values(&["all"])
            .observe(took.as_secs_f64());
    }

    /// A gap was detected.
    pub fn gap(&self, source: GapSource) {
        self.gaps.with_label_values(&[source.label()]).inc();
    }

    /// A Raft event of `kind` was handled.
    pub fn event(&self, kind: EventKind) {
        self.events.with_label_values(&[kind.as_str()]).inc();
    }

    /// Counts what a cross-check round found, by column family, and logs the first
    /// difference with their number (an error: memory must equal the disk).
    pub fn differences(&self, found: &[crate::Difference]) {
        for difference in found {
            let cf = difference.cf.name();
            self.differences.with_label_values(&[cf]).inc();
        }
        if let Some(first) = found.first() {
            tracing::error!(count = found.len(), %first, "memory differs from disk");
        }
    }

    /// A GC collection ended with `result`.
    pub fn gc_round(&self, result: CollectResult) {
        self.gc_collections
            .with_label_values(&[result.label()])
            .inc();
    }

    /// Something happened to a fence.
    pub fn fence(&self, event: FenceEvent) {
        self.fences.with_label_values(&[event.label()]).inc();
    }

    /// A memtable compaction ended with `result`.
    pub fn compacted(&self, result: CompactResult) {
        self.compactions.with_label_values(&[result.label()]).inc();
    }

    /// Every counter, typed.
    pub fn stats(&self) -> Stats {
        let get = |vec: &IntCounterVec, label: &str| {
            vec.get_metric_with_label_values(&[label])
                .map_or(0, |c| c.get())
        };
        let mut stats = Stats {
            evictions: EvictReason::ALL
                .iter()
                .map(|r| (*r, get(&self.evictions, r.as_str())))
                .collect(),
            events: EventKind::ALL
                .iter()
                .map(|k| (*k, get(&self.events, k.as_str())))
                .collect(),
            differences: ime_types::Cf::ALL
                .iter()
                .map(|cf| get(&self.differences, cf.name()))
                .sum(),
            wasted_snapshots: self.wasted.get(0),
            bytes_loaded: get(&self.bytes, "loaded"),
            bytes_freed: get(&self.bytes, "freed"),
            ..Stats::default()
        };
        for source in Source::ALL {
            *stats.snapshots.slot(*source) = self.reads.get(*source as usize);
        }
        for result in LoadResult::ALL {
            *stats.loads.slot(*result) = get(&self.loads, result.label());
        }
        for source in GapSource::ALL {
            *stats.gaps.slot(*source) = get(&self.gaps, source.label());
        }
        for result in CompactResult::ALL {
            *stats.compactions.slot(*result) = get(&self.compactions, result.label());
        }
        for result in CollectResult::ALL {
            *stats.collections.slot(*result) = get(&self.gc_collections, result.label());
        }
        for event in FenceEvent::ALL {
            *stats.fences.slot(*event) = get(&self.fences, event.label());
        }
        stats
    }

    /// Sets the gauges: cached regions by state (from the region listing), memory held
    /// and spare memory kept (`ime_memory_spare_bytes`).
    pub fn set_gauges(&self, regions: &[RegionInfo], memory: u64, spare: u64) {
        for state in RegionState::ALL {
            let count = regions.iter().filter(|r| r.state == state).count();
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.regions.with_label_values(&[state.as_str()]).set(count);
        }
        self.memory.set(i64::try_from(memory).unwrap_or(i64::MAX));
        self.spare.set(i64::try_from(spare).unwrap_or(i64::MAX));
        let safe_points = regions.iter().map(|r| r.safe_point);
        let (oldest, newest) = (safe_points.clone().min(), safe_points.max());
        for (which, value) in [("oldest", oldest), ("newest", newest)] {
            let value = i64::try_from(value.unwrap_or(0)).unwrap_or(i64::MAX);
            self.safe_points.with_label_values(&[which]).set(value);
        }
    }

    /// The registry every metric is in: an embedder gathers it beside its own, or
    /// registers the metrics in its own registry through [`SharedMetrics`].
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of the registry, gauges as last set.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "metrics not encoded");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Counts and logs a controller decision that asks for no work (gaps, evictions,
    /// lifecycle steps, refused and held loads); the others are counted where they are
    /// carried out.
    pub fn record(&self, action: &Action) {
        match action {
            Action::Gap { kind, .. } => {
                tracing::warn!(%action, "gap detected: the region is evicted");
                self.gap(GapSource::of(*kind));
            }
            Action::Evicted {
                region,
                epoch,
                reason,
                from,
                to,
            } => {
                self.evicted(*reason);
                lifecycle(*region, *epoch, from, to, reason.as_str());
            }
            Action::Step {
                region,
                epoch,
                from,
                to,
                why,
            } => lifecycle(*region, *epoch, from, to, why),
            Action::Refused { .. } => tracing::debug!(%action, "load refused"),
            Action::HeldByFence(_) => self.fence(FenceEvent::HeldLoad),
            Action::DropMemory { .. }
            | Action::SplitMemory { .. }
            | Action::Load(_)
            | Action::Delete(_)
            | Action::Fire(_) => {}
        }
    }
}

/// The one tracing line of a lifecycle step: region id, epoch, old and new state, reason.
fn lifecycle(region: RegionId, epoch: Option<RegionEpoch>, from: &str, to: &str, reason: &str) {
    let epoch = epoch.map(|e| e.to_string()).unwrap_or_default();
    tracing::info!(region = region.0, %epoch, from, to, reason, "region lifecycle");
}

/// The engine's metrics as one [`Collector`](prometheus::core::Collector), to register in
/// an embedder's own registry beside its metrics (`registry.register(Box::new(shared))`);
/// a clone of the engine's handle, so it stays current.
#[derive(Clone)]
pub struct SharedMetrics(pub std::sync::Arc<Metrics>);

impl prometheus::core::Collector for SharedMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0
            .collectors()
            .into_iter()
            .flat_map(|c| c.desc())
            .collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0
            .collectors()
            .into_iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

impl Metrics {
    /// Every metric, as a collector.
    fn collectors(&self) -> Vec<&dyn prometheus::core::Collector> {
        vec![
            &self.regions,
            &self.memory,
            &self.spare,
            &self.reads,
            &self.evictions,
            &self.eviction_seconds,
            &self.loads,
            &self.load_seconds,
            &self.gc_seconds,
            &self.gaps,
            &self.events,
            &self.differences,
            &self.compactions,
            &self.gc_collections,
            &self.fences,
            &self.latencies,
            &self.wasted,
            &self.bytes,
            &self.safe_points,
        ]
    }
}
