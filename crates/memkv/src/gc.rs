//! Compaction and MVCC garbage collection: a range's layers rebuilt into one compact run
//! per column family, dropping shadowed entries and, below a safe point, dead versions.

use std::collections::{BTreeMap, HashSet};

use crate::codec::{MvccKey, WriteRecord, WriteType};
use crate::layer::{IValue, Run, RunEntry};
use crate::snapshot::{memtable_span, run_span};
use crate::store::CfLayers;
use crate::{KeyBounds, MemError, MemKv, RangeId};

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Entries before (all layers, all column families).
    pub entries_before: usize,
    /// Entries after.
    pub entries_after: usize,
    /// Write records removed by MVCC GC.
    pub versions_removed: usize,
    /// Default-CF values removed with the puts that pointed to them.
    pub values_removed: usize,
    /// Write-CF keys that could not be decoded (kept untouched).
    pub undecodable: usize,
    /// Whether the rebuilt runs replaced the range's layers. False when the work was lost:
    /// a concurrent compaction installed first, or the range was split or dropped
    /// meanwhile. A caller that needs the collection (a GC at a new safe point) must then
    /// run it again, on the range or on its split children.
    pub installed: bool,
}

impl MemKv {
    /// Rebuilds range `id` into one compact run per column family. Shadowed entries and
    /// deletions go; with `safe_point`, MVCC GC below it too, with TiKV's rules: per user
    /// key keep every version above the safe point and the newest put at or below it;
    /// drop older versions, rollbacks and locks at or below it, and everything under a
    /// delete with the delete itself; drop the default-CF values of dropped puts. Two
    /// write records of one key and commit_ts (two sequence numbers) are one version
    /// (tikv/tikv#17060).
    ///
    /// Snapshots taken before keep reading the old layers; snapshots below the
    /// compaction's sequence are refused afterwards.
    ///
    /// # Errors
    /// [`MemError::NoSuchRange`], [`MemError::RunTooLarge`].
    pub fn compact(&self, id: RangeId, safe_point: Option<u64>) -> Result<GcStats, MemError> {
        let range = self.range(id)?;
        let (layers, seq) = self.freeze(&range);
        let mut stats = GcStats::default();
        let [default, lock, write] = layers
            .each_ref()
            .map(|cf| newest_entries(cf, &range.bounds, seq, &mut stats));
        let (write, dropped_values) = match safe_point {
            Some(sp) => gc_write_cf(write, sp, &mut stats),
            None => (write, HashSet::new()),
        };
        let default: Vec<RunEntry> = default
            .into_iter()
            .filter(|e| !dropped_values.contains(&*e.key))
            .collect();
        stats.values_removed = dropped_values.len();
        stats.entries_after = default.len() + lock.len() + write.len();
        let build = |entries: &[RunEntry]| Run::new(entries, Some(self.tracker()));
        let runs = [build(&default)?, build(&lock)?, build(&write)?];
        stats.installed = self.install(&range, &layers, runs, seq);
        Ok(stats)
    }
}

/// The newest live entry of every key within `bounds` in the run and frozen memtables, in
/// key order.
fn newest_entries(
    cf: &CfLayers,
    bounds: &KeyBounds,
    seq: u64,
    stats: &mut GcStats,
) -> Vec<RunEntry> {
    let mut newest: BTreeMap<Box<[u8]>, (u64, IValue)> = BTreeMap::new();
    let mut consider = |key: &[u8], s: u64, value: &Option<Box<[u8]>>| {
        stats.entries_before += 1;
        if s > seq {
            return;
        }
        match newest.get(key) {
            Some((existing, _)) if *existing >= s => {}
            _ => {
                newest.insert(key.into(), (s, value.clone()));
            }
        }
    };
    let (lo, hi) = run_span(&cf.run, bounds);
    for i in lo..hi {
        consider(
            cf.run.key(i),
            cf.run.seq(i),
            &cf.run.value(i).map(Into::into),
        );
    }
    for frozen in &cf.frozen {
        for entry in memtable_span(frozen, bounds, u64::MAX) {
            consider(&entry.key, entry.seq, &entry.value);
        }
    }
    newest
        .into_iter()
        .filter_map(|(key, (seq, value))| {
            Some(RunEntry {
                key,
                seq,
                value: Some(value?),
            })
        })
        .collect()
}

/// MVCC GC of the write column family at `safe_point`; returns the kept entries and the
/// default-CF keys of the puts dropped.
fn gc_write_cf(
    entries: Vec<RunEntry>,
    safe_point: u64,
    stats: &mut GcStats,
) -> (Vec<RunEntry>, HashSet<Vec<u8>>) {
    let mut kept = Vec::with_capacity(entries.len());
    let mut dropped_values = HashSet::new();
    // State for the user key being walked (versions arrive newest first).
    let mut current: Option<Vec<u8>> = None;
    let mut settled = false; // the newest version at or below the safe point was decided
    for entry in entries {
        let Ok(key) = MvccKey::decode(&entry.key) else {
            stats.undecodable += 1;
            kept.push(entry);
            continue;
        };
        if current.as_deref() != Some(key.user_key.as_slice()) {
            current = Some(key.user_key.clone());
            settled = false;
        }
        if key.ts > safe_point {
            kept.push(entry);
            continue;
        }
        let record = entry.value.as_deref().map(WriteRecord::decode);
        let Some(Ok(record)) = record else {
            stats.undecodable += 1;
            kept.push(entry);
            settled = true; // keep everything older than what cannot be read
            continue;
        };
        let keep = !settled && record.kind() == WriteType::Put;
        if !settled && matches!(record.kind(), WriteType::Put | WriteType::Delete) {
            settled = true;
        }
        if keep {
            kept.push(entry);
            continue;
        }
        stats.versions_removed += 1;
        if record.kind() == WriteType::Put && record.short_value.is_none() {
            let value_key = MvccKey {
                user_key: key.user_key,
                ts: record.start_ts,
            };
            dropped_values.insert(value_key.encode());
        }
    }
    // A value a kept put still points to stays, even if a dropped put pointed to it too
    // (two records with one start_ts: not TiKV's histories, but never lose a live value).
    for entry in &kept {
        if let Some(value_key) = default_key_of(entry) {
            dropped_values.remove(&value_key);
        }
    }
    kept.shrink_to_fit();
    (kept, dropped_values)
}

/// The default-CF key a kept write record's value lives at, for a put without a short
/// value.
fn default_key_of(entry: &RunEntry) -> Option<Vec<u8>> {
    let key = MvccKey::decode(&entry.key).ok()?;
    let record = WriteRecord::decode(entry.value.as_deref()?).ok()?;
    (record.kind() == WriteType::Put && record.short_value.is_none()).then(|| {
        MvccKey {
            user_key: key.user_key,
            ts: record.start_ts,
        }
        .encode()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cf, KeyBounds, MemConfig, WriteBatch};

    fn store_with_two_writes() -> MemKv {
        let kv = MemKv::new(MemConfig {
            hard_limit: 1 << 20,
            soft_limit: 1 << 19,
        });
        kv.create_range(RangeId(1), KeyBounds::new("a", None).unwrap())
            .unwrap();
        kv.write(WriteBatch::new().put(Cf::Lock, "b", "1"), 1)
            .unwrap();
        kv.write(WriteBatch::new().put(Cf::Lock, "m", "2"), 2)
            .unwrap();
        kv
    }

    /// Empty runs for an install (what is installed does not matter to these tests).
    fn empty_runs(kv: &MemKv) -> [Run; 3] {
        [(); 3].map(|()| Run::new(&[], Some(kv.tracker())).unwrap())
    }

    #[test]
    fn a_compaction_says_it_installed() {
        let kv = store_with_two_writes();
        assert!(kv.compact(RangeId(1), Some(2)).unwrap().installed);
    }

    /// Another compaction installing between this one's freeze and install: the second
    /// install keeps nothing and says so (a GC round must then run again).
    #[test]
    fn a_compaction_that_loses_to_another_says_so() {
        let kv = store_with_two_writes();
        let range = kv.range(RangeId(1)).unwrap();
        let (layers, seq) = kv.freeze(&range);
        assert!(kv.compact(RangeId(1), None).unwrap().installed);
        assert!(!kv.install(&range, &layers, empty_runs(&kv), seq));
    }

    /// A split between a compaction's freeze and its install: the parent is gone, the work
    /// installs nowhere, and the caller hears of it.
    #[test]
    fn a_compaction_that_loses_to_a_split_says_so() {
        let kv = store_with_two_writes();
        let range = kv.range(RangeId(1)).unwrap();
        let (layers, seq) = kv.freeze(&range);
        kv.split_range(
            RangeId(1),
            &[
                (
                    RangeId(2),
                    KeyBounds::new("a", Some(b"k".to_vec())).unwrap(),
                ),
                (RangeId(3), KeyBounds::new("k", None).unwrap()),
            ],
        )
        .unwrap();
        assert!(!kv.install(&range, &layers, empty_runs(&kv), seq));
        assert!(kv.compact(RangeId(2), Some(2)).unwrap().installed);
    }
}
