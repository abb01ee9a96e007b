//! [`ReadLatencies`]: how long snapshots, gets and scans take, by where they were served
//! from — histograms that reader threads fill without meeting each other.
//!
//! A Prometheus histogram is a handful of shared atomics: two reader threads observing
//! it bounce its cache lines at every read, which is the contention the read path is
//! built to avoid. Here each thread adds to a shard of its own (sixteen, threads spread
//! over them in turn, each shard on its own cache lines), and a scrape sums the shards.
//!
//! Reads are timed one in [`TIMED_ONE_IN`], drawn at random per thread and operation
//! ([`ReadLatencies::start`]): a clock read costs about 25 ns on the virtual machines
//! measured, and timing every snapshot and get took four of them, about a twelfth of a
//! cached point get. The histograms are a sample of the reads; the reads themselves are
//! counted elsewhere, every one.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// A timed read operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadOp {
    /// Taking a snapshot (`Engine::snapshot`).
    Snapshot,
    /// An MVCC point get.
    Get,
    /// An MVCC scan.
    Scan,
}

impl ReadOp {
    /// Every operation.
    pub const ALL: [ReadOp; 3] = [ReadOp::Snapshot, ReadOp::Get, ReadOp::Scan];

    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            ReadOp::Snapshot => "snapshot",
            ReadOp::Get => "get",
            ReadOp::Scan => "scan",
        }
    }
}

/// One read in this many is timed (see [`ReadLatencies::start`]).
pub const TIMED_ONE_IN: u64 = 16;

thread_local! {
    /// Per operation, the thread's generator of which reads to time (zero: not seeded).
    static DRAWS: [Cell<u64>; ReadOp::ALL.len()] =
        const { [const { Cell::new(0) }; ReadOp::ALL.len()] };
}

/// Whether this thread's next `op` is timed: one in [`TIMED_ONE_IN`] at random
/// (xorshift, seeded by the thread's lane), so that no pattern of reads a caller repeats
/// can keep one kind out of the sample.
fn draw(op: ReadOp) -> bool {
    DRAWS.with(|draws| {
        let Some(draw) = draws.get(op as usize) else {
            return true;
        };
        let mut x = draw.get();
        if x == 0 {
            let seed = (ime_types::lane() as u64 + 1).wrapping_mul(op as u64 + 1);
            x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        draw.set(x);
        x.is_multiple_of(TIMED_ONE_IN)
    })
}

/// Bucket upper bounds are 2^k microseconds, k in `0..BOUNDS` (1 µs to about 1 s); a last
/// bucket holds the rest.
const BOUNDS: usize = 21;
const SHARDS: usize = 16;
/// Series: each operation, served from memory or from disk.
const SERIES: usize = ReadOp::ALL.len() * 2;
const NAME: &str = "ime_read_duration_seconds";
const HELP: &str = "Snapshot, get and scan latencies, by where the snapshot was served from \
                    (memory or disk).";

/// One series' counts in one shard, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Cell64 {
    buckets: [AtomicU64; BOUNDS + 1],
    sum_nanos: AtomicU64,
}

/// Read latency histograms, sharded by thread; a Prometheus collector (clones share
/// the counts).
#[derive(Clone)]
pub struct ReadLatencies {
    shards: Arc<[[Cell64; SERIES]]>,
    desc: Desc,
}

impl Default for ReadLatencies {
    fn default() -> Self {
        ReadLatencies::new()
    }
}

/// The bucket of a duration: the smallest k with `nanos <= 2^k µs`, or the last.
fn bucket(nanos: u64) -> usize {
    let micros = nanos.div_ceil(1000);
    let k = if micros <= 1 {
        0
    } else {
        (u64::BITS - (micros - 1).leading_zeros()) as usize
    };
    k.min(BOUNDS)
}

impl ReadLatencies {
    /// Empty histograms.
    pub fn new() -> Self {
        let labels = vec!["op".to_owned(), "source".to_owned()];
        let desc = Desc::new(NAME.into(), HELP.into(), labels, HashMap::new())
            .unwrap_or_else(|_| crate::metrics::unreachable_metric(NAME));
        ReadLatencies {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
            desc,
        }
    }

    /// When this thread's `op` begins, if it is one to time: one in [`TIMED_ONE_IN`],
    /// drawn at random; `None` for the others, which read no clock. Hand it to
    /// [`ReadLatencies::observe`] when the read ends.
    #[inline]
    pub fn start(op: ReadOp) -> Option<Instant> {
        draw(op).then(Instant::now)
    }

    /// `op`, served from memory (`memory`) or disk, took from `started` until now (when
    /// it was timed: see [`ReadLatencies::start`]).
    #[inline]
    pub fn observe(&self, op: ReadOp, memory: bool, started: Option<Instant>) {
        if let Some(started) = started {
            self.observe_since(op, memory, started);
        }
    }

    fn observe_since(&self, op: ReadOp, memory: bool, started: Instant) {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let series = op as usize * 2 + usize::from(!memory);
        if let Some(cell) = self
            .shards
            .get(ime_types::lane() % SHARDS)
            .and_then(|s| s.get(series))
        {
            if let Some(count) = cell.buckets.get(bucket(nanos)) {
                count.fetch_add(1, Ordering::Relaxed);
            }
            cell.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// How many `op`s served from memory (`memory`) or disk were observed.
    pub fn count(&self, op: ReadOp, memory: bool) -> u64 {
        let series = op as usize * 2 + usize::from(!memory);
        let cells = self.shards.iter().filter_map(|s| s.get(series));
        cells
            .flat_map(|cell| cell.buckets.iter())
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    fn histogram(&self, series: usize) -> Histogram {
        let mut counts = [0u64; BOUNDS + 1];
        let mut sum_nanos = 0u64;
        for cell in self.shards.iter().filter_map(|s| s.get(series)) {
            for (total, count) in counts.iter_mut().zip(&cell.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.saturating_add(cell.sum_nanos.load(Ordering::Relaxed));
        }
        let mut histogram = Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BOUNDS);
        for (k, count) in counts.iter().take(BOUNDS).enumerate() {
            cumulative += count;
            let mut bucket = Bucket::default();
            bucket.set_cumulative_count(cumulative);
            bucket.set_upper_bound((1u64 << k) as f64 * 1e-6);
            buckets.push(bucket);
        }
        histogram.set_bucket(buckets);
        histogram.set_sample_count(counts.iter().sum());
        histogram.set_sample_sum(sum_nanos as f64 * 1e-9);
        histogram
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

impl Collector for ReadLatencies {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(NAME.to_owned());
        family.set_help(HELP.to_owned());
        family.set_field_type(MetricType::HISTOGRAM);
        for op in ReadOp::ALL {
            for (memory, source) in [(true, "memory"), (false, "disk")] {
                let mut metric = Metric::default();
                metric.set_label(vec![label("op", op.label()), label("source", source)]);
                metric.set_histogram(self.histogram(op as usize * 2 + usize::from(!memory)));
                family.mut_metric().push(metric);
            }
        }
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1_000), 0);
        assert_eq!(bucket(1_001), 1);
        assert_eq!(bucket(2_000), 1);
        assert_eq!(bucket(3_000), 2);
        assert_eq!(bucket(1 << 40), BOUNDS);
    }

    #[test]
    fn threads_fill_their_own_shards_and_a_scrape_sums_them() {
        let latencies = std::sync::Arc::new(ReadLatencies::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let latencies = std::sync::Arc::clone(&latencies);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let started = Instant::now()
                            .checked_sub(Duration::from_micros(3))
                            .unwrap();
                        latencies.observe(ReadOp::Get, true, Some(started));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        latencies.observe(ReadOp::Scan, false, Some(Instant::now()));
        latencies.observe(ReadOp::Scan, false, None); // not timed: not observed
        assert_eq!(latencies.count(ReadOp::Get, true), 400);
        assert_eq!(latencies.count(ReadOp::Get, false), 0);
        assert_eq!(latencies.count(ReadOp::Scan, false), 1);
        let family = &latencies.collect()[0];
        assert_eq!(family.get_metric().len(), 6);
        let get_memory = family.get_metric()[ReadOp::Get as usize * 2].get_histogram();
        assert_eq!(get_memory.get_sample_count(), 400);
        assert!(get_memory.get_sample_sum() >= 400.0 * 3e-6);
        // At least 3 µs each: none in the buckets up to 2 µs, all by the largest.
        let buckets = get_memory.get_bucket();
        assert_eq!(buckets[1].cumulative_count(), 0);
        assert_eq!(buckets[BOUNDS - 1].cumulative_count(), 400);
    }

    /// About one read in sixteen of each operation is timed, on each thread, and a
    /// thread that alternates two operations gets both into the sample.
    #[test]
    fn one_read_in_sixteen_of_each_operation_is_timed() {
        let timed = |ops: &'static [ReadOp]| {
            std::thread::spawn(move || {
                let mut timed = [0u64; 3];
                for _ in 0..16_000 {
                    for &op in ops {
                        timed[op as usize] += u64::from(ReadLatencies::start(op).is_some());
                    }
                }
                timed
            })
            .join()
            .unwrap()
        };
        let alone = timed(&[ReadOp::Get]);
        let both = timed(&[ReadOp::Snapshot, ReadOp::Get]);
        for count in [alone[1], both[0], both[1]] {
            assert!((800..1200).contains(&count), "{count} of 16,000 timed");
        }
        assert_eq!((alone[0], alone[2], both[2]), (0, 0, 0));
    }
}
