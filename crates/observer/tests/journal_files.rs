//! The journal: every variant round-trips; a truncated tail is recovered up to the last
//! whole record and reported; a corrupt record is a typed error with its offset; the seed
//! sequence journaled through the bus replays in the same order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::sync::Arc;

use ime_observer::*;
use ime_region::{RegionEpoch, RegionId};

fn every_entry() -> Vec<JournalEntry> {
    let mut entries: Vec<JournalEntry> = common::one_of_each()
        .into_iter()
        .map(JournalEntry::Event)
        .collect();
    entries.push(JournalEntry::Applied {
        region: RegionId(7),
        epoch: RegionEpoch::new(10, 3),
        first: 41,
        last: 44,
    });
    let gap = DeliveryGap::of(&common::seed_sequence()[1], GapCause::QueueFull);
    entries.push(JournalEntry::Gap(gap));
    entries
}

/// Writes `entries` and returns the file's bytes and each record's start offset.
fn write(path: &std::path::Path, entries: &[JournalEntry]) -> (Vec<u8>, Vec<u64>) {
    let mut writer = JournalWriter::create(path).unwrap();
    let offsets = entries.iter().map(|e| writer.append(e).unwrap()).collect();
    writer.sync().unwrap();
    (std::fs::read(path).unwrap(), offsets)
}

#[test]
fn every_variant_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.journal");
    let entries = every_entry();
    let (bytes, offsets) = write(&path, &entries);
    assert_eq!(&bytes[..8], MAGIC);
    assert_eq!(offsets[0], 8);
    let contents = read_journal(&path).unwrap();
    assert_eq!(contents.entries, entries);
    assert_eq!(contents.truncated_at, None);
}

#[test]
fn a_truncated_tail_is_recovered_and_reported_at_every_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.journal");
    let entries = every_entry();
    let (bytes, offsets) = write(&path, &entries);
    let last = *offsets.last().unwrap() as usize;
    for cut in last + 1..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let contents = read_journal(&path).unwrap();
        assert_eq!(
            contents.entries,
            entries[..entries.len() - 1],
            "cut at {cut}"
        );
        assert_eq!(contents.truncated_at, Some(last as u64), "cut at {cut}");
    }
    // Reopening for append cuts the tail off and goes on from the last whole record.
    std::fs::write(&path, &bytes[..last + 3]).unwrap();
    let (mut writer, cut) = JournalWriter::open(&path).unwrap();
    assert_eq!(cut, Some(last as u64));
    writer.append(&entries[0]).unwrap();
    drop(writer);
    let contents = read_journal(&path).unwrap();
    let mut expected = entries[..entries.len() - 1].to_vec();
    expected.push(entries[0].clone());
    assert_eq!((contents.entries, contents.truncated_at), (expected, None));
}

#[test]
fn a_file_cut_inside_the_magic_is_an_empty_truncated_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("magic.journal");
    std::fs::write(&path, &MAGIC[..3]).unwrap();
    let contents = read_journal(&path).unwrap();
    assert_eq!(
        (contents.entries.len(), contents.truncated_at),
        (0, Some(0))
    );
    let (mut writer, _) = JournalWriter::open(&path).unwrap();
    writer.append(&every_entry()[0]).unwrap();
    drop(writer);
    assert_eq!(read_journal(&path).unwrap().entries.len(), 1);
}

#[test]
fn corruption_is_a_typed_error_with_the_record_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.journal");
    let entries = every_entry();
    let (bytes, offsets) = write(&path, &entries);

    let mut flipped = bytes.clone();
    flipped[offsets[2] as usize + 12] ^= 0x40; // inside the third record's payload
    std::fs::write(&path, &flipped).unwrap();
    match read_journal(&path) {
        Err(JournalError::Corrupt { offset, detail, .. }) => {
            assert_eq!(offset, offsets[2]);
            assert!(detail.contains("checksum"), "{detail}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }

    let mut huge = bytes.clone();
    huge[offsets[1] as usize..offsets[1] as usize + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    assert!(
        matches!(read_journal(&path), Err(JournalError::Corrupt { offset, .. }) if offset == offsets[1])
    );

    // A record whose checksum matches but whose payload is not an entry.
    let mut garbage = bytes[..8].to_vec();
    let payload = [0xffu8; 5];
    garbage.extend_from_slice(&5u32.to_le_bytes());
    garbage.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    garbage.extend_from_slice(&payload);
    std::fs::write(&path, &garbage).unwrap();
    assert!(matches!(
        read_journal(&path),
        Err(JournalError::Corrupt { offset: 8, .. })
    ));

    // A journal an older IME wrote (format 1): refused, with both versions named.
    std::fs::write(&path, b"IMEJRNL\x01").unwrap();
    let err = read_journal(&path).unwrap_err();
    assert!(matches!(
        err,
        JournalError::Version {
            found: 1,
            expected: 2,
            ..
        }
    ));
    assert!(err.to_string().contains("format version 1"), "{err}");

    std::fs::write(&path, b"NOTAJOURNAL").unwrap();
    assert!(matches!(
        read_journal(&path),
        Err(JournalError::BadMagic { .. })
    ));
    assert!(matches!(
        read_journal(dir.path().join("missing")),
        Err(JournalError::Io { .. })
    ));
}

#[test]
fn the_seed_sequence_journaled_through_the_bus_replays_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.journal");
    let bus = EventBus::new().unwrap();
    let live = Arc::new(Recorder::new("live"));
    bus.register(
        Arc::new(JournalObserver::new(JournalWriter::create(&path).unwrap())),
        100,
    );
    bus.register(live.clone(), 0);
    for event in common::seed_sequence() {
        let report = bus.publish(event);
        assert!(report.failures.is_empty() && !report.lost);
    }
    bus.close();

    let replayed = Recorder::new("replayed");
    let (contents, errors) = replay(&path, &replayed).unwrap();
    assert!(errors.is_empty());
    assert_eq!(contents.entries.len(), 3);
    assert_eq!(replayed.seen(), live.seen());
    assert_eq!(replayed.events(), common::seed_sequence());
}

/// Every prefix of a journal reads as a prefix of its entries, never an error, and
/// reports a truncated tail exactly when it ends inside a record (or inside the magic).
#[test]
fn every_prefix_reads_as_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefix.journal");
    let entries = every_entry();
    let (bytes, offsets) = write(&path, &entries);
    let mut ends: Vec<usize> = offsets.iter().skip(1).map(|o| *o as usize).collect();
    ends.push(bytes.len());
    for cut in 0..=bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let contents = read_journal(&path).unwrap();
        let whole = ends.iter().filter(|end| **end <= cut).count();
        assert_eq!(contents.entries[..], entries[..whole], "cut at {cut}");
        let at_boundary = cut == MAGIC.len() || ends.contains(&cut);
        assert_eq!(contents.truncated_at.is_none(), at_boundary, "cut at {cut}");
    }
}
