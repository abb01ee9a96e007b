//! The read path: [`HybridSnapshot`] — a disk snapshot plus, when memory may serve the
//! region, a memory snapshot holding the same writes of it — and its iterators.

use std::sync::Arc;

use ime_controller::Fallback;
use ime_disk::{Cf, DiskEngine, DiskError, DiskIterator, DiskSnapshot, KeyRange};
use ime_memkv::{RangeId, SnapshotIter};
use ime_region::{ReadRequest, RegionId, SnapshotTicket};
use ime_stripes::View;
use ime_types::LaneRef;

use crate::shared::{Core, Meta};
use crate::{Engine, EngineError};
use ime_metrics::{IterWork, MvccWork, ReadLatencies, ReadOp, Source, WorkTally};
use std::time::Instant;

/// The memory side of a snapshot: the store's snapshot and the registration that holds
/// back GC and deletion until the snapshot drops.
struct MemoryView {
    snapshot: ime_memkv::Snapshot,
    ticket: SnapshotTicket,
}

impl<D: DiskEngine> Drop for HybridSnapshot<D> {
    fn drop(&mut self) {
        // The reads' work goes to the region's counters once, as the snapshot ends.
        let MvccWork { scanned, returned } = self.work.total();
        if scanned + returned > 0
            && let Some(c) = self.core.meta_shared().counters.get(&self.region)
        {
            c.scanned(scanned, returned);
        }
        let Some(MemoryView { snapshot, ticket }) = self.memory.take() else {
            return;
        };
        if !self.work.was_read() {
            self.core.metrics.wasted_snapshot();
        }
        // The store's snapshot first: if this was the last reader of an evicted region,
        // the deleter (not this reader) frees the memory.
        drop(snapshot);
        // No metadata lock: the ticket goes back to its region's own record.
        match ticket.release() {
            Ok(Some(drained)) => self.core.hand_back(drained),
            Err(err) => tracing::error!(%err, "snapshot release refused"),
            Ok(None) => {}
        }
    }
}

/// A consistent view of one region at one disk sequence number and one read_ts: served
/// from memory when the cache may serve it, else from disk — with the same answers.
pub struct HybridSnapshot<D: DiskEngine> {
    region: RegionId,
    read_ts: u64,
    /// Dropped (and its registration released) first, before the disk snapshot.
    memory: Option<MemoryView>,
    fallback: Option<Fallback>,
    disk: LaneRef<D::Snapshot>,
    work: WorkTally,
    /// The region's range when memory does not serve it (else memory's bounds): scans
    /// are clamped to it.
    range: Option<KeyRange>,
    core: LaneRef<Core<D>>,
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
        let (core, started) = (&self.core, ReadLatencies::start(ReadOp::Snapshot));
        // The view outside the lock (its disk snapshot is the slow part); a load that ended
        // since refuses it a memory snapshot, and it is taken again (docs/engine.md).
        let mut view = core.view(region, false);
        // Shared: the snapshot registers on its region's own record. A region without
        // read counters yet, or a request that reveals a gap, takes the lock alone.
        let at = (region, request.epoch_version);
        let shared = {
            let meta = core.meta_shared();
            let counters = meta.counters.get(&region);
            (counters.is_some() || meta.ctl.peer(region).is_none())
                .then(|| meta.ctl.try_acquire_snapshot(region, request))
                .flatten()
                .map(|answer| {
                    counters.inspect(|c| c.read());
                    self.memory_view(&meta, answer, at, &mut view)
                })
        };
        let (memory, fallback, range) = shared.unwrap_or_else(|| {
            core.decide_with(|meta, _, out| {
                let answer = meta.ctl.acquire_snapshot(region, request, out);
                meta.counters(region).inspect(|c| c.read());
                self.memory_view(meta, answer, at, &mut view)
            })
        });
        let work = WorkTally::default();
        (core.metrics).served_since(Source::of(fallback.as_ref()), started);
        // A parked view may miss writes of regions without memory: disk reads take it now.
        let fresh = (fallback.is_some() && view.parked)
            .then(|| LaneRef::new(Arc::new(core.disk.snapshot())));
        HybridSnapshot {
            region,
            read_ts: request.read_ts,
            memory,
            fallback,
            disk: fresh.unwrap_or(view.disk),
            work,
            range,
            core: core.handle(),
        }
    }

    /// The memory side of a snapshot the controller granted (the caller holds the
    /// metadata lock, shared or alone, so the range cannot go meanwhile); the ticket goes
    /// back when the memory store refuses even a fresh view. Without memory, the region's
    /// range at the reader's epoch, as the engine knows it (scans are clamped to it).
    fn memory_view(
        &self,
        meta: &Meta,
        answer: Result<(SnapshotTicket, RangeId), Fallback>,
        (region, version): (RegionId, u64),
        view: &mut View<D::Snapshot>,
    ) -> Served {
        let core = &self.core;
        let range = || Some(meta.ctl.region_at(region, version)?.range.clone());
        let (ticket, memory_range) = match answer {
            Ok(granted) => granted,
            Err(fallback) => return (None, Some(fallback), range()),
        };
        // No memory sequence: a write of the region was in flight and parked no state.
        let at = |v: &View<_>| (v.memory).and_then(|m| core.mem.snapshot(memory_range, m).ok());
        let snapshot = at(view).or_else(|| {
            *view = core.view(region, true);
            at(view)
        });
        match snapshot {
            Some(snapshot) => (Some(MemoryView { snapshot, ticket }), None, None),
            None => {
                // The region is Active (the lock is held): this release drains nothing.
                if let Err(err) = ticket.release() {
                    tracing::error!(%err, "snapshot release refused");
                }
                (None, Some(Fallback::MemoryBehind), range())
            }
        }
    }
}

/// A snapshot's memory side, why it has none, and the region's range when it has none.
type Served = (Option<MemoryView>, Option<Fallback>, Option<KeyRange>);

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
        self.work.touch();
        match self.memory_for_key(key) {
            Some(snapshot) => Ok(snapshot.get(cf, key)),
            None => Ok(self.disk.get(cf, key)?),
        }
    }

    /// A raw iterator over `cf` within `bounds`, not positioned yet. Bounds outside the
    /// region are read from the disk snapshot. The entries it stops at count as MVCC work
    /// ([`HybridSnapshot::mvcc_work`], and the region's statistics the eviction policy
    /// weighs): each a version touched, each new user key in the write column family a
    /// key returned.
    ///
    /// # Errors
    /// [`EngineError::Disk`] or [`EngineError::Mem`].
    pub fn iter(&self, cf: Cf, bounds: KeyRange) -> Result<HybridIter<'_>, EngineError> {
        let mut it = self.cursor(cf, bounds)?;
        it.work = Some((IterWork::new(cf == Cf::Write), &self.work));
        Ok(it)
    }

    /// The MVCC work of this snapshot's reads so far: versions touched, keys returned.
    pub fn mvcc_work(&self) -> MvccWork {
        self.work.total()
    }

    /// An iterator that counts nothing (the MVCC reads count their own work).
    pub(crate) fn cursor(&self, cf: Cf, bounds: KeyRange) -> Result<HybridIter<'_>, EngineError> {
        let side = match self.memory_for(&bounds) {
            Some(snapshot) => Side::Memory(snapshot.iter(cf, bounds)?),
            None => Side::Disk(self.disk.iter(cf, bounds)?),
        };
        Ok(HybridIter { side, work: None })
    }

    /// Adds an MVCC read's work to the snapshot's and its region's statistics, and its
    /// time since `started` (when it was timed) to the latencies of `op` from this
    /// snapshot's source.
    pub(crate) fn note_work(
        &self,
        (scanned, returned): (u64, u64),
        op: ReadOp,
        started: Option<Instant>,
    ) {
        self.work.add(scanned, returned);
        self.core.metrics.read_took(op, self.from_memory(), started);
    }

    /// `bounds` within the region (memory's bounds, or the range known at the reader's
    /// epoch): `None` when none of it is in the region; unchanged when the range is unknown.
    pub(crate) fn clamp(&self, bounds: KeyRange) -> Option<KeyRange> {
        let memory = self.memory.as_ref().map(|m| &m.snapshot);
        match memory.map(|m| m.bounds()).or(self.range.as_ref()) {
            Some(range) => bounds.intersect(range),
            None => Some(bounds),
        }
    }

    /// The memory snapshot, when it serves `bounds` (inside the region).
    pub(crate) fn memory_for(&self, bounds: &KeyRange) -> Option<&ime_memkv::Snapshot> {
        let snapshot = &self.memory.as_ref()?.snapshot;
        snapshot.bounds().contains(bounds).then_some(snapshot)
    }

    fn memory_for_key(&self, key: &[u8]) -> Option<&ime_memkv::Snapshot> {
        let snapshot = &self.memory.as_ref()?.snapshot;
        snapshot.bounds().contains_key(key).then_some(snapshot)
    }
}

/// A raw iterator over a [`HybridSnapshot`], the memory store's or the disk's behind one
/// interface ([`DiskIterator`]); an embedder's iterator counts its work when it drops.
pub struct HybridIter<'a> {
    side: Side<'a>,
    /// The work so far and the snapshot's tally it goes to (`None`: the MVCC reads'
    /// cursors, which count their own).
    work: Option<(IterWork, &'a WorkTally)>,
}

/// The memory store's iterator or the disk's.
#[allow(
    clippy::large_enum_variant,
    reason = "one per scan, on the stack; boxing would allocate on every memory scan"
)]
enum Side<'a> {
    Memory(SnapshotIter),
    Disk(Box<dyn DiskIterator + 'a>),
}

/// Calls a method on whichever side `$side` is.
macro_rules! on_side {
    ($side:expr, $($call:tt)*) => {
        match $side {
            Side::Memory(it) => it.$($call)*,
            Side::Disk(it) => it.$($call)*,
        }
    };
}

impl HybridIter<'_> {
    /// True when memory serves it.
    pub fn from_memory(&self) -> bool {
        matches!(self.side, Side::Memory(_))
    }

    /// Counts the entry a move stopped at, when it counts.
    fn counted(&mut self) {
        let Some((work, _)) = &mut self.work else {
            return;
        };
        if let Some((key, _)) = on_side!(&self.side, entry()) {
            work.saw(key);
        }
    }
}

impl Drop for HybridIter<'_> {
    fn drop(&mut self) {
        if let Some((work, tally)) = &self.work {
            let MvccWork { scanned, returned } = work.total();
            tally.add(scanned, returned);
        }
    }
}

impl DiskIterator for HybridIter<'_> {
    fn seek_to_first(&mut self) {
        on_side!(&mut self.side, seek_to_first());
        self.counted();
    }
    fn seek_to_last(&mut self) {
        on_side!(&mut self.side, seek_to_last());
        self.counted();
    }
    fn seek(&mut self, key: &[u8]) {
        on_side!(&mut self.side, seek(key));
        self.counted();
    }
    fn seek_for_prev(&mut self, key: &[u8]) {
        on_side!(&mut self.side, seek_for_prev(key));
        self.counted();
    }
    fn next(&mut self) {
        on_side!(&mut self.side, next());
        self.counted();
    }
    fn prev(&mut self) {
        on_side!(&mut self.side, prev());
        self.counted();
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        on_side!(&self.side, entry())
    }

    fn status(&self) -> Result<(), DiskError> {
        match &self.side {
            Side::Memory(_) => Ok(()),
            Side::Disk(it) => it.status(),
        }
    }
}

impl ime_memkv::mvcc::Cursor for HybridIter<'_> {
    fn next(&mut self) {
        DiskIterator::next(self);
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        DiskIterator::entry(self)
    }
}
