//! The cluster: stores, the network between them (with partitions), the workload of MVCC
//! transactions, the nemesis, and the checker that compares every read served from
//! memory with the same store's disk at the same snapshot.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use ime_engine::disk::{Bounds, Cf, RocksDisk};
use ime_engine::observer::RaftEvent;
use ime_engine::region::{KeyRange, ReadRequest, Region, RegionEpoch, RegionId};
use ime_engine::{Config, HybridSnapshot, KvPair, Stats};
use ime_memkv::codec::{
    LockRecord, LockType, MvccKey, WriteRecord, WriteType, decode_bytes, encode_bytes,
};
use raft::prelude::Message;

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
        let mut stores = Vec::new();
        for id in &voters {
            let mutations = Mutations {
                broken: options.broken_engine,
                unfenced: options.unfenced_engine,
            };
            let mut store = Store::new(*id, config, mutations, options.seed)?;
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

    fn next_ts(&mut self) -> u64 {
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
    fn tick(&mut self) {
        for store in &mut self.stores {
            for peer in store.peers.values_mut() {
                peer.node.tick();
            }
        }
    }

    /// The store leading region `id` (not isolated; in the highest term if an old leader
    /// has not stepped down yet), if any.
    fn leader_of(&self, id: u64) -> Option<usize> {
        (0..self.stores.len())
            .filter(|i| {
                let s = &self.stores[*i];
                s.leads(id) && !self.isolated.contains(&s.id)
            })
            .max_by_key(|i| self.stores[*i].peers[&id].node.raft.term)
    }

    /// The leader's view of region `id`: its region and whether it is merging.
    fn led(&self, id: u64) -> Option<(usize, &crate::store::Peer)> {
        let at = self.leader_of(id)?;
        Some((at, self.stores[at].peers.get(&id)?))
    }

    /// Every region some store knows, by id.
    fn regions(&self) -> Vec<u64> {
        let ids: BTreeSet<u64> = self
            .stores
            .iter()
            .flat_map(|s| s.peers.keys().copied())
            .collect();
        ids.into_iter().collect()
    }

    /// Proposes writes to region `region` at the leader's epoch.
    fn propose_write(&mut self, region: u64, ops: Vec<Op>) -> Result<bool> {
        let Some((_, peer)) = self.led(region) else {
            return Ok(false);
        };
        let version = peer.region.epoch.version;
        self.propose(region, &Command::Write { version, ops })
    }

    fn propose(&mut self, region: u64, command: &Command) -> Result<bool> {
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
    fn region_of(&self, key: &[u8]) -> Option<u64> {
        let encoded = encode_bytes(key);
        self.regions().into_iter().find(|id| {
            self.led(*id).is_some_and(|(_, peer)| {
                peer.merging.is_none() && peer.region.range.contains_key(&encoded)
            })
        })
    }

    /// One workload step: a prewrite (a lock), a commit of an earlier prewrite (the lock
    /// goes, a write record and maybe a default-CF value come), or a rollback.
    fn workload(&mut self) -> Result<()> {
        if !self.pending.is_empty() && self.rng.chance(60) {
            let i = self.rng.below(self.pending.len() as u64) as usize;
            let mut txn = self.pending.swap_remove(i);
            // The key's region now (a split or a merge may have moved it); none while it
            // merges: the commit waits.
            let Some(region) = self.region_of(&txn.key) else {
                self.pending.push(txn);
                return Ok(());
            };
            txn.region = region;
            let commit_ts = self.next_ts();
            let lock_key = encode_bytes(&txn.key);
            let mut ops = vec![Op {
                cf: Cf::Lock,
                key: lock_key,
                value: None,
            }];
            let rollback = self.rng.chance(10);
            let record = if rollback {
                WriteRecord::new(WriteType::Rollback, txn.start_ts, None)
            } else if txn.value.is_empty() {
                WriteRecord::new(WriteType::Delete, txn.start_ts, None)
            } else if txn.value.len() <= 64 {
                WriteRecord::new(WriteType::Put, txn.start_ts, Some(txn.value.clone()))
            } else {
                let key = MvccKey {
                    user_key: txn.key.clone(),
                    ts: txn.start_ts,
                }
                .encode();
                ops.push(Op {
                    cf: Cf::Default,
                    key,
                    value: Some(txn.value.clone()),
                });
                WriteRecord::new(WriteType::Put, txn.start_ts, None)
            };
            let write_key = MvccKey {
                user_key: txn.key.clone(),
                ts: if rollback { txn.start_ts } else { commit_ts },
            }
            .encode();
            ops.push(Op {
                cf: Cf::Write,
                key: write_key,
                value: Some(record.encode()?),
            });
            if self.propose_write(txn.region, ops)? {
                self.report.commits += 1;
            }
            return Ok(());
        }
        let key = user_key(self.rng.below(KEYS));
        let Some(region) = self.region_of(&key) else {
            return Ok(());
        };
        if self.pending.iter().any(|p| p.key == key) {
            return Ok(());
        }
        let start_ts = self.next_ts();
        let value = match self.rng.below(10) {
            0 => Vec::new(), // a delete
            1 => vec![b'L'; 200],
            _ => format!("v{start_ts}").into_bytes(),
        };
        let kind = if value.is_empty() {
            LockType::Delete
        } else {
            LockType::Put
        };
        let lock = LockRecord::new(kind, key.clone(), start_ts, 3000).encode()?;
        let op = Op {
            cf: Cf::Lock,
            key: encode_bytes(&key),
            value: Some(lock),
        };
        if self.propose_write(region, vec![op])? {
            self.pending.push(Pending {
                region,
                key,
                start_ts,
                value,
            });
            self.report.prewrites += 1;
        }
        Ok(())
    }

    /// One nemesis action, chosen by the seed.
    fn nemesis(&mut self) -> Result<()> {
        match self.rng.below(10) {
            8 => self.merge()?,
            9 => self.move_peer()?,
            0 => {
                // Partition a store away, or heal.
                if self.isolated.is_empty() {
                    let id = 1 + self.rng.below(self.options.stores);
                    self.isolated.insert(id);
                    self.report.partitions += 1;
                } else {
                    self.isolated.clear();
                }
            }
            1 => self.transfer_leader()?,
            6 => self.ingest()?,
            7 => {
                let i = self.rng.below(self.options.stores) as usize;
                self.stores[i].restart()?;
                self.report.restarts += 1;
            }
            2 => self.split()?,
            3 => {
                // Log compaction everywhere: lagging peers will need snapshots.
                for store in &mut self.stores {
                    store.compact_logs(3)?;
                }
            }
            4 => {
                // A bus fault on one store: its next snapshot events are lost.
                let i = self.rng.below(self.options.stores) as usize;
                let store = &mut self.stores[i];
                if self.rng.chance(50) {
                    store.drops_snapshot_events = !store.drops_snapshot_events;
                } else {
                    store.drops_epoch_events = !store.drops_epoch_events;
                }
            }
            _ => {
                let safe_point = self.ts.saturating_sub(200);
                for store in &self.stores {
                    store.engine.set_safe_point(safe_point);
                    store.engine.run_gc();
                }
            }
        }
        Ok(())
    }

    fn transfer_leader(&mut self) -> Result<()> {
        let regions = self.regions();
        let region = regions[self.rng.below(regions.len() as u64) as usize];
        let Some(at) = self.leader_of(region) else {
            return Ok(());
        };
        let target = 1 + self.rng.below(self.options.stores);
        let Some(to) = self.stores.iter().position(|s| s.id == target) else {
            return Ok(());
        };
        if to == at
            || !self.stores[to]
                .peers
                .get(&region)
                .is_some_and(|p| p.initialized)
        {
            return Ok(());
        }
        let peer = self.stores[at].peers.get(&region).context("leader peer")?;
        let (term, described) = (
            peer.node.raft.term,
            self.stores[to].peers[&region].region.clone(),
        );
        self.stores[to].publish(
            region,
            &RaftEvent::TransferLeader {
                region: described,
                term,
            },
        )?;
        self.stores[at]
            .peers
            .get_mut(&region)
            .context("leader peer")?
            .node
            .transfer_leader(target);
        self.report.transfers += 1;
        Ok(())
    }

    /// An SST of three committed puts on consecutive keys, ingested through Raft.
    fn ingest(&mut self) -> Result<()> {
        let first = self.rng.below(KEYS - 3);
        let Some(region) = self.region_of(&user_key(first)) else {
            return Ok(());
        };
        let commit_ts = self.next_ts();
        let mut entries = Vec::new();
        for n in first..first + 3 {
            let key = MvccKey {
                user_key: user_key(n),
                ts: commit_ts,
            }
            .encode();
            let value = format!("ingested at {commit_ts}").into_bytes();
            let record = WriteRecord::new(WriteType::Put, commit_ts - 1, Some(value));
            entries.push((key, record.encode()?));
        }
        let Some((_, peer)) = self.led(region) else {
            return Ok(());
        };
        let version = peer.region.epoch.version;
        if self.propose(region, &Command::Ingest { version, entries })? {
            self.report.ingests += 1;
        }
        Ok(())
    }

    /// Regions a merge involves (sources still merging or awaiting their decision's
    /// apply, and their targets) or whose membership is changing: no split, no new merge,
    /// no membership change on them.
    fn busy(&self) -> BTreeSet<u64> {
        let mut busy = BTreeSet::new();
        for store in &self.stores {
            for (id, peer) in &store.peers {
                if let Some(target) = peer.merging {
                    busy.extend([*id, target]);
                }
                if !peer.initialized {
                    busy.insert(*id);
                }
            }
        }
        busy.extend(self.joining.iter().map(|(_, region)| *region));
        busy
    }

    /// The nemesis's merge step. With a merge under way (a source whose leader applied
    /// PrepareMerge), commit or roll it back — decided once per merge, proposed again
    /// until applied (a proposal can be lost with a leader); otherwise start one: a
    /// region and its neighbour, hosted by the same stores, neither busy.
    fn merge(&mut self) -> Result<()> {
        if let Some((source, target)) = self.merge_under_way() {
            let roll = self.rng.chance(30);
            let commit = *self.merge_decisions.entry(source).or_insert(!roll);
            if commit && self.commit_merge(source, target)? {
                return Ok(());
            }
            // Rolled back by decision, or the target is no longer its neighbour.
            self.merge_decisions.insert(source, false);
            if self.propose(source, &Command::RollbackMerge)? {
                self.report.merge_rollbacks += 1;
            }
            return Ok(());
        }
        // The first mergeable pair from a random place in the region list.
        let regions = self.regions();
        let busy = self.busy();
        let offset = self.rng.below(regions.len() as u64) as usize;
        let mut chosen = None;
        for source in regions.iter().cycle().skip(offset).take(regions.len()) {
            let Some((_, peer)) = self.led(*source) else {
                continue;
            };
            let range = &peer.region.range;
            let target = regions.iter().copied().find(|t| {
                self.led(*t).is_some_and(|(_, p)| {
                    p.region.range.end() == Some(range.start())
                        || range.end() == Some(p.region.range.start())
                })
            });
            if let Some(target) = target
                && !busy.contains(source)
                && !busy.contains(&target)
                && self.same_hosts(*source, target)?
            {
                chosen = Some((*source, target));
                break;
            }
        }
        let Some((source, target)) = chosen else {
            return Ok(());
        };
        self.merge_decisions.remove(&source);
        if self.propose(source, &Command::PrepareMerge { target })? {
            self.report.merges_started += 1;
        }
        Ok(())
    }

    /// A merge whose source's leader applied PrepareMerge: (source, target).
    fn merge_under_way(&self) -> Option<(u64, u64)> {
        self.regions().into_iter().find_map(|id| {
            self.led(id)
                .and_then(|(_, peer)| peer.merging.map(|target| (id, target)))
        })
    }

    /// Whether regions `a` and `b` have the same voters at their leaders and an
    /// initialized peer on exactly those stores (TiKV merges only such neighbours).
    fn same_hosts(&self, a: u64, b: u64) -> Result<bool> {
        let (Some((la, _)), Some((lb, _))) = (self.led(a), self.led(b)) else {
            return Ok(false);
        };
        let (va, vb) = (self.stores[la].voters_of(a)?, self.stores[lb].voters_of(b)?);
        let hosts = |id: u64| -> Vec<u64> {
            self.stores
                .iter()
                .filter(|s| s.peers.get(&id).is_some_and(|p| p.initialized))
                .map(|s| s.id)
                .collect()
        };
        let mut sorted = va.clone();
        sorted.sort_unstable();
        Ok(va.len() == vb.len()
            && va.iter().all(|v| vb.contains(v))
            && hosts(a) == sorted
            && hosts(b) == sorted)
    }

    /// Proposes CommitMerge of `source` into `target` with the source's final data, if
    /// the target is still its neighbour. Returns false when it is not.
    fn commit_merge(&mut self, source: u64, target: u64) -> Result<bool> {
        let (Some((at, peer)), Some((_, target_peer))) = (self.led(source), self.led(target))
        else {
            return Ok(true); // no leader now: decide again next time
        };
        let region = peer.region.clone();
        let t = &target_peer.region.range;
        if !(region.range.end() == Some(t.start()) || t.end() == Some(region.range.start())) {
            return Ok(false);
        }
        let cfs = self.stores[at].data_of(&region.range)?;
        if self.propose(
            target,
            &Command::CommitMerge {
                source: region,
                cfs,
            },
        )? {
            self.report.merge_commits += 1;
        }
        Ok(true)
    }

    /// The nemesis's peer move, in two steps as PD makes them: a region on every store
    /// loses a voter (never its leader's; not while a store is partitioned away, so the
    /// rest keep a quorum); a region with fewer voters than stores gains one on a store
    /// that hosts no peer of it (the new peer starts uninitialized and is caught up by a
    /// Raft snapshot).
    fn move_peer(&mut self) -> Result<()> {
        let regions = self.regions();
        let region = regions[self.rng.below(regions.len() as u64) as usize];
        if self.busy().contains(&region) {
            return Ok(());
        }
        let Some((at, _)) = self.led(region) else {
            return Ok(());
        };
        let voters = self.stores[at].voters_of(region)?;
        let leader = self.stores[at].id;
        let change = if voters.len() < self.stores.len() {
            let candidates: Vec<u64> = self
                .stores
                .iter()
                .filter(|s| !voters.contains(&s.id) && !s.peers.contains_key(&region))
                .map(|s| s.id)
                .collect();
            if candidates.is_empty() {
                return Ok(());
            }
            let store = candidates[self.rng.below(candidates.len() as u64) as usize];
            Membership { add: true, store }
        } else {
            if !self.isolated.is_empty() {
                return Ok(());
            }
            let others: Vec<u64> = voters.iter().copied().filter(|v| *v != leader).collect();
            let store = others[self.rng.below(others.len() as u64) as usize];
            Membership { add: false, store }
        };
        let mut cc = raft::prelude::ConfChange::default();
        cc.set_change_type(if change.add {
            raft::prelude::ConfChangeType::AddNode
        } else {
            raft::prelude::ConfChangeType::RemoveNode
        });
        cc.node_id = change.store;
        let context = serde_json::to_vec(&change)?;
        let peer = self.stores[at]
            .peers
            .get_mut(&region)
            .context("leader peer")?;
        if peer.node.propose_conf_change(context, cc).is_ok() {
            if change.add {
                self.joining.insert((change.store, region));
                self.report.peers_added += 1;
            } else {
                self.report.peers_removed += 1;
            }
        }
        Ok(())
    }

    /// Destroys stale peers: a peer on a store its region's leader no longer counts among
    /// the voters (it missed its removal, or the removal is still on its way), as TiKV's
    /// stale-peer GC does. Partitioned stores keep theirs until they are reachable.
    fn destroy_stale_peers(&mut self) -> Result<()> {
        for region in self.regions() {
            let Some((at, _)) = self.led(region) else {
                continue;
            };
            let voters = self.stores[at].voters_of(region)?;
            for store in &mut self.stores {
                if !voters.contains(&store.id)
                    && !self.isolated.contains(&store.id)
                    && store.peers.contains_key(&region)
                {
                    store.destroy_peer(region)?;
                }
            }
        }
        Ok(())
    }

    fn split(&mut self) -> Result<()> {
        if self.regions().len() >= self.options.max_regions {
            return Ok(());
        }
        let at = user_key(1 + self.rng.below(KEYS - 1));
        let Some(region) = self.region_of(&at) else {
            return Ok(());
        };
        if self.busy().contains(&region) {
            return Ok(());
        }
        let new_region = self.next_region;
        let command = Command::Split {
            at: encode_bytes(&at),
            new_region,
        };
        if self.propose(region, &command)? {
            self.next_region += 1;
            self.report.splits += 1;
        }
        Ok(())
    }

    /// Reads every region at every store that hosts it (leaders and followers alike, each
    /// at its own applied index) and checks each answer against the same store's disk at
    /// the same snapshot.
    fn read_all(&mut self) -> Result<()> {
        let read_ts = self.next_ts();
        for store in &self.stores {
            for (id, peer) in &store.peers {
                if !peer.initialized {
                    continue;
                }
                let snapshot = store.engine.snapshot(
                    RegionId(*id),
                    ReadRequest {
                        epoch_version: peer.region.epoch.version,
                        applied_index: peer.applied,
                        read_ts,
                    },
                );
                let found = read(&snapshot, &peer.region.range, true);
                let expected = reference(&snapshot, &peer.region.range, true)?;
                // The committed view without the lock check too: a pending lock must not
                // hide a stale version.
                let found_all = read(&snapshot, &peer.region.range, false);
                let expected_all = reference(&snapshot, &peer.region.range, false)?;
                let counts = if peer.role == raft::StateRole::Leader {
                    &mut self.report.leader_reads
                } else {
                    &mut self.report.follower_reads
                };
                counts[usize::from(!snapshot.from_memory())] += 1;
                for (found, expected) in [(found, expected), (found_all, expected_all)] {
                    if found != expected {
                        let history = store.history.get(id).cloned().unwrap_or_default();
                        let mismatch = Mismatch::new(store.id, *id, &found, &expected, history);
                        self.report.mismatches.push(mismatch);
                        break;
                    }
                }
            }
        }
        Ok(())
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

    /// The named scenario's prologue, before the random run.
    fn scenario(&mut self) -> Result<()> {
        match self.options.scenario {
            Scenario::Random => Ok(()),
            Scenario::Seed | Scenario::SeedUnobserved | Scenario::SnapshotSameEpochUnobserved => {
                self.seed_prologue()
            }
        }
    }

    /// `docs/scenarios.md` item 1 with real Raft. The last store caches region 1 as a follower
    /// (as TiKV's follower and learner caches do), then its link drops log appends: it
    /// hears heartbeats, stays a follower, and falls behind while the others write, split
    /// (the epoch moves on; not in `snapshot-same-epoch-unobserved`) and compact their
    /// logs. When the link heals it receives a Raft snapshot — ApplySnapshot evicts, or,
    /// with the event dropped, the next write or read reveals the gap. Then it leads the
    /// region, is read from, and the region splits again.
    fn seed_prologue(&mut self) -> Result<()> {
        let lagging = self.options.stores;
        let at = (lagging - 1) as usize;
        for _ in 0..20 {
            self.step_quietly()?;
        }
        let peer = self.stores[at]
            .peers
            .get(&1)
            .context("region 1 on the lagging store")?;
        let (region, applied) = (peer.region.clone(), peer.applied);
        let _ = self.stores[at].engine.load_region(region, applied);
        let _ = self.stores[at]
            .engine
            .wait_idle(std::time::Duration::from_secs(60));
        if self.options.scenario != Scenario::Seed {
            self.stores[at].drops_snapshot_events = true;
        }
        self.slow_appends_to = Some(lagging);
        for _ in 0..30 {
            self.step_quietly()?;
        }
        if self.options.scenario != Scenario::SnapshotSameEpochUnobserved {
            self.split_at(1, b"k02000")?;
            for _ in 0..5 {
                self.step_quietly()?;
            }
        }
        for store in &mut self.stores {
            store.compact_logs(1)?;
        }
        self.slow_appends_to = None;
        for _ in 0..40 {
            self.tick();
            self.settle()?;
        }
        // Writes after the snapshot reach the lagging store too: its next apply report
        // is where a lost snapshot event shows (EpochGap, or IndexGap at the same epoch).
        for _ in 0..5 {
            self.step_quietly()?;
            self.read_all()?; // the lagging follower's reads too
        }
        self.stores[at].drops_snapshot_events = false;
        if let Some(leader) = self.leader_of(1) {
            let peer = self.stores[leader]
                .peers
                .get_mut(&1)
                .context("leader peer")?;
            peer.node.transfer_leader(lagging);
        }
        for _ in 0..20 {
            self.step_quietly()?;
            self.read_all()?;
        }
        self.split_at(1, b"k01000")?;
        for _ in 0..5 {
            self.step_quietly()?;
        }
        self.read_all()
    }

    /// A workload step without nemesis.
    fn step_quietly(&mut self) -> Result<()> {
        self.workload()?;
        self.tick();
        self.settle()
    }

    /// Proposes a split of region `region` at user key `at`.
    fn split_at(&mut self, region: u64, at: &[u8]) -> Result<()> {
        let command = Command::Split {
            at: encode_bytes(at),
            new_region: self.next_region,
        };
        if self.propose(region, &command)? {
            self.next_region += 1;
            self.report.splits += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        for store in &mut self.stores {
            if !store.engine.wait_idle(std::time::Duration::from_secs(60)) {
                bail!("store {}: background work did not finish", store.id);
            }
            store.cross_check();
            self.report.mismatches.append(&mut store.differences);
        }
        self.report.collect(&self.stores);
        Ok(())
    }
}

/// What a read returns: the visible pairs, or the lock in the way.
pub(crate) type ReadResult = Result<Vec<KvPair>, String>;

fn user_bounds(range: &KeyRange) -> (Vec<u8>, Option<Vec<u8>>) {
    let decode = |k: &[u8]| decode_bytes(k).map(|(k, _)| k).unwrap_or_default();
    let start = if range.start().is_empty() {
        Vec::new()
    } else {
        decode(range.start())
    };
    (start, range.end().map(decode))
}

fn read(snapshot: &HybridSnapshot<RocksDisk>, range: &KeyRange, check_locks: bool) -> ReadResult {
    let (start, end) = user_bounds(range);
    snapshot
        .mvcc_scan_with(&start, end.as_deref(), usize::MAX, check_locks)
        .map_err(|e| e.to_string())
}

/// The engine's reference reading of the disk snapshot's raw entries (independent of its
/// read path), as a read result.
fn reference(
    snapshot: &HybridSnapshot<RocksDisk>,
    range: &KeyRange,
    check_locks: bool,
) -> Result<ReadResult> {
    let (start, end) = user_bounds(range);
    let bounds = Bounds::new(encode_bytes(&start), end.as_deref().map(encode_bytes))?;
    let read_ts = snapshot.read_ts();
    Ok(
        match ime_engine::reference_scan(snapshot.disk(), &bounds, read_ts, check_locks) {
            Ok(pairs) => Ok(pairs),
            Err(err @ ime_engine::EngineError::Mvcc(ime_engine::MvccError::KeyIsLocked { .. })) => {
                Err(err.to_string())
            }
            Err(err) => return Err(err.into()),
        },
    )
}

/// Engine counters summed over stores.
pub(crate) fn sum_stat(stores: &[Store], count: impl Fn(&Stats) -> u64 + Copy) -> u64 {
    stores.iter().map(|s| s.stat(count)).sum()
}
