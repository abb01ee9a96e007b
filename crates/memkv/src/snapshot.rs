//! [`Snapshot`]: a range at one sequence number, and its bounded iterators.

use std::cmp::{Ordering, Reverse};
use std::sync::Arc;

use crate::layer::{IValue, Layer, Run, RunEntry};
use crate::store::{CfLayers, RangeData, Version};
use crate::{Cf, KeyRange, MemError, RangeId};
use ime_types::LaneRef;

/// A consistent view of one range at one sequence number. It holds `Arc`s to the layers
/// it reads: no lock and no epoch guard for its lifetime, and writers are never blocked.
#[derive(Debug, Clone)]
pub struct Snapshot {
    id: RangeId,
    seq: u64,
    /// The range's layers when it was taken, with its bounds.
    version: LaneRef<Version>,
}

impl Snapshot {
    pub(crate) fn new(range: &RangeData, seq: u64) -> Self {
        Snapshot {
            id: range.id,
            seq,
            version: range.version_by_lane(),
        }
    }

    /// The sequence number it sees up to, inclusive.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The bounds of the range it reads.
    pub fn bounds(&self) -> &KeyRange {
        &self.version.bounds
    }

    /// The range it reads.
    pub fn range(&self) -> RangeId {
        self.id
    }

    /// The value of `key` in `cf`, if any.
    #[inline]
    pub fn get(&self, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
        if !self.version.bounds.contains_key(key) {
            return None; // after a split, the layers may hold keys of a sibling
        }
        visible(&self.version.cfs[cf.index()], key, self.seq).map(|v| v.into_vec())
    }

    /// The first key in `bounds` (within the range) with a visible value in `cf`, and
    /// that value: a point lookup where a cursor would cost its setup.
    #[inline]
    pub fn first_in(&self, cf: Cf, bounds: &KeyRange) -> Option<(Vec<u8>, Vec<u8>)> {
        self.first_in_with(cf, bounds, |key, value| (key.to_vec(), value.to_vec()))
    }

    /// [`Snapshot::first_in`], the key and value handed to `f` where they lie instead of
    /// copied out: what `f` returns.
    #[inline]
    pub fn first_in_with<R>(
        &self,
        cf: Cf,
        bounds: &KeyRange,
        f: impl FnOnce(&[u8], &[u8]) -> R,
    ) -> Option<R> {
        let layers = &self.version.cfs[cf.index()];
        let start = bounds.start().max(self.version.bounds.start());
        if layers.delta.len() == 0
            && layers.active.is_empty()
            && layers.frozen.iter().all(|m| m.is_empty())
        {
            return self.first_in_run(&layers.run, start, bounds, f);
        }
        let mut next = layers_of(layers)
            .filter_map(|l| l.next_key(start, true))
            .min()?;
        loop {
            if !bounds.contains_key(&next) || !self.version.bounds.contains_key(&next) {
                return None;
            }
            if let Some(value) = visible(layers, &next, self.seq) {
                return Some(f(&next, &value));
            }
            next = layers_of(layers)
                .filter_map(|l| l.next_key(&next, false))
                .min()?;
        }
    }

    /// `first_in_with` when the run is the only layer: one search, then a walk.
    fn first_in_run<R>(
        &self,
        run: &Run,
        start: &[u8],
        bounds: &KeyRange,
        f: impl FnOnce(&[u8], &[u8]) -> R,
    ) -> Option<R> {
        let mut i = run.lower(start, u64::MAX);
        let mut settled: Option<&[u8]> = None; // the key whose visible entry was a deletion
        while i < run.len() {
            let key = run.key(i);
            if !bounds.contains_key(key) || !self.version.bounds.contains_key(key) {
                return None;
            }
            if run.seq(i) <= self.seq && settled != Some(key) {
                match run.value(i) {
                    Some(value) => return Some(f(key, value)),
                    None => settled = Some(key),
                }
            }
            i += 1;
        }
        None
    }

    /// An iterator over `cf` within `bounds`, which must lie inside the range; not
    /// positioned until a seek.
    ///
    /// # Errors
    /// [`MemError::OutOfRange`].
    pub fn iter(&self, cf: Cf, bounds: KeyRange) -> Result<SnapshotIter, MemError> {
        if !self.version.bounds.contains(&bounds) {
            return Err(MemError::OutOfRange(self.id));
        }
        SnapshotIter::new(&self.version.cfs[cf.index()], &bounds, self.seq)
    }

    /// Every entry of `cf` within `bounds` (inside the range), in key order.
    ///
    /// # Errors
    /// [`MemError::OutOfRange`].
    pub fn entries(&self, cf: Cf, bounds: KeyRange) -> Result<Vec<crate::KvPair>, MemError> {
        let mut it = self.iter(cf, bounds)?;
        let mut entries = Vec::new();
        it.seek_to_first();
        while let Some((k, v)) = it.entry() {
            entries.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        Ok(entries)
    }
}

/// The layers of a column family, newest last (the delta only when it holds entries).
fn layers_of(cf: &CfLayers) -> impl Iterator<Item = Layer<'_>> {
    std::iter::once(Layer::Run(&cf.run))
        .chain((cf.delta.len() > 0).then_some(Layer::Run(&cf.delta)))
        .chain(cf.frozen.iter().map(|m| Layer::Mem(m)))
        .chain(std::iter::once(Layer::Mem(&cf.active)))
}

/// The value of `key` visible at `seq`: the newest entry at or below it, unless that is a
/// deletion.
fn visible(cf: &CfLayers, key: &[u8], seq: u64) -> Option<Box<[u8]>> {
    let newest: Option<(u64, IValue)> = layers_of(cf)
        .filter_map(|l| l.get(key, seq))
        .max_by_key(|(s, _)| *s);
    newest.and_then(|(_, value)| value)
}

/// Every user key with any entry (visible or not) within `bounds`, in order.
pub(crate) fn merged_keys(cf: &CfLayers, bounds: &KeyRange) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at: Option<Box<[u8]>> = None;
    loop {
        let (from, inclusive) = match &at {
            None => (bounds.start(), true),
            Some(key) => (&**key, false),
        };
        let next = layers_of(cf)
            .filter_map(|l| l.next_key(from, inclusive))
            .min();
        match next {
            Some(key) if bounds.contains_key(&key) => {
                out.push(key.to_vec());
                at = Some(key);
            }
            _ => return out,
        }
    }
}

/// The entries of `run` within `bounds`: `lo..hi`.
pub(crate) fn run_span(run: &Run, bounds: &KeyRange) -> (usize, usize) {
    let lo = run.lower(bounds.start(), u64::MAX);
    let hi = match bounds.end() {
        Some(end) => run.lower(end, u64::MAX).max(lo),
        None => run.len(),
    };
    (lo, hi)
}

/// How many sorted sources a cursor merges: the base run, the delta run, and the recent
/// entries.
const SOURCES: usize = 3;

/// A cursor over one column family of a snapshot, within bounds.
///
/// It merges three sorted runs: the range's base and delta runs (shared through `Arc`s,
/// read in place) and a compact copy of the memtables' entries within bounds, made when
/// the cursor is made (memtables are small: a compaction folds them into the delta). So
/// it holds no lock and allocates nothing per step. Its place is kept in its own fields,
/// updated one index at a time: a step copies no position around.
#[derive(Debug)]
pub struct SnapshotIter {
    /// The base run, the delta run, the recent entries.
    runs: [Arc<Run>; SOURCES],
    /// Each source's entries within bounds: `lo[s]..hi[s]`.
    lo: [usize; SOURCES],
    hi: [usize; SOURCES],
    seq: u64,
    /// No recent entries, no delta within bounds, and every base entry visible as its
    /// key's only one: each step is the next entry, and the cursor is `cursor` alone.
    plain: bool,
    /// The plain case's place: a base index in `lo[0]..hi[0]`, or [`NOWHERE`].
    cursor: usize,
    /// Off the plain case: the current key's entries lie at `start[s]..end[s]` of each
    /// source `s` (where a step goes on from, when the cursor is on no entry: after a
    /// seek, and before the first).
    start: [usize; SOURCES],
    end: [usize; SOURCES],
    /// The visible entry of the current key: its source and index; `None` when the
    /// cursor is on no entry.
    on: Option<(usize, usize)>,
}

/// The plain cursor's "not on an entry".
const NOWHERE: usize = usize::MAX;

/// The MVCC reads of [`crate::mvcc`] step through a snapshot's iterator directly.
impl crate::mvcc::Cursor for SnapshotIter {
    fn next(&mut self) {
        SnapshotIter::next(self);
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        SnapshotIter::entry(self)
    }
}

impl SnapshotIter {
    fn new(layers: &CfLayers, bounds: &KeyRange, seq: u64) -> Result<Self, MemError> {
        let recent = if layers.frozen.is_empty() {
            // The usual case: the active memtable alone, copied straight into a run.
            layers.active.span_run(bounds, seq)?
        } else {
            let mut recent: Vec<RunEntry> = Vec::new();
            for mem in layers.frozen.iter().chain([&layers.active]) {
                recent.extend(mem.span(bounds, seq));
            }
            recent.sort_by(|x, y| (&x.key, Reverse(x.seq)).cmp(&(&y.key, Reverse(y.seq))));
            Run::new(&recent, None)?
        };
        let (base_lo, base_hi) = run_span(&layers.run, bounds);
        let (delta_lo, delta_hi) = run_span(&layers.delta, bounds);
        let plain = recent.len() == 0 && delta_lo == delta_hi && layers.run.plain_at(seq);
        let lo = [base_lo, delta_lo, 0];
        Ok(SnapshotIter {
            lo,
            hi: [base_hi, delta_hi, recent.len()],
            runs: [
                Arc::clone(&layers.run),
                Arc::clone(&layers.delta),
                Arc::new(recent),
            ],
            seq,
            plain,
            cursor: NOWHERE,
            start: lo,
            end: lo,
            on: None,
        })
    }

    /// Positions on base entry `a` alone (the plain case), or nowhere past the bounds.
    #[inline]
    fn plain_at(&mut self, a: usize) {
        self.cursor = if self.lo[0] <= a && a < self.hi[0] {
            a
        } else {
            NOWHERE
        };
    }

    /// Source `s` (the last for any `s` past it: no bounds check to inline).
    #[inline]
    fn source(&self, s: usize) -> &Run {
        let [base, delta, recent] = &self.runs;
        match s {
            0 => base,
            1 => delta,
            _ => recent,
        }
    }

    /// The current entry's key, if the cursor is on one.
    fn current_key(&self) -> Option<&[u8]> {
        if self.plain {
            return (self.cursor != NOWHERE).then(|| self.runs[0].key(self.cursor));
        }
        let (s, at) = self.on?;
        Some(self.source(s).key(at))
    }

    /// To the first key in bounds.
    pub fn seek_to_first(&mut self) {
        if self.plain {
            return self.plain_at(self.lo[0]);
        }
        self.end = self.lo;
        self.forward();
    }

    /// To the last key in bounds.
    pub fn seek_to_last(&mut self) {
        if self.plain {
            return self.plain_at(self.hi[0].wrapping_sub(1));
        }
        self.start = self.hi;
        self.backward();
    }

    /// To the first key `>= key` (and in bounds). A seek ahead of the current key — a
    /// scan's seek to the next user key — gallops forward from where the cursor is
    /// instead of searching the whole run.
    #[inline]
    pub fn seek(&mut self, key: &[u8]) {
        let ahead = self.current_key().is_some_and(|current| current < key);
        if self.plain {
            let a = if ahead {
                gallop(&self.runs[0], self.cursor + 1, self.hi[0], key)
            } else {
                self.runs[0]
                    .lower(key, u64::MAX)
                    .clamp(self.lo[0], self.hi[0])
            };
            return self.plain_at(a);
        }
        for s in 0..SOURCES {
            let (run, lo, hi) = (&self.runs[s], self.lo[s], self.hi[s]);
            self.end[s] = if ahead {
                gallop(run, self.end[s], hi, key)
            } else {
                run.lower(key, u64::MAX).clamp(lo, hi)
            };
        }
        self.forward();
    }

    /// To the last key `<= key` (and in bounds).
    pub fn seek_for_prev(&mut self, key: &[u8]) {
        for s in 0..SOURCES {
            let (run, lo, hi) = (&self.runs[s], self.lo[s], self.hi[s]);
            self.start[s] = run.partition(lo, hi, |k, _| k <= key);
        }
        if self.plain {
            return self.plain_at(self.start[0].wrapping_sub(1));
        }
        self.backward();
    }

    /// One key forward.
    #[inline]
    pub fn next(&mut self) {
        if self.plain {
            if self.cursor != NOWHERE {
                self.plain_at(self.cursor + 1);
            }
            return;
        }
        if self.on.is_some() {
            self.forward();
        }
    }

    /// One key back.
    #[inline]
    pub fn prev(&mut self) {
        if self.plain {
            if self.cursor != NOWHERE {
                self.plain_at(self.cursor.wrapping_sub(1));
            }
            return;
        }
        if self.on.is_some() {
            self.backward();
        }
    }

    /// The current entry, if the cursor is on one.
    #[inline]
    pub fn entry(&self) -> Option<(&[u8], &[u8])> {
        if self.plain {
            return (self.cursor != NOWHERE).then(|| self.runs[0].pair(self.cursor));
        }
        let (s, at) = self.on?;
        let source = self.source(s);
        Some((source.key(at), source.value(at)?))
    }

    /// Moves to the first key with a visible value at or after index `end[s]` of each
    /// source `s`.
    #[inline(never)]
    fn forward(&mut self) {
        if self.lo[1] < self.hi[1] {
            self.forward_over::<true>();
        } else {
            self.forward_over::<false>();
        }
    }

    /// [`SnapshotIter::forward`], over the delta too only when `DELTA` (a scan with no
    /// delta within its bounds steps as fast as over two sources).
    #[inline(always)]
    fn forward_over<const DELTA: bool>(&mut self) {
        let SnapshotIter {
            runs,
            hi,
            seq,
            start,
            end,
            on,
            ..
        } = self;
        let runs = runs.each_ref().map(|run| &**run);
        *on = loop {
            // The smallest head, and the sources whose head it is.
            let mut key: Option<&[u8]> = None;
            let mut holds = [false; SOURCES];
            for s in merged::<DELTA>() {
                if end[s] < hi[s] {
                    let k = runs[s].key(end[s]);
                    match key.map(|m| k.cmp(m)) {
                        None | Some(Ordering::Less) => {
                            (key, holds) = (Some(k), [false; SOURCES]);
                            holds[s] = true;
                        }
                        Some(Ordering::Equal) => holds[s] = true,
                        Some(Ordering::Greater) => {}
                    }
                }
            }
            let Some(key) = key else {
                break None;
            };
            for s in merged::<DELTA>() {
                start[s] = end[s];
                if holds[s] {
                    end[s] = group_end(runs[s], end[s] + 1, hi[s], key);
                }
            }
            if let Some(found) = pick::<DELTA>(runs, *seq, start, end) {
                break Some(found);
            }
        };
    }

    /// Moves to the last key with a visible value before index `start[s]` of each source
    /// `s`.
    #[inline(never)]
    fn backward(&mut self) {
        if self.lo[1] < self.hi[1] {
            self.backward_over::<true>();
        } else {
            self.backward_over::<false>();
        }
    }

    /// [`SnapshotIter::backward`], over the delta too only when `DELTA`.
    #[inline(always)]
    fn backward_over<const DELTA: bool>(&mut self) {
        let SnapshotIter {
            runs,
            lo,
            seq,
            start,
            end,
            on,
            ..
        } = self;
        let runs = runs.each_ref().map(|run| &**run);
        *on = loop {
            // The largest entry before each source's place, and the sources it lies in.
            let mut key: Option<&[u8]> = None;
            let mut holds = [false; SOURCES];
            for s in merged::<DELTA>() {
                if start[s] > lo[s] {
                    let k = runs[s].key(start[s] - 1);
                    match key.map(|m| k.cmp(m)) {
                        None | Some(Ordering::Greater) => {
                            (key, holds) = (Some(k), [false; SOURCES]);
                            holds[s] = true;
                        }
                        Some(Ordering::Equal) => holds[s] = true,
                        Some(Ordering::Less) => {}
                    }
                }
            }
            let Some(key) = key else {
                break None;
            };
            for s in merged::<DELTA>() {
                end[s] = start[s];
                if holds[s] {
                    start[s] = group_start(runs[s], lo[s], start[s] - 1, key);
                }
            }
            if let Some(found) = pick::<DELTA>(runs, *seq, start, end) {
                break Some(found);
            }
        };
    }
}

/// The sources a merge reads: all three, or (not `DELTA`) the base and the recent entries.
#[inline(always)]
fn merged<const DELTA: bool>() -> impl Iterator<Item = usize> {
    (0..SOURCES).filter(|&s| DELTA || s != 1)
}

/// The visible entry of one key's groups (`start[s]..end[s]` of each source `s`), if its
/// newest version at or below `seq` is not a deletion: its source and index. A sequence
/// number in two sources (a load's entry merged beside a write's) goes to the later
/// source. Over the delta only when `DELTA`.
#[inline(always)]
fn pick<const DELTA: bool>(
    runs: [&Run; SOURCES],
    seq: u64,
    start: &[usize; SOURCES],
    end: &[usize; SOURCES],
) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize, u64)> = None; // source, index, sequence
    for s in merged::<DELTA>() {
        let run = runs[s];
        let Some(i) = (start[s]..end[s]).find(|i| run.seq(*i) <= seq) else {
            continue;
        };
        let found = run.seq(i);
        if best.is_none_or(|(_, _, b)| found >= b) {
            best = Some((s, i, found));
        }
    }
    let (source, at, _) = best?;
    runs[source].value(at).is_some().then_some((source, at))
}

/// The first index in `from..hi` whose key is `>= key`, searched from `from` in doubling
/// steps: a key a few entries ahead costs a few comparisons.
fn gallop(run: &Run, from: usize, hi: usize, key: &[u8]) -> usize {
    let (mut lo, mut step) = (from, 1);
    loop {
        let probe = lo + step - 1;
        if probe >= hi {
            return run.partition(lo, hi, |k, _| k < key);
        }
        if run.key(probe) >= key {
            return run.partition(lo, probe, |k, _| k < key);
        }
        lo = probe + 1;
        step *= 2;
    }
}

/// The end of the group of `key` starting at `from` (`from` itself if it is not there).
fn group_end(run: &Run, from: usize, limit: usize, key: &[u8]) -> usize {
    let mut end = from;
    while end < limit && run.key(end) == key {
        end += 1;
    }
    end
}

/// The start of the group of `key` ending at `to` (not going below `lo`).
fn group_start(run: &Run, lo: usize, to: usize, key: &[u8]) -> usize {
    let mut start = to;
    while start > lo && run.key(start - 1) == key {
        start -= 1;
    }
    start
}
