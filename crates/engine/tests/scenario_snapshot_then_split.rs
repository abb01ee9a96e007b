//! Scenarios 1 and 2 of `docs/scenarios.md` (tikv/tikv#17405): a Raft snapshot moves a cached
//! region to the next epoch version, then the region splits — with the snapshot event
//! observed (evict with ApplySnapshot) and lost (the next write, event or read reveals the
//! gap: EpochGap). Against RocksDB; every read is compared with the disk at the same
//! snapshot.
#![cfg(feature = "rocksdb")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::sync::Arc;

use common::{Peer, at_version, bypass_put, region};
use ime_engine::BypassFence;
use ime_observer::{EventBus, EventKind, FaultAction, FaultRule, FaultyObserver, RaftEvent};
use ime_region::{EvictReason, RegionId, RegionState, SplitChild};

/// Region 34855 at version 221, loaded and serving from memory.
fn seeded() -> Peer<ime_disk::RocksDisk> {
    let mut peer = Peer::rocks();
    peer.add(region(34855, "a", Some("z"), 221));
    peer.commit(
        34855,
        &[
            ("b", Some("1")),
            ("m", Some("2")),
            ("x", Some("a long value, in the default CF")),
        ],
    );
    peer.load(34855);
    assert_eq!(peer.state(34855), Some(RegionState::Active));
    peer.commit(34855, &[("c", Some("3")), ("b", None)]);
    assert!(peer.check(34855), "version 221 is served from memory");
    peer
}

/// The snapshot's data reaches disk through `fence`, without the write path, and the peer
/// moves to `version`.
fn apply_snapshot_data(
    peer: &mut Peer<ime_disk::RocksDisk>,
    fence: BypassFence<ime_disk::RocksDisk>,
    version: u64,
) -> u64 {
    let ts = peer.next_ts();
    bypass_put(&fence, &[("d", "from the snapshot"), ("m", "replaced")], ts);
    fence.finish();
    let index = peer.applied(34855) + 50;
    peer.set(at_version(&peer.region(34855), version), index);
    index
}

/// Splits region 34855 (at its current version) at "m" into 34855 [a, m) and 40000 [m, z).
fn split(peer: &mut Peer<ime_disk::RocksDisk>) -> Result<(), ime_engine::EngineError> {
    let before = peer.region(34855);
    let index = peer.applied(34855) + 1;
    let left = region(34855, "a", Some("m"), before.epoch.version + 1);
    let right = region(40000, "m", Some("z"), before.epoch.version + 1);
    let children = vec![
        SplitChild {
            region: left.clone(),
            applied_index: index,
        },
        SplitChild {
            region: right.clone(),
            applied_index: 5,
        },
    ];
    peer.set(left, index);
    peer.set(right, 5);
    peer.engine.on_event(&RaftEvent::Split { before, children })
}

/// Scenario 1 (tikv/tikv#17405): loaded at 221, ApplySnapshot to 222, split. The region is
/// evicted with ApplySnapshot before any read of 222 is served from memory; the split
/// does not panic; both children read correctly and load again.
#[test]
fn scenario_01_snapshot_to_v222_then_split_evicts_and_never_panics() {
    let mut peer = seeded();
    let before = peer.region(34855);
    let after = at_version(&before, 222);
    let index = peer.applied(34855) + 50;
    let fence = peer
        .engine
        .begin_bypass(&RaftEvent::ApplySnapshot {
            before: Some(before),
            after,
            applied_index: index,
        })
        .unwrap();
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::ApplySnapshot),
        1
    );
    // The event returned: from here on no read of the region comes from memory.
    apply_snapshot_data(&mut peer, fence, 222);
    assert!(
        !peer.check(34855),
        "version 222 must not be served from memory"
    );
    peer.idle();
    assert_eq!(peer.state(34855), None, "evicted and removed");

    split(&mut peer).unwrap();
    assert!(!peer.check(34855));
    assert!(!peer.check(40000));
    peer.load(34855);
    peer.load(40000);
    for id in [34855, 40000] {
        assert_eq!(
            peer.state(id),
            Some(RegionState::Active),
            "child {id} loads again"
        );
        assert!(peer.check(id), "child {id} serves from memory");
    }
    peer.commit(40000, &[("n", Some("after")), ("m", None)]);
    assert!(peer.check(40000));
    assert!(peer.engine.cross_check().is_empty());
}

/// Bus plumbing for scenario 2: the engine behind a fault injector that drops every
/// ApplySnapshot event.
fn lossy_bus(peer: &Peer<ime_disk::RocksDisk>) -> EventBus {
    let bus = EventBus::new().unwrap();
    let rule = FaultRule::always(EventKind::ApplySnapshot, FaultAction::Drop);
    bus.register(
        Arc::new(FaultyObserver::new(peer.engine.observer(), vec![rule])),
        0,
    );
    bus
}

/// The snapshot's event is lost on the bus. Its data can still reach the disk only through
/// a fence, and an unannounced fence evicts what it covers; so the cache has no stale copy.
/// But the engine never learned of the snapshot: a load at the description it has (as a
/// policy round would make) caches the region at the old epoch and applied index, and the
/// gap must be found when the peer's next write, event or read reveals it.
fn publish_lost_snapshot(peer: &mut Peer<ime_disk::RocksDisk>, bus: &EventBus, version: u64) {
    let before = peer.region(34855);
    let old_index = peer.applied(34855);
    let after = at_version(&before, version);
    let event = RaftEvent::ApplySnapshot {
        before: Some(before.clone()),
        after,
        applied_index: old_index + 50,
    };
    let _report = bus.publish(event.clone());
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::ApplySnapshot),
        0,
        "the event was dropped"
    );
    let fence = peer.engine.fence_ranges(event.bypass_ranges());
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::UnannouncedChange),
        1
    );
    apply_snapshot_data(peer, fence, version);
    peer.idle();
    peer.engine.load_region(before, old_index).unwrap();
    peer.idle();
    assert_eq!(peer.state(34855), Some(RegionState::Active));
}

/// Scenario 2, by the next write: the snapshot event is lost; the next write carries
/// version 222, the engine evicts with EpochGap, and no read is wrong.
#[test]
fn scenario_02_lost_snapshot_event_is_caught_by_the_next_write() {
    let mut peer = seeded();
    let bus = lossy_bus(&peer);
    publish_lost_snapshot(&mut peer, &bus, 222);
    let outcome = peer.commit(34855, &[("e", Some("5"))]);
    assert_eq!(
        outcome.evicted,
        vec![(RegionId(34855), EvictReason::EpochGap)]
    );
    assert_eq!(peer.engine.stats().gaps.epoch, 1);
    assert!(!peer.check(34855));
    split(&mut peer).unwrap();
    assert!(!peer.check(34855) && !peer.check(40000));
    bus.close();
}

/// Scenario 2, by the next event: the split of version 222 finds 221 cached — an EpochGap
/// eviction, not TiKV's assertion.
#[test]
fn scenario_02_lost_snapshot_event_is_caught_by_the_split() {
    let mut peer = seeded();
    let bus = lossy_bus(&peer);
    publish_lost_snapshot(&mut peer, &bus, 222);
    split(&mut peer).unwrap();
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::EpochGap),
        1
    );
    assert!(!peer.check(34855) && !peer.check(40000));
    peer.idle();
    assert!(peer.engine.regions().is_empty());
    bus.close();
}

/// Scenario 2, by the next read: a reader at version 222 is ahead of the cache.
#[test]
fn scenario_02_lost_snapshot_event_is_caught_by_a_read() {
    let mut peer = seeded();
    let bus = lossy_bus(&peer);
    publish_lost_snapshot(&mut peer, &bus, 222);
    assert!(!peer.check(34855), "the read falls back");
    assert_eq!(peer.engine.stats().snapshots.epoch_gap, 1);
    assert_eq!(
        peer.engine
            .stats()
            .evicted(ime_region::EvictReason::EpochGap),
        1
    );
    bus.close();
}

/// Scenario 2 without an epoch change (the simulator's `snapshot-same-epoch-unobserved`):
/// a snapshot that replaces the data at the same version, its event lost. The applied
/// index jumps: IndexGap, and no stale read.
#[test]
fn scenario_02_lost_snapshot_at_the_same_epoch_is_an_index_gap() {
    let mut peer = seeded();
    let bus = lossy_bus(&peer);
    publish_lost_snapshot(&mut peer, &bus, 221);
    let outcome = peer.commit(34855, &[("e", Some("5"))]);
    assert_eq!(
        outcome.evicted,
        vec![(RegionId(34855), EvictReason::IndexGap)]
    );
    assert!(!peer.check(34855));
    bus.close();
}

/// The checkers can fail: an engine that ignores ApplySnapshot and gaps (TiKV before
/// tikv/tikv#17430) serves a stale read after a snapshot, and the comparison sees it.
#[test]
fn a_broken_engine_serves_a_stale_read_that_the_comparison_catches() {
    let mut peer = seeded();
    peer.engine.break_for_tests();
    let before = peer.region(34855);
    let index = peer.applied(34855) + 50;
    let event = RaftEvent::ApplySnapshot {
        before: Some(before.clone()),
        after: before,
        applied_index: index,
    };
    let fence = peer.engine.begin_bypass(&event).unwrap();
    apply_snapshot_data(&mut peer, fence, 221);
    let snapshot = peer.snapshot(34855);
    assert!(
        snapshot.from_memory(),
        "the broken engine still serves from memory"
    );
    let stale = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::assert_reads_match(&snapshot, &peer.region(34855));
    }));
    assert!(stale.is_err(), "the stale read must be caught");
    drop(snapshot);
    assert!(
        !peer.engine.cross_check().is_empty(),
        "the cross-checker sees the difference too"
    );
}
