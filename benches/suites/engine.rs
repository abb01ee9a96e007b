//! `ime-engine` benchmarks: the hybrid path against the disk-only path in the same run,
//! over one RocksDB (`docs/goals.md`).
//!
//! - point get (snapshot + MVCC get, latest version): a cached region vs the same engine
//!   reading the disk (a reader whose epoch is older than the cache's falls back);
//! - MVCC scan at read_ts over keys with 100 versions each, memory after GC vs disk;
//! - write apply, batches of 16 MVCC puts: the engine with the region cached vs a bare
//!   RocksDB write of the same batch (the `rocksdb` crate, WAL on, no sync), and vs IME's
//!   disk layer alone (`RocksDisk::write`: what the cache itself costs a write);
//! - loading a region vs a bare RocksDB iteration over the same keys (every entry visited,
//!   nothing copied);
//! - two reader threads vs one, on cached point gets, and the same split of arithmetic
//!   that shares nothing (what a second thread can give on this machine at all);
//! - two apply threads writing batches of 16 to two different cached regions vs two
//!   threads writing the same batches to a bare RocksDB (`rocksdb::DB`, nothing of IME's
//!   in front, opened with the options of the engine's disk, WAL on, no sync), and the
//!   p99 of cached snapshot + get on one region while another thread writes to another
//!   region vs the same gets with no writer (there, an "iteration" is the p99 latency of
//!   a run of 2,000 gets), and the same p99 beside a thread writing the same batches to
//!   a bare RocksDB (what any writer costs the reader on this machine);
//! - evicting a large region (`IME_BENCH_EVICT_MB`, default 256 MiB): the foreground call
//!   vs evicting a tiny one, and the p99 of gets on another region while it is evicted
//!   and its memory freed vs with nothing running, both right after the large region was
//!   loaded (there, a reported "iteration" is the p99 latency of a run of 2,000 gets).
//!
//! The point get, the write of 16, the readers, the two writers and the p99 beside a
//! writer are also timed in blocks of each side in turn, fifteen rounds (the write of 16
//! and the two writers 48), the p99 during evictions nine and the load 25
//! (`ime_benches::alternate`; a p99 is the median of the blocks' p99s; a block of the
//! load is one load or one iteration, and its figure is the round whose ratio of the two
//! is the median of the rounds', `ime_benches::median_round`;
//! a block of the write of 16 starts with the engine idle, and a block of the two
//! writers ends, timed, when the engine is idle again, so that there the hybrid side pays
//! for its whole memory side, compactions included; neither leaves work to the bare
//! side's block; before the blocks of these two, every side's RocksDB is flushed and
//! compacted, so that no side starts with a fuller memtable or more files than another),
//! recorded beside criterion's results as `*_in_turn`: the figures
//! `cargo xtask bench` holds to their goals, since neighbours timed one after the other
//! on a shared machine can meet different machines.
//!
//! Sizes: `IME_BENCH_KEYS` keys for point gets (default 1,000,000), a tenth of that many
//! keys of 100 versions for the scans.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark harness: a failed setup should stop the run"
)]

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ime_benches::{
    Split, alternate, apply_batches, bare_batch, bare_batches, bare_rocksdb, keys_from_env, median,
    median_round, put_record, record_per_op, total, two_regions, user_key, write_key,
};
use ime_disk::{Cf, DiskEngine, RocksDisk, WriteBatch};
use ime_engine::{ApplyHeader, Config, Engine, HybridWriteBatch};
use ime_memkv::codec::{WriteRecord, WriteType, encode_bytes};
use ime_region::{KeyRange, ReadRequest, Region, RegionEpoch, RegionId};

const EPOCH: RegionEpoch = RegionEpoch::new(2, 1);

/// A read at the latest timestamp by a peer at `epoch_version` that applied index 5 (what
/// the cached regions of these benches hold).
fn latest(epoch_version: u64) -> ReadRequest {
    ReadRequest {
        epoch_version,
        applied_index: 5,
        read_ts: u64::MAX - 1,
    }
}

fn config() -> Config {
    Config::from_toml(
        r#"
        capacity = "8GiB"
        gc-run-interval = "1h"
        load-evict-interval = "1h"
        "#,
    )
    .unwrap()
}

fn whole() -> Region {
    let range = KeyRange::new(encode_bytes(b"t"), encode_bytes(b"u")).unwrap();
    Region::new(RegionId(1), range, EPOCH)
}

/// An engine over a fresh RocksDB holding `versions` versions of `keys` keys (short
/// values, write CF), written straight to disk in large batches; region 1 covers them.
fn engine_with(keys: u64, versions: u64) -> Engine<RocksDisk> {
    engine_and_db(keys, versions).0
}

/// [`engine_with`], and a handle on its RocksDB: to settle it as the baselines' are
/// settled ([`ime_benches::settle_db`]) before the blocks in turn.
fn engine_and_db(keys: u64, versions: u64) -> (Engine<RocksDisk>, Arc<rocksdb::DB>) {
    let disk = RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..keys {
        for v in 0..versions {
            let commit_ts = 10 + v * 10;
            batch.put(
                Cf::Write,
                write_key(&user_key(i), commit_ts),
                put_record(commit_ts - 1, &[b'v'; 32]),
            );
            if batch.len() == 4096 {
                disk.write(&batch).unwrap();
                batch = WriteBatch::new();
            }
        }
    }
    if !batch.is_empty() {
        disk.write(&batch).unwrap();
    }
    // Flushed and compacted before any measurement: the first group (a load, say) does
    // not run beside the setup's compactions while its baseline runs after them.
    ime_benches::settle(&disk);
    let db = Arc::clone(disk.db());
    (Engine::new(disk, config()).unwrap(), db)
}

fn load(engine: &Engine<RocksDisk>) {
    engine.load_region(whole(), 5).unwrap();
    assert!(engine.wait_idle(Duration::from_secs(3600)));
}

fn point_get(c: &mut Criterion) {
    let n = keys_from_env();
    let engine = engine_with(n, 1);
    load(&engine);
    let probes: Vec<Vec<u8>> = (0..4096u64)
        .map(|i| user_key(i.wrapping_mul(2_654_435_761) % n))
        .collect();
    let get = |at: usize, version: u64| {
        let snapshot = engine.snapshot(RegionId(1), latest(version));
        assert_eq!(snapshot.from_memory(), version == EPOCH.version);
        black_box(snapshot.mvcc_get(&probes[at % probes.len()]).unwrap())
    };
    let mut group = c.benchmark_group("engine/point_get");
    for (name, version) in [("hybrid", EPOCH.version), ("disk_only", EPOCH.version - 1)] {
        let mut at = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                at += 1;
                get(at, version)
            })
        });
    }
    group.finish();
    let block = |version: u64| {
        let start = Instant::now();
        (0..GETS_PER_BLOCK as usize).for_each(|at| drop(get(at, version)));
        start.elapsed()
    };
    let [hybrid, disk_only] = alternate(
        ROUNDS,
        [&mut || block(EPOCH.version), &mut || {
            block(EPOCH.version - 1)
        }],
    );
    let sides = [("hybrid", total(&hybrid)), ("disk_only", total(&disk_only))];
    record_per_op(
        "engine/point_get_in_turn",
        &sides,
        ROUNDS_OPS * GETS_PER_BLOCK,
    )
    .unwrap();
    let mut group = c.benchmark_group("engine/snapshot");
    group.bench_function("hybrid", |b| {
        b.iter(|| black_box(engine.snapshot(RegionId(1), latest(EPOCH.version))))
    });
    group.bench_function("disk_only", |b| {
        b.iter(|| black_box(engine.snapshot(RegionId(1), latest(EPOCH.version - 1))))
    });
    group.bench_function("rocksdb_alone", |b| {
        b.iter(|| black_box(engine.disk().snapshot()))
    });
    group.finish();
    reader_threads(c, &engine, &probes);
}

/// Cached point gets: the same total work on one thread and shared by two (each thread
/// takes the next chunk of gets until none is left, as a pool of readers takes requests:
/// `ime_benches::Split::Shared`); then, in the same harness, the machine's own ceilings:
/// arithmetic that shares nothing, and binary searches of one array that nothing writes
/// (work that waits on memory).
fn reader_threads(c: &mut Criterion, engine: &Engine<RocksDisk>, probes: &[Vec<u8>]) {
    let mut group = c.benchmark_group("engine/readers");
    let gets = |count: u64, offset: usize| {
        for i in 0..count as usize {
            let snapshot = engine.snapshot(RegionId(1), latest(EPOCH.version));
            black_box(
                snapshot
                    .mvcc_get(&probes[(i + offset) % probes.len()])
                    .unwrap(),
            );
        }
    };
    ime_benches::one_vs_two_threads(&mut group, gets);
    group.finish();
    one_vs_two_recorded("engine/readers_in_turn", &gets);
    // The same harness with work that shares nothing: how much a second thread can
    // give on this machine (a second virtual core may share a physical one).
    let arithmetic = |count: u64, offset: usize| {
        let mut x = offset as u64 | 1;
        for _ in 0..count * ARITHMETIC_STEPS_PER_GET {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        black_box(x);
    };
    one_vs_two_recorded("engine/arithmetic_in_turn", &arithmetic);
    // Work that waits on memory as a get does, sharing nothing written: binary searches
    // of one sorted array four times a core's cache, from as many probes as the gets
    // take. Arithmetic keeps to a core's own registers; a second thread gives less to
    // work whose loads miss that core's caches (a second virtual core may share a
    // physical one's caches, and every core shares the memory behind them).
    let sorted: Vec<u64> = (0..SEARCHED_ENTRIES).map(|i| i * SEARCHED_STRIDE).collect();
    let targets: Vec<u64> = (0..probes.len() as u64)
        .map(|i| i.wrapping_mul(2_654_435_761) % SEARCHED_ENTRIES * SEARCHED_STRIDE)
        .collect();
    let searches = |count: u64, offset: usize| {
        let mut found = 0usize;
        for i in 0..count as usize {
            let target = targets[(i + offset) % targets.len()];
            for step in 0..SEARCHES_PER_GET {
                found += sorted.partition_point(|&x| x < target + step);
            }
        }
        black_box(found);
    };
    one_vs_two_recorded("engine/searches_in_turn", &searches);
}

/// `work` on one thread and shared by two, in turn ([`ime_benches::one_vs_two_in_turn`]
/// with [`Split::Shared`], [`ROUNDS`] rounds of [`READER_GETS_PER_BLOCK`] operations),
/// recorded as `group`'s `one_thread` and `two_threads` per operation.
fn one_vs_two_recorded(group: &str, work: &(impl Fn(u64, usize) + Sync)) {
    let [one, two] =
        ime_benches::one_vs_two_in_turn(ROUNDS, READER_GETS_PER_BLOCK, Split::Shared, work);
    let sides = [("one_thread", total(&one)), ("two_threads", total(&two))];
    record_per_op(group, &sides, ROUNDS_OPS * READER_GETS_PER_BLOCK).unwrap();
}

/// Steps of a xorshift generator (each waits for the one before) standing for one get in
/// the readers' arithmetic baseline: about 0.9 us on one thread, of the order of a cached
/// get (1.4-1.8 us on these machines).
const ARITHMETIC_STEPS_PER_GET: u64 = 400;

/// Entries of the sorted array the readers' memory-bound baseline searches: 8 MiB of
/// `u64`s, four times a core's second-level cache on these machines, as a region's data
/// is larger than it.
const SEARCHED_ENTRIES: u64 = 1 << 20;

/// The gap between neighbouring entries of that array (its values are the multiples of
/// this prime): a get's searches aim at its target plus 0, 1, 2..., distinct (so that
/// none is folded into another) and all between the same two entries.
const SEARCHED_STRIDE: u64 = 7919;

/// Binary searches standing for one get in that baseline: 0.6-0.8 us on one thread (the
/// array's upper levels stay cached), of the order of a cached get (1.0-1.4 us on these
/// machines).
const SEARCHES_PER_GET: u64 = 10;

/// Gets in one block of the readers figure in turn: a block of two threads begins with
/// both woken from a barrier, and is long enough (about 0.15 s) that the wake-ups are
/// not what it measures.
const READER_GETS_PER_BLOCK: u64 = 200_000;

/// Rounds of blocks in turn (`ime_benches::alternate`) for the figures measured so: the
/// point get and its readers, the p99 beside a writer (the writes take
/// [`WRITER_ROUNDS`]).
const ROUNDS: u32 = 15;
const ROUNDS_OPS: u64 = ROUNDS as u64;
/// Gets in one block of the point-get figure measured in turn.
const GETS_PER_BLOCK: u64 = 20_000;
/// Batches a writer thread writes in one block of the writer figures in turn.
const BATCHES_PER_BLOCK: u64 = 1_000;
/// Rounds of the writers' blocks in turn (the write of 16, the two writers): more than
/// the other figures take. A block lasts 15-150 ms on these machines, and pays for the
/// compactions its writes bring on, which come lumpy: a region's compaction rewrites its
/// whole run (by then a million entries or more) once its memtables reach a quarter of
/// it, and a block that holds one takes about twice the time of the blocks around it.
/// Fifteen rounds held three or four compactions of the two writers' regions, or fewer
/// as the runs grow; 48 rounds hold six or more. The machine's own drift is lumpy too:
/// blocks of the write of 16 took either about 16 or about 24 ms, on both sides alike,
/// in spells of a few blocks, and fifteen rounds' totals moved with where the spells
/// fell (0.98 to 1.38x in runs of one build, one after the other).
const WRITER_ROUNDS: u32 = 48;

fn mvcc_scan(c: &mut Criterion) {
    let keys = (keys_from_env() / 10).max(100);
    let engine = engine_with(keys, 100);
    load(&engine);
    engine.set_safe_point(u64::MAX / 2);
    engine.run_gc();
    const PER_SCAN: usize = 100;
    let mut group = c.benchmark_group("engine/mvcc_scan_100_versions");
    group.throughput(Throughput::Elements(PER_SCAN as u64));
    for (name, version) in [
        ("hybrid_after_gc", EPOCH.version),
        ("disk_only", EPOCH.version - 1),
    ] {
        let mut at = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                at = (at + PER_SCAN as u64 * 13) % (keys - PER_SCAN as u64);
                let snapshot = engine.snapshot(RegionId(1), latest(version));
                assert_eq!(snapshot.from_memory(), name != "disk_only");
                let found = snapshot
                    .mvcc_scan(&user_key(at), Some(b"u"), PER_SCAN)
                    .unwrap();
                assert_eq!(found.len(), PER_SCAN);
                black_box(found)
            })
        });
    }
    group.finish();
}

fn write_apply(c: &mut Criterion) {
    let (engine, engine_db) = engine_and_db(1000, 1);
    load(&engine);
    let layer = RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let bare_dir = tempfile::tempdir().unwrap();
    let bare = bare_rocksdb(bare_dir.path());
    let bare_cf = bare.cf_handle(Cf::Write.name()).unwrap();
    let (round, index) = (Cell::new(0u64), Cell::new(5u64));
    let puts = |round: u64| {
        (0..16).map(move |k| {
            let key = write_key(&user_key((round * 16 + k) % 100_000), 2_000_000 + round);
            (key, put_record(1_999_999 + round, b"value"))
        })
    };
    let hybrid = || {
        round.set(round.get() + 1);
        index.set(index.get() + 1);
        let mut batch = HybridWriteBatch::new();
        batch.prepare(ApplyHeader {
            region: RegionId(1),
            epoch: EPOCH,
            first_index: index.get(),
            last_index: index.get(),
        });
        for (key, value) in puts(round.get()) {
            batch.put(Cf::Write, key, value);
        }
        black_box(engine.write(&batch).unwrap());
    };
    // Bare RocksDB as its users write it (the `rocksdb` crate, WAL on, no sync).
    let rocksdb = || {
        round.set(round.get() + 1);
        bare.write(bare_batch(&bare_cf, puts(round.get()))).unwrap();
    };
    // IME's disk layer alone: what the engine's write costs without the cache.
    let disk_layer = || {
        round.set(round.get() + 1);
        let mut batch = WriteBatch::new();
        for (key, value) in puts(round.get()) {
            batch.put(Cf::Write, key, value);
        }
        black_box(layer.write(&batch).unwrap());
    };
    let mut group = c.benchmark_group("engine/write_batch_16");
    group.throughput(Throughput::Elements(16));
    group.bench_function("hybrid", |b| b.iter(hybrid));
    group.bench_function("rocksdb", |b| b.iter(rocksdb));
    group.finish();
    // A block starts with the engine idle (untimed): the hybrid side's memory side runs
    // beside its writes, on the other core, as it does while an apply thread writes on,
    // and none of it runs on into the other sides' blocks.
    let block = |write: &dyn Fn()| {
        assert!(engine.wait_idle(Duration::from_secs(600)));
        let start = Instant::now();
        (0..BATCHES_PER_BLOCK).for_each(|_| write());
        start.elapsed()
    };
    // Every side's RocksDB flushed and compacted: criterion's groups above wrote
    // different amounts to each (and none to IME's disk layer), and a write's cost in
    // RocksDB grows with its memtable; from the same start, each side's memtable fills,
    // flushes and compacts at the same blocks.
    assert!(engine.wait_idle(Duration::from_secs(600)));
    for db in [&engine_db, &bare, layer.db()] {
        ime_benches::settle_db(db);
    }
    let [hybrid, rocksdb, disk_layer] = alternate(
        WRITER_ROUNDS,
        [&mut || block(&hybrid), &mut || block(&rocksdb), &mut || {
            block(&disk_layer)
        }],
    );
    let sides = [
        ("hybrid", total(&hybrid)),
        ("rocksdb", total(&rocksdb)),
        ("ime_disk", total(&disk_layer)),
    ];
    record_per_op(
        "engine/write_batch_16_in_turn",
        &sides,
        u64::from(WRITER_ROUNDS) * BATCHES_PER_BLOCK,
    )
    .unwrap();
    let read = ReadRequest {
        epoch_version: EPOCH.version,
        applied_index: index.get(),
        read_ts: u64::MAX - 1,
    };
    assert!(
        engine.snapshot(RegionId(1), read).from_memory(),
        "still cached"
    );
}

fn load_region(c: &mut Criterion) {
    let keys = keys_from_env();
    let engine = engine_with(keys, 1);
    let mut group = c.benchmark_group("engine/load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("load_region", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                load(&engine);
                total += start.elapsed();
                engine.evict_region(RegionId(1), ime_region::EvictReason::Manual, None);
                assert!(engine.wait_idle(Duration::from_secs(3600)));
            }
            total
        })
    });
    let region = whole();
    let iterate = || {
        let snapshot = engine.disk().snapshot();
        black_box(ime_benches::iterate_bare(&snapshot, &region.range))
    };
    group.bench_function("rocksdb_iteration", |b| b.iter(iterate));
    group.finish();
    // A block is one load (then an eviction, untimed) or one iteration, and a round one
    // of each. The figure is the median round: the one whose load-to-iteration ratio is
    // the median of the rounds' (`ime_benches::median_round`), which neither one block
    // stalled by the machine nor a slow stretch of the machine over a few rounds moves.
    let [loads, iterations] = alternate(
        LOAD_ROUNDS,
        [
            &mut || {
                let start = Instant::now();
                load(&engine);
                let took = start.elapsed();
                engine.evict_region(RegionId(1), ime_region::EvictReason::Manual, None);
                assert!(engine.wait_idle(Duration::from_secs(3600)));
                took
            },
            &mut || {
                let start = Instant::now();
                iterate();
                start.elapsed()
            },
        ],
    );
    let ms = |times: &[Duration]| -> Vec<String> {
        let ms = times
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1e3));
        ms.collect()
    };
    println!(
        "engine/load_in_turn rounds, ms: loads {:?}, iterations {:?}",
        ms(&loads),
        ms(&iterations)
    );
    let (load, iteration) = median_round(&loads, &iterations).unwrap();
    let sides = [("load_region", load), ("rocksdb_iteration", iteration)];
    record_per_op("engine/load_in_turn", &sides, 1).unwrap();
}

/// Rounds of the load figure in turn: a round (a load of the default million keys, its
/// eviction and an iteration) takes about 0.4 s.
const LOAD_ROUNDS: u32 = 25;

/// Region 1 is large (`IME_BENCH_EVICT_MB`, default 256 MiB of 1 KiB values); region 2
/// holds small keys and serves gets while region 1 is evicted and loaded again.
fn eviction_impact(c: &mut Criterion) {
    let mb: u64 = std::env::var("IME_BENCH_EVICT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let disk = RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..mb * 1024 {
        let record = WriteRecord::new(WriteType::Put, 9, None).encode().unwrap();
        batch.put(Cf::Default, write_key(&user_key(i), 9), vec![b'x'; 1000]);
        batch.put(Cf::Write, write_key(&user_key(i), 10), record);
        if batch.len() >= 1024 {
            disk.write(&batch).unwrap();
            batch = WriteBatch::new();
        }
    }
    for i in 0..10_000 {
        batch.put(
            Cf::Write,
            write_key(format!("v{i:06}").as_bytes(), 10),
            put_record(9, b"small"),
        );
    }
    disk.write(&batch).unwrap();
    let engine = Engine::new(disk, config()).unwrap();
    let big = whole();
    let small = Region::new(
        RegionId(2),
        KeyRange::new(encode_bytes(b"v"), encode_bytes(b"w")).unwrap(),
        EPOCH,
    );
    let tiny = Region::new(
        RegionId(3),
        KeyRange::new(encode_bytes(b"w"), encode_bytes(b"x")).unwrap(),
        EPOCH,
    );
    engine.load_region(small.clone(), 5).unwrap();
    assert!(engine.wait_idle(Duration::from_secs(3600)));
    let mut group = c.benchmark_group("engine/evict");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    // The foreground cost of evicting: the call, not the freeing (the deleter's).
    for (name, region) in [("large_region", &big), ("tiny_region", &tiny)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    engine.load_region(region.clone(), 5).unwrap();
                    assert!(engine.wait_idle(Duration::from_secs(3600)));
                    let start = Instant::now();
                    engine.evict_region(region.id, ime_region::EvictReason::Manual, None);
                    total += start.elapsed();
                    assert!(engine.wait_idle(Duration::from_secs(3600)));
                }
                total
            })
        });
    }
    group.finish();
    // The p99 of gets on region 2, with and without region 1 being evicted meanwhile:
    // each "iteration" time reported is the p99 of a run of gets.
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("v{i:06}").into_bytes())
        .collect();
    let p99_of_gets = |runs: u64| -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..runs {
            let mut latencies: Vec<Duration> = (0..2000)
                .map(|i| {
                    let start = Instant::now();
                    let snapshot = engine.snapshot(RegionId(2), latest(EPOCH.version));
                    black_box(snapshot.mvcc_get(&keys[(i * 37) % keys.len()]).unwrap());
                    start.elapsed()
                })
                .collect();
            latencies.sort();
            total += latencies[latencies.len() * 99 / 100];
        }
        total
    };
    let mut group = c.benchmark_group("engine/get_p99_other_region");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    // The same cycle both ways: load region 1 (not measured), measure, evict it. Quiet,
    // the gets run after the load with nothing else going on; during evictions, while
    // region 1 is evicted and its memory freed. Both start from caches the load just
    // swept, so the difference is the eviction's alone.
    let quiet = || {
        let _ = engine.load_region(big.clone(), 5);
        let _ = engine.wait_idle(Duration::from_secs(3600));
        let p99 = p99_of_gets(1);
        engine.evict_region(big.id, ime_region::EvictReason::Manual, None);
        let _ = engine.wait_idle(Duration::from_secs(3600));
        p99
    };
    // Load (not measured), then measure gets while the region is evicted and its memory
    // freed by the deleter.
    let during_evictions = || {
        let _ = engine.load_region(big.clone(), 5);
        let _ = engine.wait_idle(Duration::from_secs(3600));
        std::thread::scope(|s| {
            s.spawn(|| {
                engine.evict_region(big.id, ime_region::EvictReason::Manual, None);
                let _ = engine.wait_idle(Duration::from_secs(3600));
            });
            p99_of_gets(1)
        })
    };
    group.bench_function("quiet", |b| {
        b.iter_custom(|runs| (0..runs).map(|_| quiet()).sum())
    });
    group.bench_function("during_evictions", |b| {
        b.iter_custom(|runs| (0..runs).map(|_| during_evictions()).sum())
    });
    group.finish();
    // One cycle a block, each side's in turn: the figure is the median of their p99s.
    let [quiet_p99s, during_p99s] = alternate(
        EVICTION_ROUNDS,
        [&mut || quiet(), &mut || during_evictions()],
    );
    let sides = [
        ("quiet", median(&quiet_p99s)),
        ("during_evictions", median(&during_p99s)),
    ];
    record_per_op("engine/get_p99_other_region_in_turn", &sides, 1).unwrap();
}

/// Rounds of the eviction p99 in turn: each block loads the large region again (a
/// quarter of a second or so), so fewer than the other figures' fifteen.
const EVICTION_ROUNDS: u32 = 9;

/// Writers and readers together, on two regions of one engine.
fn concurrency(c: &mut Criterion) {
    let (engine, engine_db) = engine_and_db(1000, 1);
    for region in two_regions(EPOCH) {
        engine.load_region(region, 5).unwrap();
    }
    assert!(engine.wait_idle(Duration::from_secs(3600)));
    let indexes = [AtomicU64::new(5), AtomicU64::new(5)];
    // Each side's commit timestamps come from one clock of its own (`apply_batches`).
    let (clock, bare_clock) = (AtomicU64::new(0), AtomicU64::new(0));
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_rocksdb(dir.path());
    let mut group = c.benchmark_group("engine/two_writers");
    group.throughput(Throughput::Elements(32));
    group.bench_function("hybrid", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for half in 0..2 {
                    let (engine, index, clock) = (&engine, &indexes[half as usize], &clock);
                    s.spawn(move || apply_batches(engine, EPOCH, half, iters, index, clock));
                }
            });
            start.elapsed()
        })
    });
    group.bench_function("rocksdb", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for half in 0..2 {
                    let (bare, clock) = (&bare, &bare_clock);
                    s.spawn(move || bare_batches(bare, half, iters, clock));
                }
            });
            start.elapsed()
        })
    });
    group.finish();
    // Each block ends, timed, when the engine is idle again: with two writers on two
    // cores the memory side competes for them, so the hybrid side pays for all of it
    // (its queues applied, its compactions), and the bare side meets none of it.
    assert!(engine.wait_idle(Duration::from_secs(600)));
    // Both sides' RocksDB flushed and compacted, as for the write of 16.
    for db in [&engine_db, &bare] {
        ime_benches::settle_db(db);
    }
    let two_writers = |write: &(dyn Fn(u64) + Sync)| {
        let start = Instant::now();
        std::thread::scope(|s| {
            for half in 0..2 {
                s.spawn(move || write(half));
            }
        });
        assert!(engine.wait_idle(Duration::from_secs(600)));
        start.elapsed()
    };
    // Which hybrid blocks saw a compaction end (counted whatever its result).
    let compacted = RefCell::new(Vec::new());
    let compactions = || {
        let c = engine.stats().compactions;
        c.ok + c.range_gone + c.failed
    };
    let [hybrid, rocksdb] = alternate(
        WRITER_ROUNDS,
        [
            &mut || {
                let before = compactions();
                let took = two_writers(&|half| {
                    apply_batches(
                        &engine,
                        EPOCH,
                        half,
                        BATCHES_PER_BLOCK,
                        &indexes[half as usize],
                        &clock,
                    )
                });
                compacted.borrow_mut().push(compactions() > before);
                took
            },
            &mut || two_writers(&|half| bare_batches(&bare, half, BATCHES_PER_BLOCK, &bare_clock)),
        ],
    );
    let sides = [("hybrid", total(&hybrid)), ("rocksdb", total(&rocksdb))];
    // Per round of two batches, one a thread: criterion's `iter` of the group above.
    record_per_op(
        "engine/two_writers_in_turn",
        &sides,
        u64::from(WRITER_ROUNDS) * BATCHES_PER_BLOCK,
    )
    .unwrap();
    // The same, over the rounds whose hybrid block saw no compaction end: what the
    // inserts and the write path cost, apart from what the compactions add.
    let quiet: Vec<usize> = (compacted.borrow().iter().enumerate())
        .filter_map(|(round, &compacted)| (!compacted).then_some(round))
        .collect();
    let of = |side: &[Duration]| quiet.iter().map(|&round| side[round]).sum::<Duration>();
    record_per_op(
        "engine/two_writers_in_turn_no_compaction",
        &[("hybrid", of(&hybrid)), ("rocksdb", of(&rocksdb))],
        quiet.len() as u64 * BATCHES_PER_BLOCK,
    )
    .unwrap();
    for region in [RegionId(1), RegionId(2)] {
        let index = indexes[(region.0 - 1) as usize].load(AtomicOrdering::Relaxed);
        let read = ReadRequest {
            epoch_version: EPOCH.version,
            applied_index: index,
            read_ts: u64::MAX - 1,
        };
        assert!(
            engine.snapshot(region, read).from_memory(),
            "{region} still cached"
        );
    }
    reads_beside_a_writer(c, &engine, (&indexes[1], &clock), (&bare, &bare_clock));
}

/// The p99 of cached snapshot + get on region 1, with and without a thread writing to
/// region 2 meanwhile — and beside a thread writing the same batches to a bare RocksDB
/// (`bare`), which shows what any writer on this machine costs the reader (its CPU, its
/// caches, RocksDB's flushes) apart from what the engine's writes do.
fn reads_beside_a_writer(
    c: &mut Criterion,
    engine: &Engine<RocksDisk>,
    (index, clock): (&AtomicU64, &AtomicU64),
    (bare, bare_clock): (&rocksdb::DB, &AtomicU64),
) {
    let probes: Vec<Vec<u8>> = (0..500).map(user_key).collect();
    let p99_of_gets = || -> Duration {
        let mut latencies: Vec<Duration> = (0..2000)
            .map(|i| {
                let start = Instant::now();
                let snapshot = engine.snapshot(RegionId(1), latest(EPOCH.version));
                assert!(snapshot.from_memory());
                black_box(snapshot.mvcc_get(&probes[(i * 37) % probes.len()]).unwrap());
                start.elapsed()
            })
            .collect();
        latencies.sort();
        latencies[latencies.len() * 99 / 100]
    };
    let mut group = c.benchmark_group("engine/get_p99_beside_a_writer");
    group.sample_size(10);
    group.bench_function("quiet", |b| {
        b.iter_custom(|runs| (0..runs).map(|_| p99_of_gets()).sum())
    });
    let beside = |write: &(dyn Fn() + Sync), runs: u64| -> Duration {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(AtomicOrdering::Acquire) {
                    write();
                }
            });
            let total = (0..runs).map(|_| p99_of_gets()).sum();
            done.store(true, AtomicOrdering::Release);
            total
        })
    };
    group.bench_function("writing", |b| {
        b.iter_custom(|runs| beside(&|| apply_batches(engine, EPOCH, 1, 1, index, clock), runs))
    });
    group.bench_function("bare_writer", |b| {
        b.iter_custom(|runs| beside(&|| bare_batches(bare, 1, 1, bare_clock), runs))
    });
    group.finish();
    // One p99 a block, each side's blocks in turn: the figure is their median.
    let [quiet, writing, bare_writer] = alternate(
        ROUNDS,
        [
            &mut || p99_of_gets(),
            &mut || beside(&|| apply_batches(engine, EPOCH, 1, 1, index, clock), 1),
            &mut || beside(&|| bare_batches(bare, 1, 1, bare_clock), 1),
        ],
    );
    let sides = [
        ("quiet", median(&quiet)),
        ("writing", median(&writing)),
        ("bare_writer", median(&bare_writer)),
    ];
    record_per_op("engine/get_p99_beside_a_writer_in_turn", &sides, 1).unwrap();
}

criterion_group! {
    name = benches;
    config = ime_benches::criterion();
    targets = point_get, mvcc_scan, write_apply, load_region, eviction_impact, concurrency
}
criterion_main!(benches);
