//! [`MemDisk`]: an in-memory reference engine with RocksDB's semantics, for fast unit
//! tests in other crates. It keeps every version forever: simple, not lean.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use crate::types::check_sorted;
use crate::{
    BatchOp, Cf, DiskEngine, DiskError, DiskIterator, DiskSnapshot, KeyRange, SeqRange, WriteBatch,
};

/// Versions of one key, ascending by sequence number; `None` is a deletion.
type Versions = Vec<(u64, Option<Vec<u8>>)>;

#[derive(Debug, Default)]
struct State {
    sequence: u64,
    cfs: [BTreeMap<Vec<u8>, Versions>; 3],
}

impl State {
    fn apply(&mut self, op: &BatchOp) {
        self.sequence += 1;
        let seq = self.sequence;
        match op {
            BatchOp::Put { cf, key, value } => {
                self.cfs[cf.index()]
                    .entry(key.clone())
                    .or_default()
                    .push((seq, Some(value.clone())));
            }
            BatchOp::Delete { cf, key } => {
                self.cfs[cf.index()]
                    .entry(key.clone())
                    .or_default()
                    .push((seq, None));
            }
            BatchOp::DeleteRange { cf, start, end } => {
                let range = (Bound::Included(start.clone()), Bound::Excluded(end.clone()));
                for versions in self.cfs[cf.index()].range_mut(range).map(|(_, v)| v) {
                    versions.push((seq, None));
                }
            }
        }
    }
}

/// The value visible at `sequence` among `versions`.
fn visible(versions: &Versions, sequence: u64) -> Option<&Vec<u8>> {
    versions
        .iter()
        .rev()
        .find(|(seq, _)| *seq <= sequence)
        .and_then(|(_, value)| value.as_ref())
}

/// The in-memory reference disk engine. Cloning shares the same data.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Arc<RwLock<State>>,
}

impl MemDisk {
    /// An empty engine.
    pub fn new() -> Self {
        MemDisk::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DiskEngine for MemDisk {
    type Snapshot = MemSnapshot;

    fn write(&self, batch: &WriteBatch) -> Result<SeqRange, DiskError> {
        batch.validate()?;
        let mut state = self.write_state();
        let first = state.sequence + 1;
        for op in batch.ops() {
            state.apply(op);
        }
        Ok(SeqRange {
            first,
            last: state.sequence,
        })
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot {
            state: Arc::clone(&self.state),
            sequence: self.read().sequence,
        }
    }

    fn latest_sequence(&self) -> u64 {
        self.read().sequence
    }

    fn ingest(&self, cf: Cf, entries: &[crate::Entry]) -> Result<(), DiskError> {
        check_sorted(entries)?;
        let mut state = self.write_state();
        // Like an SST ingested with a global sequence number: one number for the file.
        state.sequence += 1;
        let seq = state.sequence;
        for (key, value) in entries {
            state.cfs[cf.index()]
                .entry(key.clone())
                .or_default()
                .push((seq, Some(value.clone())));
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

/// A snapshot of a [`MemDisk`].
#[derive(Clone, Debug)]
pub struct MemSnapshot {
    state: Arc<RwLock<State>>,
    sequence: u64,
}

impl DiskSnapshot for MemSnapshot {
    fn sequence(&self) -> u64 {
        self.sequence
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok(state.cfs[cf.index()]
            .get(key)
            .and_then(|v| visible(v, self.sequence))
            .cloned())
    }

    fn iter(&self, cf: Cf, bounds: KeyRange) -> Result<Box<dyn DiskIterator + '_>, DiskError> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let upper = bounds
            .end()
            .map_or(Bound::Unbounded, |u| Bound::Excluded(u.to_vec()));
        let range = (Bound::Included(bounds.start().to_vec()), upper);
        let entries = state.cfs[cf.index()]
            .range(range)
            .filter_map(|(key, versions)| {
                Some((key.clone(), visible(versions, self.sequence)?.clone()))
            })
            .collect();
        Ok(Box::new(MemIter {
            entries,
            position: None,
        }))
    }
}

/// An iterator over entries materialized when it was created.
struct MemIter {
    entries: Vec<crate::Entry>,
    position: Option<usize>,
}

impl DiskIterator for MemIter {
    fn seek_to_first(&mut self) {
        self.position = (!self.entries.is_empty()).then_some(0);
    }

    fn seek_to_last(&mut self) {
        self.position = self.entries.len().checked_sub(1);
    }

    fn seek(&mut self, key: &[u8]) {
        let at = self.entries.partition_point(|(k, _)| k.as_slice() < key);
        self.position = (at < self.entries.len()).then_some(at);
    }

    fn seek_for_prev(&mut self, key: &[u8]) {
        let after = self.entries.partition_point(|(k, _)| k.as_slice() <= key);
        self.position = after.checked_sub(1);
    }

    fn next(&mut self) {
        self.position = self
            .position
            .map(|p| p + 1)
            .filter(|p| *p < self.entries.len());
    }

    fn prev(&mut self) {
        self.position = self.position.and_then(|p| p.checked_sub(1));
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        let (key, value) = self.entries.get(self.position?)?;
        Some((key, value))
    }

    fn status(&self) -> Result<(), DiskError> {
        Ok(())
    }
}
