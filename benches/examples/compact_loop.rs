//! The memory store's write and compaction work alone, on one thread, deterministic (for
//! `valgrind --tool=callgrind` or `perf`): batches of 16 MVCC puts, as `write_loop`
//! writes them, to one range of a `MemKv`, and a compaction each time the range asks for
//! one (`wants_compaction`), done inline instead of on the engine's deleter thread.
//! Prints the time spent writing and compacting, and the entries the compactions wrote.
//! With `gc`, each compaction also collects MVCC garbage below a safe point 50,000
//! batches behind the writes (as the engine's GC rounds do). A third argument sets how
//! many user keys the writes cycle through (default 100,000; fewer keys, more versions
//! of each between two inserts of neighbours). A fourth, `reads`, writes without
//! compacting and then reads: an MVCC point get of every user key at the newest
//! timestamp and one at a timestamp halfway through the writes, ten times over (the
//! memtable's search, for a profile to count).
//!
//! ```sh
//! cargo run --release -p ime-benches --example compact_loop -- 200000
//! cargo run --release -p ime-benches --example compact_loop -- 200000 gc
//! cargo run --release -p ime-benches --example compact_loop -- 200000 no-gc 500
//! cargo run --release -p ime-benches --example compact_loop -- 20000 no-gc 500 reads
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a profiling harness: a failed setup should stop it"
)]

use std::time::{Duration, Instant};

use ime_benches::{put_record, user_key, write_key};
use ime_disk::KeyRange;
use ime_memkv::{Cf, MemConfig, MemKv, OpRef, RangeId};

fn main() {
    let mut args = std::env::args().skip(1);
    let batches: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let gc = args.next().as_deref() == Some("gc");
    let keys: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let reads = args.next().as_deref() == Some("reads");
    let kv = MemKv::new(MemConfig {
        hard_limit: 64 << 30,
        soft_limit: 32 << 30,
    });
    let range = RangeId(1);
    kv.create_range(
        range,
        KeyRange::with_end(b"t".to_vec(), Some(b"u".to_vec())).unwrap(),
    )
    .unwrap();
    let (mut writing, mut compacting) = (Duration::ZERO, Duration::ZERO);
    let (mut compactions, mut written) = (0u64, 0usize);
    for round in 1..=batches {
        let ops: Vec<(Vec<u8>, Vec<u8>)> = (0..16)
            .map(|k| {
                let key = write_key(&user_key((round * 16 + k) % keys), 2_000_000 + round);
                (key, put_record(1_999_999 + round, b"value"))
            })
            .collect();
        let batch: Vec<OpRef<'_>> = ops
            .iter()
            .map(|(k, v)| OpRef::Put(Cf::Write, k, v))
            .collect();
        let start = Instant::now();
        kv.write_next(&batch).unwrap();
        writing += start.elapsed();
        if !reads && kv.wants_compaction(range).unwrap() {
            let start = Instant::now();
            let safe_point = gc.then(|| (2_000_000 + round).saturating_sub(50_000));
            let stats = kv.compact(range, safe_point).unwrap();
            compacting += start.elapsed();
            compactions += 1;
            written += stats.entries_after;
        }
    }
    println!(
        "writes {writing:?}, compactions {compacting:?} ({compactions} of them, \
         {written} entries written, {:.1} ns an entry)",
        compacting.as_nanos() as f64 / written.max(1) as f64
    );
    if reads {
        let start = Instant::now();
        let found = read_every_key(&kv, range, keys, 2_000_000 + batches / 2);
        println!("reads {:?} ({found} found)", start.elapsed());
    }
}

/// MVCC point gets of every one of `keys` user keys, at the newest timestamp and at
/// `mid_ts`, ten times over; how many found a version.
#[inline(never)]
fn read_every_key(kv: &MemKv, range: RangeId, keys: u64, mid_ts: u64) -> usize {
    let snapshot = kv.snapshot(range, kv.last_sequence()).unwrap();
    let mut found = 0;
    for _ in 0..10 {
        for i in 0..keys {
            let user = ime_memkv::codec::encode_bytes(&user_key(i));
            for ts in [u64::MAX, mid_ts] {
                let versions = ime_memkv::mvcc::versions_at_or_below(&user, ts).unwrap();
                found += usize::from(snapshot.first_in(Cf::Write, &versions).is_some());
            }
        }
    }
    found
}
