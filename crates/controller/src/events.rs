//! The event table: what each [`RaftEvent`] does to the cache, in one exhaustive `match`
//! (no wildcard arm: a new event kind does not compile until it is handled here), and
//! what a delivery gap does.

use std::time::Duration;

use ime_observer::{DeliveryGap, EventKind, PeerRole, RaftEvent};
use ime_region::{
    EpochChange, EvictReason, Region, RegionEpoch, RegionError, RegionId, RegionState, SplitChild,
    SplitOutcome,
};

use crate::controller::Cached;
use crate::{Action, Controller, Decisions, Env, LoadSource, SplitPart, Warmup};

impl Controller {
    /// Handles one Raft event: what must stop being served from memory is evicted (the
    /// memory drops are in `out`, for the engine to carry out before the event returns),
    /// and the loads it leads to are queued.
    ///
    /// # Errors
    /// [`RegionError`] for a malformed event (a split whose children do not partition the
    /// source); the regions it names are evicted all the same.
    pub fn on_event(
        &mut self,
        event: &RaftEvent,
        env: Env,
        out: &mut Decisions,
    ) -> Result<(), RegionError> {
        match event {
            RaftEvent::ApplySnapshot {
                before,
                after,
                applied_index,
            } => {
                self.learn(after, *applied_index);
                if !self.broken() {
                    for region in before.iter().chain([after]) {
                        self.evict_region_and_range(region, EvictReason::ApplySnapshot, out);
                    }
                }
            }
            RaftEvent::Split { before, children } => {
                for child in children {
                    self.learn(&child.region, child.applied_index);
                }
                return self.split(before, children, out);
            }
            RaftEvent::PrepareMerge { before, after } => {
                self.learn(after, 0);
                self.evict_region_and_range(before, EvictReason::PrepareMerge, out);
            }
            RaftEvent::CommitMerge {
                before,
                after,
                source,
            } => {
                let hot = self.was_hot(before.id) || self.was_hot(source.id);
                self.peers.remove(&source.id);
                self.learn(after, 0);
                for region in [before, source, after] {
                    self.evict_region_and_range(region, EvictReason::Merge, out);
                }
                self.reload_if_hot(after, hot, env, out);
            }
            RaftEvent::RollbackMerge { before, after } => {
                let hot = self.was_hot(before.id);
                self.learn(after, 0);
                self.evict_region_and_range(before, EvictReason::Merge, out);
                self.reload_if_hot(after, hot, env, out);
            }
            RaftEvent::ChangePeer { before, after } => {
                self.learn(after, 0);
                match self.map.change_epoch(before, after) {
                    EpochChange::Gap(gap) => self.gap_found(gap, out),
                    EpochChange::NotCached | EpochChange::Updated | EpochChange::Ignored => {}
                }
            }
            RaftEvent::RoleChange { region, role, term } => {
                self.role_change(region, *role, *term, env, out);
            }
            RaftEvent::TransferLeader {
                region,
                term,
                cached,
            } => {
                self.learn(region, 0);
                self.check_epoch(region.id, region.epoch, out);
                // TiKV's rule: warm up only what the old leader had cached.
                if *cached {
                    self.warm_up(region, *term, env, out);
                }
            }
            RaftEvent::DestroyPeer { id, region } => {
                self.forget(*id);
                // An uninitialized peer has no range and no data: evicting an id that is
                // not cached is a no-op.
                self.evict(*id, EvictReason::DestroyPeer, None, out);
                if let Some(region) = region {
                    self.evict_overlapping(&region.range, EvictReason::DestroyPeer, out);
                }
            }
            RaftEvent::IngestSst { region, ranges } => {
                self.evict_region_and_range(region, EvictReason::IngestSst, out);
                for range in ranges {
                    self.evict_overlapping(range, EvictReason::IngestSst, out);
                }
            }
            RaftEvent::DeleteRange { region, range } => {
                self.check_epoch(region.id, region.epoch, out);
                self.evict_overlapping(range, EvictReason::DeleteRange, out);
            }
            RaftEvent::UnsafeDestroyRange { range } => {
                self.evict_overlapping(range, EvictReason::DeleteRange, out);
            }
            RaftEvent::PrepareFlashback { before, after } => {
                self.learn(after, 0);
                self.flashback.insert(before.id);
                self.evict_region_and_range(before, EvictReason::Flashback, out);
            }
            RaftEvent::FinishFlashback { before, after } => {
                self.learn(after, 0);
                self.flashback.remove(&before.id);
                self.evict_region_and_range(before, EvictReason::Flashback, out);
            }
            RaftEvent::SwitchWitness { before, after, .. } => {
                self.learn(after, 0);
                self.evict_region_and_range(before, EvictReason::DestroyPeer, out);
            }
            RaftEvent::CompactLog { region, .. } => {
                self.learn(region, 0);
                self.check_epoch(region.id, region.epoch, out);
            }
            RaftEvent::UnsafeRecovery { region } | RaftEvent::ForceLeader { region, .. } => {
                self.learn(region, 0);
                self.evict_region_and_range(region, EvictReason::UnsafeRecovery, out);
            }
        }
        Ok(())
    }

    /// Events were lost: every region and range they concerned is evicted (`EpochGap`).
    pub fn on_gap(&mut self, gap: &DeliveryGap, out: &mut Decisions) {
        for id in &gap.regions {
            self.evict(*id, EvictReason::EpochGap, None, out);
        }
        for range in &gap.ranges {
            self.evict_overlapping(range, EvictReason::EpochGap, out);
        }
    }

    /// Whether a leader transfer of `region` in `term` may be acknowledged at `now`: yes
    /// once the region is loaded, once the warm-up's deadline has passed (retries do not
    /// extend it), or when no warm-up is pending for that term.
    pub fn transfer_leader_ready(&self, region: RegionId, term: u64, now: Duration) -> bool {
        let Some(warmup) = self.warmups.get(&region) else {
            return true;
        };
        if warmup.term != term || now >= warmup.deadline {
            return true;
        }
        !matches!(
            self.map.state(region),
            Some(RegionState::Pending | RegionState::Loading)
        )
    }

    /// The reason regions overlapping a fence are evicted for when a fence of `kind`
    /// begins (the event's own handling has normally evicted them already).
    pub(crate) fn bypass_reason(kind: EventKind) -> EvictReason {
        match kind {
            EventKind::ApplySnapshot => EvictReason::ApplySnapshot,
            EventKind::IngestSst => EvictReason::IngestSst,
            EventKind::DeleteRange | EventKind::UnsafeDestroyRange => EvictReason::DeleteRange,
            EventKind::CommitMerge | EventKind::RollbackMerge => EvictReason::Merge,
            EventKind::PrepareMerge => EvictReason::PrepareMerge,
            EventKind::PrepareFlashback | EventKind::FinishFlashback => EvictReason::Flashback,
            EventKind::DestroyPeer | EventKind::SwitchWitness => EvictReason::DestroyPeer,
            EventKind::UnsafeRecovery | EventKind::ForceLeader => EvictReason::UnsafeRecovery,
            EventKind::Split
            | EventKind::ChangePeer
            | EventKind::RoleChange
            | EventKind::TransferLeader
            | EventKind::CompactLog => EvictReason::UnannouncedChange,
        }
    }

    /// Everything known of a destroyed peer goes.
    fn forget(&mut self, id: RegionId) {
        self.peers.remove(&id);
        self.applied.remove(&id);
        self.warmups.remove(&id);
        self.deferred.remove(&id);
    }

    fn role_change(
        &mut self,
        region: &Region,
        role: PeerRole,
        term: u64,
        env: Env,
        out: &mut Decisions,
    ) {
        self.learn(region, 0);
        self.check_epoch(region.id, region.epoch, out);
        if self.warmups.get(&region.id).is_some_and(|w| w.term != term) {
            self.warmups.remove(&region.id);
        }
        let leader = role == PeerRole::Leader;
        if let Some(peer) = self.peers.get_mut(&region.id) {
            peer.is_leader = leader;
        }
        match role {
            PeerRole::Leader => {
                if self.is_pinned(&region.range) {
                    self.admit(region.clone(), LoadSource::Pin, env, out);
                }
            }
            PeerRole::Follower | PeerRole::Candidate | PeerRole::Learner => {
                self.warmups.remove(&region.id);
                self.evict(region.id, EvictReason::BecomeFollower, None, out);
            }
        }
    }

    fn warm_up(&mut self, region: &Region, term: u64, env: Env, out: &mut Decisions) {
        let fresh = self.warmups.get(&region.id).is_none_or(|w| w.term != term);
        if fresh {
            // Validation bounds the timeout; an overflow all the same means no wait at
            // all rather than a panic.
            let timeout = self.config.warmup_timeout.0;
            let deadline = env.now.checked_add(timeout).unwrap_or(env.now);
            self.warmups.insert(region.id, Warmup { term, deadline });
            self.admit(region.clone(), LoadSource::Warmup, env, out);
        }
    }

    /// An event naming the region at `epoch`: a cached epoch other than it is a gap.
    fn check_epoch(&mut self, id: RegionId, epoch: RegionEpoch, out: &mut Decisions) {
        if self.broken() {
            return;
        }
        if let Some(gap) = self.map.check_epoch(id, epoch) {
            self.gap_found(gap, out);
        }
    }

    fn was_hot(&self, id: RegionId) -> bool {
        matches!(
            self.map.state(id),
            Some(RegionState::Pending | RegionState::Loading | RegionState::Active)
        )
    }

    /// A merge's result, reloaded when a region it absorbed was cached: at once when
    /// nothing evicting stands in its way, else once their memory is freed.
    fn reload_if_hot(&mut self, region: &Region, hot: bool, env: Env, out: &mut Decisions) {
        if !hot {
            return;
        }
        if self.map.eviction_in_the_way(region.id, &region.range) {
            self.deferred.insert(region.id);
        } else {
            self.admit(region.clone(), LoadSource::Reload, env, out);
        }
    }

    /// A split: the cached parent's children take its data (the memory store splits its
    /// range in O(1)), or the parent is evicted on a gap.
    fn split(
        &mut self,
        before: &Region,
        children: &[SplitChild],
        out: &mut Decisions,
    ) -> Result<(), RegionError> {
        let outcome = match self.map.split(before, children) {
            Ok(outcome) => outcome,
            Err(err) => {
                self.evict_region_and_range(before, EvictReason::EpochGap, out);
                return Err(err);
            }
        };
        match outcome {
            SplitOutcome::Derived { children: ids, .. } => {
                let Some(parent) = self.cached.remove(&before.id) else {
                    return Ok(()); // Derived from Loading before its range existed: none.
                };
                let mut parts = Vec::new();
                for id in ids {
                    let Some(keys) = self.map.region(id).map(|r| r.range.clone()) else {
                        continue;
                    };
                    let range = self.new_range_id();
                    self.cached.insert(
                        id,
                        Cached {
                            range,
                            loaded_at: parent.loaded_at,
                            collected: parent.collected,
                        },
                    );
                    parts.push(SplitPart {
                        region: id,
                        range,
                        keys,
                    });
                }
                out.push(Action::SplitMemory {
                    parent: parent.range,
                    parts,
                });
            }
            SplitOutcome::Gap(gap) => self.gap_found(gap, out),
            SplitOutcome::ReplacedPending { inserted, .. } => {
                for id in inserted {
                    out.push(Action::Load(id));
                }
            }
            SplitOutcome::NotCached | SplitOutcome::Ignored(_) => {}
        }
        Ok(())
    }

    /// The memory store refused a split: the children have no memory; they are evicted.
    pub fn memory_split_failed(
        &mut self,
        children: impl IntoIterator<Item = RegionId>,
        out: &mut Decisions,
    ) {
        for id in children {
            self.cached.remove(&id);
            self.evict(id, EvictReason::EpochGap, None, out);
        }
    }
}
