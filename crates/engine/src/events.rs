//! The engine as an observer of the Raft layer: one exhaustive `match` over
//! [`RaftEvent`] (no wildcard arm: a new event kind does not compile until it is handled
//! here), delivery gaps, and the leader-transfer warm-up.

use std::sync::Arc;
use std::time::Instant;

use ime_disk::DiskEngine;
use ime_observer::{DeliveryGap, ObserverResult, PeerRole, RaftEvent, RaftObserver};
use ime_region::{
    EpochChange, EvictReason, Region, RegionEpoch, RegionId, RegionState, SplitOutcome,
};

use crate::shared::{Cached, Core, Effects, Meta, bounds_of};
use crate::stats::GapSource;
use crate::{Engine, EngineError};

/// A leader transfer to this store waiting for its region to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warmup {
    /// The term the transfer happens in.
    pub term: u64,
    /// When the acknowledgement stops waiting, whatever the load's state.
    pub deadline: Instant,
}

impl<D: DiskEngine> Engine<D> {
    /// Handles one Raft event (what the bus calls; callable directly). Returns once the
    /// event's effect is in place: a region that must stop being served from memory has.
    ///
    /// # Errors
    /// [`EngineError::Region`] for a malformed event (a split whose children do not
    /// partition the source); the regions it names are evicted all the same.
    pub fn on_event(&self, event: &RaftEvent) -> Result<(), EngineError> {
        self.core.on_event(event)
    }

    /// An observer to register on an [`ime_observer::EventBus`]: it forwards every event
    /// and gap to this engine.
    pub fn observer(&self) -> Arc<dyn RaftObserver> {
        Arc::new(EngineObserver {
            core: Arc::clone(&self.core),
        })
    }

    /// Whether a leader transfer of `region` in `term` may be acknowledged now: yes once
    /// the region is loaded, once the warm-up's deadline has passed (retries do not extend
    /// it), or when no warm-up is pending for that term.
    pub fn transfer_leader_ready(&self, region: RegionId, term: u64) -> bool {
        let meta = self.core.meta();
        let Some(warmup) = meta.warmups.get(&region) else {
            return true;
        };
        if warmup.term != term || Instant::now() >= warmup.deadline {
            return true;
        }
        !matches!(
            meta.map.state(region),
            Some(RegionState::Pending | RegionState::Loading)
        )
    }
}

/// The engine's face on the bus.
struct EngineObserver<D: DiskEngine> {
    core: Arc<Core<D>>,
}

impl<D: DiskEngine> RaftObserver for EngineObserver<D> {
    fn name(&self) -> &str {
        "ime-engine"
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        self.core.on_event(event).map_err(Into::into)
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        let mut fx = Effects::default();
        let mut meta = self.core.meta();
        tracing::warn!(%gap, "events lost: evicting the regions they concerned");
        self.core.metrics.gap(GapSource::Delivery);
        for id in &gap.regions {
            self.core
                .evict(&mut meta, *id, EvictReason::EpochGap, None, &mut fx);
        }
        for range in &gap.ranges {
            self.core
                .evict_overlapping(&mut meta, range, EvictReason::EpochGap, &mut fx);
        }
        drop(meta);
        self.core.finish(fx);
    }
}

impl<D: DiskEngine> Core<D> {
    /// Handles one event under the metadata lock, then carries out its effects.
    fn on_event(&self, event: &RaftEvent) -> Result<(), EngineError> {
        let mut fx = Effects::default();
        let result = {
            let mut meta = self.meta();
            self.metrics.event(event.kind());
            self.handle(&mut meta, event, &mut fx)
        };
        self.finish(fx);
        result
    }

    /// What each event does to the cache (the table in `docs/engine.md`).
    pub(crate) fn handle(
        &self,
        meta: &mut Meta,
        event: &RaftEvent,
        fx: &mut Effects,
    ) -> Result<(), EngineError> {
        tracing::debug!(kind = %event.kind(), regions = ?event.regions(), "raft event");
        match event {
            RaftEvent::ApplySnapshot {
                before,
                after,
                applied_index,
            } => {
                meta.learn(after, *applied_index);
                if self.broken() {
                    return Ok(());
                }
                for region in before.iter().chain([after]) {
                    self.evict_region_and_range(meta, region, EvictReason::ApplySnapshot, fx);
                }
            }
            RaftEvent::Split { before, children } => {
                for child in children {
                    meta.learn(&child.region, child.applied_index);
                }
                return self.split(meta, before, children, fx);
            }
            RaftEvent::PrepareMerge { before, after } => {
                meta.learn(after, 0);
                self.evict_region_and_range(meta, before, EvictReason::PrepareMerge, fx);
            }
            RaftEvent::CommitMerge {
                before,
                after,
                source,
            } => {
                let hot = self.was_hot(meta, before.id) || self.was_hot(meta, source.id);
                meta.known.remove(&source.id);
                meta.learn(after, 0);
                for region in [before, source, after] {
                    self.evict_region_and_range(meta, region, EvictReason::Merge, fx);
                }
                self.reload_if_hot(meta, after, hot, fx);
            }
            RaftEvent::RollbackMerge { before, after } => {
                let hot = self.was_hot(meta, before.id);
                meta.learn(after, 0);
                self.evict_region_and_range(meta, before, EvictReason::Merge, fx);
                self.reload_if_hot(meta, after, hot, fx);
            }
            RaftEvent::ChangePeer { before, after } => {
                meta.learn(after, 0);
                match meta.map.change_epoch(before, after) {
                    EpochChange::Gap(gap) => {
                        self.gap_found(&gap);
                        self.absorb(meta, gap.eviction, fx);
                    }
                    EpochChange::NotCached | EpochChange::Updated | EpochChange::Ignored => {}
                }
            }
            RaftEvent::RoleChange { region, role, term } => {
                meta.learn(region, 0);
                self.check_epoch(meta, region.id, region.epoch, fx);
                if meta
                    .warmups
                    .get(&region.id)
                    .is_some_and(|w| w.term != *term)
                {
                    meta.warmups.remove(&region.id);
                }
                let leader = *role == PeerRole::Leader;
                if let Some(known) = meta.known.get_mut(&region.id) {
                    known.is_leader = leader;
                }
                match role {
                    PeerRole::Leader => {
                        if meta.is_pinned(&region.range) {
                            let _ = self.schedule_load(meta, region.clone(), 0, fx);
                        }
                    }
                    PeerRole::Follower | PeerRole::Candidate | PeerRole::Learner => {
                        meta.warmups.remove(&region.id);
                        self.evict(meta, region.id, EvictReason::BecomeFollower, None, fx);
                    }
                }
            }
            RaftEvent::TransferLeader { region, term } => {
                meta.learn(region, 0);
                self.check_epoch(meta, region.id, region.epoch, fx);
                let fresh = meta.warmups.get(&region.id).is_none_or(|w| w.term != *term);
                if fresh {
                    // Validation bounds the timeout; an overflow all the same means no
                    // wait at all rather than a panic.
                    let now = Instant::now();
                    let deadline = now
                        .checked_add(self.config().warmup_timeout.0)
                        .unwrap_or(now);
                    meta.warmups.insert(
                        region.id,
                        Warmup {
                            term: *term,
                            deadline,
                        },
                    );
                    if let Err(err) = self.schedule_load(meta, region.clone(), 0, fx) {
                        tracing::debug!(region = region.id.0, %err, "warm-up load refused");
                    }
                }
            }
            RaftEvent::DestroyPeer { id, region } => {
                meta.known.remove(id);
                meta.applied.remove(id);
                meta.warmups.remove(id);
                meta.wanted.remove(id);
                // An uninitialized peer has no range and no data: evicting an id that is
                // not cached is a no-op.
                self.evict(meta, *id, EvictReason::DestroyPeer, None, fx);
                if let Some(region) = region {
                    self.evict_overlapping(meta, &region.range, EvictReason::DestroyPeer, fx);
                }
            }
            RaftEvent::IngestSst { region, ranges } => {
                self.evict_region_and_range(meta, region, EvictReason::IngestSst, fx);
                for range in ranges {
                    self.evict_overlapping(meta, range, EvictReason::IngestSst, fx);
                }
            }
            RaftEvent::DeleteRange { region, range } => {
                self.check_epoch(meta, region.id, region.epoch, fx);
                self.evict_overlapping(meta, range, EvictReason::DeleteRange, fx);
            }
            RaftEvent::UnsafeDestroyRange { range } => {
                self.evict_overlapping(meta, range, EvictReason::DeleteRange, fx);
            }
            RaftEvent::PrepareFlashback { before, after } => {
                meta.learn(after, 0);
                meta.flashback.insert(before.id);
                self.evict_region_and_range(meta, before, EvictReason::Flashback, fx);
            }
            RaftEvent::FinishFlashback { before, after } => {
                meta.learn(after, 0);
                meta.flashback.remove(&before.id);
                self.evict_region_and_range(meta, before, EvictReason::Flashback, fx);
            }
            RaftEvent::SwitchWitness { before, after, .. } => {
                meta.learn(after, 0);
                self.evict_region_and_range(meta, before, EvictReason::DestroyPeer, fx);
            }
            RaftEvent::CompactLog { region, .. } => {
                meta.learn(region, 0);
                self.check_epoch(meta, region.id, region.epoch, fx);
            }
            RaftEvent::UnsafeRecovery { region } | RaftEvent::ForceLeader { region, .. } => {
                meta.learn(region, 0);
                self.evict_region_and_range(meta, region, EvictReason::UnsafeRecovery, fx);
            }
        }
        Ok(())
    }

    /// Evicts `region` by id and whatever else overlaps its range.
    fn evict_region_and_range(
        &self,
        meta: &mut Meta,
        region: &Region,
        reason: EvictReason,
        fx: &mut Effects,
    ) {
        self.evict(meta, region.id, reason, None, fx);
        self.evict_overlapping(meta, &region.range, reason, fx);
    }

    /// An event naming the region at `epoch`: a cached epoch other than it is a gap.
    fn check_epoch(&self, meta: &mut Meta, id: RegionId, epoch: RegionEpoch, fx: &mut Effects) {
        if self.broken() {
            return;
        }
        if let Some(gap) = meta.map.check_epoch(id, epoch) {
            self.gap_found(&gap);
            self.absorb(meta, gap.eviction, fx);
        }
    }

    fn gap_found(&self, gap: &ime_region::Gap) {
        tracing::warn!(%gap, "gap detected on an event");
        self.metrics.gap(GapSource::of(gap.kind));
    }

    fn was_hot(&self, meta: &Meta, id: RegionId) -> bool {
        matches!(
            meta.map.state(id),
            Some(RegionState::Pending | RegionState::Loading | RegionState::Active)
        )
    }

    fn reload_if_hot(&self, meta: &mut Meta, region: &Region, hot: bool, fx: &mut Effects) {
        if !hot {
            return;
        }
        // The evicted regions in the way go first: the deleter loads it after them.
        meta.wanted.insert(region.id);
        if !meta.map.eviction_in_the_way(region.id, &region.range) {
            meta.wanted.remove(&region.id);
            if let Err(err) = self.schedule_load(meta, region.clone(), 0, fx) {
                tracing::info!(region = region.id.0, %err, "reload after merge refused");
            }
        }
    }

    /// A split: the cached parent's children take its data (the memory store splits its
    /// range in O(1)), or the parent is evicted on a gap.
    fn split(
        &self,
        meta: &mut Meta,
        before: &Region,
        children: &[ime_region::SplitChild],
        fx: &mut Effects,
    ) -> Result<(), EngineError> {
        let outcome = match meta.map.split(before, children) {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(%err, "malformed split: evicting its source");
                self.evict_region_and_range(meta, before, EvictReason::EpochGap, fx);
                return Err(err.into());
            }
        };
        match outcome {
            SplitOutcome::Derived { children: ids, .. } => {
                let Some(parent) = meta.cached.remove(&before.id) else {
                    return Ok(()); // Derived from Loading before its range existed: none.
                };
                let mut parts = Vec::new();
                for id in &ids {
                    let Some(range) = meta.map.region(*id).map(|r| r.range.clone()) else {
                        continue;
                    };
                    let rid = meta.new_range_id();
                    meta.cached.insert(
                        *id,
                        Cached {
                            range: rid,
                            loaded_at: parent.loaded_at,
                            collected: parent.collected,
                        },
                    );
                    parts.push((rid, bounds_of(&range)));
                }
                if let Err(err) = self.mem.split_range(parent.range, &parts) {
                    tracing::error!(%err, "memory split refused: evicting the children");
                    for id in ids {
                        meta.cached.remove(&id);
                        self.evict(meta, id, EvictReason::EpochGap, None, fx);
                    }
                }
            }
            SplitOutcome::Gap(gap) => {
                self.gap_found(&gap);
                self.absorb(meta, gap.eviction, fx);
            }
            SplitOutcome::ReplacedPending { inserted, .. } => {
                for id in inserted {
                    fx.tasks.push(crate::shared::Task::Load(id));
                }
            }
            SplitOutcome::NotCached | SplitOutcome::Ignored(_) => {}
        }
        Ok(())
    }
}
