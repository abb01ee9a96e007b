//! Scenario 5 of `docs/scenarios.md` (tikv/tikv#17182, #17644, #17626): data that reaches the
//! disk without the write path — an SST ingest, a DeleteRange command, an
//! UnsafeDestroyRange, a flashback. Each time the region stops being served from memory
//! before the change is visible on disk, a load during flashback is refused, and reads
//! stay correct. Against RocksDB.
#![cfg(feature = "rocksdb")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use common::{Peer, at_version, bypass_put, region};
use ime_disk::{Cf, WriteBatch};
use ime_engine::EngineError;
use ime_memkv::codec::encode_bytes;
use ime_observer::RaftEvent;
use ime_region::{KeyRange, RegionState};

fn loaded() -> Peer<ime_disk::RocksDisk> {
    let mut peer = Peer::rocks();
    peer.add(region(1, "a", Some("m"), 4));
    peer.add(region(2, "m", None, 4));
    peer.commit(1, &[("b", Some("1")), ("c", Some("2"))]);
    peer.commit(
        2,
        &[
            ("n", Some("3")),
            ("p", Some("a long value in the default CF")),
        ],
    );
    peer.load(1);
    peer.load(2);
    assert!(peer.check(1) && peer.check(2));
    peer
}

fn user_range(start: &str, end: &str) -> KeyRange {
    KeyRange::new(encode_bytes(start.as_bytes()), encode_bytes(end.as_bytes())).unwrap()
}

/// Deletes every key of `range` in every column family on disk, through `fence`.
fn bypass_delete(fence: &ime_engine::BypassFence<ime_disk::RocksDisk>, range: &KeyRange) {
    let mut batch = WriteBatch::new();
    for cf in Cf::ALL {
        batch.delete_range(cf, range.start().to_vec(), range.end().unwrap().to_vec());
    }
    fence.write(&batch).unwrap();
}

/// Scenario 5a (tikv/tikv#17182): an SST ingested into region 2 evicts it before the
/// ingest is visible; region 1 keeps serving from memory.
#[test]
fn scenario_05_sst_ingest_evicts_before_it_is_visible() {
    let mut peer = loaded();
    let open = peer.snapshot(2);
    assert!(open.from_memory());
    let region2 = peer.region(2);
    let fence = peer
        .engine
        .begin_bypass(&RaftEvent::IngestSst {
            region: region2.clone(),
            ranges: vec![user_range("n", "o")],
        })
        .unwrap();
    let ts = peer.next_ts();
    bypass_put(&fence, &[("n", "ingested"), ("nn", "new")], ts);
    fence.finish();
    assert!(
        !peer.check(2),
        "an ingested region is not served from memory"
    );
    assert!(peer.check(1), "other regions are untouched");
    // The snapshot opened before the ingest still reads its own point in time.
    common::assert_reads_match(&open, &region2);
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::IngestSst),
        1
    );
}

/// Scenario 5b (tikv/tikv#17644): a DeleteRange command evicts every overlapping region.
#[test]
fn scenario_05_delete_range_command_evicts_the_overlapping_regions() {
    let mut peer = loaded();
    let range = user_range("c", "n");
    let region1 = peer.region(1);
    let fence = peer
        .engine
        .begin_bypass(&RaftEvent::DeleteRange {
            region: region1,
            range: range.clone(),
        })
        .unwrap();
    bypass_delete(&fence, &range);
    fence.finish();
    assert!(!peer.check(1) && !peer.check(2));
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::DeleteRange),
        2
    );
    peer.idle();
    peer.load(1);
    assert!(peer.check(1));
    assert_eq!(peer.scan(1).len(), 1, "only b survives");
}

/// Scenario 5c (tikv/tikv#17626): UnsafeDestroyRange, outside Raft, names a range only.
#[test]
fn scenario_05_unsafe_destroy_range_evicts_without_a_region() {
    let mut peer = loaded();
    let range = user_range("m", "z");
    let fence = peer
        .engine
        .begin_bypass(&RaftEvent::UnsafeDestroyRange {
            range: range.clone(),
        })
        .unwrap();
    bypass_delete(&fence, &range);
    fence.finish();
    assert!(!peer.check(2));
    assert!(peer.check(1));
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::DeleteRange),
        1
    );
}

/// Scenario 5d: PrepareFlashback evicts and refuses loads until FinishFlashback; what the
/// flashback rewrites on disk is never read from memory.
#[test]
fn scenario_05_flashback_evicts_and_refuses_loads() {
    let mut peer = loaded();
    let before = peer.region(1);
    let during = at_version(&before, 5);
    let fence = peer
        .engine
        .begin_bypass(&RaftEvent::PrepareFlashback {
            before,
            after: during.clone(),
        })
        .unwrap();
    peer.set(during.clone(), peer.applied(1) + 1);
    let refused = peer.engine.load_region(during.clone(), peer.applied(1));
    assert!(
        matches!(refused, Err(EngineError::LoadRefused { .. })),
        "{refused:?}"
    );
    let ts = peer.next_ts();
    bypass_put(&fence, &[("b", "flashed back")], ts);
    fence.finish();
    assert!(!peer.check(1));
    let after = at_version(&during, 6);
    peer.engine
        .on_event(&RaftEvent::FinishFlashback {
            before: during,
            after: after.clone(),
        })
        .unwrap();
    peer.set(after, peer.applied(1) + 1);
    peer.idle();
    peer.load(1);
    assert_eq!(peer.state(1), Some(RegionState::Active));
    assert!(peer.check(1));
    assert!(peer.engine.cross_check().is_empty());
}
