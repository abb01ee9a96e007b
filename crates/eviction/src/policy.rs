//! The policy trait, its inputs and outputs, and the contract both sides keep.

use ime_region::{EvictReason, RegionId};
use serde::{Deserialize, Serialize};

/// What the engine knows of one region at a policy round. Counters cover the time since
/// the previous round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStats {
    /// The region.
    pub id: RegionId,
    /// Bytes it occupies in memory (or would, once loaded).
    pub size: u64,
    /// Read requests.
    pub reads: u64,
    /// MVCC versions those reads scanned.
    pub scanned_versions: u64,
    /// Keys those reads returned.
    pub returned_keys: u64,
    /// Whether the local peer leads the region (only leaders serve reads).
    pub is_leader: bool,
    /// Pinned by the user: always loaded when possible, never auto-evicted.
    pub pinned: bool,
    /// Whether it is cached (loading or loaded) now.
    pub cached: bool,
    /// When it was loaded (round time, seconds), if cached.
    pub loaded_at: Option<u64>,
}

impl RegionStats {
    /// MVCC amplification: versions scanned per key returned (1 when nothing was read).
    pub fn amplification(&self) -> f64 {
        if self.returned_keys == 0 {
            1.0
        } else {
            self.scanned_versions as f64 / self.returned_keys as f64
        }
    }

    /// MVCC work the cache would save on these reads: the versions scanned beyond the keys
    /// returned (a GC'd in-memory copy scans about one version per key).
    pub fn work(&self) -> u64 {
        self.scanned_versions.saturating_sub(self.returned_keys)
    }
}

/// Memory thresholds, as the engine derives them from its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Hard limit: memory never passes it.
    pub capacity: u64,
    /// Above this, evict until under `stop_load_threshold`.
    pub evict_threshold: u64,
    /// Loads stop here; pressure evictions stop here too (hysteresis).
    pub stop_load_threshold: u64,
}

/// Why a set of thresholds is unusable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    /// The thresholds must satisfy `stop_load <= evict <= capacity`.
    #[error(
        "thresholds must satisfy stop_load ({stop_load}) <= evict ({evict}) <= capacity ({capacity})"
    )]
    Unordered {
        /// The stop-load threshold.
        stop_load: u64,
        /// The evict threshold.
        evict: u64,
        /// The capacity.
        capacity: u64,
    },
}

impl Thresholds {
    /// Checked thresholds.
    ///
    /// # Errors
    /// [`ThresholdError::Unordered`].
    pub fn new(
        capacity: u64,
        evict_threshold: u64,
        stop_load_threshold: u64,
    ) -> Result<Self, ThresholdError> {
        if stop_load_threshold <= evict_threshold && evict_threshold <= capacity {
            Ok(Thresholds {
                capacity,
                evict_threshold,
                stop_load_threshold,
            })
        } else {
            Err(ThresholdError::Unordered {
                stop_load: stop_load_threshold,
                evict: evict_threshold,
                capacity,
            })
        }
    }

    /// Fixed fractions for trace replays: evict at 90% of capacity, stop loading at 80%
    /// (the engine's configuration derives TiKV's thresholds instead,
    /// `ime_controller::Config::thresholds`; for caches below 2 GiB they differ only in
    /// stop-load, 75% there).
    pub fn from_capacity(capacity: u64) -> Self {
        Thresholds {
            capacity,
            evict_threshold: capacity / 10 * 9,
            stop_load_threshold: capacity / 10 * 8,
        }
    }
}

/// One policy round's input.
#[derive(Clone, Debug)]
pub struct Round<'a> {
    /// Round time in seconds; never decreases.
    pub now: u64,
    /// Bytes the cached regions hold.
    pub memory_used: u64,
    /// Every region the engine knows, cached or not.
    pub regions: &'a [RegionStats],
    /// The thresholds in force.
    pub thresholds: Thresholds,
}

/// A policy's answer: evictions (applied first), then loads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Regions to evict, each with its reason.
    pub evict: Vec<(RegionId, EvictReason)>,
    /// Regions to load, in order.
    pub load: Vec<RegionId>,
}

/// Decides which regions to load and which to evict, from statistics alone.
///
/// # The caller (the engine) guarantees
/// - `decide` is called once per round with every region it knows, cached or not, and
///   counters covering the time since the previous round; `now` never decreases.
/// - It applies the decision, evictions first, and the next round's `cached`,
///   `loaded_at` and `memory_used` reflect it (a load may fail; the policy is not told).
///
/// # The policy guarantees
/// - It never evicts a region that is pinned or not cached, and never loads a region
///   that is cached, or that the local peer does not lead (unless pinned).
/// - Its loads never take projected memory (used, minus evicted sizes, plus loaded sizes)
///   above the stop-load threshold.
/// - When memory is above the evict threshold, it evicts (`MemoryPressure`) until the
///   projection is at or below the stop-load threshold, or nothing unpinned is left.
/// - Otherwise it evicts (`AutoEvict`) only regions resident for at least its minimum
///   residence, and at most a tenth of the cached regions (at least one) per round, so
///   that nothing flaps (tikv/tikv#17442, #18093).
pub trait EvictionPolicy: Send {
    /// A short name for tables and logs.
    fn name(&self) -> &'static str;

    /// One round's decision.
    fn decide(&mut self, round: &Round<'_>) -> Decision;
}
