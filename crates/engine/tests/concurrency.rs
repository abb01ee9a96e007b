//! Races on one region, with real threads: a writer, two readers, an evict-and-reload
//! loop and GC rounds, all at once. Every read — from memory or disk — must equal the
//! disk at the same snapshot; nothing panics or deadlocks; the cross-check at the end is
//! clean. (The precise interleavings — a load held mid-way, an eviction under an open
//! snapshot — are pinned by the scenario tests with `hold_loads`.)
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{assert_reads_match, region, test_config};
use ime_disk::{Cf, MemDisk};
use ime_engine::{ApplyHeader, Engine, HybridWriteBatch};
use ime_memkv::codec::{MvccKey, WriteRecord, WriteType};
use ime_region::{EvictReason, ReadRequest, RegionId};

const ROUNDS: u64 = 1500;

/// One Raft entry of region `r` at `index`: three MVCC writes committed at
/// `start_ts + 1` over `keys` keys named `prefix..`, one in nine a delete.
fn round_batch(
    r: &ime_region::Region,
    index: u64,
    round: u64,
    start_ts: u64,
    prefix: &str,
    keys: u64,
) -> HybridWriteBatch {
    let mut batch = HybridWriteBatch::new();
    batch.prepare(ApplyHeader {
        region: r.id,
        epoch: r.epoch,
        first_index: index,
        last_index: index,
    });
    for k in 0..3 {
        let user_key = format!("{prefix}{:02}", (round * 7 + k * 13) % keys).into_bytes();
        let key = MvccKey {
            user_key,
            ts: start_ts + 1,
        }
        .encode();
        let kind = if (round + k).is_multiple_of(9) {
            WriteType::Delete
        } else {
            WriteType::Put
        };
        let value = (kind == WriteType::Put).then(|| round.to_le_bytes().to_vec());
        let record = WriteRecord::new(kind, start_ts, value).encode().unwrap();
        batch.put(Cf::Write, key, record);
    }
    batch
}

#[test]
fn snapshot_evict_gc_and_load_race_on_one_region() {
    let engine = Engine::new(MemDisk::new(), test_config()).unwrap();
    let r = region(1, "a", None, 1);
    let ts = AtomicU64::new(100);
    let applied = AtomicU64::new(5);
    let done = AtomicBool::new(false);
    let memory_reads = AtomicU64::new(0);
    engine.load_region(r.clone(), 5).unwrap();
    std::thread::scope(|s| {
        // The writer: one Raft entry per round, MVCC puts and deletes over 50 keys; at
        // least ROUNDS rounds, and on until a read was served from memory (a loaded
        // machine can starve the loader for a while), within a generous bound.
        s.spawn(|| {
            let started = Instant::now();
            for round in 0.. {
                let served = memory_reads.load(Ordering::Relaxed) > 0;
                if round >= ROUNDS && (served || started.elapsed() > Duration::from_secs(60)) {
                    break;
                }
                let start_ts = ts.fetch_add(2, Ordering::SeqCst);
                let index = applied.load(Ordering::SeqCst) + 1;
                let batch = round_batch(&r, index, round, start_ts, "k", 50);
                engine.write(&batch).unwrap();
                applied.store(index, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        });
        // Two readers at the applied index they have seen.
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let index = applied.load(Ordering::SeqCst);
                    let read_ts = ts.fetch_add(1, Ordering::SeqCst);
                    let snapshot = engine.snapshot(
                        r.id,
                        ReadRequest {
                            epoch_version: r.epoch.version,
                            applied_index: index,
                            read_ts,
                        },
                    );
                    if snapshot.from_memory() {
                        memory_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    assert_reads_match(&snapshot, &r);
                }
            });
        }
        // Evict and reload, over and over; each reload serves a while before the next:
        // until a reader was served from memory, or 50 ms (on a loaded machine the
        // readers may get no core in a window of a few milliseconds, run after run).
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                assert!(engine.wait_idle(Duration::from_secs(10)));
                let (served, since) = (memory_reads.load(Ordering::Relaxed), Instant::now());
                std::thread::sleep(Duration::from_millis(2));
                while memory_reads.load(Ordering::Relaxed) == served
                    && since.elapsed() < Duration::from_millis(50)
                    && !done.load(Ordering::SeqCst)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                engine.evict_region(RegionId(1), EvictReason::Manual, None);
                let deadline = Instant::now() + Duration::from_secs(10);
                while engine
                    .load_region(r.clone(), applied.load(Ordering::SeqCst))
                    .is_err()
                {
                    assert!(
                        Instant::now() < deadline,
                        "the region never became loadable again"
                    );
                    std::thread::yield_now();
                }
            }
        });
        // GC under a safe point that trails the timestamps.
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                engine.set_safe_point(ts.load(Ordering::SeqCst).saturating_sub(40));
                engine.run_gc();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    });
    assert!(engine.wait_idle(Duration::from_secs(30)));
    assert!(engine.cross_check().is_empty());
    assert!(
        memory_reads.load(Ordering::Relaxed) > 0,
        "some reads were served from memory"
    );
}

/// Two apply threads on two regions of one RocksDB, in parallel, and a reader on each
/// region: every read equals the disk at the same snapshot, from memory too (while a
/// region's write is between disk and memory, its readers get the state just before it —
/// or, when the write parked none because nobody had read the region since a thread here
/// made the engine forget its readers, the disk alone).
#[test]
fn parallel_writers_on_two_regions_keep_every_read_consistent() {
    let disk = ime_disk::RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let engine = Engine::new(disk, test_config()).unwrap();
    let regions = [region(1, "a", Some("m"), 1), region(2, "m", None, 1)];
    let applied = [AtomicU64::new(5), AtomicU64::new(5)];
    let ts = AtomicU64::new(100);
    let writers_done = AtomicU64::new(0);
    let memory_reads = AtomicU64::new(0);
    for r in &regions {
        engine.load_region(r.clone(), 5).unwrap();
    }
    assert!(engine.wait_idle(Duration::from_secs(30)));
    std::thread::scope(|s| {
        s.spawn(|| {
            while writers_done.load(Ordering::SeqCst) < 2 {
                engine.tick(); // the ticker's duty, as often as it can
                std::thread::yield_now();
            }
        });
        for (i, r) in regions.iter().enumerate() {
            let (engine, applied, ts, done) = (&engine, &applied[i], &ts, &writers_done);
            s.spawn(move || {
                let prefix = if i == 0 { "c" } else { "q" };
                for round in 0..ROUNDS {
                    let start_ts = ts.fetch_add(2, Ordering::SeqCst);
                    let index = applied.load(Ordering::SeqCst) + 1;
                    let batch = round_batch(r, index, round, start_ts, prefix, 40);
                    engine.write(&batch).unwrap();
                    applied.store(index, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for (i, r) in regions.iter().enumerate() {
            let (engine, applied, ts) = (&engine, &applied[i], &ts);
            let (done, memory_reads) = (&writers_done, &memory_reads);
            s.spawn(move || {
                // While the writers run, and on until a read was served from memory (a
                // loaded machine can starve the readers until the writers end), within
                // a generous bound.
                let started = Instant::now();
                loop {
                    let ended = done.load(Ordering::SeqCst) == 2;
                    let served = memory_reads.load(Ordering::Relaxed) > 0;
                    if ended && (served || started.elapsed() > Duration::from_secs(60)) {
                        break;
                    }
                    let snapshot = engine.snapshot(
                        r.id,
                        ReadRequest {
                            epoch_version: r.epoch.version,
                            applied_index: applied.load(Ordering::SeqCst),
                            read_ts: ts.fetch_add(1, Ordering::SeqCst),
                        },
                    );
                    if snapshot.from_memory() {
                        memory_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    assert_reads_match(&snapshot, r);
                }
            });
        }
    });
    assert!(engine.wait_idle(Duration::from_secs(30)));
    assert!(engine.cross_check().is_empty());
    assert!(
        memory_reads.load(Ordering::Relaxed) > 0,
        "some reads were served from memory"
    );
}

/// A region without memory (65) shares its write stripe with a cached one (1: ids equal
/// modulo 64) that a thread writes without pause. Each of 65's writes is read back at
/// once: the read is served from disk and must see it — even when it comes while a write
/// of region 1 is in flight and the stripe hands out the state parked before that write
/// (a write of a region without memory takes no stripe, so a parked state can predate it).
#[test]
fn a_region_without_memory_reads_its_own_writes_beside_a_cached_one_of_its_stripe() {
    let engine = Engine::new(MemDisk::new(), test_config()).unwrap();
    let (cached, bare) = (region(1, "a", Some("m"), 1), region(65, "m", None, 1));
    engine.load_region(cached.clone(), 5).unwrap();
    assert!(engine.wait_idle(Duration::from_secs(30)));
    let ts = AtomicU64::new(100);
    let (done, cached_writes) = (AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 0..20 * ROUNDS {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let start_ts = ts.fetch_add(2, Ordering::SeqCst);
                engine
                    .write(&round_batch(&cached, 6 + round, round, start_ts, "c", 40))
                    .unwrap();
                cached_writes.fetch_add(1, Ordering::SeqCst);
            }
        });
        while cached_writes.load(Ordering::SeqCst) < 10 {
            std::thread::yield_now();
        }
        for round in 0..ROUNDS / 5 {
            let start_ts = ts.fetch_add(2, Ordering::SeqCst);
            let index = 6 + round;
            engine
                .write(&round_batch(&bare, index, round, start_ts, "q", 1))
                .unwrap();
            let snapshot = engine.snapshot(
                bare.id,
                ReadRequest {
                    epoch_version: bare.epoch.version,
                    applied_index: index,
                    read_ts: ts.fetch_add(1, Ordering::SeqCst),
                },
            );
            assert!(!snapshot.from_memory());
            // One key, written three times a round: the last write wins, a delete one
            // round in nine, else `round`.
            let read = snapshot.mvcc_get(b"q00").unwrap();
            let written = (!(round + 2).is_multiple_of(9)).then(|| round.to_le_bytes().to_vec());
            assert_eq!(read, written, "round {round}: a write of region 65 missed");
        }
        done.store(true, Ordering::SeqCst);
    });
}
