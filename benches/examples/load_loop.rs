//! A load loop to profile and to compare builds, outside criterion's harness: one region of
//! `keys` keys (one version each, short values, write CF, as `engine/load`), loaded into the
//! cache and evicted again `rounds` times (`load`), or iterated bare over the same keys
//! (`bare`: every entry visited, nothing copied, as `engine/load/rocksdb_iteration`), or
//! neither (`none`: the setup alone, to subtract from an instruction count). The data is
//! flushed and compacted first, so that both read the same files. Prints the best and the
//! median time of the rounds.
//!
//! ```sh
//! cargo run --release -p ime-benches --example load_loop -- load 5
//! valgrind --tool=callgrind --separate-threads=yes target/release/examples/load_loop load 2 200000
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a profiling harness: a failed setup should stop it"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ime_benches::{
    iterate_bare, profiling_engine, put_record, region_one, rocks_with, settle, user_key, write_key,
};
use ime_disk::Cf;
use ime_region::{EvictReason, RegionEpoch, RegionId};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "load".to_owned());
    let mut arg = |default: u64| args.next().and_then(|n| n.parse().ok()).unwrap_or(default);
    let (rounds, keys) = (arg(5), arg(1_000_000));
    let entries = (0..keys).map(|i| (write_key(&user_key(i), 10), put_record(9, &[b'v'; 32])));
    let disk = rocks_with(Cf::Write, entries);
    settle(&disk);
    let engine = profiling_engine(disk);
    let region = region_one(RegionEpoch::new(2, 1));
    let mut times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        match mode.as_str() {
            "load" => {
                engine.load_region(region.clone(), 5).unwrap();
                assert!(engine.wait_idle(Duration::from_secs(600)));
                times.push(start.elapsed());
                engine.evict_region(RegionId(1), EvictReason::Manual, None);
                assert!(engine.wait_idle(Duration::from_secs(600)));
            }
            "bare" => {
                black_box(iterate_bare(&engine.disk().snapshot(), &region.range));
                times.push(start.elapsed());
            }
            _ => break,
        }
    }
    times.sort();
    if let (Some(best), Some(median)) = (times.first(), times.get(times.len() / 2)) {
        let rounds = times.len();
        println!("{mode}: best {best:?}, median {median:?} over {rounds} rounds");
    }
}
