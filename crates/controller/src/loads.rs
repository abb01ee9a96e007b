//! Admission and loads: may this region load now (one answer, whoever asks), a load's
//! stages, deferred loads, pins, warm-up expiry, fences, GC targets and policy rounds.

use ime_eviction::{Decision, RegionStats};
use ime_observer::RaftEvent;
use ime_region::{
    EvictReason, InsertRejected, KeyRange, LoadEnd, LoadTicket, Region, RegionError, RegionId,
    RegionState,
};
use ime_types::RangeId;

use crate::controller::{Cached, Fence};
use crate::{
    Action, Admission, Controller, Decisions, Env, FenceId, GcTarget, LoadSource, LoadStart,
    Refusal,
};

impl Controller {
    /// The embedder asks for `region` to be cached; `applied_index` is the peer's applied
    /// index now. Inserted Pending and queued, held by a fence, deferred behind
    /// evictions, or refused with the reason.
    ///
    /// # Errors
    /// The [`Refusal`]: disabled, flashback, memory at the stop-load threshold, an
    /// uninitialized peer, or an overlap with a region still cached.
    pub fn request_load(
        &mut self,
        region: Region,
        applied_index: u64,
        env: Env,
        out: &mut Decisions,
    ) -> Result<Admission, Refusal> {
        self.learn(&region, applied_index);
        self.refusal(region.id, env)?;
        let id = region.id;
        // Every entry reported so far is on disk, so the load's snapshot holds it.
        let applied_index = applied_index.max(self.applied(id));
        let (epoch, range) = (region.epoch, region.range.clone());
        match self.map.insert_pending(region, applied_index) {
            Ok(_) => {
                self.step(id, Some(epoch), "none", "Pending", "load requested", out);
                if self.is_fenced(&range) {
                    // A disk change is under way in the range: the load's snapshot would
                    // copy the old data. It starts once the fence lifts.
                    self.hold(id, out);
                    Ok(Admission::Fenced)
                } else {
                    out.push(Action::Load(id));
                    Ok(Admission::Queued)
                }
            }
            Err(InsertRejected::AlreadyCached { state, .. }) if !state.is_evicting() => {
                Ok(Admission::AlreadyCached)
            }
            Err(rejected) => {
                if matches!(rejected, InsertRejected::Uninitialized)
                    || !self.map.only_evictions_in_the_way(id, &range)
                {
                    return Err(Refusal::Conflict(rejected));
                }
                let why = format!("deferred: {rejected}");
                self.step(id, Some(epoch), "none", "deferred", why, out);
                self.deferred.insert(id);
                Ok(Admission::Deferred)
            }
        }
    }

    /// A load the controller starts on its own (`source` says why); a refusal is reported
    /// as [`Action::Refused`].
    pub(crate) fn admit(
        &mut self,
        region: Region,
        source: LoadSource,
        env: Env,
        out: &mut Decisions,
    ) {
        let id = region.id;
        if let Err(refusal) = self.request_load(region, 0, env, out) {
            out.push(Action::Refused {
                region: id,
                source,
                refusal,
            });
        }
    }

    /// Why region `id` may not load now, if it may not (whatever asks, and again when
    /// its first stage runs).
    fn refusal(&self, id: RegionId, env: Env) -> Result<(), Refusal> {
        if !self.config.enable {
            return Err(Refusal::Disabled);
        }
        if self.flashback.contains(&id) {
            return Err(Refusal::Flashback);
        }
        let threshold = self.config.thresholds().stop_load_threshold;
        if env.memory_used >= threshold {
            return Err(Refusal::StopLoad {
                used: env.memory_used,
                threshold,
            });
        }
        Ok(())
    }

    /// A load's first stage, for Pending region `id`: start (a memory range to fill),
    /// wait for a fence, or refuse (the region is evicted).
    pub fn start_load(&mut self, id: RegionId, env: Env, out: &mut Decisions) -> LoadStart {
        if self.refusal(id, env).is_err() {
            self.evict(id, EvictReason::LoadFailedWithoutStart, None, out);
            return LoadStart::Refused;
        }
        let fenced = self
            .map
            .region(id)
            .is_some_and(|r| self.is_fenced(&r.range));
        if fenced && self.map.state(id) == Some(RegionState::Pending) {
            self.step(id, None, "Pending", "Pending", "fenced", out);
            self.hold(id, out);
            return LoadStart::Fenced;
        }
        let Ok(ticket) = self.map.start_loading(id) else {
            return LoadStart::Gone; // replaced, split or evicted meanwhile
        };
        let range = self.new_range_id();
        let epoch = Some(ticket.region.epoch);
        self.step(id, epoch, "Pending", "Loading", "load started", out);
        self.cached.insert(
            id,
            Cached {
                range,
                loaded_at: env.now,
                collected: 0,
            },
        );
        LoadStart::Start { ticket, range }
    }

    /// A started load's memory range could not be created: the load fails.
    pub fn load_not_started(&mut self, ticket: &LoadTicket, out: &mut Decisions) {
        self.cached.remove(&ticket.region.id);
        for end in self.map.fail_loading(ticket) {
            self.load_end(end, out);
        }
    }

    /// Moves region `id`'s safe point towards `target` (a load about to finish collects at
    /// it); `None` when the region is not cached.
    pub fn advance_safe_point(&mut self, id: RegionId, target: u64) -> Option<u64> {
        self.map.advance_safe_point(id, target).ok()
    }

    /// A load ended: Loading to Active when the copy succeeded (unless an eviction came
    /// meanwhile), else evicted.
    pub fn finish_load(&mut self, ticket: &LoadTicket, copied: bool, out: &mut Decisions) {
        let ends = if copied {
            self.map.finish_loading(ticket)
        } else {
            self.map.fail_loading(ticket)
        };
        for end in ends {
            self.load_end(end, out);
        }
    }

    fn load_end(&mut self, end: LoadEnd, out: &mut Decisions) {
        match end {
            LoadEnd::Activated(id) => {
                let epoch = self.map.region(id).map(|r| r.epoch);
                self.step(id, epoch, "Loading", "Active", "loaded", out);
            }
            LoadEnd::Evicted(eviction) => {
                self.absorb(eviction, out);
            }
        }
    }

    /// Loads the deferred regions nothing evicting stands in the way of any more.
    pub(crate) fn retry_deferred(&mut self, env: Env, out: &mut Decisions) {
        let deferred = std::mem::take(&mut self.deferred);
        for id in deferred {
            let Some(region) = self.peers.get(&id).map(|p| p.region.clone()) else {
                continue; // destroyed meanwhile
            };
            if self.map.eviction_in_the_way(id, &region.range) {
                self.deferred.insert(id);
            } else {
                self.admit(region, LoadSource::Deferred, env, out);
            }
        }
    }

    /// Pins `range`: regions inside it are loaded wherever this store leads them, and never
    /// evicted by the policy.
    pub fn pin(&mut self, range: KeyRange, env: Env, out: &mut Decisions) {
        let leaders: Vec<Region> = self
            .peers
            .values()
            .filter(|p| p.is_leader && range.contains(&p.region.range))
            .map(|p| p.region.clone())
            .collect();
        self.pins.push(range);
        for region in leaders {
            self.admit(region, LoadSource::Pin, env, out);
        }
    }

    /// Removes a pin: its regions are evicted (`Manual`) and can be loaded again later.
    pub fn unpin(&mut self, range: &KeyRange, out: &mut Decisions) {
        self.pins.retain(|p| p != range);
        self.evict_overlapping(range, EvictReason::Manual, out);
    }

    /// Time passes: warm-ups past their deadline are forgotten (their acknowledgement no
    /// longer waits in any case).
    pub fn on_tick(&mut self, env: Env) {
        self.warmups.retain(|_, w| env.now < w.deadline);
    }

    /// Handles `event` — a change whose data reaches the disk outside the write path — and
    /// fences the ranges it touches ([`RaftEvent::bypass_ranges`]), in one step.
    ///
    /// # Errors
    /// As [`Controller::on_event`]; nothing is fenced then.
    pub fn begin_bypass(
        &mut self,
        event: &RaftEvent,
        env: Env,
        out: &mut Decisions,
    ) -> Result<FenceId, RegionError> {
        self.on_event(event, env, out)?;
        let reason = Self::bypass_reason(event.kind());
        Ok(self.begin_fence(event.bypass_ranges(), reason, out))
    }

    /// Fences `ranges`: what overlaps them is evicted for `reason`, and no load of them
    /// starts until [`Controller::lift_fence`].
    pub fn begin_fence(
        &mut self,
        ranges: Vec<KeyRange>,
        reason: EvictReason,
        out: &mut Decisions,
    ) -> FenceId {
        // The broken engine of the checkers' tests ignores the changes fences announce.
        if !self.broken() {
            for range in &ranges {
                self.evict_overlapping(range, reason, out);
            }
        }
        let id = self.new_fence_id();
        self.fences.insert(id, Fence { ranges, reason });
        id
    }

    /// Lifts fence `id`: the loads waiting on it are queued (unless another fence still
    /// covers them) and deferred loads are retried. An `abandoned` fence (its change may
    /// be half done) evicts its ranges again and drops the loads waiting on it instead.
    /// Returns the fence's ranges, `None` for an unknown id.
    pub fn lift_fence(
        &mut self,
        id: FenceId,
        abandoned: bool,
        env: Env,
        out: &mut Decisions,
    ) -> Option<Vec<KeyRange>> {
        let fence = self.fences.remove(&id)?;
        if abandoned {
            for range in &fence.ranges {
                self.evict_overlapping(range, fence.reason, out);
            }
        }
        let waiting: Vec<RegionId> = self.fenced_loads.iter().copied().collect();
        for region in waiting {
            let pending = self.map.state(region) == Some(RegionState::Pending);
            let range = self.map.region(region).map(|r| r.range.clone());
            match range {
                Some(range) if pending && self.is_fenced(&range) => {}
                Some(_) if pending => {
                    self.fenced_loads.remove(&region);
                    self.step(region, None, "Pending", "Pending", "fence lifted", out);
                    out.push(Action::Load(region));
                }
                Some(_) | None => {
                    self.fenced_loads.remove(&region);
                }
            }
        }
        self.retry_deferred(env, out);
        Some(fence.ranges)
    }

    /// Whether a fence under way overlaps `range` (never, in the test-only unfenced mode).
    pub fn is_fenced(&self, range: &KeyRange) -> bool {
        #[cfg(feature = "testing")]
        if self.switches.unfenced {
            return false;
        }
        self.fences
            .values()
            .any(|f| f.ranges.iter().any(|r| r.overlaps(range)))
    }

    fn hold(&mut self, id: RegionId, out: &mut Decisions) {
        if self.fenced_loads.insert(id) {
            out.push(Action::HeldByFence(id));
        }
    }

    /// A GC round's work: every Active region's safe point moves towards `target`, and
    /// each region not yet collected at its safe point is listed — including one whose last
    /// collection was lost (a concurrent compaction installed first, or a split moved the
    /// range: the children inherit the parent's mark).
    pub fn gc_targets(&mut self, target: u64) -> Vec<GcTarget> {
        let active: Vec<(RegionId, Cached)> = self
            .map
            .regions()
            .into_iter()
            .filter(|r| r.state == RegionState::Active)
            .filter_map(|r| Some((r.region.id, *self.cached.get(&r.region.id)?)))
            .collect();
        active
            .into_iter()
            .filter_map(|(region, cached)| {
                let safe_point = self.map.advance_safe_point(region, target).ok()?;
                (cached.collected < safe_point).then_some(GcTarget {
                    region,
                    range: cached.range,
                    safe_point,
                })
            })
            .collect()
    }

    /// A collection of `region`'s `range` at `safe_point` installed (ignored if the range
    /// has moved on since).
    pub fn mark_collected(&mut self, region: RegionId, range: RangeId, safe_point: u64) {
        if let Some(cached) = self.cached.get_mut(&region).filter(|c| c.range == range) {
            cached.collected = cached.collected.max(safe_point);
        }
    }

    /// Regions never cached and of unknown size (the embedder gave none,
    /// [`Controller::note_approximate_size`]): the engine estimates them from the disk
    /// ([`Controller::note_estimate`]) before a policy round.
    pub fn unsized_regions(&self) -> Vec<(RegionId, KeyRange)> {
        self.peers
            .iter()
            .filter(|(id, p)| p.size == 0 && !self.cached.contains_key(id))
            .map(|(id, p)| (*id, p.region.range.clone()))
            .collect()
    }

    /// The embedder's approximate size of region `id` (bytes of its keys and values, as
    /// TiKV's `region_approximate_size`): what the policy projects the region to take in
    /// memory until it is cached; it replaces any earlier estimate, and the disk scan
    /// ([`Controller::unsized_regions`]) is skipped for it. Ignored for a region the
    /// controller does not know.
    pub fn note_approximate_size(&mut self, id: RegionId, bytes: u64) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.size = bytes;
        }
    }

    /// Region `id`'s size as last known, in bytes of keys and values (the embedder's
    /// approximate size, a disk estimate, or the memory it held when last dropped), or 0.
    pub fn known_size(&self, id: RegionId) -> u64 {
        self.peers.get(&id).map_or(0, |p| p.size)
    }

    /// A size estimate from the disk for region `id` (the larger figure wins).
    pub fn note_estimate(&mut self, id: RegionId, bytes: u64) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.size = peer.size.max(bytes);
        }
    }

    /// The policy's view of every known region, in id order: what the controller knows,
    /// with the memory each range holds (`memory_of`, for regions with memory) and the
    /// reads since the last round (`reads_of`: reads, versions scanned, keys returned).
    pub fn policy_stats(
        &self,
        memory_of: impl Fn(RangeId) -> Option<u64>,
        mut reads_of: impl FnMut(RegionId) -> (u64, u64, u64),
    ) -> Vec<RegionStats> {
        self.peers
            .iter()
            .map(|(id, peer)| {
                let cached = self.cached.get(id);
                let (reads, scanned_versions, returned_keys) = reads_of(*id);
                RegionStats {
                    id: *id,
                    size: cached.and_then(|c| memory_of(c.range)).unwrap_or(peer.size),
                    reads,
                    scanned_versions,
                    returned_keys,
                    is_leader: peer.is_leader,
                    pinned: self.is_pinned(&peer.region.range),
                    cached: matches!(
                        self.map.state(*id),
                        Some(RegionState::Loading | RegionState::Active)
                    ),
                    loaded_at: cached.map(|c| c.loaded_at.as_secs()),
                }
            })
            .collect()
    }

    /// Carries out a policy round's decision: its evictions, then its loads (each through
    /// admission, as any load).
    pub fn apply_policy(&mut self, decision: Decision, env: Env, out: &mut Decisions) {
        if !self.config.enable {
            return;
        }
        for (id, reason) in decision.evict {
            self.evict(id, reason, None, out);
        }
        for id in decision.load {
            if let Some(region) = self.peers.get(&id).map(|p| p.region.clone()) {
                self.admit(region, LoadSource::Policy, env, out);
            }
        }
    }

    pub(crate) fn step(
        &self,
        region: RegionId,
        epoch: Option<ime_region::RegionEpoch>,
        from: &'static str,
        to: &'static str,
        why: impl Into<String>,
        out: &mut Decisions,
    ) {
        out.push(Action::Step {
            region,
            epoch,
            from,
            to,
            why: why.into(),
        });
    }

    /// Test-only: ignore ApplySnapshot and every gap, as TiKV's engine did before
    /// tikv/tikv#17430.
    #[cfg(feature = "testing")]
    pub fn break_for_tests(&mut self) {
        self.switches.broken = true;
    }

    /// Test-only: fences stop holding loads back (they still evict).
    #[cfg(feature = "testing")]
    pub fn unfence_for_tests(&mut self) {
        self.switches.unfenced = true;
    }
}
