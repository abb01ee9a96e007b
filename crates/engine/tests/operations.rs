//! Running the engine: configuration changes at run time, the background ticks, metrics,
//! the region listing, and shutdown.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Peer, region, test_config};
use ime_disk::Cf;
use ime_disk::MemDisk;
use ime_engine::{
    ByteSize, Config, Engine, EngineError, LoadStage, ReadOp, TIMED_ONE_IN, TaskKind,
};
use ime_memkv::codec::{LockEntry, LockRecord, LockType, encode_bytes};
use ime_region::{EvictReason, ReadRequest, RegionId, RegionState};

fn loaded(regions: u64) -> Peer<MemDisk> {
    let mut peer = Peer::in_memory();
    for id in 1..=regions {
        let (start, end) = (format!("r{id}"), format!("r{}", id + 1));
        peer.add(region(id, &start, Some(&end), 1));
        for i in 0..50 {
            peer.commit(
                id,
                &[(
                    &format!("{start}/{i:03}"),
                    Some("a value of forty bytes, give or take...."),
                )],
            );
        }
        peer.load(id);
    }
    peer
}

/// Commits round `round` of a steady writer of region 1: eight new keys, in one entry.
fn commit_round(peer: &mut Peer<MemDisk>, round: u64) {
    let keys: Vec<String> = (0..8).map(|i| format!("r1/w{round:06}/{i}")).collect();
    let items: Vec<(&str, Option<&str>)> = keys.iter().map(|k| (k.as_str(), Some("v"))).collect();
    peer.commit(1, &items);
}

/// Polls `done` until it holds or `limit` passes (a liveness check, not a timing one).
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[test]
fn lowering_capacity_at_run_time_evicts_down_to_it() {
    let mut peer = loaded(4);
    let used = peer.engine.memory_used();
    let mut config = peer.engine.config();
    config.capacity = ByteSize(used / 2);
    peer.engine.update_config(config).unwrap();
    peer.idle();
    assert!(
        peer.engine.memory_used() <= used / 2,
        "{} > {}",
        peer.engine.memory_used(),
        used / 2
    );
    assert!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::MemoryPressure)
            > 0
    );
    for id in 1..=4 {
        peer.check(id);
    }
    // An invalid update is refused whole, naming the key.
    let mut bad = peer.engine.config();
    bad.capacity = ByteSize(0);
    let err = peer.engine.update_config(bad).unwrap_err();
    assert!(
        matches!(err, EngineError::Config(_)) && err.to_string().contains("capacity"),
        "{err}"
    );
    assert_eq!(peer.engine.config().capacity, ByteSize(used / 2));
}

#[test]
fn disabling_at_run_time_evicts_everything_even_under_reads() {
    let peer = loaded(3);
    let stop = AtomicBool::new(false);
    let r = peer.region(2);
    let index = peer.applied(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut ts = 10_000;
            while !stop.load(Ordering::SeqCst) {
                ts += 1;
                let snapshot = peer.engine.snapshot(
                    r.id,
                    ReadRequest {
                        epoch_version: r.epoch.version,
                        applied_index: index,
                        read_ts: ts,
                    },
                );
                common::assert_reads_match(&snapshot, &r);
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        let mut config = peer.engine.config();
        config.enable = false;
        peer.engine.update_config(config).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::SeqCst);
    });
    peer.idle();
    assert!(
        peer.engine.regions().is_empty(),
        "{}",
        peer.engine.regions_json()
    );
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::Disabled),
        3
    );
    let snapshot = peer.engine.snapshot(
        r.id,
        ReadRequest {
            epoch_version: r.epoch.version,
            applied_index: index,
            read_ts: 20_000,
        },
    );
    assert_eq!(snapshot.fallback(), Some(ime_engine::Fallback::Disabled));
    assert!(matches!(
        peer.engine.load_region(r, index),
        Err(EngineError::LoadRefused { .. })
    ));
}

#[test]
fn the_ticker_runs_gc_and_the_cross_checker_at_their_intervals() {
    let config = Config::from_toml(
        r#"
        gc-run-interval = "50ms"
        load-evict-interval = "50ms"
        cross-check-interval = "50ms"
        "#,
    )
    .unwrap();
    let mut peer = Peer::new(Engine::new(MemDisk::new(), config).unwrap());
    peer.add(region(1, "a", Some("z"), 1));
    for _ in 0..3 {
        peer.commit(1, &[("k", Some("v"))]);
    }
    peer.load(1);
    let ts = peer.next_ts();
    peer.engine.set_safe_point(ts);
    let safe_point = || peer.engine.regions().first().map_or(0, |r| r.safe_point);
    assert!(
        eventually(Duration::from_secs(10), || safe_point() == ts),
        "GC never ran"
    );
    assert!(peer.check(1));
    assert_eq!(peer.engine.stats().differences, 0);
}

#[test]
fn metrics_and_the_region_listing_describe_the_cache() {
    let mut peer = loaded(2);
    assert!(peer.check(1));
    peer.engine
        .evict_region(RegionId(2), ime_region::EvictReason::Manual, None);
    peer.idle();
    let text = peer.engine.metrics_text();
    for line in [
        "ime_regions{state=\"Active\"} 1",
        "ime_evictions_total{reason=\"Manual\"} 1",
        "ime_snapshots_total{source=\"memory\"} 1",
        "ime_loads_total{result=\"ok\"} 2",
        "# TYPE ime_eviction_duration_seconds histogram",
        "# TYPE ime_memory_bytes gauge",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let listing: serde_json::Value = serde_json::from_str(&peer.engine.regions_json()).unwrap();
    let regions = listing.as_array().unwrap();
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0]["state"], "Active");
    assert_eq!(regions[0]["region"]["id"], 1);
    assert_eq!(peer.state(1), Some(RegionState::Active));
}

#[test]
fn entries_without_data_have_a_report_of_their_own_and_a_missed_one_is_counted() {
    let mut peer = loaded(1);
    // Admin commands and empty entries move the applied index without a write.
    for _ in 0..3 {
        assert_eq!(peer.empty_entry(1), ime_engine::WriteOutcome::default());
    }
    peer.commit(1, &[("r1/000", Some("after three empty entries"))]);
    assert!(peer.check(1), "still cached: every index was reported");
    assert_eq!(peer.engine.stats().gaps.index, 0);
    // One entry applied and never reported: the next report shows the gap.
    peer.skip_entry(1);
    let outcome = peer.empty_entry(1);
    assert_eq!(
        outcome.evicted,
        [(RegionId(1), ime_region::EvictReason::IndexGap)]
    );
    assert_eq!(peer.engine.stats().gaps.index, 1);
    let text = peer.engine.metrics_text();
    assert!(
        text.contains("ime_gaps_total{kind=\"IndexGap\"} 1"),
        "{text}"
    );
    assert!(!peer.check(1), "evicted: read from disk, and equal to it");
}

#[test]
fn the_metrics_mount_in_an_outside_registry_and_their_gauges_keep_current() {
    let peer = loaded(2);
    let registry = prometheus::Registry::new();
    registry.register(Box::new(peer.engine.metrics())).unwrap();
    let gauge = |name: &str, label: Option<&str>| -> Option<i64> {
        let families = registry.gather();
        let family = families.iter().find(|f| f.name() == name)?;
        let metric = family
            .get_metric()
            .iter()
            .find(|m| label.is_none_or(|want| m.get_label().iter().any(|l| l.value() == want)))?;
        Some(metric.get_gauge().get_value() as i64)
    };
    // Nobody asks for the text: the ticker keeps the gauges current on its own.
    assert!(
        eventually(Duration::from_secs(10), || {
            gauge("ime_regions", Some("Active")) == Some(2)
                && gauge("ime_memory_bytes", None).is_some_and(|b| b > 0)
        }),
        "gauges never refreshed"
    );
    // Counters are there too, the same as the engine's own text shows.
    let families = registry.gather();
    assert!(families.iter().any(|f| f.name() == "ime_loads_total"));
}

#[test]
fn operators_see_latencies_by_source_wasted_snapshots_bytes_and_safe_points() {
    let mut peer = loaded(2);
    peer.engine.set_safe_point(25);
    peer.engine.run_gc();
    peer.idle();
    // Region 1 from memory, region 2 from disk; a get and a scan of each.
    peer.engine
        .evict_region(RegionId(2), ime_region::EvictReason::Manual, None);
    peer.idle();
    assert!(peer.check(1) && !peer.check(2));
    // One read in `TIMED_ONE_IN` of each kind is timed, at random: reads again until
    // each kind from each source has one in the sample (a few dozen rounds, mostly; all
    // 1,024 miss one kind with a chance of about 10^-28).
    let metrics = peer.engine.metrics();
    let latencies = metrics.0.latencies();
    let sources = [true, false];
    let all_timed =
        || (ReadOp::ALL.iter()).all(|&op| sources.iter().all(|&m| latencies.count(op, m) > 0));
    for _ in 0..64 * TIMED_ONE_IN {
        if all_timed() {
            break;
        }
        assert!(peer.check(1) && !peer.check(2));
    }
    // A snapshot from memory that nobody reads is wasted; one that is read is not.
    drop(peer.snapshot(1));
    let stats = peer.engine.stats();
    assert_eq!(stats.wasted_snapshots, 1);
    for (op, memory) in [
        (ReadOp::Snapshot, true),
        (ReadOp::Scan, true),
        (ReadOp::Get, true),
    ]
    .into_iter()
    .chain([
        (ReadOp::Snapshot, false),
        (ReadOp::Scan, false),
        (ReadOp::Get, false),
    ]) {
        assert!(
            latencies.count(op, memory) > 0,
            "{op:?} from memory: {memory}"
        );
    }
    assert!(stats.bytes_loaded > 0);
    assert!(stats.bytes_freed > 0, "region 2's memory was freed");
    let text = peer.engine.metrics_text();
    for line in [
        "ime_read_duration_seconds_bucket{op=\"get\",source=\"memory\",le=",
        "ime_read_duration_seconds_count{op=\"scan\",source=\"disk\"}",
        "ime_wasted_snapshots_total 1",
        "ime_memory_bytes_total{what=\"loaded\"}",
        "ime_memory_bytes_total{what=\"freed\"}",
        "ime_safe_point{which=\"oldest\"} 25",
        "ime_safe_point{which=\"newest\"} 25",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn close_joins_the_threads_and_keeps_callbacks() {
    let peer = loaded(1);
    let open = peer.engine.snapshot(
        RegionId(1),
        ReadRequest {
            epoch_version: 1,
            applied_index: peer.applied(1),
            read_ts: 10_000,
        },
    );
    peer.engine
        .evict_region(RegionId(1), ime_region::EvictReason::Manual, None);
    let Peer { engine, .. } = peer;
    drop(open);
    engine.close();
    // A config that names an unknown key is refused before any thread starts.
    let refused = Config::from_toml("capacity = \"1GiB\"\nwhat = 1");
    assert!(refused.is_err());
    let engine = Engine::new(MemDisk::new(), test_config()).unwrap();
    drop(engine);
}

/// With manual background work, a compaction comes in pieces, each a task of its own
/// (`TaskKind::Compact`), the next queued behind the one before, so that a scheduler puts
/// other work between them: writes land between the pieces (in new memtables, while the
/// frozen ones are folded), every read between any two pieces equals the disk from
/// memory, and the last piece installs the runs.
#[test]
fn a_compaction_comes_in_pieces_that_writes_can_come_between() {
    let policy = Box::new(ime_engine::eviction::default_policy());
    let background = ime_engine::Background::Manual;
    let engine = Engine::with_background(MemDisk::new(), test_config(), policy, background);
    let mut peer = Peer::new(engine.unwrap());
    peer.add(region(1, "r1", Some("r2"), 1));
    peer.load(1);
    let compact_at = |peer: &Peer<MemDisk>| {
        (peer.engine.pending_kinds().iter()).position(|kind| *kind == TaskKind::Compact)
    };
    // Everything else runs at once; the first compaction waits, queued.
    let mut round = 0u64;
    while compact_at(&peer).is_none() {
        commit_round(&mut peer, round);
        round += 1;
        assert!(round < 10_000, "no compaction was ever queued");
    }
    let mut pieces = 0;
    while let Some(at) = compact_at(&peer) {
        peer.engine.run_pending(at);
        pieces += 1;
        peer.commit(1, &[(&format!("r1/between/{pieces:04}"), Some("x"))]);
        assert!(peer.check(1), "served from memory, equal to the disk");
        // Other work (a write's deferred memory side) runs as it comes.
        while let Some(other) =
            (peer.engine.pending_kinds().iter()).position(|kind| *kind != TaskKind::Compact)
        {
            peer.engine.run_pending(other);
        }
    }
    // Over 4,096 entries in pieces of 32 (one step at least for each column family).
    assert!(pieces >= 10, "{pieces} pieces");
    let stats = peer.engine.stats();
    assert_eq!((stats.compactions.ok, stats.compactions.failed), (1, 0));
    assert!(peer.check(1));
    assert!(peer.engine.cross_check().is_empty());
}

/// `memtable-compaction-entries` sets when memtables are compacted, at start and at run
/// time: at 64, eight writes of eight entries bring one on; raised to the most, sixty
/// more bring none.
#[test]
fn the_compaction_threshold_is_the_configured_one() {
    let mut config = test_config();
    config.memtable_compaction_entries = 64;
    let policy = Box::new(ime_engine::eviction::default_policy());
    let background = ime_engine::Background::Manual;
    let engine = Engine::with_background(MemDisk::new(), config.clone(), policy, background);
    let mut peer = Peer::new(engine.unwrap());
    peer.add(region(1, "r1", Some("r2"), 1));
    peer.load(1);
    let write = |peer: &mut Peer<MemDisk>, rounds: std::ops::Range<u64>| {
        for round in rounds {
            commit_round(peer, round);
        }
        peer.idle();
        peer.engine.stats().compactions.ok
    };
    assert_eq!(write(&mut peer, 0..7), 0, "56 entries: below the threshold");
    assert_eq!(write(&mut peer, 7..8), 1, "64 entries");
    config.memtable_compaction_entries = 1 << 24;
    peer.engine.update_config(config).unwrap();
    assert_eq!(
        write(&mut peer, 8..68),
        1,
        "480 entries more: far below it now"
    );
    assert!(peer.check(1));
}

/// A cached region written to steadily: once its memtables hold more than the threshold
/// (`ime_memkv::MEMTABLE_COMPACTION_MIN` entries, and half of its runs), the deleter
/// folds them into the runs — off the write path, without GC — so they never grow without
/// bound; every read stays equal to disk, before and after, from memory.
#[test]
fn grown_memtables_are_compacted_in_the_background() {
    let mut peer = loaded(1);
    let writes = ime_memkv::MEMTABLE_COMPACTION_MIN as u64 / 8 + 50;
    for round in 0..writes {
        commit_round(&mut peer, round);
    }
    peer.idle();
    assert!(
        peer.engine.stats().compactions.ok >= 1,
        "{}",
        peer.engine.metrics_text()
    );
    assert_eq!(peer.engine.stats().compactions.failed, 0);
    assert!(peer.check(1), "still served from memory, and equal to disk");
    peer.commit(1, &[("r1/after", Some("x")), ("r1/000", None)]);
    assert!(peer.check(1));
    assert!(peer.engine.cross_check().is_empty());
}

/// With threads, the deleter's compactions run beside the writes and their deferred
/// memory sides: a region written until its compactions merge tens of thousands of
/// entries (32,000 keys) still reads equal to the disk from memory, checked while the
/// writes go on, and no compaction fails.
#[test]
fn large_compactions_with_threads_keep_reads_equal_beside_writes() {
    let mut peer = loaded(1);
    for round in 0..4_000 {
        commit_round(&mut peer, round);
        if round % 500 == 499 {
            assert!(
                peer.check(1),
                "round {round}: served from memory, equal to disk"
            );
        }
    }
    peer.idle();
    let stats = peer.engine.stats();
    assert!(stats.compactions.ok >= 3, "{}", peer.engine.metrics_text());
    assert_eq!(stats.compactions.failed, 0);
    assert!(peer.check(1), "served from memory, equal to the disk");
    assert_eq!(peer.scan(1).len(), 50 + 32_000);
    assert!(peer.engine.cross_check().is_empty());
}

/// A disk whose writes fail while `failing` is set (everything else is `MemDisk`'s).
struct FailingDisk {
    inner: MemDisk,
    failing: std::sync::Arc<AtomicBool>,
}

impl ime_disk::DiskEngine for FailingDisk {
    type Snapshot = <MemDisk as ime_disk::DiskEngine>::Snapshot;

    fn write(
        &self,
        batch: &ime_disk::WriteBatch,
    ) -> Result<ime_disk::SeqRange, ime_disk::DiskError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(ime_disk::DiskError::Rocks {
                operation: "write",
                detail: "the disk is full".into(),
            });
        }
        self.inner.write(batch)
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.inner.snapshot()
    }

    fn latest_sequence(&self) -> u64 {
        self.inner.latest_sequence()
    }

    fn ingest(
        &self,
        cf: ime_disk::Cf,
        entries: &[ime_disk::Entry],
    ) -> Result<(), ime_disk::DiskError> {
        self.inner.ingest(cf, entries)
    }

    fn name(&self) -> &'static str {
        "failing"
    }
}

/// A disk failure on the write path: the error comes back, and the regions the batch
/// touched (already written in memory) are evicted with `WriteFailed` — their memory
/// would be ahead of the disk — while the others keep serving.
#[test]
fn a_disk_failure_on_the_write_path_evicts_with_a_reason_of_its_own() {
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let disk = FailingDisk {
        inner: MemDisk::new(),
        failing: std::sync::Arc::clone(&failing),
    };
    let mut peer = Peer::new(Engine::new(disk, test_config()).unwrap());
    peer.add(region(1, "a", Some("m"), 1));
    peer.add(region(2, "m", Some("z"), 1));
    peer.commit(1, &[("b", Some("1"))]);
    peer.commit(2, &[("n", Some("2"))]);
    peer.load(1);
    peer.load(2);
    failing.store(true, Ordering::SeqCst);
    let r1 = peer.region(1);
    let mut batch = ime_engine::HybridWriteBatch::new();
    batch
        .prepare(ime_engine::ApplyHeader {
            region: r1.id,
            epoch: r1.epoch,
            first_index: peer.applied(1) + 1,
            last_index: peer.applied(1) + 1,
        })
        .put(ime_disk::Cf::Lock, "c", "a lock");
    let err = peer.engine.write(&batch).unwrap_err();
    assert!(matches!(err, EngineError::Disk(_)), "{err}");
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::WriteFailed),
        1
    );
    assert_eq!(
        peer.engine.stats().evicted(ime_region::EvictReason::Manual),
        0
    );
    failing.store(false, Ordering::SeqCst);
    assert!(!peer.check(1), "evicted: served from disk, and equal to it");
    assert!(peer.check(2), "the other region keeps serving from memory");
}

/// Region 1 with a lock on `r1/k` on disk, its load held with every column family copied
/// and nothing installed yet.
fn loading_with_a_lock() -> Peer<MemDisk> {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "r1", Some("r2"), 1));
    let lock = LockRecord::new(LockType::Put, b"r1/k".to_vec(), 30, 3000);
    peer.put_locks(1, &[("r1/k", LockEntry::Single(lock))]);
    peer.engine.hold_loads(LoadStage::Copied);
    let (r, index) = (peer.region(1), peer.applied(1));
    peer.engine.load_region(r, index).unwrap();
    while peer.engine.loads_held() == 0 {
        std::thread::yield_now();
    }
    peer
}

/// A lock released while its region loads (the deletion lands in the Loading region's
/// memtable, above the load's sequence), and that memtable compacted before the load's
/// runs are installed: the loaded copy of the lock stays hidden under the deletion.
/// Memory never shows a lock the disk no longer has.
#[test]
fn a_lock_released_during_a_load_stays_released() {
    let mut peer = loading_with_a_lock();
    // The lock goes (the transaction committed or rolled back), then enough writes for a
    // memtable compaction.
    peer.write_entry(1, |b| {
        b.delete(Cf::Lock, encode_bytes(b"r1/k"));
    });
    let rounds = ime_memkv::MEMTABLE_COMPACTION_MIN / 8 + 1;
    for round in 0..rounds {
        let items: Vec<String> = (0..8).map(|i| format!("r1/w{round:05}/{i}")).collect();
        let items: Vec<(&str, Option<&str>)> =
            items.iter().map(|k| (k.as_str(), Some("v"))).collect();
        peer.commit(1, &items);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer.engine.stats().compactions.ok == 0 {
        assert!(Instant::now() < deadline, "{}", peer.engine.metrics_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    peer.engine.release_loads();
    peer.idle();
    assert!(peer.check(1), "served from memory, and equal to disk");
    assert!(peer.engine.cross_check().is_empty());
}

/// A range delete in the write path while its region loads: memory deletes only the keys
/// it holds, and the lock the load is about to bring is not one of them — so the memory
/// store refuses the delete and the region is evicted (`WriteFailed`) rather than serve
/// the lock again. It loads again afterwards.
#[test]
fn a_range_delete_during_a_load_evicts_the_region() {
    let mut peer = loading_with_a_lock();
    let outcome = peer.write_entry(1, |b| {
        b.delete_range(Cf::Lock, encode_bytes(b"r1/"), encode_bytes(b"r1/z"));
    });
    assert_eq!(
        outcome.evicted,
        vec![(RegionId(1), EvictReason::WriteFailed)]
    );
    peer.engine.release_loads();
    peer.idle();
    assert!(!peer.check(1), "evicted: read from disk");
    peer.load(1);
    assert!(peer.check(1), "loaded again: from memory, without the lock");
}

/// The value of an unlabelled gauge in `text` (Prometheus exposition).
fn gauge(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(&format!("{name} ")));
    line.and_then(|l| l.split(' ').nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// An evicted region's large runs leave their arrays as spare memory: the tick's gauge
/// shows it beside the memory used (which does not count it); loading the region again
/// fills them and reads as the disk does; arrays nobody takes are freed by the tenth tick.
#[test]
fn an_evicted_region_leaves_its_arrays_to_its_reload_and_ticks_free_the_rest() {
    let policy = Box::new(ime_engine::eviction::default_policy());
    let background = ime_engine::Background::Manual;
    let engine = Engine::with_background(MemDisk::new(), test_config(), policy, background);
    let mut peer = Peer::new(engine.unwrap());
    peer.add(region(1, "a", Some("z"), 1));
    let keys: Vec<String> = (0..10_000).map(|i| format!("k{i:05}")).collect();
    let value = "v".repeat(100);
    let items: Vec<(&str, Option<&str>)> =
        keys.iter().map(|k| (k.as_str(), Some(&*value))).collect();
    peer.commit(1, &items);
    let spare = |peer: &Peer<MemDisk>| {
        peer.engine.tick(); // the gauges
        gauge(&peer.engine.metrics_text(), "ime_memory_spare_bytes")
    };
    let evict = |peer: &Peer<MemDisk>| {
        peer.engine
            .evict_region(RegionId(1), EvictReason::Manual, None);
        peer.idle();
        assert_eq!(peer.engine.memory_used(), 0);
    };
    peer.load(1);
    let loaded = peer.engine.memory_used();
    evict(&peer);
    assert!(spare(&peer) > loaded / 2, "{} of {loaded}", spare(&peer));
    peer.load(1);
    assert_eq!(spare(&peer), 0, "the reload took them");
    assert_eq!(peer.engine.memory_used(), loaded);
    assert!(peer.check(1), "served from memory, equal to the disk");
    assert!(peer.engine.cross_check().is_empty());
    evict(&peer);
    let left = spare(&peer); // one tick
    assert!(left > 0);
    let ticks: Vec<u64> = (2..=10).map(|_| spare(&peer)).collect();
    assert_eq!(ticks, [vec![left; 8], vec![0]].concat());
}
