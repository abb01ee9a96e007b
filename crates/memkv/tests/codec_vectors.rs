//! Test vectors for TiKV's formats, and properties: memcomparable order, round trips,
//! and no panic on any input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use ime_memkv::codec::*;
use proptest::prelude::*;

#[test]
fn memcomparable_vectors() {
    let cases: [(&[u8], &[u8]); 5] = [
        (b"", &[0, 0, 0, 0, 0, 0, 0, 0, 247]),
        (&[1, 2, 3], &[1, 2, 3, 0, 0, 0, 0, 0, 250]),
        (&[1, 2, 3, 0], &[1, 2, 3, 0, 0, 0, 0, 0, 251]),
        (&[1, 2, 3, 4, 5, 6, 7], &[1, 2, 3, 4, 5, 6, 7, 0, 254]),
        (
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[1, 2, 3, 4, 5, 6, 7, 8, 255, 0, 0, 0, 0, 0, 0, 0, 0, 247],
        ),
    ];
    for (raw, encoded) in cases {
        assert_eq!(encode_bytes(raw), encoded, "{raw:?}");
        assert_eq!(
            decode_bytes(encoded).unwrap(),
            (raw.to_vec(), encoded.len())
        );
    }
}

#[test]
fn memcomparable_decode_errors() {
    assert!(matches!(
        decode_bytes(&[1, 2, 3]),
        Err(CodecError::Truncated { .. })
    ));
    assert!(matches!(
        decode_bytes(&[1, 2, 3, 0, 0, 0, 0, 0, 200]),
        Err(CodecError::BadGroup { at: 0 })
    ));
    // Padding must be zeros.
    assert!(matches!(
        decode_bytes(&[1, 2, 3, 0, 0, 9, 0, 0, 250]),
        Err(CodecError::BadGroup { at: 0 })
    ));
    // A full group promises another.
    assert!(matches!(
        decode_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 255]),
        Err(CodecError::Truncated { at: 9, .. })
    ));
}

#[test]
fn mvcc_key_vectors() {
    let key = MvccKey {
        user_key: b"abc".to_vec(),
        ts: 1,
    };
    let mut expected = vec![b'a', b'b', b'c', 0, 0, 0, 0, 0, 250];
    expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
    assert_eq!(key.encode(), expected);
    assert_eq!(MvccKey::decode(&expected).unwrap(), key);
    assert!(MvccKey::decode(&expected[..12]).is_err(), "short timestamp");
    let mut longer = expected.clone();
    longer.push(0);
    assert!(MvccKey::decode(&longer).is_err(), "trailing bytes");
}

#[test]
fn varint_vectors() {
    for (value, bytes) in [
        (0u64, &[0u8][..]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
    ] {
        let mut out = Vec::new();
        encode_varint(&mut out, value);
        assert_eq!(out, bytes);
        assert_eq!(decode_varint(bytes, &mut 0).unwrap(), value);
    }
    let mut max = Vec::new();
    encode_varint(&mut max, u64::MAX);
    assert_eq!(
        max,
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
    );
    assert_eq!(decode_varint(&max, &mut 0).unwrap(), u64::MAX);
    let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
    assert!(matches!(
        decode_varint(&too_big, &mut 0),
        Err(CodecError::VarintOverflow { at: 0 })
    ));
    assert!(matches!(
        decode_varint(&[0x80], &mut 0),
        Err(CodecError::Truncated { .. })
    ));
}

#[test]
fn write_record_vectors() {
    let put = WriteRecord::new(WriteType::Put, 300, Some(b"abc".to_vec()));
    assert_eq!(
        put.encode().unwrap(),
        [b'P', 0xac, 0x02, b'v', 3, b'a', b'b', b'c']
    );
    assert_eq!(
        WriteRecord::decode(&[b'D', 5]).unwrap(),
        WriteRecord::new(WriteType::Delete, 5, None)
    );
    assert_eq!(
        WriteRecord::decode(b"L\x07").unwrap().kind(),
        WriteType::Lock
    );
    let mut rollback = WriteRecord::new(WriteType::Rollback, 9, None);
    rollback.has_overlapped_rollback = true;
    rollback.gc_fence = Some(20);
    rollback.last_change = Some((4, 2));
    rollback.txn_source = Some(1);
    let bytes = rollback.encode().unwrap();
    assert_eq!(
        bytes,
        [
            b'R', 9, b'R', b'F', 0, 0, 0, 0, 0, 0, 0, 20, b'l', 0, 0, 0, 0, 0, 0, 0, 4, 2, b'S', 1
        ]
    );
    assert_eq!(WriteRecord::decode(&bytes).unwrap(), rollback);
    assert!(matches!(
        WriteRecord::decode(b"X\x01"),
        Err(CodecError::UnknownFlag { flag: b'X', .. })
    ));
    assert!(matches!(
        WriteRecord::decode(b"P\x01v\x05ab"),
        Err(CodecError::Truncated { .. })
    ));
    // An unknown field stops decoding (TiKV's forward compatibility) and is kept.
    let newer = WriteRecord::decode(b"P\x01?\x05").unwrap();
    assert_eq!(newer.unknown_fields, b"?\x05");
    assert_eq!(newer.encode().unwrap(), b"P\x01?\x05");
    assert!(WriteRecord::decode(b"").is_err());
    let long = WriteRecord::new(WriteType::Put, 1, Some(vec![0; 256]));
    assert_eq!(long.encode(), Err(CodecError::ShortValueTooLong(256)));
}

fn be(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

/// Checks `bytes` decodes to `entry` and `entry` encodes to `bytes`.
fn both_ways(entry: &LockEntry, bytes: &[u8]) {
    assert_eq!(LockEntry::decode(bytes).unwrap(), *entry);
    assert_eq!(entry.encode().unwrap(), bytes);
}

#[test]
fn lock_record_vectors() {
    // The primary is TiKV's compact bytes: a zigzag varint length (2 -> 4), then the key.
    let mut lock = LockRecord::new(LockType::Put, b"pk".to_vec(), 10, 3000);
    lock.short_value = Some(b"v1".to_vec());
    lock.min_commit_ts = Some(11);
    let mut bytes = vec![
        b'P', 4, b'p', b'k', 10, 0xb8, 0x17, b'v', 2, b'v', b'1', b'c',
    ];
    bytes.extend_from_slice(&be(11));
    both_ways(&LockEntry::Single(lock.clone()), &bytes);
    assert_eq!(LockRecord::decode(&bytes).unwrap(), lock);
    // Every lock type's flag.
    for (lock_type, flag) in [
        (LockType::Put, b'P'),
        (LockType::Delete, b'D'),
        (LockType::Lock, b'L'),
        (LockType::Pessimistic, b'S'),
    ] {
        let lock = LockRecord::new(lock_type, b"k".to_vec(), 5, 1);
        both_ways(&LockEntry::Single(lock), &[flag, 2, b'k', 5, 1]);
    }
    // A record that ends after its start_ts has a zero ttl, as TiKV reads it.
    assert_eq!(
        LockRecord::decode(&[b'D', 2, b'k', 7]).unwrap(),
        LockRecord::new(LockType::Delete, b"k".to_vec(), 7, 0)
    );
    assert!(matches!(
        LockRecord::decode(&[b'P', 18, b'p']),
        Err(CodecError::Truncated { .. })
    ));
    assert!(matches!(
        LockRecord::decode(&[b'P', 3, b'p', 1, 0]),
        Err(CodecError::BadLength { .. })
    ));
    assert!(matches!(
        LockRecord::decode(b"Q\x02k\x01\x01"),
        Err(CodecError::UnknownFlag { flag: b'Q', .. })
    ));
}

#[test]
fn lock_record_every_field() {
    let mut lock = LockRecord::new(LockType::Pessimistic, b"k1".to_vec(), 5, 0);
    lock.short_value = Some(b"x".to_vec());
    lock.for_update_ts = Some(7);
    lock.txn_size = Some(2);
    lock.min_commit_ts = Some(8);
    lock.secondaries = Some(vec![b"a".to_vec(), b"bc".to_vec()]);
    lock.rollback_ts = vec![3, 4];
    lock.last_change = Some((4, 2));
    lock.txn_source = Some(1);
    lock.locked_with_conflict = true;
    lock.generation = Some(9);
    let mut bytes = vec![b'S', 4, b'k', b'1', 5, 0, b'v', 1, b'x'];
    for (prefix, value) in [(b'f', 7), (b't', 2), (b'c', 8)] {
        bytes.push(prefix);
        bytes.extend_from_slice(&be(value));
    }
    bytes.extend_from_slice(&[b'a', 2, 2, b'a', 4, b'b', b'c', b'r', 2]);
    bytes.extend_from_slice(&be(3));
    bytes.extend_from_slice(&be(4));
    bytes.push(b'l');
    bytes.extend_from_slice(&be(4));
    bytes.extend_from_slice(&[2, b's', 1, b'F', b'g']);
    bytes.extend_from_slice(&be(9));
    both_ways(&LockEntry::Single(lock.clone()), &bytes);

    // Async commit with no secondaries (a secondary's own lock) is still async commit.
    let mut secondary = LockRecord::new(LockType::Put, b"pk".to_vec(), 5, 0);
    secondary.secondaries = Some(Vec::new());
    both_ways(
        &LockEntry::Single(secondary),
        &[b'P', 4, b'p', b'k', 5, 0, b'a', 0],
    );

    // A field a newer TiKV writes ('T' is reserved) stops decoding, as TiKV's decoder
    // does, and is kept: the record encodes back unchanged.
    let mut newer = bytes.clone();
    newer.extend_from_slice(b"T\x01\x02");
    let mut kept = lock;
    kept.unknown_fields = b"T\x01\x02".to_vec();
    both_ways(&LockEntry::Single(kept), &newer);
}

#[test]
fn shared_lock_vectors() {
    let txn = |ts| LockRecord::new(LockType::Lock, b"pk".to_vec(), ts, 0);
    let shared = SharedLocks {
        flags: Some(1),
        txns: vec![txn(5), txn(6)],
        unknown_fields: Vec::new(),
    };
    let bytes = [
        b'H', b'i', 1, b'h', 2, 12, b'L', 4, b'p', b'k', 5, 0, 12, b'L', 4, b'p', b'k', 6, 0,
    ];
    both_ways(&LockEntry::Shared(shared), &bytes);
    both_ways(&LockEntry::Shared(SharedLocks::default()), b"Hh\x00");
    assert_eq!(
        LockEntry::decode(b"H").unwrap(),
        LockEntry::Shared(SharedLocks::default())
    );
    assert!(matches!(
        LockEntry::decode(b"Hi\x02"),
        Err(CodecError::UnknownFlag { flag: 2, .. })
    ));
    assert_eq!(LockRecord::decode(&bytes), Err(CodecError::SharedLocks));
}

#[test]
fn the_lock_check_follows_tikv() {
    let key = encode_bytes(b"k");
    let mut lock = LockRecord::new(LockType::Put, b"pk".to_vec(), 10, 0);
    assert!(lock.blocks_read(&key, 10));
    assert!(!lock.blocks_read(&key, 9), "started above the reader");
    lock.min_commit_ts = Some(20);
    assert!(!lock.blocks_read(&key, 15), "commits above the reader");
    assert!(lock.blocks_read(&key, 20));
    for lock_type in [LockType::Lock, LockType::Pessimistic] {
        assert!(!LockRecord::new(lock_type, b"pk".to_vec(), 1, 0).blocks_read(&key, 10));
    }
    // A read at u64::MAX of the primary ignores its lock, unless it commits asynchronously.
    let mut primary = LockRecord::new(LockType::Delete, b"k".to_vec(), 10, 0);
    assert!(!primary.blocks_read(&key, u64::MAX));
    assert!(primary.blocks_read(&encode_bytes(b"other"), u64::MAX));
    primary.secondaries = Some(vec![b"other".to_vec()]);
    assert!(primary.blocks_read(&key, u64::MAX));
    let shared = LockEntry::Shared(SharedLocks {
        flags: None,
        txns: vec![LockRecord::new(LockType::Put, b"pk".to_vec(), 1, 0)],
        unknown_fields: Vec::new(),
    });
    assert!(
        shared.blocking(&key, 10).is_none(),
        "shared locks never block"
    );
}

#[test]
fn compact_bytes_are_zigzag() {
    let mut out = Vec::new();
    encode_compact_bytes(&mut out, &[7; 70]);
    assert_eq!(&out[..2], &[0x8c, 0x01], "140 as a varint");
    let mut at = 0;
    assert_eq!(
        decode_compact_bytes(&out, &mut at, "x").unwrap(),
        vec![7; 70]
    );
    assert_eq!(at, out.len());
}

fn lock_record() -> impl Strategy<Value = LockRecord> {
    let ts = || prop::option::of(any::<u64>());
    let keys = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..4);
    (
        (
            prop::sample::select(vec![
                LockType::Put,
                LockType::Delete,
                LockType::Lock,
                LockType::Pessimistic,
            ]),
            prop::collection::vec(any::<u8>(), 0..20),
            any::<u64>(),
            any::<u64>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..=255)),
        ),
        (ts(), ts(), ts(), prop::option::of(keys)),
        (
            prop::collection::vec(any::<u64>(), 0..4),
            prop::option::of((any::<u64>(), any::<u64>())),
            ts(),
            any::<bool>(),
            ts(),
        ),
    )
        .prop_map(|(head, times, tail)| {
            let (lock_type, primary, start_ts, ttl, short_value) = head;
            let (for_update_ts, txn_size, min_commit_ts, secondaries) = times;
            let (rollback_ts, last_change, txn_source, locked_with_conflict, generation) = tail;
            LockRecord {
                short_value,
                for_update_ts,
                txn_size,
                min_commit_ts,
                secondaries,
                rollback_ts,
                last_change,
                txn_source,
                locked_with_conflict,
                generation,
                ..LockRecord::new(lock_type, primary, start_ts, ttl)
            }
        })
}

fn write_record() -> impl Strategy<Value = WriteRecord> {
    (
        prop::sample::select(vec![
            WriteType::Put,
            WriteType::Delete,
            WriteType::Lock,
            WriteType::Rollback,
        ]),
        any::<u64>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..=255)),
        any::<bool>(),
        prop::option::of(any::<u64>()),
        prop::option::of((any::<u64>(), any::<u64>())),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(t, start_ts, short_value, overlapped, fence, last_change, source)| WriteRecord {
                write_type: Some(t),
                start_ts,
                short_value,
                has_overlapped_rollback: overlapped,
                gc_fence: fence,
                last_change,
                txn_source: source,
                unknown_fields: Vec::new(),
            },
        )
}

proptest! {
    #[test]
    fn memcomparable_preserves_order_and_round_trips(
        a in prop::collection::vec(any::<u8>(), 0..40),
        b in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let (ea, eb) = (encode_bytes(&a), encode_bytes(&b));
        prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        prop_assert_eq!(decode_bytes(&ea).unwrap(), (a.clone(), ea.len()));
    }

    #[test]
    fn mvcc_keys_order_by_user_key_then_newest_first(
        a in prop::collection::vec(any::<u8>(), 0..20), ta in any::<u64>(),
        b in prop::collection::vec(any::<u8>(), 0..20), tb in any::<u64>(),
    ) {
        let (ka, kb) = (MvccKey { user_key: a.clone(), ts: ta }, MvccKey { user_key: b.clone(), ts: tb });
        prop_assert_eq!(ka.encode().cmp(&kb.encode()), a.cmp(&b).then(tb.cmp(&ta)));
        prop_assert_eq!(MvccKey::decode(&ka.encode()).unwrap(), ka);
    }

    #[test]
    fn write_records_round_trip(record in write_record()) {
        prop_assert_eq!(WriteRecord::decode(&record.encode().unwrap()).unwrap(), record);
    }

    #[test]
    fn lock_records_round_trip(record in lock_record()) {
        let bytes = record.encode().unwrap();
        prop_assert_eq!(LockRecord::decode(&bytes).unwrap(), record.clone());
        let shared = LockEntry::Shared(SharedLocks { flags: None, txns: vec![record], unknown_fields: Vec::new() });
        prop_assert_eq!(LockEntry::decode(&shared.encode().unwrap()).unwrap(), shared);
    }

    #[test]
    fn split_mvcc_keys_agree_with_decoding(
        user_key in prop::collection::vec(any::<u8>(), 0..20),
        ts in any::<u64>(),
        cut in 0usize..40,
        bytes in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let key = MvccKey { user_key: user_key.clone(), ts }.encode();
        let (prefix, split_ts) = split_mvcc_key(&key).unwrap();
        prop_assert_eq!((prefix.to_vec(), split_ts), (encode_bytes(&user_key), ts));
        // Cut short, or any bytes: accepted exactly when decoding accepts them.
        for input in [&key[..cut.min(key.len())], bytes.as_slice()] {
            match (split_mvcc_key(input), MvccKey::decode(input)) {
                (Ok((prefix, ts)), Ok(decoded)) => {
                    prop_assert_eq!(prefix.to_vec(), encode_bytes(&decoded.user_key));
                    prop_assert_eq!(ts, decoded.ts);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (split, decoded) => prop_assert!(false, "{split:?} against {decoded:?}"),
            }
        }
    }

    #[test]
    fn write_record_heads_agree_with_decoding(
        record in write_record(),
        cut in 0usize..40,
        bytes in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let encoded = record.encode().unwrap();
        for input in [encoded.as_slice(), &encoded[..cut.min(encoded.len())], bytes.as_slice()] {
            match (WriteRecord::decode_head(input), WriteRecord::decode(input)) {
                (Ok(head), Ok(decoded)) => prop_assert_eq!(
                    head,
                    (decoded.kind(), decoded.start_ts, decoded.short_value.is_some())
                ),
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (head, decoded) => prop_assert!(false, "{head:?} against {decoded:?}"),
            }
        }
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_bytes(&bytes);
        let _ = MvccKey::decode(&bytes);
        let _ = split_mvcc_key(&bytes);
        let _ = WriteRecord::decode(&bytes);
        let _ = WriteRecord::decode_head(&bytes);
        let _ = LockRecord::decode(&bytes);
        let _ = LockEntry::decode(&bytes);
        let _ = decode_varint(&bytes, &mut 0);
    }
}
