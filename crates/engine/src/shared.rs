//! The engine's shared state: the disk, the memory store, region metadata under one lock,
//! and the side effects of lifecycle steps (callbacks, deletions, loads) carried out once
//! that lock is released.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use ime_controller::{Action, Controller, Decisions, Env, TimestampSource};
use ime_disk::DiskEngine;
use ime_eviction::EvictionPolicy;
use ime_memkv::{DroppedRange, MemConfig, MemError, MemKv, OpBuffer, RangeId};
use ime_metrics::{CompactResult, Metrics, ReadCounters};
use ime_region::EvictReason::{MemoryLimitReached, WriteFailed};
use ime_region::{Drained, EvictCallback, EvictReason, KeyRange, RegionHashMap, RegionId};
use ime_stripes::{Queue, STRIPES, Stripes, View};

use crate::Config;

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
    /// A policy round a write asked for: memory passed the evict threshold.
    PolicyRound,
    /// Apply the writes a stripe deferred to memory (the stripe's index).
    Drain(usize),
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
            Task::PolicyRound => TaskKind::PolicyRound,
            Task::Drain(_) => TaskKind::Drain,
            Task::Delete { .. } => TaskKind::Delete,
        }
    }

    /// Whether the loader runs it (else the deleter).
    fn is_load(&self) -> bool {
        matches!(
            self,
            Task::Load(_) | Task::LoadCopy(_) | Task::LoadFinish(_)
        )
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
    /// A policy round a write asked for, memory past the evict threshold: it evicts
    /// (`MemoryPressure`) down to the stop-load threshold before writes reach capacity.
    PolicyRound,
    /// Writes that deferred their memory side applied to memory.
    Drain,
    /// An evicted region's memory freed, and the region removed.
    Delete,
}

/// How the engine runs its background work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Background {
    /// A loader, a deleter and a ticker thread (the default).
    #[default]
    Threads,
    /// No thread: tasks wait until the embedder runs them ([`crate::Engine::run_pending`]),
    /// as do the ticker's duty ([`crate::Engine::tick`]) and GC, policy and cross-check
    /// rounds. For deterministic simulation: a seeded scheduler then chooses every
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

/// A range dropped from the store whose region has not reached Evicting yet (snapshots
/// still read it, or its load is still stopping).
pub(crate) struct Dropped {
    pub(crate) handle: DroppedRange,
    pub(crate) since: Instant,
    pub(crate) reason: EvictReason,
}

/// What the engine's one metadata lock guards: the controller's decisions, and the
/// memory handles and read counters they refer to.
pub(crate) struct Meta {
    pub(crate) ctl: Controller,
    pub(crate) dropped: RegionHashMap<Dropped>,
    /// Read statistics per region since the last policy round; snapshots add to them
    /// under the lock shared, each thread to a shard of its own.
    pub(crate) counters: RegionHashMap<ReadCounters>,
}

impl Meta {
    /// The read counters of region `id`, if the controller knows the region.
    pub(crate) fn counters(&mut self, id: RegionId) -> Option<&ReadCounters> {
        self.ctl.peer(id)?;
        Some(self.counters.entry(id).or_default())
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

/// `mutex`, locked; a holder's panic does not make it unusable (as for every lock here).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InFlight {
    pub(crate) fn add(&self, n: usize) {
        *lock(&self.count) += n;
    }

    pub(crate) fn done(&self) {
        let mut count = lock(&self.count);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no task is in flight, or `timeout` passes; true when idle.
    pub(crate) fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let count = lock(&self.count);
        let (count, _) = self
            .idle
            .wait_timeout_while(count, timeout, |c| *c > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *count == 0
    }
}

/// Everything the engine's handles and threads share. Aligned to a cache line, so that
/// the reference count every snapshot moves lies on a line of its own.
#[repr(align(64))]
pub(crate) struct Core<D: DiskEngine> {
    pub(crate) disk: D,
    pub(crate) mem: MemKv,
    /// Held shared by reads (a snapshot registers on its region's own record), alone by
    /// everything else that reads or changes region metadata. Sharded: a reader locks a
    /// shard of its thread's, so that readers never write one cache line.
    meta: ShardedLock<Meta>,
    /// Writes and fenced disk changes hold it shared; a load's start and the cross-checker
    /// hold it alone, so that no write is between its two sides meanwhile.
    load_gate: ShardedLock<()>,
    /// Per-region write stripes: what lets a reader take a disk snapshot and a memory
    /// sequence that agree, without waiting for a writer.
    pub(crate) stripes: Stripes<D::Snapshot, Deferred>,
    /// Records emptied by dropped snapshots that the region map waits on (an evicted
    /// region's, a split parent's): the next holder of the metadata lock hands them back.
    pub(crate) drained: (Sender<Drained>, Receiver<Drained>),
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) policy: Mutex<Box<dyn EvictionPolicy>>,
    pub(crate) safe_point: AtomicU64,
    /// The embedder's clock, if any: GC's own safe point follows it.
    pub(crate) timestamps: Mutex<Option<Arc<dyn TimestampSource>>>,
    pub(crate) started: Instant,
    pub(crate) closed: AtomicBool,
    pub(crate) in_flight: InFlight,
    /// A pressure round is queued and has not started yet (one at a time).
    pub(crate) pressure_round: AtomicBool,
    /// The machine's cores: a write defers its memory side only while the foreground
    /// leaves one free for the background thread that applies it.
    pub(crate) cores: u64,
    runner: Runner,
    /// Loads between their stages, by job id.
    pub(crate) jobs: Mutex<HashMap<u64, LoadJob<D::Snapshot>>>,
    /// The next load job's id.
    pub(crate) next_job: AtomicU64,
    /// Test-only switches (the `testing` feature).
    #[cfg(feature = "testing")]
    pub(crate) switches: crate::testing::Switches,
}

/// A load between its stages: what it started from, and how its copy went.
pub(crate) struct LoadJob<S> {
    pub(crate) ticket: ime_region::LoadTicket,
    /// The memory range it loads into, followed through splits.
    pub(crate) target: ime_memkv::LoadTarget,
    /// The region's size as last known (0: unknown): the room the copy makes in advance.
    pub(crate) size: u64,
    pub(crate) snapshot: S,
    /// The memory sequence the copy goes in at: below every write after the start.
    pub(crate) memory_seq: u64,
    pub(crate) started: Instant,
    /// The copy's outcome, once it ran: a run per column family, to install.
    pub(crate) copied: Option<Result<Vec<ime_memkv::LoadedRun>, String>>,
}

impl<D: DiskEngine> Core<D> {
    pub(crate) fn new(
        disk: D,
        config: Config,
        policy: Box<dyn EvictionPolicy>,
        runner: Runner,
    ) -> Self {
        let t = config.thresholds();
        let mem = MemKv::new(MemConfig::new(t.capacity, t.evict_threshold));
        mem.set_compaction_min(config.memtable_compaction_entries);
        Core {
            disk,
            mem,
            meta: ShardedLock::new(Meta {
                ctl: Controller::new(config),
                dropped: RegionHashMap::default(),
                counters: RegionHashMap::default(),
            }),
            load_gate: ShardedLock::new(()),
            stripes: Stripes::new(),
            drained: crossbeam_channel::unbounded(),
            metrics: Arc::new(Metrics::new()),
            policy: Mutex::new(policy),
            safe_point: AtomicU64::new(0),
            timestamps: Mutex::new(None),
            started: Instant::now(),
            closed: AtomicBool::new(false),
            in_flight: InFlight::default(),
            pressure_round: AtomicBool::new(false),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            runner,
            jobs: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(0),
            #[cfg(feature = "testing")]
            switches: crate::testing::Switches::default(),
        }
    }

    /// The metadata lock, alone.
    pub(crate) fn meta(&self) -> ShardedLockWriteGuard<'_, Meta> {
        self.meta.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The metadata lock, shared with other readers.
    pub(crate) fn meta_shared(&self) -> ShardedLockReadGuard<'_, Meta> {
        self.meta.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A dropped snapshot emptied a record the map waits on: handed back now when the
    /// metadata lock is free, else by its next holder.
    pub(crate) fn hand_back(&self, drained: Drained) {
        let _ = self.drained.0.send(drained);
        // Free now means this thread holds no guard either: waiting for it cannot deadlock.
        if self.meta.try_write().is_ok() {
            self.decide(|_, _, _| ());
        }
    }

    /// Held by writes (shared): no load starts meanwhile.
    pub(crate) fn writes(&self) -> ShardedLockReadGuard<'_, ()> {
        (self.load_gate.read()).unwrap_or_else(PoisonError::into_inner)
    }

    /// Held alone: no write is in flight meanwhile.
    pub(crate) fn no_writes(&self) -> ShardedLockWriteGuard<'_, ()> {
        (self.load_gate.write()).unwrap_or_else(PoisonError::into_inner)
    }

    /// A disk snapshot and a memory sequence that agree for `region`'s stripe, the writes
    /// it deferred applied first — none if `locked` (the caller holds the metadata lock,
    /// which a refused apply needs): the disk alone while any wait (`docs/engine.md`).
    pub(crate) fn view(&self, region: RegionId, locked: bool) -> View<D::Snapshot> {
        // Disk changes outside the stripes are the stripes' own count (`docs/engine.md`).
        let token = || self.mem.reshapes();
        let fresh = || (self.disk.snapshot(), self.mem.last_sequence());
        if locked {
            return self.stripes.view_without_applying(region.0, token, fresh);
        }
        self.applying(|apply| self.stripes.view(region.0, token, fresh, apply))
    }

    /// The ticker's 100 ms duty ([`crate::Engine::tick`]).
    pub(crate) fn tick(&self) {
        self.decide(|ctl, env, _| ctl.on_tick(env));
        self.stripes.release_idle(); // disk snapshots parked by writes that ended
        self.settle_deferred(0..STRIPES); // writes deferred by stripes nobody reads
        self.mem.age_spares(); // the arrays of runs dropped lately, freed here if unused
        self.refresh_gauges();
    }

    /// `waiting` deferred writes of stripe `index` wait: from [`DRAIN_AT`], a task applies
    /// them and the deleter polls until none come ([`Stripes::wake_wanted`]; with
    /// `Background::Manual`, a task from 1). From four times that, the writer applies
    /// them itself unless another thread is applying the stripe's writes right now (the
    /// deleter after a compaction, a reader): that one takes these next, and waiting
    /// for it would put the writer to sleep. From sixteen times, it waits for it.
    pub(crate) fn deferred(&self, index: usize, waiting: u64, fx: &mut Effects) {
        let manual = self.is_manual();
        let apply = |q: &mut Deferred| self.apply_deferred(q, fx);
        if (manual && waiting == 1) || (!manual && self.stripes.wake_wanted(waiting, DRAIN_AT)) {
            fx.tasks.push(Task::Drain(index));
        } else if waiting >= 16 * DRAIN_AT {
            self.stripes.drain(index, apply);
        } else if waiting >= 4 * DRAIN_AT {
            self.stripes.try_drain(index, apply);
        }
    }

    /// Applies deferred writes to memory, in order, as one batch (never called under the
    /// metadata lock: a refusal evicts their regions, as the writes themselves would).
    pub(crate) fn apply_deferred(&self, queue: &mut Deferred, fx: &mut Effects) {
        let written = self.mem.write_buffer(&queue.0);
        self.memory_written(written.as_deref(), queue.0.touched(), fx);
    }

    /// What a memory write (its ranges, or its refusal) leads to: compactions and a
    /// pressure round, or the eviction of the regions it touches (returned).
    pub(crate) fn memory_written(
        &self,
        written: Result<&[RangeId], &MemError>,
        touched: impl Iterator<Item = KeyRange>,
        fx: &mut Effects,
    ) -> Vec<(RegionId, EvictReason)> {
        let err = match written {
            Ok(ranges) => {
                self.compact_if_grown(ranges, fx);
                self.relieve_pressure(fx);
                return Vec::new();
            }
            Err(err) => err,
        };
        tracing::warn!(%err, "memory write refused: evicting the regions it touches");
        let full = matches!(err, MemError::MemoryLimit { .. });
        let reason = if full {
            MemoryLimitReached
        } else {
            WriteFailed
        };
        self.evict_touched(touched, reason, &[], fx)
    }

    /// Evicts every cached region holding a key in `touched`, but those in `except`.
    pub(crate) fn evict_touched(
        &self,
        touched: impl Iterator<Item = KeyRange>,
        reason: EvictReason,
        except: &[RegionId],
        fx: &mut Effects,
    ) -> Vec<(RegionId, EvictReason)> {
        let (mut meta, mut decisions) = (self.meta(), Decisions::new());
        let evicted = (meta.ctl).evict_written(touched, except, reason, &mut decisions);
        self.carry_out(&mut meta, decisions, fx);
        evicted.into_iter().map(|id| (id, reason)).collect()
    }

    /// Calls `f` with what applies deferred writes ([`Core::apply_deferred`]), then
    /// carries out what they led to.
    pub(crate) fn applying<R>(&self, f: impl FnOnce(&mut dyn FnMut(&mut Deferred)) -> R) -> R {
        let mut fx = Effects::default();
        let out = f(&mut |q| self.apply_deferred(q, &mut fx));
        self.finish(fx);
        out
    }

    /// Applies the writes `stripes` deferred, at once. Before an event too (all of them):
    /// a split or merge moves keys to regions of other stripes, whose readers would not
    /// apply them (a region's events come after its writes, from one thread).
    pub(crate) fn settle_deferred(&self, stripes: impl IntoIterator<Item = usize>) {
        self.applying(|a| (stripes.into_iter()).for_each(|i| _ = self.stripes.drain(i, &mut *a)));
    }

    pub(crate) fn config(&self) -> Config {
        self.meta_shared().ctl.config().clone()
    }

    /// Sets the gauges of the metrics from the region listing and the memory in use.
    pub(crate) fn refresh_gauges(&self) {
        let regions = self.meta_shared().ctl.map().regions();
        (self.metrics).set_gauges(&regions, self.mem.memory_used(), self.mem.spare_bytes());
    }

    /// The safe point GC moves regions towards: the embedder's, or the cache's own when
    /// there is a clock and it is higher ([`Config::gc_target`]).
    pub(crate) fn gc_target(&self) -> u64 {
        let clock = lock(&self.timestamps).clone();
        let now = clock.map(|c| c.now());
        let embedder = self.safe_point.load(std::sync::atomic::Ordering::Acquire);
        self.config().gc_target(embedder, now)
    }

    /// Replaces the configuration: the memory store's limits and compaction threshold at
    /// once, and whatever the controller decides (`enable = false` evicts everything).
    pub(crate) fn set_config(&self, config: Config) {
        let t = config.thresholds();
        (self.mem).set_limits(MemConfig::new(t.capacity, t.evict_threshold));
        (self.mem).set_compaction_min(config.memtable_compaction_entries);
        self.decide(|ctl, _, out| ctl.set_config(config, out));
    }

    /// What the controller is told of the world now.
    pub(crate) fn env(&self) -> Env {
        Env {
            now: self.started.elapsed(),
            memory_used: self.mem.memory_used(),
        }
    }

    /// Runs one controller call under the metadata lock, carries out its decisions —
    /// memory steps under the lock, tasks and callbacks after it — and returns its answer.
    pub(crate) fn decide<R>(
        &self,
        call: impl FnOnce(&mut Controller, Env, &mut Decisions) -> R,
    ) -> R {
        self.decide_with(|meta, env, out| call(&mut meta.ctl, env, out))
    }

    /// [`Core::decide`] with the whole of the metadata.
    pub(crate) fn decide_with<R>(
        &self,
        call: impl FnOnce(&mut Meta, Env, &mut Decisions) -> R,
    ) -> R {
        let env = self.env();
        let mut fx = Effects::default();
        let answer = {
            let mut meta = self.meta();
            let mut decisions = Decisions::new();
            self.hand_back_drained(&mut meta, &mut decisions);
            let answer = call(&mut meta, env, &mut decisions);
            self.carry_out(&mut meta, decisions, &mut fx);
            answer
        };
        self.finish(fx);
        answer
    }

    /// Hands back the records dropped snapshots drained since the last decision.
    pub(crate) fn hand_back_drained(&self, meta: &mut Meta, out: &mut Decisions) {
        for drained in self.drained.1.try_iter() {
            meta.ctl.drained(drained, out);
        }
    }

    /// Carries out the controller's decisions in order: memory leaves or splits in the
    /// store at once (the caller holds the metadata lock, so no snapshot sees a region
    /// without its memory), tasks and callbacks go into `fx` for after the lock.
    pub(crate) fn carry_out(&self, meta: &mut Meta, decisions: Decisions, fx: &mut Effects) {
        for action in decisions {
            match action {
                Action::DropMemory {
                    region,
                    range,
                    reason,
                } => self.drop_memory(meta, region, range, reason),
                Action::SplitMemory { parent, parts } => {
                    let ranges: Vec<_> = parts.iter().map(|p| (p.range, p.keys.clone())).collect();
                    if let Err(err) = self.mem.split_range(parent, &ranges) {
                        tracing::error!(%err, "memory split refused: evicting the children");
                        let mut more = Decisions::new();
                        let children = parts.iter().map(|p| p.region);
                        meta.ctl.memory_split_failed(children, &mut more);
                        self.carry_out(meta, more, fx);
                    }
                }
                Action::Load(region) => fx.tasks.push(Task::Load(region)),
                Action::Delete(region) => {
                    let dropped = meta.dropped.remove(&region);
                    let since = dropped.as_ref().map(|d| (d.since, d.reason));
                    let handle = dropped.map(|d| d.handle);
                    fx.tasks.push(Task::Delete {
                        region,
                        handle,
                        since,
                    });
                }
                Action::Fire(callback) => fx.callbacks.push(callback),
                note @ (Action::Gap { .. }
                | Action::Evicted { .. }
                | Action::Step { .. }
                | Action::Refused { .. }
                | Action::HeldByFence(_)) => self.metrics.record(&note),
            }
        }
    }

    /// Takes a region's range out of the memory store (O(1)); the handle waits in `meta`
    /// until the region is Evicting. The bytes it held go to the controller first.
    fn drop_memory(&self, meta: &mut Meta, region: RegionId, range: RangeId, reason: EvictReason) {
        if let Ok(bytes) = self.mem.range_memory(range) {
            meta.ctl.note_size(region, bytes);
        }
        if let Ok(handle) = self.mem.drop_range(range) {
            let since = Instant::now();
            let dropped = Dropped {
                handle,
                since,
                reason,
            };
            meta.dropped.insert(region, dropped);
        }
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
            Runner::Manual(queue) => lock(queue).push_back(task),
        }
    }

    /// Whether background work waits for the embedder to run it.
    pub(crate) fn is_manual(&self) -> bool {
        matches!(self.runner, Runner::Manual(_))
    }

    /// With [`crate::Background::Manual`]: what each waiting task is, in queue order.
    pub(crate) fn pending_kinds(&self) -> Vec<TaskKind> {
        match &self.runner {
            Runner::Threads { .. } => Vec::new(),
            Runner::Manual(queue) => lock(queue).iter().map(Task::kind).collect(),
        }
    }

    /// With [`crate::Background::Manual`]: runs the waiting task at `index` (modulo their
    /// number); its continuation, if any, joins the end of the queue.
    pub(crate) fn run_pending(&self, index: usize) -> Option<TaskKind> {
        let Runner::Manual(queue) = &self.runner else {
            return None;
        };
        let task = {
            let mut queue = lock(queue);
            let at = index.checked_rem(queue.len())?; // none when nothing waits
            queue.remove(at)?
        };
        let kind = task.kind();
        if let Some(next) = self.run_task(task) {
            self.submit(next);
        }
        Some(kind)
    }

    fn run_inline(&self, task: Task) {
        match task {
            Task::Load(region) => {
                self.decide(|ctl, _, out| {
                    ctl.evict(region, EvictReason::LoadFailedWithoutStart, None, out)
                });
            }
            // Later stages, compactions and frees are done the same here as on the threads.
            mut other @ (Task::LoadCopy(_)
            | Task::LoadFinish(_)
            | Task::Compact(_)
            | Task::Gc { .. }
            | Task::PolicyRound
            | Task::Drain(_)
            | Task::Delete { .. }) => {
                while let Some(next) = self.run_task(other) {
                    other = next;
                }
            }
        }
    }

    /// When memory passed the evict threshold, a policy round is queued (one at a time), so
    /// that regions are evicted calmly, off the write path, before a write reaches capacity.
    pub(crate) fn relieve_pressure(&self, fx: &mut Effects) {
        if !self.mem.over_soft_limit() {
            return;
        }
        let queued = (self.pressure_round).swap(true, std::sync::atomic::Ordering::AcqRel);
        if !queued {
            fx.tasks.push(Task::PolicyRound);
        }
    }

    /// Queues a compaction of each of `ranges` whose memtables have grown and has none
    /// claimed yet ([`MemKv::claim_compaction`]).
    pub(crate) fn compact_if_grown(&self, ranges: &[RangeId], fx: &mut Effects) {
        let due = ranges
            .iter()
            .filter(|range| self.mem.claim_compaction(**range));
        fx.tasks.extend(due.map(|range| Task::Compact(*range)));
    }

    /// The deleter's compaction of `range` (`MemKv::compact_some`): all of it, or with
    /// manual background work [`PIECE`] entries of it, the next piece queued
    /// behind, so that a seeded scheduler puts other work between the pieces.
    pub(crate) fn compact(&self, range: RangeId) -> Option<Task> {
        let piece = if self.is_manual() { PIECE } else { usize::MAX };
        match self.mem.compact_some(range, piece) {
            Ok(None) => return Some(Task::Compact(range)),
            Ok(Some(_)) => self.metrics.compacted(CompactResult::Ok),
            Err(MemError::NoSuchRange(_)) => self.metrics.compacted(CompactResult::RangeGone),
            Err(err) => {
                self.metrics.compacted(CompactResult::Failed);
                tracing::warn!(range = range.0, %err, "memtable compaction failed");
            }
        }
        None
    }

    /// The deleter's step: frees the memory, then removes the region and fires its
    /// callbacks.
    pub(crate) fn delete(
        &self,
        region: RegionId,
        handle: Option<DroppedRange>,
        since: Option<(Instant, EvictReason)>,
    ) {
        if let Some(dropped) = handle {
            self.metrics.bytes_freed(dropped.memory()); // and freed here
        }
        let finished = self.decide(|ctl, env, out| ctl.finish_eviction(region, env, out));
        match finished {
            Ok(()) => {
                if let Some((since, reason)) = since {
                    self.metrics.eviction_took(reason, since.elapsed());
                }
            }
            Err(err) => tracing::warn!(region = region.0, %err, "delete of a region not evicting"),
        }
    }
}

/// How many deferred writes of a stripe wait before a task applies them (with threads).
const DRAIN_AT: u64 = 32;

/// Entries of a compaction's piece with manual background work: few, so that a
/// scheduler meets a compaction between its pieces even in a small store.
const PIECE: usize = 32;

/// Writes that deferred their memory side, in order.
#[derive(Default)]
pub(crate) struct Deferred(pub(crate) OpBuffer);

impl Queue for Deferred {
    fn clear(&mut self) {
        self.0.clear();
    }
}
