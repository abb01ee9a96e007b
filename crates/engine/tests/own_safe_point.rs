//! The cache's own GC safe point: with a timestamp source, GC collects memory at
//! `now - gc-run-interval` (TiKV's timestamp format) whenever that is above the embedder's
//! safe point — never past a live snapshot, never backwards — and reads below a region's
//! safe point go to disk, with the same answers. And scans of a region reach memory
//! however their bounds are given: an open end is clamped to the region.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Peer, assert_reads_match, region};
use ime_disk::MemDisk;
use ime_engine::{Fallback, TSO_LOGICAL_BITS};
use ime_region::{ReadMiss, ReadRequest, RegionId};

/// `gc-run-interval` in the tests' config (one hour), as a timestamp difference.
const INTERVAL: u64 = 3_600_000 << TSO_LOGICAL_BITS;

/// A peer with region 1 cached, written at several timestamps, and a clock the test sets.
fn peer_with_clock() -> (Peer<MemDisk>, Arc<AtomicU64>) {
    let mut peer = Peer::in_memory();
    let clock = Arc::new(AtomicU64::new(0));
    let now = Arc::clone(&clock);
    peer.engine
        .set_timestamp_source(move || now.load(Ordering::SeqCst));
    peer.add(region(1, "a", Some("z"), 1));
    for round in 0..4 {
        let value = format!("v{round}");
        peer.commit(1, &[("k1", Some(&value)), ("k2", Some(&value))]);
    }
    peer.load(1);
    (peer, clock)
}

fn safe_point(peer: &Peer<MemDisk>) -> u64 {
    peer.engine
        .regions()
        .into_iter()
        .find(|r| r.region.id == RegionId(1))
        .map_or(0, |r| r.safe_point)
}

fn read_at(peer: &Peer<MemDisk>, read_ts: u64) -> ime_engine::HybridSnapshot<MemDisk> {
    let request = ReadRequest {
        epoch_version: 1,
        applied_index: peer.applied(1),
        read_ts,
    };
    peer.engine.snapshot(RegionId(1), request)
}

#[test]
fn memory_keeps_only_recent_history_and_older_reads_go_to_disk() {
    let (mut peer, clock) = peer_with_clock();
    // The clock one interval past the second round's commits: the own safe point is there.
    let cut = peer.next_ts();
    for round in 4..8 {
        let value = format!("v{round}");
        peer.commit(1, &[("k1", Some(&value)), ("k2", None)]);
    }
    clock.store(cut + INTERVAL, Ordering::SeqCst);
    peer.engine.run_gc();
    assert_eq!(
        safe_point(&peer),
        cut,
        "the own safe point, above the embedder's (0)"
    );
    assert!(peer.engine.stats().collections.collected >= 1);
    // Recent reads: from memory, equal to the disk.
    assert!(peer.check(1));
    // A read older than the safe point: from disk (TooOldRead), and equal to the disk.
    let old = read_at(&peer, cut - 5);
    assert_eq!(
        old.fallback(),
        Some(Fallback::Miss(ReadMiss::TooOldRead {
            safe_point: cut,
            read_ts: cut - 5
        }))
    );
    assert_reads_match(&old, &peer.region(1));
    // The embedder's safe point, when higher, wins.
    let later = peer.next_ts();
    peer.engine.set_safe_point(later);
    peer.engine.run_gc();
    assert_eq!(safe_point(&peer), later);
    assert!(peer.check(1));
}

#[test]
fn the_own_safe_point_never_passes_a_live_snapshot_nor_goes_back() {
    let (mut peer, clock) = peer_with_clock();
    let held_ts = peer.next_ts();
    let held = read_at(&peer, held_ts);
    assert!(held.from_memory());
    for round in 4..8 {
        let value = format!("w{round}");
        peer.commit(1, &[("k1", Some(&value)), ("k3", Some(&value))]);
    }
    let far = peer.next_ts();
    clock.store(far + INTERVAL, Ordering::SeqCst);
    peer.engine.run_gc();
    assert!(safe_point(&peer) <= held_ts, "GC passed a live snapshot");
    // The snapshot still reads what the disk held at its sequence.
    assert_reads_match(&held, &peer.region(1));
    drop(held);
    peer.engine.run_gc();
    assert_eq!(safe_point(&peer), far);
    assert!(peer.check(1));
    // A clock that goes back (a restarted source, skew) moves nothing back.
    clock.store(INTERVAL + 1, Ordering::SeqCst);
    peer.engine.run_gc();
    assert_eq!(safe_point(&peer), far);
    assert!(peer.check(1));
}

#[test]
fn without_a_clock_only_the_embedders_safe_point_counts() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("z"), 1));
    peer.commit(1, &[("k1", Some("v"))]);
    peer.load(1);
    let ts = peer.next_ts();
    peer.commit(1, &[("k1", Some("w"))]);
    peer.engine.run_gc();
    assert_eq!(safe_point(&peer), 0);
    peer.engine.set_safe_point(ts);
    peer.engine.run_gc();
    assert_eq!(safe_point(&peer), ts);
    assert!(peer.check(1));
}

#[test]
fn an_unbounded_scan_is_clamped_to_the_region_and_memory_serves_it() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("m"), 1));
    peer.add(region(2, "m", None, 1));
    for round in 0..4 {
        let value = format!("v{round}");
        peer.commit(1, &[("b", Some(&value)), ("c", Some(&value))]);
        peer.commit(2, &[("n", Some(&value))]);
    }
    peer.load(1);
    // GC leaves memory one version per key; the disk keeps all four.
    let ts = peer.next_ts();
    peer.engine.set_safe_point(ts);
    peer.engine.run_gc();
    let cached = peer.snapshot(1);
    assert!(cached.from_memory());
    let all = cached.mvcc_scan(b"", None, usize::MAX).unwrap();
    let expected = common::reference_scan(cached.disk(), &peer.region(1).range, cached.read_ts());
    assert_eq!(all, expected, "the region's keys, as the disk has them");
    assert_eq!(
        cached.mvcc_work().scanned,
        2,
        "served from memory (after GC), not the disk's eight versions"
    );
    // Bounds past the region's end, and a range wholly outside it.
    assert_eq!(
        cached
            .mvcc_scan(b"c", Some(b"zz"), usize::MAX)
            .unwrap()
            .len(),
        1
    );
    assert!(cached.mvcc_scan(b"x", None, usize::MAX).unwrap().is_empty());
    // A region read from disk, which the engine knows (here from its leadership event),
    // is clamped the same: its own keys only.
    let lead = ime_observer::RaftEvent::RoleChange {
        region: peer.region(2),
        role: ime_observer::PeerRole::Leader,
        term: 2,
    };
    peer.engine.on_event(&lead).unwrap();
    let uncached = peer.snapshot(2);
    assert!(!uncached.from_memory());
    let keys: Vec<Vec<u8>> = uncached
        .mvcc_scan(b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"n".to_vec()]);
}
