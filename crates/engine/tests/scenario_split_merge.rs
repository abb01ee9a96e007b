//! Scenarios 3 and 4 of `docs/scenarios.md`: a split while a load is queued (tikv/tikv#17403),
//! and merges — commit and rollback — with the hot result loaded again (tikv/tikv#18098,
//! #18134, #18008). Splits of Active regions keep their data in memory.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use common::{Peer, at_version, region};
use ime_engine::LoadStage;
use ime_observer::RaftEvent;
use ime_region::{RegionId, RegionState, SplitChild};

fn split_event(peer: &mut Peer<ime_disk::MemDisk>, id: u64, at: &str, new_id: u64) -> RaftEvent {
    let before = peer.region(id);
    let (start, end) = (
        before.range.start().to_vec(),
        before.range.end().map(<[u8]>::to_vec),
    );
    let decode =
        |k: &[u8]| String::from_utf8(ime_memkv::codec::decode_bytes(k).unwrap().0).unwrap();
    let start = decode(&start);
    let end = end.map(|e| decode(&e));
    let version = before.epoch.version + 1;
    let left = region(id, &start, Some(at), version);
    let right = region(new_id, at, end.as_deref(), version);
    let index = peer.applied(id) + 1;
    peer.set(left.clone(), index);
    peer.set(right.clone(), 5);
    RaftEvent::Split {
        before,
        children: vec![
            SplitChild {
                region: left,
                applied_index: index,
            },
            SplitChild {
                region: right,
                applied_index: 5,
            },
        ],
    }
}

/// Scenario 3 (tikv/tikv#17403): a Pending region with its load queued splits before the
/// load starts. Both children end Active — never stuck — and read correctly.
#[test]
fn scenario_03_split_while_the_load_is_queued() {
    let mut peer = Peer::in_memory();
    peer.add(region(7, "a", Some("z"), 3));
    peer.commit(7, &[("b", Some("1")), ("q", Some("2"))]);
    peer.engine.hold_loads(LoadStage::BeforeStart);
    let (r, index) = (peer.region(7), peer.applied(7));
    peer.engine.load_region(r, index).unwrap();
    assert_eq!(peer.state(7), Some(RegionState::Pending));
    let event = split_event(&mut peer, 7, "k", 8);
    peer.engine.on_event(&event).unwrap();
    assert_eq!(peer.state(7), Some(RegionState::Pending));
    assert_eq!(peer.state(8), Some(RegionState::Pending));
    peer.engine.release_loads();
    peer.idle();
    for id in [7, 8] {
        assert_eq!(peer.state(id), Some(RegionState::Active), "child {id}");
        assert!(peer.check(id));
    }
    peer.commit(8, &[("r", Some("3"))]);
    assert!(peer.check(8));
}

/// A split while the load runs — before it copies anything, or with every column family
/// copied and nothing installed yet — keeps the load: both children end Active, each with
/// its own keys from memory, never stuck in Loading and never Active without their data
/// (a run installed where no child reads it). Writes to a child between the split and the
/// install are kept too. A child evicted meanwhile ends evicted; its sibling keeps the load.
#[test]
fn split_while_loading_keeps_the_load() {
    for (stage, evict_one) in [
        (LoadStage::AfterStart, false),
        (LoadStage::Copied, false),
        (LoadStage::Copied, true),
    ] {
        let mut peer = Peer::in_memory();
        peer.add(region(7, "a", Some("z"), 3));
        peer.commit(
            7,
            &[("b", Some("1")), ("q", Some("a value longer than eight"))],
        );
        peer.engine.hold_loads(stage);
        let (r, index) = (peer.region(7), peer.applied(7));
        peer.engine.load_region(r, index).unwrap();
        while peer.engine.loads_held() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(peer.state(7), Some(RegionState::Loading));
        let event = split_event(&mut peer, 7, "k", 8);
        peer.engine.on_event(&event).unwrap();
        peer.commit(8, &[("r", Some("3"))]);
        if evict_one {
            let reason = ime_region::EvictReason::Manual;
            peer.engine
                .evict_region(ime_region::RegionId(8), reason, None);
        }
        peer.engine.release_loads();
        peer.idle();
        let want = |id| (!evict_one || id == 7).then_some(RegionState::Active);
        for id in [7, 8] {
            assert_eq!(peer.state(id), want(id), "{stage:?}: child {id}");
            assert_eq!(peer.check(id), want(id).is_some(), "{stage:?}: child {id}");
        }
        assert_eq!(peer.scan(8).len(), 2, "q and r");
        // The load's bytes are counted though its range is gone (the runs', not the range's).
        assert!(peer.engine.stats().bytes_loaded > 0, "{stage:?}");
        peer.commit(7, &[("c", Some("4"))]);
        assert!(peer.check(7));
        assert!(peer.engine.cross_check().is_empty());
    }
}

/// A split of an Active region keeps both children in memory, at once, with their data.
#[test]
fn split_of_an_active_region_keeps_the_data_in_memory() {
    let mut peer = Peer::in_memory();
    peer.add(region(7, "a", None, 3));
    peer.commit(
        7,
        &[
            ("b", Some("1")),
            ("k", Some("2")),
            ("q", Some("a value longer than eight")),
        ],
    );
    peer.load(7);
    let old = peer.snapshot(7);
    let event = split_event(&mut peer, 7, "k", 8);
    peer.engine.on_event(&event).unwrap();
    assert!(
        peer.check(7) && peer.check(8),
        "both children serve from memory"
    );
    peer.commit(7, &[("c", Some("3"))]);
    peer.commit(8, &[("k", None), ("z", Some("4"))]);
    assert!(peer.check(7) && peer.check(8));
    assert_eq!(peer.scan(8).len(), 2);
    // A snapshot of the parent still reads the parent's range.
    let parent = region(7, "a", None, 3);
    common::assert_reads_match(&old, &parent);
    peer.engine.run_gc();
    assert!(peer.engine.cross_check().is_empty());
}

fn merge_setup() -> Peer<ime_disk::MemDisk> {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("m"), 5));
    peer.add(region(2, "m", Some("z"), 5));
    peer.commit(1, &[("b", Some("1"))]);
    peer.commit(2, &[("n", Some("2"))]);
    peer.load(1);
    peer.load(2);
    assert!(peer.check(1) && peer.check(2));
    peer
}

/// Scenario 4 (tikv/tikv#18098, #18134): PrepareMerge on the source, CommitMerge on the
/// target. Both are evicted, and the merged region — hot — is loaded again; reads stay
/// correct throughout.
#[test]
fn scenario_04_merge_then_reload() {
    let mut peer = merge_setup();
    let source = peer.region(2);
    let source_after = at_version(&source, 6);
    peer.engine
        .on_event(&RaftEvent::PrepareMerge {
            before: source.clone(),
            after: source_after.clone(),
        })
        .unwrap();
    peer.set(source_after.clone(), peer.applied(2) + 1);
    assert!(!peer.check(2), "the source stops serving at PrepareMerge");
    assert!(peer.check(1));
    let target = peer.region(1);
    let merged = region(1, "a", Some("z"), 7);
    // The merged region's reload waits until the read below has seen the eviction: the
    // loader may otherwise be fast enough to serve it from memory already (correctly).
    peer.engine.hold_loads(LoadStage::BeforeStart);
    peer.engine
        .on_event(&RaftEvent::CommitMerge {
            before: target,
            after: merged.clone(),
            source: source_after,
        })
        .unwrap();
    // The CommitMerge entry's index is reported with the merged epoch, like any applied entry.
    peer.set(merged, peer.applied(1));
    peer.empty_entry(1);
    peer.regions.remove(&ime_region::RegionId(2));
    assert!(!peer.check(1), "the target stops serving at CommitMerge");
    peer.engine.release_loads();
    peer.idle();
    assert_eq!(
        peer.state(1),
        Some(RegionState::Active),
        "the hot merged region is loaded again"
    );
    assert!(peer.check(1));
    peer.commit(1, &[("o", Some("3")), ("b", None)]);
    assert!(peer.check(1));
    assert!(peer.engine.cross_check().is_empty());
}

/// Scenario 4, rolled back (tikv/tikv#18008): RollbackMerge evicts the source and loads it
/// again at its new version.
#[test]
fn scenario_04_rollback_merge_then_reload() {
    let mut peer = merge_setup();
    let source = peer.region(2);
    let prepared = at_version(&source, 6);
    peer.engine
        .on_event(&RaftEvent::PrepareMerge {
            before: source,
            after: prepared.clone(),
        })
        .unwrap();
    peer.set(prepared.clone(), peer.applied(2) + 1);
    // The source was already evicted by PrepareMerge; a rollback must not lose it.
    peer.idle();
    peer.load(2);
    let rolled_back = at_version(&prepared, 7);
    // The reload waits until the read below has been checked: on the background threads
    // it could otherwise be done before that read.
    peer.engine.hold_loads(LoadStage::BeforeStart);
    peer.engine
        .on_event(&RaftEvent::RollbackMerge {
            before: prepared,
            after: rolled_back.clone(),
        })
        .unwrap();
    peer.set(rolled_back, peer.applied(2));
    peer.empty_entry(2);
    assert!(!peer.check(2));
    peer.engine.release_loads();
    peer.idle();
    assert_eq!(peer.state(2), Some(RegionState::Active));
    assert!(peer.check(2));
}

/// Found by the simulator (a merge, then an SST ingest): the hot merge result's reload
/// waits for the target's memory, which a reader still holds; an ingest into the merged
/// region is applied meanwhile. Its eviction must drop the deferred reload: run when the
/// reader lets go — before the ingest reaches the disk — it would cache the region
/// without the ingested keys, and serve that stale copy.
#[test]
fn an_ingest_drops_the_deferred_reload_of_a_merge_result() {
    let mut peer = merge_setup();
    let held = peer.snapshot(1);
    let source = peer.region(2);
    let prepared = at_version(&source, 6);
    peer.engine
        .on_event(&RaftEvent::PrepareMerge {
            before: source,
            after: prepared.clone(),
        })
        .unwrap();
    let merged = region(1, "a", Some("z"), 7);
    peer.engine
        .on_event(&RaftEvent::CommitMerge {
            before: peer.region(1),
            after: merged.clone(),
            source: prepared,
        })
        .unwrap();
    peer.set(merged.clone(), peer.applied(1));
    peer.empty_entry(1);
    peer.regions.remove(&ime_region::RegionId(2));
    assert!(
        peer.state(1).is_some_and(RegionState::is_evicting),
        "a reader holds the target's memory: the reload waits ({:?})",
        peer.state(1)
    );
    let ingested = ime_region::KeyRange::new(
        ime_memkv::codec::encode_bytes(b"p"),
        ime_memkv::codec::encode_bytes(b"q"),
    )
    .unwrap();
    let fence = peer
        .engine
        .begin_bypass(&RaftEvent::IngestSst {
            region: merged,
            ranges: vec![ingested],
        })
        .unwrap();
    drop(held);
    peer.idle();
    // The ingest reaches the disk after its event, through the fence.
    let ts = peer.next_ts();
    common::bypass_put(&fence, &[("p", "ingested")], ts);
    fence.finish();
    peer.idle();
    assert_ne!(peer.state(1), Some(RegionState::Active));
    assert!(!peer.check(1), "served from disk, with the ingested key");
    assert!(peer.scan(1).iter().any(|(k, _)| k == b"p"));
    peer.load(1);
    assert!(peer.check(1));
}

/// A split moves keys into a region of another stripe. A state kept in the child's
/// stripe from before the parent's last write must not serve the child: the parent's
/// writes hold the parent's stripe only, and it is the split's change of the memory
/// store's ranges that makes that state stale.
#[test]
fn a_split_child_never_reads_a_state_kept_before_its_parents_last_write() {
    let mut peer = Peer::in_memory();
    peer.add(region(7, "a", Some("z"), 3));
    peer.commit(7, &[("b", Some("1"))]);
    peer.load(7);
    // Region 72 (unknown to the engine: it reads the disk) shares stripe 8 with the
    // child-to-be; its reads keep a state there, and use it.
    let request = ime_region::ReadRequest {
        epoch_version: 1,
        applied_index: 5,
        read_ts: u64::MAX - 1,
    };
    for _ in 0..2 {
        assert!(!peer.engine.snapshot(RegionId(72), request).from_memory());
    }
    peer.commit(7, &[("q", Some("2"))]);
    let event = split_event(&mut peer, 7, "k", 8);
    peer.engine.on_event(&event).unwrap();
    assert!(peer.check(8), "child 8 serves from memory");
    assert_eq!(
        peer.scan(8).len(),
        1,
        "child 8 reads q, written just before the split"
    );
}
