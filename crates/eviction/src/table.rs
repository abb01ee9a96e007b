//! The policy table: every policy on every trace at several capacities, as a ratio to the
//! offline reference.

use serde::{Deserialize, Serialize};

use crate::{
    ContractViolation, DEFAULT_MIN_RESIDENCE, EvictionPolicy, FrequencyConfig, FrequencyPolicy,
    LruPolicy, Score, Thresholds, TikvConfig, TikvPolicy, TraceKind, TraceShape, generate,
    offline_reference, replay,
};

/// One cell of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyRow {
    /// Capacity as a fraction of all regions' bytes.
    pub capacity_fraction: f64,
    /// The policy's score.
    pub score: Score,
    /// The offline reference's score on the same trace and capacity.
    pub reference: Score,
}

impl PolicyRow {
    /// Net work saved as a fraction of the reference's.
    pub fn ratio(&self) -> f64 {
        self.score.net_work_saved() as f64 / self.reference.net_work_saved().max(1) as f64
    }
}

/// The three policies with their default settings, fresh: the default first, then the
/// TiKV-style policy, then the LRU baseline.
pub fn all_policies() -> Vec<Box<dyn EvictionPolicy>> {
    vec![
        Box::new(FrequencyPolicy::new(FrequencyConfig::default())),
        Box::new(TikvPolicy::new(TikvConfig::default())),
        Box::new(LruPolicy::new(DEFAULT_MIN_RESIDENCE)),
    ]
}

/// The offline horizons tried; the reference is the best of them on each trace and
/// capacity (a lookahead greedy is not optimal, and the best horizon varies).
pub const OFFLINE_HORIZONS: [usize; 4] = [10, 30, 60, 120];

/// The best offline schedule of [`OFFLINE_HORIZONS`] by net work saved.
pub fn best_offline(trace: &crate::Trace, thresholds: Thresholds) -> Score {
    let scores = OFFLINE_HORIZONS.map(|horizon| offline_reference(trace, thresholds, horizon));
    let best = scores.into_iter().max_by_key(Score::net_work_saved);
    best.unwrap_or_else(|| offline_reference(trace, thresholds, 10))
}

/// Runs every policy on every trace kind (seeded) at 10%, 25% and 50% capacity.
///
/// # Errors
/// A policy's [`ContractViolation`].
pub fn policy_table(seed: u64, shape: TraceShape) -> Result<Vec<PolicyRow>, ContractViolation> {
    let mut rows = Vec::new();
    for kind in TraceKind::ALL {
        let trace = generate(kind, seed, shape);
        for fraction in [0.10, 0.25, 0.50] {
            let capacity = (trace.total_size() as f64 * fraction) as u64;
            let thresholds = Thresholds::from_capacity(capacity);
            let reference = best_offline(&trace, thresholds);
            for mut policy in all_policies() {
                let score = replay(
                    policy.as_mut(),
                    &trace,
                    thresholds,
                    DEFAULT_MIN_RESIDENCE,
                    &[],
                )?;
                rows.push(PolicyRow {
                    capacity_fraction: fraction,
                    score,
                    reference: reference.clone(),
                });
            }
        }
    }
    Ok(rows)
}
