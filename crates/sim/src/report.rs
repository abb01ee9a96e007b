//! The run's report: what was done, what the caches did, and every mismatch with what it
//! takes to reproduce it.

use std::fmt;

use ime_engine::Difference;
use ime_engine::region::EvictReason;
use serde::{Deserialize, Serialize};

use crate::Options;
use crate::cluster::{ReadResult, sum_stat};
use crate::store::Store;

/// A read from memory (or a cross-check) that differed from the disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The store.
    pub store: u64,
    /// The region.
    pub region: u64,
    /// The first key that differed (escaped), when one did.
    pub key: Option<String>,
    /// What differed, shortly.
    pub what: String,
    /// The events the store published for the region, in order.
    pub history: Vec<String>,
}

impl Mismatch {
    pub(crate) fn new(
        store: u64,
        region: u64,
        found: &ReadResult,
        expected: &ReadResult,
        history: Vec<String>,
    ) -> Self {
        let (key, what) = match (found, expected) {
            (Ok(found), Ok(expected)) => {
                let differs = found.iter().zip(expected).find(|(a, b)| a != b);
                // The first pair that differs, or the first one only one side has.
                let key = differs
                    .map(|(a, b)| a.0.clone().min(b.0.clone()))
                    .or_else(|| {
                        let n = found.len().min(expected.len());
                        found.get(n).or(expected.get(n)).map(|p| p.0.clone())
                    })
                    .map(|k| k.escape_ascii().to_string());
                let first = differs.map_or_else(
                    || format!("{} pairs read, {} on disk", found.len(), expected.len()),
                    |(a, b)| {
                        format!(
                            "first difference at key {} vs {}",
                            a.0.escape_ascii(),
                            b.0.escape_ascii()
                        )
                    },
                );
                (key, format!("read differs from disk: {first}"))
            }
            (found, expected) => (None, format!("read {found:?} but disk says {expected:?}")),
        };
        Mismatch {
            store,
            region,
            key,
            what,
            history,
        }
    }

    pub(crate) fn from_difference(store: u64, d: &Difference, history: Vec<String>) -> Self {
        Mismatch {
            store,
            region: d.region.0,
            key: Some(d.key.escape_ascii().to_string()),
            what: format!("cross-check: {d}"),
            history,
        }
    }
}

/// What a run did and saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: String,
    /// Stores.
    pub stores: u64,
    /// Steps run.
    pub ops: u64,
    /// Prewrites proposed.
    pub prewrites: u64,
    /// Commits and rollbacks proposed.
    pub commits: u64,
    /// Splits proposed.
    pub splits: u64,
    /// SST ingests proposed.
    pub ingests: u64,
    /// Store restarts (engine reopened, cache empty).
    pub restarts: u64,
    /// Leader transfers started.
    pub transfers: u64,
    /// Partitions made.
    pub partitions: u64,
    /// Raft messages lost to partitions.
    pub messages_dropped: u64,
    /// Raft snapshots sent to lagging followers, and applied by them.
    pub snapshots: (u64, u64),
    /// Merges started (PrepareMerge proposed).
    pub merges_started: u64,
    /// CommitMerge proposals.
    pub merge_commits: u64,
    /// RollbackMerge proposals.
    pub merge_rollbacks: u64,
    /// Merges and rollbacks applied, summed over stores.
    pub merges_applied: (u64, u64),
    /// Membership changes proposed that add a voter.
    pub peers_added: u64,
    /// Membership changes proposed that remove a voter.
    pub peers_removed: u64,
    /// Membership changes applied, summed over stores.
    pub peer_changes_applied: u64,
    /// Peers destroyed (removed, stale), summed over stores.
    pub peers_destroyed: u64,
    /// Proposals the apply refused (stale epoch, key outside the region, merging).
    pub refused: u64,
    /// Events bus faults dropped on their way to an engine.
    pub events_dropped: u64,
    /// Checked reads on leaders: `[from memory, from disk]`. Leaders serve reads, so the
    /// hit ratio counts these.
    pub leader_reads: [u64; 2],
    /// Checked reads on followers and learners: `[from memory, from disk]` (checked
    /// too: a follower's cache must never be stale either, but it is not kept warm).
    pub follower_reads: [u64; 2],
    /// Evictions by reason, over all stores.
    pub evictions: Vec<(String, u64)>,
    /// Loads completed.
    pub loads: u64,
    /// Memtable compactions ended (each in pieces the schedulers ran among other work).
    pub compactions: u64,
    /// Background tasks, GC rounds and policy rounds the stores' seeded schedulers ran.
    pub background_runs: u64,
    /// Fences over changes outside the write path: begun, and loads they held back.
    pub fences: (u64, u64),
    /// Events the stores' buses delivered to their engines, and the delivery gaps the buses
    /// reported to them.
    pub bus: (u64, u64),
    /// Epoch gaps detected.
    pub epoch_gaps: u64,
    /// Applied-index gaps detected.
    pub index_gaps: u64,
    /// MVCC versions the checked reads served from memory touched there, and what the
    /// same reads touch on the same store's disk at the same snapshot: the work the
    /// cache saves.
    pub mvcc_versions: (u64, u64),
    /// Those two totals over the run (one sample per step, cumulative).
    pub mvcc_over_time: Vec<(u64, u64)>,
    /// Peak memory of any store's cache, in bytes.
    pub peak_memory: u64,
    /// The capacity each cache had.
    pub capacity: u64,
    /// The memory thresholds of each cache, by name (stop-load, evict, capacity).
    pub thresholds: Vec<(String, u64)>,
    /// Memory of each store over the run (one sample per step).
    pub memory_over_time: Vec<Vec<u64>>,
    /// Reads or cross-checks that differed from disk.
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    pub(crate) fn new(options: &Options) -> Self {
        Report {
            seed: options.seed,
            scenario: options.scenario.name().to_owned(),
            stores: options.stores,
            ops: options.ops,
            ..Report::default()
        }
    }

    /// A memory-served read touched `memory` versions; on disk it would have touched
    /// `disk`.
    pub(crate) fn mvcc_read(&mut self, memory: u64, disk: u64) {
        self.mvcc_versions.0 += memory;
        self.mvcc_versions.1 += disk;
    }

    pub(crate) fn sample_memory(&mut self, stores: &[Store]) {
        self.mvcc_over_time.push(self.mvcc_versions);
        let sample: Vec<u64> = stores.iter().map(|s| s.engine.memory_used()).collect();
        self.peak_memory = self
            .peak_memory
            .max(sample.iter().copied().max().unwrap_or(0));
        self.memory_over_time.push(sample);
    }

    pub(crate) fn collect(&mut self, stores: &[Store]) {
        self.evictions = EvictReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), sum_stat(stores, |s| s.evicted(*r))))
            .filter(|(_, n)| *n > 0)
            .collect();
        self.loads = sum_stat(stores, |s| s.loads.ok);
        self.compactions = sum_stat(stores, |s| s.compactions.ok);
        self.background_runs = stores.iter().map(|s| s.background_runs).sum();
        self.bus = stores.iter().fold((0, 0), |(d, g), s| {
            let counts = s.bus_counts();
            (d + counts.delivered, g + counts.gaps)
        });
        self.fences = (
            sum_stat(stores, |s| s.fences.begun),
            sum_stat(stores, |s| s.fences.held_loads),
        );
        self.snapshots = (
            stores.iter().map(|s| s.snapshots_sent).sum(),
            stores.iter().map(|s| s.snapshots_applied).sum(),
        );
        self.merges_applied = (
            stores.iter().map(|s| s.merges).sum(),
            stores.iter().map(|s| s.rollbacks).sum(),
        );
        self.peer_changes_applied = stores.iter().map(|s| s.peer_changes).sum();
        self.peers_destroyed = stores.iter().map(|s| s.destroyed).sum();
        self.refused = stores.iter().map(|s| s.refused).sum();
        self.events_dropped = stores.iter().map(|s| s.dropped_events).sum();
        self.epoch_gaps = sum_stat(stores, |s| s.gaps.epoch);
        self.index_gaps = sum_stat(stores, |s| s.gaps.index);
        self.capacity = stores.first().map_or(0, |s| s.engine.config().capacity.0);
        if let Some(store) = stores.first() {
            let t = store.engine.config().thresholds();
            self.thresholds = vec![
                ("stop-load".to_owned(), t.stop_load_threshold),
                ("evict".to_owned(), t.evict_threshold),
                ("capacity".to_owned(), t.capacity),
            ];
        }
    }

    /// The share of checked leader reads served from memory.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.leader_reads[0] + self.leader_reads[1];
        if total == 0 {
            0.0
        } else {
            self.leader_reads[0] as f64 / total as f64
        }
    }

    /// Checked reads served from memory, leaders and followers.
    pub fn reads_from_memory(&self) -> u64 {
        self.leader_reads[0] + self.follower_reads[0]
    }

    /// Evictions with `reason`.
    pub fn evicted(&self, reason: EvictReason) -> u64 {
        self.evictions
            .iter()
            .find(|(r, _)| r == reason.as_str())
            .map_or(0, |(_, n)| *n)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ime-sim: seed {}, scenario {}, {} stores, {} steps",
            self.seed, self.scenario, self.stores, self.ops
        )?;
        writeln!(
            f,
            "  operations   {} prewrites, {} commits/rollbacks, {} splits, {} ingests, {} restarts, {} leader transfers, {} partitions ({} messages lost)",
            self.prewrites,
            self.commits,
            self.splits,
            self.ingests,
            self.restarts,
            self.transfers,
            self.partitions,
            self.messages_dropped
        )?;
        writeln!(
            f,
            "  merges       {} started, {} commits and {} rollbacks proposed; applied: {} merges, {} rollbacks",
            self.merges_started,
            self.merge_commits,
            self.merge_rollbacks,
            self.merges_applied.0,
            self.merges_applied.1
        )?;
        writeln!(
            f,
            "  peers        {} added, {} removed; {} membership changes applied, {} peers destroyed",
            self.peers_added, self.peers_removed, self.peer_changes_applied, self.peers_destroyed
        )?;
        writeln!(
            f,
            "  snapshots    {} sent, {} applied; {} proposals refused at apply; {} events dropped by bus faults",
            self.snapshots.0, self.snapshots.1, self.refused, self.events_dropped
        )?;
        writeln!(
            f,
            "  reads        leaders: {} from memory, {} from disk (hit ratio {:.2}); followers: {} from memory, {} from disk",
            self.leader_reads[0],
            self.leader_reads[1],
            self.hit_ratio(),
            self.follower_reads[0],
            self.follower_reads[1]
        )?;
        let (memory, disk) = self.mvcc_versions;
        writeln!(
            f,
            "  mvcc         reads served from memory touched {memory} versions; the same reads on disk: {disk} ({:.1}x)",
            disk as f64 / memory.max(1) as f64
        )?;
        let evictions: Vec<String> = self
            .evictions
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(
            f,
            "  evictions    {}",
            if evictions.is_empty() {
                "none".to_owned()
            } else {
                evictions.join(", ")
            }
        )?;
        writeln!(f, "  loads        {}", self.loads)?;
        writeln!(
            f,
            "  compactions  {} of memtables, in pieces",
            self.compactions
        )?;
        writeln!(
            f,
            "  background   {} tasks and rounds run by the seeded schedulers; {} fences, {} loads held back by one",
            self.background_runs, self.fences.0, self.fences.1
        )?;
        writeln!(
            f,
            "  bus          {} events delivered through the stores' buses, {} delivery gaps reported",
            self.bus.0, self.bus.1
        )?;
        writeln!(
            f,
            "  gaps         {} epoch, {} applied index",
            self.epoch_gaps, self.index_gaps
        )?;
        writeln!(
            f,
            "  memory       peak {} bytes of a {} byte capacity",
            self.peak_memory, self.capacity
        )?;
        if self.mismatches.is_empty() {
            writeln!(f, "  mismatches   none")
        } else {
            writeln!(f, "  MISMATCHES   {}", self.mismatches.len())?;
            for m in self.mismatches.iter().take(5) {
                writeln!(
                    f,
                    "    store {} region {} key {}: {}",
                    m.store,
                    m.region,
                    m.key.as_deref().unwrap_or("-"),
                    m.what
                )?;
                for line in m.history.iter().rev().take(8).rev() {
                    writeln!(f, "      {line}")?;
                }
            }
            writeln!(
                f,
                "  replay with: cargo xtask sim --seed {} --scenario {} --ops {} (or --replay with the run record below)",
                self.seed, self.scenario, self.ops
            )
        }
    }
}
