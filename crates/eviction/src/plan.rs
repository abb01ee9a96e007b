//! The round planner every policy shares: memory pressure first, then admissions, each
//! ranked by the policy's own scoring. Policies differ only in how they score.

use std::collections::HashSet;

use ime_region::{EvictReason, RegionId};

use crate::{Decision, RegionStats, Round};

/// How a policy values regions; the planner does the rest.
pub(crate) trait Scorer {
    /// Updates the policy's state from the round's counters (called first, once).
    fn observe(&mut self, round: &Round<'_>);
    /// The value of keeping (or loading) `stats`: higher is kept, loaded first.
    fn value(&self, stats: &RegionStats) -> f64;
    /// Whether an uncached region is worth loading at all.
    fn wants(&self, stats: &RegionStats) -> bool;
    /// Whether `candidate` may displace a resident region worth `victim`.
    fn displaces(&self, candidate: f64, victim: f64) -> bool {
        candidate > victim
    }
    /// Told of every eviction the round decides.
    fn evicted(&mut self, _stats: &RegionStats) {}
}

/// Plans one round for `scorer`, keeping the [`crate::EvictionPolicy`] contract.
pub(crate) fn plan<S: Scorer>(scorer: &mut S, round: &Round<'_>, min_residence: u64) -> Decision {
    scorer.observe(round);
    let t = round.thresholds;
    let mut decision = Decision::default();
    let mut projected = round.memory_used;
    let mut gone: HashSet<RegionId> = HashSet::new();

    let mut resident: Vec<&RegionStats> = round
        .regions
        .iter()
        .filter(|s| s.cached && !s.pinned)
        .collect();
    resident.sort_by(|a, b| scorer.value(a).total_cmp(&scorer.value(b)));

    // Memory pressure: cheapest first until under the stop-load threshold.
    if projected > t.evict_threshold {
        for victim in &resident {
            if projected <= t.stop_load_threshold {
                break;
            }
            projected = projected.saturating_sub(victim.size);
            gone.insert(victim.id);
            decision
                .evict
                .push((victim.id, EvictReason::MemoryPressure));
            scorer.evicted(victim);
        }
    }

    let cached = round.regions.iter().filter(|s| s.cached).count();
    let mut auto_budget = (cached / 10).max(1);
    let mut candidates: Vec<&RegionStats> = round
        .regions
        .iter()
        .filter(|s| !s.cached && (s.pinned || (s.is_leader && scorer.wants(s))))
        .collect();
    candidates.sort_by(|a, b| {
        b.pinned
            .cmp(&a.pinned)
            .then(scorer.value(b).total_cmp(&scorer.value(a)))
    });

    for candidate in candidates {
        if candidate.size > t.stop_load_threshold {
            continue;
        }
        let needed = (projected + candidate.size).saturating_sub(t.stop_load_threshold);
        let mut freed = 0;
        let mut victims = Vec::new();
        let worth = scorer.value(candidate);
        for victim in resident.iter().filter(|v| !gone.contains(&v.id)) {
            if freed >= needed || victims.len() >= auto_budget {
                break;
            }
            let settled = victim
                .loaded_at
                .is_none_or(|at| round.now >= at.saturating_add(min_residence));
            if settled && (candidate.pinned || scorer.displaces(worth, scorer.value(victim))) {
                freed += victim.size;
                victims.push(*victim);
            }
        }
        if freed < needed {
            continue;
        }
        for victim in victims {
            gone.insert(victim.id);
            auto_budget -= 1;
            projected = projected.saturating_sub(victim.size);
            decision.evict.push((victim.id, EvictReason::AutoEvict));
            scorer.evicted(victim);
        }
        projected += candidate.size;
        decision.load.push(candidate.id);
    }
    decision
}
