//! What the eviction policy is fed. MVCC work is counted on every read path: the built-in
//! MVCC reads and the raw iterators an embedder drives itself, served from memory or from
//! disk; each snapshot reports its own (`HybridSnapshot::mvcc_work`), and the region's
//! statistics — what the policy weighs — receive the same. Region sizes come from the
//! embedder when it gives them, from a disk scan otherwise.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::sync::{Arc, Mutex};

use common::{Peer, region, test_config};
use ime_disk::{Cf, DiskIterator, KeyRange, MemDisk};
use ime_engine::{Engine, MvccWork};
use ime_eviction::{Decision, EvictionPolicy, RegionStats, Round};
use ime_observer::{PeerRole, RaftEvent};
use ime_region::RegionId;

/// A policy that decides nothing and keeps what each round showed it.
struct Recorder(Arc<Mutex<Vec<RegionStats>>>);

impl EvictionPolicy for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn decide(&mut self, round: &Round<'_>) -> Decision {
        self.0.lock().unwrap().extend(round.regions.iter().cloned());
        Decision::default()
    }
}

/// A peer leading region 1, with three keys of three versions each, and what the policy
/// saw of the region in the last round.
fn peer() -> (Peer<MemDisk>, Arc<Mutex<Vec<RegionStats>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let policy = Box::new(Recorder(Arc::clone(&seen)));
    let engine = Engine::with_policy(MemDisk::new(), test_config(), policy).unwrap();
    let mut peer = Peer::new(engine);
    peer.add(region(1, "a", Some("z"), 1));
    let lead = RaftEvent::RoleChange {
        region: peer.region(1),
        role: PeerRole::Leader,
        term: 2,
    };
    peer.engine.on_event(&lead).unwrap();
    for round in 0..3 {
        let value = format!("v{round}");
        peer.commit(
            1,
            &[
                ("k1", Some(&value)),
                ("k2", Some(&value)),
                ("k3", Some(&value)),
            ],
        );
    }
    (peer, seen)
}

fn policy_saw(peer: &Peer<MemDisk>, seen: &Mutex<Vec<RegionStats>>) -> (u64, u64) {
    seen.lock().unwrap().clear();
    peer.engine.run_policy();
    let seen = seen.lock().unwrap();
    let stats = seen.iter().find(|s| s.id == RegionId(1)).unwrap();
    (stats.scanned_versions, stats.returned_keys)
}

/// Walks the write column family of region 1 with a raw iterator, as an embedder's own
/// MVCC reader would, and returns the snapshot's count.
fn walk(peer: &mut Peer<MemDisk>) -> (bool, MvccWork) {
    let snapshot = peer.snapshot(1);
    let range = peer.region(1).range;
    let bounds = KeyRange::with_end(range.start().to_vec(), range.end().map(<[u8]>::to_vec));
    {
        let mut it = snapshot.iter(Cf::Write, bounds.unwrap()).unwrap();
        it.seek_to_first();
        while it.entry().is_some() {
            it.next();
        }
    }
    (snapshot.from_memory(), snapshot.mvcc_work())
}

#[test]
fn an_embedder_driven_iterator_counts_on_disk_and_in_memory() {
    let (mut peer, seen) = peer();
    let _ = policy_saw(&peer, &seen); // the commits' rounds start from zero
    let nine_versions_three_keys = MvccWork {
        scanned: 9,
        returned: 3,
    };
    // Not cached, the iterator walks the disk; cached, memory: the same count both ways.
    for cached in [false, true] {
        if cached {
            peer.load(1);
        }
        let (from_memory, work) = walk(&mut peer);
        assert_eq!(from_memory, cached);
        assert_eq!(work, nine_versions_three_keys);
        assert_eq!(policy_saw(&peer, &seen), (9, 3));
    }
}

#[test]
fn built_in_reads_count_into_the_snapshot_too() {
    let (mut peer, seen) = peer();
    let _ = policy_saw(&peer, &seen);
    let snapshot = peer.snapshot(1);
    let pairs = snapshot.mvcc_scan(b"a", Some(b"z"), usize::MAX).unwrap();
    assert_eq!(pairs.len(), 3);
    let got = snapshot.mvcc_get(b"k2").unwrap();
    assert_eq!(got, Some(b"v2".to_vec()));
    // The scan steps on every version (9) for 3 keys; the get on the newest one.
    assert_eq!(
        snapshot.mvcc_work(),
        MvccWork {
            scanned: 10,
            returned: 4
        }
    );
    drop(snapshot);
    assert_eq!(policy_saw(&peer, &seen), (10, 4));
}

fn policy_size(peer: &Peer<MemDisk>, seen: &Mutex<Vec<RegionStats>>) -> u64 {
    seen.lock().unwrap().clear();
    peer.engine.run_policy();
    let seen = seen.lock().unwrap();
    seen.iter().find(|s| s.id == RegionId(1)).unwrap().size
}

#[test]
fn region_sizes_come_from_the_embedder_with_the_disk_scan_as_fallback() {
    let (peer, seen) = peer();
    // No size given: the disk scan's estimate (nine small versions and their overhead).
    let scanned = policy_size(&peer, &seen);
    assert!(scanned > 0 && scanned < 4096, "{scanned}");
    // The embedder's approximate size replaces it.
    peer.engine.set_region_size(RegionId(1), 96 << 20);
    assert_eq!(policy_size(&peer, &seen), 96 << 20);
    peer.engine.set_region_size(RegionId(1), 10 << 20);
    assert_eq!(policy_size(&peer, &seen), 10 << 20);
    // A region the engine does not know is ignored, not an error.
    peer.engine.set_region_size(RegionId(77), 1);
}
