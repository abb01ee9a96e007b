//! A point-get loop to profile and to compare builds, outside criterion's harness: one
//! region of 1,000,000 keys (one version each, short values, write CF) loaded into the
//! cache, then blocks of snapshot + MVCC gets served from memory (`hybrid`) and from disk
//! through the same engine (`disk_only`, an epoch the cache does not hold), alternated in
//! one process so that both sides meet the same machine. Prints each side's best block
//! (time per get) and the ratio of the two sides' totals. Arguments: gets per block
//! (default 200,000), blocks per side (default 6), distinct probe keys (default 4,096,
//! as `engine/point_get`; 1,000,000 reaches every key), and `two` to also time hybrid
//! blocks on one thread and shared by two kept threads, in turn
//! (`ime_benches::one_vs_two_in_turn` with `Split::Shared`, as `engine/readers`), and print
//! the ratio of their totals.
//!
//! ```sh
//! cargo run --release -p ime-benches --example get_loop
//! cargo run --release -p ime-benches --example get_loop -- 200000 6 1000000
//! cargo run --release -p ime-benches --example get_loop -- 200000 6 4096 two
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a profiling harness: a failed setup should stop it"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ime_benches::{engine_with_region_loaded, put_record, rocks_with, user_key, write_key};
use ime_disk::Cf;
use ime_region::{ReadRequest, RegionEpoch, RegionId};

const EPOCH: RegionEpoch = RegionEpoch::new(2, 1);
const KEYS: u64 = 1_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: u64| args.next().and_then(|n| n.parse().ok()).unwrap_or(default);
    let (per_block, blocks, distinct) = (arg(200_000), arg(6), arg(4096));
    let two = std::env::args().nth(4).is_some_and(|a| a == "two");
    let entries = (0..KEYS).map(|i| (write_key(&user_key(i), 10), put_record(9, &[b'v'; 32])));
    let engine = engine_with_region_loaded(rocks_with(Cf::Write, entries), EPOCH);
    let probes: Vec<Vec<u8>> = (0..distinct)
        .map(|i| user_key(i.wrapping_mul(2_654_435_761) % KEYS))
        .collect();
    let request = |epoch_version| ReadRequest {
        epoch_version,
        applied_index: 5,
        read_ts: u64::MAX - 1,
    };
    let gets = |count: u64, offset: usize, epoch_version: u64| {
        for i in 0..count as usize {
            let snapshot = engine.snapshot(RegionId(1), request(epoch_version));
            assert_eq!(snapshot.from_memory(), epoch_version == EPOCH.version);
            black_box(
                snapshot
                    .mvcc_get(&probes[(i + offset) % probes.len()])
                    .unwrap(),
            );
        }
    };
    let block = |epoch_version: u64| {
        let start = Instant::now();
        gets(per_block, 0, epoch_version);
        start.elapsed()
    };
    let (mut hybrid, mut disk_only) = (Vec::new(), Vec::new());
    for _ in 0..blocks {
        hybrid.push(block(EPOCH.version));
        disk_only.push(block(EPOCH.version - 1));
    }
    let per_get = |d: &Duration| *d / u32::try_from(per_block).unwrap_or(u32::MAX);
    let best = |v: &[Duration]| v.iter().min().map(per_get).unwrap_or_default();
    let total = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64();
    println!(
        "hybrid best {:?}, disk_only best {:?} per get; hybrid / disk_only (totals) {:.3}",
        best(&hybrid),
        best(&disk_only),
        total(&hybrid) / total(&disk_only)
    );
    if two {
        let hybrid_gets = |count: u64, offset: usize| gets(count, offset, EPOCH.version);
        let rounds = u32::try_from(blocks).unwrap_or(u32::MAX);
        let [one, two] = ime_benches::one_vs_two_in_turn(
            rounds,
            per_block,
            ime_benches::Split::Shared,
            &hybrid_gets,
        );
        println!(
            "hybrid on two threads best {:?} per get; two threads / one (totals) {:.3}",
            best(&two),
            total(&two) / total(&one)
        );
    }
}
