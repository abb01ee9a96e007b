//! [`Controller`]: the cache's state of mind — the region map, the peer table, what is
//! cached where, pins, warm-ups, deferred loads and fences — and the eviction steps every
//! other decision is built from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ime_region::{
    ApplyOutcome, Drained, EvictCallback, EvictReason, EvictStep, Eviction, Gap, KeyRange,
    ReadMiss, ReadRequest, Region, RegionError, RegionId, RegionMap, SnapshotTicket,
};
use ime_types::RangeId;

use crate::{Action, Config, Decisions, Env, Fallback};

/// What the controller knows of a region it has heard of, cached or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The region, as the newest event or request described it.
    pub region: Region,
    /// Whether this store leads it.
    pub is_leader: bool,
    /// Bytes it held when last cached, or its estimate from disk (0: unknown).
    pub size: u64,
}

/// A cached region's memory: its range in the store and what has been collected in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cached {
    /// Its range in the memory store.
    pub range: RangeId,
    /// When its load started, since the engine started.
    pub loaded_at: Duration,
    /// The safe point up to which a collection has installed on this range (or on the
    /// parent it was split from). A GC round collects it again below the region's safe
    /// point, so a collection that was lost is retried.
    pub collected: u64,
}

/// A leader transfer to this store waiting for its region to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warmup {
    /// The term the transfer happens in.
    pub term: u64,
    /// When the acknowledgement stops waiting, whatever the load's state (since the
    /// engine started).
    pub deadline: Duration,
}

/// A fence's id, as [`Controller::begin_fence`] hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FenceId(pub u64);

/// A disk change under way outside the write path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fence {
    pub(crate) ranges: Vec<KeyRange>,
    /// Why overlapping regions were evicted (and are again, if the fence is abandoned).
    pub(crate) reason: EvictReason,
}

/// The cache's decisions, pure: every call takes what it needs of the world as arguments
/// (the time and the memory in use, in [`Env`]) and returns what the engine must do, as
/// [`Decisions`]. No thread, clock, lock or I/O.
#[derive(Debug)]
pub struct Controller {
    pub(crate) map: RegionMap,
    pub(crate) peers: BTreeMap<RegionId, Peer>,
    /// The last applied index reported per region, cached or not; a load starts from it.
    /// Moved on through a shared reference too ([`Controller::try_on_applied`]).
    pub(crate) applied: BTreeMap<RegionId, AtomicU64>,
    pub(crate) cached: BTreeMap<RegionId, Cached>,
    pub(crate) flashback: BTreeSet<RegionId>,
    pub(crate) pins: Vec<KeyRange>,
    pub(crate) warmups: BTreeMap<RegionId, Warmup>,
    /// Regions to load once the evicted regions in their way are gone.
    pub(crate) deferred: BTreeSet<RegionId>,
    pub(crate) fences: BTreeMap<FenceId, Fence>,
    /// Pending regions whose load waits for a fence to lift.
    pub(crate) fenced_loads: BTreeSet<RegionId>,
    pub(crate) config: Config,
    next_range: u64,
    next_fence: u64,
    #[cfg(feature = "testing")]
    pub(crate) switches: Switches,
}

/// Test-only switches (the `testing` feature).
#[cfg(feature = "testing")]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Switches {
    /// ApplySnapshot does not evict and gaps are not acted on.
    pub(crate) broken: bool,
    /// Fences do not hold loads back.
    pub(crate) unfenced: bool,
}

impl Controller {
    /// A controller with nothing cached, under `config` (validate it first).
    pub fn new(config: Config) -> Self {
        Controller {
            map: RegionMap::new(),
            peers: BTreeMap::new(),
            applied: BTreeMap::new(),
            cached: BTreeMap::new(),
            flashback: BTreeSet::new(),
            pins: Vec::new(),
            warmups: BTreeMap::new(),
            deferred: BTreeSet::new(),
            fences: BTreeMap::new(),
            fenced_loads: BTreeSet::new(),
            config,
            next_range: 1,
            next_fence: 0,
            #[cfg(feature = "testing")]
            switches: Switches::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the configuration (validate it first). `enable = false` evicts everything
    /// (`Disabled`).
    pub fn set_config(&mut self, config: Config, out: &mut Decisions) {
        let enable = config.enable;
        self.config = config;
        if !enable {
            self.evict_overlapping(&KeyRange::everything(), EvictReason::Disabled, out);
        }
    }

    /// The region map: every cached region's state, epoch, safe point and snapshots.
    pub fn map(&self) -> &RegionMap {
        &self.map
    }

    /// What is known of region `id`, cached or not.
    pub fn peer(&self, id: RegionId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// Region `id` as the controller knows it, if at epoch version `version` (a record of
    /// another epoch may have another range): what a reader at that version reads.
    pub fn region_at(&self, id: RegionId, version: u64) -> Option<&Region> {
        let peer = self.peers.get(&id)?;
        (peer.region.epoch.version == version).then_some(&peer.region)
    }

    /// Region `id`'s memory, while it has some.
    pub fn cached(&self, id: RegionId) -> Option<Cached> {
        self.cached.get(&id).copied()
    }

    /// The last applied index reported for region `id`.
    pub fn applied(&self, id: RegionId) -> u64 {
        self.applied
            .get(&id)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// The warm-ups pending, by region.
    pub fn warmups(&self) -> impl Iterator<Item = (RegionId, Warmup)> + '_ {
        self.warmups.iter().map(|(id, w)| (*id, *w))
    }

    /// Regions whose load is deferred until evictions in their way are done.
    pub fn deferred(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.deferred.iter().copied()
    }

    /// Pending regions waiting for a fence to lift.
    pub fn fenced_loads(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.fenced_loads.iter().copied()
    }

    /// Records the bytes region `id` held (its memory, as it is dropped).
    pub fn note_size(&mut self, id: RegionId, bytes: u64) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.size = bytes;
        }
    }

    /// A new memory range id.
    pub(crate) fn new_range_id(&mut self) -> RangeId {
        self.next_range += 1;
        RangeId(self.next_range)
    }

    /// A new fence id.
    pub(crate) fn new_fence_id(&mut self) -> FenceId {
        self.next_fence += 1;
        FenceId(self.next_fence)
    }

    /// Remembers `region` (the newest description wins) and an applied index it reached.
    /// An uninitialized peer's region (epoch 0/0) is not remembered: it has no range of
    /// its own and nothing to cache.
    pub(crate) fn learn(&mut self, region: &Region, applied_index: u64) {
        if !region.is_initialized() {
            return;
        }
        let peer = self.peers.entry(region.id).or_insert_with(|| Peer {
            region: region.clone(),
            is_leader: false,
            size: 0,
        });
        if !region.epoch.is_stale_than(&peer.region.epoch) {
            peer.region = region.clone();
        }
        let applied = self.applied.entry(region.id).or_default();
        applied.fetch_max(applied_index, Ordering::AcqRel);
    }

    /// True when a pin covers `range`.
    pub(crate) fn is_pinned(&self, range: &KeyRange) -> bool {
        self.pins.iter().any(|p| p.contains(range))
    }

    /// Whether the engine was broken on purpose (tests of the checkers only): it then
    /// ignores ApplySnapshot and every gap. Always false without the `testing` feature.
    pub(crate) fn broken(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.switches.broken;
        #[cfg(not(feature = "testing"))]
        false
    }

    /// Evicts region `id` for `reason`; `callback`, if given, fires once the eviction
    /// ends, whatever path it takes.
    pub fn evict(
        &mut self,
        id: RegionId,
        reason: EvictReason,
        callback: Option<EvictCallback>,
        out: &mut Decisions,
    ) -> EvictStep {
        self.deferred.remove(&id);
        let eviction = self.map.evict(id, reason, callback);
        self.absorb(eviction, out)
    }

    /// Evicts every region overlapping `range`, and drops the deferred loads in it; returns
    /// the regions evicted.
    pub fn evict_overlapping(
        &mut self,
        range: &KeyRange,
        reason: EvictReason,
        out: &mut Decisions,
    ) -> Vec<RegionId> {
        // A deferred reload in the range goes too: it would take its disk snapshot at
        // some later time, possibly before the change that evicted the range (an SST
        // ingest, a snapshot's data) reaches the disk.
        let peers = &self.peers;
        self.deferred.retain(|id| {
            peers
                .get(id)
                .is_some_and(|p| !p.region.range.overlaps(range))
        });
        let mut evicted = Vec::new();
        for eviction in self.map.evict_overlapping(range, reason) {
            evicted.push(eviction.region);
            self.absorb(eviction, out);
        }
        evicted
    }

    /// A write the engine could not keep in step reached `ranges`: every region overlapping
    /// them is evicted, but those in `except`. Returns the regions evicted, per range.
    pub fn evict_written(
        &mut self,
        ranges: impl Iterator<Item = KeyRange>,
        except: &[RegionId],
        reason: EvictReason,
        out: &mut Decisions,
    ) -> Vec<RegionId> {
        let mut evicted = Vec::new();
        for range in ranges {
            for id in self.map.overlapping(&range) {
                if !except.contains(&id) {
                    self.evict(id, reason, None, out);
                    evicted.push(id);
                }
            }
        }
        evicted
    }

    /// Evicts `region` by id and whatever else overlaps its range.
    pub(crate) fn evict_region_and_range(
        &mut self,
        region: &Region,
        reason: EvictReason,
        out: &mut Decisions,
    ) {
        self.evict(region.id, reason, None, out);
        self.evict_overlapping(&region.range, reason, out);
    }

    /// Carries an eviction step into decisions: the region's memory leaves the store at
    /// once (snapshots keep their layers), and once it is Evicting it is deleted.
    pub(crate) fn absorb(&mut self, eviction: Eviction, out: &mut Decisions) -> EvictStep {
        let Eviction {
            region,
            reason,
            from,
            step,
            callbacks,
        } = eviction;
        for callback in callbacks {
            out.push(Action::Fire(callback));
        }
        match step {
            EvictStep::NotCached | EvictStep::AlreadyEvicting => return step,
            EvictStep::Removed
            | EvictStep::LoadCanceled
            | EvictStep::AwaitingSnapshots
            | EvictStep::ReadyToDelete => {}
        }
        let from = from.map_or("none", |s| s.as_str());
        self.fenced_loads.remove(&region);
        if let Some(cached) = self.cached.remove(&region) {
            out.push(Action::DropMemory {
                region,
                range: cached.range,
                reason,
            });
        }
        out.push(Action::Evicted {
            region,
            epoch: self.map.region(region).map(|r| r.epoch),
            reason,
            from,
            to: self.map.state(region).map_or("removed", |s| s.as_str()),
        });
        if step == EvictStep::ReadyToDelete {
            out.push(Action::Delete(region));
        }
        step
    }

    /// A gap found: reported, and the region's eviction carried out (unless the engine was
    /// broken on purpose).
    pub(crate) fn gap_found(&mut self, gap: Gap, out: &mut Decisions) {
        out.push(Action::Gap {
            region: gap.eviction.region,
            kind: gap.kind,
        });
        self.absorb(gap.eviction, out);
    }

    /// The deleter freed region `id`'s memory: the region is removed, its callbacks fire,
    /// and deferred loads nothing stands in the way of any more are queued.
    ///
    /// # Errors
    /// [`RegionError`] when the region was not Evicting (nothing changes then).
    pub fn finish_eviction(
        &mut self,
        id: RegionId,
        env: Env,
        out: &mut Decisions,
    ) -> Result<(), RegionError> {
        let result = self.map.finish_eviction(id).map(|callbacks| {
            out.push(Action::Step {
                region: id,
                epoch: None,
                from: "Evicting",
                to: "removed",
                why: "memory freed".into(),
            });
            for callback in callbacks {
                out.push(Action::Fire(callback));
            }
        });
        self.retry_deferred(env, out);
        result
    }

    /// The apply side applied the entries `header` names (its region's, at its epoch): a
    /// gap evicts the region, and its reason is returned.
    pub fn on_applied(
        &mut self,
        header: &ime_region::ApplyHeader,
        out: &mut Decisions,
    ) -> Option<EvictReason> {
        let ime_region::ApplyHeader {
            region: id,
            epoch,
            first_index: first,
            last_index: last,
        } = *header;
        let applied = self.applied.entry(id).or_default();
        applied.fetch_max(last, Ordering::AcqRel);
        if self.broken() {
            return None;
        }
        match self.map.report_applied(id, epoch, first, last) {
            ApplyOutcome::Gap(gap) => {
                let reason = gap.kind.reason();
                self.gap_found(gap, out);
                Some(reason)
            }
            ApplyOutcome::NotCached
            | ApplyOutcome::Advanced
            | ApplyOutcome::Unchanged
            | ApplyOutcome::Ignored => None,
        }
    }

    /// [`Controller::on_applied`] through a shared reference, for the reports that only
    /// move indexes on (the common case: a cached region's next entries, at its epoch);
    /// false when the report needs the controller alone (a region it has no index for
    /// yet, an epoch change or a gap to evict for), and then [`Controller::on_applied`]
    /// does it all again (moving an index on twice changes nothing).
    pub fn try_on_applied(&self, header: &ime_region::ApplyHeader) -> bool {
        let Some(applied) = self.applied.get(&header.region) else {
            return false;
        };
        applied.fetch_max(header.last_index, Ordering::AcqRel);
        let (id, epoch) = (header.region, header.epoch);
        let (first, last) = (header.first_index, header.last_index);
        self.broken()
            || (self.map)
                .try_report_applied(id, epoch, first, last)
                .is_some()
    }

    /// A reader asks for region `id` as `request` says: a ticket and the memory range to
    /// read, or why memory cannot serve it (a gap it revealed evicts the region).
    ///
    /// # Errors
    /// The [`Fallback`]: the engine is disabled, or the region map's [`ReadMiss`]; the
    /// read goes to disk.
    pub fn acquire_snapshot(
        &mut self,
        id: RegionId,
        request: ReadRequest,
        out: &mut Decisions,
    ) -> Result<(SnapshotTicket, RangeId), Fallback> {
        match self.try_acquire_snapshot(id, request) {
            Some(answer) => answer,
            None => {
                let refused = match self.map.acquire_snapshot(id, self.trusted(id, request)) {
                    Ok(ticket) => return self.with_range(ticket),
                    Err(refused) => refused,
                };
                if let Some(gap) = refused.gap {
                    self.gap_found(gap, out);
                }
                Err(Fallback::Miss(refused.miss))
            }
        }
    }

    /// [`Controller::acquire_snapshot`] through a shared reference, for many readers at
    /// once (the snapshot registers on the region's own record,
    /// [`RegionMap::try_acquire_snapshot`]); `None` when the request revealed a gap,
    /// whose eviction needs [`Controller::acquire_snapshot`].
    pub fn try_acquire_snapshot(
        &self,
        id: RegionId,
        request: ReadRequest,
    ) -> Option<Result<(SnapshotTicket, RangeId), Fallback>> {
        if !self.config.enable {
            return Some(Err(Fallback::Disabled));
        }
        match self.map.try_acquire_snapshot(id, self.trusted(id, request)) {
            Ok(ticket) => Some(self.with_range(ticket)),
            Err(ReadMiss::Gap(_)) => None,
            Err(miss) => Some(Err(Fallback::Miss(miss))),
        }
    }

    /// The request as this controller trusts it: the broken engine trusts its cache
    /// whatever the reader knows.
    fn trusted(&self, id: RegionId, mut request: ReadRequest) -> ReadRequest {
        if self.broken() {
            if let Some(cached) = self.map.region(id) {
                request.epoch_version = cached.epoch.version;
            }
            request.applied_index = 0;
        }
        request
    }

    fn with_range(&self, ticket: SnapshotTicket) -> Result<(SnapshotTicket, RangeId), Fallback> {
        match self.cached.get(&ticket.region()) {
            Some(cached) => Ok((ticket, cached.range)),
            None => {
                // Readable without memory cannot happen; refuse rather than trust it (the
                // region is Active, so this release drains nothing).
                let _ = ticket.release();
                Err(Fallback::Miss(ReadMiss::NotCached))
            }
        }
    }

    /// A snapshot ended: the last one of an evicted region lets its deletion go ahead.
    ///
    /// # Errors
    /// [`RegionError`] for a ticket the map does not know (nothing changes then).
    pub fn release_snapshot(
        &mut self,
        ticket: SnapshotTicket,
        out: &mut Decisions,
    ) -> Result<(), RegionError> {
        if let Some(region) = self.map.release_snapshot(ticket)? {
            out.push(Action::Delete(region));
        }
        Ok(())
    }

    /// A ticket released on its own ([`SnapshotTicket::release`]) drained a record the
    /// map waits on: an evicted region whose last snapshot that was is deleted.
    pub fn drained(&mut self, drained: Drained, out: &mut Decisions) {
        if let Some(region) = self.map.drained(drained) {
            out.push(Action::Delete(region));
        }
    }
}
