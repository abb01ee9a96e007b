//! The replay harness: runs a policy over a trace as the engine would, checks every
//! decision against the contract, and scores it; plus the offline reference it is
//! compared with.

use std::collections::HashMap;

use ime_region::{EvictReason, RegionId};
use serde::{Deserialize, Serialize};

use crate::{Decision, EvictionPolicy, RegionStats, Round, Thresholds, Trace};

/// How a policy did on a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The policy.
    pub policy: String,
    /// The trace.
    pub trace: String,
    /// MVCC work (versions scanned beyond keys returned) served from memory.
    pub work_saved: u64,
    /// MVCC work of every read.
    pub work_total: u64,
    /// Work spent loading: each load scans the region's versions from disk
    /// (`size / BYTES_PER_VERSION`).
    pub load_work: u64,
    /// MVCC versions scanned by reads served from memory.
    pub scanned_hit: u64,
    /// MVCC versions scanned by every read.
    pub scanned_total: u64,
    /// Loads decided, plus warm-ups when leadership comes back.
    pub loads: u64,
    /// Evictions decided (all reasons) plus those forced by leadership moves.
    pub evictions: u64,
    /// Hours the trace covers.
    pub hours: f64,
    /// Regions loaded and then auto-evicted sooner than `min_residence` after the load.
    pub flaps: u64,
    /// The highest memory use seen after a round.
    pub peak_memory: u64,
}

impl Score {
    /// An empty score of `policy` on `trace`.
    fn new(policy: impl Into<String>, trace: &Trace) -> Self {
        Score {
            policy: policy.into(),
            trace: trace.name.clone(),
            work_saved: 0,
            work_total: 0,
            load_work: 0,
            scanned_hit: 0,
            scanned_total: 0,
            loads: 0,
            evictions: 0,
            hours: (trace.steps.len() as u64 * trace.step_seconds) as f64 / 3600.0,
            flaps: 0,
            peak_memory: 0,
        }
    }

    /// Counts one read, served from memory or not.
    fn count_read(&mut self, read: &crate::TraceRead, hit: bool) {
        let work = read.scanned_versions.saturating_sub(read.returned_keys);
        self.work_total += work;
        self.scanned_total += read.scanned_versions;
        if hit {
            self.work_saved += work;
            self.scanned_hit += read.scanned_versions;
        }
    }

    /// Fraction of scanned versions served from memory (bytes, at a fixed version size).
    pub fn byte_hit_ratio(&self) -> f64 {
        self.scanned_hit as f64 / self.scanned_total.max(1) as f64
    }

    /// Work saved net of the work spent loading (negative when churn costs more than
    /// the cache saves).
    pub fn net_work_saved(&self) -> i128 {
        i128::from(self.work_saved) - i128::from(self.load_work)
    }

    /// Loads per hour.
    pub fn loads_per_hour(&self) -> f64 {
        self.loads as f64 / self.hours.max(f64::MIN_POSITIVE)
    }

    /// Evictions per hour.
    pub fn evictions_per_hour(&self) -> f64 {
        self.evictions as f64 / self.hours.max(f64::MIN_POSITIVE)
    }
}

/// A decision that breaks the [`EvictionPolicy`] contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{policy} broke the contract at round {round}: {detail}")]
pub struct ContractViolation {
    /// The policy.
    pub policy: String,
    /// The round.
    pub round: usize,
    /// What it did.
    pub detail: String,
}

/// The engine's side of a replay: which regions are cached, since when.
struct Cache {
    loaded_at: HashMap<usize, u64>,
    sizes: Vec<u64>,
}

impl Cache {
    fn used(&self) -> u64 {
        self.loaded_at.keys().map(|i| self.sizes[*i]).sum()
    }
}

fn pinned_indexes(trace: &Trace, pinned: &[RegionId]) -> Vec<bool> {
    trace
        .regions
        .iter()
        .map(|r| pinned.contains(&r.id))
        .collect()
}

/// Steps a store idle before the store leading a region drops it from its cache, in the
/// replay's model of that store: a region it holds stays warm while it is read.
const REMOTE_COOLING_STEPS: u32 = 1;

/// What the engine does, outside the policy, as leadership moves (TiKV's rules): a region
/// this store stops leading is evicted (`BecomeFollower`), and the store that takes it
/// over warms it up only when this store had it cached; a region that comes back is
/// warmed up here, before its first read, when the store it comes from had it cached —
/// which the replay models: that store warmed it up on arrival (if this one had it) and
/// keeps it while it is read, dropping it after [`REMOTE_COOLING_STEPS`] steps unread.
/// A warm-up is refused, as the engine refuses any load, when memory is already at the
/// stop-load threshold.
struct Leadership {
    following: Vec<bool>,
    /// Steps unread at the other leader, or `None` when it does not hold the region.
    remote_idle: Vec<Option<u32>>,
    pinned: Vec<bool>,
}

impl Leadership {
    fn new(regions: usize, pinned: Vec<bool>) -> Self {
        Leadership {
            following: vec![false; regions],
            remote_idle: vec![None; regions],
            pinned,
        }
    }

    fn step(
        &mut self,
        step: &crate::TraceStep,
        now: u64,
        cache: &mut Cache,
        thresholds: Thresholds,
        score: &mut Score,
    ) {
        let mut following = vec![false; self.following.len()];
        for &i in &step.followers {
            following[i] = true;
        }
        for (i, &follows) in following.iter().enumerate() {
            match (self.following[i], follows) {
                (false, true) => {
                    let cached = cache.loaded_at.contains_key(&i);
                    self.remote_idle[i] = cached.then_some(0);
                    if cached && !self.pinned[i] {
                        cache.loaded_at.remove(&i);
                        score.evictions += 1;
                    }
                }
                (true, false) => {
                    let warm = self.remote_idle[i].take().is_some();
                    let size = cache.sizes[i];
                    if warm
                        && !cache.loaded_at.contains_key(&i)
                        && cache.used() < thresholds.stop_load_threshold
                    {
                        cache.loaded_at.insert(i, now);
                        score.loads += 1;
                        score.load_work += size / crate::BYTES_PER_VERSION;
                    }
                }
                (true, true) | (false, false) => {}
            }
            if follows {
                if step.remote_reads.contains(&i) {
                    self.remote_idle[i] = self.remote_idle[i].map(|_| 0);
                } else {
                    self.remote_idle[i] = self.remote_idle[i]
                        .map(|idle| idle + 1)
                        .filter(|idle| *idle < REMOTE_COOLING_STEPS);
                }
            }
        }
        self.following = following;
    }
}

/// Replays `trace` through `policy` with `thresholds`, checking every decision. A
/// `min_residence` (seconds) is what flaps are counted against.
///
/// # Errors
/// The first [`ContractViolation`].
pub fn replay(
    policy: &mut dyn EvictionPolicy,
    trace: &Trace,
    thresholds: Thresholds,
    min_residence: u64,
    pinned: &[RegionId],
) -> Result<Score, ContractViolation> {
    let mut cache = Cache {
        loaded_at: HashMap::new(),
        sizes: trace.regions.iter().map(|r| r.size).collect(),
    };
    let index: HashMap<RegionId, usize> = trace
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id, i))
        .collect();
    let mut score = Score::new(policy.name().to_owned(), trace);
    let is_pinned = pinned_indexes(trace, pinned);
    let mut leaders = Leadership::new(trace.regions.len(), is_pinned.clone());
    for (round, step) in trace.steps.iter().enumerate() {
        let now = round as u64 * trace.step_seconds;
        for (region, size) in &step.resized {
            cache.sizes[*region] = *size;
        }
        leaders.step(step, now, &mut cache, thresholds, &mut score);
        let mut stats: Vec<RegionStats> = trace
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| RegionStats {
                id: r.id,
                size: cache.sizes[i],
                reads: 0,
                scanned_versions: 0,
                returned_keys: 0,
                is_leader: !step.followers.contains(&i),
                pinned: is_pinned[i],
                cached: cache.loaded_at.contains_key(&i),
                loaded_at: cache.loaded_at.get(&i).copied(),
            })
            .collect();
        for read in &step.reads {
            let s = &mut stats[read.region];
            s.reads += read.reads;
            s.scanned_versions += read.scanned_versions;
            s.returned_keys += read.returned_keys;
            score.count_read(read, s.cached);
        }
        let used = cache.used();
        let round_input = Round {
            now,
            memory_used: used,
            regions: &stats,
            thresholds,
        };
        let decision = policy.decide(&round_input);
        check_decision(&round_input, &decision, min_residence).map_err(|detail| {
            ContractViolation {
                policy: policy.name().to_owned(),
                round,
                detail,
            }
        })?;
        for (id, reason) in &decision.evict {
            let i = index[id];
            if let Some(at) = cache.loaded_at.remove(&i) {
                score.evictions += 1;
                if *reason == EvictReason::AutoEvict && now < at + min_residence {
                    score.flaps += 1;
                }
            }
        }
        for id in &decision.load {
            cache.loaded_at.insert(index[id], now);
            score.loads += 1;
            score.load_work += cache.sizes[index[id]] / crate::BYTES_PER_VERSION;
        }
        score.peak_memory = score.peak_memory.max(cache.used());
    }
    Ok(score)
}

/// Checks one decision against the contract of [`EvictionPolicy`], for a policy whose
/// minimum residence is `min_residence`.
///
/// # Errors
/// What the decision does wrong.
pub fn check_decision(
    input: &Round<'_>,
    decision: &Decision,
    min_residence: u64,
) -> Result<(), String> {
    let fail = |detail: String| Err(detail);
    let stats: HashMap<RegionId, &RegionStats> = input.regions.iter().map(|s| (s.id, s)).collect();
    let mut projected = input.memory_used;
    let mut auto = 0;
    for (id, reason) in &decision.evict {
        let Some(s) = stats.get(id) else {
            return fail(format!("evicts unknown region {id}"));
        };
        if s.pinned || !s.cached {
            return fail(format!(
                "evicts region {id} (pinned {}, cached {})",
                s.pinned, s.cached
            ));
        }
        if *reason == EvictReason::AutoEvict {
            auto += 1;
            if s.loaded_at.is_some_and(|at| input.now < at + min_residence) {
                return fail(format!(
                    "auto-evicts region {id} before its minimum residence"
                ));
            }
        }
        projected = projected.saturating_sub(s.size);
    }
    let cached = input.regions.iter().filter(|s| s.cached).count();
    if auto > (cached / 10).max(1) {
        return fail(format!(
            "auto-evicts {auto} of {cached} cached regions in one round"
        ));
    }
    if input.memory_used > input.thresholds.evict_threshold
        && projected > input.thresholds.stop_load_threshold
        && input
            .regions
            .iter()
            .any(|s| s.cached && !s.pinned && !decision.evict.iter().any(|(id, _)| *id == s.id))
    {
        return fail(format!("leaves memory at {projected} under pressure"));
    }
    for id in &decision.load {
        let Some(s) = stats.get(id) else {
            return fail(format!("loads unknown region {id}"));
        };
        if s.cached || !(s.is_leader || s.pinned) {
            return fail(format!(
                "loads region {id} (cached {}, leader {})",
                s.cached, s.is_leader
            ));
        }
        projected += s.size;
        if projected > input.thresholds.stop_load_threshold {
            return fail(format!("loads region {id} past the stop-load threshold"));
        }
    }
    Ok(())
}

/// The offline reference: at every step it knows the future, and caches the regions with
/// the most net MVCC work per byte over the next `horizon` steps (future work, minus the
/// load's own scan for a region not yet cached), up to the stop-load threshold —
/// Belady's "evict what is needed furthest away", at region granularity, weighted by size
/// and charged for loads like the online policies. It keeps no minimum residence and
/// loads a region in time for its first read, so it is an optimistic reference, not a
/// schedule an online policy could follow. It keeps the one rule no policy can bend: a
/// region this store does not lead is not cached here (the engine evicts it when
/// leadership leaves).
pub fn offline_reference(trace: &Trace, thresholds: Thresholds, horizon: usize) -> Score {
    let n = trace.regions.len();
    let mut score = Score::new("offline".to_owned(), trace);
    let mut sizes: Vec<u64> = trace.regions.iter().map(|r| r.size).collect();
    let work_of = |step: &crate::TraceStep| {
        let mut work = vec![0u64; n];
        for read in &step.reads {
            work[read.region] += read.scanned_versions.saturating_sub(read.returned_keys);
        }
        work
    };
    let works: Vec<Vec<u64>> = trace.steps.iter().map(work_of).collect();
    let mut cached = vec![false; n];
    for (t, step) in trace.steps.iter().enumerate() {
        for (region, size) in &step.resized {
            sizes[*region] = *size;
        }
        // Choose this step's set from the next `horizon` steps, this one included.
        let mut future = vec![0u64; n];
        for w in works.iter().skip(t).take(horizon) {
            for (i, v) in w.iter().enumerate() {
                future[i] += v;
            }
        }
        let net = |i: usize| {
            let load = if cached[i] {
                0
            } else {
                sizes[i] / crate::BYTES_PER_VERSION
            };
            future[i] as f64 - load as f64
        };
        // A region this store does not lead cannot be cached (the engine evicts it when
        // leadership leaves, whatever the policy): the reference keeps that rule too.
        let mut order: Vec<usize> = (0..n)
            .filter(|i| net(*i) > 0.0 && !step.followers.contains(i))
            .collect();
        order.sort_by(|a, b| (net(*b) / sizes[*b] as f64).total_cmp(&(net(*a) / sizes[*a] as f64)));
        let mut next = vec![false; n];
        let mut used = 0;
        for i in order {
            if used + sizes[i] <= thresholds.stop_load_threshold {
                used += sizes[i];
                next[i] = true;
            }
        }
        for i in 0..n {
            if next[i] && !cached[i] {
                score.loads += 1;
                score.load_work += sizes[i] / crate::BYTES_PER_VERSION;
            }
            score.evictions += u64::from(cached[i] && !next[i]);
        }
        cached = next;
        score.peak_memory = score.peak_memory.max(used);
        for read in &step.reads {
            score.count_read(read, cached[read.region]);
        }
    }
    score
}
