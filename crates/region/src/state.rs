//! The six lifecycle states of a cached region and the transition table, as data.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> Pending: insert
//!     Pending --> Loading: load starts (disk snapshot taken)
//!     Pending --> [*]: evicted (no data yet)
//!     Loading --> Active: load finished
//!     Loading --> LoadingCanceled: evicted while loading
//!     Loading --> Evicting: load failed
//!     LoadingCanceled --> PendingEvict: load stopped, snapshots live
//!     LoadingCanceled --> Evicting: load stopped
//!     Active --> PendingEvict: evicted
//!     PendingEvict --> Evicting: last snapshot dropped
//!     Evicting --> [*]: data dropped
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{RegionError, RegionId};

/// Where a cached region is in its lifecycle. The meanings are TiKV's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegionState {
    /// Chosen for caching, not loading yet; its epoch may be older than Raft's.
    Pending,
    /// Being loaded from a disk snapshot; writes already land in memory.
    Loading,
    /// Loaded: serves reads.
    Active,
    /// Evicted while its load still runs; the loader stops and hands it to eviction.
    LoadingCanceled,
    /// Evicted; snapshots taken before still read it.
    PendingEvict,
    /// Its data is being dropped; then the region is removed.
    Evicting,
}

/// Every allowed step: `(from, to)`, where `to == None` means removed from the map.
///
/// This table is the only place that decides whether a step is allowed; see
/// [`RegionState::check_step`].
pub const TRANSITIONS: &[(RegionState, Option<RegionState>)] = {
    use RegionState::*;
    &[
        (Pending, Some(Loading)),
        (Pending, None),
        (Loading, Some(Active)),
        (Loading, Some(LoadingCanceled)),
        (Loading, Some(Evicting)),
        (LoadingCanceled, Some(PendingEvict)),
        (LoadingCanceled, Some(Evicting)),
        (Active, Some(PendingEvict)),
        (PendingEvict, Some(Evicting)),
        (Evicting, None),
    ]
};

impl RegionState {
    /// All six states, in lifecycle order.
    pub const ALL: [RegionState; 6] = [
        RegionState::Pending,
        RegionState::Loading,
        RegionState::Active,
        RegionState::LoadingCanceled,
        RegionState::PendingEvict,
        RegionState::Evicting,
    ];

    /// True when [`TRANSITIONS`] allows `self -> to` (`None`: removal).
    pub fn can_step(self, to: Option<RegionState>) -> bool {
        TRANSITIONS.contains(&(self, to))
    }

    /// Checks `self -> to` against the table.
    ///
    /// # Errors
    /// [`RegionError::InvalidTransition`] naming the region and both states.
    pub fn check_step(self, region: RegionId, to: Option<RegionState>) -> Result<(), RegionError> {
        if self.can_step(to) {
            Ok(())
        } else {
            Err(RegionError::InvalidTransition {
                region,
                from: self,
                to: Target(to),
            })
        }
    }

    /// True for the states in which the region is on its way out.
    pub fn is_evicting(self) -> bool {
        matches!(
            self,
            RegionState::LoadingCanceled | RegionState::PendingEvict | RegionState::Evicting
        )
    }

    /// The state's name as it appears in logs and transcripts.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionState::Pending => "Pending",
            RegionState::Loading => "Loading",
            RegionState::Active => "Active",
            RegionState::LoadingCanceled => "LoadingCanceled",
            RegionState::PendingEvict => "PendingEvict",
            RegionState::Evicting => "Evicting",
        }
    }
}

impl fmt::Display for RegionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The target of a transition, for messages: a state, or removal from the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target(pub Option<RegionState>);

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(state) => state.fmt(f),
            None => f.write_str("removed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_but_active_and_pending_evict_has_an_exit_and_all_are_reachable() {
        for state in RegionState::ALL {
            assert!(
                TRANSITIONS.iter().any(|(from, _)| *from == state),
                "{state} is a dead end"
            );
            let reachable = state == RegionState::Pending
                || TRANSITIONS.iter().any(|(_, to)| *to == Some(state));
            assert!(reachable, "{state} is unreachable");
        }
    }

    #[test]
    fn an_invalid_step_names_the_region_and_both_states() {
        let err = RegionState::Active.check_step(RegionId(7), Some(RegionState::Loading));
        let message = err.unwrap_err().to_string();
        assert_eq!(message, "region 7: invalid transition Active -> Loading");
        let err = RegionState::Active
            .check_step(RegionId(7), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "region 7: invalid transition Active -> removed"
        );
    }

    #[test]
    fn only_pending_and_evicting_regions_can_be_removed() {
        let removable: Vec<_> = RegionState::ALL
            .into_iter()
            .filter(|s| s.can_step(None))
            .collect();
        assert_eq!(removable, [RegionState::Pending, RegionState::Evicting]);
    }
}
