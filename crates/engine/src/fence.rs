//! Disk changes outside the write path, fenced: [`BypassFence`] (the embedder's only other
//! handle on the disk is read-only, `ime_disk::DiskReader`).
//!
//! Some data reaches the disk without passing [`Engine::write`]: a Raft snapshot's data, an
//! ingested SST, a delete-range, a merge source's catch-up, a flashback, a destroyed
//! peer's cleanup. A load whose disk snapshot were taken after the event that announces
//! such a change but before the change itself would copy the old data and serve it as
//! current. A fence closes that window by construction:
//!
//! 1. [`Engine::begin_bypass`] handles the event (overlapping regions are evicted) and
//!    fences the ranges the change touches, in one step under the metadata lock;
//! 2. while the fence stands, loads of overlapping ranges — from any source: a direct
//!    request, a policy round, a warm-up, a pin, a deferred reload, a split's children —
//!    stay Pending and take no disk snapshot;
//! 3. the change goes to the disk through the fence ([`BypassFence::write`],
//!    [`BypassFence::ingest`]), which refuses keys outside its ranges;
//! 4. [`BypassFence::finish`] lifts the fence, and the waiting loads start from a disk
//!    that holds the change.
//!
//! A fence dropped without `finish` (an error path) is abandoned: its ranges are evicted
//! again, the loads waiting on it are dropped rather than started, and the log and the
//! `ime_fences_total{result="abandoned"}` counter say so.

use std::sync::Arc;

use ime_controller::FenceId;
use ime_disk::{Cf, DiskEngine, Entry, WriteBatch};
use ime_observer::RaftEvent;
use ime_region::{EvictReason, KeyRange};

use crate::shared::Core;
use crate::{Engine, EngineError};
use ime_metrics::FenceEvent;

/// A disk change outside the write path, under way: loads of the ranges it fences wait
/// until [`BypassFence::finish`]. See the module docs for the protocol.
#[must_use = "a fence holds loads back until it is finished; dropping it abandons it"]
pub struct BypassFence<D: DiskEngine> {
    core: Arc<Core<D>>,
    id: FenceId,
    ranges: Vec<KeyRange>,
    finished: bool,
}

impl<D: DiskEngine> Engine<D> {
    /// Handles `event` — a change whose data reaches the disk outside the write path —
    /// and fences the ranges it touches ([`RaftEvent::bypass_ranges`]) until the returned
    /// fence is finished: every cached region overlapping them is evicted before this
    /// returns, and no load of them takes its disk snapshot meanwhile. Write the change
    /// through the fence, then call [`BypassFence::finish`].
    ///
    /// An event that changes no data outside the write path (a split, a role change) is
    /// handled as [`Engine::on_event`] does and gets a fence over nothing.
    ///
    /// # Errors
    /// As [`Engine::on_event`]; nothing is fenced then.
    pub fn begin_bypass(&self, event: &RaftEvent) -> Result<BypassFence<D>, EngineError> {
        self.core.metrics.event(event.kind());
        self.core.settle_deferred(0..ime_stripes::STRIPES); // as `on_event`
        let id = (self.core).decide(|ctl, env, out| ctl.begin_bypass(event, env, out))?;
        Ok(self.fence(id, event.bypass_ranges()))
    }

    /// Fences `ranges` for a disk change no Raft event announces (an embedder's own
    /// maintenance, or an event that was lost): overlapping cached regions are evicted
    /// with [`EvictReason::UnannouncedChange`] and loads of them wait until the fence is
    /// finished.
    pub fn fence_ranges(&self, ranges: Vec<KeyRange>) -> BypassFence<D> {
        let (fenced, reason) = (ranges.clone(), EvictReason::UnannouncedChange);
        let id = (self.core).decide(|ctl, _, out| ctl.begin_fence(fenced, reason, out));
        self.fence(id, ranges)
    }

    fn fence(&self, id: FenceId, ranges: Vec<KeyRange>) -> BypassFence<D> {
        self.core.metrics.fence(FenceEvent::Begun);
        tracing::debug!(fence = id.0, ?ranges, "fence begun");
        BypassFence {
            core: Arc::clone(self.core.arc()),
            id,
            ranges,
            finished: false,
        }
    }
}

impl<D: DiskEngine> Core<D> {
    /// Lifts fence `id`: loads waiting on it start (unless another fence still covers
    /// them), deferred reloads are retried. An abandoned fence evicts its ranges again and
    /// drops the loads waiting on it instead.
    fn lift_fence(&self, id: FenceId, abandoned: bool) {
        let ranges = self.decide(|ctl, env, out| ctl.lift_fence(id, abandoned, env, out));
        if abandoned {
            tracing::warn!(
                fence = id.0,
                ?ranges,
                "fence dropped unfinished: ranges stay evicted"
            );
            self.metrics.fence(FenceEvent::Abandoned);
        } else {
            self.metrics.fence(FenceEvent::Finished);
        }
    }
}

impl<D: DiskEngine> BypassFence<D> {
    /// The ranges fenced.
    pub fn ranges(&self) -> &[KeyRange] {
        &self.ranges
    }

    /// Writes `batch` to the disk (no load starts meanwhile, as for a write). Every key,
    /// and every range delete, must lie inside the fenced ranges.
    ///
    /// # Errors
    /// [`EngineError::OutsideFence`] (nothing is written then), [`EngineError::Disk`].
    pub fn write(&self, batch: &WriteBatch) -> Result<(), EngineError> {
        for touched in batch.touched() {
            if !self.ranges.iter().any(|f| f.contains(&touched)) {
                return Err(outside(touched.start()));
            }
        }
        let _writes = self.core.writes();
        let done = self.core.disk.apply(batch);
        self.core.stripes.changed_outside();
        Ok(done?)
    }

    /// Ingests `entries` (sorted by key, no duplicates) into `cf`, as an SST ingest does.
    /// Every key must lie inside the fenced ranges.
    ///
    /// # Errors
    /// [`EngineError::OutsideFence`] (nothing is ingested then), [`EngineError::Disk`].
    pub fn ingest(&self, cf: Cf, entries: &[Entry]) -> Result<(), EngineError> {
        for (key, _) in entries {
            self.check_key(key)?;
        }
        let _writes = self.core.writes();
        let done = self.core.disk.ingest(cf, entries);
        self.core.stripes.changed_outside();
        Ok(done?)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), EngineError> {
        if self.ranges.iter().any(|r| r.contains_key(key)) {
            Ok(())
        } else {
            Err(outside(key))
        }
    }

    /// The change is on disk: the fence lifts, and the loads it held back start.
    pub fn finish(mut self) {
        self.finished = true;
        self.core.lift_fence(self.id, false);
    }
}

impl<D: DiskEngine> Drop for BypassFence<D> {
    fn drop(&mut self) {
        if !self.finished {
            self.core.lift_fence(self.id, true);
        }
    }
}

fn outside(key: &[u8]) -> EngineError {
    EngineError::OutsideFence {
        key: key.escape_ascii().to_string(),
    }
}
