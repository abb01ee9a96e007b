//! The conformance suite: one set of checks run against every implementation (the
//! in-memory reference and RocksDB), plus a differential property test between the two
//! and a RocksDB reopen test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use ime_disk::*;
use proptest::prelude::*;

fn put(disk: &impl DiskEngine, cf: Cf, pairs: &[(&str, &str)]) -> SeqRange {
    let mut batch = WriteBatch::new();
    for (k, v) in pairs {
        batch.put(cf, *k, *v);
    }
    disk.write(&batch).unwrap()
}

fn keys(snapshot: &impl DiskSnapshot, cf: Cf, bounds: KeyRange) -> Vec<String> {
    let entries = collect(snapshot, cf, bounds).unwrap();
    entries
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

fn bounds(lower: &str, upper: &str) -> KeyRange {
    KeyRange::with_end(
        lower,
        (!upper.is_empty()).then(|| upper.as_bytes().to_vec()),
    )
    .unwrap()
}

/// Walks an iterator backwards from its last entry.
fn keys_backward(snapshot: &impl DiskSnapshot, cf: Cf, b: KeyRange) -> Vec<String> {
    let mut iter = snapshot.iter(cf, b).unwrap();
    iter.seek_to_last();
    let mut out = Vec::new();
    while let Some((k, _)) = iter.entry() {
        out.push(String::from_utf8(k.to_vec()).unwrap());
        iter.prev();
    }
    out
}

fn sequence_numbers_are_consecutive_per_operation(disk: impl DiskEngine) {
    let base = disk.latest_sequence();
    let first = put(&disk, Cf::Write, &[("a", "1"), ("b", "2"), ("c", "3")]);
    assert_eq!(
        first,
        SeqRange {
            first: base + 1,
            last: base + 3
        }
    );
    let mut batch = WriteBatch::new();
    batch
        .delete(Cf::Write, "a")
        .delete_range(Cf::Default, "a", "z");
    let second = disk.write(&batch).unwrap();
    assert_eq!(
        second,
        SeqRange {
            first: base + 4,
            last: base + 5
        }
    );
    assert_eq!(disk.latest_sequence(), base + 5);
    assert_eq!(disk.snapshot().sequence(), base + 5);
    assert!(matches!(
        disk.write(&WriteBatch::new()),
        Err(DiskError::EmptyBatch)
    ));
    let bad = disk.write(WriteBatch::new().delete_range(Cf::Lock, "z", "a"));
    assert!(matches!(bad, Err(DiskError::InvalidRange { .. })));
    assert_eq!(
        disk.latest_sequence(),
        base + 5,
        "a refused batch takes no sequence number"
    );
}

fn snapshots_are_isolated_from_later_writes_and_range_deletes(disk: impl DiskEngine) {
    put(
        &disk,
        Cf::Write,
        &[("k1", "v1"), ("k2", "v2"), ("k3", "v3")],
    );
    let old = disk.snapshot();
    put(&disk, Cf::Write, &[("k1", "v1b"), ("k4", "v4")]);
    disk.write(WriteBatch::new().delete(Cf::Write, "k2"))
        .unwrap();
    disk.write(WriteBatch::new().delete_range(Cf::Write, "k3", "k4"))
        .unwrap();
    let new = disk.snapshot();
    assert_eq!(old.get(Cf::Write, b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(
        keys(&old, Cf::Write, KeyRange::everything()),
        ["k1", "k2", "k3"]
    );
    assert_eq!(new.get(Cf::Write, b"k1").unwrap(), Some(b"v1b".to_vec()));
    assert_eq!(new.get(Cf::Write, b"k2").unwrap(), None);
    assert_eq!(keys(&new, Cf::Write, KeyRange::everything()), ["k1", "k4"]);
    assert!(old.sequence() < new.sequence());
    // A put after a range delete in the same batch survives it; one before does not.
    let mut batch = WriteBatch::new();
    batch
        .put(Cf::Lock, "x1", "gone")
        .delete_range(Cf::Lock, "x", "y")
        .put(Cf::Lock, "x2", "kept");
    disk.write(&batch).unwrap();
    assert_eq!(
        keys(&disk.snapshot(), Cf::Lock, KeyRange::everything()),
        ["x2"]
    );
}

fn column_families_are_separate(disk: impl DiskEngine) {
    put(&disk, Cf::Default, &[("k", "default")]);
    put(&disk, Cf::Lock, &[("k", "lock")]);
    let snap = disk.snapshot();
    assert_eq!(
        snap.get(Cf::Default, b"k").unwrap(),
        Some(b"default".to_vec())
    );
    assert_eq!(snap.get(Cf::Lock, b"k").unwrap(), Some(b"lock".to_vec()));
    assert_eq!(snap.get(Cf::Write, b"k").unwrap(), None);
    // Sizes count every column family, within the range only.
    put(&disk, Cf::Write, &[("m", "xy")]);
    let snap = disk.snapshot();
    assert_eq!(range_size(&snap, &KeyRange::everything()).unwrap(), (3, 16));
    assert_eq!(range_size(&snap, &bounds("a", "l")).unwrap(), (2, 13));
}

fn iterators_honour_bounds_both_ways(disk: impl DiskEngine) {
    put(
        &disk,
        Cf::Write,
        &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")],
    );
    let snap = disk.snapshot();
    assert_eq!(keys(&snap, Cf::Write, bounds("b", "d")), ["b", "c"]);
    assert_eq!(
        keys_backward(&snap, Cf::Write, bounds("b", "d")),
        ["c", "b"]
    );
    assert_eq!(keys(&snap, Cf::Write, bounds("c", "")), ["c", "d", "e"]);
    assert_eq!(keys_backward(&snap, Cf::Write, bounds("", "c")), ["b", "a"]);
    let mut iter = snap.iter(Cf::Write, bounds("b", "e")).unwrap();
    iter.seek(b"a");
    assert_eq!(
        iter.entry().map(|(k, _)| k),
        Some(&b"b"[..]),
        "seek below the lower bound"
    );
    iter.seek(b"bb");
    assert_eq!(iter.entry().map(|(k, _)| k), Some(&b"c"[..]));
    iter.seek(b"e");
    assert_eq!(iter.entry(), None, "seek to the upper bound");
    iter.seek_for_prev(b"cc");
    assert_eq!(iter.entry().map(|(k, _)| k), Some(&b"c"[..]));
    iter.seek_for_prev(b"z");
    assert_eq!(
        iter.entry().map(|(k, _)| k),
        Some(&b"d"[..]),
        "seek-for-prev above the upper bound"
    );
    iter.seek_for_prev(b"a");
    assert_eq!(iter.entry(), None, "seek-for-prev below the lower bound");
    iter.seek_to_last();
    iter.next();
    assert_eq!(iter.entry(), None);
    iter.status().unwrap();
    assert!(KeyRange::with_end("b", Some(b"b".to_vec())).is_err());
}

fn ingest_is_invisible_to_older_snapshots(disk: impl DiskEngine) {
    // A file that overlaps nothing, while no snapshot is open (RocksDB may give it no
    // sequence number): the change count moves all the same.
    let changes = disk.changes();
    disk.ingest(Cf::Lock, &[(b"x".to_vec(), b"alone".to_vec())])
        .unwrap();
    assert!(disk.changes() > changes, "an ingest is a change");
    let changes = disk.changes();
    put(&disk, Cf::Write, &[("k1", "old"), ("k5", "old")]);
    assert!(disk.changes() > changes, "a write is a change");
    let before = disk.snapshot();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = ["k1", "k2", "k3"]
        .iter()
        .map(|k| (k.as_bytes().to_vec(), b"ingested".to_vec()))
        .collect();
    let changes = disk.changes();
    disk.ingest(Cf::Write, &entries).unwrap();
    assert!(disk.changes() > changes, "an ingest is a change");
    let after = disk.snapshot();
    assert_eq!(
        keys(&before, Cf::Write, KeyRange::everything()),
        ["k1", "k5"]
    );
    assert_eq!(before.get(Cf::Write, b"k1").unwrap(), Some(b"old".to_vec()));
    assert_eq!(
        keys(&after, Cf::Write, KeyRange::everything()),
        ["k1", "k2", "k3", "k5"]
    );
    assert_eq!(
        after.get(Cf::Write, b"k1").unwrap(),
        Some(b"ingested".to_vec())
    );
    // Writes after the ingest take later sequence numbers and win.
    put(&disk, Cf::Write, &[("k2", "newer")]);
    assert_eq!(
        disk.snapshot().get(Cf::Write, b"k2").unwrap(),
        Some(b"newer".to_vec())
    );
    let unsorted = vec![(b"b".to_vec(), vec![]), (b"a".to_vec(), vec![])];
    assert!(matches!(
        disk.ingest(Cf::Write, &unsorted),
        Err(DiskError::UnsortedIngest { position: 1 })
    ));
}

/// The first snapshot of a fresh disk, taken when only an ingest had landed, keeps
/// reading the ingested keys after a later delete of one of them and the compactions
/// that follow (RocksDB, at sequence 0, dropped the key under the delete).
fn a_first_snapshot_keeps_its_keys_through_compactions(disk: impl DiskEngine) {
    let ingest = |keys: &[&str]| {
        let entries: Vec<_> = keys
            .iter()
            .map(|k| (k.as_bytes().to_vec(), vec![1]))
            .collect();
        disk.ingest(Cf::Lock, &entries).unwrap();
    };
    ingest(&["k3", "k8"]);
    let first = disk.snapshot();
    let mut batch = WriteBatch::new();
    batch.delete(Cf::Lock, "k4").delete(Cf::Lock, "k3");
    disk.write(&batch).unwrap();
    // Ingests overlapping the deletes and each other: the memtable is flushed, and the
    // level-0 files reach the count that starts a compaction into the bottom level.
    for keys in [
        &["k5", "k6"][..],
        &["k5", "k8"],
        &["k0", "k4"],
        &["k4", "k8", "k9"],
    ] {
        ingest(keys);
        ingest(keys);
    }
    assert_eq!(keys(&first, Cf::Lock, KeyRange::everything()), ["k3", "k8"]);
    assert_eq!(first.get(Cf::Lock, b"k3").unwrap(), Some(vec![1]));
    assert_eq!(
        keys(&disk.snapshot(), Cf::Lock, KeyRange::everything()),
        ["k0", "k4", "k5", "k6", "k8", "k9"]
    );
}

/// A snapshot's sequence number is exactly what it sees, while another thread writes:
/// every write puts one new key, so a snapshot at `S` holds `S - base` keys.
fn snapshot_sequences_are_exact_beside_a_writer(disk: impl DiskEngine) {
    let base = disk.latest_sequence();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..10_000u32 {
                let mut batch = WriteBatch::new();
                batch.put(Cf::Default, format!("k{i:06}"), "v");
                disk.write(&batch).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut checked = 0;
        while !done.load(std::sync::atomic::Ordering::Acquire) || checked == 0 {
            let snapshot = disk.snapshot();
            let seen = collect(&snapshot, Cf::Default, KeyRange::everything()).unwrap();
            assert_eq!(
                seen.len() as u64,
                snapshot.sequence() - base,
                "a snapshot at {} sees {} writes",
                snapshot.sequence(),
                seen.len()
            );
            checked += 1;
        }
    });
}

/// Writes applied from two threads at once all land, each atomically.
fn concurrent_applies_all_land(disk: impl DiskEngine) {
    let base = disk.latest_sequence();
    std::thread::scope(|s| {
        for thread in 0..2u32 {
            let disk = &disk;
            s.spawn(move || {
                for i in 0..500u32 {
                    let mut batch = WriteBatch::new();
                    batch
                        .put(Cf::Default, format!("{thread}/{i:04}/a"), "v")
                        .put(Cf::Default, format!("{thread}/{i:04}/b"), "v");
                    disk.apply(&batch).unwrap();
                }
            });
        }
    });
    let snapshot = disk.snapshot();
    assert_eq!(snapshot.sequence() - base, 2000, "one number per operation");
    let keys = collect(&snapshot, Cf::Default, KeyRange::everything()).unwrap();
    assert_eq!(keys.len(), 2000);
}

macro_rules! conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn sequence_numbers() {
                sequence_numbers_are_consecutive_per_operation($make);
            }

            #[test]
            fn snapshot_isolation() {
                snapshots_are_isolated_from_later_writes_and_range_deletes($make);
            }

            #[test]
            fn column_families() {
                column_families_are_separate($make);
            }

            #[test]
            fn iterator_bounds() {
                iterators_honour_bounds_both_ways($make);
            }

            #[test]
            fn ingest_visibility() {
                ingest_is_invisible_to_older_snapshots($make);
            }

            #[test]
            fn first_snapshot_through_compactions() {
                a_first_snapshot_keeps_its_keys_through_compactions($make);
            }

            #[test]
            fn concurrent_applies() {
                concurrent_applies_all_land($make);
            }

            #[test]
            fn exact_snapshot_sequences() {
                snapshot_sequences_are_exact_beside_a_writer($make);
            }
        }
    };
}

conformance!(memory, MemDisk::new());
conformance!(
    rocksdb,
    RocksDisk::open_temp(&RocksConfig::default()).unwrap()
);

conformance!(rocksdb_wrapped, wrapped("conformance").0);

/// A database opened the way an embedder opens its own — TiKV's column families under
/// other names, and one of its own (a Raft log) — and wrapped. Each database lives in the
/// test target's scratch directory (`tag` and a counter name it; a rerun replaces it).
fn wrapped(tag: &str) -> (RocksDisk, std::sync::Arc<ime_disk::rocksdb::DB>) {
    let db = embedders_database(tag);
    (
        RocksDisk::wrap(std::sync::Arc::clone(&db), embedders_names(), false).unwrap(),
        db,
    )
}

fn embedders_names() -> CfNames {
    CfNames {
        default: "txn_default".into(),
        lock: "txn_lock".into(),
        write: "txn_write".into(),
    }
}

/// The database of [`wrapped`], not yet wrapped.
fn embedders_database(tag: &str) -> std::sync::Arc<ime_disk::rocksdb::DB> {
    use ime_disk::rocksdb::{ColumnFamilyDescriptor, DB, Options};
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wrapped-{tag}-{n}"));
    let _ = std::fs::remove_dir_all(&path);
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = ["default", "txn_default", "txn_lock", "txn_write", "raft"]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    std::sync::Arc::new(DB::open_cf_descriptors(&options, &path, families).unwrap())
}

/// Wrapping a database that never took a sequence number moves it to 1 (no snapshot may
/// be taken at 0) without changing what it holds: here, an ingested value under the
/// empty key, the key the move rewrites.
#[test]
fn wrapping_a_database_at_sequence_zero_keeps_its_data() {
    let db = embedders_database("zero");
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("zero.sst");
    let options = ime_disk::rocksdb::Options::default();
    let mut writer = ime_disk::rocksdb::SstFileWriter::create(&options);
    writer.open(&file).unwrap();
    writer.put(b"", b"embedder's").unwrap();
    writer.finish().unwrap();
    db.ingest_external_file_cf(db.cf_handle("txn_lock").unwrap(), vec![&file])
        .unwrap();
    assert_eq!(db.latest_sequence_number(), 0);
    let disk = RocksDisk::wrap(std::sync::Arc::clone(&db), embedders_names(), false).unwrap();
    assert_eq!(disk.latest_sequence(), 1);
    let snapshot = disk.snapshot();
    assert_eq!(
        snapshot.get(Cf::Lock, b"").unwrap(),
        Some(b"embedder's".to_vec())
    );
    assert_eq!(keys(&snapshot, Cf::Lock, KeyRange::everything()), [""]);
    // A database already past 0 is not written to.
    drop(snapshot);
    let again = RocksDisk::wrap(db, embedders_names(), false).unwrap();
    assert_eq!(again.latest_sequence(), 1);
    // A fresh database of its own starts at 1 as well, and holds nothing.
    let own = RocksDisk::open_temp(&RocksConfig::default()).unwrap();
    assert_eq!(own.latest_sequence(), 1);
    assert!(keys(&own.snapshot(), Cf::Lock, KeyRange::everything()).is_empty());
}

#[test]
fn an_existing_database_can_be_wrapped() {
    let (disk, db) = wrapped("existing");
    assert!(std::sync::Arc::ptr_eq(disk.db(), &db));
    let seqs = put(&disk, Cf::Write, &[("a", "1")]);
    // The data is in the embedder's own column family, under its own name.
    let write = db.cf_handle("txn_write").unwrap();
    assert_eq!(db.get_cf(write, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        db.get(b"a").unwrap(),
        None,
        "not in the database's default family"
    );
    // The embedder writes its Raft log beside it; the disk's snapshots are unaffected.
    let before = disk.snapshot();
    db.put_cf(db.cf_handle("raft").unwrap(), b"log-1", b"entry")
        .unwrap();
    assert!(disk.latest_sequence() > seqs.last);
    put(&disk, Cf::Write, &[("b", "2")]);
    assert_eq!(keys(&before, Cf::Write, KeyRange::everything()), ["a"]);
    assert_eq!(
        keys(&disk.snapshot(), Cf::Write, KeyRange::everything()),
        ["a", "b"]
    );
    disk.ingest(Cf::Lock, &[(b"l".to_vec(), b"x".to_vec())])
        .unwrap();
    let lock = db.cf_handle("txn_lock").unwrap();
    assert_eq!(db.get_cf(lock, b"l").unwrap(), Some(b"x".to_vec()));
}

#[test]
fn wrapping_a_database_without_the_families_is_refused() {
    let (_disk, db) = wrapped("missing");
    let names = CfNames {
        lock: "no_such_family".into(),
        ..CfNames::default()
    };
    let err = RocksDisk::wrap(db, names, false).err().unwrap();
    assert!(err.to_string().contains("no_such_family"), "{err}");
}

#[test]
fn a_reopened_rocksdb_directory_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let disk = RocksDisk::open(dir.path(), &RocksConfig::default()).unwrap();
        put(&disk, Cf::Write, &[("a", "1")]);
        put(&disk, Cf::Lock, &[("b", "2")]).last
    };
    let disk = RocksDisk::open(dir.path(), &RocksConfig::default()).unwrap();
    assert_eq!(disk.latest_sequence(), last);
    let snap = disk.snapshot();
    assert_eq!(snap.get(Cf::Write, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(snap.get(Cf::Lock, b"b").unwrap(), Some(b"2".to_vec()));
}

#[derive(Clone, Debug)]
enum Op {
    Batch(Vec<(u8, u8, Option<u8>, bool)>),
    Ingest(u8, Vec<u8>),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..12u8;
    prop_oneof![
        6 => prop::collection::vec((0..3u8, key.clone(), prop::option::of(0..100u8), prop::bool::weighted(0.1)), 1..6)
            .prop_map(Op::Batch),
        1 => (0..3u8, prop::collection::btree_set(key, 1..5)).prop_map(|(cf, keys)| Op::Ingest(cf, keys.into_iter().collect())),
        2 => Just(Op::Snapshot),
    ]
}

fn key_of(k: u8) -> Vec<u8> {
    format!("key{k:02}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random batches (puts, deletes, range deletes), ingests and snapshots: the two
    /// engines agree on every sequence number and every read of every snapshot.
    #[test]
    fn memory_and_rocksdb_agree(ops in prop::collection::vec(op(), 1..30)) {
        let (mem, rocks) = (MemDisk::new(), RocksDisk::open_temp(&RocksConfig::default()).unwrap());
        let mut snapshots: Vec<(MemSnapshot, RocksSnapshot)> = Vec::new();
        for op in &ops {
            match op {
                Op::Batch(items) => {
                    let mut batch = WriteBatch::new();
                    for (cf, k, value, range) in items {
                        let cf = Cf::ALL[usize::from(*cf)];
                        match (value, range) {
                            (_, true) => batch.delete_range(cf, key_of(*k), key_of(k + 3)),
                            (Some(v), false) => batch.put(cf, key_of(*k), vec![*v]),
                            (None, false) => batch.delete(cf, key_of(*k)),
                        };
                    }
                    // Ingest may or may not take a sequence number (RocksDB gives a file
                    // that overlaps nothing, with no snapshot open, sequence 0), so the
                    // engines agree on how many numbers a batch takes, not which.
                    let (m, r) = (mem.write(&batch).unwrap(), rocks.write(&batch).unwrap());
                    prop_assert_eq!(m.last - m.first, r.last - r.first);
                    prop_assert_eq!(r.last, rocks.latest_sequence());
                }
                Op::Ingest(cf, ks) => {
                    let entries: Vec<_> = ks.iter().map(|k| (key_of(*k), vec![200])).collect();
                    mem.ingest(Cf::ALL[usize::from(*cf)], &entries).unwrap();
                    rocks.ingest(Cf::ALL[usize::from(*cf)], &entries).unwrap();
                }
                Op::Snapshot => snapshots.push((mem.snapshot(), rocks.snapshot())),
            }
        }
        snapshots.push((mem.snapshot(), rocks.snapshot()));
        for (m, r) in &snapshots {
            for cf in Cf::ALL {
                prop_assert_eq!(collect(m, cf, KeyRange::everything()).unwrap(), collect(r, cf, KeyRange::everything()).unwrap());
                let b = bounds("key03", "key08");
                prop_assert_eq!(keys_backward(m, cf, b.clone()), keys_backward(r, cf, b));
                for k in 0..12 {
                    prop_assert_eq!(m.get(cf, &key_of(k)).unwrap(), r.get(cf, &key_of(k)).unwrap());
                }
            }
        }
    }
}

/// A baseline opened with `RocksConfig::options` is the RocksDB `RocksDisk::open` opens:
/// its column families take the configured block cache, and the disk wraps it.
#[test]
fn a_database_opened_with_the_configs_options_is_the_disks() {
    use ime_disk::rocksdb::{ColumnFamilyDescriptor, DB};
    let config = RocksConfig {
        block_cache_bytes: 24 << 20,
        ..RocksConfig::default()
    };
    let (options, cf_options) = config.options();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("with-options");
    let _ = std::fs::remove_dir_all(&path);
    let families = ["default", "lock", "write"]
        .map(|name| ColumnFamilyDescriptor::new(name, cf_options.clone()));
    let db = std::sync::Arc::new(DB::open_cf_descriptors(&options, &path, families).unwrap());
    for name in ["default", "lock", "write"] {
        let cf = db.cf_handle(name).unwrap();
        let capacity = db.property_int_value_cf(cf, "rocksdb.block-cache-capacity");
        assert_eq!(capacity.unwrap(), Some(24 << 20), "{name}");
    }
    let disk = RocksDisk::wrap(std::sync::Arc::clone(&db), CfNames::default(), false).unwrap();
    put(&disk, Cf::Write, &[("a", "1")]);
    assert_eq!(
        keys(&disk.snapshot(), Cf::Write, KeyRange::everything()),
        ["a"]
    );
}
