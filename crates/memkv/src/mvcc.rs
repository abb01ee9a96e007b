//! TiKV's MVCC reading rules over raw entries, written once for every reader: whether a
//! lock blocks a reader, where a put's value lives, what MVCC reads above a safe point can
//! reach, and how two sorted listings of a column family differ. The engine's reads, its
//! cross-checker and the tests' reference reader all use them.

use crate::codec::{
    CodecError, LockEntry, MvccKey, WriteRecord, WriteType, decode_bytes, encode_ts_desc,
};
use crate::{Cf, InvalidRange, KeyRange, Retention};

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// Why an MVCC read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    /// A transaction's lock at or below read_ts covers the key: the reader must resolve it.
    #[error("key {} is locked by the transaction at {lock_ts}", .key.escape_ascii())]
    KeyIsLocked {
        /// The user key.
        key: Vec<u8>,
        /// The lock's start_ts.
        lock_ts: u64,
    },
    /// A committed put whose value is missing from the default column family.
    #[error("default-CF value of {} at {start_ts} is missing", .key.escape_ascii())]
    DefaultNotFound {
        /// The user key.
        key: Vec<u8>,
        /// The put's start_ts.
        start_ts: u64,
    },
    /// A stored key or record that does not decode.
    #[error("corrupt MVCC data: {0}")]
    Corrupt(#[from] CodecError),
}

/// The error a lock-CF entry (`key`, `value`) makes for a reader at `read_ts`, if it blocks
/// it by TiKV's rule ([`LockRecord::blocks_read`](crate::codec::LockRecord::blocks_read)).
///
/// # Errors
/// [`MvccError::Corrupt`] when the entry does not decode.
pub fn lock_blocks(key: &[u8], value: &[u8], read_ts: u64) -> Result<Option<MvccError>, MvccError> {
    let entry = LockEntry::decode(value)?;
    let Some(lock) = entry.blocking(key, read_ts) else {
        return Ok(None);
    };
    let (user_key, _) = decode_bytes(key)?;
    Ok(Some(MvccError::KeyIsLocked {
        key: user_key,
        lock_ts: lock.start_ts,
    }))
}

/// A cursor over raw entries, positioned by its owner: how the MVCC reads below step
/// through a memory or a disk iterator alike.
pub trait Cursor {
    /// One entry forward (nothing, when not on one).
    fn next(&mut self);
    /// The entry it is on, `None` past the end.
    fn entry(&self) -> Option<(&[u8], &[u8])>;
}

/// The first lock from `locks` (positioned at the first in bounds) that blocks a reader at
/// `read_ts`, as the error the reader meets.
///
/// # Errors
/// [`MvccError::Corrupt`] for a lock that does not decode.
pub fn first_blocking_lock(
    locks: &mut impl Cursor,
    read_ts: u64,
) -> Result<Option<MvccError>, MvccError> {
    while let Some((key, value)) = locks.entry() {
        if let Some(err) = lock_blocks(key, value, read_ts)? {
            return Ok(Some(err));
        }
        locks.next();
    }
    Ok(None)
}

/// Up to `limit` visible `(user_key, value)` pairs at `read_ts` from the write-CF entries
/// `writes` steps on (positioned at the first in bounds): per user key the newest put or
/// delete at or below `read_ts` (locks and rollbacks stepped over), a put's value from
/// `value_of`. Returns the pairs and the versions stepped on.
///
/// # Errors
/// [`MvccError::Corrupt`] for an entry that does not decode, or `value_of`'s error.
pub fn visible_pairs<E: From<MvccError>>(
    writes: &mut impl Cursor,
    read_ts: u64,
    limit: usize,
    mut value_of: impl FnMut(&[u8], WriteRecord) -> Result<Vec<u8>, E>,
) -> Result<(Vec<KvPair>, u64), E> {
    let (mut out, mut scanned) = (Vec::new(), 0u64);
    let mut settled: Option<Vec<u8>> = None; // the user key whose visible version was decided
    while let Some((key, value)) = writes.entry() {
        if out.len() >= limit {
            break;
        }
        scanned += 1;
        let key = MvccKey::decode(key).map_err(MvccError::from)?;
        if key.ts <= read_ts && settled.as_deref() != Some(key.user_key.as_slice()) {
            let record = WriteRecord::decode(value).map_err(MvccError::from)?;
            match record.kind() {
                WriteType::Put => {
                    out.push((key.user_key.clone(), value_of(&key.user_key, record)?));
                    settled = Some(key.user_key);
                }
                WriteType::Delete => settled = Some(key.user_key),
                WriteType::Lock | WriteType::Rollback => {}
            }
        }
        writes.next();
    }
    Ok((out, scanned))
}

/// The newest committed version of one user key from `versions` (positioned at its newest
/// version at or below the read's timestamp, bounded to the key): the put's record, or
/// `None` under a delete or when there is none; and the versions stepped on.
///
/// # Errors
/// [`MvccError::Corrupt`] for an entry that does not decode.
pub fn newest_put(versions: &mut impl Cursor) -> Result<(Option<WriteRecord>, u64), MvccError> {
    let mut scanned = 0;
    while let Some((_, value)) = versions.entry() {
        scanned += 1;
        let record = WriteRecord::decode(value)?;
        match record.kind() {
            WriteType::Put => return Ok((Some(record), scanned)),
            WriteType::Delete => break,
            WriteType::Lock | WriteType::Rollback => versions.next(),
        }
    }
    Ok((None, scanned))
}

/// [`newest_put`] in a memory snapshot, by point lookups (no cursor to set up):
/// `versions` bounds one user key's versions at or below the read's timestamp.
///
/// # Errors
/// [`MvccError::Corrupt`] for an entry that does not decode.
pub fn newest_put_in(
    snapshot: &crate::Snapshot,
    versions: crate::KeyRange,
) -> Result<(Option<WriteRecord>, u64), MvccError> {
    let (mut bounds, mut scanned) = (versions, 0);
    // Each version read where it lies; only a key to step past is copied.
    let step = |key: &[u8], value: &[u8]| {
        let record = WriteRecord::decode(value)?;
        Ok::<_, MvccError>(match record.kind() {
            WriteType::Lock | WriteType::Rollback => Err([key, &[0]].concat()), // the next key
            WriteType::Put | WriteType::Delete => Ok(record),
        })
    };
    while let Some(found) = snapshot.first_in_with(Cf::Write, &bounds, step) {
        scanned += 1;
        match found? {
            Ok(record) if record.kind() == WriteType::Put => return Ok((Some(record), scanned)),
            Ok(_) => break, // a Delete
            Err(next) => match crate::KeyRange::with_end(next, bounds.end().map(<[u8]>::to_vec)) {
                Ok(rest) => bounds = rest,
                Err(_) => break, // no version left in the bounds
            },
        }
    }
    Ok((None, scanned))
}

/// The write-CF keys of the versions of a user key (`encoded`: its memcomparable
/// encoding) committed at or below `read_ts`: from (key, `read_ts`) to just past (key, 0),
/// newest first.
///
/// # Errors
/// Never for a key as [`crate::codec::encode_bytes`] makes it (the start sorts below the
/// end); the range's own check otherwise.
pub fn versions_at_or_below(encoded: &[u8], read_ts: u64) -> Result<KeyRange, InvalidRange> {
    let with_ts = |ts: u64, tail: &[u8]| [encoded, &encode_ts_desc(ts), tail].concat();
    KeyRange::new(with_ts(read_ts, &[]), with_ts(0, &[0]))
}

/// The default-CF key holding the value of a put of `user_key` (`None`: a short value, or
/// not a put).
pub fn value_key(user_key: &[u8], record: &WriteRecord) -> Option<Vec<u8>> {
    (record.kind() == WriteType::Put && record.short_value.is_none()).then(|| {
        MvccKey {
            user_key: user_key.to_vec(),
            ts: record.start_ts,
        }
        .encode()
    })
}

/// The write-CF entries (in key order) MVCC reads above `safe_point` can reach: what GC's
/// retention rule ([`Retention`]) keeps.
pub fn visible_above(entries: &[KvPair], safe_point: u64) -> Vec<KvPair> {
    let mut rule = Retention::new(safe_point);
    entries
        .iter()
        .filter(|(key, value)| rule.keeps(key, value))
        .cloned()
        .collect()
}

/// The default-CF keys the puts among write-CF `entries` point to.
pub fn value_keys(entries: &[KvPair]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .filter_map(|(key, value)| {
            let key = MvccKey::decode(key).ok()?;
            value_key(&key.user_key, &WriteRecord::decode(value).ok()?)
        })
        .collect()
}

/// A key whose value differs between two listings: the key, then its value on each side.
pub type Difference = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Each key whose value differs between two sorted listings.
pub fn differences(left: &[KvPair], right: &[KvPair]) -> Vec<Difference> {
    let mut keys: Vec<&Vec<u8>> = left.iter().chain(right).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let find = |list: &[KvPair], key: &[u8]| {
        list.binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| list[i].1.clone())
    };
    keys.into_iter()
        .filter_map(|key| {
            let (l, r) = (find(left, key), find(right, key));
            (l != r).then(|| (key.clone(), l, r))
        })
        .collect()
}

/// [`compare_copies`] of a memory snapshot's `bounds` (inside its range) and another
/// copy: `other(cf)` lists its entries there, `other_value(key)` reads a default-CF key.
pub fn compare_with(
    memory: &crate::Snapshot,
    bounds: &crate::KeyRange,
    safe_point: u64,
    other: impl Fn(Cf) -> Option<Vec<KvPair>>,
    other_value: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Vec<(Cf, Difference)> {
    let read = |cf: Cf| Some((memory.entries(cf, bounds.clone()).ok()?, other(cf)?));
    let value = |key: &[u8]| (memory.get(Cf::Default, key), other_value(key));
    compare_copies(safe_point, read, value)
}

/// The cross-checker's comparison of one region's two copies, memory and disk: the lock
/// CF entry by entry, the write CF as MVCC reads above `safe_point` see it (GC may have
/// dropped older versions from memory only), and the default-CF values those reads
/// return. `read(cf)` lists a column family's entries on each side (`None`: unreadable,
/// the comparison stops there); `value(key)` reads a default-CF key on each side.
pub fn compare_copies(
    safe_point: u64,
    mut read: impl FnMut(Cf) -> Option<(Vec<KvPair>, Vec<KvPair>)>,
    value: impl Fn(&[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>),
) -> Vec<(Cf, Difference)> {
    let mut out = Vec::new();
    let Some((memory, disk)) = read(Cf::Lock) else {
        return out;
    };
    out.extend(
        differences(&memory, &disk)
            .into_iter()
            .map(|d| (Cf::Lock, d)),
    );
    let Some((memory, disk)) = read(Cf::Write) else {
        return out;
    };
    let (memory, disk) = (
        visible_above(&memory, safe_point),
        visible_above(&disk, safe_point),
    );
    out.extend(
        differences(&memory, &disk)
            .into_iter()
            .map(|d| (Cf::Write, d)),
    );
    let mut keys = value_keys(&disk);
    keys.sort();
    keys.dedup();
    let (mut memory, mut disk) = (Vec::new(), Vec::new());
    for key in keys {
        let (m, d) = value(&key);
        memory.extend(m.map(|v| (key.clone(), v)));
        disk.extend(d.map(|v| (key, v)));
    }
    out.extend(
        differences(&memory, &disk)
            .into_iter()
            .map(|d| (Cf::Default, d)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{LockRecord, LockType, encode_bytes};

    fn write(user_key: &[u8], ts: u64, record: &WriteRecord) -> KvPair {
        let key = MvccKey {
            user_key: user_key.to_vec(),
            ts,
        };
        (key.encode(), record.encode().expect("encodes"))
    }

    /// A cursor over a list, for the stepping rules.
    struct List(Vec<KvPair>, usize);

    impl Cursor for List {
        fn next(&mut self) {
            self.1 += 1;
        }

        fn entry(&self) -> Option<(&[u8], &[u8])> {
            self.0
                .get(self.1)
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
        }
    }

    #[test]
    fn stepping_rules_pick_the_newest_visible_version_per_key() {
        let record =
            |kind, start, short: &[u8]| WriteRecord::new(kind, start, Some(short.to_vec()));
        let entries = vec![
            write(b"a", 30, &record(WriteType::Put, 29, b"new")), // above read_ts 25
            write(b"a", 20, &record(WriteType::Rollback, 19, b"")),
            write(b"a", 10, &record(WriteType::Put, 9, b"old")),
            write(b"a", 5, &record(WriteType::Put, 4, b"older")),
            write(b"b", 15, &record(WriteType::Delete, 14, b"")),
            write(b"b", 8, &record(WriteType::Put, 7, b"gone")),
            write(b"c", 12, &record(WriteType::Lock, 11, b"")),
            write(b"c", 6, &record(WriteType::Put, 5, b"c")),
        ];
        let short =
            |_: &[u8], r: WriteRecord| Ok::<_, MvccError>(r.short_value.unwrap_or_default());
        let (pairs, scanned) =
            visible_pairs(&mut List(entries.clone(), 0), 25, usize::MAX, short).unwrap();
        assert_eq!(
            pairs,
            vec![
                (b"a".to_vec(), b"old".to_vec()),
                (b"c".to_vec(), b"c".to_vec())
            ]
        );
        assert_eq!(scanned, 8, "every version is stepped on");
        let (limited, _) = visible_pairs(&mut List(entries.clone(), 0), 25, 1, short).unwrap();
        assert_eq!(limited.len(), 1);
        // One key's versions from its newest at or below read_ts: a rollback is stepped over.
        let (put, scanned) = newest_put(&mut List(entries.clone(), 1)).unwrap();
        assert_eq!(
            (put.and_then(|r| r.short_value), scanned),
            (Some(b"old".to_vec()), 2)
        );
        let (put, scanned) = newest_put(&mut List(entries, 4)).unwrap();
        assert_eq!((put, scanned), (None, 1), "under a delete");
    }

    #[test]
    fn the_first_blocking_lock_is_the_readers_error() {
        let lock = |user: &[u8], kind, ts| {
            let value = LockRecord::new(kind, user.to_vec(), ts, 0)
                .encode()
                .expect("encodes");
            (encode_bytes(user), value)
        };
        let locks = vec![
            lock(b"a", LockType::Lock, 5),   // a lock-only prewrite: never blocks
            lock(b"b", LockType::Put, 50),   // above read_ts
            lock(b"c", LockType::Delete, 8), // blocks
        ];
        let err = first_blocking_lock(&mut List(locks.clone(), 0), 10).unwrap();
        assert!(
            matches!(err, Some(MvccError::KeyIsLocked { lock_ts: 8, .. })),
            "{err:?}"
        );
        assert!(
            first_blocking_lock(&mut List(locks, 0), 7)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn copies_compare_above_the_safe_point_and_by_the_values_reads_return() {
        let put = |start_ts, short: Option<&[u8]>| {
            WriteRecord::new(WriteType::Put, start_ts, short.map(<[u8]>::to_vec))
        };
        let (old, new) = (
            write(b"k", 10, &put(9, Some(b"a"))),
            write(b"k", 20, &put(19, None)),
        );
        let superseded = write(b"k", 5, &put(4, Some(b"z")));
        let lock = (encode_bytes(b"l"), b"lock".to_vec());
        let value_key = value_key(b"k", &put(19, None)).expect("a long value");
        // Memory: GC dropped the version below the safe point (15), and lost the lock.
        let memory_writes = vec![new.clone(), old.clone()];
        let disk_writes = vec![new, old, superseded];
        let read = |cf: Cf| match cf {
            Cf::Lock => Some((Vec::new(), vec![lock.clone()])),
            Cf::Write => Some((memory_writes.clone(), disk_writes.clone())),
            Cf::Default => None,
        };
        let found = compare_copies(15, read, |key| {
            assert_eq!(key, value_key.as_slice(), "only the values reads return");
            (Some(b"m".to_vec()), Some(b"d".to_vec()))
        });
        let kinds: Vec<Cf> = found.iter().map(|(cf, _)| *cf).collect();
        assert_eq!(kinds, vec![Cf::Lock, Cf::Default], "{found:?}");
        // Unreadable locks: nothing more is compared.
        assert!(compare_copies(15, |_| None, |_| (None, None)).is_empty());
    }

    #[test]
    fn a_put_or_delete_lock_at_or_below_read_ts_blocks() {
        let key = encode_bytes(b"k");
        let put = LockRecord::new(LockType::Put, b"k".to_vec(), 10, 0)
            .encode()
            .expect("encodes");
        let lock = LockRecord::new(LockType::Lock, b"k".to_vec(), 10, 0)
            .encode()
            .expect("encodes");
        let blocked = lock_blocks(&key, &put, 10).expect("decodes");
        assert_eq!(
            blocked,
            Some(MvccError::KeyIsLocked {
                key: b"k".to_vec(),
                lock_ts: 10
            })
        );
        assert_eq!(lock_blocks(&key, &put, 9), Ok(None));
        assert_eq!(lock_blocks(&key, &lock, 20), Ok(None));
        assert!(lock_blocks(&key, b"garbage", 20).is_err());
    }

    #[test]
    fn a_keys_versions_at_or_below_a_timestamp_and_nothing_else() {
        let versions = versions_at_or_below(&encode_bytes(b"k"), 10).unwrap();
        let key = |user_key: &[u8], ts| {
            MvccKey {
                user_key: user_key.to_vec(),
                ts,
            }
            .encode()
        };
        for ts in [0, 1, 9, 10] {
            assert!(versions.contains_key(&key(b"k", ts)), "k@{ts}");
        }
        assert!(!versions.contains_key(&key(b"k", 11)), "above read_ts");
        for other in [&b"j"[..], b"k\0", b"ka", b""] {
            assert!(!versions.contains_key(&key(other, 5)), "{other:?}");
        }
    }

    #[test]
    fn only_puts_without_a_short_value_point_to_the_default_cf() {
        let long = WriteRecord::new(WriteType::Put, 5, None);
        let short = WriteRecord::new(WriteType::Put, 5, Some(b"v".to_vec()));
        let delete = WriteRecord::new(WriteType::Delete, 5, None);
        let expected = MvccKey {
            user_key: b"k".to_vec(),
            ts: 5,
        }
        .encode();
        assert_eq!(value_key(b"k", &long), Some(expected.clone()));
        assert_eq!(value_key(b"k", &short), None);
        assert_eq!(value_key(b"k", &delete), None);
        let entries = [write(b"k", 7, &long), write(b"j", 3, &short)];
        assert_eq!(value_keys(&entries), vec![expected]);
    }

    #[test]
    fn reads_above_the_safe_point_reach_the_newest_version_below_it_and_newer() {
        let put = |start| WriteRecord::new(WriteType::Put, start, Some(b"v".to_vec()));
        let entries = vec![
            write(b"k", 30, &put(29)),
            write(b"k", 15, &put(14)),
            write(b"k", 10, &put(9)),
        ];
        let visible = visible_above(&entries, 20);
        assert_eq!(visible, entries[..2].to_vec());
    }

    #[test]
    fn differences_list_each_key_that_differs_once() {
        let pair = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let left = vec![pair("a", "1"), pair("b", "2"), pair("c", "3")];
        let right = vec![pair("b", "2"), pair("c", "4"), pair("d", "5")];
        let found = differences(&left, &right);
        let keys: Vec<&[u8]> = found.iter().map(|(k, _, _)| k.as_slice()).collect();
        assert_eq!(keys, [b"a".as_slice(), b"c", b"d"]);
        assert_eq!(
            found[1],
            (b"c".to_vec(), Some(b"3".to_vec()), Some(b"4".to_vec()))
        );
    }
}
