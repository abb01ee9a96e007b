//! [`MemKv`]: ranges of layered column families, written in sequence order, read through
//! snapshots.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard};

use arc_swap::ArcSwap;
use ime_types::{LaneArc, LaneRef};
use smallvec::SmallVec;

use crate::layer::{Run, RunBuilder, RunEntry};
use crate::memory::MemoryTracker;
use crate::memtable::{Inserter, MAX_KEY_LEN, MAX_VALUE_LEN, Memtable, entry_estimate};
use crate::snapshot::{Snapshot, merged_keys};
use crate::{Cf, KeyRange, MemError, Op, OpBuffer, OpRef, RangeId, WriteBatch};

/// The layers of one column family: two runs (the base, and the delta that compactions
/// fold the memtables into until it has grown to half the base), memtables frozen (for a
/// compaction in progress, or inherited from a split parent), oldest first, and the
/// active memtable. A key's entries may lie in any of them; the newest sequence wins.
#[derive(Clone, Debug)]
pub(crate) struct CfLayers {
    pub(crate) run: Arc<Run>,
    pub(crate) delta: Arc<Run>,
    pub(crate) frozen: Vec<Arc<Memtable>>,
    pub(crate) active: Arc<Memtable>,
}

/// A range's layers at one moment, in every column family: what a snapshot holds, as
/// one `Arc` (so taking and dropping a snapshot touches one shared counter, not one per
/// layer). Replaced whole when the layers change (a load, a freeze, a compaction); the
/// active memtables inside take writes in place. Aligned to a cache line, so that the
/// reference count every snapshot moves lies on a line of its own, apart from the
/// layers every reader reads.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Version {
    pub(crate) bounds: Arc<KeyRange>,
    pub(crate) cfs: [CfLayers; 3],
}

/// One range's data.
#[derive(Debug)]
pub(crate) struct RangeData {
    pub(crate) id: RangeId,
    pub(crate) bounds: Arc<KeyRange>,
    /// Read without a lock; replaced only under `writer`, so updates never race one
    /// another. A snapshot holds it by its thread's lane's handle (`LaneArc`), so that
    /// readers of the range on different threads write no count in common.
    version: ArcSwap<LaneArc<Version>>,
    /// Snapshots below this sequence are refused: a compaction dropped shadowed versions,
    /// or a load put entries at it.
    pub(crate) compacted_seq: AtomicU64,
    /// Held by a write to the range for its inserts, and by whatever changes its layers
    /// (a load, a freeze, an install, a split): writes to different ranges do not wait
    /// for one another.
    writer: Mutex<()>,
    /// While a write to the range is in flight, a sequence number at or below its first
    /// one (taken before it takes its numbers); [`IDLE`] otherwise. A snapshot below it
    /// needs no lock: the write in flight is above it.
    writing: AtomicU64,
    /// The ranges a split made of this one, in key order (set once, by the split, under
    /// `writer`): a load's run that was copied for this range goes to them. Held only
    /// while something holds this range (a load under way): a range that left the
    /// table is dropped once its last holder is done.
    split_into: OnceLock<Vec<Arc<RangeData>>>,
    /// Loads under way into the range, or into the range it was split from (shared with
    /// it, and with the other pieces): while one is, a compaction keeps deletions, so
    /// that the load's older entries stay hidden under the writes that came after them.
    pub(crate) loads: Arc<AtomicUsize>,
}

/// [`RangeData::writing`] when no write to the range is in flight.
const IDLE: u64 = u64::MAX;

impl RangeData {
    fn new(
        id: RangeId,
        bounds: KeyRange,
        cfs: [CfLayers; 3],
        compacted_seq: u64,
        loads: Arc<AtomicUsize>,
    ) -> Self {
        let bounds = Arc::new(bounds);
        let version = Version {
            bounds: Arc::clone(&bounds),
            cfs,
        };
        RangeData {
            id,
            bounds,
            version: ArcSwap::from_pointee(LaneArc::new(Arc::new(version))),
            compacted_seq: AtomicU64::new(compacted_seq),
            writer: Mutex::new(()),
            writing: AtomicU64::new(IDLE),
            split_into: OnceLock::new(),
            loads,
        }
    }

    /// Its writer lock.
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current version.
    pub(crate) fn version(&self) -> Arc<Version> {
        Arc::clone(self.version.load().arc())
    }

    /// The current version, by this thread's lane's handle (what a snapshot holds).
    pub(crate) fn version_by_lane(&self) -> LaneRef<Version> {
        self.version.load().handle()
    }

    /// The layers of `cf` now.
    pub(crate) fn layers(&self, cf: Cf) -> CfLayers {
        self.version().cfs[cf.index()].clone()
    }

    /// Bytes charged for the range's layers, every column family.
    pub(crate) fn charged(&self) -> u64 {
        Cf::ALL
            .into_iter()
            .map(|cf| {
                let layers = self.layers(cf);
                let mems: u64 = layers.frozen.iter().map(|m| m.charged()).sum();
                layers.run.charged() + layers.delta.charged() + mems + layers.active.charged()
            })
            .sum()
    }

    /// Replaces the version by `change` applied to a copy of its layers; returns what
    /// `change` returns. The caller holds the range's writer lock (`_writer`), which
    /// orders every update.
    fn update<T>(
        &self,
        _writer: &MutexGuard<'_, ()>,
        change: impl FnOnce(&mut [CfLayers; 3]) -> T,
    ) -> T {
        let mut cfs = self.version.load().cfs.clone();
        let out = change(&mut cfs);
        let version = Version {
            bounds: Arc::clone(&self.bounds),
            cfs,
        };
        self.version
            .store(Arc::new(LaneArc::new(Arc::new(version))));
        out
    }
}

/// The ranges held, by id and by start key (ranges never overlap, so the range holding
/// a key is the last one starting at or before it).
#[derive(Debug, Default)]
struct RangeTable {
    by_id: BTreeMap<RangeId, Arc<RangeData>>,
    by_start: BTreeMap<Vec<u8>, Arc<RangeData>>,
    /// Counts the table's changes: a plan made at the same count is still the table's.
    generation: u64,
}

impl RangeTable {
    fn insert(&mut self, range: Arc<RangeData>) {
        self.generation += 1;
        self.by_start
            .insert(range.bounds.start().to_vec(), Arc::clone(&range));
        self.by_id.insert(range.id, range);
    }

    fn remove(&mut self, id: RangeId) -> Option<Arc<RangeData>> {
        let range = self.by_id.remove(&id)?;
        self.generation += 1;
        self.by_start.remove(range.bounds.start());
        Some(range)
    }

    /// Whether `range` is still the table's range of its id (not split or dropped since
    /// it was looked up).
    fn holds(&self, range: &Arc<RangeData>) -> bool {
        (self.by_id.get(&range.id)).is_some_and(|r| Arc::ptr_eq(r, range))
    }

    /// The range holding `key`, in O(log n).
    fn holder(&self, key: &[u8]) -> Option<&Arc<RangeData>> {
        let (_, range) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        range.bounds.contains_key(key).then_some(range)
    }

    /// The ranges overlapping `bounds`, in key order.
    fn overlapping<'a>(
        &'a self,
        bounds: &'a KeyRange,
    ) -> impl Iterator<Item = &'a Arc<RangeData>> + 'a {
        let first = self
            .holder(bounds.start())
            .map_or(bounds.start(), |r| r.bounds.start());
        self.by_start
            .range::<[u8], _>((Bound::Included(first), Bound::Unbounded))
            .map(|(_, range)| range)
            .take_while(|range| bounds.end().is_none_or(|end| range.bounds.start() < end))
            .filter(|range| range.bounds.overlaps(bounds))
    }
}

/// Settings of a [`MemKv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemConfig {
    /// Writes that would pass this many bytes are refused.
    pub hard_limit: u64,
    /// At this many bytes, [`MemKv::over_soft_limit`] asks for eviction.
    pub soft_limit: u64,
}

impl MemConfig {
    /// Writes refused past `hard_limit` bytes; eviction asked for from `soft_limit` on.
    pub fn new(hard_limit: u64, soft_limit: u64) -> Self {
        MemConfig {
            hard_limit,
            soft_limit,
        }
    }
}

/// The in-memory MVCC store: ranges of keys in three column families, each a compact
/// sorted run plus memtables of recent writes (skiplists in arenas).
///
/// Writes carry their sequence numbers (the disk engine's, so that a memory snapshot at
/// `S` matches a disk snapshot at `S`; they must increase), or take the store's own next
/// ones ([`MemKv::write_next`]). Writes to different ranges run in parallel: each locks
/// only the ranges it reaches. Snapshots hold `Arc`s to the layers they read, take no
/// lock for their lifetime and never block writers; taking one waits only for a write
/// to its range still in flight at or below its sequence. Dropping a
/// range is O(1); its memory returns when its last snapshot drops.
#[derive(Debug)]
pub struct MemKv {
    tracker: Arc<MemoryTracker>,
    /// Sharded: a snapshot or a write reads the table under a shard of its thread's, so
    /// that threads reading it never write one cache line.
    ranges: ShardedLock<RangeTable>,
    /// The last sequence number taken by a write, a load or a snapshot: later writes come
    /// above it.
    last_seq: AtomicU64,
    /// Changes of the store's ranges, counted once made: see [`MemKv::reshapes`].
    reshapes: AtomicU64,
    /// The fewest memtable entries for which [`MemKv::wants_compaction`] says yes.
    compaction_min: AtomicUsize,
    /// Ranges with a compaction claimed ([`MemKv::claim_compaction`]), and the one under
    /// way between its pieces ([`MemKv::compact_some`]).
    pub(crate) compactions: Mutex<HashMap<RangeId, Option<crate::gc::Compaction>>>,
}

/// The fewest memtable entries for which [`MemKv::wants_compaction`] says yes, unless
/// [`MemKv::set_compaction_min`] says otherwise.
pub const MEMTABLE_COMPACTION_MIN: usize = 4096;

/// A range's runs hold this many entries for each entry its memtables may gather before
/// [`MemKv::wants_compaction`] says yes (past [`MEMTABLE_COMPACTION_MIN`]): 2, memtables
/// up to half the runs. Each entry of a growing range is then copied about 2.2 times by
/// compactions (1.8 to 2.2, by where the growth stops), against about 2.5 (2.3 to 2.9)
/// at a quarter. Measured with two apply threads on two cores, where a compaction takes
/// the processor from a writer: 20 pairs of `two_writers` in turn against a quarter, 15
/// faster, the mean ratio to bare RocksDB 1.066x against 1.130x once the regions had grown
/// to about two million entries. The price: at its largest, a third of a range's entries
/// wait in memtables (1.7 bytes per encoded byte) rather than a fifth, before a
/// compaction packs them into runs.
const RUNS_PER_MEMTABLE_ENTRY: usize = 2;

impl MemKv {
    /// An empty store.
    pub fn new(config: MemConfig) -> Self {
        MemKv {
            tracker: MemoryTracker::new(config.hard_limit, config.soft_limit),
            ranges: ShardedLock::new(RangeTable::default()),
            last_seq: AtomicU64::new(0),
            reshapes: AtomicU64::new(0),
            compaction_min: AtomicUsize::new(MEMTABLE_COMPACTION_MIN),
            compactions: Mutex::new(HashMap::new()),
        }
    }

    /// From now on, [`MemKv::wants_compaction`] says yes from `entries` memtable entries
    /// on (and half of the runs'), not [`MEMTABLE_COMPACTION_MIN`]; at least one.
    pub fn set_compaction_min(&self, entries: u64) {
        let entries = usize::try_from(entries).unwrap_or(usize::MAX).max(1);
        self.compaction_min.store(entries, Ordering::Relaxed);
    }

    /// How many times the store's ranges have changed other than by writes: a range
    /// created, split or dropped, a load installed. Counted once the change is made, and
    /// only growing: a caller that read the same count before and after looking at the
    /// store saw no such change in between (IME: what keeps a reader's view of the stores
    /// valid while other regions are written, `docs/engine.md`).
    pub fn reshapes(&self) -> u64 {
        self.reshapes.load(Ordering::SeqCst)
    }

    fn reshaped(&self) {
        self.reshapes.fetch_add(1, Ordering::SeqCst);
    }

    /// Bytes held now (keys, values, entry and index overhead, including layers that
    /// only live snapshots still read).
    pub fn memory_used(&self) -> u64 {
        self.tracker.used()
    }

    /// Bytes of spare arrays held beside [`MemKv::memory_used`]: the arrays of large runs
    /// dropped lately (an evicted range's, a run a compaction replaced) and of the copies
    /// of memtables compactions merged, kept for the next load or compaction to fill
    /// instead of new memory. They fit the room under the hard
    /// limit when kept; [`MemKv::age_spares`] frees them.
    pub fn spare_bytes(&self) -> u64 {
        self.tracker.spares.bytes()
    }

    /// One tick of the spare arrays' clock (call it now and then, off the write path; the
    /// engine's ticker does, ten times a second): frees the arrays no load or compaction
    /// took for ten ticks, then the largest while they pass the room the hard limit leaves
    /// above [`MemKv::memory_used`]; returns the bytes freed, on the calling thread.
    pub fn age_spares(&self) -> u64 {
        let room = (self.tracker.hard_limit()).saturating_sub(self.tracker.used());
        self.tracker.spares.age(room)
    }

    /// Changes the limits at run time. Memory already held stays held: lowering the hard
    /// limit below the usage refuses writes until the owner frees ranges.
    pub fn set_limits(&self, config: MemConfig) {
        self.tracker
            .set_limits(config.hard_limit, config.soft_limit);
    }

    /// True when memory is at or above the soft threshold.
    pub fn over_soft_limit(&self) -> bool {
        self.tracker.over_soft_limit()
    }

    /// The last sequence number taken (by a write, a load, or a snapshot above the
    /// writes): a snapshot at it sees every write that has returned, and only waits for a
    /// write to the same range still in flight at or below it.
    pub fn last_sequence(&self) -> u64 {
        self.last_seq.load(Ordering::SeqCst)
    }

    fn ranges(&self) -> ShardedLockReadGuard<'_, RangeTable> {
        self.ranges.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a sequence number of its own, above every one taken before: a load at it is
    /// refused to every snapshot taken earlier (see [`MemKv::load`]), even if nothing was
    /// written to memory in between.
    pub fn next_sequence(&self) -> u64 {
        self.last_seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Starts holding the keys in `bounds` as range `id` (empty); returns it as the target
    /// of a load ([`MemKv::loader_for`]), which follows it through its splits. Until the
    /// target and every loader and built run made from it are gone, the range (and what
    /// splits make of it) is *loading*: its compactions keep deletions, and those with a
    /// safe point do nothing, so that the load's entries — older than the writes the
    /// range takes meanwhile — stay hidden under a later deletion of their key. Drop the
    /// target once the load is installed (or abandoned).
    ///
    /// # Errors
    /// [`MemError::RangeExists`], [`MemError::RangeOverlaps`].
    pub fn create_range(&self, id: RangeId, bounds: KeyRange) -> Result<LoadTarget, MemError> {
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        if ranges.by_id.contains_key(&id) {
            return Err(MemError::RangeExists(id));
        }
        if let Some(existing) = ranges.overlapping(&bounds).next() {
            return Err(MemError::RangeOverlaps {
                new: id,
                existing: existing.id,
            });
        }
        let layers = || CfLayers {
            run: Arc::new(Run::empty(&self.tracker)),
            delta: Arc::new(Run::empty(&self.tracker)),
            frozen: Vec::new(),
            active: Arc::new(Memtable::new(&self.tracker)),
        };
        // Counted from before the range is in the table: no compaction of it can drop a
        // deletion the load's entries would need to stay hidden.
        let loads = Arc::new(AtomicUsize::new(1));
        let cfs = [layers(), layers(), layers()];
        let data = Arc::new(RangeData::new(id, bounds, cfs, 0, loads));
        ranges.insert(Arc::clone(&data));
        self.reshaped();
        Ok(LoadTarget(data))
    }

    /// Stops holding range `id`, in O(1): the range leaves the map at once, and its
    /// layers are freed when both the returned handle and the last snapshot reading them
    /// have dropped. Drop the handle on a background thread (the engine's deleter) so
    /// that freeing a large range never stalls a foreground caller.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`].
    pub fn drop_range(&self, id: RangeId) -> Result<DroppedRange, MemError> {
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        let dropped = ranges.remove(id).ok_or(MemError::NoSuchRange(id))?;
        self.reshaped();
        Ok(DroppedRange(dropped))
    }

    /// Bytes held by range `id`'s layers (layers shared with a split sibling are counted
    /// in full for each).
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`].
    pub fn range_memory(&self, id: RangeId) -> Result<u64, MemError> {
        Ok(self.range(id)?.charged())
    }

    /// Whether range `id`'s memtables have grown enough that a compaction should fold
    /// them into its runs: at least [`MEMTABLE_COMPACTION_MIN`] entries (or what
    /// [`MemKv::set_compaction_min`] set) and half of the runs'
    /// (`RUNS_PER_MEMTABLE_ENTRY`: so that compacting costs a bounded amount per write,
    /// and a lookup or an insert never walks a memtable much larger than the runs).
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`].
    pub fn wants_compaction(&self, id: RangeId) -> Result<bool, MemError> {
        let range = self.range(id)?;
        // Asked after every write: the layers are looked at in place, not copied.
        let version = range.version.load();
        let (mut recent, mut runs) = (0, 0);
        for layers in &version.cfs {
            recent += layers.active.len() + layers.frozen.iter().map(|m| m.len()).sum::<usize>();
            runs += layers.run.len() + layers.delta.len();
        }
        let min = self.compaction_min.load(Ordering::Relaxed);
        Ok(recent >= min.max(runs / RUNS_PER_MEMTABLE_ENTRY))
    }

    /// The ranges held, with their bounds.
    pub fn ranges_held(&self) -> Vec<(RangeId, KeyRange)> {
        self.ranges()
            .by_id
            .values()
            .map(|r| (r.id, KeyRange::clone(&r.bounds)))
            .collect()
    }

    pub(crate) fn range(&self, id: RangeId) -> Result<Arc<RangeData>, MemError> {
        self.ranges()
            .by_id
            .get(&id)
            .cloned()
            .ok_or(MemError::NoSuchRange(id))
    }

    /// Applies `batch`; operation `i` takes sequence `first_seq + i`. Operations on keys
    /// no range holds are skipped (the store holds only some ranges); the count of those
    /// applied is returned. All or nothing: a refused batch changes nothing.
    ///
    /// # Errors
    /// [`MemError::EmptyBatch`], [`MemError::SequenceOutOfOrder`],
    /// [`MemError::InvalidBounds`] (a range delete), [`MemError::MemoryLimit`].
    pub fn write(&self, batch: &WriteBatch, first_seq: u64) -> Result<usize, MemError> {
        let ops: Vec<OpRef<'_>> = batch.ops.iter().map(Op::as_ref).collect();
        self.write_ops(&ops, first_seq)
    }

    /// [`MemKv::write`] of borrowed operations: the keys and values are copied once, into
    /// the memtables.
    ///
    /// # Errors
    /// As [`MemKv::write`].
    pub fn write_ops(&self, batch: &[OpRef<'_>], first_seq: u64) -> Result<usize, MemError> {
        if batch.is_empty() {
            return Err(MemError::EmptyBatch);
        }
        self.apply(batch, Some(first_seq), &mut Plan::new())
            .map(|(applied, _)| applied)
    }

    /// Applies `batch` at the store's own next sequence numbers (operation `i` takes the
    /// last one plus `1 + i`), for an owner that does not follow another engine's
    /// numbering. Returns the count of operations applied and the batch's last sequence
    /// number; a snapshot at or above it sees the batch.
    ///
    /// # Errors
    /// [`MemError::EmptyBatch`], [`MemError::InvalidBounds`] (a range delete),
    /// [`MemError::MemoryLimit`].
    pub fn write_next(&self, batch: &[OpRef<'_>]) -> Result<(usize, u64), MemError> {
        if batch.is_empty() {
            return Err(MemError::EmptyBatch);
        }
        self.apply(batch, None, &mut Plan::new())
    }

    /// Calls `f` with `batch` resolved to the ranges it writes, for a caller that looks
    /// at them ([`BatchPlan::reaches_only`]) before writing it with
    /// [`MemKv::write_planned`]: the batch is planned once. A plan made stale by a change
    /// to the store's ranges is made again when written. (The plan stays on this frame:
    /// it holds a small batch's writes inline, and moving it would copy all of its room.)
    ///
    /// # Errors
    /// [`MemError::InvalidBounds`] (a range delete).
    pub fn with_plan<'a, R>(
        &self,
        batch: &[OpRef<'a>],
        f: impl FnOnce(&mut BatchPlan<'a, '_>) -> R,
    ) -> Result<R, MemError> {
        let mut plan = BatchPlan {
            batch,
            unplanned: &[],
            plan: Plan::new(),
        };
        plan.plan.fill(batch, &self.ranges())?;
        Ok(f(&mut plan))
    }

    /// [`MemKv::with_plan`] of `batch` if `now`, else without planning yet, nor even
    /// borrowing its operations as [`OpRef`]s: both are done if the batch is written
    /// ([`MemKv::write_planned`]), and the plan says nothing before (no
    /// [`BatchPlan::ranges`]). A writer that may hand the batch to someone else costs
    /// nothing here then.
    ///
    /// # Errors
    /// As [`MemKv::with_plan`] (only if `now`).
    pub fn with_plan_if<'a, R>(
        &self,
        now: bool,
        batch: &'a [ime_types::BatchOp],
        f: impl FnOnce(&mut BatchPlan<'a, '_>) -> R,
    ) -> Result<R, MemError> {
        if now {
            let ops: SmallVec<[OpRef<'a>; INLINE_WRITES]> = batch.iter().map(Into::into).collect();
            return self.with_plan(&ops, f);
        }
        let plan = Plan::new(); // unplanned: `apply` fills it
        Ok(f(&mut BatchPlan {
            batch: &[],
            unplanned: batch,
            plan,
        }))
    }

    /// [`MemKv::write_next`] of a batch planned with [`MemKv::with_plan`] (or
    /// [`MemKv::with_plan_if`]).
    ///
    /// # Errors
    /// As [`MemKv::write_next`].
    pub fn write_planned(&self, plan: &mut BatchPlan<'_, '_>) -> Result<(usize, u64), MemError> {
        if !plan.unplanned.is_empty() {
            let ops: SmallVec<[OpRef<'_>; INLINE_WRITES]> =
                plan.unplanned.iter().map(Into::into).collect();
            return self.apply(&ops, None, &mut plan.plan);
        }
        if plan.batch.is_empty() {
            return Err(MemError::EmptyBatch);
        }
        self.apply(plan.batch, None, &mut plan.plan)
    }

    /// The operations of `buffer`, in order, as one batch ([`MemKv::write_next`]);
    /// returns the ranges written to (none for an empty buffer).
    ///
    /// # Errors
    /// As [`MemKv::write_next`].
    pub fn write_buffer(&self, buffer: &OpBuffer) -> Result<SmallVec<[RangeId; 2]>, MemError> {
        let ops: Vec<OpRef<'_>> = buffer.iter().collect();
        if ops.is_empty() {
            return Ok(SmallVec::new());
        }
        let mut plan = Plan::new();
        self.apply(&ops, None, &mut plan)?;
        Ok(plan.ranges.iter().map(|r| r.id).collect())
    }

    /// The ranges `batch` would write to, each once, in id order: a
    /// caller can tell which of its ranges a batch reaches before writing it.
    ///
    /// # Errors
    /// [`MemError::InvalidBounds`] (a range delete).
    pub fn ranges_touched(&self, batch: &[OpRef<'_>]) -> Result<Vec<RangeId>, MemError> {
        let mut ids: Vec<RangeId> = self.with_plan(batch, |plan| plan.ranges().collect())?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// The writes of `batch`, from `first_seq` (checked to be above every sequence taken)
    /// or from the next sequence number; returns the count applied and the batch's last
    /// sequence number.
    ///
    /// The ranges it reaches are locked in id order (each range's writer lock, so writes
    /// to other ranges go on), checked against the table (any change to the ranges held
    /// between planning and locking plans again), and marked as written (`writing`)
    /// before the batch takes its numbers, so that a snapshot at or above them waits for
    /// the inserts.
    ///
    /// `plan` is the batch's plan, or an empty one filled here. It is filled in place
    /// and borrowed, never moved: it holds a small batch's writes inline, and a move
    /// copies all of its room.
    fn apply<'a>(
        &self,
        batch: &[OpRef<'a>],
        first_seq: Option<u64>,
        plan: &mut Plan<'a>,
    ) -> Result<(usize, u64), MemError> {
        let ranged = batch.iter().any(|op| matches!(op, OpRef::DeleteRange(..)));
        loop {
            if plan.generation == UNPLANNED {
                plan.fill(batch, &self.ranges())?;
            }
            let ranges = &plan.ranges;
            let mut order: SmallVec<[&Arc<RangeData>; INLINE_RANGES]> = ranges.iter().collect();
            order.sort_by_key(|r| r.id);
            let guards: SmallVec<[MutexGuard<'_, ()>; INLINE_RANGES]> =
                order.iter().map(|r| r.lock()).collect();
            // The table unchanged since the plan: every range planned is still held, and
            // every key planned in no range is still in none.
            let table = self.ranges();
            if table.generation != plan.generation {
                drop((table, guards, order));
                plan.clear(); // planned again
                continue;
            }
            // A range delete lists the keys it deletes: again, now that no write to its
            // ranges can add one (and if a range was added meanwhile, all over again).
            let mut again = Plan::new();
            let writes: &[Planned<'_>] = if ranged {
                again.fill(batch, &table)?;
                if let Some(range) = again.refused {
                    return Err(MemError::RangeDeleteWhileLoading(range));
                }
                let same = again.ranges.len() == ranges.len()
                    && again
                        .ranges
                        .iter()
                        .zip(ranges)
                        .all(|(a, b)| Arc::ptr_eq(a, b));
                if !same {
                    drop((table, guards, order));
                    plan.clear(); // planned again, as above
                    continue;
                }
                &again.writes
            } else {
                &plan.writes
            };
            drop(table);
            let out = self.apply_planned(ranges, writes, batch.len() as u64, first_seq);
            drop(guards);
            return out;
        }
    }

    /// [`MemKv::apply`] once its ranges are locked and still held.
    fn apply_planned(
        &self,
        ranges: &[Arc<RangeData>],
        writes: &[Planned<'_>],
        len: u64,
        first_seq: Option<u64>,
    ) -> Result<(usize, u64), MemError> {
        // The ranges' writer locks are held: no freeze can swap an active memtable, so
        // each range's layers are read once, and each memtable's writer taken once while
        // the batch stays on it.
        let versions: SmallVec<[_; INLINE_RANGES]> =
            ranges.iter().map(|r| r.version.load()).collect();
        let actives = |w: &Planned<'_>| versions.get(w.range).map(|v| &v.cfs[w.cf.index()].active);
        let costs = check_plan(ranges, writes, &actives)?;
        let needed = costs.iter().sum();
        if !self.tracker.try_reserve(needed) {
            let (used, limit) = (self.tracker.used(), self.tracker.hard_limit());
            return Err(MemError::MemoryLimit {
                needed,
                used,
                limit,
            });
        }
        let floor = self.last_seq.load(Ordering::SeqCst) + 1;
        for range in ranges {
            range.writing.store(floor, Ordering::SeqCst);
        }
        let first = match first_seq {
            None => self.last_seq.fetch_add(len, Ordering::SeqCst) + 1,
            Some(first) => {
                let taken =
                    self.last_seq
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                            (first > last).then_some(first + len - 1)
                        });
                if let Err(last) = taken {
                    for range in ranges {
                        range.writing.store(IDLE, Ordering::SeqCst);
                    }
                    self.tracker.release(needed);
                    return Err(MemError::SequenceOutOfOrder { first, last });
                }
                first
            }
        };
        let mut writing: Option<(usize, Cf, Inserter<'_>)> = None;
        for (w, cost) in writes.iter().zip(costs) {
            let inserter = match &mut writing {
                Some((range, cf, inserter)) if (*range, *cf) == (w.range, w.cf) => inserter,
                _ => {
                    writing = None; // one memtable lock at a time
                    let Some(active) = actives(w) else {
                        debug_assert!(false, "a planned range is among the locked ones");
                        continue;
                    };
                    &mut writing.insert((w.range, w.cf, active.inserter())).2
                }
            };
            // Checked by `check_plan`: the entry fits a node and the memtable has room.
            let inserted = inserter.insert(&w.key, first + w.op_index as u64, w.value, cost);
            debug_assert!(inserted, "checked before the batch");
        }
        drop(writing);
        for range in ranges {
            range.writing.store(IDLE, Ordering::SeqCst);
        }
        Ok((writes.len(), first + len - 1))
    }

    /// A snapshot of range `id` at sequence `seq`. A sequence above the last applied one
    /// is allowed (the caller's disk may be ahead); later writes must then come above it.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`], [`MemError::SnapshotTooOld`].
    pub fn snapshot(&self, id: RangeId, seq: u64) -> Result<Snapshot, MemError> {
        // Later writes come above `seq` (a shared line written only when `seq` is new).
        if seq > self.last_seq.load(Ordering::SeqCst) {
            self.last_seq.fetch_max(seq, Ordering::SeqCst);
        }
        let (snapshot, compacted) = {
            let ranges = self.ranges();
            let range = ranges.by_id.get(&id).ok_or(MemError::NoSuchRange(id))?;
            if range.writing.load(Ordering::SeqCst) > seq {
                // Every write to the range at or below `seq` is in place, and none is in
                // flight there: no lock (the common case).
                Self::snapshot_of(range, seq)
            } else {
                // A write at or below `seq` is in flight: wait for it (the only lock a
                // snapshot may take, and never for a write to another range), outside
                // the table's lock, then make sure the range is still the one held.
                let range = Arc::clone(range);
                drop(ranges);
                let _wait = range.lock();
                if !self.ranges().holds(&range) {
                    return Err(MemError::NoSuchRange(id));
                }
                Self::snapshot_of(&range, seq)
            }
        };
        if seq < compacted {
            return Err(MemError::SnapshotTooOld {
                range: id,
                requested: seq,
                compacted,
            });
        }
        Ok(snapshot)
    }

    /// A snapshot of `range` at `seq`, and its compaction mark: layers first, then the
    /// mark (a compaction sets the mark before it swaps layers, so a snapshot that got
    /// compacted layers also sees the mark).
    fn snapshot_of(range: &RangeData, seq: u64) -> (Snapshot, u64) {
        let snapshot = Snapshot::new(range, seq);
        (snapshot, range.compacted_seq.load(Ordering::Acquire))
    }

    /// Bulk-loads `entries` (strictly increasing keys, inside the range) into `cf` of
    /// range `id` at sequence `seq`, as a compact run built in key order. Meant for the
    /// load from a disk snapshot at `seq`, before any write above `seq` touches the keys.
    /// Snapshots of the range below `seq` are refused from then on
    /// ([`MemError::SnapshotTooOld`]): they would not see the loaded entries.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`], [`MemError::UnsortedLoad`], [`MemError::OutOfRange`],
    /// [`MemError::MemoryLimit`].
    pub fn load(
        &self,
        id: RangeId,
        cf: Cf,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        seq: u64,
    ) -> Result<(), MemError> {
        let mut loader = self.loader(id, cf, seq)?;
        for (key, value) in &entries {
            loader.push(key, value)?;
        }
        drop(entries);
        loader.finish()
    }

    /// [`MemKv::load`], streamed: entries are pushed one at a time (straight from a disk
    /// iterator, say) into the run being built, and [`Loader::finish`] installs it.
    /// Nothing is installed if a push fails or the loader is dropped. The range counts as
    /// loading only from now on: to load a range that takes writes meanwhile, load through
    /// the target [`MemKv::create_range`] returned.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`].
    pub fn loader(&self, id: RangeId, cf: Cf, seq: u64) -> Result<Loader<'_>, MemError> {
        Ok(self.loader_for(&LoadTarget::of(self.range(id)?), cf, seq))
    }

    /// [`MemKv::loader`] for a range held as a [`LoadTarget`] since its creation: the
    /// loader copies for the range's bounds even if it has split since, and its run goes
    /// to the ranges the split made of it ([`MemKv::install_loaded`]).
    pub fn loader_for(&self, target: &LoadTarget, cf: Cf, seq: u64) -> Loader<'_> {
        Loader {
            kv: self,
            target: target.clone(),
            cf,
            seq,
            run: RunBuilder::with_capacity(0, 0, 0),
            expected: 0,
        }
    }

    /// Installs a load's runs, built by [`Loader::built`], in order, each as its column
    /// family's run of its range (merged with the run the range has, if any); stops at
    /// the first that fails. A range split since the load began gives the run to the
    /// ranges the split made of it (and theirs, if they split in turn), each reading it
    /// through its own bounds, as a split shares the layers a range holds; those of them
    /// dropped since are passed over. Returns the bytes the runs hold (each once, however
    /// many pieces share it): what the load brought into memory.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`] when the range was dropped since the load began: nothing
    /// is installed. [`MemError::RunTooLarge`] (merging with a run a range already had).
    pub fn install_loaded(
        &self,
        runs: impl IntoIterator<Item = LoadedRun>,
    ) -> Result<u64, MemError> {
        let installed =
            (runs.into_iter()).try_fold(0, |bytes, run| Ok(bytes + self.install_run(run)?));
        self.reshaped(); // even after a failure: runs before it are in
        installed
    }

    /// One run of [`MemKv::install_loaded`]; its bytes (once, whatever the pieces).
    fn install_run(&self, loaded: LoadedRun) -> Result<u64, MemError> {
        let LoadedRun {
            target,
            cf,
            seq,
            run,
        } = loaded;
        let Some(run) = run else {
            return Ok(0); // nothing was copied: nothing to lose
        };
        let bytes = run.heap_bytes();
        let (run, root) = (Arc::new(run), target.id());
        // The target stays held (and the range's compactions keep deletions) until the
        // run is in place.
        let mut pieces = vec![Arc::clone(&target.0)];
        while let Some(piece) = pieces.pop() {
            let writer = piece.lock();
            // Held until the run is in place, so that no split or drop slips in between
            // (a split takes the writer lock, and names its children before leaving it).
            let table = self.ranges();
            if table.holds(&piece) {
                self.install_piece(&piece, &writer, cf, &run, seq)?;
                continue;
            }
            match piece.split_into.get() {
                // Popped last first: pushed in reverse, installed in key order.
                Some(children) => pieces.extend(children.iter().rev().cloned()),
                None if piece.id == root => return Err(MemError::NoSuchRange(root)),
                None => {} // a piece dropped since: its data is not wanted
            }
        }
        Ok(bytes)
    }

    /// `run`, loaded at `seq`, into `cf` of `range`, which the caller holds (`writer`)
    /// and has checked is still in the table.
    fn install_piece(
        &self,
        range: &RangeData,
        writer: &MutexGuard<'_, ()>,
        cf: Cf,
        run: &Arc<Run>,
        seq: u64,
    ) -> Result<(), MemError> {
        // The load is a write at `seq`: later writes and compactions come after it, and
        // snapshots at or above it wait until it is in place.
        range.writing.store(seq, Ordering::SeqCst);
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
        // A snapshot below `seq` would see the range without the entries loaded at it.
        range.compacted_seq.fetch_max(seq, Ordering::AcqRel);
        let loaded = range.update(writer, |cfs| {
            let layers = &mut cfs[cf.index()];
            if layers.run.len() == 0 {
                // The usual case: a load into an empty range, its run as built (shared
                // with the other pieces of a range split meanwhile).
                layers.run = Arc::clone(run);
                return Ok::<(), MemError>(());
            }
            let (lo, hi) = crate::snapshot::run_span(&layers.run, &range.bounds);
            let mut merged: Vec<RunEntry> = (lo..hi).map(|i| layers.run.entry(i)).collect();
            let (lo, hi) = crate::snapshot::run_span(run, &range.bounds);
            merged.extend((lo..hi).map(|i| run.entry(i)));
            merged.sort_by(|a, b| {
                (&a.key, std::cmp::Reverse(a.seq)).cmp(&(&b.key, std::cmp::Reverse(b.seq)))
            });
            layers.run = Arc::new(Run::new(&merged, Some(&self.tracker))?);
            Ok(())
        });
        range.writing.store(IDLE, Ordering::SeqCst);
        loaded
    }

    /// Freezes every column family's active memtable of range `id` (for a compaction)
    /// and returns the layers to compact and the sequence they hold up to.
    pub(crate) fn freeze(&self, range: &RangeData) -> ([CfLayers; 3], u64) {
        let writer = range.lock();
        let layers = range.update(&writer, |cfs| {
            for layers in cfs.iter_mut() {
                let fresh = Arc::new(layers.active.following(&self.tracker));
                let frozen = std::mem::replace(&mut layers.active, fresh);
                layers.frozen.push(frozen);
            }
            cfs.clone()
        });
        // Every write to the range up to here is in place; later ones come above.
        (layers, self.last_sequence())
    }

    /// Replaces, in each column family of `range`, the frozen memtables of `compacted`
    /// and the runs they were merged with by the run built from them: with `full`, the
    /// base and the delta by a new base (the delta left empty); without, the delta by a
    /// new delta. Snapshots below `seq` are refused from then on. A column family whose
    /// runs changed meanwhile (a concurrent compaction won) is left as it is. Returns
    /// whether every column family installed on a range still held (a range split or
    /// dropped meanwhile keeps nothing of the work).
    pub(crate) fn install(
        &self,
        range: &Arc<RangeData>,
        compacted: &[CfLayers; 3],
        (runs, full): ([Run; 3], bool),
        seq: u64,
    ) -> bool {
        let writer = range.lock();
        // Held until the layers are replaced, so that no split or drop slips in between.
        let ranges = self.ranges();
        if !ranges.holds(range) {
            return false;
        }
        range.compacted_seq.fetch_max(seq, Ordering::AcqRel);
        range.update(&writer, |cfs| {
            let mut all = true;
            for ((layers, old), run) in cfs.iter_mut().zip(compacted).zip(runs) {
                if !Arc::ptr_eq(&layers.run, &old.run) || !Arc::ptr_eq(&layers.delta, &old.delta) {
                    all = false;
                    continue;
                }
                if full {
                    layers.run = Arc::new(run);
                    layers.delta = Arc::new(Run::empty(&self.tracker));
                } else {
                    layers.delta = Arc::new(run);
                }
                layers
                    .frozen
                    .retain(|m| !old.frozen.iter().any(|o| Arc::ptr_eq(m, o)));
            }
            all
        })
    }

    /// Splits range `id` into `children` (ids and bounds that partition its bounds, in
    /// key order), in O(1) per child: each child shares the parent's run and memtables,
    /// read through its own bounds, and writes to a memtable of its own; its next
    /// compaction gives it a run of its own. Snapshots of the parent keep reading it.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`], [`MemError::InvalidSplit`] (nothing changed then).
    pub fn split_range(
        &self,
        id: RangeId,
        children: &[(RangeId, KeyRange)],
    ) -> Result<(), MemError> {
        let parent = self.range(id)?;
        // No write to the parent is in flight from here on: writes that planned on it
        // find it gone once they hold its lock, and plan again on the children.
        let _writer = parent.lock();
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        if !ranges.holds(&parent) {
            return Err(MemError::NoSuchRange(id));
        }
        check_partition(&parent, children, &ranges)?;
        ranges.remove(id);
        let version = parent.version();
        let mut made = Vec::with_capacity(children.len());
        for (child, bounds) in children {
            let inherit = |cf: Cf| {
                let layers = version.cfs[cf.index()].clone();
                let mut frozen = layers.frozen;
                frozen.push(layers.active);
                CfLayers {
                    run: layers.run,
                    delta: layers.delta,
                    frozen,
                    active: Arc::new(Memtable::new(&self.tracker)),
                }
            };
            let cfs = [inherit(Cf::Default), inherit(Cf::Lock), inherit(Cf::Write)];
            let compacted = parent.compacted_seq.load(Ordering::Acquire);
            let loads = Arc::clone(&parent.loads);
            let child = Arc::new(RangeData::new(
                *child,
                bounds.clone(),
                cfs,
                compacted,
                loads,
            ));
            made.push(Arc::clone(&child));
            ranges.insert(child);
        }
        // Only here, under the parent's writer lock: a range leaves the table once.
        let _first = parent.split_into.set(made);
        self.reshaped();
        Ok(())
    }

    pub(crate) fn tracker(&self) -> &Arc<MemoryTracker> {
        &self.tracker
    }
}

/// A range taken out of the store, not freed yet: dropping this frees it (unless
/// snapshots still read it).
#[derive(Debug)]
#[must_use = "dropping the handle frees the range's memory on this thread"]
pub struct DroppedRange(Arc<RangeData>);

impl DroppedRange {
    /// The range's id.
    pub fn id(&self) -> RangeId {
        self.0.id
    }

    /// Bytes the range holds (freed when the handle drops, or with the last snapshot).
    pub fn memory(&self) -> u64 {
        self.0.charged()
    }
}

/// A load of one column family of a range in progress ([`MemKv::loader`]): entries in
/// strictly increasing key order go straight into the run being built.
#[derive(Debug)]
#[must_use = "a loader installs nothing until `finish`"]
pub struct Loader<'a> {
    kv: &'a MemKv,
    target: LoadTarget,
    cf: Cf,
    seq: u64,
    run: RunBuilder,
    /// Bytes of keys and values the load expects at most (0: unknown).
    expected: u64,
}

impl Loader<'_> {
    /// The loader told that the range holds about `bytes` of keys and values (across
    /// every column family; TiKV's approximate size of the region will do, or what the
    /// range held when it was last dropped). With the first entry, it makes room for as
    /// many entries of that entry's shape, within the memory the store may still take, so
    /// that its arenas do not grow (copying, and touching new memory) step by step. Only a
    /// hint: a smaller load gives the room back when built, a larger one grows from there.
    pub fn expecting(mut self, bytes: u64) -> Self {
        self.expected = bytes;
        self
    }

    /// Makes the room [`Loader::expecting`] describes, for entries shaped like the first.
    fn reserve_like(&mut self, key: &[u8], value: &[u8]) {
        let entry = (key.len() + value.len()).max(1) as u64;
        let in_memory = entry + RunBuilder::ENTRY_OVERHEAD;
        let room = self
            .kv
            .tracker
            .hard_limit()
            .saturating_sub(self.kv.tracker.used());
        let entries = (self.expected / entry).min(room / in_memory);
        let total = |len: usize| {
            let bytes = entries.saturating_mul(len as u64).min(u64::from(u32::MAX));
            usize::try_from(bytes).unwrap_or(0)
        };
        if entries > 1 {
            let entries = usize::try_from(entries).unwrap_or(0);
            let spares = &self.kv.tracker.spares;
            (self.run).reserve_reusing(spares, entries, total(key.len()), total(value.len()));
        }
    }

    /// Adds the next entry: its key must be above the last one's and inside the range.
    ///
    /// # Errors
    /// [`MemError::UnsortedLoad`] (with the entry's position), [`MemError::OutOfRange`],
    /// [`MemError::RunTooLarge`], [`MemError::MemoryLimit`] (checked every 1,024 entries,
    /// and at the end).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), MemError> {
        let position = self.run.len();
        // Keys rise, so the range's start needs checking once and its end at each key.
        let in_range = match self.run.last_key() {
            Some(last) if last >= key => return Err(MemError::UnsortedLoad(position)),
            Some(_) => self.target.0.bounds.ends_after(key),
            None => self.target.0.bounds.contains_key(key),
        };
        if !in_range {
            return Err(MemError::OutOfRange(self.target.0.id));
        }
        if position == 0 && self.expected > 0 {
            self.reserve_like(key, value);
        }
        if position % 1024 == 1023 {
            let (used, limit) = (self.kv.tracker.used(), self.kv.tracker.hard_limit());
            let needed = self.run.bytes();
            if used.saturating_add(needed) > limit {
                return Err(MemError::MemoryLimit {
                    needed,
                    used,
                    limit,
                });
            }
        }
        self.run.push_above(key, self.seq, Some(value))
    }

    /// The run pushed so far, built and charged to the store's memory, to install later
    /// ([`MemKv::install_loaded`]): a load can copy every column family outside any lock
    /// and install them together.
    ///
    /// # Errors
    /// [`MemError::MemoryLimit`] when the run does not fit under the hard limit.
    pub fn built(self) -> Result<LoadedRun, MemError> {
        let run = (self.run.len() > 0).then(|| self.run.finish(None));
        let needed = run.as_ref().map_or(0, Run::heap_bytes);
        let (used, limit) = (self.kv.tracker.used(), self.kv.tracker.hard_limit());
        if needed > 0 && used.saturating_add(needed) > limit {
            return Err(MemError::MemoryLimit {
                needed,
                used,
                limit,
            });
        }
        Ok(LoadedRun {
            target: self.target,
            cf: self.cf,
            seq: self.seq,
            run: run.map(|r| r.charged_to(&self.kv.tracker)),
        })
    }

    /// Installs what was pushed (nothing, when nothing was): [`Loader::built`], then
    /// [`MemKv::install_loaded`].
    ///
    /// # Errors
    /// As those two.
    pub fn finish(self) -> Result<(), MemError> {
        let kv = self.kv;
        kv.install_loaded([self.built()?]).map(drop)
    }
}

/// A range as it was created ([`MemKv::create_range`]), for a load that follows it
/// through its splits. While one is held (or a loader or a built run made from it), the
/// range's compactions keep deletions (see [`MemKv::create_range`]).
#[derive(Debug)]
pub struct LoadTarget(Arc<RangeData>);

impl LoadTarget {
    fn of(range: Arc<RangeData>) -> Self {
        range.loads.fetch_add(1, Ordering::SeqCst);
        LoadTarget(range)
    }

    /// The range's id (a split since may have taken it out of the store).
    pub fn id(&self) -> RangeId {
        self.0.id
    }
}

impl Clone for LoadTarget {
    fn clone(&self) -> Self {
        LoadTarget::of(Arc::clone(&self.0))
    }
}

impl Drop for LoadTarget {
    fn drop(&mut self) {
        self.0.loads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One column family's run of a load, built and not installed yet ([`Loader::built`]).
/// It owns what it holds, so it can wait — in a task queue, say — for
/// [`MemKv::install_loaded`]; its memory is charged from the moment it is built, and
/// given back if it is dropped instead.
#[derive(Debug)]
#[must_use = "a built run is installed only by `MemKv::install_loaded`"]
pub struct LoadedRun {
    target: LoadTarget,
    cf: Cf,
    seq: u64,
    /// `None` when nothing was pushed.
    run: Option<Run>,
}

/// Checks that `children` partition `parent`'s bounds in key order with ids not held by
/// another range.
fn check_partition(
    parent: &RangeData,
    children: &[(RangeId, KeyRange)],
    ranges: &RangeTable,
) -> Result<(), MemError> {
    let invalid = |reason| MemError::InvalidSplit {
        range: parent.id,
        reason,
    };
    let (Some(first), Some(last)) = (children.first(), children.last()) else {
        return Err(invalid("no children"));
    };
    if first.1.start() != parent.bounds.start() || last.1.end() != parent.bounds.end() {
        return Err(invalid("the children do not cover the range"));
    }
    if children
        .windows(2)
        .any(|w| w[0].1.end() != Some(w[1].1.start()))
    {
        return Err(invalid("the children are not adjacent in key order"));
    }
    let mut ids: Vec<RangeId> = children.iter().map(|(id, _)| *id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != children.len() {
        return Err(invalid("two children have one id"));
    }
    if ids
        .iter()
        .any(|c| *c != parent.id && ranges.by_id.contains_key(c))
    {
        return Err(invalid("a child's id is held by another range"));
    }
    Ok(())
}

/// One write resolved to its range: the range's index in [`Plan::ranges`], the
/// operation's index in the batch, and the entry.
struct Planned<'a> {
    range: usize,
    op_index: usize,
    cf: Cf,
    /// Borrowed from the batch; owned for the keys a range delete found.
    key: Cow<'a, [u8]>,
    value: Option<&'a [u8]>,
}

/// A batch resolved to ranges: the ranges it reaches, each once (in the order first
/// reached), and its writes.
struct Plan<'a> {
    ranges: SmallVec<[Arc<RangeData>; INLINE_RANGES]>,
    writes: SmallVec<[Planned<'a>; INLINE_WRITES]>,
    /// The table's [`RangeTable::generation`] when planned ([`UNPLANNED`] before).
    generation: u64,
    /// A range that refuses the batch: a range delete reaches it while its load is under
    /// way.
    refused: Option<RangeId>,
}

/// A batch resolved to the ranges it writes ([`MemKv::with_plan`]), to look at before
/// writing it ([`MemKv::write_planned`]).
pub struct BatchPlan<'a, 'b> {
    batch: &'b [OpRef<'a>],
    /// The batch still to be borrowed and planned, when [`MemKv::with_plan_if`] deferred
    /// both (`batch` is empty then).
    unplanned: &'a [ime_types::BatchOp],
    plan: Plan<'a>,
}

impl BatchPlan<'_, '_> {
    /// The ranges the batch writes to, each once, in the order first reached.
    pub fn ranges(&self) -> impl Iterator<Item = RangeId> + '_ {
        self.plan.ranges.iter().map(|r| r.id)
    }

    /// Whether every range the batch writes to is one of `ranges`.
    pub fn reaches_only(&self, ranges: &[RangeId]) -> bool {
        self.ranges().all(|id| ranges.contains(&id))
    }
}

/// A [`Plan::generation`] no table reaches: the plan is still to be made.
const UNPLANNED: u64 = u64::MAX;

/// How many ranges a batch's plan holds without allocating: a Raft batch is one region's.
const INLINE_RANGES: usize = 2;

/// How many writes a plan (and its costs) holds without allocating: an apply batch
/// of that many entries plans on the stack.
const INLINE_WRITES: usize = 16;

/// Checks that every write fits a memtable node and every memtable the writes reach
/// (`active` tells which) has room for all of them; returns the bytes to reserve for
/// each write (its node at the tallest height, and for the first write to a memtable not
/// written yet, its arena's directory of chunks).
fn check_plan<'m>(
    ranges: &[Arc<RangeData>],
    writes: &[Planned<'_>],
    active: &dyn Fn(&Planned<'_>) -> Option<&'m Arc<Memtable>>,
) -> Result<SmallVec<[u64; INLINE_WRITES]>, MemError> {
    let mut costs = SmallVec::with_capacity(writes.len());
    for w in writes {
        let value = w.value.map_or(0, <[u8]>::len);
        if w.key.len() > MAX_KEY_LEN || value >= MAX_VALUE_LEN {
            return Err(MemError::EntryTooLarge {
                key: w.key.len(),
                value,
            });
        }
        costs.push(entry_estimate(&w.key, w.value));
    }
    let entries: u64 = costs.iter().sum();
    let mut reached: SmallVec<[(usize, Cf); INLINE_RANGES]> = SmallVec::new();
    for (w, cost) in writes.iter().zip(costs.iter_mut()) {
        if reached.contains(&(w.range, w.cf)) {
            continue;
        }
        reached.push((w.range, w.cf));
        if let (Some(active), Some(range)) = (active(w), ranges.get(w.range)) {
            // A bound: the whole batch, in each memtable it reaches.
            if active.room() < entries {
                return Err(MemError::MemtableFull(range.id));
            }
            *cost += active.first_insert_cost();
        }
    }
    Ok(costs)
}

impl<'a> Plan<'a> {
    /// An empty plan, still to be made.
    fn new() -> Self {
        Plan {
            ranges: SmallVec::new(),
            writes: SmallVec::new(),
            generation: UNPLANNED,
            refused: None,
        }
    }

    /// Empties the plan, to be made again.
    fn clear(&mut self) {
        self.ranges.clear();
        self.writes.clear();
        self.generation = UNPLANNED;
        self.refused = None;
    }

    /// Resolves each operation of `batch` to the range of `table` holding its key, into
    /// this empty plan; a range delete becomes a deletion of every key it covers in every
    /// range it touches.
    fn fill(&mut self, batch: &[OpRef<'a>], table: &RangeTable) -> Result<(), MemError> {
        self.generation = table.generation;
        self.writes.reserve(batch.len());
        for (op_index, op) in batch.iter().enumerate() {
            match *op {
                OpRef::Put(cf, key, value) => self.point(table, op_index, cf, key, Some(value)),
                OpRef::Delete(cf, key) => self.point(table, op_index, cf, key, None),
                OpRef::DeleteRange(cf, start, end) => {
                    let deleted = KeyRange::with_end(start.to_vec(), Some(end.to_vec()))?;
                    self.range_delete(table, op_index, cf, &deleted);
                }
            }
        }
        Ok(())
    }

    /// The index of `range` in [`Plan::ranges`], added if new.
    fn index_of(&mut self, range: &Arc<RangeData>) -> usize {
        match self.ranges.iter().position(|r| Arc::ptr_eq(r, range)) {
            Some(at) => at,
            None => {
                self.ranges.push(Arc::clone(range));
                self.ranges.len() - 1
            }
        }
    }

    /// A put or delete of `key`, if a range holds it. The range of the write before
    /// is tried first (the ranges of a table do not overlap, and a batch's keys mostly
    /// lie in one): no lookup in the table then.
    fn point(
        &mut self,
        table: &RangeTable,
        op_index: usize,
        cf: Cf,
        key: &'a [u8],
        value: Option<&'a [u8]>,
    ) {
        let range = match self.writes.last().map(|w| w.range) {
            Some(at) if self.ranges[at].bounds.contains_key(key) => at,
            _ => match table.holder(key) {
                Some(range) => self.index_of(range),
                None => return,
            },
        };
        self.writes.push(Planned {
            range,
            op_index,
            cf,
            key: Cow::Borrowed(key),
            value,
        });
    }

    /// Deletions of every key in `deleted`, in every range it touches: keys already
    /// held, and keys written earlier in the same batch. A range whose load is under way
    /// is noted as refusing the batch (the keys the load is about to bring are not held
    /// yet): the write fails when it comes to it, so that the caller can look at the plan
    /// — and write its disk — first.
    fn range_delete(&mut self, table: &RangeTable, op_index: usize, cf: Cf, deleted: &KeyRange) {
        for range in table.overlapping(deleted) {
            let Some(deleted) = range.bounds.intersect(deleted) else {
                continue;
            };
            if range.loads.load(Ordering::SeqCst) > 0 {
                self.refused = Some(range.id);
                continue;
            }
            let deleted = &deleted;
            let known = self.ranges.iter().position(|r| Arc::ptr_eq(r, range));
            let mut keys = merged_keys(&range.layers(cf), deleted);
            let earlier = self
                .writes
                .iter()
                .filter(|p| Some(p.range) == known && p.cf == cf && deleted.contains_key(&p.key));
            keys.extend(earlier.map(|p| p.key.to_vec()).collect::<Vec<_>>());
            if keys.is_empty() {
                continue; // nothing to delete: the range is not reached
            }
            keys.sort();
            keys.dedup();
            let at = self.index_of(range);
            for key in keys {
                self.writes.push(Planned {
                    range: at,
                    op_index,
                    cf,
                    key: Cow::Owned(key),
                    value: None,
                });
            }
        }
    }
}
