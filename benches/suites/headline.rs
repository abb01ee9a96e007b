//! The workload the cache exists for, end to end: a queue table (TiKV's pain of
//! `SELECT * FROM job_queue` over rows inserted, processed and deleted all the time, with
//! the cluster keeping their history), read at the latest timestamp again and again.
//!
//! Two engines get the same writes, batch by batch: one caches the table's region (its
//! own GC safe point follows a timestamp clock, `gc-run-interval` behind), the other never
//! loads it, so its reads go to disk. The disk keeps every version on both sides (no
//! disk GC). At three history sizes (about 40,000, 400,000 and 4,000,000 versions) the
//! suite measures the live-row scan on each side (criterion), the MVCC versions each
//! scan touched per row returned, and the write path's time per batch on each side, and
//! charts the cached engine's memory against its thresholds. Results go where
//! `cargo xtask bench headline` reads them (`<target>/criterion/headline_*`), the chart to
//! `<target>/criterion/headline-memory.svg`.
//!
//! Workload, in logical time (the clock is a TiKV timestamp: milliseconds << 18 plus a
//! counter): a job every 10 ms, each a row inserted (a put), updated 100 ms later (a
//! put) and deleted 300 ms after its insert (a delete), one transaction each; one Raft
//! entry per 10 ms carries that tick's three writes. About 30 rows are live at any time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run"
)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ime_benches::{put_record, record_value, write_key};
use ime_disk::{Cf, RocksDisk};
use ime_engine::{
    ApplyHeader, Config, Engine, HybridSnapshot, HybridWriteBatch, MvccWork, TSO_LOGICAL_BITS,
};
use ime_memkv::codec::{WriteRecord, WriteType, encode_bytes};
use ime_region::{KeyRange, ReadRequest, Region, RegionEpoch, RegionId};

const EPOCH: RegionEpoch = RegionEpoch::new(1, 1);
const REGION: RegionId = RegionId(1);
/// Logical milliseconds between two jobs.
const JOB_EVERY_MS: u64 = 10;
/// A job's row is updated this long after its insert...
const UPDATE_AFTER_MS: u64 = 100;
/// ... and deleted this long after it.
const DELETE_AFTER_MS: u64 = 300;
/// Versions each job leaves on disk: insert, update, delete.
const VERSIONS_PER_JOB: u64 = 3;
/// The table's user keys: `t_job_r` and the job id (8 bytes, big-endian).
const TABLE: &[u8] = b"t_job_r";
const TABLE_END: &[u8] = b"t_job_s";

/// The three history sizes, in versions, with their labels.
const SCALES: [(&str, u64); 3] = [("40k", 40_000), ("400k", 400_000), ("4m", 4_000_000)];

/// The cached engine's configuration: `gc-run-interval` of one (logical) second.
fn config() -> Config {
    Config::from_toml(
        r#"
        capacity = "64MiB"
        gc-run-interval = "1s"
        load-evict-interval = "1h"
        "#,
    )
    .unwrap()
}

fn region() -> Region {
    let range = KeyRange::new(encode_bytes(b"t"), encode_bytes(b"u")).unwrap();
    Region::new(REGION, range, EPOCH)
}

fn job_key(id: u64) -> Vec<u8> {
    [TABLE, &id.to_be_bytes()].concat()
}

/// A logical TiKV-format clock: milliseconds set by the workload, a counter below.
#[derive(Default)]
struct Clock(AtomicU64);

impl Clock {
    fn set_ms(&self, ms: u64) {
        self.0.fetch_max(ms << TSO_LOGICAL_BITS, Ordering::SeqCst);
    }

    /// A fresh timestamp (start or commit of a transaction).
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One engine and what its Raft peer knows: the applied index.
struct Side {
    engine: Engine<RocksDisk>,
    index: u64,
    write_time: Duration,
    writes: u64,
}

impl Side {
    fn new(cached: bool, clock: &Arc<Clock>) -> Self {
        let disk = RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
        let engine = Engine::new(disk, config()).unwrap();
        if cached {
            let clock = Arc::clone(clock);
            engine.set_timestamp_source(move || clock.now());
            engine.load_region(region(), 0).unwrap();
            assert!(engine.wait_idle(Duration::from_secs(60)));
        }
        Side {
            engine,
            index: 0,
            write_time: Duration::ZERO,
            writes: 0,
        }
    }

    fn write(&mut self, ops: &[(Vec<u8>, Vec<u8>)]) {
        self.index += 1;
        let mut batch = HybridWriteBatch::new();
        batch.prepare(ApplyHeader {
            region: REGION,
            epoch: EPOCH,
            first_index: self.index,
            last_index: self.index,
        });
        for (key, value) in ops {
            batch.put(Cf::Write, key.clone(), value.clone());
        }
        let start = Instant::now();
        black_box(self.engine.write(&batch).unwrap());
        self.write_time += start.elapsed();
        self.writes += 1;
    }

    fn snapshot(&self, read_ts: u64) -> HybridSnapshot<RocksDisk> {
        let request = ReadRequest {
            epoch_version: EPOCH.version,
            applied_index: self.index,
            read_ts,
        };
        self.engine.snapshot(REGION, request)
    }
}

/// The live rows at the latest timestamp, and the MVCC work of reading them.
fn scan(side: &Side, clock: &Clock) -> (usize, MvccWork, bool) {
    let snapshot = side.snapshot(clock.next());
    let rows = snapshot
        .mvcc_scan(TABLE, Some(TABLE_END), usize::MAX)
        .unwrap();
    (rows.len(), snapshot.mvcc_work(), snapshot.from_memory())
}

/// The workload's writes at logical millisecond `ms` (a multiple of [`JOB_EVERY_MS`]).
fn tick(ms: u64, clock: &Clock) -> Vec<(Vec<u8>, Vec<u8>)> {
    clock.set_ms(ms);
    let mut ops = Vec::new();
    let mut txn = |id: u64, record: &dyn Fn(u64) -> Vec<u8>| {
        let start_ts = clock.next();
        let commit_ts = clock.next();
        ops.push((write_key(&job_key(id), commit_ts), record(start_ts)));
    };
    txn(ms / JOB_EVERY_MS, &|start| put_record(start, b"pending"));
    if let Some(at) = ms.checked_sub(UPDATE_AFTER_MS) {
        txn(at / JOB_EVERY_MS, &|start| put_record(start, b"running"));
    }
    if let Some(at) = ms.checked_sub(DELETE_AFTER_MS) {
        let delete = |start| {
            WriteRecord::new(WriteType::Delete, start, None)
                .encode()
                .unwrap()
        };
        txn(at / JOB_EVERY_MS, &delete);
    }
    ops
}

/// Both sides after `versions` versions of history, with the cached side's memory
/// sampled along the way (`(versions written, bytes)`).
struct Run {
    clock: Arc<Clock>,
    hybrid: Side,
    disk: Side,
    memory: Vec<(u64, u64)>,
}

fn run(versions: u64) -> Run {
    let clock = Arc::new(Clock::default());
    let mut hybrid = Side::new(true, &clock);
    let mut disk = Side::new(false, &clock);
    let ticks = versions / VERSIONS_PER_JOB;
    let gc_every = 1000 / JOB_EVERY_MS; // one logical second: the GC interval
    let (mut written, mut memory) = (0u64, Vec::new());
    for t in 0..ticks {
        let ops = tick(t * JOB_EVERY_MS, &clock);
        written += ops.len() as u64;
        // Alternate which side writes first, so that neither always meets a warm cache.
        if t % 2 == 0 {
            hybrid.write(&ops);
            disk.write(&ops);
        } else {
            disk.write(&ops);
            hybrid.write(&ops);
        }
        if t % gc_every == gc_every - 1 {
            hybrid.engine.run_gc();
        }
        if t % (ticks / 200).max(1) == 0 {
            memory.push((written, hybrid.engine.memory_used()));
        }
    }
    hybrid.engine.run_gc();
    assert!(hybrid.engine.wait_idle(Duration::from_secs(600)));
    memory.push((written, hybrid.engine.memory_used()));
    Run {
        clock,
        hybrid,
        disk,
        memory,
    }
}

/// The largest history to run (`IME_HEADLINE_MAX_VERSIONS`, all three by default): a
/// quick look at the smaller scales.
fn max_versions() -> u64 {
    std::env::var("IME_HEADLINE_MAX_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

fn headline(c: &mut Criterion) {
    let mut charts = Vec::new();
    for (label, versions) in SCALES.into_iter().filter(|s| s.1 <= max_versions()) {
        let run = run(versions);
        let (hybrid_rows, hybrid_work, from_memory) = scan(&run.hybrid, &run.clock);
        let (disk_rows, disk_work, disk_from_memory) = scan(&run.disk, &run.clock);
        assert!(
            from_memory && !disk_from_memory,
            "the sides are what they say"
        );
        assert_eq!(hybrid_rows, disk_rows, "both sides return the same rows");
        assert!(hybrid_rows > 0, "live rows at steady state");
        let per_row = |w: MvccWork| w.scanned as f64 / w.returned.max(1) as f64;
        let group = format!("headline_versions_{label}");
        record_value(
            &format!("{group}/hybrid"),
            per_row(hybrid_work),
            "versions/row",
        )
        .unwrap();
        record_value(
            &format!("{group}/disk_only"),
            per_row(disk_work),
            "versions/row",
        )
        .unwrap();
        let group = format!("headline_write_{label}");
        let mean = |s: &Side| s.write_time.as_nanos() as f64 / s.writes.max(1) as f64;
        record_value(&format!("{group}/hybrid"), mean(&run.hybrid), "ns").unwrap();
        record_value(&format!("{group}/disk_only"), mean(&run.disk), "ns").unwrap();
        println!(
            "headline {label}: {hybrid_rows} live rows; versions touched per row: hybrid {:.1}, \
             disk {:.1}; writes per batch: hybrid {:.1} us, disk {:.1} us; memory at the end {} B",
            per_row(hybrid_work),
            per_row(disk_work),
            mean(&run.hybrid) / 1e3,
            mean(&run.disk) / 1e3,
            run.hybrid.engine.memory_used(),
        );
        let mut group = c.benchmark_group(format!("headline/scan_{label}"));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(200));
        for (name, side) in [("hybrid", &run.hybrid), ("disk_only", &run.disk)] {
            group.bench_function(name, |b| b.iter(|| black_box(scan(side, &run.clock))));
        }
        group.finish();
        charts.push((label, run.memory));
    }
    let svg = memory_chart(&charts, &config());
    std::fs::write(
        ime_benches::criterion_dir().join("headline-memory.svg"),
        svg,
    )
    .unwrap();
}

/// The cached engine's memory over the history written, one line per scale (as a share
/// of that scale's history, so that the three runs share an axis), under the capacity,
/// evict and stop-load thresholds; bytes on a log scale from 1 KiB, so that both the
/// cache's few dozen KiB and thresholds of tens of MiB show.
fn memory_chart(runs: &[(&str, Vec<(u64, u64)>)], config: &Config) -> String {
    let (width, height, left, bottom, top) = (720.0, 360.0, 70.0, 40.0, 20.0);
    let t = config.thresholds();
    let (low, high) = (10.0, (t.capacity as f64).log2().ceil()); // 1 KiB .. capacity
    let x = |share: f64| left + share * (width - left - 20.0);
    let y = |bytes: f64| {
        let at = (bytes.max(1.0).log2().clamp(low, high) - low) / (high - low);
        height - bottom - at * (height - bottom - top)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n"
    );
    for (label, bytes) in [
        ("1 KiB", 1u64 << 10),
        ("32 KiB", 32 << 10),
        ("1 MiB", 1 << 20),
    ] {
        let at = y(bytes as f64);
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{at:.1}\" x2=\"{}\" y2=\"{at:.1}\" stroke=\"#eee\"/>\
             <text x=\"4\" y=\"{:.1}\">{label}</text>",
            x(0.0),
            x(1.0),
            at + 4.0
        );
    }
    for (name, bytes, color) in [
        ("capacity", t.capacity, "#999"),
        ("evict threshold", t.evict_threshold, "#d33"),
        ("stop-load threshold", t.stop_load_threshold, "#e90"),
    ] {
        let at = y(bytes as f64);
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{at:.1}\" x2=\"{}\" y2=\"{at:.1}\" stroke=\"{color}\" \
             stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" fill=\"{color}\">{name} \
             ({} MiB)</text>",
            x(0.0),
            x(1.0),
            x(0.0) + 6.0 + 180.0 * f64::from(u8::from(name.starts_with('s'))),
            at - 4.0,
            bytes >> 20
        );
    }
    let colors = ["#27c", "#2a6", "#84c"];
    for (i, (label, samples)) in runs.iter().enumerate() {
        let total = samples.last().map_or(1, |s| s.0).max(1) as f64;
        let points: Vec<String> = samples
            .iter()
            .map(|(w, b)| format!("{:.1},{:.1}", x(*w as f64 / total), y(*b as f64)))
            .collect();
        let color = colors.get(i).copied().unwrap_or("#000");
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{label} versions of history: peak {} \
             KiB</text>",
            points.join(" "),
            width - 300.0,
            150.0 + 16.0 * i as f64,
            peak >> 10
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\
         <line x1=\"{l}\" y1=\"{top}\" x2=\"{l}\" y2=\"{b}\" stroke=\"black\"/>\
         <text x=\"{l}\" y=\"{t}\">0</text><text x=\"{mid}\" y=\"{t}\">history written \
         (share of each run); memory of the cached engine, log scale</text>\
         <text x=\"{r2}\" y=\"{t}\">100%</text>\n</svg>",
        l = x(0.0),
        r = x(1.0),
        r2 = x(1.0) - 30.0,
        b = height - bottom,
        t = height - bottom + 18.0,
        mid = width / 2.0 - 170.0,
    );
    svg
}

criterion_group! {
    name = benches;
    config = ime_benches::criterion();
    targets = headline
}
criterion_main!(benches);
