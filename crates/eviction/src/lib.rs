//! `ime-eviction`: which regions IME loads and which it evicts.
//!
//! Pure decisions: [`RegionStats`] in, a [`Decision`] (load these, evict these, with
//! reasons) out. The crate never touches data, starts no thread and reads no clock.
//!
//! - [`EvictionPolicy`], with its contract written for both sides;
//! - [`FrequencyPolicy`] (the default: TinyLFU-like admission with a doorkeeper and a
//!   ghost history), [`TikvPolicy`] (TiKV's load-based policy) and [`LruPolicy`] (the
//!   baseline), all planned by one shared round planner, so memory pressure, pins,
//!   minimum residence and the per-round eviction cap are handled once;
//! - traces ([`Trace`], [`generate`]) and the replay harness ([`replay`]) that checks
//!   every decision against the contract and scores a policy by MVCC work saved, byte hit
//!   ratio, and loads and evictions per hour, against [`offline_reference`].
//!
//! ```
//! use ime_eviction::*;
//!
//! let shape = TraceShape { regions: 50, steps: 60, reads_per_step: 500, step_seconds: 60 };
//! let trace = generate(TraceKind::ZipfDrift, 7, shape);
//! let thresholds = Thresholds::from_capacity(trace.total_size() / 4);
//! let mut policy = default_policy();
//! let score = replay(&mut policy, &trace, thresholds, DEFAULT_MIN_RESIDENCE, &[]).unwrap();
//! let best = offline_reference(&trace, thresholds, 10);
//! assert!(score.work_saved <= score.work_total && best.work_saved > 0);
//! assert_eq!(score.flaps, 0);
//! ```

#![forbid(unsafe_code)]

/// Bytes per MVCC version the harness assumes when it charges a load: loading a region
/// scans `size / BYTES_PER_VERSION` versions from disk.
pub const BYTES_PER_VERSION: u64 = 64;

mod plan;
mod policies;
mod policy;
mod replay;
mod table;
mod trace;

pub use policies::{
    DEFAULT_MIN_RESIDENCE, FrequencyConfig, FrequencyPolicy, LruPolicy, TikvConfig, TikvPolicy,
    default_policy,
};
pub use policy::{Decision, EvictionPolicy, RegionStats, Round, ThresholdError, Thresholds};
pub use replay::{ContractViolation, Score, check_decision, offline_reference, replay};
pub use table::{OFFLINE_HORIZONS, PolicyRow, all_policies, best_offline, policy_table};
pub use trace::{Trace, TraceKind, TraceRead, TraceRegion, TraceShape, TraceStep, generate};
