//! Two reader threads against one, reading one region or two: what the readers of one
//! region share costs beside what any two threads share. 1,000,000 keys (one version each,
//! short values, write CF) in two cached regions of half each; blocks of 200,000 gets (a
//! snapshot and an MVCC get each) on one thread and split in halves over two kept
//! threads, in turn (`ime_benches::one_vs_two_in_turn` with `Split::Halves`, so that each
//! thread keeps to its own region; `engine/readers` shares its gets instead): both
//! threads reading region 1 (`one region`), or one reading region 1 and the other region
//! 2 (`two regions`; the one-thread blocks read region 1). Prints the ratio of the two
//! sides' totals, three times each. Argument: rounds of blocks (default 9).
//!
//! ```sh
//! cargo run --release -p ime-benches --example readers_loop -- 9
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a profiling harness: a failed setup should stop it"
)]

use std::hint::black_box;
use std::time::Duration;

use ime_benches::{
    Split, one_vs_two_in_turn, profiling_engine, put_record, rocks_with, settle, total, user_key,
    write_key,
};
use ime_disk::Cf;
use ime_memkv::codec::encode_bytes;
use ime_region::{KeyRange, ReadRequest, Region, RegionEpoch, RegionId};

const EPOCH: RegionEpoch = RegionEpoch::new(2, 1);
const KEYS: u64 = 1_000_000;

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9);
    let entries = (0..KEYS).map(|i| (write_key(&user_key(i), 10), put_record(9, &[b'v'; 32])));
    let disk = rocks_with(Cf::Write, entries);
    settle(&disk);
    let engine = profiling_engine(disk);
    let mid = encode_bytes(&user_key(KEYS / 2));
    let ranges = [
        KeyRange::new(encode_bytes(b"t"), mid.clone()).unwrap(),
        KeyRange::new(mid, encode_bytes(b"u")).unwrap(),
    ];
    for (i, range) in ranges.into_iter().enumerate() {
        engine
            .load_region(Region::new(RegionId(i as u64 + 1), range, EPOCH), 5)
            .unwrap();
    }
    assert!(engine.wait_idle(Duration::from_secs(600)));
    let probes: [Vec<Vec<u8>>; 2] = std::array::from_fn(|half| {
        (0..4096u64)
            .map(|i| {
                user_key(half as u64 * (KEYS / 2) + i.wrapping_mul(2_654_435_761) % (KEYS / 2))
            })
            .collect()
    });
    let read = ReadRequest {
        epoch_version: EPOCH.version,
        applied_index: 5,
        read_ts: u64::MAX - 1,
    };
    let gets = |apart: bool| {
        let engine = &engine;
        let probes = &probes;
        move |count: u64, offset: usize| {
            let half = usize::from(apart && offset != 0);
            let region = RegionId(half as u64 + 1);
            for i in 0..count as usize {
                let snapshot = engine.snapshot(region, read);
                assert!(snapshot.from_memory());
                black_box(
                    snapshot
                        .mvcc_get(&probes[half][(i + offset) % 4096])
                        .unwrap(),
                );
            }
        }
    };
    for _ in 0..3 {
        for apart in [false, true] {
            let [one, two] = one_vs_two_in_turn(rounds, 200_000, Split::Halves, &gets(apart));
            let r = total(&two).as_secs_f64() / total(&one).as_secs_f64();
            println!(
                "{}: two / one {:.3}",
                if apart { "two regions" } else { "one region " },
                r
            );
        }
    }
}
