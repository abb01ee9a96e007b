//! The read path: [`HybridSnapshot`] — a disk snapshot plus, when memory may serve the
//! region, a memory snapshot holding the same writes of it — and its iterators.

use std::sync::Arc;

use ime_controller::Fallback;
use ime_disk::{Cf, DiskEngine, DiskError, DiskIterator, DiskSnapshot, KeyRange};
use ime_memkv::{RangeId, SnapshotIter};
use ime_region::{ReadRequest, RegionId, SnapshotTicket};
use ime_stripes::View;

use crate::shared::Core;
use crate::{Engine, EngineError};
use ime_metrics::{ReadCounters, Source};

/// The memory side of a snapshot: the store's snapshot, the region's range, and the
/// registration that holds back GC and deletion until it drops.
struct MemoryView<D: DiskEngine> {
    snapshot: Option<ime_memkv::Snapshot>,
    ticket: Option<SnapshotTicket>,
    core: Arc<Core<D>>,
}

impl<D: DiskEngine> Drop for MemoryView<D> {
    fn drop(&mut self) {
        // The store's snapshot first: if this was the last reader of an evicted region,
        // the deleter (not this reader) frees the memory.
        drop(self.snapshot.take());
        // No metadata lock: the ticket goes back to its region's own record.
        match self.ticket.take().map(SnapshotTicket::release) {
            Some(Ok(Some(drained))) => self.core.hand_back(drained),
            Some(Err(err)) => tracing::error!(%err, "snapshot release refused"),
            Some(Ok(None)) | None => {}
        }
    }
}

/// A consistent view of one region at one disk sequence number and one read_ts: served
/// from memory when the cache may serve it, else from disk — with the same answers.
pub struct HybridSnapshot<D: DiskEngine> {
    region: RegionId,
    read_ts: u64,
    // Field order: the memory view (and its registration) drops before the disk snapshot.
    memory: Option<MemoryView<D>>,
    fallback: Option<Fallback>,
    disk: Arc<D::Snapshot>,
    counters: Option<Arc<ReadCounters>>,
}

impl<D: DiskEngine> Engine<D> {
    /// A snapshot for reading region `region` as `request` says: at `read_ts`, by a peer
    /// whose view of the region is `epoch_version` and `applied_index`.
    ///
    /// Served from memory only when the region is Active, its cached epoch version equals
    /// the caller's, it holds every entry up to the caller's applied index, and `read_ts`
    /// is above its safe point; otherwise from disk, and [`HybridSnapshot::fallback`] says
    /// why. A caller ahead of the cache reveals a missed event: the region is evicted
    /// (`EpochGap` / `IndexGap`).
    pub fn snapshot(&self, region: RegionId, request: ReadRequest) -> HybridSnapshot<D> {
        let core = &self.core;
        // The view outside the lock (its disk snapshot is the slow part); a load that ended
        // since refuses it a memory snapshot, and it is taken again (docs/engine.md).
        let mut view = core.view(region);
        // Shared: the snapshot registers on its region's own record. A region without
        // read counters yet, or a request that reveals a gap, takes the lock alone.
        let shared = {
            let meta = core.meta_shared();
            let counters = meta.counters.get(&region).cloned();
            (counters.is_some() || meta.ctl.peer(region).is_none())
                .then(|| meta.ctl.try_acquire_snapshot(region, request))
                .flatten()
                .map(|answer| (counters, self.memory_view(answer, region, &mut view)))
        };
        let (counters, (memory, fallback)) = shared.unwrap_or_else(|| {
            core.decide_with(|meta, _, out| {
                let answer = meta.ctl.acquire_snapshot(region, request, out);
                (
                    meta.counters(region),
                    self.memory_view(answer, region, &mut view),
                )
            })
        });
        if let Some(c) = &counters {
            c.read();
        }
        core.metrics.served(Source::of(fallback.as_ref()));
        HybridSnapshot {
            region,
            read_ts: request.read_ts,
            memory,
            fallback,
            disk: view.disk,
            counters,
        }
    }

    /// The memory side of a snapshot the controller granted (the caller holds the
    /// metadata lock, shared or alone, so the range cannot go meanwhile); the ticket goes
    /// back when the memory store refuses even a fresh view.
    fn memory_view(
        &self,
        answer: Result<(SnapshotTicket, RangeId), Fallback>,
        region: RegionId,
        view: &mut View<D::Snapshot>,
    ) -> (Option<MemoryView<D>>, Option<Fallback>) {
        let core = &self.core;
        let (ticket, range) = match answer {
            Ok(granted) => granted,
            Err(fallback) => return (None, Some(fallback)),
        };
        let snapshot = core.mem.snapshot(range, view.memory).or_else(|_| {
            *view = core.view(region);
            core.mem.snapshot(range, view.memory)
        });
        match snapshot {
            Ok(snapshot) => {
                let memory = MemoryView {
                    snapshot: Some(snapshot),
                    ticket: Some(ticket),
                    core: Arc::clone(core),
                };
                (Some(memory), None)
            }
            Err(_) => {
                // The region is Active (the lock is held): this release drains nothing.
                if let Err(err) = ticket.release() {
                    tracing::error!(%err, "snapshot release refused");
                }
                (None, Some(Fallback::MemoryBehind))
            }
        }
    }
}

impl<D: DiskEngine> HybridSnapshot<D> {
    /// The region read.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// The MVCC read timestamp.
    pub fn read_ts(&self) -> u64 {
        self.read_ts
    }

    /// The disk snapshot's sequence number.
    pub fn sequence(&self) -> u64 {
        self.disk.sequence()
    }

    /// True when reads are served from memory.
    pub fn from_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// Why reads are served from disk, if they are.
    pub fn fallback(&self) -> Option<Fallback> {
        self.fallback
    }

    /// The disk snapshot underneath, as memory for the region (for cross-checks).
    pub fn disk(&self) -> &D::Snapshot {
        &self.disk
    }

    /// The raw value of `key` in `cf`.
    ///
    /// # Errors
    /// [`EngineError::Disk`] when the disk read fails.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match self.memory_for_key(key) {
            Some(snapshot) => Ok(snapshot.get(cf, key)),
            None => Ok(self.disk.get(cf, key)?),
        }
    }

    /// A raw iterator over `cf` within `bounds`, not positioned yet. Bounds outside the
    /// region are read from the disk snapshot.
    ///
    /// # Errors
    /// [`EngineError::Disk`] or [`EngineError::Mem`].
    pub fn iter(&self, cf: Cf, bounds: KeyRange) -> Result<HybridIter<'_>, EngineError> {
        match self.memory_for(&bounds) {
            Some(snapshot) => Ok(HybridIter::Memory(snapshot.iter(cf, bounds)?)),
            None => Ok(HybridIter::Disk(self.disk.iter(cf, bounds)?)),
        }
    }

    /// Adds MVCC work to the region's statistics (for the eviction policy).
    pub(crate) fn note_work(&self, scanned: u64, returned: u64) {
        if let Some(c) = &self.counters {
            c.scanned(scanned, returned);
        }
    }

    /// The memory snapshot, when it serves `bounds` (inside the region).
    pub(crate) fn memory_for(&self, bounds: &KeyRange) -> Option<&ime_memkv::Snapshot> {
        let snapshot = self.memory.as_ref()?.snapshot.as_ref()?;
        snapshot.bounds().contains(bounds).then_some(snapshot)
    }

    fn memory_for_key(&self, key: &[u8]) -> Option<&ime_memkv::Snapshot> {
        let snapshot = self.memory.as_ref()?.snapshot.as_ref()?;
        snapshot.bounds().contains_key(key).then_some(snapshot)
    }
}

/// A cursor over a [`HybridSnapshot`]: the memory store's or the disk's, with one
/// interface ([`DiskIterator`]).
#[allow(
    clippy::large_enum_variant,
    reason = "one per scan, on the stack; boxing would allocate on every memory scan"
)]
pub enum HybridIter<'a> {
    /// Served from memory.
    Memory(SnapshotIter),
    /// Served from disk.
    Disk(Box<dyn DiskIterator + 'a>),
}

impl DiskIterator for HybridIter<'_> {
    fn seek_to_first(&mut self) {
        match self {
            HybridIter::Memory(it) => it.seek_to_first(),
            HybridIter::Disk(it) => it.seek_to_first(),
        }
    }

    fn seek_to_last(&mut self) {
        match self {
            HybridIter::Memory(it) => it.seek_to_last(),
            HybridIter::Disk(it) => it.seek_to_last(),
        }
    }

    fn seek(&mut self, key: &[u8]) {
        match self {
            HybridIter::Memory(it) => it.seek(key),
            HybridIter::Disk(it) => it.seek(key),
        }
    }

    fn seek_for_prev(&mut self, key: &[u8]) {
        match self {
            HybridIter::Memory(it) => it.seek_for_prev(key),
            HybridIter::Disk(it) => it.seek_for_prev(key),
        }
    }

    fn next(&mut self) {
        match self {
            HybridIter::Memory(it) => it.next(),
            HybridIter::Disk(it) => it.next(),
        }
    }

    fn prev(&mut self) {
        match self {
            HybridIter::Memory(it) => it.prev(),
            HybridIter::Disk(it) => it.prev(),
        }
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        match self {
            HybridIter::Memory(it) => it.entry(),
            HybridIter::Disk(it) => it.entry(),
        }
    }

    fn status(&self) -> Result<(), DiskError> {
        match self {
            HybridIter::Memory(_) => Ok(()),
            HybridIter::Disk(it) => it.status(),
        }
    }
}
