//! The policies: LRU (the baseline), TiKV's load-based policy, and the default
//! frequency-based admission policy with a ghost history.

use std::collections::{HashMap, HashSet, VecDeque};

use ime_region::RegionId;
use serde::{Deserialize, Serialize};

use crate::plan::{Scorer, plan};
use crate::{Decision, EvictionPolicy, RegionStats, Round};

/// Ten minutes: a region is not auto-evicted sooner after its load.
pub const DEFAULT_MIN_RESIDENCE: u64 = 600;

/// Least recently read goes first; every read region is worth loading.
#[derive(Debug)]
pub struct LruPolicy {
    min_residence: u64,
    last_read: HashMap<RegionId, u64>,
}

impl LruPolicy {
    /// LRU with the given minimum residence (seconds).
    pub fn new(min_residence: u64) -> Self {
        LruPolicy {
            min_residence,
            last_read: HashMap::new(),
        }
    }
}

impl Scorer for LruPolicy {
    fn observe(&mut self, round: &Round<'_>) {
        for stats in round.regions.iter().filter(|s| s.reads > 0) {
            self.last_read.insert(stats.id, round.now);
        }
        self.last_read
            .retain(|id, _| round.regions.iter().any(|s| s.id == *id));
    }

    fn value(&self, stats: &RegionStats) -> f64 {
        self.last_read
            .get(&stats.id)
            .map_or(0.0, |t| *t as f64 + 1.0)
    }

    fn wants(&self, stats: &RegionStats) -> bool {
        stats.reads > 0
    }
}

impl EvictionPolicy for LruPolicy {
    fn name(&self) -> &'static str {
        "lru"
    }

    fn decide(&mut self, round: &Round<'_>) -> Decision {
        let min_residence = self.min_residence;
        plan(self, round, min_residence)
    }
}

/// Settings of [`TikvPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TikvConfig {
    /// Minimum residence before an auto-eviction (seconds).
    pub min_residence: u64,
    /// Regions below this moving-average MVCC amplification are not loaded.
    pub mvcc_amplification_threshold: f64,
    /// Weight of the newest round in the moving averages.
    pub smoothing: f64,
}

impl Default for TikvConfig {
    fn default() -> Self {
        TikvConfig {
            min_residence: DEFAULT_MIN_RESIDENCE,
            mvcc_amplification_threshold: 10.0,
            smoothing: 0.5,
        }
    }
}

/// TiKV's load-based policy: regions ranked by moving averages of MVCC amplification and
/// read rate; those above the amplification threshold are loaded, the top displacing the
/// bottom (with a minimum residence and a tenth per round, the fixes for #17442/#18093).
#[derive(Debug)]
pub struct TikvPolicy {
    config: TikvConfig,
    averages: HashMap<RegionId, (f64, f64)>,
}

impl TikvPolicy {
    /// With `config`.
    pub fn new(config: TikvConfig) -> Self {
        TikvPolicy {
            config,
            averages: HashMap::new(),
        }
    }
}

impl Scorer for TikvPolicy {
    fn observe(&mut self, round: &Round<'_>) {
        let alpha = self.config.smoothing;
        let mut next = HashMap::with_capacity(round.regions.len());
        for stats in round.regions {
            let (reads, amp) = self.averages.get(&stats.id).copied().unwrap_or((0.0, 1.0));
            let sample_amp = if stats.reads > 0 {
                stats.amplification()
            } else {
                amp
            };
            let reads = alpha * stats.reads as f64 + (1.0 - alpha) * reads;
            next.insert(stats.id, (reads, alpha * sample_amp + (1.0 - alpha) * amp));
        }
        self.averages = next;
    }

    fn value(&self, stats: &RegionStats) -> f64 {
        self.averages
            .get(&stats.id)
            .map_or(0.0, |(reads, amp)| reads * amp)
    }

    fn wants(&self, stats: &RegionStats) -> bool {
        self.averages.get(&stats.id).is_some_and(|(reads, amp)| {
            *reads > 0.0 && *amp >= self.config.mvcc_amplification_threshold
        })
    }
}

impl EvictionPolicy for TikvPolicy {
    fn name(&self) -> &'static str {
        "tikv"
    }

    fn decide(&mut self, round: &Round<'_>) -> Decision {
        let min_residence = self.config.min_residence;
        plan(self, round, min_residence)
    }
}

/// Settings of [`FrequencyPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrequencyConfig {
    /// Minimum residence before an auto-eviction (seconds).
    pub min_residence: u64,
    /// Each round, past work counts this much less.
    pub decay: f64,
    /// Rounds with MVCC work a region needs before it is admitted (a one-off scan does
    /// not get in), unless the ghost history remembers it.
    pub doorkeeper_rounds: u32,
    /// A candidate displaces a resident region only when worth this much more.
    pub hysteresis: f64,
    /// How many evicted regions the ghost history remembers.
    pub ghost_capacity: usize,
    /// A region is loaded only if its recent work rate would repay the load's own scan
    /// of the region within this many rounds.
    pub payback_rounds: u32,
}

impl Default for FrequencyConfig {
    fn default() -> Self {
        FrequencyConfig {
            min_residence: DEFAULT_MIN_RESIDENCE,
            decay: 0.6,
            doorkeeper_rounds: 2,
            hysteresis: 1.5,
            ghost_capacity: 1024,
            payback_rounds: 25,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Frequency {
    work: f64,
    rounds_seen: u32,
}

/// The default: TinyLFU-like admission at region granularity. A region's value is its
/// decayed MVCC work per byte; a doorkeeper keeps one-off scans out; a region is loaded
/// only if its recent work rate repays the load's own scan within a payback horizon; a
/// candidate must beat the resident region it displaces by a margin; and a ghost history
/// of recent evictions (its own, and those others decided, such as a leader moving away)
/// lets a region that comes back be readmitted at once, with the value it had.
#[derive(Debug)]
pub struct FrequencyPolicy {
    config: FrequencyConfig,
    freq: HashMap<RegionId, Frequency>,
    ghost: VecDeque<(RegionId, Frequency)>,
    /// Regions cached at the last round, to notice evictions the policy did not decide
    /// (a leader moving away, a flashback): they go to the ghost history too.
    cached: HashSet<RegionId>,
}

impl FrequencyPolicy {
    /// With `config`.
    pub fn new(config: FrequencyConfig) -> Self {
        FrequencyPolicy {
            config,
            freq: HashMap::new(),
            ghost: VecDeque::new(),
            cached: HashSet::new(),
        }
    }

    fn remember(&mut self, id: RegionId) {
        if let Some(f) = self.freq.get(&id).copied() {
            self.ghost.retain(|(ghost, _)| *ghost != id);
            self.ghost.push_back((id, f));
            while self.ghost.len() > self.config.ghost_capacity {
                self.ghost.pop_front();
            }
        }
    }

    fn take_ghost(&mut self, id: RegionId) -> Option<Frequency> {
        let at = self.ghost.iter().position(|(ghost, _)| *ghost == id)?;
        self.ghost.remove(at).map(|(_, f)| f)
    }
}

impl Scorer for FrequencyPolicy {
    fn observe(&mut self, round: &Round<'_>) {
        let now_cached: HashSet<RegionId> = round
            .regions
            .iter()
            .filter(|s| s.cached)
            .map(|s| s.id)
            .collect();
        let gone: Vec<RegionId> = self.cached.difference(&now_cached).copied().collect();
        for id in gone {
            self.remember(id);
        }
        self.cached = now_cached;
        let decay = self.config.decay;
        let mut next = HashMap::with_capacity(round.regions.len());
        for stats in round.regions {
            let mut f = self.freq.get(&stats.id).copied().unwrap_or_default();
            if stats.work() > 0
                && f.rounds_seen == 0
                && let Some(ghost) = self.take_ghost(stats.id)
            {
                f = ghost;
            }
            f.work = f.work * decay + stats.work() as f64;
            f.rounds_seen += u32::from(stats.work() > 0);
            if f.work >= 1.0 || stats.cached {
                next.insert(stats.id, f);
            }
        }
        self.freq = next;
    }

    fn value(&self, stats: &RegionStats) -> f64 {
        self.freq
            .get(&stats.id)
            .map_or(0.0, |f| f.work / stats.size.max(1) as f64)
    }

    fn wants(&self, stats: &RegionStats) -> bool {
        self.freq.get(&stats.id).is_some_and(|f| {
            // The work it saves over a payback horizon must exceed the load's own scan.
            let per_round = f.work * (1.0 - self.config.decay);
            let load_cost = (stats.size / crate::BYTES_PER_VERSION) as f64;
            f.rounds_seen >= self.config.doorkeeper_rounds
                && per_round * f64::from(self.config.payback_rounds) >= load_cost
        })
    }

    fn displaces(&self, candidate: f64, victim: f64) -> bool {
        candidate > victim * self.config.hysteresis
    }

    fn evicted(&mut self, stats: &RegionStats) {
        self.remember(stats.id);
        self.cached.remove(&stats.id);
    }
}

impl EvictionPolicy for FrequencyPolicy {
    fn name(&self) -> &'static str {
        "frequency"
    }

    fn decide(&mut self, round: &Round<'_>) -> Decision {
        let min_residence = self.config.min_residence;
        let decision = plan(self, round, min_residence);
        self.cached.extend(decision.load.iter().copied());
        decision
    }
}

/// The policy the engine uses unless told otherwise.
pub fn default_policy() -> FrequencyPolicy {
    FrequencyPolicy::new(FrequencyConfig::default())
}
