//! Writes whose region nobody has read lately defer their memory side: the write goes to
//! disk, its operations wait in its region's stripe, and a task, the next reader, the
//! next write that writes memory itself, an event or a load's start applies them. Every
//! read still equals the disk, whoever applies them and whenever.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Peer, region, test_config};
use ime_disk::{Cf, MemDisk};
use ime_engine::{Background, Config, Engine, TaskKind};
use ime_memkv::codec::{LockEntry, LockRecord, LockType, encode_bytes};
use ime_region::{EvictReason, RegionId};

/// A peer whose background work runs only when the test runs it, with region 1 cached.
fn manual(config: Config) -> Peer<MemDisk> {
    let policy = Box::new(ime_engine::eviction::default_policy());
    let engine = Engine::with_background(MemDisk::new(), config, policy, Background::Manual);
    let mut peer = Peer::new(engine.unwrap());
    peer.add(region(1, "r1", Some("r2"), 1));
    peer.commit(1, &[("r1/a", Some("0"))]);
    peer.load(1);
    peer
}

fn drains(peer: &Peer<MemDisk>) -> usize {
    let kinds = peer.engine.pending_kinds();
    kinds.iter().filter(|k| **k == TaskKind::Drain).count()
}

/// Nobody has read region 1: its write reaches the disk and waits for memory (a task is
/// queued), and the first read applies it before it reads memory — served from memory,
/// equal to the disk.
#[test]
fn a_write_nobody_reads_waits_and_the_next_read_applies_it() {
    let mut peer = manual(test_config());
    let before = peer.engine.memory_used();
    let outcome = peer.commit(1, &[("r1/b", Some("1")), ("r1/c", Some("2"))]);
    assert_eq!(outcome.in_memory, 2, "queued for memory");
    assert_eq!(peer.engine.memory_used(), before, "not in memory yet");
    assert_eq!(drains(&peer), 1);
    assert!(peer.check(1), "served from memory, equal to the disk");
    assert!(peer.engine.memory_used() > before, "the read applied it");
    assert_eq!(peer.scan(1).len(), 3);
    // The task finds nothing left to apply.
    peer.idle();
    assert!(peer.check(1));
    assert!(peer.engine.cross_check().is_empty());
}

/// Writes nobody applies (no task runs, nobody reads) queue up to 128; the write that
/// makes them 128 applies them itself (nobody else is applying them), so the queue's
/// memory stays bounded, and every read still equals the disk.
#[test]
fn the_writer_applies_its_queue_itself_once_128_wait() {
    let mut peer = manual(test_config());
    let before = peer.engine.memory_used();
    for i in 0..127 {
        let outcome = peer.commit(1, &[(&format!("r1/k{i:03}"), Some("v"))]);
        assert_eq!(outcome.in_memory, 1, "queued for memory");
    }
    assert_eq!(
        peer.engine.memory_used(),
        before,
        "127 wait: none applied yet"
    );
    peer.commit(1, &[("r1/k127", Some("v"))]);
    assert!(
        peer.engine.memory_used() > before,
        "the 128th write applied them"
    );
    peer.commit(1, &[("r1/k128", Some("v"))]);
    assert!(peer.check(1), "served from memory, equal to the disk");
    assert_eq!(
        peer.scan(1).len(),
        130,
        "the one after too, applied by the read"
    );
    assert!(peer.engine.cross_check().is_empty());
}

/// Once a reader has looked at the region, its writes go to memory at once (and park the
/// state before them for readers that meet them in flight): nothing is queued.
#[test]
fn a_region_read_lately_writes_memory_at_once() {
    let mut peer = manual(test_config());
    assert!(peer.check(1));
    let before = peer.engine.memory_used();
    peer.commit(1, &[("r1/b", Some("1"))]);
    assert_eq!(drains(&peer), 0);
    assert!(peer.engine.memory_used() > before);
    assert!(peer.check(1));
}

/// With no ticker, the embedder's `tick` does its duty: a region read lately writes
/// memory at once until a tick passes with no read of it; then its writes queue again,
/// and the next tick applies them.
#[test]
fn a_tick_lets_an_unread_region_queue_again_and_applies_the_queue() {
    let mut peer = manual(test_config());
    assert!(peer.check(1), "read: its stripe is marked");
    peer.engine.tick();
    let before = peer.engine.memory_used();
    peer.commit(1, &[("r1/b", Some("1"))]);
    assert_eq!(drains(&peer), 1, "queued: no read since the tick");
    assert_eq!(peer.engine.memory_used(), before);
    peer.engine.tick();
    assert!(peer.engine.memory_used() > before, "the tick applied it");
    assert!(peer.check(1), "read again: marked");
    peer.commit(1, &[("r1/c", Some("2"))]);
    assert_eq!(
        drains(&peer),
        1,
        "written to memory at once: nothing more queued"
    );
    peer.engine.tick();
    peer.commit(1, &[("r1/d", Some("3"))]);
    assert_eq!(drains(&peer), 2, "queued again after a tick without reads");
    assert!(peer.engine.cross_check().is_empty());
    assert!(peer.check(1));
    assert_eq!(peer.scan(1).len(), 4);
}

/// A write that writes memory itself (here, one with a range delete: a load in progress
/// may refuse it, so it is never queued) applies the writes queued before it first, so
/// memory takes them in their order: a lock put by a queued write and deleted by the
/// next write stays deleted.
#[test]
fn a_write_to_memory_applies_the_queued_ones_first() {
    let mut peer = manual(test_config());
    let lock = LockRecord::new(LockType::Put, b"r1/k".to_vec(), 30, 3000);
    peer.put_locks(1, &[("r1/k", LockEntry::Single(lock))]);
    assert_eq!(drains(&peer), 1, "the lock waits for memory");
    let outcome = peer.write_entry(1, |b| {
        b.delete(Cf::Lock, encode_bytes(b"r1/k"));
        b.delete_range(Cf::Default, encode_bytes(b"r1/x"), encode_bytes(b"r1/y"));
    });
    assert!(outcome.in_memory > 0, "written to memory at once");
    assert_eq!(drains(&peer), 1, "nothing more queued");
    assert!(peer.check(1), "no lock in memory, as on disk");
    peer.idle();
    assert!(peer.check(1));
    assert!(peer.engine.cross_check().is_empty());
}

/// A region evicted and loaded again while one of its writes still waits for memory: the
/// load's start applies it first (to no range: the old one is gone), so the new copy,
/// whose disk snapshot holds it, starts with nothing queued for it; a lock put by it and
/// released after the load began stays released.
#[test]
fn a_reload_over_a_queued_write_reads_as_the_disk() {
    let mut peer = manual(test_config());
    let lock = LockRecord::new(LockType::Put, b"r1/k".to_vec(), 30, 3000);
    peer.put_locks(1, &[("r1/k", LockEntry::Single(lock))]);
    assert_eq!(drains(&peer), 1);
    // Evicted and loaded again, the start before the queued task.
    peer.engine
        .evict_region(RegionId(1), EvictReason::Manual, None);
    while peer.engine.pending_kinds().contains(&TaskKind::Delete) {
        let at = peer
            .engine
            .pending_kinds()
            .iter()
            .position(|k| *k == TaskKind::Delete);
        peer.engine.run_pending(at.unwrap());
    }
    let (r, index) = (peer.region(1), peer.applied(1));
    peer.engine.load_region(r, index).unwrap();
    let start = peer
        .engine
        .pending_kinds()
        .iter()
        .position(|k| *k == TaskKind::LoadStart);
    assert_eq!(
        peer.engine.run_pending(start.unwrap()),
        Some(TaskKind::LoadStart)
    );
    // The lock is released after the load began; then everything else runs.
    peer.write_entry(1, |b| {
        b.delete(Cf::Lock, encode_bytes(b"r1/k"));
    });
    peer.idle();
    assert!(peer.check(1), "served from memory, no lock, as on disk");
    assert!(peer.engine.cross_check().is_empty());
}

/// A queued write that memory refuses (the capacity) evicts its region when it is
/// applied, as a write to memory would have; reads then go to disk and equal it.
#[test]
fn a_queued_write_memory_refuses_evicts_its_region() {
    let config = Config::from_toml(
        r#"
        capacity = "64KiB"
        gc-run-interval = "1h"
        load-evict-interval = "1h"
        "#,
    )
    .unwrap();
    let mut peer = manual(config);
    let value = "v".repeat(2000);
    for i in 0..40 {
        let key = format!("r1/big{i:03}");
        peer.commit(1, &[(&key, Some(&value))]);
    }
    peer.idle_without_rounds();
    let stats = peer.engine.stats();
    assert_eq!(stats.evicted(EvictReason::MemoryLimitReached), 1);
    assert!(!peer.check(1), "evicted: the disk serves it");
    assert_eq!(peer.scan(1).len(), 41);
}

/// A batch that writes keys outside the regions it names (here, region 2's key in region
/// 1's entry) would reach region 2's memory without holding its stripe: region 2 is
/// evicted (`WriteFailed`) before anything is written, whether region 1's memory side is
/// queued or not, and both regions read as the disk.
#[test]
fn a_batch_reaching_a_region_it_does_not_name_evicts_that_region() {
    let mut peer = manual(test_config());
    peer.add(region(2, "r2", Some("r3"), 1));
    peer.commit(2, &[("r2/a", Some("0"))]);
    peer.load(2);
    let outcome = peer.commit(1, &[("r1/b", Some("1")), ("r2/b", Some("2"))]);
    assert_eq!(
        outcome.evicted,
        vec![(RegionId(2), EvictReason::WriteFailed)]
    );
    assert!(peer.check(1), "region 1 still served from memory");
    assert!(!peer.check(2), "region 2 reads the disk");
    // Keys inside the named region: nothing is evicted.
    let outcome = peer.commit(1, &[("r1/c", Some("3"))]);
    assert!(outcome.evicted.is_empty());
    peer.idle();
    assert!(peer.check(1));
    assert!(peer.engine.cross_check().is_empty());
}
