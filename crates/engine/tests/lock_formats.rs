//! A lock column family written in TiKV's full lock format — async commit (primary and
//! secondaries, `min_commit_ts`), pipelined DML generations, pessimistic locks taken with
//! conflict, rollback timestamps, shared locks, and a field from a newer TiKV — read from
//! memory equals the same reads of the disk, lock errors included, at read timestamps on
//! every side of each lock.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use common::{Peer, region};
use ime_disk::KeyRange;
use ime_engine::{EngineError, reference_scan};
use ime_memkv::codec::{LockEntry, LockRecord, LockType, SharedLocks, encode_bytes};
use ime_memkv::mvcc::MvccError;
use ime_region::{ReadRequest, RegionId};

fn locks() -> Vec<(&'static str, LockEntry)> {
    // An async-commit primary listing its secondaries, committing at 50 or later.
    let mut async_primary = LockRecord::new(LockType::Put, b"b".to_vec(), 30, 3000);
    async_primary.secondaries = Some(vec![b"c".to_vec()]);
    async_primary.min_commit_ts = Some(50);
    async_primary.short_value = Some(b"new".to_vec());
    async_primary.rollback_ts = vec![25];
    // Its secondary: async commit, no list of its own.
    let mut async_secondary = LockRecord::new(LockType::Delete, b"b".to_vec(), 30, 3000);
    async_secondary.secondaries = Some(Vec::new());
    async_secondary.min_commit_ts = Some(50);
    async_secondary.last_change = Some((20, 1));
    // A pipelined-DML lock, a primary of its own (read at u64::MAX, it does not block).
    let mut pipelined = LockRecord::new(LockType::Put, b"d".to_vec(), 40, 3000);
    pipelined.generation = Some(3);
    pipelined.txn_size = Some(1);
    pipelined.txn_source = Some(1);
    // A pessimistic lock taken with conflict: never blocks a read.
    let mut pessimistic = LockRecord::new(LockType::Pessimistic, b"e".to_vec(), 30, 3000);
    pessimistic.for_update_ts = Some(35);
    pessimistic.locked_with_conflict = true;
    // Shared locks of two transactions: never block a read.
    let shared = SharedLocks {
        flags: Some(1),
        txns: vec![
            LockRecord::new(LockType::Lock, b"f".to_vec(), 30, 3000),
            LockRecord::new(LockType::Lock, b"x".to_vec(), 31, 3000),
        ],
        unknown_fields: Vec::new(),
    };
    // A lock-only prewrite, and a put with a field this decoder does not know.
    let lock_only = LockRecord::new(LockType::Lock, b"g".to_vec(), 30, 3000);
    let mut newer = LockRecord::new(LockType::Put, b"x".to_vec(), 60, 3000);
    newer.unknown_fields = b"T\x01".to_vec();
    vec![
        ("b", LockEntry::Single(async_primary)),
        ("c", LockEntry::Single(async_secondary)),
        ("d", LockEntry::Single(pipelined)),
        ("e", LockEntry::Single(pessimistic)),
        ("f", LockEntry::Shared(shared)),
        ("g", LockEntry::Single(lock_only)),
        ("h", LockEntry::Single(newer)),
    ]
}

/// The error (or pairs) a read returns, as text: `EngineError` has no equality.
fn shown<T: std::fmt::Debug>(result: &Result<T, EngineError>) -> String {
    format!("{result:?}")
}

#[test]
fn a_full_format_lock_cf_reads_the_same_from_memory_and_disk() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("m"), 1));
    let keys = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let items: Vec<_> = keys.iter().map(|k| (*k, Some("old"))).collect();
    peer.commit(1, &items); // committed at 20
    peer.load(1);
    peer.put_locks(1, &locks());
    let (applied, epoch) = (peer.applied(1), peer.region(1).epoch);
    let mut blocked_by = Vec::new();
    for read_ts in [25, 35, 45, 55, 65, u64::MAX] {
        let request = ReadRequest {
            epoch_version: epoch.version,
            applied_index: applied,
            read_ts,
        };
        let snapshot = peer.engine.snapshot(RegionId(1), request);
        assert!(snapshot.from_memory(), "{:?}", snapshot.fallback());
        let range = KeyRange::with_end(encode_bytes(b"a"), Some(encode_bytes(b"m"))).unwrap();
        let disk_scan = reference_scan(snapshot.disk(), &range, read_ts, true);
        let memory_scan = snapshot.mvcc_scan(b"a", Some(b"m"), usize::MAX);
        let disk_shown = shown(&disk_scan);
        assert_eq!(shown(&memory_scan), disk_shown, "scan at {read_ts}");
        if let Err(EngineError::Mvcc(MvccError::KeyIsLocked { key, .. })) = &disk_scan {
            blocked_by.push((read_ts, String::from_utf8(key.clone()).unwrap()));
        }
        for key in keys {
            let one = KeyRange::with_end(
                encode_bytes(key.as_bytes()),
                Some(encode_bytes(&[key.as_bytes(), b"\0"].concat())),
            )
            .unwrap();
            let disk = reference_scan(snapshot.disk(), &one, read_ts, true)
                .map(|pairs| pairs.into_iter().next().map(|(_, value)| value));
            let memory = snapshot.mvcc_get(key.as_bytes());
            assert_eq!(shown(&memory), shown(&disk), "get {key} at {read_ts}");
        }
    }
    // Each lock blocks exactly where TiKV's check says: below 30 nothing; the pipelined
    // lock from 40; the async-commit pair only from their min_commit_ts (50); at u64::MAX
    // the async-commit primary still blocks (the pipelined lock's own primary would not).
    assert_eq!(
        blocked_by,
        [
            (45, "d".to_string()),
            (55, "b".to_string()),
            (65, "b".to_string()),
            (u64::MAX, "b".to_string()),
        ]
    );
}
