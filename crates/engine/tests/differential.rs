//! The differential property test of the engine: random interleavings of writes, apply
//! reports, loads, evictions, GC, reads, and Raft events of every kind — some dropped by
//! the fault-injection wrapper on the bus — run on the engine; every read is compared with
//! an MVCC reading of the disk at the same snapshot. Every read equal, no panic, no
//! eviction callback missed.
//!
//! Events are dropped only where the loss shows in an epoch or an applied index (snapshot
//! apply, split, merge, membership and role changes, log compaction, leader transfer).
//! An ingest or a delete range that is lost while its entry's index is still reported
//! cannot be detected by any cache — their delivery is synchronous by contract — so they
//! are always delivered here.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Peer, bypass_put, region};
use ime_disk::{Cf, MemDisk, WriteBatch};
use ime_engine::BypassFence;
use ime_memkv::codec::encode_bytes;
use ime_observer::{
    EventBus, EventKind, FaultAction, FaultRule, FaultyObserver, PeerRole, RaftEvent,
};
use ime_region::{EvictCallback, EvictReason, KeyRange, Region, RegionEpoch, RegionId, SplitChild};
use proptest::prelude::*;

const KEYS: u8 = 40;

#[derive(Clone, Debug)]
enum EventOp {
    Snapshot { bump: bool },
    Split,
    ChangePeer,
    Merge,
    RollbackMerge,
    Role { leader: bool },
    Transfer,
    Ingest,
    DeleteRange,
    UnsafeDestroy,
    Flashback,
    Witness,
    CompactLog,
    Recovery { force: bool },
    DestroyUninitialized,
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        region: u8,
        key: u8,
        value: Option<u8>,
    },
    Empty {
        region: u8,
    },
    Load {
        region: u8,
    },
    Evict {
        region: u8,
    },
    Gc,
    Read {
        region: u8,
        hold: bool,
    },
    Release,
    Event {
        region: u8,
        op: EventOp,
        drop: bool,
    },
}

fn event_op() -> impl Strategy<Value = EventOp> {
    prop_oneof![
        any::<bool>().prop_map(|bump| EventOp::Snapshot { bump }),
        Just(EventOp::Split),
        Just(EventOp::ChangePeer),
        Just(EventOp::Merge),
        Just(EventOp::RollbackMerge),
        any::<bool>().prop_map(|leader| EventOp::Role { leader }),
        Just(EventOp::Transfer),
        Just(EventOp::Ingest),
        Just(EventOp::DeleteRange),
        Just(EventOp::UnsafeDestroy),
        Just(EventOp::Flashback),
        Just(EventOp::Witness),
        Just(EventOp::CompactLog),
        any::<bool>().prop_map(|force| EventOp::Recovery { force }),
        Just(EventOp::DestroyUninitialized),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (any::<u8>(), 0..KEYS, prop::option::weighted(0.8, any::<u8>()))
            .prop_map(|(region, key, value)| Op::Write { region, key, value }),
        2 => any::<u8>().prop_map(|region| Op::Empty { region }),
        4 => any::<u8>().prop_map(|region| Op::Load { region }),
        1 => any::<u8>().prop_map(|region| Op::Evict { region }),
        1 => Just(Op::Gc),
        6 => (any::<u8>(), prop::bool::weighted(0.15)).prop_map(|(region, hold)| Op::Read { region, hold }),
        1 => Just(Op::Release),
        3 => (any::<u8>(), event_op(), prop::bool::weighted(0.3))
            .prop_map(|(region, op, drop)| Op::Event { region, op, drop }),
    ]
}

/// A region as Raft knows it: user-key bounds by key number.
#[derive(Clone, Debug)]
struct Model {
    id: u64,
    start: u8,
    end: Option<u8>,
    epoch: RegionEpoch,
}

fn boundary(k: u8) -> String {
    if k == 0 {
        String::new()
    } else {
        format!("k{k:02}")
    }
}

impl Model {
    fn region(&self) -> Region {
        let r = region(
            self.id,
            &boundary(self.start),
            self.end.map(boundary).as_deref(),
            self.epoch.version,
        );
        Region::new(r.id, r.range, self.epoch)
    }

    fn with(&self, version_bump: u64, conf_bump: u64) -> Model {
        let mut next = self.clone();
        next.epoch = RegionEpoch::new(
            self.epoch.version + version_bump,
            self.epoch.conf_ver + conf_bump,
        );
        next
    }
}

fn user_key(k: u8) -> String {
    format!("k{k:02}")
}

struct World {
    peer: Peer<MemDisk>,
    bus: EventBus,
    faults: Arc<FaultyObserver<Arc<dyn ime_observer::RaftObserver>>>,
    models: Vec<Model>,
    next_id: u64,
    held: Vec<ime_engine::HybridSnapshot<MemDisk>>,
    issued: usize,
    fired: Arc<AtomicUsize>,
}

impl World {
    fn new() -> Self {
        let mut peer = Peer::in_memory();
        let models = vec![
            Model {
                id: 1,
                start: 0,
                end: Some(12),
                epoch: RegionEpoch::new(1, 1),
            },
            Model {
                id: 2,
                start: 12,
                end: Some(26),
                epoch: RegionEpoch::new(1, 1),
            },
            Model {
                id: 3,
                start: 26,
                end: None,
                epoch: RegionEpoch::new(1, 1),
            },
        ];
        for m in &models {
            peer.add(m.region());
        }
        let bus = EventBus::new().unwrap();
        let faults = Arc::new(FaultyObserver::new(peer.engine.observer(), Vec::new()));
        bus.register(
            Arc::clone(&faults) as Arc<dyn ime_observer::RaftObserver>,
            0,
        );
        World {
            peer,
            bus,
            faults,
            models,
            next_id: 10,
            held: Vec::new(),
            issued: 0,
            fired: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn pick(&self, r: u8) -> usize {
        usize::from(r) % self.models.len()
    }

    /// Raft moves region `i` to `next` through one applied entry, reported to the engine.
    fn advance(&mut self, i: usize, next: Model) {
        let id = next.id;
        let index = self.peer.applied(id);
        self.peer.set(next.region(), index);
        self.models[i] = next;
        self.peer.empty_entry(id);
    }

    fn publish(&mut self, event: RaftEvent, drop: bool) {
        if drop {
            self.faults
                .add_rule(FaultRule::times(event.kind(), FaultAction::Drop, 1));
        }
        let _report = self.bus.publish(event);
        self.faults.clear_rules();
    }

    /// A change outside the write path: the event fences its ranges (a dropped event
    /// still fences them, unannounced: the disk cannot change otherwise).
    fn bypass(&mut self, event: RaftEvent, drop: bool) -> BypassFence<MemDisk> {
        if drop {
            self.peer.engine.fence_ranges(event.bypass_ranges())
        } else {
            self.peer.engine.begin_bypass(&event).unwrap()
        }
    }

    fn read(&mut self, i: usize, hold: bool) {
        let id = self.models[i].id;
        let snapshot = self.peer.snapshot(id);
        common::assert_reads_match(&snapshot, &self.models[i].region());
        if hold {
            self.held.push(snapshot);
        }
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Write { region, key, value } => {
                let i = self.pick(*region);
                let m = &self.models[i];
                let in_range = *key >= m.start && m.end.is_none_or(|e| *key < e);
                if in_range {
                    let v = value.map(|v| format!("v{v}").repeat(usize::from(v % 4) + 1));
                    self.peer.commit(m.id, &[(&user_key(*key), v.as_deref())]);
                }
            }
            Op::Empty { region } => {
                let id = self.models[self.pick(*region)].id;
                self.peer.empty_entry(id);
            }
            Op::Load { region } => {
                let m = &self.models[self.pick(*region)];
                let _ = self
                    .peer
                    .engine
                    .load_region(m.region(), self.peer.applied(m.id));
                if usize::from(*region) % 4 != 0 {
                    self.peer.idle(); // most loads finish before the next step
                }
            }
            Op::Evict { region } => {
                let id = self.models[self.pick(*region)].id;
                let fired = Arc::clone(&self.fired);
                self.issued += 1;
                let cb = EvictCallback::new(move |_| {
                    fired.fetch_add(1, Ordering::SeqCst);
                });
                self.peer
                    .engine
                    .evict_region(RegionId(id), EvictReason::Manual, Some(cb));
            }
            Op::Gc => {
                let ts = self.peer.next_ts();
                self.peer.engine.set_safe_point(ts.saturating_sub(30));
                self.peer.engine.run_gc();
            }
            Op::Read { region, hold } => self.read(self.pick(*region), *hold),
            Op::Release => {
                self.held.pop();
            }
            Op::Event { region, op, drop } => self.event(self.pick(*region), op, *drop),
        }
    }

    fn event(&mut self, i: usize, op: &EventOp, drop: bool) {
        let m = self.models[i].clone();
        let before = m.region();
        match op {
            EventOp::Snapshot { bump } => {
                let next = m.with(u64::from(*bump), 0);
                let index = self.peer.applied(m.id) + 10;
                let fence = self.bypass(
                    RaftEvent::ApplySnapshot {
                        before: Some(before),
                        after: next.region(),
                        applied_index: index,
                    },
                    drop,
                );
                let ts = self.peer.next_ts();
                let k = user_key(m.start);
                bypass_put(&fence, &[(&k, "from a raft snapshot")], ts);
                fence.finish();
                self.peer.set(next.region(), index);
                self.models[i] = next;
            }
            EventOp::Split => {
                let end = m.end.unwrap_or(KEYS);
                if end - m.start < 2 {
                    return;
                }
                let at = m.start + (end - m.start) / 2;
                let left = Model {
                    end: Some(at),
                    ..m.with(1, 0)
                };
                let right = Model {
                    id: self.next_id,
                    start: at,
                    ..m.with(1, 0)
                };
                self.next_id += 1;
                let index = self.peer.applied(m.id) + 1;
                let children = vec![
                    SplitChild {
                        region: left.region(),
                        applied_index: index,
                    },
                    SplitChild {
                        region: right.region(),
                        applied_index: 5,
                    },
                ];
                self.publish(RaftEvent::Split { before, children }, drop);
                self.peer.set(left.region(), index);
                self.peer.add(right.region());
                self.models[i] = left;
                self.models.insert(i + 1, right);
                // The split entry's index, reported by the apply side.
                self.peer.set(self.models[i].region(), index - 1);
                self.peer.empty_entry(m.id);
            }
            EventOp::ChangePeer => {
                let next = m.with(0, 1);
                self.publish(
                    RaftEvent::ChangePeer {
                        before,
                        after: next.region(),
                    },
                    drop,
                );
                self.advance(i, next);
            }
            EventOp::Merge => {
                if i + 1 >= self.models.len() {
                    return;
                }
                let source = self.models[i + 1].clone();
                let prepared = source.with(1, 0);
                self.publish(
                    RaftEvent::PrepareMerge {
                        before: source.region(),
                        after: prepared.region(),
                    },
                    drop,
                );
                self.advance(i + 1, prepared.clone());
                let version = m.epoch.version.max(prepared.epoch.version) + 1;
                let merged = Model {
                    end: source.end,
                    epoch: RegionEpoch::new(version, m.epoch.conf_ver),
                    ..m.clone()
                };
                let event = RaftEvent::CommitMerge {
                    before,
                    after: merged.region(),
                    source: prepared.region(),
                };
                self.publish(event, drop);
                self.advance(i, merged);
                self.models.remove(i + 1);
                self.peer.regions.remove(&RegionId(source.id));
                self.publish(
                    RaftEvent::DestroyPeer {
                        id: RegionId(source.id),
                        region: Some(prepared.region()),
                    },
                    false,
                );
            }
            EventOp::RollbackMerge => {
                let prepared = m.with(1, 0);
                self.publish(
                    RaftEvent::PrepareMerge {
                        before,
                        after: prepared.region(),
                    },
                    drop,
                );
                self.advance(i, prepared.clone());
                let rolled = prepared.with(1, 0);
                self.publish(
                    RaftEvent::RollbackMerge {
                        before: prepared.region(),
                        after: rolled.region(),
                    },
                    drop,
                );
                self.advance(i, rolled);
            }
            EventOp::Role { leader } => {
                let role = if *leader {
                    PeerRole::Leader
                } else {
                    PeerRole::Follower
                };
                self.publish(
                    RaftEvent::RoleChange {
                        region: before,
                        role,
                        term: 2,
                    },
                    drop,
                );
            }
            EventOp::Transfer => self.publish(
                RaftEvent::TransferLeader {
                    region: before,
                    term: 3,
                    cached: true,
                },
                drop,
            ),
            EventOp::Ingest => {
                let k = user_key(m.start);
                let range = KeyRange::new(
                    encode_bytes(k.as_bytes()),
                    encode_bytes(format!("{k}~").as_bytes()),
                )
                .unwrap();
                let fence = self.bypass(
                    RaftEvent::IngestSst {
                        region: before,
                        ranges: vec![range],
                    },
                    false,
                );
                let ts = self.peer.next_ts();
                bypass_put(&fence, &[(&k, "ingested")], ts);
                fence.finish();
                self.peer.empty_entry(m.id);
            }
            EventOp::DeleteRange | EventOp::UnsafeDestroy => {
                let range = before.range.clone();
                let event = match op {
                    EventOp::DeleteRange => RaftEvent::DeleteRange {
                        region: before,
                        range: range.clone(),
                    },
                    _ => RaftEvent::UnsafeDestroyRange {
                        range: range.clone(),
                    },
                };
                let fence = self.bypass(event, false);
                let mut batch = WriteBatch::new();
                let end = range.end().map_or(vec![0xff; 16], <[u8]>::to_vec);
                for cf in Cf::ALL {
                    batch.delete_range(cf, range.start().to_vec(), end.clone());
                }
                fence.write(&batch).unwrap();
                fence.finish();
                self.peer.empty_entry(m.id);
            }
            EventOp::Flashback => {
                let during = m.with(1, 0);
                let fence = self.bypass(
                    RaftEvent::PrepareFlashback {
                        before,
                        after: during.region(),
                    },
                    false,
                );
                self.advance(i, during.clone());
                let ts = self.peer.next_ts();
                bypass_put(&fence, &[(&user_key(m.start), "flashed back")], ts);
                fence.finish();
                let after = during.with(1, 0);
                self.publish(
                    RaftEvent::FinishFlashback {
                        before: during.region(),
                        after: after.region(),
                    },
                    false,
                );
                self.advance(i, after);
            }
            EventOp::Witness => {
                let next = m.with(0, 1);
                self.publish(
                    RaftEvent::SwitchWitness {
                        before,
                        after: next.region(),
                        is_witness: false,
                    },
                    false,
                );
                self.advance(i, next);
            }
            EventOp::CompactLog => {
                let index = self.peer.applied(m.id);
                self.publish(
                    RaftEvent::CompactLog {
                        region: before,
                        compact_index: index,
                    },
                    drop,
                );
            }
            EventOp::Recovery { force } => {
                let event = if *force {
                    RaftEvent::ForceLeader {
                        region: before,
                        term: 9,
                    }
                } else {
                    RaftEvent::UnsafeRecovery { region: before }
                };
                self.publish(event, false);
            }
            EventOp::DestroyUninitialized => {
                self.publish(
                    RaftEvent::DestroyPeer {
                        id: RegionId(999),
                        region: None,
                    },
                    false,
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_read_equals_the_disk(ops in prop::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        for op in &ops {
            world.run(op);
        }
        for i in 0..world.models.len() {
            world.read(i, false);
        }
        world.held.clear();
        world.peer.idle();
        prop_assert!(world.peer.engine.cross_check().is_empty());
        let (issued, fired) = (world.issued, Arc::clone(&world.fired));
        let World { peer, bus, .. } = world;
        bus.close();
        drop(peer);
        prop_assert_eq!(fired.load(Ordering::SeqCst), issued, "every callback fired once");
    }
}

/// A region split down to one key, then a Raft snapshot of it: the snapshot's data is
/// written inside the region (a case the generator once wrote outside its fence).
#[test]
fn a_snapshot_of_a_one_key_region() {
    let mut world = World::new();
    for _ in 0..3 {
        world.run(&Op::Event {
            region: 0,
            op: EventOp::Split,
            drop: false,
        });
    }
    assert_eq!((world.models[0].start, world.models[0].end), (0, Some(1)));
    world.run(&Op::Event {
        region: 0,
        op: EventOp::Snapshot { bump: false },
        drop: false,
    });
    world.read(0, false);
}

/// Every event kind appears in the generator: a new RaftEvent variant must be added here.
#[test]
fn the_generator_covers_every_event_kind() {
    let covered = [
        EventKind::ApplySnapshot,
        EventKind::Split,
        EventKind::PrepareMerge,
        EventKind::CommitMerge,
        EventKind::RollbackMerge,
        EventKind::ChangePeer,
        EventKind::RoleChange,
        EventKind::TransferLeader,
        EventKind::DestroyPeer,
        EventKind::IngestSst,
        EventKind::DeleteRange,
        EventKind::UnsafeDestroyRange,
        EventKind::PrepareFlashback,
        EventKind::FinishFlashback,
        EventKind::SwitchWitness,
        EventKind::CompactLog,
        EventKind::UnsafeRecovery,
        EventKind::ForceLeader,
    ];
    assert_eq!(covered.len(), EventKind::ALL.len());
}
