//! [`Snapshot`]: a range at one sequence number, and its bounded iterators.

use std::cmp::Reverse;
use std::ops::Bound;
use std::sync::Arc;

use crate::layer::{IValue, Layer, Run, RunEntry};
use crate::store::{CfLayers, RangeData};
use crate::{Cf, KeyBounds, MemError, RangeId};

/// A consistent view of one range at one sequence number. It holds `Arc`s to the layers
/// it reads: no lock and no epoch guard for its lifetime, and writers are never blocked.
#[derive(Debug, Clone)]
pub struct Snapshot {
    id: RangeId,
    bounds: KeyBounds,
    seq: u64,
    cfs: [CfLayers; 3],
}

impl Snapshot {
    pub(crate) fn new(range: &Arc<RangeData>, seq: u64) -> Self {
        let cfs = [
            range.layers(Cf::Default),
            range.layers(Cf::Lock),
            range.layers(Cf::Write),
        ];
        Snapshot {
            id: range.id,
            bounds: range.bounds.clone(),
            seq,
            cfs,
        }
    }

    /// The sequence number it sees up to, inclusive.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The range it reads.
    pub fn range(&self) -> RangeId {
        self.id
    }

    /// The value of `key` in `cf`, if any.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
        visible(&self.cfs[cf.index()], key, self.seq).map(|v| v.into_vec())
    }

    /// An iterator over `cf` within `bounds`, which must lie inside the range; not
    /// positioned until a seek.
    ///
    /// # Errors
    /// [`MemError::OutOfRange`].
    pub fn iter(&self, cf: Cf, bounds: KeyBounds) -> Result<SnapshotIter, MemError> {
        if !self.bounds.contains_bounds(&bounds) {
            return Err(MemError::OutOfRange(self.id));
        }
        Ok(SnapshotIter::new(&self.cfs[cf.index()], &bounds, self.seq))
    }
}

/// The layers of a column family, newest last.
fn layers(cf: &CfLayers) -> impl Iterator<Item = Layer<'_>> {
    std::iter::once(Layer::Run(&cf.run))
        .chain(cf.frozen.as_deref().map(Layer::Mem))
        .chain(std::iter::once(Layer::Mem(&cf.active)))
}

/// The value of `key` visible at `seq`: the newest entry at or below it, unless that is a
/// deletion.
fn visible(cf: &CfLayers, key: &[u8], seq: u64) -> Option<Box<[u8]>> {
    let newest: Option<(u64, IValue)> = layers(cf)
        .filter_map(|l| l.get(key, seq))
        .max_by_key(|(s, _)| *s);
    newest.and_then(|(_, value)| value)
}

/// Every user key with any entry (visible or not) within `bounds`, in order.
pub(crate) fn merged_keys(cf: &CfLayers, bounds: &KeyBounds) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at: Option<Box<[u8]>> = None;
    loop {
        let (from, inclusive) = match &at {
            None => (bounds.start.as_slice(), true),
            Some(key) => (&**key, false),
        };
        let next = layers(cf).filter_map(|l| l.next_key(from, inclusive)).min();
        match next {
            Some(key) if bounds.contains(&key) => {
                out.push(key.to_vec());
                at = Some(key);
            }
            _ => return out,
        }
    }
}

/// Where the cursor is: the group of the current user key in each source, and which
/// entry is the visible one.
#[derive(Clone, Copy, Debug)]
struct Position {
    /// `run[a0..a1]` and `recent[b0..b1]` hold the current key's entries.
    a0: usize,
    a1: usize,
    b0: usize,
    b1: usize,
    /// The visible entry: in the run (`true`) or in `recent`, at this index.
    in_run: bool,
    at: usize,
}

/// A cursor over one column family of a snapshot, within bounds.
///
/// It merges two sorted sources: the range's run (shared through an `Arc`, read in place)
/// and the entries of the memtables within bounds, copied once when the cursor is made
/// (memtables are small: a compaction folds them into the run). So it holds no lock and
/// allocates nothing per step.
#[derive(Debug)]
pub struct SnapshotIter {
    run: Arc<Run>,
    /// The run's entries within bounds: `run.entries()[lo..hi]`.
    lo: usize,
    hi: usize,
    recent: Vec<RunEntry>,
    seq: u64,
    position: Option<Position>,
}

impl SnapshotIter {
    fn new(layers: &CfLayers, bounds: &KeyBounds, seq: u64) -> Self {
        let entries = layers.run.entries();
        let lo = entries.partition_point(|e| *e.key < *bounds.start);
        let hi = match &bounds.end {
            Some(end) => entries.partition_point(|e| *e.key < **end),
            None => entries.len(),
        };
        let mut recent: Vec<RunEntry> = Vec::new();
        for mem in layers.frozen.iter().chain([&layers.active]) {
            let map = mem.read();
            let upper = bounds.end.as_ref().map_or(Bound::Unbounded, |e| {
                Bound::Excluded((e.clone().into_boxed_slice(), Reverse(u64::MAX)))
            });
            let lower =
                Bound::Included((bounds.start.clone().into_boxed_slice(), Reverse(u64::MAX)));
            recent.extend(
                map.range((lower, upper))
                    .filter(|((_, s), _)| s.0 <= seq)
                    .map(|((k, s), v)| RunEntry {
                        key: k.clone(),
                        seq: s.0,
                        value: v.clone(),
                    }),
            );
        }
        if layers.frozen.is_some() {
            recent.sort_by(|x, y| (&x.key, Reverse(x.seq)).cmp(&(&y.key, Reverse(y.seq))));
        }
        SnapshotIter {
            run: Arc::clone(&layers.run),
            lo,
            hi,
            recent,
            seq,
            position: None,
        }
    }

    fn run_slice(&self) -> &[RunEntry] {
        &self.run.entries()[..self.hi]
    }

    /// To the first key in bounds.
    pub fn seek_to_first(&mut self) {
        self.forward(self.lo, 0);
    }

    /// To the last key in bounds.
    pub fn seek_to_last(&mut self) {
        self.backward(self.hi, self.recent.len());
    }

    /// To the first key `>= key` (and in bounds).
    pub fn seek(&mut self, key: &[u8]) {
        let a = self
            .run_slice()
            .partition_point(|e| &*e.key < key)
            .max(self.lo);
        let b = self.recent.partition_point(|e| &*e.key < key);
        self.forward(a, b);
    }

    /// To the last key `<= key` (and in bounds).
    pub fn seek_for_prev(&mut self, key: &[u8]) {
        let a = self
            .run_slice()
            .partition_point(|e| &*e.key <= key)
            .max(self.lo);
        let b = self.recent.partition_point(|e| &*e.key <= key);
        self.backward(a, b);
    }

    /// One key forward.
    pub fn next(&mut self) {
        if let Some(p) = self.position {
            self.forward(p.a1, p.b1);
        }
    }

    /// One key back.
    pub fn prev(&mut self) {
        if let Some(p) = self.position {
            self.backward(p.a0, p.b0);
        }
    }

    /// The current entry, if the cursor is on one.
    pub fn entry(&self) -> Option<(&[u8], &[u8])> {
        let p = self.position?;
        let e = if p.in_run {
            self.run.entries().get(p.at)?
        } else {
            self.recent.get(p.at)?
        };
        Some((&e.key, e.value.as_deref()?))
    }

    /// Moves to the first key with a visible value at or after run index `a` and recent
    /// index `b`.
    fn forward(&mut self, mut a: usize, mut b: usize) {
        let run = &self.run.entries()[..self.hi];
        self.position = loop {
            let key = match (run.get(a), self.recent.get(b)) {
                (None, None) => break None,
                (Some(x), None) => &x.key,
                (None, Some(y)) => &y.key,
                (Some(x), Some(y)) => (&x.key).min(&y.key),
            };
            let a1 = group_end(run, a, key);
            let b1 = group_end(&self.recent, b, key);
            if let Some(p) = self.pick(a, a1, b, b1) {
                break Some(p);
            }
            (a, b) = (a1, b1);
        };
    }

    /// Moves to the last key with a visible value before run index `a` and recent index
    /// `b`.
    fn backward(&mut self, mut a: usize, mut b: usize) {
        let run = &self.run.entries()[..self.hi];
        let lo = self.lo;
        self.position = loop {
            let left = if a > lo { run.get(a - 1) } else { None };
            let key = match (left, b.checked_sub(1).and_then(|i| self.recent.get(i))) {
                (None, None) => break None,
                (Some(x), None) => &x.key,
                (None, Some(y)) => &y.key,
                (Some(x), Some(y)) => (&x.key).max(&y.key),
            };
            let a0 = group_start(run, lo, a, key);
            let b0 = group_start(&self.recent, 0, b, key);
            if let Some(p) = self.pick(a0, a, b0, b) {
                break Some(p);
            }
            (a, b) = (a0, b0);
        };
    }

    /// The visible entry of one key's groups, if its newest version at or below the
    /// snapshot is not a deletion.
    fn pick(&self, a0: usize, a1: usize, b0: usize, b1: usize) -> Option<Position> {
        let seq = self.seq;
        let in_run = (a0..a1).find(|i| self.run.entries()[*i].seq <= seq);
        let in_recent = (b0..b1).find(|i| self.recent[*i].seq <= seq);
        let (from_run, at) = match (in_run, in_recent) {
            (Some(x), Some(y)) if self.run.entries()[x].seq > self.recent[y].seq => (true, x),
            (_, Some(y)) => (false, y),
            (Some(x), None) => (true, x),
            (None, None) => return None,
        };
        let visible = if from_run {
            &self.run.entries()[at]
        } else {
            &self.recent[at]
        };
        visible.value.is_some().then_some(Position {
            a0,
            a1,
            b0,
            b1,
            in_run: from_run,
            at,
        })
    }
}

/// The end of the group of `key` starting at `from` (`from` itself if it is not there).
fn group_end(entries: &[RunEntry], from: usize, key: &[u8]) -> usize {
    let mut end = from;
    while entries.get(end).is_some_and(|e| &*e.key == key) {
        end += 1;
    }
    end
}

/// The start of the group of `key` ending at `to` (not going below `lo`).
fn group_start(entries: &[RunEntry], lo: usize, to: usize, key: &[u8]) -> usize {
    let mut start = to;
    while start > lo && &*entries[start - 1].key == key {
        start -= 1;
    }
    start
}
