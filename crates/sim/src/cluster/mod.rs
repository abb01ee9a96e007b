//! The cluster: stores, the network between them (with partitions), proposals, and the
//! step loop. By concern: `workload.rs` (MVCC transactions), `nemesis.rs` (the changes a
//! run suffers), `checker.rs` (every read compared with the same store's disk),
//! `scenarios.rs` (scripted prologues).

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use ime_engine::disk::{Cf, KeyRange, RocksDisk};
use ime_engine::observer::RaftEvent;
use ime_engine::region::{ReadRequest, Region, RegionEpoch, RegionId, RegionState};
use ime_engine::{Config, HybridSnapshot, KvPair, Stats};
use ime_memkv::codec::{
    LockRecord, LockType, MvccKey, WriteRecord, WriteType, decode_bytes, encode_bytes,
};
use raft::prelude::Message;

mod checker;
mod nemesis;
mod scenarios;
mod workload;

pub(crate) use checker::ReadResult;

use crate::report::{Mismatch, Report};
use crate::store::{Command, Membership, Mutations, Op, Store};
use crate::{Options, Scenario};

/// A small, seeded generator (splitmix64): the same seed, the same run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A prewritten transaction waiting for its commit.
struct Pending {
    region: u64,
    key: Vec<u8>,
    start_ts: u64,
    value: Vec<u8>,
}

/// The simulated cluster.
pub(crate) struct Cluster {
    pub(crate) stores: Vec<Store>,
    network: Vec<(u64, u64, Message)>,
    /// Stores cut off from all others.
    isolated: BTreeSet<u64>,
    /// A store whose incoming log appends are lost (a slow link): it stays a follower,
    /// hearing heartbeats, and falls behind until a snapshot catches it up.
    slow_appends_to: Option<u64>,
    rng: Rng,
    ts: u64,
    next_region: u64,
    pending: Vec<Pending>,
    /// Stores whose peer of a region was added and is awaited: the leader's first message
    /// creates it (uninitialized, until its snapshot).
    joining: BTreeSet<(u64, u64)>,
    /// Per merge source: commit (true) or roll back, decided once per merge.
    merge_decisions: std::collections::BTreeMap<u64, bool>,
    pub(crate) report: Report,
    options: Options,
}

const KEYS: u64 = 4000;

fn user_key(n: u64) -> Vec<u8> {
    format!("k{n:05}").into_bytes()
}

impl Cluster {
    pub(crate) fn new(options: Options, config: &Config) -> Result<Self> {
        let voters: Vec<u64> = (1..=options.stores).collect();
        if let Some(dir) = &options.event_journal {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("create the event journal directory {}", dir.display()))?;
        }
        let mut stores = Vec::new();
        for id in &voters {
            let mutations = Mutations {
                broken: options.broken_engine,
                unfenced: options.unfenced_engine,
            };
            let journal = options
                .event_journal
                .as_ref()
                .map(|dir| dir.join(format!("store-{id}.events")));
            let mut store = Store::new(*id, config, mutations, options.seed, journal)?;
            let region = Region::new(RegionId(1), KeyRange::everything(), RegionEpoch::new(1, 1));
            store.add_peer(region, voters.clone())?;
            stores.push(store);
        }
        let mut cluster = Cluster {
            stores,
            network: Vec::new(),
            isolated: BTreeSet::new(),
            slow_appends_to: None,
            rng: Rng(options.seed),
            ts: 100,
            next_region: 2,
            pending: Vec::new(),
            joining: BTreeSet::new(),
            merge_decisions: std::collections::BTreeMap::new(),
            report: Report::new(&options),
            options,
        };
        cluster.stores[0]
            .peers
            .get_mut(&1)
            .context("region 1")?
            .node
            .campaign()?;
        cluster.settle()?;
        Ok(cluster)
    }

    pub(super) fn next_ts(&mut self) -> u64 {
        self.ts += 1;
        self.ts
    }

    /// Delivers messages and handles readies until nothing moves (bounded).
    pub(crate) fn settle(&mut self) -> Result<()> {
        for _ in 0..50 {
            let mut moved = false;
            for store in &mut self.stores {
                for (region, message) in store.handle_readies()? {
                    self.network.push((store.id, region, message));
                    moved = true;
                }
            }
            let messages = std::mem::take(&mut self.network);
            for (from, region, message) in messages {
                moved = true;
                let to = message.to;
                let slow = self.slow_appends_to == Some(to)
                    && message.get_msg_type() == raft::prelude::MessageType::MsgAppend;
                if slow || self.isolated.contains(&from) || self.isolated.contains(&to) {
                    self.report.messages_dropped += 1;
                    continue;
                }
                let Some(store) = self.stores.iter_mut().find(|s| s.id == to) else {
                    continue;
                };
                // A store added to the group gets its peer with the leader's first
                // message, as TiKV creates a peer on a message from a new member.
                if !store.peers.contains_key(&region) && self.joining.remove(&(to, region)) {
                    store.join(region)?;
                }
                // A store that has not applied the split yet has no peer for the new
                // region: the message is dropped and Raft retries.
                if let Some(peer) = store.peers.get_mut(&region) {
                    let _ = peer.node.step(message);
                }
            }
            if !moved {
                break;
            }
        }
        Ok(())
    }

    /// One tick of every Raft peer.
    pub(super) fn tick(&mut self) {
        for store in &mut self.stores {
            for peer in store.peers.values_mut() {
                peer.node.tick();
            }
        }
    }

    /// The store leading region `id` (not isolated; in the highest term if an old leader
    /// has not stepped down yet), if any.
    pub(super) fn leader_of(&self, id: u64) -> Option<usize> {
        (0..self.stores.len())
            .filter(|i| {
                let s = &self.stores[*i];
                s.leads(id) && !self.isolated.contains(&s.id)
            })
            .max_by_key(|i| self.stores[*i].peers[&id].node.raft.term)
    }

    /// The leader's view of region `id`: its region and whether it is merging.
    pub(super) fn led(&self, id: u64) -> Option<(usize, &crate::store::Peer)> {
        let at = self.leader_of(id)?;
        Some((at, self.stores[at].peers.get(&id)?))
    }

    /// Every region some store knows, by id.
    pub(super) fn regions(&self) -> Vec<u64> {
        let ids: BTreeSet<u64> = self
            .stores
            .iter()
            .flat_map(|s| s.peers.keys().copied())
            .collect();
        ids.into_iter().collect()
    }

    /// Proposes writes to region `region` at the leader's epoch.
    pub(super) fn propose_write(&mut self, region: u64, ops: Vec<Op>) -> Result<bool> {
        let Some((_, peer)) = self.led(region) else {
            return Ok(false);
        };
        let version = peer.region.epoch.version;
        self.propose(region, &Command::Write { version, ops })
    }

    pub(super) fn propose(&mut self, region: u64, command: &Command) -> Result<bool> {
        let Some(at) = self.leader_of(region) else {
            return Ok(false);
        };
        let data = serde_json::to_vec(command)?;
        let peer = self.stores[at]
            .peers
            .get_mut(&region)
            .context("leader peer")?;
        Ok(peer.node.propose(vec![], data).is_ok())
    }

    /// The region a user key belongs to, as the leader of some region sees it (none while
    /// that region is merging: it takes no writes).
    pub(super) fn region_of(&self, key: &[u8]) -> Option<u64> {
        let encoded = encode_bytes(key);
        self.regions().into_iter().find(|id| {
            self.led(*id).is_some_and(|(_, peer)| {
                peer.merging.is_none() && peer.region.range.contains_key(&encoded)
            })
        })
    }

    /// The whole run.
    pub(crate) fn run(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        self.scenario()?;
        let started = std::time::Instant::now();
        for step in 0..self.options.ops {
            if self
                .options
                .duration
                .is_some_and(|d| started.elapsed() >= d)
            {
                self.report.ops = step;
                break;
            }
            if self.rng.chance(self.options.nemesis_percent) {
                self.nemesis()?;
            } else if self.merge_under_way().is_some() && self.rng.chance(20) {
                // A prepared merge is committed or rolled back soon, as TiKV's is.
                self.merge()?;
            }
            for _ in 0..3 {
                self.workload()?;
            }
            self.tick();
            self.settle()?;
            self.destroy_stale_peers()?;
            // Background work (the engines have no threads: their seeded schedulers run
            // it here and inside every change outside the write path).
            for store in &mut self.stores {
                store.interleave();
            }
            if step % 25 == 0 {
                // The eviction policy's round on every store besides the scheduler's own
                // (hot led regions load, cold ones go).
                for store in &self.stores {
                    store.engine.run_policy();
                }
            }
            if step % 4 == 0 {
                self.read_all()?;
            }
            self.report.sample_memory(&self.stores);
            progress(step + 1, self.options.ops);
        }
        self.isolated.clear();
        for store in &mut self.stores {
            store.drops_snapshot_events = false;
            store.drops_epoch_events = false;
        }
        for _ in 0..30 {
            self.tick();
            self.settle()?;
        }
        self.read_all()?;
        self.finish()
    }
}

/// Engine counters summed over stores.
pub(crate) fn sum_stat(stores: &[Store], count: impl Fn(&Stats) -> u64 + Copy) -> u64 {
    stores.iter().map(|s| s.stat(count)).sum()
}
