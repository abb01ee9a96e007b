//! The background work: the loader's step, GC rounds, policy rounds and the cross-checker.
//! The threads that run them live in `engine.rs`; each step is also callable directly.

use std::collections::HashMap;
use std::sync::{MutexGuard, PoisonError};
use std::time::Instant;

use ime_controller::{Decisions, LoadStart};
use ime_disk::{Cf, DiskEngine, DiskSnapshot, KeyRange, collect, for_each, range_size};
use ime_eviction::{RegionStats, Round};
use ime_memkv::mvcc::compare_with;
use ime_memkv::{LoadedRun, MemError, RangeId};
use ime_region::{RegionId, RegionState};

use crate::EngineError;
use crate::shared::{Core, Effects, LoadJob, Meta, Task};
use ime_metrics::{CollectResult, Difference};

/// Bytes the memory store spends per entry beyond its key and value (its run slot and
/// index share), for size estimates of regions not cached yet.
const ENTRY_OVERHEAD: u64 = 24;

impl<D: DiskEngine> Core<D> {
    /// A load's first stage, for region `id`: Pending to Loading with a disk snapshot
    /// taken under the write lock (writes after it land in memory) — unless a fence over
    /// its range is under way (the snapshot would copy data about to be replaced: the
    /// load waits for the fence), or the load is refused (evicted) or no longer wanted.
    pub(crate) fn start_load(&self, id: RegionId) -> Option<Task> {
        #[cfg(feature = "testing")]
        self.hold_at(crate::LoadStage::BeforeStart);
        let started = Instant::now();
        let env = self.env();
        let mut fx = Effects::default();
        let job = {
            let _no_writes = self.no_writes();
            // A write deferred before the start must not reach the new range: its data is
            // in the snapshot, and a later write of its keys would be under it.
            self.stripes.drain_all(|q| self.apply_deferred(q, &mut fx));
            let mut meta = self.meta();
            let mut decisions = Decisions::new();
            let job = match meta.ctl.start_load(id, env, &mut decisions) {
                LoadStart::Start { ticket, range } => {
                    match self.mem.create_range(range, ticket.region.range.clone()) {
                        Ok(target) => Some(LoadJob {
                            ticket,
                            target,
                            size: meta.ctl.known_size(id),
                            snapshot: self.disk.snapshot(),
                            // Above every view taken before: writes while the region
                            // was not cached moved the disk, not the memory clock.
                            memory_seq: self.mem.next_sequence(),
                            started,
                            copied: None,
                        }),
                        Err(err) => {
                            tracing::error!(region = id.0, %err, "load cannot create its range");
                            meta.ctl.load_not_started(&ticket, &mut decisions);
                            None
                        }
                    }
                }
                LoadStart::Fenced | LoadStart::Refused | LoadStart::Gone => None,
            };
            self.carry_out(&mut meta, decisions, &mut fx);
            job
        };
        self.finish(fx);
        let job = job?;
        let id = (self.next_job).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.jobs().insert(id, job);
        Some(Task::LoadCopy(id))
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<u64, LoadJob<D::Snapshot>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A load's second stage: the region's keys copied at the snapshot's sequence, into runs
    /// (outside every engine lock: writes, reads and events go on meanwhile).
    pub(crate) fn copy_load(&self, job: u64) -> Option<Task> {
        #[cfg(feature = "testing")]
        self.hold_at(crate::LoadStage::AfterStart);
        // Out of the table for the copy, so that no lock is held across it.
        let mut j = self.jobs().remove(&job)?;
        let copied = self.copy_region(&j);
        j.copied = Some(copied.map_err(|e| e.to_string()));
        self.jobs().insert(job, j);
        Some(Task::LoadFinish(job))
    }

    /// A load's last stage: the copy installed, GC at the engine's safe point (when there
    /// is one), then Loading to Active — or the region evicted, if the copy failed, its
    /// range split or went meanwhile, or an eviction came.
    pub(crate) fn finish_load(&self, job: u64) {
        #[cfg(feature = "testing")]
        self.hold_at(crate::LoadStage::Copied);
        let Some(j) = self.jobs().remove(&job) else {
            return;
        };
        let (id, range) = (j.ticket.region.id, j.target.id());
        let copied = (j.copied.unwrap_or_else(|| Err("the copy never ran".into())))
            .and_then(|runs| self.mem.install_loaded(runs).map_err(|e| e.to_string()));
        drop(j.target); // the load is in: the range's compactions may drop deletions again
        let ok = copied.is_ok();
        if let Ok(bytes) = copied {
            self.metrics.bytes_loaded(bytes); // the runs', even if the range split since
            let target = self.gc_target();
            let safe_point = self.meta().ctl.advance_safe_point(id, target);
            // GC only when there is a safe point to collect under: a load is a full
            // rebuild, not worth repeating for nothing.
            if let Some(safe_point) = safe_point.filter(|sp| *sp > 0) {
                self.collect(id, range, safe_point);
            }
        }
        if let Err(err) = &copied {
            tracing::info!(region = id.0, %err, "load stopped");
        }
        self.decide(|ctl, _, out| ctl.finish_load(&j.ticket, ok, out));
        // A load is admitted below the stop-load threshold but may end past the evict
        // threshold: as after a write, a policy round evicts calmly before a write meets
        // the capacity.
        let mut fx = Effects::default();
        self.relieve_pressure(&mut fx);
        self.finish(fx);
        self.metrics.loaded(ok.into(), j.started.elapsed());
    }

    /// Copies the job's region in every column family from its snapshot, as runs to install.
    fn copy_region(&self, j: &LoadJob<D::Snapshot>) -> Result<Vec<LoadedRun>, EngineError> {
        let (region, seq) = (&j.ticket.region.range, j.memory_seq);
        let copy = |cf| {
            // Streamed: each entry goes from the iterator straight into the run.
            let mut loader = self.mem.loader_for(&j.target, cf, seq).expecting(j.size);
            for_each(&j.snapshot, cf, region.clone(), |key, value| {
                loader.push(key, value).map_err(EngineError::from)
            })?;
            Ok(loader.built()?)
        };
        Cf::ALL.into_iter().map(copy).collect()
    }

    /// One GC round: every Active region's safe point moves towards the engine's, and
    /// each region not yet collected at its safe point is collected — including one whose
    /// last collection was lost (a concurrent compaction installed first, or a split
    /// moved the range: the children inherit the parent's mark and are collected here).
    /// With threads the collections run on the calling thread; with
    /// [`crate::Background::Manual`] they are queued as tasks.
    pub(crate) fn run_gc(&self) {
        self.settle_deferred(0..ime_stripes::STRIPES); // collects what the disk holds
        let target = self.gc_target();
        let work: Vec<Task> = self
            .meta()
            .ctl
            .gc_targets(target)
            .into_iter()
            .map(|t| Task::Gc {
                region: t.region,
                range: t.range,
                safe_point: t.safe_point,
            })
            .collect();
        if self.is_manual() {
            self.finish(Effects {
                tasks: work,
                ..Effects::default()
            });
            return;
        }
        for task in work {
            let _none = self.run_task(task);
        }
    }

    /// Collects `region`'s `range` at `safe_point` and marks it collected once the work
    /// has installed. A compaction that loses a race with another is tried again at once
    /// (twice at most); a range that is gone (split or evicted) is left to the next round,
    /// which finds the children.
    pub(crate) fn collect(&self, region: RegionId, range: RangeId, safe_point: u64) {
        for _ in 0..3 {
            let started = Instant::now();
            let result = self.mem.compact(range, Some(safe_point));
            self.metrics.gc_took(started.elapsed());
            match result {
                Ok(stats) if stats.installed => {
                    self.metrics.gc_round(CollectResult::Collected);
                    self.meta().ctl.mark_collected(region, range, safe_point);
                    return;
                }
                Ok(_) => self.metrics.gc_round(CollectResult::Lost),
                Err(MemError::NoSuchRange(_)) => {
                    self.metrics.gc_round(CollectResult::RangeGone);
                    return;
                }
                Err(err) => {
                    self.metrics.gc_round(CollectResult::Failed);
                    tracing::warn!(region = region.0, %err, "GC compaction failed");
                    return;
                }
            }
        }
    }

    /// One policy round: statistics of every known region in, evictions and loads out.
    pub(crate) fn run_policy(&self) {
        // Sizes of regions never cached, from their bytes on disk: scanned without the
        // metadata lock, so reads and writes go on meanwhile.
        let unsized_regions = {
            let meta = self.meta_shared();
            if !meta.ctl.config().enable {
                return;
            }
            meta.ctl.unsized_regions()
        };
        let sizes: Vec<(RegionId, u64)> = unsized_regions
            .into_iter()
            .map(|(id, range)| (id, self.estimate_size(&range)))
            .collect();
        self.decide_with(|meta, env, out| {
            for (id, size) in sizes {
                meta.ctl.note_estimate(id, size);
            }
            let stats = self.policy_stats(meta);
            let round = Round {
                now: env.now.as_secs(),
                memory_used: env.memory_used,
                regions: &stats,
                thresholds: meta.ctl.config().thresholds(),
            };
            let decision = crate::shared::lock(&self.policy).decide(&round);
            meta.ctl.apply_policy(decision, env, out);
        });
    }

    /// The policy's view of every known region: the controller's, with the read counters
    /// (taken, so they start again from zero) and memory sizes the engine keeps.
    fn policy_stats(&self, meta: &mut Meta) -> Vec<RegionStats> {
        meta.counters.retain(|id, _| meta.ctl.peer(*id).is_some());
        let counters = &meta.counters;
        meta.ctl.policy_stats(
            |range| self.mem.range_memory(range).ok(),
            |id| counters.get(&id).map_or((0, 0, 0), |c| c.take()),
        )
    }

    /// What a region not cached yet would take in memory, from its bytes on disk (the
    /// store's overhead per entry included), so that the policy's projections hold.
    fn estimate_size(&self, range: &KeyRange) -> u64 {
        range_size(&self.disk.snapshot(), range)
            .map_or(0, |(entries, bytes)| bytes + entries * ENTRY_OVERHEAD)
    }

    /// Compares every Active region's memory with the disk at one sequence number: the
    /// lock column family entry by entry, the write column family as MVCC reads see it
    /// above the region's safe point (GC may have dropped older versions from memory
    /// only), and the default-CF values those reads return.
    pub(crate) fn cross_check(&self) -> Vec<Difference> {
        let mut fx = Effects::default();
        let pairs = {
            let _no_writes = self.no_writes();
            self.stripes.drain_all(|q| self.apply_deferred(q, &mut fx)); // memory as the disk has it
            let meta = self.meta_shared();
            let mut pairs = Vec::new();
            for info in meta.ctl.map().regions() {
                if info.state != RegionState::Active {
                    continue;
                }
                let Some(cached) = meta.ctl.cached(info.region.id) else {
                    continue;
                };
                let disk = self.disk.snapshot();
                let last = self.mem.last_sequence();
                let Ok(memory) = self.mem.snapshot(cached.range, last) else {
                    continue;
                };
                pairs.push((info, memory, disk));
            }
            pairs
        };
        self.finish(fx);
        let differences: Vec<Difference> = pairs
            .into_iter()
            .flat_map(|(info, memory, disk)| check_region(&info, &memory, &disk))
            .collect();
        self.metrics.differences(&differences);
        differences
    }
}

/// One region's differences, as `compare_copies` finds them.
fn check_region<S: DiskSnapshot>(
    info: &ime_region::RegionInfo,
    memory: &ime_memkv::Snapshot,
    disk: &S,
) -> Vec<Difference> {
    let bounds = &info.region.range;
    let entries = |cf: Cf| collect(disk, cf, bounds.clone()).ok();
    let value = |k: &[u8]| disk.get(Cf::Default, k).ok().flatten();
    compare_with(memory, bounds, info.safe_point, entries, value)
        .into_iter()
        .map(|(cf, (key, memory, disk))| Difference {
            region: info.region.id,
            cf,
            key,
            memory,
            disk,
        })
        .collect()
}
