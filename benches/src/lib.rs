//! Shared settings for IME's criterion suites (`benches/suites/*.rs`), run by
//! `cargo bench -p ime-benches` or, with ratios against same-run baselines,
//! `cargo xtask bench`.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};

/// The one place warm-up and measurement times are set, so every suite runs alike.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args()
}

/// Benchmarks `one_thread` and `two_threads` in `group`: the same total work on one
/// thread, and shared by two ([`Split::Shared`]; `work(count, offset)` does `count`
/// operations, starting at `offset` in whatever it cycles through).
pub fn one_vs_two_threads(
    group: &mut BenchmarkGroup<'_, WallTime>,
    work: impl Fn(u64, usize) + Sync,
) {
    group.bench_function("one_thread", |b| {
        b.iter_custom(|iters| on_one_thread(&work, iters))
    });
    group.bench_function("two_threads", |b| {
        b.iter_custom(|iters| on_two_threads(&work, iters))
    });
}

/// The time of `work(count, 0)` on this thread.
pub fn on_one_thread(work: &impl Fn(u64, usize), count: u64) -> Duration {
    let start = Instant::now();
    work(count, 0);
    start.elapsed()
}

/// How two threads split the operations of one block between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Half each, fixed: the first thread from offset 0, the second from offset 7. The
    /// block lasts as long as the slower thread, so the core that gives less sets the
    /// time. For when each thread's own share matters (one region each).
    Halves,
    /// Shared as a pool of readers shares requests: each thread takes the next chunk of
    /// operations (at most [`SHARE_CHUNK`]) until none is left, so the faster thread does
    /// more and the two end together. The operations done, and their offsets, are those
    /// of one thread's `work(count, 0)`.
    Shared,
}

/// The most operations a thread takes at once under [`Split::Shared`]: a block of
/// 200,000 gets (about 0.2 s) is 400 chunks, one shared counter moved per chunk, and
/// the threads end at most one chunk (about half a millisecond) apart.
pub const SHARE_CHUNK: u64 = 500;

/// `count` operations split over two threads: each one's offset and share.
fn halves(count: u64) -> [(usize, u64); 2] {
    [(0, count / 2), (7, count - count / 2)]
}

/// One thread's part of a block of `count` operations split as `split`: its half (the
/// `thread`th, 0 or 1), or chunks taken from `next` (which the block starts at zero).
fn do_part(work: &impl Fn(u64, usize), split: Split, thread: usize, count: u64, next: &AtomicU64) {
    match split {
        Split::Halves => {
            let (offset, share) = halves(count)[thread];
            work(share, offset);
        }
        Split::Shared => {
            // Smaller chunks for a short block, so that both threads get some.
            let chunk = (count / 256).clamp(1, SHARE_CHUNK);
            loop {
                let from = next.fetch_add(chunk, Ordering::Relaxed);
                if from >= count {
                    break;
                }
                work(chunk.min(count - from), from as usize);
            }
        }
    }
}

/// The time of `count` operations of `work` shared by two threads ([`Split::Shared`]).
pub fn on_two_threads(work: &(impl Fn(u64, usize) + Sync), count: u64) -> Duration {
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..2 {
            let next = &next;
            s.spawn(move || do_part(work, Split::Shared, thread, count, next));
        }
    });
    start.elapsed()
}

/// `work` on one thread and split over two as `split`, in blocks in turn (as
/// [`alternate`]), `rounds` rounds of `count` operations a side: each side's times, round
/// by round. The two threads are started once and kept, waiting between their blocks:
/// threads started anew for every block begin on one core until the scheduler spreads
/// them, which costs a short block more than any code does.
pub fn one_vs_two_in_turn(
    rounds: u32,
    count: u64,
    split: Split,
    work: &(impl Fn(u64, usize) + Sync),
) -> [Vec<Duration>; 2] {
    let (go, done) = (Barrier::new(3), Barrier::new(3));
    let stop = AtomicBool::new(false);
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for thread in 0..2 {
            let (go, done, stop, next) = (&go, &done, &stop, &next);
            s.spawn(move || {
                loop {
                    go.wait();
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    do_part(work, split, thread, count, next);
                    done.wait();
                }
            });
        }
        let mut one = || on_one_thread(work, count);
        let mut two = || {
            // The workers wait at `go`: nobody takes a chunk before it is reset.
            next.store(0, Ordering::Relaxed);
            let start = Instant::now();
            go.wait();
            done.wait();
            start.elapsed()
        };
        let times = alternate(rounds, [&mut one, &mut two]);
        stop.store(true, Ordering::Release);
        go.wait();
        times
    })
}

/// Blocks of each side's work run in turn, `rounds` times: each side's results (times, or
/// whatever a block measures), round by round.
///
/// Criterion times one benchmark, then the next: on a shared machine whose speed drifts
/// from second to second, two neighbours can meet different machines, and a ratio of
/// neighbours then measures the drift. Blocks in turn meet the same drift, which a ratio
/// of their totals (or medians) cancels (the headline's writes are timed so too).
pub fn alternate<const N: usize>(
    rounds: u32,
    mut sides: [&mut dyn FnMut() -> Duration; N],
) -> [Vec<Duration>; N] {
    let mut results: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..rounds {
        for (result, side) in results.iter_mut().zip(sides.iter_mut()) {
            result.push(side());
        }
    }
    results
}

/// The sum of a side's results.
pub fn total(results: &[Duration]) -> Duration {
    results.iter().sum()
}

/// The median of a side's results (the upper one of an even count; zero for none): for a
/// figure each block measures whole, such as a p99, which one stalled block must not move.
pub fn median(results: &[Duration]) -> Duration {
    let mut sorted = results.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// The round whose ratio of `measured` to `baseline` (two sides' results, round by round,
/// as [`alternate`] gives them) is the median of the rounds' ratios (the upper one of an
/// even count): that round's two results, `None` for no round.
///
/// Each round's two blocks run seconds apart at most, so their ratio cancels a drift of
/// the machine that lasts longer than a round; the medians of each side apart cancel it
/// only when it is slow against all the rounds. For a figure whose every block does the
/// same work (a load), the median round is the steadier figure.
pub fn median_round(measured: &[Duration], baseline: &[Duration]) -> Option<(Duration, Duration)> {
    let mut rounds: Vec<(Duration, Duration)> = measured
        .iter()
        .zip(baseline)
        .filter(|(_, b)| !b.is_zero())
        .map(|(m, b)| (*m, *b))
        .collect();
    rounds.sort_by(|x, y| {
        let ratio = |(m, b): &(Duration, Duration)| m.as_secs_f64() / b.as_secs_f64();
        ratio(x).total_cmp(&ratio(y))
    });
    rounds.get(rounds.len() / 2).copied()
}

/// Writes `value` (in `unit`: `ns` prints as a time) as benchmark `id`'s (`group/function`)
/// `value.json`, where `cargo xtask bench` reads figures criterion does not time.
///
/// # Errors
/// The file's directory cannot be made or the file written.
pub fn record_value(id: &str, value: f64, unit: &str) -> std::io::Result<()> {
    let (group, function) = id.rsplit_once('/').unwrap_or(("", id));
    let dir = criterion_dir().join(group.replace('/', "_")).join(function);
    std::fs::create_dir_all(&dir)?;
    let json = format!("{{\"value\": {value}, \"unit\": \"{unit}\"}}\n");
    std::fs::write(dir.join("value.json"), json)
}

/// Each side's time per operation in nanoseconds, recorded as `group/<name>`
/// ([`record_value`]), from a time over `ops` operations a side; printed too.
///
/// # Errors
/// As [`record_value`].
pub fn record_per_op(group: &str, sides: &[(&str, Duration)], ops: u64) -> std::io::Result<()> {
    let mut line = format!("{group} (blocks in turn):");
    for (name, total) in sides {
        let ns = total.as_nanos() as f64 / ops.max(1) as f64;
        record_value(&format!("{group}/{name}"), ns, "ns")?;
        line.push_str(&format!(" {name} {:.1} us", ns / 1e3));
    }
    println!("{line}");
    Ok(())
}

/// Criterion's output directory (`<target>/criterion`), found from the running bench
/// binary's place (`<target>/<profile>/deps/`), where `cargo xtask bench` reads it.
pub fn criterion_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap_or(std::path::Path::new("target"));
    target.join("criterion")
}

/// The write-CF key of `user`'s version committed at `commit_ts` (TiKV's format).
pub fn write_key(user: &[u8], commit_ts: u64) -> Vec<u8> {
    ime_memkv::codec::MvccKey {
        user_key: user.to_vec(),
        ts: commit_ts,
    }
    .encode()
}

/// A put's write record started at `start_ts`, with `value` inline.
///
/// # Panics
/// When `value` is too long to go inline (a benchmark setup error).
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a wrong record should stop the run"
)]
pub fn put_record(start_ts: u64, value: &[u8]) -> Vec<u8> {
    use ime_memkv::codec::{WriteRecord, WriteType};
    WriteRecord::new(WriteType::Put, start_ts, Some(value.to_vec()))
        .encode()
        .expect("a short value goes inline")
}

/// The number of keys a suite loads: `IME_BENCH_KEYS`, default 1,000,000.
pub fn keys_from_env() -> u64 {
    std::env::var("IME_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The `i`-th user key of a suite's data, TiKV-table-like (`t_0000000007_r`, spaced by 7).
pub fn user_key(i: u64) -> Vec<u8> {
    format!("t_{:010}_r", i * 7).into_bytes()
}

/// Regions 1 and 2 at `epoch`, splitting user keys `t..u` at key 500: the two writers'
/// regions (in the engine suite and `examples/two_writers.rs`).
///
/// # Panics
/// Never: the bounds are in order.
#[allow(clippy::expect_used, reason = "constant bounds")]
pub fn two_regions(epoch: ime_region::RegionEpoch) -> [ime_region::Region; 2] {
    use ime_memkv::codec::encode_bytes;
    use ime_region::{KeyRange, Region, RegionId};
    let mid = encode_bytes(&user_key(500));
    let first = KeyRange::new(encode_bytes(b"t"), mid.clone()).expect("t < mid");
    let second = KeyRange::new(mid, encode_bytes(b"u")).expect("mid < u");
    [
        Region::new(RegionId(1), first, epoch),
        Region::new(RegionId(2), second, epoch),
    ]
}

/// The batch of 16 MVCC puts committed at tick `n` of the writers' clock into the half
/// of the keys `half` (0 or 1) holds: 16 consecutive user keys of its 500, each a new
/// version.
pub fn batch_16(half: u64, n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..16)
        .map(|k| {
            let key = user_key(half * 500 + (n * 16 + k) % 500);
            (
                write_key(&key, 2_000_000 + n),
                put_record(1_999_999 + n, b"value"),
            )
        })
        .collect()
}

/// An apply thread of region `half + 1` (of [`two_regions`] at `epoch`): `count`
/// batches of [`batch_16`], its applied index in `index`, each batch committed at the
/// next tick of `clock`.
///
/// The timestamps come from one clock all the writers of a side share, as TiKV's commit
/// timestamps come from one oracle for every region, while each region has its own Raft
/// index. [`bare_batches`] takes its timestamps the same way, so that both sides put the
/// same keys into RocksDB: the order of the versions changes RocksDB's own insert time
/// (two writers that each numbered their versions by their own region's index took
/// about a tenth longer in RocksDB than two sharing one clock).
///
/// # Panics
/// When the engine refuses a write: a benchmark setup failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]
pub fn apply_batches(
    engine: &ime_engine::Engine<ime_disk::RocksDisk>,
    epoch: ime_region::RegionEpoch,
    half: u64,
    count: u64,
    index: &AtomicU64,
    clock: &AtomicU64,
) {
    for _ in 0..count {
        let at = index.fetch_add(1, Ordering::Relaxed) + 1;
        let n = clock.fetch_add(1, Ordering::Relaxed);
        let mut batch = ime_engine::HybridWriteBatch::new();
        batch.prepare(ime_engine::ApplyHeader {
            region: ime_region::RegionId(half + 1),
            epoch,
            first_index: at,
            last_index: at,
        });
        for (key, value) in batch_16(half, n) {
            batch.put(ime_disk::Cf::Write, key, value);
        }
        std::hint::black_box(engine.write(&batch).expect("the engine writes"));
    }
}

/// A bare RocksDB in `path` with TiKV's three column families: the writers' baseline.
/// Opened with the options the engine's disk opens with (`RocksConfig::options`: its
/// bloom filters, its block cache), so that the two sides differ only by what IME does.
///
/// # Panics
/// When RocksDB cannot be opened: a benchmark setup failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]
pub fn bare_rocksdb(path: &std::path::Path) -> rocksdb::DB {
    let (options, cf_options) = ime_disk::RocksConfig::default().options();
    let families = ime_disk::Cf::ALL
        .map(|cf| rocksdb::ColumnFamilyDescriptor::new(cf.name(), cf_options.clone()));
    rocksdb::DB::open_cf_descriptors(&options, path, families).expect("open a bare RocksDB")
}

/// A writer of a bare RocksDB: `count` batches of [`batch_16`] as [`apply_batches`]
/// writes them to region `half + 1`, each committed at the next tick of `clock`.
///
/// # Panics
/// When RocksDB refuses a write: a benchmark setup failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]
pub fn bare_batches(bare: &rocksdb::DB, half: u64, count: u64, clock: &AtomicU64) {
    let cf = bare.cf_handle("write").expect("the write column family");
    for _ in 0..count {
        let n = clock.fetch_add(1, Ordering::Relaxed);
        bare.write(bare_batch(&cf, batch_16(half, n)))
            .expect("a bare write");
    }
}

/// `puts` (to column family `cf`) as a bare RocksDB batch, sized once for them as TiKV
/// sizes its batches (RocksDB's batch is one string, which else grows several times over
/// a batch of short operations): the baselines' batch.
pub fn bare_batch(
    cf: &impl rocksdb::AsColumnFamilyRef,
    puts: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> rocksdb::WriteBatch {
    let puts: Vec<_> = puts.into_iter().collect();
    // A 12-byte header; per put a type byte, a family id and two lengths (varints).
    let bytes = 12
        + puts
            .iter()
            .map(|(k, v)| 16 + k.len() + v.len())
            .sum::<usize>();
    let mut batch = rocksdb::WriteBatch::with_capacity_bytes(bytes);
    for (key, value) in puts {
        batch.put_cf(cf, key, value);
    }
    batch
}

/// A fresh RocksDB (temporary directory) holding `entries` in `cf`, written in batches of
/// 1,024 through the ordinary write path.
///
/// # Panics
/// When RocksDB cannot be opened or written: a benchmark setup failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]
pub fn rocks_with(
    cf: ime_disk::Cf,
    entries: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
) -> ime_disk::RocksDisk {
    use ime_disk::DiskEngine;
    let disk =
        ime_disk::RocksDisk::open_temp(&ime_disk::RocksConfig::default()).expect("open RocksDB");
    let mut batch = ime_disk::WriteBatch::new();
    for (key, value) in entries {
        batch.put(cf, key, value);
        if batch.len() == 1024 {
            disk.write(&batch).expect("write to RocksDB");
            batch = ime_disk::WriteBatch::new();
        }
    }
    if !batch.is_empty() {
        disk.write(&batch).expect("write to RocksDB");
    }
    disk
}

/// Flushes every column family of `disk` and compacts it whole, then waits for RocksDB's
/// background work to end: a run measured after it reads the same files whatever the
/// flushes and compactions of the setup were doing.
///
/// # Panics
/// When RocksDB fails to flush or compact: a setup failure.
pub fn settle(disk: &ime_disk::RocksDisk) {
    settle_db(disk.db());
}

/// [`settle`] for any RocksDB with TiKV's column families (a bare baseline, or an
/// engine's disk by its handle).
///
/// # Panics
/// When RocksDB fails to flush or compact: a setup failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]
pub fn settle_db(db: &rocksdb::DB) {
    for cf in ime_disk::Cf::ALL {
        let handle = db.cf_handle(cf.name()).expect("the column family exists");
        db.flush_cf(&handle).expect("flush");
        db.compact_range_cf(&handle, None::<&[u8]>, None::<&[u8]>);
    }
}

/// Visits every entry of every column family of `snapshot` in `range` and adds up their
/// lengths, copying nothing: the least a load of the range must do before copying the
/// bytes into memory, the loads' baseline.
///
/// # Panics
/// When the disk fails to iterate: a benchmark failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark harness: a failure should stop the run"
)]
pub fn iterate_bare(snapshot: &impl ime_disk::DiskSnapshot, range: &ime_region::KeyRange) -> usize {
    let bounds =
        ime_disk::KeyRange::with_end(range.start().to_vec(), range.end().map(<[u8]>::to_vec))
            .expect("a region's range is a valid range");
    let mut n = 0;
    for cf in ime_disk::Cf::ALL {
        ime_disk::for_each(snapshot, cf, bounds.clone(), |key, value| {
            n += key.len() + value.len();
            Ok::<(), ime_disk::DiskError>(())
        })
        .expect("iterate RocksDB");
    }
    n
}

/// An engine over `disk` for the profiling loops (`benches/examples`): capacity 8 GiB,
/// no GC or policy round during a run.
///
/// # Panics
/// When the engine cannot start: a setup failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]
pub fn profiling_engine(disk: ime_disk::RocksDisk) -> ime_engine::Engine<ime_disk::RocksDisk> {
    let config = "capacity = \"8GiB\"\ngc-run-interval = \"1h\"\nload-evict-interval = \"1h\"";
    let config = ime_engine::Config::from_toml(config).expect("a valid config");
    ime_engine::Engine::new(disk, config).expect("start the engine")
}

/// Region 1 of the profiling loops: user keys `t..u` at `epoch`.
///
/// # Panics
/// Never: `t` sorts before `u`.
#[allow(clippy::expect_used, reason = "constant bounds")]
pub fn region_one(epoch: ime_region::RegionEpoch) -> ime_region::Region {
    use ime_memkv::codec::encode_bytes;
    let range = ime_region::KeyRange::new(encode_bytes(b"t"), encode_bytes(b"u")).expect("t < u");
    ime_region::Region::new(ime_region::RegionId(1), range, epoch)
}

/// [`profiling_engine`] with [`region_one`] loaded into the cache.
///
/// # Panics
/// When the engine cannot start or the load does not finish in ten minutes: a setup
/// failure.
#[allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]
pub fn engine_with_region_loaded(
    disk: ime_disk::RocksDisk,
    epoch: ime_region::RegionEpoch,
) -> ime_engine::Engine<ime_disk::RocksDisk> {
    let engine = profiling_engine(disk);
    engine
        .load_region(region_one(epoch), 5)
        .expect("load region 1");
    assert!(engine.wait_idle(Duration::from_secs(600)), "the load ends");
    engine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_run_in_turn_round_by_round() {
        let order = std::cell::RefCell::new(Vec::new());
        let side = |name: char, ms: u64| {
            let order = &order;
            move || {
                order.borrow_mut().push(name);
                Duration::from_millis(ms)
            }
        };
        let (mut a, mut b) = (side('a', 1), side('b', 5));
        let [a, b] = alternate(3, [&mut a, &mut b]);
        assert_eq!(order.into_inner(), ['a', 'b', 'a', 'b', 'a', 'b']);
        assert_eq!(
            (total(&a), total(&b)),
            (Duration::from_millis(3), Duration::from_millis(15))
        );
        let p99s = [9, 1, 500, 2, 3].map(Duration::from_millis);
        assert_eq!(median(&p99s), Duration::from_millis(3));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    /// The median round is chosen by its ratio, not by either side's time: a machine twice
    /// as slow for one round moves both of its blocks and not the ratio; a round with no
    /// baseline is skipped; no round gives nothing.
    #[test]
    fn the_median_round_is_the_one_of_the_median_ratio() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        // The machine runs at half speed for the first two rounds (both blocks take twice as
        // long) and the last load stalls: every ratio is 1.3 but the last (2.6), while the
        // medians of each side apart (26 and 10 ms) would say 2.6.
        let loads = ms(&[26, 26, 13, 13, 26]);
        let iterations = ms(&[20, 20, 10, 10, 10]);
        assert_eq!(median(&loads), Duration::from_millis(26));
        assert_eq!(median(&iterations), Duration::from_millis(10));
        assert_eq!(
            median_round(&loads, &iterations),
            Some((Duration::from_millis(13), Duration::from_millis(10)))
        );
        assert_eq!(
            median_round(&ms(&[5, 7]), &ms(&[0, 7])),
            Some((Duration::from_millis(7), Duration::from_millis(7)))
        );
        assert_eq!(median_round(&[], &[]), None);
    }

    /// Both splits do as many operations as one thread's `work(count, 0)`: halves, each
    /// thread its own half; shared, chunks that tile exactly that one thread's offsets,
    /// and a thread that finds the other done first takes all that is left.
    #[test]
    fn two_threads_do_exactly_one_threads_work() {
        use std::sync::Mutex;
        for count in [0, 1, 255, 256, 1_000, 200_000 + 3] {
            for split in [Split::Halves, Split::Shared] {
                let done = Mutex::new(Vec::new());
                let by_thread = Mutex::new([0u64; 2]);
                let next = AtomicU64::new(0);
                std::thread::scope(|s| {
                    for thread in 0..2 {
                        let (done, by_thread, next) = (&done, &by_thread, &next);
                        s.spawn(move || {
                            let work = |n: u64, offset: usize| {
                                assert!(split == Split::Halves || n <= SHARE_CHUNK);
                                done.lock().unwrap().push((offset, n));
                                by_thread.lock().unwrap()[thread] += n;
                            };
                            do_part(&work, split, thread, count, next);
                        });
                    }
                });
                let mut done = done.into_inner().unwrap();
                if split == Split::Halves {
                    assert_eq!(
                        by_thread.into_inner().unwrap(),
                        [count / 2, count - count / 2]
                    );
                    continue;
                }
                // Shared: the chunks tile 0..count.
                done.sort_unstable();
                let mut at = 0;
                for (offset, n) in done {
                    assert_eq!(offset as u64, at, "{count} operations, chunk at {offset}");
                    at += n;
                }
                assert_eq!(at, count);
            }
        }
        // A lone taker takes everything, chunk by chunk.
        let next = AtomicU64::new(0);
        let taken = std::cell::Cell::new(0);
        do_part(
            &|n, _| taken.set(taken.get() + n),
            Split::Shared,
            0,
            10_000,
            &next,
        );
        assert_eq!(taken.get(), 10_000);
        do_part(
            &|n, _| taken.set(taken.get() + n),
            Split::Shared,
            1,
            10_000,
            &next,
        );
        assert_eq!(taken.get(), 10_000, "nothing left for the second");
    }
}
