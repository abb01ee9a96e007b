//! The engine's shared state: the disk, the memory store, region metadata under one lock,
//! and the side effects of lifecycle steps (callbacks, deletions, loads) carried out once
//! that lock is released.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use crossbeam_channel::Sender;
use ime_disk::DiskEngine;
use ime_eviction::EvictionPolicy;
use ime_memkv::{DroppedRange, KeyBounds, MemConfig, MemError, MemKv, RangeId};
use ime_region::{
    EvictCallback, EvictReason, EvictStep, Eviction, KeyRange, Region, RegionId, RegionMap,
};

use crate::metrics::Metrics;
use crate::stats::CompactResult;
use crate::{Config, Warmup};

/// Work for the background threads (or, with [`crate::Background::Manual`], for whoever
/// runs the queue). A task may return a continuation: loads run in stages, so that a
/// scheduler can put writes, events and other work between them.
pub(crate) enum Task {
    /// Start loading a Pending region: Pending to Loading, with a disk snapshot.
    Load(RegionId),
    /// Copy a started load's keys from its disk snapshot (the job's id).
    LoadCopy(u64),
    /// Finish a load: GC at the safe point, then Loading to Active (the job's id).
    LoadFinish(u64),
    /// Fold a range's grown memtables into its runs (no GC: that is the GC round's).
    Compact(RangeId),
    /// Collect a region's range at a safe point the GC round raised.
    Gc {
        region: RegionId,
        range: RangeId,
        safe_point: u64,
    },
    /// An Evicting region: free its memory (drop the handle), then remove it.
    Delete {
        region: RegionId,
        handle: Option<DroppedRange>,
        since: Option<(Instant, EvictReason)>,
    },
}

impl Task {
    /// What the task is, for logs and a scheduler's journal.
    pub(crate) fn kind(&self) -> TaskKind {
        match self {
            Task::Load(_) => TaskKind::LoadStart,
            Task::LoadCopy(_) => TaskKind::LoadCopy,
            Task::LoadFinish(_) => TaskKind::LoadFinish,
            Task::Compact(_) => TaskKind::Compact,
            Task::Gc { .. } => TaskKind::Gc,
            Task::Delete { .. } => TaskKind::Delete,
        }
    }

    /// Whether the loader runs it (else the deleter).
    fn is_load(&self) -> bool {
        match self.kind() {
            TaskKind::LoadStart | TaskKind::LoadCopy | TaskKind::LoadFinish => true,
            TaskKind::Compact | TaskKind::Gc | TaskKind::Delete => false,
        }
    }
}

/// The kinds of background task, as [`crate::Engine::run_pending`] reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A load's first stage: Pending to Loading, with the disk snapshot it copies from.
    LoadStart,
    /// A load's second stage: the region's keys copied from that snapshot.
    LoadCopy,
    /// A load's last stage: GC at the safe point, then Loading to Active.
    LoadFinish,
    /// Grown memtables folded into runs.
    Compact,
    /// A region collected at the safe point a GC round raised.
    Gc,
    /// An evicted region's memory freed, and the region removed.
    Delete,
}

/// How the engine runs its background work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Background {
    /// A loader, a deleter and a ticker thread (the default).
    #[default]
    Threads,
    /// No thread at all: tasks wait in a queue until the embedder runs them
    /// ([`crate::Engine::run_pending`]), and GC, policy and cross-check rounds run when it
    /// calls them. For deterministic simulation: a seeded scheduler then chooses every
    /// interleaving of background work with writes, reads and events.
    Manual,
}

/// Where tasks go.
pub(crate) enum Runner {
    /// To the loader and deleter threads.
    Threads {
        loads: Sender<Task>,
        deletes: Sender<Task>,
    },
    /// Into a queue the embedder runs.
    Manual(Mutex<VecDeque<Task>>),
}

/// A cached region's memory: its range in the store and the sequence it was loaded at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cached {
    pub(crate) range: RangeId,
    pub(crate) loaded_at: Instant,
    /// The safe point up to which a collection has installed on this range (or on the
    /// parent it was split from). Below the region's safe point, a GC round collects it
    /// (again): a round whose compaction was lost is retried.
    pub(crate) collected: u64,
}

/// A range dropped from the store whose region has not reached Evicting yet (snapshots
/// still read it, or its load is still stopping).
pub(crate) struct Dropped {
    pub(crate) handle: DroppedRange,
    pub(crate) since: Instant,
    pub(crate) reason: EvictReason,
}

/// What the engine knows of a region it has heard of, cached or not.
#[derive(Clone, Debug)]
pub(crate) struct Known {
    pub(crate) region: Region,
    pub(crate) is_leader: bool,
    /// Read statistics since the last policy round; snapshots add to them without a lock.
    pub(crate) counters: Arc<ReadCounters>,
    /// Bytes it held when last cached.
    pub(crate) size: u64,
}

impl Known {
    pub(crate) fn new(region: Region) -> Self {
        Known {
            region,
            is_leader: false,
            counters: Arc::default(),
            size: 0,
        }
    }
}

/// A region's read statistics: reads, MVCC versions scanned, keys returned.
#[derive(Debug, Default)]
pub(crate) struct ReadCounters {
    pub(crate) reads: AtomicU64,
    pub(crate) scanned: AtomicU64,
    pub(crate) returned: AtomicU64,
}

impl ReadCounters {
    /// The counts so far, reset to zero.
    pub(crate) fn take(&self) -> (u64, u64, u64) {
        let take = |c: &AtomicU64| c.swap(0, std::sync::atomic::Ordering::Relaxed);
        (take(&self.reads), take(&self.scanned), take(&self.returned))
    }
}

/// Region metadata and everything keyed by region, under the engine's one metadata lock.
pub(crate) struct Meta {
    pub(crate) map: RegionMap,
    pub(crate) cached: HashMap<RegionId, Cached>,
    pub(crate) dropped: HashMap<RegionId, Dropped>,
    pub(crate) known: HashMap<RegionId, Known>,
    pub(crate) flashback: HashSet<RegionId>,
    pub(crate) pins: Vec<KeyRange>,
    pub(crate) warmups: HashMap<RegionId, Warmup>,
    /// Regions to load once the evicted regions in their way are gone (a hot merge
    /// result waits for its sources' memory).
    pub(crate) wanted: HashSet<RegionId>,
    /// The last applied index reported per region, cached or not (by the apply side, or
    /// by an event such as a snapshot); a load starts from it.
    pub(crate) applied: HashMap<RegionId, u64>,
    /// Disk changes under way outside the write path, by fence id: no load of a range
    /// they overlap takes its disk snapshot until they finish.
    pub(crate) fences: BTreeMap<u64, Fence>,
    /// Pending regions whose load waits for a fence to lift.
    pub(crate) fenced_loads: BTreeSet<RegionId>,
    next_range: u64,
    next_fence: u64,
}

/// A disk change under way outside the write path.
#[derive(Clone, Debug)]
pub(crate) struct Fence {
    pub(crate) ranges: Vec<KeyRange>,
    /// Why overlapping regions were evicted (and are again, if the fence is abandoned).
    pub(crate) reason: EvictReason,
}

impl Meta {
    fn new() -> Self {
        Meta {
            map: RegionMap::new(),
            cached: HashMap::new(),
            dropped: HashMap::new(),
            known: HashMap::new(),
            flashback: HashSet::new(),
            pins: Vec::new(),
            warmups: HashMap::new(),
            wanted: HashSet::new(),
            applied: HashMap::new(),
            fences: BTreeMap::new(),
            fenced_loads: BTreeSet::new(),
            next_range: 1,
            next_fence: 0,
        }
    }

    /// Registers a fence over `ranges`; its id lifts it.
    pub(crate) fn add_fence(&mut self, ranges: Vec<KeyRange>, reason: EvictReason) -> u64 {
        self.next_fence += 1;
        self.fences
            .insert(self.next_fence, Fence { ranges, reason });
        self.next_fence
    }

    pub(crate) fn new_range_id(&mut self) -> RangeId {
        self.next_range += 1;
        RangeId(self.next_range)
    }

    /// Remembers `region` (the newest description wins) and an applied index it reached.
    /// An uninitialized peer's region (epoch 0/0) is not remembered: it has no range of
    /// its own and nothing to cache.
    pub(crate) fn learn(&mut self, region: &Region, applied_index: u64) {
        if !region.is_initialized() {
            return;
        }
        let known = self
            .known
            .entry(region.id)
            .or_insert_with(|| Known::new(region.clone()));
        if !region.epoch.is_stale_than(&known.region.epoch) {
            known.region = region.clone();
        }
        let applied = self.applied.entry(region.id).or_default();
        *applied = (*applied).max(applied_index);
    }

    pub(crate) fn is_pinned(&self, range: &KeyRange) -> bool {
        self.pins.iter().any(|p| p.contains(range))
    }
}

/// Side effects of lifecycle steps, carried out after the metadata lock is released:
/// callbacks fired, deletions and loads handed to the background threads.
#[derive(Default)]
#[must_use = "effects must be carried out with Core::finish"]
pub(crate) struct Effects {
    pub(crate) callbacks: Vec<EvictCallback>,
    pub(crate) tasks: Vec<Task>,
}

/// Counts tasks handed to the background threads and not finished yet.
#[derive(Default)]
pub(crate) struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    pub(crate) fn add(&self, n: usize) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += n;
    }

    pub(crate) fn done(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no task is in flight, or `timeout` passes; true when idle.
    pub(crate) fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, _) = self
            .idle
            .wait_timeout_while(count, timeout, |c| *c > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *count == 0
    }
}

/// Everything the engine's handles and threads share.
pub(crate) struct Core<D: DiskEngine> {
    pub(crate) disk: D,
    pub(crate) mem: MemKv,
    meta: Mutex<Meta>,
    /// Orders writes, ingests and the disk snapshots loads start from.
    write_lock: Mutex<()>,
    config: RwLock<Config>,
    pub(crate) metrics: Metrics,
    pub(crate) policy: Mutex<Box<dyn EvictionPolicy>>,
    pub(crate) safe_point: AtomicU64,
    pub(crate) started: Instant,
    pub(crate) closed: AtomicBool,
    pub(crate) in_flight: InFlight,
    /// Ranges with a compaction queued or running (one at a time per range).
    pub(crate) compacting: Mutex<HashSet<RangeId>>,
    runner: Runner,
    /// Loads between their stages, by job id.
    pub(crate) jobs: Mutex<HashMap<u64, LoadJob<D::Snapshot>>>,
    next_job: AtomicU64,
    /// Test-only switches (the `testing` feature).
    #[cfg(feature = "testing")]
    pub(crate) switches: crate::testing::Switches,
}

/// A load between its stages: what it started from, and how its copy went.
pub(crate) struct LoadJob<S> {
    pub(crate) ticket: ime_region::LoadTicket,
    pub(crate) range: RangeId,
    pub(crate) snapshot: S,
    pub(crate) started: Instant,
    /// The copy's outcome, once it ran.
    pub(crate) copied: Option<Result<(), String>>,
}

impl<D: DiskEngine> Core<D> {
    pub(crate) fn new(
        disk: D,
        config: Config,
        policy: Box<dyn EvictionPolicy>,
        runner: Runner,
    ) -> Self {
        let t = config.thresholds();
        let mem = MemKv::new(MemConfig {
            hard_limit: t.capacity,
            soft_limit: t.evict_threshold,
        });
        Core {
            disk,
            mem,
            meta: Mutex::new(Meta::new()),
            write_lock: Mutex::new(()),
            config: RwLock::new(config),
            metrics: Metrics::new(),
            policy: Mutex::new(policy),
            safe_point: AtomicU64::new(0),
            started: Instant::now(),
            closed: AtomicBool::new(false),
            in_flight: InFlight::default(),
            compacting: Mutex::new(HashSet::new()),
            runner,
            jobs: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(0),
            #[cfg(feature = "testing")]
            switches: crate::testing::Switches::default(),
        }
    }

    /// Whether the engine was broken on purpose (tests of the checkers only): it then
    /// ignores ApplySnapshot and every gap. Always false without the `testing` feature.
    pub(crate) fn broken(&self) -> bool {
        #[cfg(feature = "testing")]
        return self
            .switches
            .broken
            .load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(feature = "testing"))]
        false
    }

    pub(crate) fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_config(&self, config: Config) {
        let t = config.thresholds();
        self.mem.set_limits(MemConfig {
            hard_limit: t.capacity,
            soft_limit: t.evict_threshold,
        });
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .enable
    }

    /// Evicts region `id` for `reason` and records what must follow in `fx`.
    pub(crate) fn evict(
        &self,
        meta: &mut Meta,
        id: RegionId,
        reason: EvictReason,
        callback: Option<EvictCallback>,
        fx: &mut Effects,
    ) -> EvictStep {
        meta.wanted.remove(&id);
        let eviction = meta.map.evict(id, reason, callback);
        self.absorb(meta, eviction, fx)
    }

    /// Evicts every region overlapping `range`.
    pub(crate) fn evict_overlapping(
        &self,
        meta: &mut Meta,
        range: &KeyRange,
        reason: EvictReason,
        fx: &mut Effects,
    ) {
        // A deferred reload in the range goes too: it would take its disk snapshot at
        // some later time, possibly before the change that evicted the range (an SST
        // ingest, a snapshot's data) reaches the disk.
        let known = &meta.known;
        meta.wanted.retain(|id| {
            known
                .get(id)
                .is_some_and(|k| !k.region.range.overlaps(range))
        });
        for eviction in meta.map.evict_overlapping(range, reason) {
            self.absorb(meta, eviction, fx);
        }
    }

    /// Carries out what an eviction step requires: the region's memory leaves the store
    /// at once (snapshots keep their layers), and once it is Evicting the deleter frees it
    /// and removes the region.
    pub(crate) fn absorb(
        &self,
        meta: &mut Meta,
        eviction: Eviction,
        fx: &mut Effects,
    ) -> EvictStep {
        let Eviction {
            region,
            reason,
            step,
            callbacks,
        } = eviction;
        fx.callbacks.extend(callbacks);
        match step {
            EvictStep::NotCached | EvictStep::AlreadyEvicting => return step,
            EvictStep::Removed => {}
            EvictStep::LoadCanceled | EvictStep::AwaitingSnapshots | EvictStep::ReadyToDelete => {
                self.drop_memory(meta, region, reason);
            }
        }
        self.metrics.evicted(reason);
        let from = match step {
            EvictStep::Removed => "Pending",
            EvictStep::LoadCanceled => "Loading",
            EvictStep::NotCached
            | EvictStep::AlreadyEvicting
            | EvictStep::AwaitingSnapshots
            | EvictStep::ReadyToDelete => "Active",
        };
        let to = meta.map.state(region).map_or("removed", |s| s.as_str());
        let epoch = meta.map.region(region).map(|r| r.epoch);
        lifecycle(region, epoch, from, to, reason.as_str());
        if step == EvictStep::ReadyToDelete {
            self.schedule_delete(meta, region, fx);
        }
        step
    }

    /// Takes a region's range out of the memory store (O(1)); the handle waits in `meta`
    /// until the region is Evicting.
    fn drop_memory(&self, meta: &mut Meta, region: RegionId, reason: EvictReason) {
        let Some(cached) = meta.cached.remove(&region) else {
            return;
        };
        if let Some(known) = meta.known.get_mut(&region) {
            known.size = self.mem.range_memory(cached.range).unwrap_or(known.size);
        }
        if let Ok(handle) = self.mem.drop_range(cached.range) {
            let since = Instant::now();
            meta.dropped.insert(
                region,
                Dropped {
                    handle,
                    since,
                    reason,
                },
            );
        }
    }

    /// Region `region` is Evicting: hand its memory to the deleter.
    pub(crate) fn schedule_delete(&self, meta: &mut Meta, region: RegionId, fx: &mut Effects) {
        let dropped = meta.dropped.remove(&region);
        let since = dropped.as_ref().map(|d| (d.since, d.reason));
        fx.tasks.push(Task::Delete {
            region,
            handle: dropped.map(|d| d.handle),
            since,
        });
    }

    /// Carries out `fx`, outside the metadata lock.
    pub(crate) fn finish(&self, fx: Effects) {
        for task in fx.tasks {
            self.submit(task);
        }
        for callback in fx.callbacks {
            callback.fire();
        }
    }

    /// Hands `task` to the thread that runs its kind, or to the manual queue.
    pub(crate) fn submit(&self, task: Task) {
        match &self.runner {
            Runner::Threads { loads, deletes } => {
                let sender = if task.is_load() { loads } else { deletes };
                self.in_flight.add(1);
                if let Err(unsent) = sender.send(task) {
                    // The threads are gone (shutdown): do the work here.
                    self.in_flight.done();
                    self.run_inline(unsent.into_inner());
                }
            }
            Runner::Manual(queue) => queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(task),
        }
    }

    /// Whether background work waits for the embedder to run it.
    pub(crate) fn is_manual(&self) -> bool {
        matches!(self.runner, Runner::Manual(_))
    }

    /// With [`crate::Background::Manual`]: how many tasks wait.
    pub(crate) fn pending(&self) -> usize {
        match &self.runner {
            Runner::Threads { .. } => 0,
            Runner::Manual(queue) => queue.lock().unwrap_or_else(PoisonError::into_inner).len(),
        }
    }

    /// With [`crate::Background::Manual`]: runs the waiting task at `index` (modulo their
    /// number); its continuation, if any, joins the end of the queue.
    pub(crate) fn run_pending(&self, index: usize) -> Option<TaskKind> {
        let Runner::Manual(queue) = &self.runner else {
            return None;
        };
        let task = {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.is_empty() {
                return None;
            }
            let at = index % queue.len();
            queue.remove(at)?
        };
        let kind = task.kind();
        if let Some(next) = self.run_task(task) {
            self.submit(next);
        }
        Some(kind)
    }

    /// A new load job's id.
    pub(crate) fn new_job(&self) -> u64 {
        self.next_job
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a fence under way overlaps `range` (never, in the test-only unfenced mode).
    pub(crate) fn fenced(&self, meta: &Meta, range: &KeyRange) -> bool {
        #[cfg(feature = "testing")]
        if self
            .switches
            .unfenced
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return false;
        }
        meta.fences
            .values()
            .any(|f| f.ranges.iter().any(|r| r.overlaps(range)))
    }

    fn run_inline(&self, task: Task) {
        match task {
            Task::Load(region) => {
                let mut fx = Effects::default();
                let mut meta = self.meta();
                self.evict(
                    &mut meta,
                    region,
                    EvictReason::LoadFailedWithoutStart,
                    None,
                    &mut fx,
                );
                drop(meta);
                self.finish(fx);
            }
            // Later stages, compactions and frees are done the same here as on the threads.
            mut other @ (Task::LoadCopy(_)
            | Task::LoadFinish(_)
            | Task::Compact(_)
            | Task::Gc { .. }
            | Task::Delete { .. }) => {
                while let Some(next) = self.run_task(other) {
                    other = next;
                }
            }
        }
    }

    /// Queues a compaction of each of `ranges` whose memtables have grown (see
    /// [`MemKv::wants_compaction`]) and has none queued yet.
    pub(crate) fn compact_if_grown(&self, ranges: &[RangeId], fx: &mut Effects) {
        for range in ranges {
            if self.mem.wants_compaction(*range).unwrap_or(false)
                && self
                    .compacting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(*range)
            {
                fx.tasks.push(Task::Compact(*range));
            }
        }
    }

    /// The deleter's compaction step: folds the memtables into the runs. A range dropped
    /// meanwhile is nothing to do.
    pub(crate) fn compact(&self, range: RangeId) {
        match self.mem.compact(range, None) {
            Ok(_) => self.metrics.compacted(CompactResult::Ok),
            Err(MemError::NoSuchRange(_)) => self.metrics.compacted(CompactResult::RangeGone),
            Err(err) => {
                self.metrics.compacted(CompactResult::Failed);
                tracing::warn!(range = range.0, %err, "memtable compaction failed");
            }
        }
        self.compacting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&range);
    }

    /// The deleter's step: frees the memory, then removes the region and fires its
    /// callbacks.
    pub(crate) fn delete(
        &self,
        region: RegionId,
        handle: Option<DroppedRange>,
        since: Option<(Instant, EvictReason)>,
    ) {
        drop(handle);
        let mut fx = Effects::default();
        let mut meta = self.meta();
        match meta.map.finish_eviction(region) {
            Ok(callbacks) => {
                if let Some((since, reason)) = since {
                    self.metrics.eviction_took(reason, since.elapsed());
                }
                lifecycle(region, None, "Evicting", "removed", "memory freed");
                fx.callbacks.extend(callbacks);
            }
            Err(err) => tracing::warn!(region = region.0, %err, "delete of a region not evicting"),
        }
        self.retry_wanted(&mut meta, &mut fx);
        drop(meta);
        self.finish(fx);
    }

    /// Loads the wanted regions nothing evicting stands in the way of any more.
    pub(crate) fn retry_wanted(&self, meta: &mut Meta, fx: &mut Effects) {
        let wanted: Vec<RegionId> = meta.wanted.drain().collect();
        for id in wanted {
            let Some(known) = meta.known.get(&id).cloned() else {
                continue; // destroyed meanwhile
            };
            if meta.map.eviction_in_the_way(id, &known.region.range) {
                meta.wanted.insert(id);
                continue;
            }
            if let Err(err) = self.schedule_load(meta, known.region, 0, fx) {
                tracing::info!(region = id.0, %err, "deferred reload refused");
            }
        }
    }
}

/// The one tracing line of a lifecycle step: region id, epoch, old and new state, reason.
pub(crate) fn lifecycle(
    region: RegionId,
    epoch: Option<ime_region::RegionEpoch>,
    from: &str,
    to: &str,
    reason: &str,
) {
    let epoch = epoch.map(|e| e.to_string()).unwrap_or_default();
    tracing::info!(region = region.0, %epoch, from, to, reason, "region lifecycle");
}

/// The memory store's bounds for a region's range.
pub(crate) fn bounds_of(range: &KeyRange) -> KeyBounds {
    KeyBounds {
        start: range.start().to_vec(),
        end: range.end().map(<[u8]>::to_vec),
    }
}
