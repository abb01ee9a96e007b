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
    assert!(matches!(
        WriteRecord::decode(b"P\x01?"),
        Err(CodecError::UnknownFlag { flag: b'?', .. })
    ));
    assert!(WriteRecord::decode(b"").is_err());
    let long = WriteRecord::new(WriteType::Put, 1, Some(vec![0; 256]));
    assert_eq!(long.encode(), Err(CodecError::ShortValueTooLong(256)));
}

#[test]
fn lock_record_vectors() {
    let mut lock = LockRecord::new(LockType::Put, b"pk".to_vec(), 10, 3000);
    lock.short_value = Some(b"v1".to_vec());
    lock.min_commit_ts = Some(11);
    let bytes = lock.encode().unwrap();
    let mut expected = vec![
        b'P', 2, b'p', b'k', 10, 0xb8, 0x17, b'v', 2, b'v', b'1', b'c',
    ];
    expected.extend_from_slice(&11u64.to_be_bytes());
    assert_eq!(bytes, expected);
    assert_eq!(LockRecord::decode(&bytes).unwrap(), lock);
    assert!(matches!(
        LockRecord::decode(&[b'P', 9, b'p']),
        Err(CodecError::Truncated { .. })
    ));
    assert!(matches!(
        LockRecord::decode(b"Q\x00\x01\x01"),
        Err(CodecError::UnknownFlag { flag: b'Q', .. })
    ));
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
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_bytes(&bytes);
        let _ = MvccKey::decode(&bytes);
        let _ = WriteRecord::decode(&bytes);
        let _ = LockRecord::decode(&bytes);
        let _ = decode_varint(&bytes, &mut 0);
    }
}
