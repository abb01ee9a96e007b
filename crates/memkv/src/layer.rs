//! The layers of one column family of one range: a compact immutable sorted run, and
//! small ordered maps of recent writes in front of it. Reads merge them.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use crate::memory::{Charge, MemoryTracker};

/// Internal key order: user key ascending, then sequence number descending.
pub(crate) type IKey = (Box<[u8]>, Reverse<u64>);

/// An internal entry's value: `None` is a deletion.
pub(crate) type IValue = Option<Box<[u8]>>;

/// Bytes a memtable entry costs beyond its key and value bytes: its share of a B-tree
/// node (a 32-byte key slot and a 16-byte value slot in nodes of 11, about two thirds
/// full, plus node headers and child pointers). Checked against the allocator in
/// `tests/memory_accounting.rs`.
pub(crate) const MEMTABLE_ENTRY_OVERHEAD: u64 = 80;

/// Bytes a run entry costs beyond its key and value bytes: the entry itself (a boxed key,
/// a sequence number, an optional boxed value).
pub(crate) const RUN_ENTRY_OVERHEAD: u64 = std::mem::size_of::<RunEntry>() as u64;

/// What one entry costs in a memtable.
pub(crate) fn memtable_cost(key: &[u8], value: Option<&[u8]>) -> u64 {
    MEMTABLE_ENTRY_OVERHEAD + key.len() as u64 + value.map_or(0, |v| v.len() as u64)
}

/// One entry of a run.
#[derive(Debug, Clone)]
pub(crate) struct RunEntry {
    pub(crate) key: Box<[u8]>,
    pub(crate) seq: u64,
    pub(crate) value: IValue,
}

/// An immutable sorted run, built in key order (by a load or a compaction).
#[derive(Debug)]
pub(crate) struct Run {
    entries: Vec<RunEntry>,
    _charge: Charge,
}

impl Run {
    /// A run of `entries`, which must be in internal key order; charged to `tracker`.
    pub(crate) fn new(entries: Vec<RunEntry>, tracker: &Arc<MemoryTracker>) -> Self {
        let charge = Charge::new(tracker);
        let bytes = entries
            .iter()
            .map(|e| {
                RUN_ENTRY_OVERHEAD
                    + e.key.len() as u64
                    + e.value.as_ref().map_or(0, |v| v.len() as u64)
            })
            .sum::<u64>()
            + (entries.capacity() - entries.len()) as u64 * RUN_ENTRY_OVERHEAD;
        tracker.force_reserve(bytes);
        charge.add_reserved(bytes);
        Run {
            entries,
            _charge: charge,
        }
    }

    pub(crate) fn entries(&self) -> &[RunEntry] {
        &self.entries
    }

    /// Index of the first entry whose internal key is `>= (key, Reverse(seq))`.
    fn lower(&self, key: &[u8], seq: u64) -> usize {
        self.entries
            .partition_point(|e| (&*e.key, Reverse(e.seq)) < (key, Reverse(seq)))
    }
}

/// A small ordered map of recent writes; shared by snapshots, locked only per lookup.
#[derive(Debug)]
pub(crate) struct Memtable {
    map: RwLock<BTreeMap<IKey, IValue>>,
    charge: Charge,
}

impl Memtable {
    pub(crate) fn new(tracker: &Arc<MemoryTracker>) -> Self {
        Memtable {
            map: RwLock::new(BTreeMap::new()),
            charge: Charge::new(tracker),
        }
    }

    /// Inserts an entry whose cost the caller has reserved on the tracker.
    pub(crate) fn insert(&self, key: &[u8], seq: u64, value: Option<&[u8]>, reserved: u64) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.insert((key.into(), Reverse(seq)), value.map(Into::into));
        self.charge.add_reserved(reserved);
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<IKey, IValue>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }
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
                let e = run.entries.get(run.lower(key, seq))?;
                (&*e.key == key).then(|| (e.seq, e.value.clone()))
            }
            Layer::Mem(mem) => {
                let map = mem.read();
                let from: IKey = (key.into(), Reverse(seq));
                let ((k, Reverse(s)), v) = map.range(from..).next()?;
                (&**k == key).then(|| (*s, v.clone()))
            }
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
                    while run.entries.get(at).is_some_and(|e| &*e.key == key) {
                        at += 1;
                    }
                }
                run.entries.get(at).map(|e| e.key.clone())
            }
            Layer::Mem(mem) => {
                let map = mem.read();
                let bound: IKey = (key.into(), Reverse(seq));
                let lower = if inclusive {
                    Bound::Included(bound)
                } else {
                    Bound::Excluded(bound)
                };
                map.range((lower, Bound::Unbounded))
                    .next()
                    .map(|((k, _), _)| k.clone())
            }
        }
    }
}
