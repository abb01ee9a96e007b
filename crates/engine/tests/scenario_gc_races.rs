//! Scenario 14: a GC round that loses a race. Under a queue-table workload (rows inserted,
//! each deleted 32 rows later), a GC round raises the region's safe point above every row
//! and queues its collection; a split moves the range before the collection runs, so the
//! collection finds its range gone. The safe point has moved but nothing was collected:
//! the next round must collect both children (it once skipped them for good, and the
//! cache kept every dead version). A manual engine: the test chooses the interleaving.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use common::{Peer, region, test_config};
use ime_disk::MemDisk;
use ime_engine::{Background, Engine, TaskKind};
use ime_observer::RaftEvent;
use ime_region::{RegionState, SplitChild};

const ROWS: u64 = 600;
const LIVE: u64 = 32;

fn row(i: u64) -> String {
    format!("q{i:05}")
}

/// Region 1 `[a, z)`, cached, after a queue table's life: `ROWS` rows inserted, every row
/// but the last `LIVE` deleted again.
fn queue_table() -> Peer<MemDisk> {
    let engine = Engine::with_background(
        MemDisk::new(),
        test_config(),
        Box::new(ime_engine::eviction::default_policy()),
        Background::Manual,
    )
    .unwrap();
    let mut peer = Peer::new(engine);
    peer.add(region(1, "a", Some("z"), 1));
    peer.load(1);
    for i in 0..ROWS {
        let key = row(i);
        peer.commit(1, &[(key.as_str(), Some("a job"))]);
        if i >= LIVE {
            let old = row(i - LIVE);
            peer.commit(1, &[(old.as_str(), None)]);
        }
    }
    peer.idle();
    assert_eq!(peer.state(1), Some(RegionState::Active));
    peer
}

fn split_at_the_middle(peer: &mut Peer<MemDisk>) {
    let before = peer.region(1);
    let index = peer.applied(1) + 1;
    let middle = row(ROWS / 2);
    let left = region(1, "a", Some(&middle), 2);
    let right = region(2, &middle, Some("z"), 2);
    let children = vec![
        SplitChild {
            region: left.clone(),
            applied_index: index,
        },
        SplitChild {
            region: right.clone(),
            applied_index: index,
        },
    ];
    peer.set(left, index);
    peer.set(right, index);
    peer.engine
        .on_event(&RaftEvent::Split { before, children })
        .unwrap();
}

#[test]
fn scenario_14_a_collection_lost_to_a_split_is_done_on_the_children() {
    let mut peer = queue_table();
    let full = peer.engine.memory_used();
    let safe_point = peer.next_ts();
    peer.engine.set_safe_point(safe_point);
    peer.engine.run_gc();
    assert_eq!(peer.engine.pending_tasks(), 1, "one collection queued");
    split_at_the_middle(&mut peer);
    assert_eq!(peer.engine.run_pending(0), Some(TaskKind::Gc));
    assert_eq!(peer.engine.stats().collections.range_gone, 1);
    assert!(
        peer.engine.memory_used() * 10 > full * 9,
        "nothing was collected yet"
    );

    // The next round: the safe point did not move, but neither child is collected.
    peer.engine.run_gc();
    peer.idle();
    assert_eq!(peer.engine.stats().collections.collected, 2);
    let after = peer.engine.memory_used();
    assert!(
        after * 4 < full,
        "the dead versions are gone: {after} bytes of {full}"
    );
    for id in [1, 2] {
        assert!(
            peer.check(id),
            "child {id} is served from memory and equals the disk"
        );
    }
    // And a third round has nothing left to do.
    peer.engine.run_gc();
    assert_eq!(peer.engine.pending_tasks(), 0);
}

/// With threads, a round collects at once and marks the range collected: the next round
/// at the same safe point does no work.
#[test]
fn a_collected_range_is_not_collected_again() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("z"), 1));
    peer.load(1);
    for i in 0..40 {
        let key = row(i);
        peer.commit(1, &[(key.as_str(), Some("a job"))]);
        peer.commit(1, &[(key.as_str(), None)]);
    }
    let safe_point = peer.next_ts();
    peer.engine.set_safe_point(safe_point);
    peer.engine.run_gc();
    peer.engine.run_gc();
    assert_eq!(peer.engine.stats().collections.collected, 1);
    assert!(peer.check(1));
}
