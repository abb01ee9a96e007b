//! `ime-disk` benchmarks: the RocksDB baselines that `docs/goals.md` compares the
//! cache against (point get on the latest version, MVCC scan at a read_ts with 100
//! versions per key, write batches of 16 with the WAL on, full-range iteration), each
//! beside a same-run reference: a `BTreeMap` holding the same data.
//!
//! Sizes: `IME_BENCH_KEYS` keys for point gets (default 1,000,000); the MVCC data is
//! `IME_BENCH_KEYS / 100` user keys with 100 versions each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark harness: a failed setup should stop the run"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ime_benches::{keys_from_env, rocks_with, user_key};
use ime_disk::{Cf, DiskEngine, DiskSnapshot, KeyRange, RocksConfig, RocksDisk, WriteBatch};

/// A TiKV-style MVCC key: the user key, then the timestamp inverted and big-endian, so a
/// newer version sorts first.
fn mvcc_key(user: &[u8], ts: u64) -> Vec<u8> {
    let mut key = user.to_vec();
    key.extend_from_slice(&(!ts).to_be_bytes());
    key
}

const VALUE: &[u8] = &[b'v'; 64];

fn point_get(c: &mut Criterion) {
    let n = keys_from_env();
    let disk = rocks_with(Cf::Default, (0..n).map(|i| (user_key(i), VALUE.to_vec())));
    let map: BTreeMap<Vec<u8>, Vec<u8>> = (0..n).map(|i| (user_key(i), VALUE.to_vec())).collect();
    let probes: Vec<Vec<u8>> = (0..4096u64)
        .map(|i| user_key(i.wrapping_mul(2_654_435_761) % n))
        .collect();
    let snapshot = disk.snapshot();
    for probe in &probes {
        black_box(snapshot.get(Cf::Default, probe).unwrap()); // warm the block cache
    }
    let mut group = c.benchmark_group("disk/point_get");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("rocksdb", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            snapshot.get(Cf::Default, &probes[i]).unwrap()
        });
    });
    group.bench_function("btreemap", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            map.get(&probes[i]).cloned()
        });
    });
    group.finish();
}

/// Reads the newest version at or below `read_ts` of every user key in the snapshot's
/// write CF, as TiKV's forward scanner does: skip newer versions by seeking, take one,
/// then seek past the key's older versions. Returns the number of visible keys.
fn mvcc_scan_rocks(snapshot: &impl DiskSnapshot, read_ts: u64) -> usize {
    let mut iter = snapshot.iter(Cf::Write, KeyRange::everything()).unwrap();
    iter.seek_to_first();
    let mut visible = 0;
    while let Some((key, _)) = iter.entry() {
        let user = key[..key.len().saturating_sub(8)].to_vec();
        iter.seek(&mvcc_key(&user, read_ts));
        if let Some((k, v)) = iter.entry()
            && k.starts_with(&user)
            && k.len() == user.len() + 8
        {
            black_box(v);
            visible += 1;
        }
        iter.seek(&mvcc_key(&user, 0));
        iter.next();
    }
    visible
}

fn mvcc_scan(c: &mut Criterion) {
    let users = (keys_from_env() / 100).max(1);
    let versions = |u: u64| {
        (1..=100u64).map(move |ts| (mvcc_key(&user_key(u), ts * 10), VALUE[..16].to_vec()))
    };
    let disk = rocks_with(Cf::Write, (0..users).flat_map(versions));
    let map: BTreeMap<Vec<u8>, Vec<u8>> = (0..users).flat_map(versions).collect();
    let snapshot = disk.snapshot();
    let read_ts = 505; // half the versions are newer than the read
    assert_eq!(mvcc_scan_rocks(&snapshot, read_ts), users as usize);
    let mut group = c.benchmark_group("disk/mvcc_scan_100_versions");
    group.throughput(Throughput::Elements(users));
    group.sample_size(10);
    group.bench_function("rocksdb", |b| {
        b.iter(|| mvcc_scan_rocks(&snapshot, read_ts))
    });
    group.bench_function("btreemap", |b| {
        b.iter(|| {
            let mut visible = 0;
            for u in 0..users {
                let user = user_key(u);
                let from = Bound::Included(mvcc_key(&user, read_ts));
                let to = Bound::Included(mvcc_key(&user, 0));
                visible += usize::from(map.range((from, to)).next().map(black_box).is_some());
            }
            visible
        });
    });
    group.bench_function("rocksdb_full_iteration", |b| {
        b.iter(|| {
            let mut iter = snapshot.iter(Cf::Write, KeyRange::everything()).unwrap();
            iter.seek_to_first();
            let mut n = 0usize;
            while let Some(entry) = iter.entry() {
                black_box(entry);
                n += 1;
                iter.next();
            }
            n
        });
    });
    group.finish();
}

fn write_batches(c: &mut Criterion) {
    let disk = RocksDisk::open_temp(&RocksConfig::default()).unwrap();
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut next = 0u64;
    let mut group = c.benchmark_group("disk/write_batch_16");
    group.throughput(Throughput::Elements(16));
    group.bench_function("rocksdb_wal", |b| {
        b.iter_batched(
            || {
                let mut batch = WriteBatch::new();
                for _ in 0..16 {
                    next += 1;
                    batch.put(
                        Cf::Write,
                        mvcc_key(&user_key(next % 100_000), next),
                        VALUE.to_vec(),
                    );
                }
                batch
            },
            |batch| disk.write(&batch).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("btreemap", |b| {
        b.iter_batched(
            || {
                (0..16)
                    .map(|_| {
                        next += 1;
                        (mvcc_key(&user_key(next % 100_000), next), VALUE.to_vec())
                    })
                    .collect::<Vec<_>>()
            },
            |entries| map.extend(entries),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = ime_benches::criterion();
    targets = point_get, mvcc_scan, write_batches
}
criterion_main!(benches);
