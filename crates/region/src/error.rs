//! The crate's error type: [`RegionError`].

use crate::state::Target;
use crate::{RegionId, RegionState};

/// An operation on region metadata that cannot be carried out.
///
/// None of these is a reason to abort: the engine answers each by evicting the region it
/// names (see [`RegionError::region`]) and counting the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// A bounded key range whose end is not above its start.
    #[error("invalid key range: start {} is not below end {}", .start.escape_ascii(), .end.escape_ascii())]
    InvalidRange {
        /// The start key given.
        start: Vec<u8>,
        /// The end key given.
        end: Vec<u8>,
    },
    /// A lifecycle step that the transition table does not allow.
    #[error("region {region}: invalid transition {from} -> {to}")]
    InvalidTransition {
        /// The region.
        region: RegionId,
        /// Its state.
        from: RegionState,
        /// Where the step would have taken it.
        to: Target,
    },
    /// The region is not in the map.
    #[error("region {0} is not cached")]
    NotCached(RegionId),
    /// Only an Evicting region's eviction can be finished.
    #[error("region {region} is {state}, not Evicting: its eviction cannot be finished")]
    NotEvicting {
        /// The region.
        region: RegionId,
        /// Its state.
        state: RegionState,
    },
    /// A split whose children do not partition the source region.
    #[error("region {region}: invalid split: {detail}")]
    InvalidSplit {
        /// The source region.
        region: RegionId,
        /// What is wrong with the children.
        detail: String,
    },
    /// A snapshot ticket that matches no live or historical region.
    #[error("region {region} (version {version}): no snapshot at read_ts {read_ts} is registered")]
    UnknownSnapshot {
        /// The ticket's region.
        region: RegionId,
        /// The epoch version the ticket was taken at.
        version: u64,
        /// The ticket's read_ts.
        read_ts: u64,
    },
    /// An eviction reason name that does not exist.
    #[error("unknown eviction reason `{0}`")]
    UnknownReason(String),
}

impl From<ime_types::InvalidRange> for RegionError {
    fn from(err: ime_types::InvalidRange) -> Self {
        RegionError::InvalidRange {
            start: err.start,
            end: err.end,
        }
    }
}

impl RegionError {
    /// The region the error concerns, when there is one: the one to evict.
    pub fn region(&self) -> Option<RegionId> {
        match self {
            RegionError::InvalidTransition { region, .. }
            | RegionError::InvalidSplit { region, .. }
            | RegionError::UnknownSnapshot { region, .. }
            | RegionError::NotEvicting { region, .. } => Some(*region),
            RegionError::NotCached(region) => Some(*region),
            RegionError::InvalidRange { .. } | RegionError::UnknownReason(_) => None,
        }
    }
}
