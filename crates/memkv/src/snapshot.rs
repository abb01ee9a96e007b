//! [`Snapshot`]: a range at one sequence number, and its bounded iterators.

use std::sync::Arc;

use crate::layer::{IValue, Layer};
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
        Ok(SnapshotIter {
            layers: self.cfs[cf.index()].clone(),
            bounds,
            seq: self.seq,
            current: None,
        })
    }
}

/// A key and its value.
type Entry = (Box<[u8]>, Box<[u8]>);

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

/// A cursor over one column family of a snapshot, within bounds. Each step looks the
/// layers up afresh (a brief read lock on a memtable), so the cursor holds nothing
/// between steps.
#[derive(Debug)]
pub struct SnapshotIter {
    layers: CfLayers,
    bounds: KeyBounds,
    seq: u64,
    /// The entry the cursor is on: key and value.
    current: Option<Entry>,
}

impl SnapshotIter {
    /// To the first key in bounds.
    pub fn seek_to_first(&mut self) {
        let start = self.bounds.start.clone();
        self.forward(&start, true);
    }

    /// To the last key in bounds.
    pub fn seek_to_last(&mut self) {
        match self.bounds.end.clone() {
            Some(end) => self.backward(&end, false),
            None => {
                let last = layers(&self.layers).filter_map(|l| l.last_key()).max();
                self.current = None;
                if let Some(last) = last {
                    self.backward(&last, true);
                }
            }
        }
    }

    /// To the first key `>= key` (and in bounds).
    pub fn seek(&mut self, key: &[u8]) {
        let from = key.max(self.bounds.start.as_slice()).to_vec();
        self.forward(&from, true);
    }

    /// To the last key `<= key` (and in bounds).
    pub fn seek_for_prev(&mut self, key: &[u8]) {
        match self.bounds.end.clone() {
            Some(end) if key >= end.as_slice() => self.backward(&end, false),
            _ => self.backward(key, true),
        }
    }

    /// One key forward.
    pub fn next(&mut self) {
        if let Some((key, _)) = self.current.take() {
            self.forward(&key, false);
        }
    }

    /// One key back.
    pub fn prev(&mut self) {
        if let Some((key, _)) = self.current.take() {
            self.backward(&key, false);
        }
    }

    /// The current entry, if the cursor is on one.
    pub fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.current.as_ref().map(|(k, v)| (&**k, &**v))
    }

    fn forward(&mut self, from: &[u8], inclusive: bool) {
        let (mut at, mut inclusive) = (from.to_vec().into_boxed_slice(), inclusive);
        self.current = loop {
            let next = layers(&self.layers)
                .filter_map(|l| l.next_key(&at, inclusive))
                .min();
            let Some(key) = next.filter(|k| self.bounds.contains(k)) else {
                break None;
            };
            if let Some(value) = visible(&self.layers, &key, self.seq) {
                break Some((key, value));
            }
            (at, inclusive) = (key, false);
        };
    }

    fn backward(&mut self, from: &[u8], inclusive: bool) {
        let (mut at, mut inclusive) = (from.to_vec().into_boxed_slice(), inclusive);
        self.current = loop {
            let prev = layers(&self.layers)
                .filter_map(|l| l.prev_key(&at, inclusive))
                .max();
            let Some(key) = prev.filter(|k| self.bounds.contains(k)) else {
                break None;
            };
            if let Some(value) = visible(&self.layers, &key, self.seq) {
                break Some((key, value));
            }
            (at, inclusive) = (key, false);
        };
    }
}
