//! Scenarios 6, 7, 8 and 12 of `docs/scenarios.md`: eviction racing writes (tikv/tikv#17104,
//! against RocksDB), eviction waiting for readers, a prepared write that never comes
//! (tikv/tikv#17700), and eviction callbacks that always fire exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Peer, region};
use ime_engine::{ApplyHeader, HybridWriteBatch, LoadStage};
use ime_region::{EvictCallback, EvictReason, EvictionEnd, RegionId, RegionState};

/// Scenario 6 (tikv/tikv#17104): the region is evicted while writes keep arriving and
/// snapshots are taken, then loaded again while writes still arrive. Nothing stale
/// survives: reads are right at every step and the cross-check after the reload is clean.
#[cfg(feature = "rocksdb")]
#[test]
fn scenario_06_eviction_racing_writes_leaves_nothing_stale() {
    let mut peer = Peer::rocks();
    peer.add(region(3, "a", Some("z"), 2));
    for i in 0..20 {
        peer.commit(3, &[(&format!("k{i:02}"), Some("v0"))]);
    }
    peer.load(3);
    let open = peer.snapshot(3);
    assert!(open.from_memory());
    peer.engine
        .evict_region(RegionId(3), EvictReason::Manual, None);
    for i in 0..20 {
        peer.commit(
            3,
            &[(
                &format!("k{i:02}"),
                if i % 3 == 0 { None } else { Some("v1") },
            )],
        );
        assert!(
            !peer.check(3),
            "an evicted region is not served from memory"
        );
    }
    common::assert_reads_match(&open, &peer.region(3));
    // A load asked for while the old data is still being evicted waits for it to go.
    peer.engine
        .load_region(peer.region(3), peer.applied(3))
        .unwrap();
    assert!(peer.state(3).is_some_and(RegionState::is_evicting));
    peer.commit(3, &[("k01", Some("v1b"))]);
    drop(open);
    peer.idle();
    assert_eq!(peer.state(3), Some(RegionState::Active));
    assert!(
        peer.check(3),
        "the deferred load ran after the old data went"
    );
    peer.engine
        .evict_region(RegionId(3), EvictReason::Manual, None);
    peer.idle();
    assert_eq!(peer.state(3), None);
    // Reload, with writes landing while the load copies.
    peer.engine.hold_loads(LoadStage::AfterStart);
    peer.engine
        .load_region(peer.region(3), peer.applied(3))
        .unwrap();
    while peer.state(3) != Some(RegionState::Loading) {
        std::thread::yield_now();
    }
    for i in 0..20 {
        peer.commit(3, &[(&format!("k{i:02}"), Some("v2"))]);
    }
    peer.engine.release_loads();
    peer.idle();
    assert!(peer.check(3));
    peer.commit(3, &[("k05", None)]);
    assert!(peer.check(3));
    assert!(peer.engine.cross_check().is_empty());
}

/// Scenario 7: a snapshot open on a region when it is evicted keeps reading correct data
/// until it drops; the region's memory is released after that, not before.
#[test]
fn scenario_07_eviction_waits_for_readers() {
    let mut peer = Peer::in_memory();
    peer.add(region(4, "a", Some("z"), 2));
    for i in 0..200 {
        peer.commit(
            4,
            &[(
                &format!("k{i:03}"),
                Some("a value of some length, to count"),
            )],
        );
    }
    peer.load(4);
    let loaded = peer.engine.memory_used();
    let open = peer.snapshot(4);
    peer.engine
        .evict_region(RegionId(4), EvictReason::Manual, None);
    peer.idle();
    assert_eq!(peer.state(4), Some(RegionState::PendingEvict));
    assert!(
        peer.engine.memory_used() >= loaded,
        "not released while a reader holds it"
    );
    peer.commit(4, &[("k000", None)]);
    common::assert_reads_match(&open, &peer.region(4));
    assert!(open.from_memory());
    drop(open);
    peer.idle();
    assert_eq!(peer.state(4), None);
    assert!(
        peer.engine.memory_used() < loaded / 10,
        "released after the reader dropped"
    );
}

/// Scenario 8 (tikv/tikv#17700): the apply side prepares a segment for one region, writes
/// nothing into it, then writes another region. No assertion, nothing leaked, and the next
/// batch for the first region works.
#[test]
fn scenario_08_a_prepared_write_that_never_comes() {
    let mut peer = Peer::in_memory();
    peer.add(region(5, "a", Some("m"), 2));
    peer.add(region(6, "m", Some("z"), 2));
    peer.load(5);
    peer.load(6);
    let (r5, r6) = (peer.region(5), peer.region(6));
    let (i5, i6) = (peer.applied(5), peer.applied(6));
    let mut batch = HybridWriteBatch::new();
    batch.prepare(ApplyHeader {
        region: r5.id,
        epoch: r5.epoch,
        first_index: i5 + 1,
        last_index: i5 + 1,
    });
    batch
        .prepare(ApplyHeader {
            region: r6.id,
            epoch: r6.epoch,
            first_index: i6 + 1,
            last_index: i6 + 1,
        })
        .put(
            ime_disk::Cf::Lock,
            ime_memkv::codec::encode_bytes(b"n"),
            "lock",
        );
    let outcome = peer.engine.write(&batch).unwrap();
    assert!(outcome.evicted.is_empty());
    peer.set(r5, i5 + 1);
    peer.set(r6, i6 + 1);
    peer.commit(5, &[("b", Some("1"))]);
    assert_eq!(peer.state(5), Some(RegionState::Active));
    assert!(peer.check(5));
    // Operations before any prepare are refused whole, not applied half.
    let mut untagged = HybridWriteBatch::new();
    untagged.put(ime_disk::Cf::Default, "x", "y");
    assert!(peer.engine.write(&untagged).is_err());
}

/// A callback that records how each eviction ended, and how often it fired.
fn recorder() -> (Arc<Mutex<Vec<EvictionEnd>>>, impl Fn() -> EvictCallback) {
    let ends = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&ends);
    let make = move || {
        let sink = Arc::clone(&sink);
        EvictCallback::new(move |end| sink.lock().unwrap().push(end))
    };
    (ends, make)
}

/// Scenario 12: every eviction callback fires exactly once — for a region not cached,
/// Pending, Loading, Active with a reader, or already being evicted.
#[test]
fn scenario_12_callbacks_always_fire_exactly_once() {
    let mut peer = Peer::in_memory();
    for (id, start, end) in [(1, "a", "c"), (2, "c", "e"), (3, "e", "g"), (4, "g", "i")] {
        peer.add(region(id, start, Some(end), 1));
        peer.commit(id, &[(start, Some("v"))]);
    }
    let (ends, callback) = recorder();
    // Not cached.
    peer.engine
        .evict_region(RegionId(9), EvictReason::Manual, Some(callback()));
    assert_eq!(ends.lock().unwrap().len(), 1, "fires at once");
    // Pending.
    peer.engine.hold_loads(LoadStage::BeforeStart);
    peer.engine
        .load_region(peer.region(1), peer.applied(1))
        .unwrap();
    peer.engine
        .evict_region(RegionId(1), EvictReason::Manual, Some(callback()));
    assert_eq!(ends.lock().unwrap().len(), 2);
    peer.engine.release_loads();
    peer.idle();
    // Loading.
    peer.engine.hold_loads(LoadStage::AfterStart);
    peer.engine
        .load_region(peer.region(2), peer.applied(2))
        .unwrap();
    while peer.state(2) != Some(RegionState::Loading) {
        std::thread::yield_now();
    }
    peer.engine
        .evict_region(RegionId(2), EvictReason::Manual, Some(callback()));
    assert_eq!(ends.lock().unwrap().len(), 2, "waits for the load to stop");
    peer.engine.release_loads();
    peer.idle();
    assert_eq!(ends.lock().unwrap().len(), 3);
    // Active with a reader, then evicted again while already evicting.
    peer.load(3);
    let open = peer.snapshot(3);
    peer.engine
        .evict_region(RegionId(3), EvictReason::Manual, Some(callback()));
    peer.engine
        .evict_region(RegionId(3), EvictReason::AutoEvict, Some(callback()));
    peer.idle();
    assert_eq!(ends.lock().unwrap().len(), 3, "both wait for the reader");
    drop(open);
    peer.idle();
    assert_eq!(ends.lock().unwrap().len(), 5);
    // Dropped with the engine: a callback on a region whose eviction never ends still fires.
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fired);
    peer.load(4);
    let open = peer.snapshot(4);
    let cb = EvictCallback::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    peer.engine
        .evict_region(RegionId(4), EvictReason::Manual, Some(cb));
    drop(open);
    drop(peer);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    let all = ends.lock().unwrap();
    let expected = [
        EvictionEnd::NotCached,
        EvictionEnd::Removed,
        EvictionEnd::Removed,
        EvictionEnd::Removed,
        EvictionEnd::Removed,
    ];
    assert_eq!(all[..], expected, "each fired once");
}
