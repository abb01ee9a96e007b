//! `ime-memkv` benchmarks, each beside a same-run baseline: point get on 1M keys vs a
//! `BTreeMap`; a scan with one version per key vs iterating a `Vec`; an MVCC scan at a
//! read_ts with 100 versions per key, before and after GC; a bulk load in key order vs
//! collecting a `BTreeMap`; dropping a large range vs dropping a tiny one; dropping a
//! 256 MiB range beside a small store vs beside a large one; writes of 16-entry batches
//! into a memtable vs inserting them into a `BTreeMap` keyed as the old memtable was; and
//! memtable memory per entry against the entries' key and value bytes (a figure in
//! bytes, written beside criterion's results for `cargo xtask bench`).
//!
//! The figures `docs/goals.md` sets against RocksDB are measured here too, on the
//! same data in the same run: point get (goal: at least 3x faster) and the MVCC scan
//! after GC (goal: at least 20x faster per visible key).
//!
//! Sizes: `IME_BENCH_KEYS` keys (default 1,000,000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark harness: a failed setup should stop the run"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ime_benches::{keys_from_env, rocks_with, user_key};
use ime_disk::{DiskEngine, DiskSnapshot, KeyRange};
use ime_memkv::codec::{MvccKey, WriteRecord, WriteType};
use ime_memkv::{Cf, MemConfig, MemKv, RangeId, Snapshot};

fn store() -> MemKv {
    MemKv::new(MemConfig {
        hard_limit: 16 << 30,
        soft_limit: 8 << 30,
    })
}

/// Every key the benches write to range 1 (`t_...`, raw or memcomparable-encoded).
fn everything() -> KeyRange {
    KeyRange::with_end(b"t".to_vec(), Some(b"u".to_vec())).unwrap()
}

fn loaded(n: u64) -> (MemKv, Snapshot) {
    let kv = store();
    kv.create_range(RangeId(1), everything()).unwrap();
    let entries: Vec<_> = (0..n).map(|i| (user_key(i), vec![b'v'; 64])).collect();
    kv.load(RangeId(1), Cf::Default, entries, 1).unwrap();
    let snapshot = kv.snapshot(RangeId(1), 1).unwrap();
    (kv, snapshot)
}

fn point_get(c: &mut Criterion) {
    let n = keys_from_env();
    let (_kv, snapshot) = loaded(n);
    let disk = rocks_with(
        ime_disk::Cf::Default,
        (0..n).map(|i| (user_key(i), vec![b'v'; 64])),
    );
    let disk_snapshot = disk.snapshot();
    let map: BTreeMap<Vec<u8>, Vec<u8>> = (0..n).map(|i| (user_key(i), vec![b'v'; 64])).collect();
    let probes: Vec<Vec<u8>> = (0..4096u64)
        .map(|i| user_key(i.wrapping_mul(2_654_435_761) % n))
        .collect();
    let mut group = c.benchmark_group("memkv/point_get");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("memkv", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            snapshot.get(Cf::Default, &probes[i])
        });
    });
    group.bench_function("btreemap", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            map.get(&probes[i]).cloned()
        });
    });
    for probe in &probes {
        black_box(disk_snapshot.get(ime_disk::Cf::Default, probe).unwrap()); // warm cache
    }
    group.bench_function("rocksdb", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            disk_snapshot
                .get(ime_disk::Cf::Default, &probes[i])
                .unwrap()
        });
    });
    group.finish();
}

/// Snapshot + point get on the same store, the same total work on one thread and split
/// over two: what the store alone allows of the engine's two-reader goal.
fn readers(c: &mut Criterion) {
    let n = keys_from_env();
    let (kv, snapshot) = loaded(n);
    drop(snapshot);
    let probes: Vec<Vec<u8>> = (0..4096u64)
        .map(|i| user_key(i.wrapping_mul(2_654_435_761) % n))
        .collect();
    let gets = |count: u64, offset: usize| {
        for i in 0..count as usize {
            let snapshot = kv.snapshot(RangeId(1), 1).unwrap();
            black_box(snapshot.get(Cf::Default, &probes[(i + offset) % probes.len()]));
        }
    };
    let mut group = c.benchmark_group("memkv/readers");
    ime_benches::one_vs_two_threads(&mut group, gets);
    group.finish();
}

fn scan_one_version(c: &mut Criterion) {
    let n = (keys_from_env() / 10).max(1);
    let (_kv, snapshot) = loaded(n);
    let vec: Vec<(Vec<u8>, Vec<u8>)> = (0..n).map(|i| (user_key(i), vec![b'v'; 64])).collect();
    let mut group = c.benchmark_group("memkv/scan_1_version");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.bench_function("memkv", |b| {
        b.iter(|| {
            let mut iter = snapshot.iter(Cf::Default, everything()).unwrap();
            iter.seek_to_first();
            let mut count = 0usize;
            while let Some(entry) = iter.entry() {
                black_box(entry);
                count += 1;
                iter.next();
            }
            count
        });
    });
    // The baseline hands each entry's key and value to the consumer, as the scan does
    // (`black_box` of the slices: their pointers and lengths are read, not just the
    // element's address taken).
    group.bench_function("vec", |b| {
        b.iter(|| {
            vec.iter().fold(0usize, |n, (k, v)| {
                black_box((k.as_slice(), v.as_slice()));
                n + 1
            })
        })
    });
    group.finish();
}

/// A cursor the MVCC scan can drive: memkv's and the disk engine's.
trait Cursor {
    fn seek_to(&mut self, key: &[u8]);
    fn current(&self) -> Option<(&[u8], &[u8])>;
}

impl Cursor for ime_memkv::SnapshotIter {
    fn seek_to(&mut self, key: &[u8]) {
        self.seek(key);
    }

    fn current(&self) -> Option<(&[u8], &[u8])> {
        self.entry()
    }
}

impl Cursor for Box<dyn ime_disk::DiskIterator + '_> {
    fn seek_to(&mut self, key: &[u8]) {
        self.seek(key);
    }

    fn current(&self) -> Option<(&[u8], &[u8])> {
        self.entry()
    }
}

/// Per user key, the key a scan at `read_ts` seeks to and the encoded user key its
/// versions start with: built before timing, so that both sides are measured on the scan
/// itself, not on formatting keys.
fn seek_keys(users: u64, read_ts: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..users)
        .map(|u| {
            let user = user_key(u);
            let seek = MvccKey {
                user_key: user.clone(),
                ts: read_ts,
            }
            .encode();
            (seek, MvccKey::encode_user_key(&user))
        })
        .collect()
}

/// The newest visible version at the seek keys' read_ts of every user key, as TiKV's
/// forward scanner finds it; returns how many keys had one.
fn mvcc_scan_with(mut iter: impl Cursor, seeks: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let mut visible = 0;
    for (seek, user) in seeks {
        iter.seek_to(seek);
        if let Some((k, v)) = iter.current()
            && k.starts_with(user)
        {
            black_box(v);
            visible += 1;
        }
    }
    visible
}

fn mvcc_scan(snapshot: &Snapshot, seeks: &[(Vec<u8>, Vec<u8>)]) -> usize {
    mvcc_scan_with(snapshot.iter(Cf::Write, everything()).unwrap(), seeks)
}

fn mvcc_scan_rocks(snapshot: &impl DiskSnapshot, seeks: &[(Vec<u8>, Vec<u8>)]) -> usize {
    mvcc_scan_with(
        snapshot
            .iter(ime_disk::Cf::Write, KeyRange::everything())
            .unwrap(),
        seeks,
    )
}

fn mvcc_scan_100_versions(c: &mut Criterion) {
    let users = (keys_from_env() / 100).max(1);
    let kv = store();
    kv.create_range(RangeId(1), everything()).unwrap();
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity((users * 100) as usize);
    for u in 0..users {
        for ts in (1..=100u64).rev() {
            let key = MvccKey {
                user_key: user_key(u),
                ts: ts * 10,
            }
            .encode();
            let record = WriteRecord::new(WriteType::Put, ts * 10 - 1, Some(vec![b'v'; 16]))
                .encode()
                .unwrap();
            entries.push((key, record));
        }
    }
    let disk = rocks_with(ime_disk::Cf::Write, entries.iter().cloned());
    kv.load(RangeId(1), Cf::Write, entries, 1).unwrap();
    let read_ts = 1_000;
    let seeks = seek_keys(users, read_ts);
    let disk_snapshot = disk.snapshot();
    assert_eq!(mvcc_scan_rocks(&disk_snapshot, &seeks), users as usize);
    let before = kv.snapshot(RangeId(1), 1).unwrap();
    assert_eq!(mvcc_scan(&before, &seeks), users as usize);
    kv.compact(RangeId(1), Some(read_ts)).unwrap();
    let after = kv.snapshot(RangeId(1), 1).unwrap();
    assert_eq!(mvcc_scan(&after, &seeks), users as usize);
    let mut group = c.benchmark_group("memkv/mvcc_scan_100_versions");
    group.throughput(Throughput::Elements(users));
    group.sample_size(10);
    group.bench_function("before_gc", |b| b.iter(|| mvcc_scan(&before, &seeks)));
    group.bench_function("after_gc", |b| b.iter(|| mvcc_scan(&after, &seeks)));
    group.bench_function("rocksdb", |b| {
        b.iter(|| mvcc_scan_rocks(&disk_snapshot, &seeks))
    });
    group.finish();
}

fn bulk_load(c: &mut Criterion) {
    let n = (keys_from_env() / 10).max(1);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..n).map(|i| (user_key(i), vec![b'v'; 64])).collect();
    let mut group = c.benchmark_group("memkv/bulk_load");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.bench_function("memkv", |b| {
        b.iter_batched(
            || (store(), entries.clone()),
            |(kv, entries)| {
                kv.create_range(RangeId(1), everything()).unwrap();
                kv.load(RangeId(1), Cf::Default, entries, 1).unwrap();
                kv
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("btreemap", |b| {
        b.iter_batched(
            || entries.clone(),
            |entries| entries.into_iter().collect::<BTreeMap<_, _>>(),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// Creates, loads and drops `iters` ranges of `size` entries of `value_bytes` each next
/// to what `kv` holds; returns the foreground time of `drop_range` (taking the range out
/// of the store).
fn time_drops(kv: &MemKv, next: &mut u64, size: u64, value_bytes: usize, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        *next += 1;
        let id = RangeId(*next);
        let start = format!("z{next:012}").into_bytes();
        let end = [start.as_slice(), b"~"].concat();
        kv.create_range(id, KeyRange::with_end(start.clone(), Some(end)).unwrap())
            .unwrap();
        let entries: Vec<_> = (0..size)
            .map(|i| {
                (
                    [start.as_slice(), &user_key(i)].concat(),
                    vec![7; value_bytes],
                )
            })
            .collect();
        kv.load(id, Cf::Default, entries, 1).unwrap();
        let began = Instant::now();
        let handle = kv.drop_range(id).unwrap();
        total += began.elapsed();
        // Freeing happens where the handle drops: off the timed, foreground path, as the
        // engine's deleter thread does it.
        drop(handle);
    }
    total
}

fn drop_range(c: &mut Criterion) {
    let n = keys_from_env();
    let (kv, snapshot) = loaded(n);
    drop(snapshot);
    let mut group = c.benchmark_group("memkv/drop_range");
    group.sample_size(10);
    let mut next = 10u64;
    let big = (n / 10).max(1);
    group.bench_function("large", |b| {
        b.iter_custom(|iters| time_drops(&kv, &mut next, big, 64, iters))
    });
    group.bench_function("tiny", |b| {
        b.iter_custom(|iters| time_drops(&kv, &mut next, 10, 64, iters))
    });
    group.finish();
}

/// Dropping a 256 MiB range beside a small store and beside one holding `IME_BENCH_KEYS`
/// keys: the foreground cost must not grow with the other ranges. Each iteration builds
/// its 256 MiB range first (untimed), so the group takes few samples quickly.
fn drop_256mib(c: &mut Criterion) {
    let mut group = c.benchmark_group("memkv/drop_256mib");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    let mut next = 10u64;
    for (name, others) in [("beside_small", 1_000), ("beside_large", keys_from_env())] {
        let (kv, snapshot) = loaded(others);
        drop(snapshot);
        group.bench_function(name, |b| {
            // 256 MiB: 4,096 values of 64 KiB.
            b.iter_custom(|iters| time_drops(&kv, &mut next, 4096, 64 << 10, iters))
        });
    }
    group.finish();
}

/// Entries per memtable before the write benches start a fresh store (as a compaction
/// would fold them into a run).
const MEMTABLE_ENTRIES: u64 = 100_000;

/// Key `i` of the memtable benches: 24 bytes, like a short MVCC write-CF key.
fn memtable_key(i: u64) -> Vec<u8> {
    format!(
        "t_{:012}_r_row_key",
        i.wrapping_mul(2_654_435_761) % 1_000_000_007
    )
    .into_bytes()
}

/// The value of every memtable bench entry: 16 bytes (a write record with a short value).
const MEMTABLE_VALUE: &[u8] = b"P\x05v\x0c0123456789ab";

fn memtable_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("memkv/memtable_write_16");
    group.throughput(Throughput::Elements(16));
    let keys: Vec<Vec<u8>> = (0..MEMTABLE_ENTRIES).map(memtable_key).collect();
    group.bench_function("memkv", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut kv = fresh_memtable_store();
            let mut at = 0usize;
            for _ in 0..iters {
                if at + 16 > keys.len() {
                    kv = fresh_memtable_store();
                    at = 0;
                }
                let ops: Vec<ime_memkv::OpRef<'_>> = keys[at..at + 16]
                    .iter()
                    .map(|k| ime_memkv::OpRef::Put(Cf::Write, k, MEMTABLE_VALUE))
                    .collect();
                at += 16;
                let start = Instant::now();
                black_box(kv.write_next(&ops).unwrap());
                total += start.elapsed();
            }
            total
        })
    });
    // What the memtable was before: an ordered map keyed by (key, descending sequence),
    // two allocations per entry.
    group.bench_function("btreemap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            type Old = BTreeMap<(Box<[u8]>, std::cmp::Reverse<u64>), Option<Box<[u8]>>>;
            let mut map = Old::new();
            let (mut at, mut seq) = (0usize, 0u64);
            for _ in 0..iters {
                if at + 16 > keys.len() {
                    map = Old::new();
                    at = 0;
                }
                let start = Instant::now();
                for k in &keys[at..at + 16] {
                    seq += 1;
                    map.insert(
                        (k.as_slice().into(), std::cmp::Reverse(seq)),
                        Some(MEMTABLE_VALUE.into()),
                    );
                }
                black_box(&map);
                total += start.elapsed();
                at += 16;
            }
            total
        })
    });
    group.finish();
    write_memtable_memory_figure(&keys);
}

fn fresh_memtable_store() -> MemKv {
    let kv = store();
    kv.create_range(RangeId(1), everything()).unwrap();
    kv
}

/// Bytes per memtable entry (the store's count, which `ime-memkv`'s tests hold to the
/// allocator's within a few parts in a thousand for arenas) against the entry's key and
/// value bytes, for `MEMTABLE_ENTRIES` entries written in batches of 16; written as
/// `memkv_memtable_memory/{memtable,encoded}/bytes.json` under criterion's directory.
fn write_memtable_memory_figure(keys: &[Vec<u8>]) {
    let kv = fresh_memtable_store();
    let empty = kv.memory_used();
    for batch in keys.chunks(16) {
        let ops: Vec<ime_memkv::OpRef<'_>> = batch
            .iter()
            .map(|k| ime_memkv::OpRef::Put(Cf::Write, k, MEMTABLE_VALUE))
            .collect();
        kv.write_next(&ops).unwrap();
    }
    let per_entry = (kv.memory_used() - empty) as f64 / keys.len() as f64;
    let encoded = (keys[0].len() + MEMTABLE_VALUE.len()) as f64;
    println!(
        "memkv/memtable_memory: {per_entry:.1} bytes per entry, {encoded} bytes of key and \
         value ({:.2}x)",
        per_entry / encoded
    );
    let dir = ime_benches::criterion_dir().join("memkv_memtable_memory");
    for (name, value) in [("memtable", per_entry), ("encoded", encoded)] {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("bytes.json"), format!("{{\"bytes\": {value}}}\n")).unwrap();
    }
}

criterion_group! {
    name = benches;
    config = ime_benches::criterion();
    targets = point_get, readers, scan_one_version, mvcc_scan_100_versions, bulk_load, drop_range,
        drop_256mib, memtable_write
}
criterion_main!(benches);
