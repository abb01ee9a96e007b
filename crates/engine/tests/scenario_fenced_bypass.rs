//! Scenario 13: a load requested inside a change that bypasses the write path.
//!
//! For every kind of such change — a Raft snapshot over a cached region and a peer's first
//! snapshot, an SST ingest, a DeleteRange command, an UnsafeDestroyRange, a merge source's
//! catch-up, a flashback — a load of the range is requested by each source there is (by
//! hand, by a policy round, by a leader-transfer warm-up, by a pin) at each point of the
//! change: right after its event, between its two disk writes, and after the last write
//! before the fence is finished. The engine's background work runs at once at that point
//! (a manual engine: the test is the scheduler). No read, at the old or the new index, is
//! ever served data the disk no longer has; and once the fence is finished the load that
//! waited runs.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use common::{Peer, assert_reads_match, region, test_config};
use ime_disk::{Cf, MemDisk, WriteBatch};
use ime_engine::{ApplyHeader, Background, BypassFence, Engine, HybridWriteBatch};
use ime_memkv::codec::{MvccKey, WriteRecord, WriteType, encode_bytes};
use ime_observer::{PeerRole, RaftEvent};
use ime_region::{KeyRange, ReadRequest, Region, RegionEpoch, RegionId, RegionState};

/// Who asks for the load.
#[derive(Clone, Copy, Debug)]
enum Source {
    Direct,
    Policy,
    Warmup,
    Pin,
}

/// Where in the change it asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    AfterEvent,
    BetweenWrites,
    BeforeFinish,
}

/// The change that bypasses the write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Snapshot,
    FirstSnapshot,
    Ingest,
    DeleteRange,
    UnsafeDestroy,
    MergeCatchUp,
    Flashback,
}

const TERM: u64 = 7;

/// A put of `value` for user key `key` committed at `ts`, as one write-CF entry.
fn put(key: &str, value: &str, ts: u64) -> (Vec<u8>, Vec<u8>) {
    let write_key = MvccKey {
        user_key: key.as_bytes().to_vec(),
        ts,
    }
    .encode();
    let record = WriteRecord::new(WriteType::Put, ts - 1, Some(value.as_bytes().to_vec()));
    (write_key, record.encode().unwrap())
}

fn user_range(start: &str, end: &str) -> KeyRange {
    KeyRange::new(encode_bytes(start.as_bytes()), encode_bytes(end.as_bytes())).unwrap()
}

fn delete_all(range: &KeyRange) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for cf in Cf::ALL {
        batch.delete_range(
            cf,
            range.start().to_vec(),
            range.end().unwrap_or(&[0xff; 8]).to_vec(),
        );
    }
    batch
}

fn puts(items: &[(&str, &str)], ts: u64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for (k, v) in items {
        let (key, value) = put(k, v, ts);
        batch.put(Cf::Write, key, value);
    }
    batch
}

/// One run: the peer, the event, the region as it is after, and the two disk writes.
struct Case {
    peer: Peer<MemDisk>,
    event: RaftEvent,
    after: Region,
    after_index: u64,
    writes: [WriteBatch; 2],
}

/// Region 1 `[a, z)` at version 5 with two committed keys, led here; cached unless the
/// change is a peer's first snapshot (an uninitialized peer caches nothing).
fn case(change: Change) -> Case {
    let engine = Engine::with_background(
        MemDisk::new(),
        test_config(),
        // A policy that loads any led region read since its last round, so that the
        // policy's request inside the change is certain (the default one waits rounds).
        Box::new(ime_engine::eviction::LruPolicy::new(0)),
        Background::Manual,
    )
    .unwrap();
    let mut peer = Peer::new(engine);
    let target_end = if change == Change::MergeCatchUp {
        "m"
    } else {
        "z"
    };
    let r1 = region(1, "a", Some(target_end), 5);
    peer.add(r1.clone());
    peer.commit(1, &[("b", Some("old b")), ("d", Some("old d"))]);
    if change == Change::MergeCatchUp {
        // The source [m, z) is on disk from before this store's source peer fell behind.
        peer.add(region(2, "m", Some("z"), 5));
        peer.commit(2, &[("n", Some("old n")), ("p", Some("old p"))]);
    }
    let role = RaftEvent::RoleChange {
        region: r1.clone(),
        role: PeerRole::Leader,
        term: TERM,
    };
    peer.engine.on_event(&role).unwrap();
    if change != Change::FirstSnapshot {
        peer.load(1);
        assert_eq!(peer.state(1), Some(RegionState::Active));
        assert!(peer.check(1));
    }
    // Reads make the region hot for the policy.
    for _ in 0..20 {
        peer.check(1);
    }
    let index = peer.applied(1);
    let ts = peer.next_ts();
    let whole = r1.range.clone();
    let bumped = |r: &Region, v: u64| {
        Region::new(
            r.id,
            r.range.clone(),
            RegionEpoch::new(r.epoch.version + v, 1),
        )
    };
    let replace = [
        delete_all(&whole),
        puts(&[("c", "new c"), ("d", "new d")], ts),
    ];
    let (event, after, after_index, writes) = match change {
        Change::Snapshot | Change::FirstSnapshot => {
            let after = bumped(&r1, 0);
            let before = (change == Change::Snapshot).then(|| r1.clone());
            let event = RaftEvent::ApplySnapshot {
                before,
                after: after.clone(),
                applied_index: index + 40,
            };
            (event, after, index + 40, replace)
        }
        Change::Ingest => {
            let event = RaftEvent::IngestSst {
                region: r1.clone(),
                ranges: vec![user_range("c", "e")],
            };
            let writes = [
                puts(&[("c", "ingested c")], ts),
                puts(&[("d", "ingested d")], ts),
            ];
            (event, r1.clone(), index, writes)
        }
        Change::DeleteRange | Change::UnsafeDestroy => {
            let range = whole.clone();
            let event = if change == Change::DeleteRange {
                RaftEvent::DeleteRange {
                    region: r1.clone(),
                    range,
                }
            } else {
                RaftEvent::UnsafeDestroyRange { range }
            };
            let writes = [
                delete_all(&user_range("a", "c")),
                delete_all(&user_range("c", "z")),
            ];
            (event, r1.clone(), index, writes)
        }
        Change::MergeCatchUp => {
            let source = region(2, "m", Some("z"), 6);
            let after = region(1, "a", Some("z"), 7);
            let event = RaftEvent::CommitMerge {
                before: r1.clone(),
                after: after.clone(),
                source: source.clone(),
            };
            let writes = [
                delete_all(&source.range),
                puts(&[("n", "caught up n"), ("q", "caught up q")], ts),
            ];
            (event, after, index + 1, writes)
        }
        Change::Flashback => {
            let after = bumped(&r1, 1);
            let event = RaftEvent::PrepareFlashback {
                before: r1.clone(),
                after: after.clone(),
            };
            let writes = [
                puts(&[("b", "flashed b")], ts),
                puts(&[("d", "flashed d")], ts),
            ];
            (event, after, index + 1, writes)
        }
    };
    Case {
        peer,
        event,
        after,
        after_index,
        writes,
    }
}

/// Asks for a load of `region` the way `source` does.
fn request(peer: &Peer<MemDisk>, source: Source, region: &Region, index: u64) {
    match source {
        Source::Direct => {
            // A refusal (a flashback) is an answer too; what matters is what reads see.
            let _ = peer.engine.load_region(region.clone(), index);
        }
        Source::Policy => peer.engine.run_policy(),
        Source::Warmup => {
            let transfer = RaftEvent::TransferLeader {
                region: region.clone(),
                term: TERM + 1,
                cached: true,
            };
            peer.engine.on_event(&transfer).unwrap();
        }
        Source::Pin => peer.engine.pin_range(KeyRange::everything()),
    }
}

/// Reads as the peer before the change and as the peer after it: both equal the disk.
fn reads_match_disk(peer: &Peer<MemDisk>, views: &[(Region, u64)]) {
    for (region, index) in views {
        let snapshot = peer.engine.snapshot(
            RegionId(1),
            ReadRequest {
                epoch_version: region.epoch.version,
                applied_index: *index,
                read_ts: 1_000_000,
            },
        );
        assert_reads_match(&snapshot, region);
    }
}

fn run(change: Change, source: Source, point: Point) {
    let Case {
        mut peer,
        event,
        after,
        after_index,
        writes,
    } = case(change);
    let before = (peer.region(1), peer.applied(1));
    let old_index = before.1;
    let views = [before, (after.clone(), after_index)];
    let fence: BypassFence<MemDisk> = peer.engine.begin_bypass(&event).unwrap();
    assert_ne!(peer.state(1), Some(RegionState::Active), "the event evicts");
    if !matches!(event, RaftEvent::ApplySnapshot { .. }) && after_index > old_index {
        // The command's own entry, reported by the apply loop as every entry is.
        let mut report = HybridWriteBatch::new();
        report.prepare(ApplyHeader {
            region: after.id,
            epoch: after.epoch,
            first_index: after_index,
            last_index: after_index,
        });
        peer.engine.write(&report).unwrap();
    }
    let at = |p: Point, peer: &mut Peer<MemDisk>| {
        if p == point {
            request(peer, source, &after, after_index);
            peer.idle(); // every waiting task runs now
            assert_ne!(
                peer.state(1),
                Some(RegionState::Active),
                "{change:?} {source:?} {point:?}: a load finished inside the fence"
            );
        }
        reads_match_disk(peer, &views);
    };
    at(Point::AfterEvent, &mut peer);
    fence.write(&writes[0]).unwrap();
    at(Point::BetweenWrites, &mut peer);
    fence.write(&writes[1]).unwrap();
    at(Point::BeforeFinish, &mut peer);
    fence.finish();
    peer.idle();
    peer.set(after.clone(), after_index);
    reads_match_disk(&peer, &views);
    if change == Change::Flashback {
        // Loads were refused during the flashback; they are allowed after it.
        let finish = RaftEvent::FinishFlashback {
            before: after.clone(),
            after: after.clone(),
        };
        peer.engine.on_event(&finish).unwrap();
        peer.load(1);
    }
    assert_eq!(
        peer.state(1),
        Some(RegionState::Active),
        "{change:?} {source:?} {point:?}: the load that waited for the fence ran"
    );
    assert!(peer.check(1), "served from memory, and equal to the disk");
    assert!(peer.engine.cross_check().is_empty());
}

fn every_source_at_every_point(change: Change) {
    for source in [Source::Direct, Source::Policy, Source::Warmup, Source::Pin] {
        for point in [Point::AfterEvent, Point::BetweenWrites, Point::BeforeFinish] {
            run(change, source, point);
        }
    }
}

#[test]
fn scenario_13_apply_snapshot_over_a_cached_region() {
    every_source_at_every_point(Change::Snapshot);
}

#[test]
fn scenario_13_a_peers_first_snapshot() {
    every_source_at_every_point(Change::FirstSnapshot);
}

#[test]
fn scenario_13_sst_ingest() {
    every_source_at_every_point(Change::Ingest);
}

#[test]
fn scenario_13_delete_range_command() {
    every_source_at_every_point(Change::DeleteRange);
}

#[test]
fn scenario_13_unsafe_destroy_range() {
    every_source_at_every_point(Change::UnsafeDestroy);
}

#[test]
fn scenario_13_merge_catch_up() {
    every_source_at_every_point(Change::MergeCatchUp);
}

#[test]
fn scenario_13_flashback() {
    every_source_at_every_point(Change::Flashback);
}

/// The defect's own transcript: cached, ApplySnapshot at the same epoch to an index 40
/// ahead, `load_region` at that index before the snapshot's data is written. Before
/// fences, the loader copied the old data, the region went Active at the new index, and
/// the reader there was served the old data from memory.
#[test]
fn a_load_before_the_snapshot_data_reaches_the_disk_waits_for_it() {
    let Case {
        mut peer,
        event,
        after,
        after_index,
        writes,
    } = case(Change::Snapshot);
    let fence = peer.engine.begin_bypass(&event).unwrap();
    peer.engine.load_region(after.clone(), after_index).unwrap();
    peer.idle();
    assert_eq!(
        peer.state(1),
        Some(RegionState::Pending),
        "held by the fence"
    );
    for batch in &writes {
        fence.write(batch).unwrap();
    }
    fence.finish();
    peer.idle();
    peer.set(after, after_index);
    assert!(peer.check(1), "loaded after the data, served from memory");
    assert_eq!(peer.engine.stats().fences.finished, 1);
}

/// A fence dropped without `finish` keeps its ranges out of the cache: the load that
/// waited is dropped, not started, and the abandonment is counted.
#[test]
fn an_abandoned_fence_keeps_its_ranges_evicted() {
    let Case {
        mut peer,
        event,
        after,
        after_index,
        writes,
    } = case(Change::Snapshot);
    {
        let fence = peer.engine.begin_bypass(&event).unwrap();
        peer.engine.load_region(after.clone(), after_index).unwrap();
        fence.write(&writes[0]).unwrap();
        // An error path: the fence goes out of scope unfinished.
    }
    peer.idle();
    assert_eq!(peer.state(1), None);
    assert_eq!(peer.engine.stats().fences.abandoned, 1);
    peer.set(after, after_index);
    assert!(!peer.check(1));
    peer.load(1);
    assert!(peer.check(1), "a later load is not held back");
}

/// A write through a fence outside its ranges is refused, and nothing is written.
#[test]
fn a_fence_refuses_writes_outside_its_ranges() {
    let Case { peer, .. } = case(Change::Ingest);
    let fence = peer.engine.fence_ranges(vec![user_range("c", "e")]);
    let before = peer.engine.disk().latest_sequence();
    let outside = puts(&[("x", "far away")], 99);
    let err = fence.write(&outside).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    let wide = delete_all(&user_range("a", "z"));
    assert!(fence.write(&wide).is_err());
    let (key, value) = put("x", "far away", 99);
    assert!(fence.ingest(Cf::Write, &[(key, value)]).is_err());
    assert_eq!(peer.engine.disk().latest_sequence(), before);
    fence.finish();
}
