//! [`ShardedCounts`]: counters that reader threads add to without meeting — each thread
//! adds to a shard of its own, on cache lines no other shard shares, and whoever reads
//! them sums the shards.
//!
//! One shared atomic that two reader threads add to moves its cache line from core to core
//! at every add: on the read path, that is the cost of a few hundred instructions, and it
//! grows with every reader. A thread adds to the shard of its lane ([`ime_types::lane`],
//! taken in turn), so that the threads running at one time (a handful, on a machine's
//! cores) each have one to themselves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};

/// Counters on one cache line.
const PER_LINE: usize = 8;

/// One cache line of counters.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Line([AtomicU64; PER_LINE]);

/// `width` counters, kept once per shard: a thread adds to its shard's, a read sums them.
#[derive(Debug)]
pub(crate) struct ShardedCounts {
    /// Shard `s`'s counter `i` is at line `s * lines + i / PER_LINE`.
    lines: Box<[Line]>,
    /// Lines per shard.
    per_shard: usize,
    shards: usize,
    width: usize,
}

impl ShardedCounts {
    /// `width` counters in `shards` shards (at least one of each), all zero. They take
    /// `shards * ceil(width / 8)` cache lines.
    pub(crate) fn new(shards: usize, width: usize) -> Self {
        let (shards, per_shard) = (shards.max(1), width.max(1).div_ceil(PER_LINE));
        ShardedCounts {
            lines: (0..shards * per_shard).map(|_| Line::default()).collect(),
            per_shard,
            shards,
            width,
        }
    }

    /// Counter `i` of shard `shard`, if there is one.
    fn cell(&self, shard: usize, i: usize) -> Option<&AtomicU64> {
        if i >= self.width {
            return None;
        }
        let line = self.lines.get(shard * self.per_shard + i / PER_LINE)?;
        line.0.get(i % PER_LINE)
    }

    /// Every shard's counter `i`.
    fn cells(&self, i: usize) -> impl Iterator<Item = &AtomicU64> {
        (0..self.shards).filter_map(move |s| self.cell(s, i))
    }

    /// Adds `n` to counter `i` (nothing beyond the width), in this thread's shard.
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) {
        if let Some(cell) = self.cell(ime_types::lane() % self.shards, i) {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `i`, summed over the shards.
    pub(crate) fn sum(&self, i: usize) -> u64 {
        self.cells(i).map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Counter `i`, summed over the shards, each reset to zero. An add that races with it
    /// lands either in this sum or in the next; none is lost.
    pub(crate) fn take(&self, i: usize) -> u64 {
        self.cells(i).map(|c| c.swap(0, Ordering::Relaxed)).sum()
    }
}

/// A Prometheus counter with one label, a series per value (or no label and one series:
/// [`ShardedCounterVec::single`]), kept in [`ShardedCounts`]: reader threads count
/// without meeting, a scrape sums the shards (clones share the counts).
#[derive(Clone, Debug)]
pub(crate) struct ShardedCounterVec {
    counts: Arc<ShardedCounts>,
    /// `None`: a counter without labels, its one series at index 0.
    label: Option<&'static str>,
    values: Vec<&'static str>,
    desc: Desc,
}

/// Shards of a [`ShardedCounterVec`]: as many as reader threads are likely to run at once.
const VEC_SHARDS: usize = 16;

impl ShardedCounterVec {
    /// Counter `name` with `help`, series `label=value` for each of `values`. `None` when
    /// Prometheus refuses the name or help.
    pub(crate) fn new(
        name: &str,
        help: &str,
        label: &'static str,
        values: Vec<&'static str>,
    ) -> Option<Self> {
        ShardedCounterVec::with(name, help, Some(label), values)
    }

    /// Counter `name` with `help` and no labels: one series, counted with `inc(0)`.
    /// `None` when Prometheus refuses the name or help.
    pub(crate) fn single(name: &str, help: &str) -> Option<Self> {
        ShardedCounterVec::with(name, help, None, vec![""])
    }

    fn with(
        name: &str,
        help: &str,
        label: Option<&'static str>,
        values: Vec<&'static str>,
    ) -> Option<Self> {
        let labels = label.map(String::from).into_iter().collect();
        let desc = Desc::new(name.into(), help.into(), labels, HashMap::new());
        Some(ShardedCounterVec {
            counts: Arc::new(ShardedCounts::new(VEC_SHARDS, values.len())),
            label,
            values,
            desc: desc.ok()?,
        })
    }

    /// Adds one to series `i` (the `i`-th value).
    #[inline]
    pub(crate) fn inc(&self, i: usize) {
        self.counts.add(i, 1);
    }

    /// Series `i`'s count.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.counts.sum(i)
    }
}

impl Collector for ShardedCounterVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        for (i, value) in self.values.iter().enumerate() {
            let pairs = (self.label.iter())
                .map(|label| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*label).to_owned());
                    pair.set_value((*value).to_owned());
                    pair
                })
                .collect();
            let mut counter = Counter::default();
            counter.set_value(self.get(i) as f64);
            let mut metric = Metric::default();
            metric.set_label(pairs);
            metric.set_counter(counter);
            family.mut_metric().push(metric);
        }
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_sum_up_and_taking_resets_them() {
        let counts = ShardedCounts::new(4, 10);
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let counts = &counts;
                s.spawn(move || {
                    for _ in 0..1000 {
                        counts.add(0, 1);
                        counts.add(9, t);
                    }
                });
            }
        });
        counts.add(10, 5); // beyond the width: nothing
        assert_eq!(counts.sum(0), 6000);
        assert_eq!(counts.sum(9), 1000 * (1 + 2 + 3 + 4 + 5));
        assert_eq!(counts.take(0), 6000);
        assert_eq!(
            (counts.sum(0), counts.sum(9), counts.sum(10)),
            (0, 15_000, 0)
        );
    }

    #[test]
    fn a_shard_is_a_cache_line_of_counters() {
        assert_eq!(std::mem::align_of::<Line>(), 64);
        assert_eq!(ShardedCounts::new(4, 9).lines.len(), 8);
        assert_eq!(ShardedCounts::new(4, 8).lines.len(), 4);
    }

    #[test]
    fn a_counter_vec_scrapes_one_series_per_value() {
        let vec = ShardedCounterVec::new("things_total", "Things.", "kind", vec!["a", "b"]);
        let vec = vec.unwrap_or_else(|| unreachable!("a valid name"));
        std::thread::scope(|s| {
            s.spawn(|| vec.inc(1));
            s.spawn(|| vec.inc(1));
        });
        vec.inc(0);
        let families = vec.collect();
        let series: Vec<(String, f64)> = families[0]
            .get_metric()
            .iter()
            .map(|m| {
                (
                    m.get_label()[0].value().to_owned(),
                    m.get_counter().get_value(),
                )
            })
            .collect();
        assert_eq!(series, [("a".to_owned(), 1.0), ("b".to_owned(), 2.0)]);
        assert_eq!(families[0].get_field_type(), MetricType::COUNTER);
        assert_eq!(families[0].name(), "things_total");
    }

    #[test]
    fn a_single_counter_scrapes_one_series_without_labels() {
        let single = ShardedCounterVec::single("drops_total", "Drops.");
        let single = single.unwrap_or_else(|| unreachable!("a valid name"));
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| (0..100).for_each(|_| single.inc(0)));
            }
        });
        assert_eq!(single.get(0), 300);
        let families = single.collect();
        let metrics = families[0].get_metric();
        assert_eq!(metrics.len(), 1);
        assert!(metrics[0].get_label().is_empty(), "no label pairs");
        assert_eq!(metrics[0].get_counter().get_value(), 300.0);
        assert_eq!(single.desc()[0].variable_labels, Vec::<String>::new());
    }
}
