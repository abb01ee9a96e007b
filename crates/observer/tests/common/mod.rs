//! Helpers shared by the observer crate's integration tests.

#![allow(dead_code, reason = "each test file uses a different subset")]

use ime_observer::{EventKind, PeerRole, RaftEvent};
use ime_region::{KeyRange, Region, RegionEpoch, RegionId, SplitChild};

pub(crate) fn region(id: u64, start: &str, end: &str, version: u64, conf_ver: u64) -> Region {
    Region::new(
        RegionId(id),
        KeyRange::new(start, end).unwrap(),
        RegionEpoch::new(version, conf_ver),
    )
}

/// The seed sequence of `docs/scenarios.md` item 1 (tikv/tikv#17405) as Raft events: the region
/// is at version 221; a snapshot moves it to 222; then it splits.
pub(crate) fn seed_sequence() -> Vec<RaftEvent> {
    let v221 = region(34855, "a", "z", 221, 5);
    let v222 = region(34855, "a", "z", 222, 5);
    vec![
        RaftEvent::RoleChange {
            region: v221.clone(),
            role: PeerRole::Follower,
            term: 7,
        },
        RaftEvent::ApplySnapshot {
            before: Some(v221),
            after: v222.clone(),
            applied_index: 150,
        },
        RaftEvent::Split {
            before: v222,
            children: vec![
                SplitChild {
                    region: region(34855, "a", "m", 223, 5),
                    applied_index: 151,
                },
                SplitChild {
                    region: region(40000, "m", "z", 223, 5),
                    applied_index: 5,
                },
            ],
        },
    ]
}

/// One example of every event kind (checked against [`EventKind::ALL`]).
pub(crate) fn one_of_each() -> Vec<RaftEvent> {
    let r = region(7, "b", "k", 10, 3);
    let bumped = region(7, "b", "k", 11, 3);
    let next = region(8, "k", "", 4, 2);
    let examples = vec![
        RaftEvent::ApplySnapshot {
            before: None,
            after: r.clone(),
            applied_index: 99,
        },
        seed_sequence().remove(2),
        RaftEvent::PrepareMerge {
            before: r.clone(),
            after: bumped.clone(),
        },
        RaftEvent::CommitMerge {
            before: next.clone(),
            after: region(8, "b", "", 12, 3),
            source: bumped.clone(),
        },
        RaftEvent::RollbackMerge {
            before: bumped.clone(),
            after: region(7, "b", "k", 12, 3),
        },
        RaftEvent::ChangePeer {
            before: r.clone(),
            after: region(7, "b", "k", 10, 4),
        },
        RaftEvent::RoleChange {
            region: r.clone(),
            role: PeerRole::Leader,
            term: 9,
        },
        RaftEvent::TransferLeader {
            region: r.clone(),
            term: 9,
            cached: true,
        },
        RaftEvent::DestroyPeer {
            id: RegionId(99),
            region: None,
        },
        RaftEvent::IngestSst {
            region: r.clone(),
            ranges: vec![KeyRange::new("c", "d").unwrap()],
        },
        RaftEvent::DeleteRange {
            region: r.clone(),
            range: KeyRange::new("b", "e").unwrap(),
        },
        RaftEvent::UnsafeDestroyRange {
            range: KeyRange::new("\x00", "").unwrap(),
        },
        RaftEvent::PrepareFlashback {
            before: r.clone(),
            after: r.clone(),
        },
        RaftEvent::FinishFlashback {
            before: r.clone(),
            after: r.clone(),
        },
        RaftEvent::SwitchWitness {
            before: r.clone(),
            after: r.clone(),
            is_witness: true,
        },
        RaftEvent::CompactLog {
            region: r.clone(),
            compact_index: 40,
        },
        RaftEvent::UnsafeRecovery { region: r.clone() },
        RaftEvent::ForceLeader {
            region: r,
            term: 10,
        },
    ];
    let kinds: Vec<EventKind> = examples.iter().map(RaftEvent::kind).collect();
    assert_eq!(
        kinds,
        EventKind::ALL,
        "one example per kind, in declaration order"
    );
    examples
}
