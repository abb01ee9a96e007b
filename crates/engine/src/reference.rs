//! An MVCC reading of a disk snapshot's raw entries, written apart from the engine's own
//! read path (`mvcc.rs`): the oracle that tests and the simulator compare the engine's
//! reads with. Simple rather than fast: it collects the range first.

use std::collections::BTreeMap;

use ime_disk::{Cf, DiskSnapshot, KeyRange, collect};
use ime_memkv::codec::{LockEntry, MvccKey, WriteRecord, WriteType, decode_bytes};

use crate::{EngineError, KvPair, MvccError};

/// The visible `(user_key, value)` pairs at `read_ts` of the raw keys in `bounds`: per user
/// key, the newest put or delete at or below `read_ts` (locks and rollbacks skipped),
/// its short value or its default-CF value. With `check_locks`, the first lock in key
/// order at or below `read_ts` (a Put or Delete lock) is an error instead, as a reader
/// would meet it.
///
/// # Errors
/// [`MvccError::KeyIsLocked`], [`MvccError::DefaultNotFound`], [`MvccError::Corrupt`]
/// (as [`EngineError::Mvcc`]), or a disk failure.
pub fn reference_scan<S: DiskSnapshot + ?Sized>(
    disk: &S,
    bounds: &KeyRange,
    read_ts: u64,
    check_locks: bool,
) -> Result<Vec<KvPair>, EngineError> {
    let corrupt = |e| EngineError::Mvcc(MvccError::Corrupt(e));
    if check_locks {
        for (key, value) in collect(disk, Cf::Lock, bounds.clone())? {
            let entry = LockEntry::decode(&value).map_err(corrupt)?;
            if let Some(lock) = entry.blocking(&key, read_ts) {
                let (key, _) = decode_bytes(&key).map_err(corrupt)?;
                return Err(MvccError::KeyIsLocked {
                    key,
                    lock_ts: lock.start_ts,
                }
                .into());
            }
        }
    }
    let mut versions: BTreeMap<Vec<u8>, Vec<(u64, WriteRecord)>> = BTreeMap::new();
    for (key, value) in collect(disk, Cf::Write, bounds.clone())? {
        let key = MvccKey::decode(&key).map_err(corrupt)?;
        let record = WriteRecord::decode(&value).map_err(corrupt)?;
        versions
            .entry(key.user_key)
            .or_default()
            .push((key.ts, record));
    }
    let mut out = Vec::new();
    for (user_key, mut list) in versions {
        list.sort_by_key(|v| std::cmp::Reverse(v.0));
        let decided = list
            .into_iter()
            .filter(|(ts, _)| *ts <= read_ts)
            .find(|(_, r)| matches!(r.kind(), WriteType::Put | WriteType::Delete));
        let Some((_, record)) = decided.filter(|(_, r)| r.kind() == WriteType::Put) else {
            continue;
        };
        let value = match record.short_value {
            Some(v) => v,
            None => {
                let key = MvccKey {
                    user_key: user_key.clone(),
                    ts: record.start_ts,
                }
                .encode();
                let missing = MvccError::DefaultNotFound {
                    key: user_key.clone(),
                    start_ts: record.start_ts,
                };
                disk.get(Cf::Default, &key)?.ok_or(missing)?
            }
        };
        out.push((user_key, value));
    }
    Ok(out)
}
