//! `ime-eviction` alone: a generated trace — a drifting hot set plus one-off full scans
//! of cold regions, the bait that pollutes a cache — replayed against the default policy,
//! TiKV's load-based policy and LRU at a quarter of the data's size, each decision checked
//! against the policy contract, each policy scored against the best offline reference
//! (a planner that knows the future).
//!
//! Run it: `cargo run -p ime-eviction --example replay_trace`.

use ime_eviction::{
    DEFAULT_MIN_RESIDENCE, Thresholds, TraceKind, TraceShape, all_policies, best_offline, generate,
    replay,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shape = TraceShape {
        regions: 60,
        steps: 90,
        reads_per_step: 400,
        step_seconds: 60,
    };
    let trace = generate(TraceKind::ScanStorm, 7, shape);
    let thresholds = Thresholds::from_capacity(trace.total_size() / 4);
    let best = best_offline(&trace, thresholds).net_work_saved();
    println!(
        "{} regions, {} steps; the offline reference saves {best} versions of MVCC work \
         net of its loads",
        shape.regions, shape.steps
    );
    let mut ratios = Vec::new();
    for mut policy in all_policies() {
        // Every decision is checked against the contract: a violation is an error here.
        let score = replay(
            policy.as_mut(),
            &trace,
            thresholds,
            DEFAULT_MIN_RESIDENCE,
            &[],
        )?;
        let ratio = score.net_work_saved() as f64 / best.max(1) as f64;
        println!(
            "{:>10}: {ratio:.3} of the reference, byte hit ratio {:.3}, {} loads, \
             {} evictions, peak memory {:.0}% of capacity",
            score.policy,
            score.byte_hit_ratio(),
            score.loads,
            score.evictions,
            score.peak_memory as f64 * 100.0 / thresholds.capacity as f64
        );
        assert!(score.peak_memory <= thresholds.capacity);
        ratios.push(ratio);
    }
    // The default policy first, LRU last.
    assert!(
        ratios[0] > ratios[2],
        "the default policy does not fall for the scans"
    );
    Ok(())
}
