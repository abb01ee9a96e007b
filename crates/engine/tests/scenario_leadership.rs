//! Scenarios 10 and 11 of `docs/scenarios.md`: the leader-transfer warm-up (tikv/tikv#17882,
//! #18453, #19776) and pinned ranges (tikv/tikv#16966, #19584).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Peer, region};
use ime_engine::LoadStage;
use ime_memkv::codec::encode_bytes;
use ime_observer::{PeerRole, RaftEvent};
use ime_region::{KeyRange, RegionId, RegionState};

fn transfer(peer: &Peer<ime_disk::MemDisk>, id: u64, term: u64) {
    let event = RaftEvent::TransferLeader {
        region: peer.region(id),
        term,
        cached: true,
    };
    peer.engine.on_event(&event).unwrap();
}

fn role(peer: &Peer<ime_disk::MemDisk>, id: u64, role: PeerRole, term: u64) {
    let event = RaftEvent::RoleChange {
        region: peer.region(id),
        role,
        term,
    };
    peer.engine.on_event(&event).unwrap();
}

/// TiKV's rule: a transfer warms the region up only when the old leader had it cached;
/// otherwise the acknowledgement does not wait and nothing is loaded.
#[test]
fn a_transfer_of_a_region_the_old_leader_did_not_cache_does_not_warm_up() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("z"), 1));
    peer.commit(1, &[("b", Some("1"))]);
    let event = RaftEvent::TransferLeader {
        region: peer.region(1),
        term: 7,
        cached: false,
    };
    peer.engine.on_event(&event).unwrap();
    assert!(peer.engine.transfer_leader_ready(RegionId(1), 7));
    peer.idle();
    assert_eq!(peer.state(1), None, "not loaded");
    // The same transfer with the hint warms it up.
    transfer(&peer, 1, 8);
    peer.idle();
    assert_eq!(peer.state(1), Some(RegionState::Active));
    assert!(peer.check(1));
}

/// Scenario 10: a region transferred to this store is loaded before the transfer is
/// acknowledged.
#[test]
fn scenario_10_warm_up_loads_before_the_acknowledgement() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("z"), 1));
    peer.commit(1, &[("b", Some("1"))]);
    peer.engine.hold_loads(LoadStage::AfterStart);
    transfer(&peer, 1, 7);
    assert!(
        !peer.engine.transfer_leader_ready(RegionId(1), 7),
        "not before the load"
    );
    peer.engine.release_loads();
    peer.idle();
    assert!(peer.engine.transfer_leader_ready(RegionId(1), 7));
    role(&peer, 1, PeerRole::Leader, 7);
    assert!(peer.check(1), "the new leader reads from memory at once");
}

/// Scenario 10: the acknowledgement is never held past the deadline, and a retry of the
/// same transfer does not extend it.
#[test]
fn scenario_10_warm_up_never_holds_past_its_deadline() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("z"), 1));
    peer.engine.hold_loads(LoadStage::BeforeStart);
    let started = Instant::now();
    transfer(&peer, 1, 7);
    std::thread::sleep(Duration::from_millis(150));
    transfer(&peer, 1, 7); // a retry: the deadline stays where it was
    while !peer.engine.transfer_leader_ready(RegionId(1), 7) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "held past its deadline"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "the deadline is the configured 300ms: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(450) + Duration::from_secs(1),
        "a retry extended it: {waited:?}"
    );
    assert_eq!(
        peer.state(1),
        Some(RegionState::Pending),
        "the load itself is still held"
    );
    peer.engine.release_loads();
    peer.idle();
}

/// Scenario 10: a change of term or of leader clears the warm-up.
#[test]
fn scenario_10_a_new_term_clears_the_warm_up() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("z"), 1));
    peer.engine.hold_loads(LoadStage::BeforeStart);
    transfer(&peer, 1, 7);
    assert!(!peer.engine.transfer_leader_ready(RegionId(1), 7));
    role(&peer, 1, PeerRole::Follower, 8);
    assert!(
        peer.engine.transfer_leader_ready(RegionId(1), 7),
        "nothing to wait for any more"
    );
    assert_eq!(
        peer.state(1),
        None,
        "becoming follower evicts the warming region"
    );
    peer.engine.release_loads();
    peer.idle();
}

/// Scenario 11 (tikv/tikv#16966, #19584): a pinned range is loaded where this store
/// leads, comes back after leadership returns, and after unpinning its regions are fully
/// removed — not stuck in Evicting — and can be loaded again.
#[test]
fn scenario_11_pinned_ranges() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("m"), 1));
    peer.add(region(2, "m", Some("z"), 1));
    peer.commit(1, &[("b", Some("1"))]);
    peer.commit(2, &[("n", Some("2"))]);
    role(&peer, 1, PeerRole::Leader, 1);
    let pinned = KeyRange::new(encode_bytes(b"a"), encode_bytes(b"m")).unwrap();
    peer.engine.pin_range(pinned.clone());
    peer.idle();
    assert_eq!(
        peer.state(1),
        Some(RegionState::Active),
        "pinned and led: loaded"
    );
    assert_eq!(peer.state(2), None, "not pinned");
    assert!(peer.check(1));
    // Leadership moves away and comes back.
    role(&peer, 1, PeerRole::Follower, 2);
    peer.idle();
    assert_eq!(peer.state(1), None);
    role(&peer, 1, PeerRole::Leader, 3);
    peer.idle();
    assert_eq!(
        peer.state(1),
        Some(RegionState::Active),
        "loaded again where it leads"
    );
    // The policy never evicts it.
    for _ in 0..5 {
        peer.engine.run_policy();
    }
    peer.idle();
    assert_eq!(peer.state(1), Some(RegionState::Active));
    // Unpinned: fully removed, then loadable again.
    let open = peer.snapshot(1);
    peer.engine.unpin_range(&pinned);
    drop(open);
    peer.idle();
    assert!(
        peer.engine.regions().is_empty(),
        "{}",
        peer.engine.regions_json()
    );
    peer.load(1);
    assert!(peer.check(1));
}

/// A leader that steps down and back up while its old copy is still being freed (a reader
/// holds it): the load it asks for waits for the memory, then runs — found by the
/// simulator, where whether the load ran depended on the deleter's timing. Writes while
/// it waits are on disk and in the load; a range eviction meanwhile drops it.
#[test]
fn a_load_behind_its_own_eviction_runs_once_the_memory_is_freed() {
    let mut peer = Peer::in_memory();
    peer.add(region(1, "a", Some("z"), 1));
    peer.commit(1, &[("b", Some("1"))]);
    peer.load(1);
    let held = peer.snapshot(1);
    role(&peer, 1, PeerRole::Follower, 2);
    assert!(peer.state(1).is_some_and(RegionState::is_evicting));
    let (r, index) = (peer.region(1), peer.applied(1));
    peer.engine.load_region(r.clone(), index).unwrap();
    peer.commit(1, &[("c", Some("2"))]);
    assert!(!peer.check(1), "not while the old copy is being freed");
    drop(held);
    peer.idle();
    assert_eq!(peer.state(1), Some(RegionState::Active));
    assert!(
        peer.check(1),
        "served from memory, with the write made meanwhile"
    );

    // The same wait, cut by an eviction of the range (an SST ingest): no load.
    let held = peer.snapshot(1);
    role(&peer, 1, PeerRole::Follower, 3);
    peer.engine.load_region(r.clone(), peer.applied(1)).unwrap();
    peer.engine
        .on_event(&RaftEvent::IngestSst {
            region: r.clone(),
            ranges: vec![r.range.clone()],
        })
        .unwrap();
    drop(held);
    peer.idle();
    assert!(peer.state(1).is_none(), "{:?}", peer.state(1));
    // A region overlapping one still cached is refused, as before.
    peer.load(1);
    let wider = region(9, "a", None, 1);
    assert!(peer.engine.load_region(wider, 0).is_err());
}

/// Scenario 15 (tikv/tikv#17767, #18046): an uninitialized peer — a Raft message created
/// it, no snapshot has reached it, so its region is the whole keyspace at epoch 0/0 — is
/// transferred leadership, pinned over, made leader and destroyed. It is never loaded, by
/// any path, and a real region loads beside it. (Before the fix the warm-up cached
/// `["", +inf)`, and every real region's load was then refused as overlapping it.)
#[test]
fn scenario_15_an_uninitialized_peer_is_never_loaded() {
    let mut peer = Peer::in_memory();
    let placeholder = ime_region::Region::new(
        RegionId(9),
        KeyRange::everything(),
        ime_region::RegionEpoch::default(),
    );
    peer.engine
        .on_event(&RaftEvent::TransferLeader {
            region: placeholder.clone(),
            term: 3,
            cached: true,
        })
        .unwrap();
    assert!(peer.engine.transfer_leader_ready(RegionId(9), 3));
    peer.engine.pin_range(KeyRange::everything());
    peer.engine
        .on_event(&RaftEvent::RoleChange {
            region: placeholder.clone(),
            role: PeerRole::Leader,
            term: 3,
        })
        .unwrap();
    let refused = peer.engine.load_region(placeholder, 0);
    assert!(
        matches!(
            &refused,
            Err(ime_engine::EngineError::LoadRefused {
                reason: ime_engine::Refusal::Conflict(
                    ime_engine::region::InsertRejected::Uninitialized
                ),
                ..
            })
        ),
        "{refused:?}"
    );
    peer.engine.run_policy();
    peer.idle();
    assert!(
        peer.engine.regions().is_empty(),
        "{}",
        peer.engine.regions_json()
    );
    peer.engine
        .on_event(&RaftEvent::DestroyPeer {
            id: RegionId(9),
            region: None,
        })
        .unwrap();
    peer.add(region(1, "a", Some("z"), 1));
    peer.commit(1, &[("b", Some("1"))]);
    peer.load(1);
    assert_eq!(peer.state(1), Some(RegionState::Active));
    assert!(peer.check(1));
}

/// The largest warm-up timeout the configuration accepts runs a transfer without a panic;
/// one past it (the issue's `18446744073709551615s`) is refused when the configuration is
/// read, so it never reaches the deadline arithmetic.
#[test]
fn no_accepted_warm_up_timeout_can_panic_a_transfer() {
    let text = |timeout: &str| format!("warmup-timeout = \"{timeout}\"");
    assert!(ime_engine::Config::from_toml(&text("18446744073709551615s")).is_err());
    let config = ime_engine::Config::from_toml(&text("1h")).unwrap();
    let engine = ime_engine::Engine::new(ime_disk::MemDisk::new(), config).unwrap();
    let mut peer = Peer::new(engine);
    peer.add(region(1, "a", Some("z"), 1));
    transfer(&peer, 1, 4);
    transfer(&peer, 1, 4);
    peer.idle();
    assert!(peer.engine.transfer_leader_ready(RegionId(1), 4));
    let huge = ime_engine::Config {
        warmup_timeout: ime_engine::ReadableDuration(Duration::MAX),
        ..ime_engine::Config::default()
    };
    assert!(
        peer.engine.update_config(huge).is_err(),
        "refused at run time too"
    );
}
