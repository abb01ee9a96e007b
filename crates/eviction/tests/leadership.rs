//! Leadership in the replay, as the engine handles it outside any policy: a region this
//! store stops leading is evicted; one that comes back is warmed up before its first read
//! only when the store it comes from held it (TiKV's transfer hint); and the offline
//! reference keeps the same rule, never holding a region this store does not lead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use ime_eviction::*;
use ime_region::RegionId;

/// Loads every region it leads that was read, up to the stop-load threshold; never
/// evicts.
struct Greedy;

impl EvictionPolicy for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn decide(&mut self, round: &Round<'_>) -> Decision {
        let mut used = round.memory_used;
        let mut load = Vec::new();
        for s in round.regions {
            if !s.cached
                && s.is_leader
                && s.reads > 0
                && used + s.size <= round.thresholds.stop_load_threshold
            {
                used += s.size;
                load.push(s.id);
            }
        }
        Decision {
            load,
            evict: Vec::new(),
        }
    }
}

/// Never loads anything.
struct Never;

impl EvictionPolicy for Never {
    fn name(&self) -> &'static str {
        "never"
    }

    fn decide(&mut self, _: &Round<'_>) -> Decision {
        Decision::default()
    }
}

/// MVCC work per read, well above a load's own scan (1 MiB / `BYTES_PER_VERSION`).
const WORK: u64 = 100_000;

fn read() -> TraceRead {
    TraceRead {
        region: 0,
        reads: 1,
        scanned_versions: WORK + 1,
        returned_keys: 1,
    }
}

/// One region: read here at steps 0 and 1, led elsewhere at steps 2 and 3 (read there
/// at step 2, and at step 3 when `read_while_away`), back and read here at step 4.
fn trace(read_while_away: bool) -> Trace {
    let here = || TraceStep {
        reads: vec![read()],
        ..TraceStep::default()
    };
    let away = |remote: bool| TraceStep {
        followers: vec![0],
        remote_reads: if remote { vec![0] } else { Vec::new() },
        ..TraceStep::default()
    };
    Trace {
        name: "leadership".into(),
        step_seconds: 60,
        regions: vec![TraceRegion {
            id: RegionId(1),
            size: 1 << 20,
        }],
        steps: vec![here(), here(), away(true), away(read_while_away), here()],
    }
}

fn thresholds() -> Thresholds {
    Thresholds::from_capacity(1 << 30)
}

#[test]
fn a_region_that_comes_back_warm_is_loaded_before_its_first_read() {
    let score = replay(&mut Greedy, &trace(true), thresholds(), 0, &[]).unwrap();
    // Loaded after step 0; evicted when leadership left; warmed up on its return, so the
    // reads of steps 1 and 4 are served from memory.
    assert_eq!(score.work_saved, 2 * WORK);
    assert_eq!((score.loads, score.evictions), (2, 1));
}

#[test]
fn a_region_the_other_leader_let_cool_is_not_warmed_up() {
    let score = replay(&mut Greedy, &trace(false), thresholds(), 0, &[]).unwrap();
    // Unread at the other leader for a step: it dropped the region, the transfer back
    // carries no hint, and the read of step 4 goes to disk (the policy loads it after).
    assert_eq!(score.work_saved, WORK);
    assert_eq!((score.loads, score.evictions), (2, 1));
}

#[test]
fn a_region_not_cached_when_leadership_left_is_not_warmed_up() {
    let score = replay(&mut Never, &trace(true), thresholds(), 0, &[]).unwrap();
    assert_eq!((score.work_saved, score.loads, score.evictions), (0, 0, 0));
}

#[test]
fn a_warm_up_is_refused_at_the_stop_load_threshold() {
    // Room for one region: while the first is away, the policy fills it with a second.
    let tight = Thresholds {
        capacity: 2 << 20,
        evict_threshold: 2 << 20,
        stop_load_threshold: 1 << 20,
    };
    let mut trace = trace(true);
    trace.regions.push(TraceRegion {
        id: RegionId(2),
        size: 1 << 20,
    });
    trace.steps[2].reads.push(TraceRead {
        region: 1,
        ..read()
    });
    let score = replay(&mut Greedy, &trace, tight, 0, &[]).unwrap();
    // The first region's return finds memory at the threshold: no warm-up, and its read
    // at step 4 goes to disk; only step 1's read was served from memory.
    assert_eq!(score.work_saved, WORK);
    assert_eq!((score.loads, score.evictions), (2, 1));
}

#[test]
fn the_offline_reference_never_holds_a_region_led_elsewhere() {
    let score = offline_reference(&trace(true), thresholds(), 10);
    // In time for steps 0, 1 and 4, but evicted at step 2 and loaded again at step 4.
    assert_eq!(score.work_saved, 3 * WORK);
    assert_eq!((score.loads, score.evictions), (2, 1));
}
