//! Two apply threads on two cached regions, against the layers under them, in blocks in
//! turn (as the engine suite's two writers): each side's two threads write `BLOCK`
//! batches of 16 MVCC puts each, to keys of their own half (500 user keys a half, a new
//! version each batch, its timestamp from one clock the side's two threads share); an
//! engine's block ends when the engine is idle again. The sides:
//!
//! - `hybrid`: through the engine, both regions cached;
//! - `disk-only`: through an engine that caches neither region;
//! - `disk`: straight to IME's RocksDB layer (`RocksDisk::apply`), no engine;
//! - `bare`: straight to a bare RocksDB (the `rocksdb` crate), as the suite's baseline.
//!
//! Prints each side's time per round (one batch a thread) and its ratio to `bare`: where
//! the two writers' time goes, layer by layer. The first argument is the number of
//! rounds (default 24); names of sides after it run those sides only, and `bare` (to
//! profile one layer at a time).
//!
//! ```sh
//! cargo run --release -p ime-benches --example two_writers -- 96
//! cargo run --release -p ime-benches --example two_writers -- 96 disk-only
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a profiling harness: a failed setup should stop it"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ime_benches::{
    alternate, apply_batches, bare_batches, bare_rocksdb, batch_16, profiling_engine, total,
    two_regions,
};
use ime_disk::{Cf, DiskEngine, RocksDisk, WriteBatch};
use ime_engine::Engine;
use ime_region::RegionEpoch;

const EPOCH: RegionEpoch = RegionEpoch::new(2, 1);

/// Batches a thread writes in one block.
const BLOCK: u64 = 1_000;

/// An engine over a fresh RocksDB, both regions cached if `cached`.
fn engine(cached: bool) -> Engine<RocksDisk> {
    let disk = RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let engine = profiling_engine(disk);
    if cached {
        for region in two_regions(EPOCH) {
            engine.load_region(region, 5).unwrap();
        }
        assert!(engine.wait_idle(Duration::from_secs(600)));
    }
    engine
}

/// A block of `write` on two threads, one a half, then until `settle` returns.
fn block(write: &(dyn Fn(u64) + Sync), settle: &dyn Fn()) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for half in 0..2 {
            s.spawn(move || write(half));
        }
    });
    settle();
    start.elapsed()
}

/// A block of two apply threads writing through `engine` (none: a side not run), each
/// to its half's region with its index in `indexes`, timestamps from `clock`; it ends
/// when the engine is idle again.
fn engine_block(
    engine: Option<&Engine<RocksDisk>>,
    indexes: &[AtomicU64; 2],
    clock: &AtomicU64,
) -> Duration {
    let Some(engine) = engine else {
        return Duration::ZERO;
    };
    let write = |half: u64| {
        apply_batches(engine, EPOCH, half, BLOCK, &indexes[half as usize], clock);
    };
    block(&write, &|| {
        assert!(engine.wait_idle(Duration::from_secs(600)));
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(24);
    let only: Vec<String> = args.collect();
    let on = |name: &str| only.is_empty() || only.iter().any(|o| o == name) || name == "bare";
    let (hybrid, disk_only) = (engine(true), engine(false));
    let disk = RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_rocksdb(dir.path());
    let indexes = [
        [AtomicU64::new(5), AtomicU64::new(5)],
        [AtomicU64::new(5), AtomicU64::new(5)],
    ];
    // Each side's commit timestamps come from one clock of its own (`apply_batches`).
    let clocks: [AtomicU64; 4] = std::array::from_fn(|_| AtomicU64::new(0));
    let none = || {};
    let sides = alternate(
        rounds,
        [
            &mut || engine_block(on("hybrid").then_some(&hybrid), &indexes[0], &clocks[0]),
            &mut || {
                engine_block(
                    on("disk-only").then_some(&disk_only),
                    &indexes[1],
                    &clocks[1],
                )
            },
            &mut || {
                if !on("disk") {
                    return Duration::ZERO;
                }
                let write = |half| {
                    for _ in 0..BLOCK {
                        let n = clocks[2].fetch_add(1, Ordering::Relaxed);
                        let mut batch = WriteBatch::new();
                        for (key, value) in batch_16(half, n) {
                            batch.put(Cf::Write, key, value);
                        }
                        disk.apply(&batch).unwrap();
                    }
                };
                block(&write, &none)
            },
            &mut || {
                let write = |half| bare_batches(&bare, half, BLOCK, &clocks[3]);
                block(&write, &none)
            },
        ],
    );
    let per_round = |side: &[Duration]| total(side) / (rounds * BLOCK as u32);
    let bare_time = per_round(&sides[3]);
    for (name, side) in ["hybrid", "disk-only", "disk", "bare"].iter().zip(&sides) {
        let time = per_round(side);
        let ratio = time.as_secs_f64() / bare_time.as_secs_f64();
        println!("{name:>10}: {time:>10.2?} a round, {ratio:.3}x bare");
    }
    let compactions = hybrid.stats().compactions;
    println!(
        "hybrid's compactions: {} ended ({} failed); memory in use at the end: {} MiB",
        compactions.ok + compactions.range_gone + compactions.failed,
        compactions.failed,
        hybrid.memory_used() >> 20
    );
}
