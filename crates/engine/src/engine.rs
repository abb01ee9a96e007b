//! [`Engine`]: construction, the background threads and their clean shutdown, the write
//! path, and the calls an embedder makes (loads, pins, safe point, configuration).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use ime_controller::{Admission, Decisions, TimestampSource};
use ime_disk::{DiskEngine, DiskReader};
use ime_eviction::EvictionPolicy;
use ime_memkv::{BatchPlan, RangeId};
use ime_region::EvictReason::WriteFailed;
use ime_region::{EvictCallback, EvictReason, KeyRange, Region, RegionId, RegionInfo};
use ime_types::LaneArc;

use crate::shared::{Background, Core, Deferred, Effects, Meta, Runner, Task, TaskKind};
use crate::{ApplyHeader, Config, EngineError, HybridWriteBatch, Stats, batch::UNTAGGED};
use ime_stripes::{STRIPES, View};
use smallvec::SmallVec;

/// The hybrid engine: a disk engine (the source of truth) and an in-memory cache of hot
/// regions that serves consistent reads.
///
/// It owns three threads — the loader, the deleter and a ticker for GC, the eviction
/// policy and the cross-checker — which [`Engine::close`] (or drop) stops and joins.
pub struct Engine<D: DiskEngine> {
    /// Shared with the background threads, and with snapshots by their reader's lane's
    /// handle (readers on different threads write no count in common).
    pub(crate) core: LaneArc<Core<D>>,
    threads: Vec<JoinHandle<()>>,
    stop: Option<Sender<()>>,
}

/// What [`Engine::write`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Operations that also went to memory.
    pub in_memory: usize,
    /// Regions evicted because of this write (a gap, the memory limit, a disk failure).
    pub evicted: Vec<(RegionId, EvictReason)>,
}

impl<D: DiskEngine> Engine<D> {
    /// An engine over `disk` with the default eviction policy.
    ///
    /// # Errors
    /// [`EngineError::Config`] for an invalid configuration.
    pub fn new(disk: D, config: Config) -> Result<Self, EngineError> {
        Self::with_policy(disk, config, Box::new(ime_eviction::default_policy()))
    }

    /// An engine over `disk` whose policy ticks use `policy`.
    ///
    /// # Errors
    /// [`EngineError::Config`] for an invalid configuration.
    pub fn with_policy(
        disk: D,
        config: Config,
        policy: Box<dyn EvictionPolicy>,
    ) -> Result<Self, EngineError> {
        Self::with_background(disk, config, policy, Background::Threads)
    }

    /// An engine over `disk` whose policy ticks use `policy` and whose background work
    /// runs as `background` says: on its own threads, or — [`Background::Manual`] — only
    /// when the embedder runs it ([`Engine::run_pending`], [`Engine::run_gc`],
    /// [`Engine::run_policy`]), as a deterministic simulator does.
    ///
    /// # Errors
    /// [`EngineError::Config`] for an invalid configuration, [`EngineError::Spawn`] when a
    /// thread cannot start.
    pub fn with_background(
        disk: D,
        config: Config,
        policy: Box<dyn EvictionPolicy>,
        background: Background,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (runner, receivers) = match background {
            Background::Manual => (Runner::Manual(Mutex::default()), None),
            Background::Threads => {
                let (load_tx, load_rx) = unbounded();
                let (delete_tx, delete_rx) = unbounded();
                let runner = Runner::Threads {
                    loads: load_tx,
                    deletes: delete_tx,
                };
                (runner, Some((load_rx, delete_rx)))
            }
        };
        let core = Arc::new(Core::new(disk, config, policy, runner));
        let spawn = |name: &'static str, body: Thread| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(body)
                .map_err(|source| EngineError::Spawn { name, source })
        };
        let mut threads = Vec::new();
        if let Some((load_rx, delete_rx)) = receivers {
            threads.push(spawn("ime-loader", worker(&core, load_rx, false))?);
            threads.push(spawn("ime-deleter", worker(&core, delete_rx, true))?);
            threads.push(spawn("ime-ticker", ticker(Arc::clone(&core), stop_rx))?);
        }
        Ok(Engine {
            core: LaneArc::new(core),
            threads,
            stop: Some(stop_tx),
        })
    }

    /// The disk engine, for reading: snapshots and the latest sequence number. The disk
    /// changes only through [`Engine::write`] and, outside the write path, through a
    /// fence ([`Engine::begin_bypass`]), so that no change can slip behind the cache.
    pub fn disk(&self) -> DiskReader<'_, D> {
        DiskReader::new(&self.core.disk)
    }

    /// Applies one apply round: every segment's applied indexes are checked against the
    /// cache (a gap evicts the region), then the operations go to disk and to the memory
    /// of the batch's cached regions. Writes of different regions run in parallel; while
    /// one is between its two sides, readers of its regions read the state just before it,
    /// or the disk alone if nobody had read them lately (`docs/engine.md`), so that no
    /// snapshot sees a batch on one side only. Memory the
    /// batch would reach in a region its segments do not name is evicted (`WriteFailed`).
    ///
    /// A write that takes memory past the evict threshold queues a policy round, which
    /// evicts (`MemoryPressure`) down to the stop-load threshold off the write path; a
    /// write that would pass the capacity all the same evicts the regions it touches
    /// instead (`MemoryLimitReached`); a disk failure evicts them too and is returned.
    ///
    /// # Errors
    /// [`EngineError::InvalidBatch`] (operations before any `prepare`), [`EngineError::Disk`].
    pub fn write(&self, batch: &HybridWriteBatch) -> Result<WriteOutcome, EngineError> {
        let untagged = || EngineError::InvalidBatch("operations before any prepare(region)".into());
        if batch.headers().any(|h| *h == UNTAGGED) {
            return Err(untagged());
        }
        let (core, disk_batch) = (&self.core, &batch.ops);
        if !disk_batch.is_empty() {
            disk_batch.validate()?;
        }
        let writes = core.writes();
        let mut outcome = WriteOutcome::default();
        let mut fx = Effects::default();
        let (touched, inside) = self.check_applied(batch, &mut outcome, &mut fx);
        let result = if disk_batch.is_empty() {
            Ok(())
        } else {
            let out = (&mut outcome, &mut fx);
            let both = |p: &mut BatchPlan<'_, '_>| self.write_both(batch, p, &touched, out);
            // Inside its cached regions, it reaches no other memory: no plan to check that.
            let written = (core.mem).with_plan_if(!inside, disk_batch.ops(), both);
            written.map_err(EngineError::from).flatten()
        };
        drop(writes); // callbacks and tasks after every lock
        core.finish(fx);
        result.map(|()| outcome)
    }

    /// Entries applied without data (an admin command, an empty entry), as `header` says:
    /// the cache's applied index moves on as with [`Engine::write`]; a report that skips
    /// entries evicts the region (`IndexGap`), counted and logged with both indexes.
    pub fn report_applied(&self, header: ApplyHeader) -> WriteOutcome {
        self.write(HybridWriteBatch::new().prepare(header))
            .unwrap_or_default() // cannot fail
    }

    /// The operations to disk, then to the memory (as `plan`) of the batch's cached regions
    /// (`touched`), memory it would reach in a region it does not name evicted first.
    fn write_both(
        &self,
        batch: &HybridWriteBatch,
        plan: &mut BatchPlan<'_, '_>,
        touched: &[RangeId],
        (outcome, fx): (&mut WriteOutcome, &mut Effects),
    ) -> Result<(), EngineError> {
        let core = &self.core;
        if !plan.reaches_only(touched) {
            let regions: Vec<RegionId> = batch.headers().map(|h| h.region).collect();
            let evicted = core.evict_touched(batch.ops.touched(), WriteFailed, &regions, fx);
            outcome.evicted.extend(evicted);
        }
        // Only a write reaching memory holds stripes. Read lately, it parks a state; else
        // it defers its memory side (not a range delete: a load may refuse it).
        let mut write = (!touched.is_empty())
            .then(|| (core.stripes).begin_write(batch.headers().map(|h| h.region.0)));
        let spare = core.is_manual() || core.stripes.busy() < core.cores; // a core for it
        let defer =
            spare && write.as_ref().is_some_and(|w| w.may_defer()) && !batch.ops.has_range_delete();
        if let Some(write) = &mut write {
            // Writes deferred before it go first (and before a state is parked).
            (!defer).then(|| write.drain(|q| core.apply_deferred(q, fx)));
            let parked = || View::parked(Arc::new(core.disk.snapshot()), core.mem.last_sequence());
            write.publish(parked);
        }
        let applied = core.disk.apply(&batch.ops);
        write.is_none().then(|| core.stripes.changed_outside()); // no stripe covers it
        if let Err(err) = applied {
            (outcome.evicted).extend(core.evict_touched(batch.ops.touched(), WriteFailed, &[], fx));
            return Err(err.into());
        }
        let queue = |q: &mut Deferred| (batch.ops.ops().iter()).for_each(|op| q.0.push(op.into()));
        if let Some((stripe, waiting)) = defer.then(|| write.as_ref()?.defer(queue)).flatten() {
            outcome.in_memory = batch.ops.len();
            core.deferred(stripe, waiting, fx);
        } else if let Some(write) = &write {
            write.drain(|q| core.apply_deferred(q, fx)); // none wait unless `defer` refused
            let written = core.mem.write_planned(plan);
            outcome.in_memory = written.as_ref().map_or(0, |(n, _)| *n);
            let written = written.as_ref().map(|_| touched);
            (outcome.evicted).extend(core.memory_written(written, batch.ops.touched(), fx));
        }
        Ok(())
    }

    /// Every segment's applied indexes go to the controller (a gap evicts the region);
    /// returns [`Engine::cached_ranges`]. A report that only moves indexes on (the
    /// common case) holds the metadata lock shared, beside readers and other writes.
    fn check_applied(
        &self,
        batch: &HybridWriteBatch,
        outcome: &mut WriteOutcome,
        fx: &mut Effects,
    ) -> (SmallVec<[RangeId; 2]>, bool) {
        let shared = self.core.meta_shared();
        if self.core.drained.1.is_empty() && batch.headers().all(|h| shared.ctl.try_on_applied(h)) {
            return Self::cached_ranges(&shared, batch);
        }
        drop(shared); // a gap, a new region or records to hand back: alone, all again
        let mut meta = self.core.meta();
        let mut decisions = Decisions::new();
        self.core.hand_back_drained(&mut meta, &mut decisions);
        for h in batch.headers() {
            if let Some(reason) = meta.ctl.on_applied(h, &mut decisions) {
                outcome.evicted.push((h.region, reason));
            }
        }
        self.core.carry_out(&mut meta, decisions, fx);
        Self::cached_ranges(&meta, batch)
    }

    /// The memory ranges of the regions `batch` writes to, and whether every key of it
    /// lies inside those regions (then it reaches no other region's memory).
    fn cached_ranges(meta: &Meta, batch: &HybridWriteBatch) -> (SmallVec<[RangeId; 2]>, bool) {
        let (mut ranges, mut bounds) = (SmallVec::<[RangeId; 2]>::new(), SmallVec::<[_; 2]>::new());
        for h in batch.headers() {
            let Some(cached) = meta.ctl.cached(h.region) else {
                continue;
            };
            ranges.push(cached.range); // pushed: `extend` costs more for one item
            if let Some(region) = meta.ctl.map().region(h.region) {
                bounds.push(&region.range);
            }
        }
        ranges.dedup();
        let inside = !bounds.is_empty() && batch.ops.within(&bounds);
        (ranges, inside)
    }

    /// Asks for `region` to be cached (`applied_index`: the peer's applied index now), as
    /// the controller admits it ([`ime_controller::Controller::request_load`]): queued for
    /// the loader, held while a fence over its range stands ([`Engine::begin_bypass`]),
    /// deferred until the evicted regions in its way are freed, or already cached.
    ///
    /// # Errors
    /// [`EngineError::LoadRefused`], with the typed [`crate::Refusal`].
    pub fn load_region(
        &self,
        region: Region,
        applied_index: u64,
    ) -> Result<Admission, EngineError> {
        let id = region.id;
        self.core
            .decide(|ctl, env, out| ctl.request_load(region, applied_index, env, out))
            .map_err(|reason| EngineError::LoadRefused { region: id, reason })
    }

    /// Evicts region `id` by hand (`Manual`); `callback` fires once the eviction ends,
    /// whatever path it takes.
    pub fn evict_region(&self, id: RegionId, reason: EvictReason, callback: Option<EvictCallback>) {
        (self.core).decide(|ctl, _, out| ctl.evict(id, reason, callback, out));
    }

    /// Pins `range`: regions inside it are loaded wherever this store leads them, and never
    /// evicted by the policy.
    pub fn pin_range(&self, range: KeyRange) {
        self.core.decide(|ctl, env, out| ctl.pin(range, env, out));
    }

    /// Removes a pin: its regions are evicted (`Manual`) and removed for good, and can be
    /// loaded again later.
    pub fn unpin_range(&self, range: &KeyRange) {
        self.core.decide(|ctl, _, out| ctl.unpin(range, out));
    }

    /// Sets the GC safe point (TiKV's, from PD); the GC tick moves each region's towards it.
    pub fn set_safe_point(&self, ts: u64) {
        self.core.safe_point.fetch_max(ts, Ordering::AcqRel);
    }

    /// Gives the engine a clock in TiKV's timestamp format: GC then collects memory at the
    /// cache's own safe point, `now - gc-run-interval`, whenever it is above the one set
    /// with [`Engine::set_safe_point`] — memory keeps the history recent reads need, the
    /// disk keeps the rest, and reads older than it go to disk (`TooOldRead`). No region's
    /// safe point passes a live snapshot over it or goes back.
    pub fn set_timestamp_source(&self, source: impl TimestampSource + 'static) {
        *crate::shared::lock(&self.core.timestamps) = Some(Arc::new(source));
    }

    /// The approximate size of `region` (bytes of its keys and values, as TiKV's split
    /// checker keeps `region_approximate_size`): the eviction policy weighs the region
    /// with it instead of scanning the disk for an estimate. For regions the engine
    /// knows (from events, writes or loads); others are ignored.
    pub fn set_region_size(&self, region: RegionId, bytes: u64) {
        (self.core).decide(|ctl, _, _| ctl.note_approximate_size(region, bytes));
    }

    /// Every cached region: id, range, epoch, state, safe point, snapshots.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.core.meta_shared().ctl.map().regions()
    }

    /// The listing as JSON.
    pub fn regions_json(&self) -> String {
        serde_json::to_string_pretty(&self.regions())
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Bytes the memory store holds.
    pub fn memory_used(&self) -> u64 {
        self.core.mem.memory_used()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.core.config()
    }

    /// Replaces the configuration at run time: derived thresholds are recomputed and acted
    /// on at once — a capacity below the usage evicts down to it, `enable = false`
    /// evicts everything.
    ///
    /// # Errors
    /// [`EngineError::Config`]; the old configuration stays then.
    pub fn update_config(&self, config: Config) -> Result<(), EngineError> {
        config.validate()?;
        let enable = config.enable;
        self.core.set_config(config);
        if enable {
            self.core.run_policy();
        }
        Ok(())
    }

    /// Prometheus text exposition of the engine's metrics.
    pub fn metrics_text(&self) -> String {
        self.core.refresh_gauges();
        self.core.metrics.text()
    }

    /// The metrics as one collector for the embedder's own Prometheus registry; the ticker
    /// refreshes its gauges every 100 ms (with [`Background::Manual`], `metrics_text` does).
    pub fn metrics(&self) -> ime_metrics::SharedMetrics {
        ime_metrics::SharedMetrics(Arc::clone(&self.core.metrics))
    }

    /// The engine's counters, typed: snapshots by source, evictions by reason, loads,
    /// gaps, events by kind, cross-check differences, compactions, GC collections and
    /// fences (the same counters `metrics_text` exposes).
    pub fn stats(&self) -> Stats {
        self.core.metrics.stats()
    }

    /// The ticker's 100 ms duty, for an engine without it ([`Background::Manual`]): expired
    /// warm-ups dropped, regions unread since the last tick let their writes queue their
    /// memory side again, queued writes applied, spare arrays aged, gauges refreshed.
    pub fn tick(&self) {
        self.core.tick();
    }

    /// Runs one GC round now (the ticker runs them every `gc-run-interval`).
    pub fn run_gc(&self) {
        self.core.run_gc();
    }

    /// Runs one eviction-policy round now (the ticker runs them every
    /// `load-evict-interval`).
    pub fn run_policy(&self) {
        self.core.run_policy();
    }

    /// Waits until the loader and the deleter have nothing left to do, or `timeout`
    /// passes; true when idle. With [`Background::Manual`], runs every waiting task (and
    /// the tasks they lead to) on the calling thread instead.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.core.decide(|_, _, _| ()); // records drained meanwhile are handed back
        self.core.settle_deferred(0..STRIPES); // deferred memory writes applied
        if self.core.is_manual() {
            while self.core.run_pending(0).is_some() {}
            return true;
        }
        self.core.in_flight.wait_idle(timeout)
    }

    /// With [`Background::Manual`]: how many background tasks wait to run (always 0 with
    /// threads).
    pub fn pending_tasks(&self) -> usize {
        self.core.pending_kinds().len()
    }

    /// With [`Background::Manual`]: what each waiting task is, in queue order (empty with
    /// threads), so that a scheduler or a test can choose which to run.
    pub fn pending_kinds(&self) -> Vec<TaskKind> {
        self.core.pending_kinds()
    }

    /// With [`Background::Manual`]: runs the waiting task at `index` (modulo their
    /// number, so a seeded scheduler may pass any number) on the calling thread and says
    /// what it was; a task it leads to (a load's next stage) joins the end of the queue.
    /// `None` when nothing waits (or with threads).
    pub fn run_pending(&self, index: usize) -> Option<TaskKind> {
        self.core.run_pending(index)
    }

    /// Stops the background threads and waits for them. Work still queued is done first.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.core.closed.store(true, Ordering::Release);
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an engine thread panicked");
            }
        }
    }
}

impl<D: DiskEngine> Drop for Engine<D> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A background thread's body.
type Thread = Box<dyn FnOnce() + Send>;

/// The loader's or the deleter's loop: one task at a time until the engine closes; the
/// deleter (`poll`) also applies queued memory writes every millisecond while they come.
fn worker<D: DiskEngine>(core: &Arc<Core<D>>, tasks: Receiver<Task>, poll: bool) -> Thread {
    let core = Arc::clone(core);
    Box::new(move || {
        loop {
            let wait = if poll && core.stripes.polled() { 1 } else { 50 };
            match tasks.recv_timeout(Duration::from_millis(wait)) {
                Ok(task) => {
                    let mut next = Some(task);
                    while let Some(task) = next {
                        next = core.run_task(task);
                    }
                    core.in_flight.done();
                }
                Err(RecvTimeoutError::Timeout) if core.closed.load(Ordering::Acquire) => return,
                Err(RecvTimeoutError::Timeout) if poll => {
                    core.applying(|a| _ = core.stripes.poll(a))
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    })
}

/// The ticker: GC, policy and cross-check rounds at their intervals, until stopped.
fn ticker<D: DiskEngine>(core: Arc<Core<D>>, stop: Receiver<()>) -> Thread {
    Box::new(move || {
        let (mut gc, mut policy, mut check) = (Instant::now(), Instant::now(), Instant::now());
        loop {
            match stop.recv_timeout(Duration::from_millis(100)) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            core.tick();
            let config = core.config();
            if gc.elapsed() >= config.gc_run_interval.0 {
                core.run_gc();
                gc = Instant::now();
            }
            if policy.elapsed() >= config.load_evict_interval.0 {
                core.run_policy();
                policy = Instant::now();
            }
            let every = config.cross_check_interval.0;
            if !every.is_zero() && check.elapsed() >= every {
                core.cross_check(); // differences are counted and logged
                check = Instant::now();
            }
        }
    })
}

impl<D: DiskEngine> Core<D> {
    /// Runs one task; returns its continuation (a load's next stage), if any.
    pub(crate) fn run_task(&self, task: Task) -> Option<Task> {
        match task {
            Task::Load(region) => return self.start_load(region),
            Task::LoadCopy(job) => return self.copy_load(job),
            Task::LoadFinish(job) => self.finish_load(job),
            Task::Compact(range) => return self.compact(range),
            Task::Gc {
                region,
                range,
                safe_point,
            } => self.collect(region, range, safe_point),
            Task::Drain(index) => self.settle_deferred([index]),
            Task::PolicyRound => {
                // Cleared first: a write during the round may ask for another.
                self.pressure_round.store(false, Ordering::Release);
                self.run_policy();
            }
            Task::Delete {
                region,
                handle,
                since,
            } => self.delete(region, handle, since),
        }
        None
    }
}
