//! Property tests of the controller: random sequences of load requests, load stages,
//! Raft events, reads, fences, GC and deletions, with the engine's part played by a
//! small harness that carries the decisions out (queued loads and deletes run later, in
//! an order the test chooses). After every step:
//!
//! - the region map's invariants hold;
//! - memory is where the states say: every Loading or Active region has a memory range,
//!   no other region has one, no two regions share one, and every range the controller
//!   dropped or split is never handed out again;
//! - no load ever started while a fence over its range stood (the fence's promise), and
//!   no region overlapping a standing fence is Loading or Active;
//! - a delete is only asked for an Evicting region, and every Evicting region's delete
//!   was asked for.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ime_controller::{Action, Config, Controller, Decisions, Env, FenceId, LoadStart};
use ime_observer::{PeerRole, RaftEvent};
use ime_region::{
    EvictReason, KeyRange, LoadTicket, ReadRequest, Region, RegionEpoch, RegionId, RegionState,
    SnapshotTicket, SplitChild,
};
use ime_types::RangeId;
use proptest::prelude::*;

const KEYS: [&str; 5] = ["a", "c", "e", "g", "i"];

#[derive(Clone, Debug)]
enum Op {
    /// The embedder asks for slot `slot` (one of four adjacent regions) at `version`.
    Load {
        slot: usize,
        version: u64,
    },
    /// A queued first stage runs (the `pick`-th queued one).
    Start {
        pick: usize,
    },
    /// A started load ends.
    Finish {
        pick: usize,
        ok: bool,
    },
    /// A queued delete runs.
    Delete {
        pick: usize,
    },
    Read {
        slot: usize,
        version: u64,
    },
    Release {
        pick: usize,
    },
    ApplySnapshot {
        slot: usize,
        version: u64,
    },
    Split {
        slot: usize,
        version: u64,
    },
    Merge {
        slot: usize,
        version: u64,
    },
    Role {
        slot: usize,
        leader: bool,
    },
    Destroy {
        slot: usize,
    },
    Ingest {
        slot: usize,
    },
    Fence {
        slot: usize,
    },
    Lift {
        pick: usize,
        abandoned: bool,
    },
    Gc {
        target: u64,
    },
    Pin {
        slot: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..4usize;
    let version = 1..4u64;
    let pick = 0..8usize;
    prop_oneof![
        4 => (slot.clone(), version.clone()).prop_map(|(slot, version)| Op::Load { slot, version }),
        4 => pick.clone().prop_map(|pick| Op::Start { pick }),
        4 => (pick.clone(), proptest::bool::weighted(0.9)).prop_map(|(pick, ok)| Op::Finish { pick, ok }),
        3 => pick.clone().prop_map(|pick| Op::Delete { pick }),
        2 => (slot.clone(), version.clone()).prop_map(|(slot, version)| Op::Read { slot, version }),
        2 => pick.clone().prop_map(|pick| Op::Release { pick }),
        1 => (slot.clone(), version.clone()).prop_map(|(slot, version)| Op::ApplySnapshot { slot, version }),
        1 => (slot.clone(), version.clone()).prop_map(|(slot, version)| Op::Split { slot, version }),
        1 => (0..3usize, version).prop_map(|(slot, version)| Op::Merge { slot, version }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, leader)| Op::Role { slot, leader }),
        1 => slot.clone().prop_map(|slot| Op::Destroy { slot }),
        1 => slot.clone().prop_map(|slot| Op::Ingest { slot }),
        1 => slot.clone().prop_map(|slot| Op::Fence { slot }),
        1 => (pick.clone(), proptest::bool::weighted(0.2)).prop_map(|(pick, abandoned)| Op::Lift { pick, abandoned }),
        1 => (0..50u64).prop_map(|target| Op::Gc { target }),
        1 => slot.prop_map(|slot| Op::Pin { slot }),
    ]
}

/// Region `slot` of four adjacent ones, at `version`.
fn region(slot: usize, version: u64) -> Region {
    Region::new(
        RegionId(slot as u64 + 1),
        KeyRange::new(KEYS[slot], KEYS[slot + 1]).unwrap(),
        RegionEpoch::new(version, 1),
    )
}

#[derive(Default)]
struct Harness {
    queued_loads: Vec<RegionId>,
    queued_deletes: BTreeSet<RegionId>,
    loads: Vec<LoadTicket>,
    snapshots: Vec<SnapshotTicket>,
    fences: Vec<(FenceId, KeyRange)>,
    /// Every memory range dropped or split away: never to be handed out again.
    retired: BTreeSet<RangeId>,
    next_split_id: u64,
}

impl Harness {
    fn carry_out(&mut self, ctl: &Controller, decisions: Decisions) {
        for action in decisions {
            match action {
                Action::DropMemory { range, .. } => {
                    assert!(self.retired.insert(range), "{range} dropped twice");
                }
                Action::SplitMemory { parent, .. } => {
                    assert!(
                        self.retired.insert(parent),
                        "{parent} split after it was retired"
                    );
                }
                Action::Load(id) => self.queued_loads.push(id),
                Action::Delete(id) => {
                    assert_eq!(
                        ctl.map().state(id),
                        Some(RegionState::Evicting),
                        "delete asked for region {id} not Evicting"
                    );
                    self.queued_deletes.insert(id);
                }
                Action::Fire(callback) => callback.fire(),
                Action::Gap { .. }
                | Action::Evicted { .. }
                | Action::Step { .. }
                | Action::Refused { .. }
                | Action::HeldByFence(_) => {}
            }
        }
    }
}

fn pick<T>(items: &mut Vec<T>, pick: usize) -> Option<T> {
    (!items.is_empty()).then(|| items.remove(pick % items.len()))
}

fn run(ops: &[Op]) {
    let mut ctl = Controller::new(Config::default());
    let mut h = Harness::default();
    let env = Env {
        now: Duration::ZERO,
        memory_used: 0,
    };
    for op in ops {
        let mut out = Decisions::new();
        step(&mut ctl, &mut h, op, env, &mut out);
        h.carry_out(&ctl, out);
        check(&ctl, &h, op);
    }
}

fn step(ctl: &mut Controller, h: &mut Harness, op: &Op, env: Env, out: &mut Decisions) {
    match *op {
        Op::Load { slot, version } => {
            let _ = ctl.request_load(region(slot, version), 0, env, out);
        }
        Op::Start { pick: p } => {
            let Some(id) = pick(&mut h.queued_loads, p) else {
                return;
            };
            if let LoadStart::Start { ticket, .. } = ctl.start_load(id, env, out) {
                let range = &ticket.region.range;
                assert!(
                    !h.fences.iter().any(|(_, f)| f.overlaps(range)),
                    "load of {} started inside a fence",
                    ticket.region
                );
                h.loads.push(ticket);
            }
        }
        Op::Finish { pick: p, ok } => {
            if let Some(ticket) = pick(&mut h.loads, p) {
                ctl.finish_load(&ticket, ok, out);
            }
        }
        Op::Delete { pick: p } => {
            let ids: Vec<RegionId> = h.queued_deletes.iter().copied().collect();
            if !ids.is_empty() {
                let id = ids[p % ids.len()];
                h.queued_deletes.remove(&id);
                ctl.finish_eviction(id, env, out).unwrap();
            }
        }
        Op::Read { slot, version } => {
            let request = ReadRequest {
                epoch_version: version,
                applied_index: 0,
                read_ts: 100,
            };
            if let Ok((ticket, _)) = ctl.acquire_snapshot(RegionId(slot as u64 + 1), request, out) {
                h.snapshots.push(ticket);
            }
        }
        Op::Release { pick: p } => {
            if let Some(ticket) = pick(&mut h.snapshots, p) {
                ctl.release_snapshot(ticket, out).unwrap();
            }
        }
        Op::ApplySnapshot { slot, version } => {
            let event = RaftEvent::ApplySnapshot {
                before: None,
                after: region(slot, version),
                applied_index: 10,
            };
            bypass(ctl, h, &event, env, out);
        }
        Op::Split { slot, version } => {
            let source = region(slot, version);
            h.next_split_id += 1;
            let mid = format!("{}m", KEYS[slot]);
            let child = |id: u64, start: &str, end: &str| SplitChild {
                region: Region::new(
                    RegionId(id),
                    KeyRange::new(start, end).unwrap(),
                    RegionEpoch::new(version + 1, 1),
                ),
                applied_index: 5,
            };
            let children = vec![
                child(source.id.0, KEYS[slot], &mid),
                child(100 + h.next_split_id, &mid, KEYS[slot + 1]),
            ];
            let event = RaftEvent::Split {
                before: source,
                children,
            };
            let _ = ctl.on_event(&event, env, out);
        }
        Op::Merge { slot, version } => {
            let (target, source) = (region(slot, version), region(slot + 1, version));
            let after = Region::new(
                target.id,
                KeyRange::new(KEYS[slot], KEYS[slot + 2]).unwrap(),
                RegionEpoch::new(version + 1, 1),
            );
            let event = RaftEvent::CommitMerge {
                before: target,
                after,
                source,
            };
            bypass(ctl, h, &event, env, out);
        }
        Op::Role { slot, leader } => {
            let role = if leader {
                PeerRole::Leader
            } else {
                PeerRole::Follower
            };
            let event = RaftEvent::RoleChange {
                region: region(slot, 1),
                role,
                term: 1,
            };
            ctl.on_event(&event, env, out).unwrap();
        }
        Op::Destroy { slot } => {
            let event = RaftEvent::DestroyPeer {
                id: RegionId(slot as u64 + 1),
                region: Some(region(slot, 1)),
            };
            bypass(ctl, h, &event, env, out);
        }
        Op::Ingest { slot } => {
            let event = RaftEvent::IngestSst {
                region: region(slot, 1),
                ranges: vec![region(slot, 1).range],
            };
            bypass(ctl, h, &event, env, out);
        }
        Op::Fence { slot } => {
            let range = region(slot, 1).range;
            let id = ctl.begin_fence(vec![range.clone()], EvictReason::UnannouncedChange, out);
            h.fences.push((id, range));
        }
        Op::Lift { pick: p, abandoned } => {
            if let Some((id, _)) = pick(&mut h.fences, p) {
                h.fences.retain(|(other, _)| *other != id);
                assert!(ctl.lift_fence(id, abandoned, env, out).is_some());
            }
        }
        Op::Gc { target } => {
            for t in ctl.gc_targets(target) {
                ctl.mark_collected(t.region, t.range, t.safe_point);
            }
        }
        Op::Pin { slot } => ctl.pin(region(slot, 1).range, env, out),
    }
}

/// An event whose data reaches the disk outside the write path: fenced, as the engine's
/// embedder does, and the fence kept standing until a later `Lift`.
fn bypass(ctl: &mut Controller, h: &mut Harness, event: &RaftEvent, env: Env, out: &mut Decisions) {
    if let Ok(id) = ctl.begin_bypass(event, env, out) {
        for range in event.bypass_ranges() {
            h.fences.push((id, range));
        }
    }
}

fn check(ctl: &Controller, h: &Harness, op: &Op) {
    if let Err(broken) = ctl.map().check_invariants() {
        panic!("invariant broken after {op:?}: {broken}");
    }
    let mut ranges: BTreeMap<RangeId, RegionId> = BTreeMap::new();
    for info in ctl.map().regions() {
        let id = info.region.id;
        let cached = ctl.cached(id);
        let has_memory = matches!(info.state, RegionState::Loading | RegionState::Active);
        assert_eq!(
            cached.is_some(),
            has_memory,
            "after {op:?}: region {id} is {} with memory {cached:?}",
            info.state
        );
        if let Some(c) = cached {
            assert!(
                !h.retired.contains(&c.range),
                "{} reused after {op:?}",
                c.range
            );
            if let Some(other) = ranges.insert(c.range, id) {
                panic!("{} held by regions {other} and {id} after {op:?}", c.range);
            }
        }
        if has_memory {
            for (_, fence) in &h.fences {
                assert!(
                    !fence.overlaps(&info.region.range),
                    "after {op:?}: region {id} is {} inside a standing fence",
                    info.state
                );
            }
        }
        if info.state == RegionState::Evicting {
            assert!(
                h.queued_deletes.contains(&id),
                "after {op:?}: region {id} is Evicting and nobody will delete it"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_keep_memory_fences_and_deletes_consistent(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

/// A region's known size is what was last said of it: 0 until then, the embedder's
/// approximate size, then the memory it held when dropped; nothing for a region the
/// controller does not know.
#[test]
fn the_known_size_is_the_last_one_noted() {
    let mut ctl = Controller::new(Config::default());
    let env = Env {
        now: Duration::ZERO,
        memory_used: 0,
    };
    let id = region(0, 1).id;
    ctl.request_load(region(0, 1), 5, env, &mut Decisions::new())
        .unwrap();
    assert_eq!(ctl.known_size(id), 0);
    ctl.note_approximate_size(id, 96 << 20);
    assert_eq!(ctl.known_size(id), 96 << 20);
    ctl.note_size(id, 80 << 20);
    assert_eq!(ctl.known_size(id), 80 << 20);
    ctl.note_approximate_size(RegionId(2), 1);
    assert_eq!(ctl.known_size(RegionId(2)), 0);
}
