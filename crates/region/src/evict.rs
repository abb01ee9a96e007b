//! Eviction and loading: the lifecycle steps the engine drives, each returning what the
//! engine must do next as a value.

use std::fmt;

use crate::{
    EvictCallback, EvictReason, EvictionEnd, KeyRange, Region, RegionError, RegionId, RegionMap,
    RegionState,
};

/// Where an eviction stands after the call that asked for it, and what the engine does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictStep {
    /// The region was not cached; nothing to do.
    NotCached,
    /// The region was Pending (no data): it is gone already.
    Removed,
    /// The region was Loading; it is now LoadingCanceled. The loader must stop and report
    /// through [`RegionMap::finish_loading`] or [`RegionMap::fail_loading`].
    LoadCanceled,
    /// The region is PendingEvict: live snapshots still read it. The last
    /// [`RegionMap::release_snapshot`] moves it on.
    AwaitingSnapshots,
    /// The region is Evicting: drop its data, then call [`RegionMap::finish_eviction`].
    ReadyToDelete,
    /// The region was already on its way out; a callback given now waits for that.
    AlreadyEvicting,
}

/// The result of an eviction request.
#[derive(Debug)]
#[must_use = "an eviction may require the engine to delete data and fire callbacks"]
pub struct Eviction {
    /// The region asked for.
    pub region: RegionId,
    /// The reason given.
    pub reason: EvictReason,
    /// The state the region was in when the eviction was asked for (`None`: not cached).
    pub from: Option<RegionState>,
    /// Where the eviction stands.
    pub step: EvictStep,
    /// Callbacks whose eviction has ended: fire them (outside any lock); dropping them
    /// fires them too.
    pub callbacks: Vec<EvictCallback>,
}

impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "region {} evicted ({}): {:?}",
            self.region, self.reason, self.step
        )
    }
}

/// A load in progress, as [`RegionMap::start_loading`] hands it out: the region as it was
/// when the load started. After a split, the load covers every child within the range.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a started load must be finished or failed"]
pub struct LoadTicket {
    /// The region being loaded, as it was at the start.
    pub region: Region,
}

/// What became of one region when its load ended.
#[derive(Debug)]
pub enum LoadEnd {
    /// It is Active and serves reads.
    Activated(RegionId),
    /// It was evicted meanwhile (or the load failed): delete its data.
    Evicted(Eviction),
}

impl RegionMap {
    /// Evicts region `id` for `reason`. `callback`, if given, fires exactly once when the
    /// eviction ends, whatever path it takes (at once if the region is not cached or was
    /// Pending).
    pub fn evict(
        &mut self,
        id: RegionId,
        reason: EvictReason,
        callback: Option<EvictCallback>,
    ) -> Eviction {
        let mut eviction = Eviction {
            region: id,
            reason,
            from: self.state(id),
            step: EvictStep::NotCached,
            callbacks: Vec::new(),
        };
        let Some(state) = self.state(id) else {
            eviction
                .callbacks
                .extend(callback.map(|cb| cb.ended(EvictionEnd::NotCached)));
            return eviction;
        };
        eviction.step = match state {
            RegionState::Pending => {
                // Pending -> removed is in the table; the region holds no data.
                if let Ok(Some(entry)) = self.step(id, None) {
                    eviction.callbacks.extend(ended(entry.callbacks));
                }
                eviction.step = EvictStep::Removed;
                eviction
                    .callbacks
                    .extend(callback.map(|cb| cb.ended(EvictionEnd::Removed)));
                return eviction;
            }
            RegionState::Loading => self.begin_eviction(id, RegionState::LoadingCanceled, reason),
            RegionState::Active => self.begin_eviction(id, RegionState::PendingEvict, reason),
            RegionState::LoadingCanceled | RegionState::PendingEvict | RegionState::Evicting => {
                EvictStep::AlreadyEvicting
            }
        };
        if let (Some(cb), Some(entry)) = (callback, self.by_id.get_mut(&id)) {
            entry.callbacks.push(cb);
        }
        eviction
    }

    /// Evicts every region overlapping `range` (DeleteRange, ingest, destroy range).
    pub fn evict_overlapping(&mut self, range: &KeyRange, reason: EvictReason) -> Vec<Eviction> {
        let ids = self.overlapping(range);
        ids.into_iter()
            .map(|id| self.evict(id, reason, None))
            .collect()
    }

    /// Called once an Evicting region's data is gone: removes it and returns its callbacks,
    /// ended as [`EvictionEnd::Removed`], to fire.
    ///
    /// # Errors
    /// [`RegionError::NotEvicting`] unless the region is Evicting;
    /// [`RegionError::NotCached`] if it is not in the map.
    pub fn finish_eviction(&mut self, id: RegionId) -> Result<Vec<EvictCallback>, RegionError> {
        match self.state(id) {
            None => return Err(RegionError::NotCached(id)),
            Some(RegionState::Evicting) => {}
            Some(state) => return Err(RegionError::NotEvicting { region: id, state }),
        }
        let entry = self.step(id, None)?;
        Ok(entry
            .map(|e| ended(e.callbacks).collect())
            .unwrap_or_default())
    }

    /// Pending -> Loading: the engine takes its disk snapshot under the same lock that
    /// orders writes, then loads the returned region's range from it.
    ///
    /// # Errors
    /// [`RegionError::NotCached`], or [`RegionError::InvalidTransition`] unless Pending.
    pub fn start_loading(&mut self, id: RegionId) -> Result<LoadTicket, RegionError> {
        self.step(id, Some(RegionState::Loading))?;
        let region = self.region(id).cloned().ok_or(RegionError::NotCached(id))?;
        Ok(LoadTicket { region })
    }

    /// The load described by `ticket` completed: every region it covers that is still
    /// Loading becomes Active; one that was canceled meanwhile moves on to deletion.
    pub fn finish_loading(&mut self, ticket: &LoadTicket) -> Vec<LoadEnd> {
        self.end_load(ticket, None)
    }

    /// The load described by `ticket` failed: every region it covers is evicted, with
    /// [`EvictReason::LoadFailed`] unless it was already canceled for another reason.
    pub fn fail_loading(&mut self, ticket: &LoadTicket) -> Vec<LoadEnd> {
        self.end_load(ticket, Some(EvictReason::LoadFailed))
    }

    fn end_load(&mut self, ticket: &LoadTicket, failure: Option<EvictReason>) -> Vec<LoadEnd> {
        let mut ends = Vec::new();
        for id in self.overlapping(&ticket.region.range) {
            let Some(entry) = self.by_id.get_mut(&id) else {
                continue;
            };
            let from = entry.state;
            let reason = match (from, failure) {
                (RegionState::Loading, None) => {
                    entry.state = RegionState::Active;
                    ends.push(LoadEnd::Activated(id));
                    continue;
                }
                (RegionState::Loading, Some(reason)) => reason,
                (RegionState::LoadingCanceled, _) => {
                    entry.evict_reason.unwrap_or(EvictReason::LoadFailed)
                }
                _ => continue,
            };
            entry.evict_reason = Some(reason);
            let step = self.settle(id);
            ends.push(LoadEnd::Evicted(Eviction {
                region: id,
                reason,
                from: Some(from),
                step,
                callbacks: Vec::new(),
            }));
        }
        ends
    }

    /// Puts an Active or Loading region on its way out: `to` is the next state, and the
    /// region goes on to Evicting at once if no snapshot holds it.
    fn begin_eviction(&mut self, id: RegionId, to: RegionState, reason: EvictReason) -> EvictStep {
        if let Err(err) = self.step(id, Some(to)) {
            crate::never!("eviction step refused: {err}");
            return EvictStep::AlreadyEvicting;
        }
        if let Some(entry) = self.by_id.get_mut(&id) {
            entry.evict_reason = Some(reason);
        }
        match to {
            RegionState::LoadingCanceled => EvictStep::LoadCanceled,
            _ => self.settle(id),
        }
    }

    /// Moves an evicting region as far as its snapshots allow: to Evicting when none is
    /// live (ready to delete), else to PendingEvict.
    pub(crate) fn settle(&mut self, id: RegionId) -> EvictStep {
        let Some(entry) = self.by_id.get(&id) else {
            return EvictStep::NotCached;
        };
        let next = if entry.snapshots.empty_or_watch() {
            RegionState::Evicting
        } else {
            RegionState::PendingEvict
        };
        if entry.state == next {
            return step_of(next);
        }
        match self.step(id, Some(next)) {
            Ok(_) => step_of(next),
            Err(_) => EvictStep::AlreadyEvicting,
        }
    }
}

fn step_of(state: RegionState) -> EvictStep {
    if state == RegionState::Evicting {
        EvictStep::ReadyToDelete
    } else {
        EvictStep::AwaitingSnapshots
    }
}

fn ended(callbacks: Vec<EvictCallback>) -> impl Iterator<Item = EvictCallback> {
    callbacks
        .into_iter()
        .map(|cb| cb.ended(EvictionEnd::Removed))
}
