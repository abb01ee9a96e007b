//! A write loop to profile (`perf record`), outside criterion's harness: batches of 16
//! MVCC puts to a cached region through the engine (`hybrid`), through an engine that
//! caches nothing (`disk-only`), or the same batches to a bare RocksDB (`bare`); prints
//! the mean time per batch. A third argument sets the batch size (default 16); a fourth,
//! `read`, takes a snapshot of the region before each hybrid write, so that the region
//! counts as read lately and each write applies its memory side itself (as with two
//! writers on two cores) instead of deferring it to a background task. An argument
//! `keys=N` spreads the writes over `N` user keys (default 100000; the engine suite's
//! writers spread theirs over 500 a region, so that each key gathers many versions).
//!
//! ```sh
//! cargo run --release -p ime-benches --example write_loop -- hybrid 400000
//! cargo run --release -p ime-benches --example write_loop -- disk-only 400000
//! cargo run --release -p ime-benches --example write_loop -- bare 400000
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a profiling harness: a failed setup should stop it"
)]

use std::time::Instant;

use ime_benches::{
    engine_with_region_loaded, profiling_engine, put_record, rocks_with, user_key, write_key,
};
use ime_disk::{Cf, DiskEngine, RocksDisk, WriteBatch};
use ime_engine::{ApplyHeader, HybridWriteBatch};
use ime_region::{ReadRequest, RegionEpoch, RegionId};

const EPOCH: RegionEpoch = RegionEpoch::new(2, 1);

/// The `size` operations of batch `round`: consecutive keys of `keys`, a new commit
/// timestamp.
fn ops(round: u64, size: u64, keys: u64) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    (0..size).map(move |k| {
        let key = write_key(&user_key((round * size + k) % keys), 2_000_000 + round);
        (key, put_record(1_999_999 + round, b"value"))
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let hybrid = mode != "bare";
    let batches: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(400_000);
    let size: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(16);
    let (mut read, mut keys) = (false, 100_000);
    for arg in args {
        match arg.strip_prefix("keys=") {
            Some(n) => keys = n.parse().unwrap(),
            None => read |= arg == "read",
        }
    }
    let entries = (0..1000).map(|i| (write_key(&user_key(i), 10), put_record(9, &[b'v'; 32])));
    let engine = if mode == "disk-only" {
        profiling_engine(rocks_with(Cf::Write, entries))
    } else {
        engine_with_region_loaded(rocks_with(Cf::Write, entries), EPOCH)
    };
    let bare = RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let start = Instant::now();
    for round in 1..=batches {
        if hybrid && read {
            let request = ReadRequest {
                epoch_version: EPOCH.version,
                applied_index: 4 + round,
                read_ts: u64::MAX - 1,
            };
            std::hint::black_box(engine.snapshot(RegionId(1), request));
        }
        if hybrid {
            let mut batch = HybridWriteBatch::new();
            batch.prepare(ApplyHeader {
                region: RegionId(1),
                epoch: EPOCH,
                first_index: 5 + round,
                last_index: 5 + round,
            });
            for (key, value) in ops(round, size, keys) {
                batch.put(Cf::Write, key, value);
            }
            engine.write(&batch).unwrap();
        } else {
            let mut batch = WriteBatch::new();
            for (key, value) in ops(round, size, keys) {
                batch.put(Cf::Write, key, value);
            }
            bare.write(&batch).unwrap();
        }
    }
    let per_batch = start.elapsed() / u32::try_from(batches).unwrap_or(u32::MAX);
    println!("{mode}: {per_batch:?} per batch of {size} ({batches} batches)");
}
