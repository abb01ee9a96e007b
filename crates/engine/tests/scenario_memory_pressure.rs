//! Scenario 9 of `docs/scenarios.md` (tikv/tikv#17106, #17442, #18093): a write-heavy workload
//! pushes memory to the evict threshold. Usage never passes capacity, a write that would
//! pass it evicts its region instead, loading stops at the stop-load threshold, a write
//! past the evict threshold has the policy evict early so a steady workload never reaches
//! capacity, and over many policy rounds no hot region flips between loaded and evicted
//! more than once.
//!
//! The engines run their background work by hand (`Background::Manual`): a test says
//! when the rounds writes ask for run, so each outcome is deterministic.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::collections::BTreeMap;

use common::{Peer, region};
use ime_disk::MemDisk;
use ime_engine::{Background, Config, Engine, EngineError, TaskKind};
use ime_observer::{PeerRole, RaftEvent};
use ime_region::{EvictReason, RegionState};

const REGIONS: u64 = 6;

fn config() -> Config {
    Config::from_toml(
        r#"
        capacity = "128KiB"
        gc-run-interval = "1h"
        load-evict-interval = "1h"
        "#,
    )
    .unwrap()
}

fn key(i: usize) -> String {
    format!("{i:03}")
}

/// Six regions of about 25 KiB each (three versions of each key, so that reads do MVCC
/// work the cache saves), every one led by this store.
fn cluster() -> Peer<MemDisk> {
    let policy = Box::new(ime_engine::eviction::default_policy());
    let engine =
        Engine::with_background(MemDisk::new(), config(), policy, Background::Manual).unwrap();
    let mut peer = Peer::new(engine);
    let value = "v".repeat(30);
    for id in 1..=REGIONS {
        let (start, end) = (format!("r{id}"), format!("r{}", id + 1));
        peer.add(region(id, &start, Some(&end), 1));
        for version in 0..3 {
            for i in 0..100 {
                let v = format!("{version}{value}");
                peer.commit(id, &[(&format!("{start}/{}", key(i)), Some(&v))]);
            }
        }
        let r = peer.region(id);
        peer.engine
            .on_event(&RaftEvent::RoleChange {
                region: r,
                role: PeerRole::Leader,
                term: 1,
            })
            .unwrap();
    }
    peer
}

fn cached(peer: &Peer<MemDisk>, id: u64) -> bool {
    matches!(
        peer.state(id),
        Some(RegionState::Active | RegionState::Loading)
    )
}

/// Scenario 9: usage stays under capacity whatever the writes; loads stop at the
/// stop-load threshold; a write that would pass capacity evicts its region (here the
/// rounds loads and writes ask for never run: the wall is reached).
#[test]
fn scenario_09_memory_pressure_never_passes_capacity() {
    let mut peer = cluster();
    let t = peer.engine.config().thresholds();
    let mut refused = 0;
    for id in 1..=REGIONS {
        match peer.engine.load_region(peer.region(id), peer.applied(id)) {
            Ok(_) => {}
            Err(EngineError::LoadRefused { .. }) => refused += 1,
            Err(err) => panic!("{err}"),
        }
        peer.idle_without_rounds();
        assert!(peer.engine.memory_used() <= t.capacity);
    }
    assert!(refused > 0, "loading stops at the stop-load threshold");
    // A load is admitted below the stop-load threshold but may end past the evict
    // threshold; it then queues a policy round, as a write would (left queued here).
    let used = peer.engine.memory_used();
    assert_eq!(
        peer.engine.pending_kinds().contains(&TaskKind::PolicyRound),
        used > t.evict_threshold,
        "a round is queued exactly when loads left memory ({used}) past the evict threshold"
    );
    let loaded: Vec<u64> = (1..=REGIONS).filter(|id| cached(&peer, *id)).collect();
    assert!(!loaded.is_empty());
    // Write-heavy: every cached region grows until writes would pass capacity.
    let value = "w".repeat(400);
    for round in 0..60 {
        for id in &loaded {
            let k = format!("r{id}/{}", key(1000 + round));
            peer.commit(*id, &[(&k, Some(&value))]);
            // Writes of regions nobody reads defer their memory side: applied here.
            peer.idle_without_rounds();
            assert!(
                peer.engine.memory_used() <= t.capacity,
                "usage passed capacity"
            );
        }
    }
    assert!(peer.engine.stats().evicted(EvictReason::MemoryLimitReached) > 0);
    for id in 1..=REGIONS {
        peer.check(id);
    }
}

/// Scenario 9, calmly: the round a write asks for when memory passes the evict threshold
/// runs as background work does, between writes; a steady write-heavy workload then
/// settles under the evict threshold without any write reaching capacity.
#[test]
fn scenario_09_a_steady_write_load_settles_under_the_evict_threshold() {
    let mut peer = cluster();
    let t = peer.engine.config().thresholds();
    for id in 1..=REGIONS {
        let _ = peer.engine.load_region(peer.region(id), peer.applied(id));
        peer.idle();
        // A load that ended past the evict threshold had its round bring memory back.
        assert!(peer.engine.memory_used() <= t.evict_threshold);
    }
    let value = "w".repeat(400);
    let mut peak = 0;
    for round in 0..60 {
        for id in 1..=REGIONS {
            let k = format!("r{id}/{}", key(1000 + round));
            peer.commit(id, &[(&k, Some(&value))]);
            peak = peak.max(peer.engine.memory_used());
            peer.idle(); // the background keeps up: queued rounds and frees run
        }
    }
    let stats = peer.engine.stats();
    assert_eq!(
        stats.evicted(EvictReason::MemoryLimitReached),
        0,
        "no write reached capacity"
    );
    assert!(
        stats.evicted(EvictReason::MemoryPressure) > 0,
        "the policy evicted early"
    );
    assert!(peak <= t.capacity, "peak {peak} passed capacity");
    assert!(
        peer.engine.memory_used() <= t.evict_threshold,
        "{} settled above the evict threshold {}",
        peer.engine.memory_used(),
        t.evict_threshold
    );
    for id in 1..=REGIONS {
        peer.check(id);
    }
    assert!(peer.engine.cross_check().is_empty());
}

/// Scenario 9, over policy rounds: hot regions (read every round) under write pressure
/// never flip between loaded and evicted more than once.
#[test]
fn scenario_09_no_hot_region_flaps_over_policy_rounds() {
    let mut peer = cluster();
    let t = peer.engine.config().thresholds();
    let hot = [1, 2, 3];
    let mut flips: BTreeMap<u64, usize> = BTreeMap::new();
    let mut was: BTreeMap<u64, bool> = BTreeMap::new();
    let value = "w".repeat(300);
    for round in 0..40 {
        for id in hot {
            for _ in 0..5 {
                peer.check(id);
            }
        }
        for id in 1..=REGIONS {
            let k = format!("r{id}/{}", key(round % 20));
            peer.commit(id, &[(&k, Some(&value))]);
            assert!(peer.engine.memory_used() <= t.capacity);
        }
        // GC keeps the hot regions' growth in check: old versions go.
        let safe_point = peer.next_ts();
        peer.engine.set_safe_point(safe_point);
        peer.engine.run_gc();
        peer.engine.run_policy();
        peer.idle();
        for id in hot {
            let now = cached(&peer, id);
            if was.get(&id).is_some_and(|w| *w && !now) {
                *flips.entry(id).or_default() += 1;
            }
            was.insert(id, now);
        }
        for id in 4..=REGIONS {
            assert!(
                !cached(&peer, id),
                "cold region {id} is never worth loading"
            );
        }
    }
    for id in hot {
        assert!(
            flips.get(&id).copied().unwrap_or(0) <= 1,
            "region {id} flapped: {flips:?}"
        );
        assert!(was[&id], "hot region {id} ends cached");
    }
    for id in 1..=REGIONS {
        peer.check(id);
    }
    assert!(peer.engine.cross_check().is_empty());
}
