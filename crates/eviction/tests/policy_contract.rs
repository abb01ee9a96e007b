//! One test suite run against every policy: the contract on every generated trace, pins
//! never evicted, no flapping within the minimum residence, thresholds respected, memory
//! pressure relieved cheapest first, and random rounds that never break the contract.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use ime_eviction::*;
use ime_region::{EvictReason, RegionId};
use proptest::prelude::*;

const SHAPE: TraceShape = TraceShape {
    regions: 80,
    steps: 120,
    reads_per_step: 800,
    step_seconds: 60,
};

#[test]
fn every_policy_keeps_the_contract_on_every_trace_without_flapping() {
    for kind in TraceKind::ALL {
        let trace = generate(kind, 11, SHAPE);
        for fraction in [0.1, 0.25, 0.5] {
            let thresholds =
                Thresholds::from_capacity((trace.total_size() as f64 * fraction) as u64);
            for mut policy in all_policies() {
                let score = replay(
                    policy.as_mut(),
                    &trace,
                    thresholds,
                    DEFAULT_MIN_RESIDENCE,
                    &[],
                )
                .unwrap_or_else(|violation| panic!("{} at {fraction}: {violation}", kind.name()));
                assert_eq!(
                    score.flaps,
                    0,
                    "{} flapped on {}",
                    score.policy,
                    kind.name()
                );
                assert!(
                    score.loads > 0,
                    "{} never loaded on {}",
                    score.policy,
                    kind.name()
                );
                match kind {
                    // Without regions growing in place or warm-ups, memory never passes
                    // stop-load.
                    TraceKind::ZipfDrift | TraceKind::ScanStorm => assert!(
                        score.peak_memory <= thresholds.stop_load_threshold,
                        "{}",
                        score.policy
                    ),
                    // A warm-up starts below stop-load, as every engine load does, and
                    // may end past it by at most its own size.
                    TraceKind::LeaderMoves => {
                        let largest = trace.regions.iter().map(|r| r.size).max().unwrap();
                        assert!(
                            score.peak_memory < thresholds.stop_load_threshold + largest,
                            "{}",
                            score.policy
                        );
                    }
                    TraceKind::WriteHeavy => {}
                }
            }
        }
    }
}

#[test]
fn pinned_regions_are_loaded_and_never_evicted() {
    let trace = generate(TraceKind::LeaderMoves, 5, SHAPE);
    let pinned: Vec<RegionId> = trace.regions.iter().take(3).map(|r| r.id).collect();
    let thresholds = Thresholds::from_capacity(trace.total_size() / 5);
    for mut policy in all_policies() {
        let name = policy.name();
        // The replay refuses any decision that evicts a pinned region.
        replay(
            policy.as_mut(),
            &trace,
            thresholds,
            DEFAULT_MIN_RESIDENCE,
            &pinned,
        )
        .unwrap();
        // And a pinned region with no reads at all is still loaded.
        let stats: Vec<RegionStats> = trace
            .regions
            .iter()
            .map(|r| idle(r.id, r.size, pinned.contains(&r.id)))
            .collect();
        let decision = policy.decide(&Round {
            now: 0,
            memory_used: 0,
            regions: &stats,
            thresholds,
        });
        for id in &pinned {
            assert!(
                decision.load.contains(id),
                "{name} did not load pinned {id}"
            );
        }
    }
}

fn idle(id: RegionId, size: u64, pinned: bool) -> RegionStats {
    RegionStats {
        id,
        size,
        reads: 0,
        scanned_versions: 0,
        returned_keys: 0,
        is_leader: true,
        pinned,
        cached: false,
        loaded_at: None,
    }
}

#[test]
fn memory_pressure_evicts_until_under_stop_load_and_spares_pins() {
    let thresholds = Thresholds::new(1000, 900, 800).unwrap();
    let mut stats: Vec<RegionStats> = (1..=10)
        .map(|i| RegionStats {
            cached: true,
            loaded_at: Some(0),
            ..idle(RegionId(i), 100, i == 1)
        })
        .collect();
    for (i, s) in stats.iter_mut().enumerate() {
        s.reads = i as u64 + 1;
        s.returned_keys = s.reads;
        s.scanned_versions = s.reads * 50;
    }
    for mut policy in all_policies() {
        let round = Round {
            now: 10,
            memory_used: 1000,
            regions: &stats,
            thresholds,
        };
        let decision = policy.decide(&round);
        check_decision(&round, &decision, DEFAULT_MIN_RESIDENCE).unwrap();
        assert_eq!(
            decision.evict.len(),
            2,
            "{}: 1000 - 2 x 100 = 800",
            policy.name()
        );
        assert!(
            decision
                .evict
                .iter()
                .all(|(id, why)| *why == EvictReason::MemoryPressure && *id != RegionId(1))
        );
        assert!(decision.load.is_empty());
    }
}

#[test]
fn thresholds_must_be_ordered() {
    assert!(Thresholds::new(100, 90, 80).is_ok());
    let err = Thresholds::new(100, 80, 90).unwrap_err();
    assert!(
        err.to_string().contains("stop_load (90) <= evict (80)"),
        "{err}"
    );
    assert!(Thresholds::new(80, 90, 70).is_err());
    let derived = Thresholds::from_capacity(1000);
    assert_eq!(
        (derived.evict_threshold, derived.stop_load_threshold),
        (900, 800)
    );
}

#[test]
fn the_frequency_policy_keeps_one_off_scans_out_and_readmits_from_its_ghosts() {
    let thresholds = Thresholds::from_capacity(10_000);
    let mut policy = default_policy();
    let mut scan = idle(RegionId(1), 1000, false);
    scan.reads = 1;
    scan.returned_keys = 100;
    scan.scanned_versions = 100_000;
    fn round(now: u64, s: &RegionStats, thresholds: Thresholds) -> Round<'_> {
        Round {
            now,
            memory_used: 0,
            regions: std::slice::from_ref(s),
            thresholds,
        }
    }
    assert!(
        policy.decide(&round(0, &scan, thresholds)).load.is_empty(),
        "a one-off scan is not admitted"
    );
    let quiet = idle(RegionId(1), 1000, false);
    assert!(
        policy
            .decide(&round(60, &quiet, thresholds))
            .load
            .is_empty()
    );
    assert_eq!(
        policy.decide(&round(120, &scan, thresholds)).load,
        [RegionId(1)],
        "a second round of work admits it"
    );
}

#[test]
fn traces_are_deterministic_and_serializable() {
    let a = generate(TraceKind::ScanStorm, 3, SHAPE);
    assert_eq!(a, generate(TraceKind::ScanStorm, 3, SHAPE));
    assert_ne!(a, generate(TraceKind::ScanStorm, 4, SHAPE));
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(serde_json::from_str::<Trace>(&json).unwrap(), a);
    assert_eq!(a.steps.len(), SHAPE.steps);
}

#[test]
fn the_offline_reference_saves_at_least_as_much_as_lru() {
    for kind in TraceKind::ALL {
        let trace = generate(kind, 9, SHAPE);
        let thresholds = Thresholds::from_capacity(trace.total_size() / 4);
        let reference = offline_reference(&trace, thresholds, 10);
        let lru = replay(
            &mut LruPolicy::new(DEFAULT_MIN_RESIDENCE),
            &trace,
            thresholds,
            DEFAULT_MIN_RESIDENCE,
            &[],
        )
        .unwrap();
        assert!(
            reference.net_work_saved() >= lru.net_work_saved(),
            "{}",
            kind.name()
        );
        assert!(
            reference.peak_memory <= thresholds.stop_load_threshold
                || kind == TraceKind::WriteHeavy
        );
    }
}

fn arbitrary_stats() -> impl Strategy<Value = Vec<RegionStats>> {
    prop::collection::vec(
        (
            1..200u64,
            0..20u64,
            1..60u64,
            any::<bool>(),
            prop::bool::weighted(0.1),
            any::<bool>(),
            0..3u64,
        ),
        1..40,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(
                |(i, (size, reads, amp, leader, pinned, cached, loaded))| RegionStats {
                    id: RegionId(i as u64 + 1),
                    size,
                    reads,
                    scanned_versions: reads * 10 * amp,
                    returned_keys: reads * 10,
                    is_leader: leader,
                    pinned,
                    cached,
                    loaded_at: cached.then_some(loaded * 600),
                },
            )
            .collect()
    })
}

proptest! {
    /// Random rounds, fed in sequence to each policy: no decision breaks the contract.
    #[test]
    fn random_rounds_never_break_the_contract(
        rounds in prop::collection::vec((arbitrary_stats(), 500..3000u64), 1..8),
    ) {
        for mut policy in all_policies() {
            for (step, (stats, capacity)) in rounds.iter().enumerate() {
                let thresholds = Thresholds::from_capacity(*capacity);
                let used = stats.iter().filter(|s| s.cached).map(|s| s.size).sum();
                let round = Round { now: 1200 + step as u64 * 60, memory_used: used, regions: stats, thresholds };
                let decision = policy.decide(&round);
                prop_assert!(check_decision(&round, &decision, DEFAULT_MIN_RESIDENCE).is_ok(),
                    "{}: {:?}", policy.name(), check_decision(&round, &decision, DEFAULT_MIN_RESIDENCE));
            }
        }
    }
}
