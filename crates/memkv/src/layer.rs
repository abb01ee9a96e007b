//! The layers of one column family of one range: a compact immutable sorted run, and
//! memtables of recent writes in front of it (see the `memtable` module). Reads merge
//! them.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::MemError;
use crate::memory::{Charge, MemoryTracker};
use crate::memtable::{Memtable, SpanBuffers};

/// An internal entry's value: `None` is a deletion.
pub(crate) type IValue = Option<Box<[u8]>>;

/// One entry, owned: what runs are built from and taken apart into.
#[derive(Debug, Clone)]
pub(crate) struct RunEntry {
    pub(crate) key: Box<[u8]>,
    pub(crate) seq: u64,
    pub(crate) value: IValue,
}

/// Where one entry's key and value end in the run's arenas, and its sequence number.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key_end: u32,
    value_end: u32,
    seq: u64,
}

/// An immutable sorted run, built in key order (by a load or a compaction): every key in
/// one arena, every value in another, and a slot per entry with the two end offsets and
/// the sequence number (16 bytes), plus a deletion bitmap. One allocation each, however
/// many entries; a scan streams through contiguous memory.
#[derive(Debug)]
pub(crate) struct Run {
    keys: Vec<u8>,
    values: Vec<u8>,
    slots: Vec<Slot>,
    deleted: Vec<u64>,
    /// A sparse index: the key of every [`SPARSE`]-th entry, contiguous, with end offsets,
    /// so a lookup searches a small dense array before touching the slots.
    sparse_keys: Vec<u8>,
    sparse_ends: Vec<u32>,
    /// Per sparse entry, the 8 bytes of its key after the prefix every key of the run
    /// shares (`prefix_len` bytes), big-endian and zero-padded: most steps of a lookup
    /// compare one `u64` instead of following two offsets into the key arena.
    sparse_prefixes: Vec<u64>,
    prefix_len: usize,
    /// Per block of [`SPARSE`] entries, how many leading bytes all its keys share (its
    /// first key's, in `sparse_keys`); per entry, the 2 bytes of its key after them,
    /// big-endian and zero-padded. The search within a block compares these (a block's
    /// are 64 bytes) and reads an entry's slot and key only when they tie.
    block_shared: Vec<u16>,
    entry_prefixes: Vec<u16>,
    /// Facts that let scans take a shorter path: no two entries share a user key, the
    /// highest sequence number, and whether any entry is a deletion.
    unique: bool,
    max_seq: u64,
    any_deleted: bool,
    charge: Option<Charge>,
}

/// One sparse index entry per this many run entries.
const SPARSE: usize = 32;

impl Run {
    /// A run of `entries`, which must be in internal key order; charged to `tracker` if
    /// given (a transient copy is not).
    ///
    /// # Errors
    /// [`MemError::RunTooLarge`] when its keys or values pass 4 GiB.
    pub(crate) fn new(
        entries: &[RunEntry],
        tracker: Option<&Arc<MemoryTracker>>,
    ) -> Result<Self, MemError> {
        let parts = entries.iter().map(|e| (&*e.key, e.seq, e.value.as_deref()));
        Run::build(parts, entries.len(), tracker, false)
    }

    /// A run of borrowed entries in internal key order, each key once (a compaction's
    /// merge keeps the newest entry of each); charged to `tracker` if given.
    ///
    /// # Errors
    /// [`MemError::RunTooLarge`].
    pub(crate) fn from_parts(
        parts: &[crate::gc::Part<'_>],
        tracker: Option<&Arc<MemoryTracker>>,
    ) -> Result<Self, MemError> {
        debug_assert!(
            parts.windows(2).all(|w| w[0].0 < w[1].0),
            "unique, in order"
        );
        Run::build(parts.iter().copied(), parts.len(), tracker, true)
    }

    /// A run of `parts`; `unique` when no two of them share a key (then no key is
    /// compared with the one before).
    fn build<'a>(
        parts: impl Iterator<Item = (&'a [u8], u64, Option<&'a [u8]>)> + Clone,
        len: usize,
        tracker: Option<&Arc<MemoryTracker>>,
        unique: bool,
    ) -> Result<Self, MemError> {
        let key_bytes: usize = parts.clone().map(|(k, _, _)| k.len()).sum();
        let value_bytes: usize = parts
            .clone()
            .map(|(_, _, v)| v.map_or(0, <[u8]>::len))
            .sum();
        let mut builder = RunBuilder::with_capacity(len, key_bytes, value_bytes);
        for (key, seq, value) in parts {
            if unique {
                builder.push_above(key, seq, value)?;
            } else {
                builder.push(key, seq, value)?;
            }
        }
        Ok(builder.finish(tracker))
    }

    /// Bytes its arrays hold (what it charges).
    pub(crate) fn heap_bytes(&self) -> u64 {
        (self.keys.capacity()
            + self.values.capacity()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.deleted.capacity() * 8
            + self.sparse_keys.capacity()
            + self.sparse_ends.capacity() * 4
            + self.sparse_prefixes.capacity() * 8
            + self.block_shared.capacity() * 2
            + self.entry_prefixes.capacity() * 2) as u64
    }

    /// The run, charged to `tracker` from now until it drops.
    pub(crate) fn charged_to(mut self, tracker: &Arc<MemoryTracker>) -> Run {
        let bytes = self.heap_bytes();
        let charge = Charge::new(tracker);
        tracker.force_reserve(bytes);
        charge.add_reserved(bytes);
        self.charge = Some(charge);
        self
    }

    /// An empty run, charged (nothing) to `tracker`.
    pub(crate) fn empty(tracker: &Arc<MemoryTracker>) -> Self {
        let mut run = Run::unbuilt();
        run.charge = Some(Charge::new(tracker));
        run
    }

    /// No entries, no room, charged nowhere.
    fn unbuilt() -> Self {
        Run {
            keys: Vec::new(),
            values: Vec::new(),
            slots: Vec::new(),
            deleted: Vec::new(),
            sparse_keys: Vec::new(),
            sparse_ends: Vec::new(),
            sparse_prefixes: Vec::new(),
            prefix_len: 0,
            block_shared: Vec::new(),
            entry_prefixes: Vec::new(),
            unique: true,
            max_seq: 0,
            any_deleted: false,
            charge: None,
        }
    }

    /// Swaps its arrays with `other`'s (every field that holds room; nothing else).
    fn swap_arrays(&mut self, other: &mut Run) {
        use std::mem::swap;
        swap(&mut self.keys, &mut other.keys);
        swap(&mut self.values, &mut other.values);
        swap(&mut self.slots, &mut other.slots);
        swap(&mut self.deleted, &mut other.deleted);
        swap(&mut self.sparse_keys, &mut other.sparse_keys);
        swap(&mut self.sparse_ends, &mut other.sparse_ends);
        swap(&mut self.sparse_prefixes, &mut other.sparse_prefixes);
        swap(&mut self.block_shared, &mut other.block_shared);
        swap(&mut self.entry_prefixes, &mut other.entry_prefixes);
    }

    /// Bytes of keys and of values of entries `lo..hi` (`lo <= hi <= len()`).
    pub(crate) fn bytes_between(&self, lo: usize, hi: usize) -> (usize, usize) {
        if lo >= hi {
            return (0, 0);
        }
        let (key_start, value_start) = self.starts(lo);
        let (key_end, value_end) = self.starts(hi);
        (key_end - key_start, value_end - value_start)
    }

    /// True when no two entries share a key.
    pub(crate) fn unique(&self) -> bool {
        self.unique
    }

    /// True when every entry is visible at `seq` as the only entry of its key and none is
    /// a deletion: a scan at `seq` then shows every entry, one after the other.
    pub(crate) fn plain_at(&self, seq: u64) -> bool {
        self.copyable_at(seq, false)
    }

    /// Bytes charged for it (zero when uncharged).
    pub(crate) fn charged(&self) -> u64 {
        self.charge.as_ref().map_or(0, Charge::bytes)
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn starts(&self, i: usize) -> (usize, usize) {
        match i.checked_sub(1).and_then(|p| self.slots.get(p)) {
            Some(prev) => (prev.key_end as usize, prev.value_end as usize),
            None => (0, 0),
        }
    }

    /// Entry `i`'s key (`i < len()`).
    #[inline]
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let (start, _) = self.starts(i);
        self.slots
            .get(i)
            .map_or(&[], |s| &self.keys[start..s.key_end as usize])
    }

    /// Entry `i`'s sequence number.
    pub(crate) fn seq(&self, i: usize) -> u64 {
        self.slots.get(i).map_or(0, |s| s.seq)
    }

    /// Entry `i`'s value, `None` for a deletion.
    pub(crate) fn value(&self, i: usize) -> Option<&[u8]> {
        let deleted = self
            .deleted
            .get(i / 64)
            .is_none_or(|w| w & (1 << (i % 64)) != 0);
        if deleted {
            return None;
        }
        let (_, start) = self.starts(i);
        self.slots
            .get(i)
            .map(|s| &self.values[start..s.value_end as usize])
    }

    /// Entry `i`'s key and value, for a run known to hold no deletion (`i < len()`).
    #[inline]
    pub(crate) fn pair(&self, i: usize) -> (&[u8], &[u8]) {
        let (key_start, value_start) = self.starts(i);
        match self.slots.get(i) {
            Some(s) => (
                &self.keys[key_start..s.key_end as usize],
                &self.values[value_start..s.value_end as usize],
            ),
            None => (&[], &[]),
        }
    }

    /// Entry `i`, owned.
    pub(crate) fn entry(&self, i: usize) -> RunEntry {
        RunEntry {
            key: self.key(i).into(),
            seq: self.seq(i),
            value: self.value(i).map(Into::into),
        }
    }

    /// The first index in `from..to` where `pred` turns false (`pred` must be true then
    /// false along the run, as for `partition_point`).
    pub(crate) fn partition(
        &self,
        from: usize,
        to: usize,
        pred: impl Fn(&[u8], u64) -> bool,
    ) -> usize {
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.key(mid), self.seq(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Index of the first entry whose internal key is `>= (key, Reverse(seq))`; with
    /// `seq == u64::MAX`, the first entry whose user key is `>= key`.
    pub(crate) fn lower(&self, key: &[u8], seq: u64) -> usize {
        // The answer lies between the last block starting below `key` and the first block
        // starting above it: search the sparse index, then only that stretch of slots.
        let blocks = self.sparse_ends.len();
        let sparse_key = |b: usize| {
            let start = b.checked_sub(1).map_or(0, |p| self.sparse_ends[p] as usize);
            &self.sparse_keys[start..self.sparse_ends[b] as usize]
        };
        // Zero-padded big-endian prefixes order as the keys do (a smaller prefix means a
        // smaller key); only equal prefixes need the keys themselves. A key that leaves
        // the shared prefix is below or above every block at once.
        let shared = &self.sparse_keys[..self.prefix_len.min(self.sparse_keys.len())];
        let probe = match key.get(..shared.len()).map(|head| head.cmp(shared)) {
            Some(std::cmp::Ordering::Equal) => Some(prefix_u64(key, self.prefix_len)),
            _ => None,
        };
        // Block `b`'s first key against `key`.
        let block_vs_key = |b: usize| match probe.map(|p| self.sparse_prefixes[b].cmp(&p)) {
            Some(std::cmp::Ordering::Equal) | None => sparse_key(b).cmp(key),
            Some(order) => order,
        };
        let below = partition_point(blocks, |b| block_vs_key(b).is_lt());
        // Blocks starting exactly at `key` (a key with many versions) follow `below`.
        let mut not_above = below;
        while not_above < blocks && block_vs_key(not_above).is_le() {
            not_above += 1;
        }
        let hi = (not_above * SPARSE).min(self.len());
        // Block by block from the one before `below` (usually that block alone): the
        // answer is in the first block where the predicate turns false.
        let mut block = below.saturating_sub(1);
        loop {
            let (from, to) = (block * SPARSE, ((block + 1) * SPARSE).min(hi));
            if from >= hi {
                return hi;
            }
            let at = self.lower_in_block(block, from, to, key, seq);
            if at < to {
                return at;
            }
            block += 1;
        }
    }

    /// [`Run::lower`] within `from..to` of block `block`: the block's shared bytes against
    /// the probe's once, then a search over the entries' 2-byte prefixes, keys read only
    /// on a tie. (Zero-padded big-endian prefixes order as their keys do: a smaller
    /// prefix means a smaller key, whatever the sequence numbers.)
    fn lower_in_block(&self, block: usize, from: usize, to: usize, key: &[u8], seq: u64) -> usize {
        let start = block
            .checked_sub(1)
            .map_or(0, |p| self.sparse_ends[p] as usize);
        let shared = self.block_shared.get(block).map_or(0, |&n| usize::from(n));
        let head = &self.sparse_keys[start..start + shared];
        let probe_head = &key[..shared.min(key.len())];
        match probe_head.cmp(head) {
            std::cmp::Ordering::Less => return from, // every key of the block is above
            std::cmp::Ordering::Greater => return to, // every key is below
            std::cmp::Ordering::Equal => {}
        }
        let probe = prefix_u16(key, shared);
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let below = match self.entry_prefixes[mid].cmp(&probe) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    (self.key(mid), Reverse(self.seq(mid))) < (key, Reverse(seq))
                }
            };
            if below {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Entries in internal key order, laid out as a run lays them out: every key end to end
/// in one buffer, every value in another, and per entry where its key and value end.
/// [`RunBuilder::extend_from`] copies stretches of them whole: a run's (a compaction's
/// run before), or a memtable's copy ([`crate::memtable::Span`]).
pub(crate) trait Packed {
    /// Every key, end to end.
    fn key_bytes(&self) -> &[u8];
    /// Every value, end to end (a deletion's is empty).
    fn value_bytes(&self) -> &[u8];
    /// Where entry `i`'s key and value end in those, its sequence number, and whether it
    /// is a deletion.
    fn entry_end(&self, i: usize) -> (usize, usize, u64, bool);
    /// Whether no two entries share a key.
    fn all_unique(&self) -> bool;
    /// Whether any entry is a deletion.
    fn any_deletion(&self) -> bool;
    /// The highest sequence number of its entries.
    fn highest_seq(&self) -> u64;
    /// [`Packed::entry_end`] of entries `from..to`, in order.
    fn ends_between(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = (usize, usize, u64, bool)>;

    /// Where entry `i`'s key and value start: where the entry before ends.
    #[inline]
    fn entry_start(&self, i: usize) -> (usize, usize) {
        i.checked_sub(1).map_or((0, 0), |p| {
            let (key, value, _, _) = self.entry_end(p);
            (key, value)
        })
    }

    /// True when every entry is at or below `seq` as the only entry of its key, and none
    /// is a deletion unless `deletions` allows them: a merge at `seq` then takes every
    /// entry of a stretch, and may copy it whole ([`RunBuilder::extend_from`]).
    fn copyable_at(&self, seq: u64, deletions: bool) -> bool {
        self.all_unique() && (deletions || !self.any_deletion()) && self.highest_seq() <= seq
    }

    /// Entry `i`'s key.
    #[inline]
    fn entry_key(&self, i: usize) -> &[u8] {
        let (start, _) = self.entry_start(i);
        let (end, _, _, _) = self.entry_end(i);
        self.key_bytes().get(start..end).unwrap_or_default()
    }
}

impl Packed for Run {
    fn key_bytes(&self) -> &[u8] {
        &self.keys
    }

    fn value_bytes(&self) -> &[u8] {
        &self.values
    }

    #[inline]
    fn entry_end(&self, i: usize) -> (usize, usize, u64, bool) {
        self.packed_end(i, self.slots[i])
    }

    fn all_unique(&self) -> bool {
        self.unique
    }

    fn any_deletion(&self) -> bool {
        self.any_deleted
    }

    fn highest_seq(&self) -> u64 {
        self.max_seq
    }

    fn ends_between(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = (usize, usize, u64, bool)> {
        let slots = self.slots.get(from..to).unwrap_or_default();
        slots
            .iter()
            .zip(from..)
            .map(|(&slot, i)| self.packed_end(i, slot))
    }
}

impl Run {
    /// [`Packed::entry_end`] of entry `i`, whose slot is `slot`.
    #[inline]
    fn packed_end(&self, i: usize, slot: Slot) -> (usize, usize, u64, bool) {
        let deleted = self.any_deleted && self.deleted[i / 64] & (1 << (i % 64)) != 0;
        (
            slot.key_end as usize,
            slot.value_end as usize,
            slot.seq,
            deleted,
        )
    }
}

/// A run built one entry at a time, in internal key order: a load streams a disk
/// iterator straight into the arenas, a compaction its merge.
#[derive(Debug)]
pub(crate) struct RunBuilder {
    run: Run,
}

impl RunBuilder {
    /// Bytes a run spends per entry beyond its key and value: its slot, its 2-byte
    /// prefix and its share of the deletion bits and block index (about).
    pub(crate) const ENTRY_OVERHEAD: u64 = std::mem::size_of::<Slot>() as u64 + 3;

    /// A builder with room for `len` entries of `key_bytes` and `value_bytes` in all
    /// (more may come: the arenas grow).
    pub(crate) fn with_capacity(len: usize, key_bytes: usize, value_bytes: usize) -> Self {
        let mut run = Run::unbuilt();
        run.keys = Vec::with_capacity(key_bytes);
        run.values = Vec::with_capacity(value_bytes);
        run.slots = Vec::with_capacity(len);
        run.deleted = Vec::with_capacity(len.div_ceil(64));
        run.sparse_ends = Vec::with_capacity(len.div_ceil(SPARSE));
        run.block_shared = Vec::with_capacity(len.div_ceil(SPARSE));
        run.entry_prefixes = Vec::with_capacity(len);
        RunBuilder { run }
    }

    /// Entries pushed.
    pub(crate) fn len(&self) -> usize {
        self.run.slots.len()
    }

    /// Makes room for `entries` more entries of `key_bytes` and `value_bytes` in all, as
    /// far as the allocator grants it: a hint, so that a builder whose size is known
    /// roughly does not grow (copy its arenas, and touch new memory) step by step. Room
    /// left unused is given back by [`RunBuilder::finish`].
    pub(crate) fn reserve(&mut self, entries: usize, key_bytes: usize, value_bytes: usize) {
        let run = &mut self.run;
        // A refused reservation only leaves the growth to each push, as without one.
        let _ = (run.keys.try_reserve_exact(key_bytes))
            .and_then(|()| run.values.try_reserve_exact(value_bytes))
            .and_then(|()| run.slots.try_reserve_exact(entries))
            .and_then(|()| run.entry_prefixes.try_reserve_exact(entries))
            .and_then(|()| run.deleted.try_reserve_exact(entries.div_ceil(64)))
            .and_then(|()| run.sparse_ends.try_reserve_exact(entries.div_ceil(SPARSE)))
            .and_then(|()| run.block_shared.try_reserve_exact(entries.div_ceil(SPARSE)));
    }

    /// [`RunBuilder::reserve`], in the arrays of a run dropped lately when the builder
    /// has no room yet and some fit ([`SpareRuns::take`]): memory touched already, which
    /// a large load or merge does not fault in page by page again.
    pub(crate) fn reserve_reusing(
        &mut self,
        spares: &SpareRuns,
        entries: usize,
        key_bytes: usize,
        value_bytes: usize,
    ) {
        let want = (key_bytes + value_bytes) as u64 + entries as u64 * Self::ENTRY_OVERHEAD;
        if self.run.heap_bytes() == 0
            && let Some(mut spare) = spares.take(want)
        {
            self.run.swap_arrays(&mut spare);
        }
        self.reserve(entries, key_bytes, value_bytes);
    }

    /// Bytes it holds so far (what the run will charge, about).
    pub(crate) fn bytes(&self) -> u64 {
        let run = &self.run;
        (run.keys.len() + run.values.len() + run.slots.len() * std::mem::size_of::<Slot>()) as u64
    }

    /// The last key pushed.
    pub(crate) fn last_key(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).map(|i| self.run.key(i))
    }

    /// Appends an entry, which must come after every one before it in internal order.
    ///
    /// # Errors
    /// [`MemError::RunTooLarge`] when its keys or values pass 4 GiB.
    pub(crate) fn push(
        &mut self,
        key: &[u8],
        seq: u64,
        value: Option<&[u8]>,
    ) -> Result<(), MemError> {
        if self.last_key() == Some(key) {
            self.run.unique = false;
        }
        self.push_above(key, seq, value)
    }

    /// [`RunBuilder::push`] for a key known to lie above the last one pushed (a load's,
    /// which checks its order itself): no second comparison with the last key.
    ///
    /// # Errors
    /// As `push`.
    pub(crate) fn push_above(
        &mut self,
        key: &[u8],
        seq: u64,
        value: Option<&[u8]>,
    ) -> Result<(), MemError> {
        let run = &mut self.run;
        let key_end = run.keys.len() + key.len();
        let value_end = run.values.len() + value.map_or(0, <[u8]>::len);
        let (Ok(key_end), Ok(value_end)) = (u32::try_from(key_end), u32::try_from(value_end))
        else {
            return Err(MemError::RunTooLarge {
                keys: key_end as u64,
                values: value_end as u64,
            });
        };
        let i = run.slots.len();
        if i.is_multiple_of(SPARSE) {
            run.sparse_keys.extend_from_slice(key);
            run.sparse_ends
                .push(u32::try_from(run.sparse_keys.len()).unwrap_or(u32::MAX));
        }
        run.max_seq = run.max_seq.max(seq);
        run.keys.extend_from_slice(key);
        if i.is_multiple_of(64) {
            run.deleted.push(0);
        }
        match value {
            Some(v) => run.values.extend_from_slice(v),
            None => {
                if let Some(word) = run.deleted.last_mut() {
                    *word |= 1 << (i % 64);
                }
                run.any_deleted = true;
            }
        }
        run.slots.push(Slot {
            key_end,
            value_end,
            seq,
        });
        if run.slots.len().is_multiple_of(SPARSE) {
            run.close_block();
        }
        Ok(())
    }

    /// Appends entries `from..to` of `src` (a run, or a memtable's copy; `to` at most its
    /// length), which must all come after every entry pushed: their keys and values
    /// copied in two blocks, their ends moved by one offset each, instead of one push per
    /// entry. What it builds is what pushing them one by one builds.
    ///
    /// # Errors
    /// As `push`; nothing is appended then.
    pub(crate) fn extend_from<P: Packed>(
        &mut self,
        src: &P,
        from: usize,
        to: usize,
    ) -> Result<(), MemError> {
        let Some(last) = to.checked_sub(1).filter(|_| from < to) else {
            return Ok(());
        };
        // A key twice: at the seam, or within the stretch of a source that has some.
        let twice = || (from + 1..to).any(|j| src.entry_key(j - 1) == src.entry_key(j));
        if self.last_key() == Some(src.entry_key(from)) || (!src.all_unique() && twice()) {
            self.run.unique = false;
        }
        let run = &mut self.run;
        let (key_start, value_start) = src.entry_start(from);
        let (key_stop, value_stop, _, _) = src.entry_end(last);
        let key_end = run.keys.len() + (key_stop - key_start);
        let value_end = run.values.len() + (value_stop - value_start);
        if u32::try_from(key_end).is_err() || u32::try_from(value_end).is_err() {
            return Err(MemError::RunTooLarge {
                keys: key_end as u64,
                values: value_end as u64,
            });
        }
        // Both ends fit in u32, so every offset on either side does: an entry's new end
        // is its end, less where the stretch starts, plus where it lands.
        let (key_to, value_to) = (run.keys.len(), run.values.len());
        let moved = |end: usize, from: usize, to: usize| (end - from + to) as u32;
        run.keys
            .extend_from_slice(&src.key_bytes()[key_start..key_stop]);
        run.values
            .extend_from_slice(&src.value_bytes()[value_start..value_stop]);
        let mut i = from;
        while i < to {
            // Up to the end of the block being filled: its first key goes to the sparse
            // index, and a whole block is closed.
            let at = run.slots.len();
            let stop = to.min(i + (SPARSE - at % SPARSE));
            if at.is_multiple_of(SPARSE) {
                run.sparse_keys.extend_from_slice(src.entry_key(i));
                run.sparse_ends
                    .push(u32::try_from(run.sparse_keys.len()).unwrap_or(u32::MAX));
            }
            // The deletion bitmap's words for the new slots first, then the slots in one
            // extend: no growth check and no bitmap word per entry.
            run.deleted.resize((at + (stop - i)).div_ceil(64), 0);
            let (deleted_bits, mut any_deleted, mut max_seq) =
                (&mut run.deleted, false, run.max_seq);
            run.slots.extend(src.ends_between(i, stop).zip(at..).map(
                |((key_end, value_end, seq, deleted), k)| {
                    if deleted {
                        if let Some(word) = deleted_bits.get_mut(k / 64) {
                            *word |= 1 << (k % 64);
                        }
                        any_deleted = true;
                    }
                    max_seq = max_seq.max(seq);
                    Slot {
                        key_end: moved(key_end, key_start, key_to),
                        value_end: moved(value_end, value_start, value_to),
                        seq,
                    }
                },
            ));
            run.any_deleted |= any_deleted;
            run.max_seq = max_seq;
            if run.slots.len().is_multiple_of(SPARSE) {
                run.close_block();
            }
            i = stop;
        }
        Ok(())
    }

    /// The run, its unused room given back, charged to `tracker` if given (a transient
    /// copy is not).
    pub(crate) fn finish(self, tracker: Option<&Arc<MemoryTracker>>) -> Run {
        let mut run = self.run;
        if run.block_shared.len() < run.sparse_ends.len() {
            run.close_block(); // the last block, short
        }
        // Keys are in order, so the prefix all of them share is the first's and the last's.
        run.prefix_len = match (run.len().checked_sub(1), run.len()) {
            (Some(last), _) => {
                let (first, last) = (run.key(0), run.key(last));
                first.iter().zip(last).take_while(|(a, b)| a == b).count()
            }
            _ => 0,
        };
        run.sparse_prefixes = (0..run.sparse_ends.len())
            .map(|b| {
                let start = b.checked_sub(1).map_or(0, |p| run.sparse_ends[p] as usize);
                prefix_u64(
                    &run.sparse_keys[start..run.sparse_ends[b] as usize],
                    run.prefix_len,
                )
            })
            .collect();
        run.keys.shrink_to_fit();
        run.values.shrink_to_fit();
        run.slots.shrink_to_fit();
        run.deleted.shrink_to_fit();
        run.sparse_keys.shrink_to_fit();
        run.sparse_ends.shrink_to_fit();
        run.block_shared.shrink_to_fit();
        run.entry_prefixes.shrink_to_fit();
        match tracker {
            Some(tracker) => run.charged_to(tracker),
            None => run,
        }
    }
}

impl Run {
    /// The last block is whole (or the run ends): its shared length (its first and last
    /// keys', which every key between shares) and its entries' prefixes.
    fn close_block(&mut self) {
        let block = self.block_shared.len();
        let (first, end) = (block * SPARSE, ((block + 1) * SPARSE).min(self.len()));
        if first >= end {
            return;
        }
        let (a, b) = (self.key(first), self.key(end - 1));
        let shared = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let shared = shared.min(usize::from(u16::MAX));
        self.block_shared.push(shared as u16);
        // The keys one after the other from the first's start: no lookup per entry, and
        // the two bytes read straight from the key bytes.
        let mut start = self.starts(first).0;
        let keys = &self.keys;
        let slots = self.slots.get(first..end).unwrap_or_default();
        self.entry_prefixes.extend(slots.iter().map(|slot| {
            let (at, end) = (start + shared, slot.key_end as usize);
            start = end;
            two_bytes_at(keys, at, end)
        }));
    }
}

/// Charged runs and memtable copies holding at least this many bytes leave their arrays
/// to [`SpareRuns`] when they drop; smaller ones free them (the allocator reuses small
/// blocks itself).
pub(crate) const SPARE_MIN_BYTES: u64 = 1 << 20;

/// Sets of arrays [`SpareRuns`] keeps at most.
const SPARES_KEPT: usize = 6;

/// Calls of [`SpareRuns::age`] a set of spare arrays waits for a run to take it before it
/// is freed (with the engine's ticker, about a second).
pub(crate) const SPARE_TICKS: u32 = 10;

/// One set of arrays [`SpareRuns`] keeps: a run's, or the buffers of a memtable's copy
/// (a [`Span`](crate::memtable::Span), which a compaction builds and drops each time).
#[derive(Debug)]
pub(crate) enum Spare {
    Run(Run),
    Span(SpanBuffers),
}

impl Spare {
    fn heap_bytes(&self) -> u64 {
        match self {
            Spare::Run(run) => run.heap_bytes(),
            Spare::Span(buffers) => buffers.heap_bytes(),
        }
    }

    fn is_span(&self) -> bool {
        matches!(self, Spare::Span(_))
    }

    /// Empties it, keeping its room.
    fn clear(&mut self) {
        match self {
            Spare::Run(run) => run.clear(),
            Spare::Span(buffers) => buffers.clear(),
        }
    }
}

/// The arrays of large runs dropped lately (an evicted range's, a run a compaction
/// replaced) and of the memtable copies a compaction merged, emptied and kept for the
/// next of their kind built — a load's or a merge's run, a compaction's copy — instead of
/// handed back to the system and faulted in again page by page. They are not charged:
/// a set is kept only while the sets together fit the room under the hard limit (what
/// the charge of the run dropping leaves), and [`SpareRuns::age`] frees the sets nothing
/// took lately and, largest first, those that no longer fit that room.
#[derive(Debug, Default)]
pub(crate) struct SpareRuns {
    /// Each set, emptied (no entries, charged nowhere), with the ages it waited.
    kept: Mutex<Vec<(Spare, u32)>>,
    bytes: AtomicU64,
}

impl SpareRuns {
    /// Bytes the kept sets hold.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Spare, u32)>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `arrays` if they fit `room` beside the sets kept, else frees them. With
    /// [`SPARES_KEPT`] sets kept already, the smallest gives way to larger arrays that
    /// fit the room in its stead: a larger set spares more pages, and a region's runs
    /// grow.
    pub(crate) fn keep(&self, mut arrays: Spare, room: u64) {
        arrays.clear();
        let bytes = arrays.heap_bytes();
        let mut kept = self.lock();
        let mut given_way = None;
        if kept.len() >= SPARES_KEPT {
            let smallest = (0..kept.len()).min_by_key(|&i| kept[i].0.heap_bytes());
            let gives_way = |i: usize| {
                let smaller = kept[i].0.heap_bytes();
                smaller < bytes && self.bytes().saturating_sub(smaller) + bytes <= room
            };
            if let Some(i) = smallest.filter(|&i| gives_way(i)) {
                let (smaller, _) = kept.swap_remove(i);
                self.bytes.fetch_sub(smaller.heap_bytes(), Ordering::AcqRel);
                given_way = Some(smaller);
            }
        }
        let freed = if kept.len() < SPARES_KEPT && self.bytes() + bytes <= room {
            kept.push((arrays, 0));
            self.bytes.fetch_add(bytes, Ordering::AcqRel);
            None
        } else {
            Some(arrays)
        };
        drop(kept);
        drop((given_way, freed)); // freed outside the lock
    }

    /// The kept set of a run's arrays that best holds `want` bytes: the smallest at least
    /// that large, else the largest (the builder grows it, and the pages it had are
    /// spared all the same); none is taken for a run too small to leave its arrays.
    pub(crate) fn take(&self, want: u64) -> Option<Run> {
        match self.take_kind(want, false)? {
            Spare::Run(run) => Some(run),
            Spare::Span(_) => None,
        }
    }

    /// [`SpareRuns::take`] for the buffers of a memtable's copy.
    pub(crate) fn take_span(&self, want: u64) -> Option<SpanBuffers> {
        match self.take_kind(want, true)? {
            Spare::Span(buffers) => Some(buffers),
            Spare::Run(_) => None,
        }
    }

    fn take_kind(&self, want: u64, span: bool) -> Option<Spare> {
        if want < SPARE_MIN_BYTES || self.bytes() == 0 {
            return None;
        }
        let mut kept = self.lock();
        let size = |i: usize| kept[i].0.heap_bytes();
        let of_kind = (0..kept.len()).filter(|&i| kept[i].0.is_span() == span);
        let fits = of_kind
            .clone()
            .filter(|&i| size(i) >= want)
            .min_by_key(|&i| size(i));
        let best = fits.or_else(|| of_kind.max_by_key(|&i| size(i)))?;
        let (arrays, _) = kept.swap_remove(best);
        self.bytes.fetch_sub(arrays.heap_bytes(), Ordering::AcqRel);
        Some(arrays)
    }

    /// One tick of the sets' clock: frees those nothing took for [`SPARE_TICKS`] ticks,
    /// then the largest while the sets pass `room`; returns the bytes freed.
    pub(crate) fn age(&self, room: u64) -> u64 {
        let mut freed = Vec::new();
        {
            let mut kept = self.lock();
            kept.retain_mut(|(arrays, age)| {
                *age += 1;
                let keep = *age < SPARE_TICKS;
                if !keep {
                    freed.push(std::mem::replace(arrays, Spare::Run(Run::unbuilt())));
                }
                keep
            });
            kept.sort_by_key(|(arrays, _)| arrays.heap_bytes());
            let mut bytes: u64 = kept.iter().map(|(a, _)| a.heap_bytes()).sum();
            while bytes > room
                && let Some((arrays, _)) = kept.pop()
            {
                bytes -= arrays.heap_bytes();
                freed.push(arrays);
            }
            self.bytes.store(bytes, Ordering::Release);
        }
        freed.iter().map(Spare::heap_bytes).sum() // freed as `freed` drops, outside the lock
    }
}

impl Run {
    /// Empties it, keeping its room.
    fn clear(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.slots.clear();
        self.deleted.clear();
        self.sparse_keys.clear();
        self.sparse_ends.clear();
        self.sparse_prefixes.clear();
        self.block_shared.clear();
        self.entry_prefixes.clear();
    }
}

impl Drop for Run {
    /// A charged run large enough leaves its arrays to its tracker's [`SpareRuns`], in
    /// the room under the hard limit that its charge, given back next, leaves.
    fn drop(&mut self) {
        let Some(charge) = &self.charge else {
            return;
        };
        if self.heap_bytes() < SPARE_MIN_BYTES {
            return;
        }
        let tracker = Arc::clone(charge.tracker());
        let after = tracker.used().saturating_sub(charge.bytes());
        let room = tracker.hard_limit().saturating_sub(after);
        let mut arrays = Run::unbuilt();
        arrays.swap_arrays(self);
        tracker.spares.keep(Spare::Run(arrays), room);
    }
}

/// The 2 bytes of `key` after its first `skip`, big-endian, zero-padded.
fn prefix_u16(key: &[u8], skip: usize) -> u16 {
    two_bytes_at(key, skip, key.len())
}

/// The 2 bytes of `bytes` from `at`, big-endian, those at or past `end` read as zeros.
#[inline]
fn two_bytes_at(bytes: &[u8], at: usize, end: usize) -> u16 {
    match bytes.get(at..end.min(at + 2)) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        Some(&[a]) => u16::from(a) << 8,
        _ => 0,
    }
}

/// The 8 bytes of `key` after its first `skip`, big-endian, zero-padded.
fn prefix_u64(key: &[u8], skip: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let tail = key.get(skip..).unwrap_or_default();
    let n = tail.len().min(8);
    bytes[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(bytes)
}

/// The first index in `0..len` where `pred` turns false.
pub(crate) fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A source a read can search: a run or a memtable.
pub(crate) enum Layer<'a> {
    Run(&'a Run),
    Mem(&'a Memtable),
}

impl Layer<'_> {
    /// The newest entry of `key` with sequence `<= seq`: `(seq, value)`.
    pub(crate) fn get(&self, key: &[u8], seq: u64) -> Option<(u64, IValue)> {
        match self {
            Layer::Run(run) => {
                let i = run.lower(key, seq);
                (i < run.len() && run.key(i) == key)
                    .then(|| (run.seq(i), run.value(i).map(Into::into)))
            }
            Layer::Mem(mem) => mem.get(key, seq),
        }
    }

    /// The smallest user key after `key` (or at it, when `inclusive`) with any entry.
    pub(crate) fn next_key(&self, key: &[u8], inclusive: bool) -> Option<Box<[u8]>> {
        // Entries of `key` itself run from (key, MAX) down to (key, 0).
        let seq = if inclusive { u64::MAX } else { 0 };
        match self {
            Layer::Run(run) => {
                let mut at = run.lower(key, seq);
                if !inclusive {
                    while at < run.len() && run.key(at) == key {
                        at += 1;
                    }
                }
                (at < run.len()).then(|| run.key(at).into())
            }
            Layer::Mem(mem) => mem.next_key(key, inclusive),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Keys from a small alphabet with zero bytes (ties in zero-padded prefixes, keys that
    /// are prefixes of others), some with many versions, all behind a prefix of `shared`
    /// bytes.
    fn keys() -> impl Strategy<Value = Vec<(Vec<u8>, u64)>> {
        let byte = prop::sample::select(vec![0u8, 1, b'a', 0xff]);
        (
            0usize..20,
            prop::collection::btree_set((prop::collection::vec(byte, 0..10), 1u64..5), 0..400),
        )
            .prop_map(|(shared, set)| {
                let mut entries: Vec<(Vec<u8>, u64)> = set
                    .into_iter()
                    .map(|(k, seq)| ([vec![7u8; shared], k].concat(), seq))
                    .collect();
                entries.sort_by(|a, b| (&a.0, Reverse(a.1)).cmp(&(&b.0, Reverse(b.1))));
                entries
            })
    }

    proptest! {
        /// `lower` (sparse index, block prefixes, entry prefixes) agrees with a scan for
        /// any keys and probes, the probes' sequence numbers included.
        #[test]
        fn lower_agrees_with_a_scan_for_any_keys(
            entries in keys(),
            probes in prop::collection::vec(
                (prop::collection::vec(prop::sample::select(vec![0u8, 1, 7, b'a', 0xff]), 0..30), 0u64..6),
                1..60,
            ),
        ) {
            let run_entries: Vec<RunEntry> = entries
                .iter()
                .map(|(k, seq)| RunEntry { key: k.clone().into(), seq: *seq, value: Some(vec![1].into()) })
                .collect();
            let run = Run::new(&run_entries, None).unwrap();
            let mut probes = probes;
            probes.extend(entries.iter().map(|(k, seq)| (k.clone(), *seq)));
            // Keys cut short: probes that end inside a block's shared head.
            for cut in 1..4 {
                probes.extend(entries.iter().map(|(k, seq)| (k[..k.len().saturating_sub(cut)].to_vec(), *seq)));
            }
            for (probe, seq) in probes {
                let seq = if seq == 5 { u64::MAX } else { seq };
                let expected = entries
                    .iter()
                    .position(|(k, s)| (k.as_slice(), Reverse(*s)) >= (probe.as_slice(), Reverse(seq)))
                    .unwrap_or(entries.len());
                prop_assert_eq!(run.lower(&probe, seq), expected, "probe {:?} seq {}", probe, seq);
            }
        }
    }

    /// Every array of a run, to compare two runs whole.
    #[allow(clippy::type_complexity, reason = "a test's tuple of every field")]
    fn arrays(
        run: &Run,
    ) -> (
        (&[u8], &[u8], Vec<(u32, u32, u64)>, &[u64]),
        (&[u8], &[u32], &[u64], usize, &[u16], &[u16]),
        (bool, u64, bool),
    ) {
        let slots = run
            .slots
            .iter()
            .map(|s| (s.key_end, s.value_end, s.seq))
            .collect();
        (
            (&run.keys, &run.values, slots, &run.deleted),
            (
                &run.sparse_keys,
                &run.sparse_ends,
                &run.sparse_prefixes,
                run.prefix_len,
                &run.block_shared,
                &run.entry_prefixes,
            ),
            (run.unique, run.max_seq, run.any_deleted),
        )
    }

    proptest! {
        /// A stretch of one run copied into a builder between entries pushed one by one
        /// builds, array for array, what pushing every entry one by one builds: keys,
        /// values and deletions, blocks and their prefixes, and the run's facts.
        #[test]
        fn a_copied_stretch_builds_what_pushes_build(
            entries in keys(),
            deletions in prop::collection::vec(prop::bool::weighted(0.02), 400),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 4),
        ) {
            let entries: Vec<RunEntry> = (entries.into_iter().zip(deletions).enumerate())
                .map(|(i, ((key, seq), deleted))| RunEntry {
                    key: key.into(),
                    seq,
                    value: (!deleted).then(|| vec![b'v'; i % 5].into()),
                })
                .collect();
            let source = Run::new(&entries, None).unwrap();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(entries.len() + 1)).collect();
            cuts.sort_unstable();
            let [a, b, c, d] = cuts[..] else { unreachable!("four cuts") };
            let push = |builder: &mut RunBuilder, range: std::ops::Range<usize>| {
                for e in &entries[range] {
                    builder.push(&e.key, e.seq, e.value.as_deref()).unwrap();
                }
            };
            let mut copied = RunBuilder::with_capacity(0, 0, 0);
            push(&mut copied, a..b);
            copied.extend_from(&source, b, c).unwrap();
            push(&mut copied, c..d);
            let mut pushed = RunBuilder::with_capacity(0, 0, 0);
            push(&mut pushed, a..d);
            let (copied, pushed) = (copied.finish(None), pushed.finish(None));
            prop_assert_eq!(arrays(&copied), arrays(&pushed));
        }
    }

    /// `lower` through the sparse index agrees with a plain scan, for keys with many
    /// versions spanning blocks, and for probes between, before and after all keys.
    #[test]
    fn sparse_lookup_agrees_with_a_scan() {
        let mut entries = Vec::new();
        for k in 0..40u8 {
            let versions = 1 + u64::from(k % 7) * 13; // up to 79 versions: several blocks
            for seq in (1..=versions).rev() {
                entries.push(RunEntry {
                    key: vec![b'k', k * 2].into(),
                    seq,
                    value: Some(vec![k].into()),
                });
            }
        }
        let run = Run::new(&entries, None).unwrap();
        for probe in 0..=81u8 {
            for seq in [0, 1, 5, 40, 79, u64::MAX] {
                let key = [b'k', probe];
                let expected = entries
                    .iter()
                    .position(|e| (&*e.key, Reverse(e.seq)) >= (&key[..], Reverse(seq)))
                    .unwrap_or(entries.len());
                assert_eq!(run.lower(&key, seq), expected, "probe {probe} seq {seq}");
            }
        }
        assert_eq!(run.lower(b"a", 0), 0);
        assert_eq!(run.lower(b"z", 0), entries.len());
    }

    /// The same with a long prefix every key shares and keys whose next 8 bytes tie (the
    /// `u64` prefixes then compare equal), probed with keys inside, between, shorter than
    /// the shared prefix, and leaving it either way.
    #[test]
    fn sparse_lookup_with_a_shared_prefix_and_tied_prefixes() {
        let entries: Vec<RunEntry> = (0..600u64)
            .map(|i| {
                let suffix = ["", "a", "b"][(i % 3) as usize];
                RunEntry {
                    key: format!("shared-prefix/{:012}{suffix}", i / 3)
                        .into_bytes()
                        .into(),
                    seq: 1,
                    value: Some(vec![1].into()),
                }
            })
            .collect();
        let run = Run::new(&entries, None).unwrap();
        assert!(run.plain_at(1) && !run.plain_at(0));
        let mut probes: Vec<Vec<u8>> = Vec::new();
        for e in &entries {
            probes.push(e.key.to_vec());
            probes.push([&e.key[..], b"\0"].concat());
            probes.push(e.key[..e.key.len() - 1].to_vec());
        }
        for p in [
            "",
            "a",
            "shared",
            "shared-prefix/",
            "shared-prefix/9",
            "shared-prefiy",
            "z",
        ] {
            probes.push(p.as_bytes().to_vec());
        }
        for probe in &probes {
            let expected = entries
                .iter()
                .position(|e| &*e.key >= probe.as_slice())
                .unwrap_or(entries.len());
            assert_eq!(
                run.lower(probe, u64::MAX),
                expected,
                "{}",
                probe.escape_ascii()
            );
        }
    }

    /// `n` entries of 100-byte values, in order: about 120 bytes of arrays each.
    fn entries(n: usize, value: u8) -> Vec<RunEntry> {
        (0..n)
            .map(|i| RunEntry {
                key: format!("{}{i:08}", char::from(value)).into_bytes().into(),
                seq: 5,
                value: Some(vec![value; 100].into()),
            })
            .collect()
    }

    fn tracker(hard_limit: u64) -> Arc<MemoryTracker> {
        MemoryTracker::new(hard_limit, hard_limit / 2)
    }

    #[test]
    fn a_large_run_leaves_its_arrays_and_the_next_builder_fills_them_afresh() {
        let tracker = tracker(1 << 30);
        let mut first = entries(20_000, b'a');
        first.iter_mut().step_by(3).for_each(|e| e.value = None); // deletion bits
        let run = Run::new(&first, Some(&tracker)).unwrap();
        let (bytes, keys_at) = (run.heap_bytes(), run.keys.as_ptr());
        assert!(bytes >= SPARE_MIN_BYTES);
        drop(run);
        assert_eq!((tracker.used(), tracker.spares.bytes()), (0, bytes));
        // A smaller run of other values, built in them: nothing of the first shows.
        let second = entries(15_000, b'b');
        let mut builder = RunBuilder::with_capacity(0, 0, 0);
        builder.reserve_reusing(&tracker.spares, second.len(), 15_000 * 9, 15_000 * 100);
        assert_eq!(builder.run.keys.as_ptr(), keys_at, "the same arrays");
        assert_eq!(tracker.spares.bytes(), 0);
        for e in &second {
            builder
                .push_above(&e.key, e.seq, e.value.as_deref())
                .unwrap();
        }
        let run = builder.finish(Some(&tracker));
        assert_eq!(run.len(), second.len());
        for (i, e) in second.iter().enumerate() {
            assert_eq!((run.key(i), run.seq(i)), (&*e.key, e.seq));
            assert_eq!(run.value(i), e.value.as_deref());
            // Through the sparse index and block prefixes too, rebuilt in the same arrays.
            assert_eq!(run.lower(&e.key, e.seq), i);
        }
        assert_eq!(
            run.lower(b"b00015000", 5),
            second.len(),
            "past the last key"
        );
        assert_eq!(run.lower(b"a00000000", 5), 0, "before the first");
        assert_eq!(tracker.used(), run.heap_bytes(), "charged as built");
    }

    #[test]
    fn small_uncharged_or_roomless_runs_free_their_arrays() {
        let tracker = tracker(1 << 30);
        drop(Run::new(&entries(1_000, b'a'), Some(&tracker)).unwrap()); // under 1 MiB
        drop(Run::new(&entries(20_000, b'a'), None).unwrap()); // a transient copy
        assert_eq!(tracker.spares.bytes(), 0);
        // Kept only in the room its own charge leaves under the hard limit.
        let run = Run::new(&entries(20_000, b'a'), Some(&tracker)).unwrap();
        let bytes = run.heap_bytes();
        tracker.set_limits(bytes - 1, 0);
        drop(run);
        assert_eq!(tracker.spares.bytes(), 0);
        tracker.set_limits(1 << 30, 0);
        let runs: Vec<Run> = (0..SPARES_KEPT + 1)
            .map(|_| Run::new(&entries(20_000, b'a'), Some(&tracker)).unwrap())
            .collect();
        drop(runs);
        assert_eq!(
            tracker.spares.bytes(),
            bytes * SPARES_KEPT as u64,
            "at most four"
        );
    }

    #[test]
    fn a_builder_takes_the_best_fit_and_ticks_free_what_nobody_takes() {
        let tracker = tracker(1 << 30);
        let sizes: Vec<u64> = [10_000, 40_000]
            .map(|n| {
                let run = Run::new(&entries(n, b'a'), Some(&tracker)).unwrap();
                run.heap_bytes()
            })
            .to_vec();
        let (small, large) = (sizes[0], sizes[1]);
        let spares = &tracker.spares;
        assert_eq!(spares.bytes(), small + large);
        assert!(
            spares.take(small / 4).is_none(),
            "too small a run to reuse arrays"
        );
        for (want, expect) in [(small, Some(small)), (small + 1, Some(large))] {
            let taken = spares.take(want).map(|run| run.heap_bytes());
            assert_eq!(taken, expect, "want {want}");
            let run = Run::new(&entries(10_000, b'a'), None).unwrap();
            spares.keep(Spare::Run(run), u64::MAX);
        }
        // Two small ones now: none fits three times their size, so the largest is taken
        // (the builder grows it), and none of a memtable copy's.
        let grown = spares.take(3 * small).unwrap();
        assert_eq!(grown.heap_bytes(), small);
        assert!(
            spares.take_span(small).is_none(),
            "a run's arrays for a copy"
        );
        spares.keep(Spare::Run(grown), u64::MAX);
        // Room for one: the largest goes first; then age frees the rest.
        let run = Run::new(&entries(40_000, b'a'), None).unwrap();
        spares.keep(Spare::Run(run), u64::MAX);
        let kept = spares.bytes();
        assert_eq!(spares.age(kept - 1), large);
        for tick in 1..SPARE_TICKS - 1 {
            assert_eq!(spares.age(u64::MAX), 0, "tick {tick}");
        }
        assert_eq!(spares.age(u64::MAX), kept - large);
        assert_eq!(spares.bytes(), 0);
    }

    #[test]
    fn with_every_place_taken_the_smallest_set_gives_way_to_a_larger() {
        let spares = SpareRuns::default();
        let arrays = |n| Run::new(&entries(n, b'a'), None).unwrap();
        let small = arrays(10_000).heap_bytes();
        for _ in 0..SPARES_KEPT {
            spares.keep(Spare::Run(arrays(10_000)), u64::MAX);
        }
        assert_eq!(spares.bytes(), SPARES_KEPT as u64 * small);
        let large = arrays(40_000).heap_bytes();
        spares.keep(Spare::Run(arrays(40_000)), u64::MAX);
        let after = (SPARES_KEPT as u64 - 1) * small + large;
        assert_eq!(spares.bytes(), after, "one small set gave way");
        spares.keep(Spare::Run(arrays(5_000)), u64::MAX);
        assert_eq!(spares.bytes(), after, "a smaller set than all is freed");
        let larger = Spare::Run(arrays(80_000));
        spares.keep(larger, after);
        assert_eq!(spares.bytes(), after, "no room for it: the smallest stays");
        assert_eq!(spares.take(large).map(|run| run.heap_bytes()), Some(large));
    }
}
