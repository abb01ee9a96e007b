//! One store of the simulated cluster: a RocksDB, an IME engine over it, and a Raft peer
//! (raft-rs `RawNode`) per region it hosts. Applying committed entries goes through the
//! engine's write path; admin commands and snapshots become the engine's `RaftEvent`s.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use ime_engine::disk::{Bounds, Cf, RocksDisk, WriteBatch, collect};
use ime_engine::observer::{EventKind, PeerRole, RaftEvent};
use ime_engine::region::{KeyRange, Region, RegionEpoch, RegionId, SplitChild};
use ime_engine::{ApplyHeader, Background, BypassFence, Config, Engine, HybridWriteBatch, Stats};
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};

use crate::cluster::Rng;
use crate::report::Mismatch;

/// What a Raft entry carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Writes, in TiKV's formats, as one batch, proposed at epoch `version`. As TiKV does,
    /// the apply refuses it (`EpochNotMatch`, `KeyNotInRegion`) when the region's version
    /// moved since, a key lies outside the region, or the region is merging.
    Write { version: u64, ops: Vec<Op> },
    /// Split the region at this (encoded) key; the right half becomes region `new_region`.
    Split { at: Vec<u8>, new_region: u64 },
    /// An SST of write-CF entries (sorted, distinct keys) ingested into the region,
    /// refused like a write.
    Ingest {
        version: u64,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// PrepareMerge on the source: its epoch moves (version and conf_ver), writes stop.
    PrepareMerge { target: u64 },
    /// CommitMerge on the target: `source` (as it was after PrepareMerge) joins it. `cfs`
    /// is the source's data, final since PrepareMerge, for a store whose source peer has
    /// not caught up (TiKV sends the source's missing log entries instead).
    CommitMerge { source: Region, cfs: Vec<CfData> },
    /// RollbackMerge on the source: the merge is abandoned, writes resume.
    RollbackMerge,
}

/// The entries of one column family, in key order.
pub(crate) type CfData = Vec<(Vec<u8>, Vec<u8>)>;

/// A membership change, carried in a `ConfChange` entry's context.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Membership {
    /// Adds the store's peer (true) or removes it.
    pub(crate) add: bool,
    /// The store (its Raft node id).
    pub(crate) store: u64,
}

/// One write of a command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Op {
    pub(crate) cf: Cf,
    pub(crate) key: Vec<u8>,
    /// `None`: a delete.
    pub(crate) value: Option<Vec<u8>>,
}

/// What a Raft snapshot carries beside its metadata: the region and its data as the
/// leader had them at its applied index.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    region: Region,
    applied: u64,
    merging: Option<u64>,
    cfs: Vec<CfData>,
}

/// The local replica of one region.
pub(crate) struct Peer {
    pub(crate) node: RawNode<MemStorage>,
    pub(crate) region: Region,
    pub(crate) applied: u64,
    pub(crate) role: StateRole,
    /// False for a peer created to join a group, until its first snapshot.
    pub(crate) initialized: bool,
    /// The merge target, between PrepareMerge and CommitMerge or RollbackMerge.
    pub(crate) merging: Option<u64>,
}

/// A store: its disk, its engine, its peers.
pub(crate) struct Store {
    pub(crate) id: u64,
    pub(crate) engine: Engine<RocksDisk>,
    pub(crate) peers: BTreeMap<u64, Peer>,
    /// A bus fault: ApplySnapshot events are dropped before they reach the engine.
    pub(crate) drops_snapshot_events: bool,
    /// A wider bus fault: every event whose loss shows in a later epoch or applied index
    /// (ApplySnapshot, Split, the three merge events, ChangePeer) is dropped.
    pub(crate) drops_epoch_events: bool,
    /// Events published per region, for the report of a mismatch.
    pub(crate) history: BTreeMap<u64, Vec<String>>,
    logger: slog::Logger,
    /// Raft snapshots sent and applied.
    pub(crate) snapshots_sent: u64,
    pub(crate) snapshots_applied: u64,
    /// Proposals the apply refused (stale epoch, key outside the region, merging).
    pub(crate) refused: u64,
    /// Events a bus fault dropped.
    pub(crate) dropped_events: u64,
    /// Merges committed and rolled back, membership changes applied, peers destroyed.
    pub(crate) merges: u64,
    pub(crate) rollbacks: u64,
    pub(crate) peer_changes: u64,
    pub(crate) destroyed: u64,
    /// The report's counters of engines closed by restarts.
    retired: Vec<Stats>,
    /// The directory of its RocksDB, kept across restarts.
    dir: tempfile::TempDir,
    config: Config,
    mutations: Mutations,
    /// The seeded scheduler of this store's background work.
    scheduler: Rng,
    /// Background tasks, GC rounds and policy rounds the scheduler ran.
    pub(crate) background_runs: u64,
    /// What the engine's cross-checker found (run by the scheduler, and at the end).
    pub(crate) differences: Vec<Mismatch>,
}

/// Test-only mutations of the engines, to show that the checker can fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mutations {
    /// Engines that ignore ApplySnapshot and gaps.
    pub(crate) broken: bool,
    /// Engines whose fences do not hold loads back.
    pub(crate) unfenced: bool,
}

/// A RocksDB in `dir` (created or reopened), with a fresh engine over it whose background
/// work runs only when the simulator's scheduler runs it.
fn open_engine(
    dir: &std::path::Path,
    config: &Config,
    mutations: Mutations,
) -> Result<Engine<RocksDisk>> {
    let disk =
        RocksDisk::open(dir, &ime_engine::disk::RocksConfig::default()).context("open RocksDB")?;
    let engine = Engine::with_background(
        disk,
        config.clone(),
        Box::new(ime_engine::eviction::default_policy()),
        Background::Manual,
    )?;
    if mutations.broken {
        engine.break_for_tests();
    }
    if mutations.unfenced {
        engine.unfence_for_tests();
    }
    Ok(engine)
}

fn raft_config(id: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: 10,
        // One election timeout per store, not a random one in [10, 20): raft-rs draws it
        // from the thread's RNG, which would make runs of one seed differ. Distinct per
        // store, so that peers started together (a split's children) do not split their
        // votes forever.
        min_election_tick: 10 + 3 * id as usize,
        max_election_tick: 11 + 3 * id as usize,
        heartbeat_tick: 3,
        max_inflight_msgs: 256,
        check_quorum: true,
        ..Default::default()
    }
}

impl Store {
    pub(crate) fn new(id: u64, config: &Config, mutations: Mutations, seed: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ime-sim-store-")
            .tempdir()?;
        Ok(Store {
            id,
            engine: open_engine(dir.path(), config, mutations)?,
            peers: BTreeMap::new(),
            drops_snapshot_events: false,
            drops_epoch_events: false,
            history: BTreeMap::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            snapshots_sent: 0,
            snapshots_applied: 0,
            refused: 0,
            dropped_events: 0,
            merges: 0,
            rollbacks: 0,
            peer_changes: 0,
            destroyed: 0,
            retired: Vec::new(),
            dir,
            config: config.clone(),
            mutations,
            scheduler: Rng::new(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            background_runs: 0,
            differences: Vec::new(),
        })
    }

    /// A point where the engine's background work may run: the seeded scheduler picks
    /// none, one or a few of the waiting tasks (load stages, GC collections, compactions,
    /// frees), in any order, and now and then a GC or a policy round. The simulator calls
    /// it between steps and inside every change outside the write path — between the
    /// event and the disk change, and between the disk change and the fence's end — so
    /// races are explored and a seed still replays.
    pub(crate) fn interleave(&mut self) {
        self.run_background(4, 2);
    }

    /// [`Store::interleave`] inside a change outside the write path, where a load that
    /// took its disk snapshot would copy data about to be replaced: the scheduler favours
    /// policy rounds here (they are what asks for loads), as a scheduler exploring races
    /// weights the points where they can happen.
    fn interleave_in_fence(&mut self) {
        self.run_background(30, 2);
    }

    /// Compares every cached region with the disk (the ticker's cross-check duty) and
    /// keeps what differs for the report.
    pub(crate) fn cross_check(&mut self) {
        for difference in self.engine.cross_check() {
            let history = self
                .history
                .get(&difference.region.0)
                .cloned()
                .unwrap_or_default();
            let mismatch = Mismatch::from_difference(self.id, &difference, history);
            self.differences.push(mismatch);
        }
    }

    /// Runs a policy round with `policy` percent chance, a GC round with `gc` percent
    /// chance, a cross-check now and then, and up to three waiting tasks.
    fn run_background(&mut self, policy: u64, gc: u64) {
        if self.scheduler.chance(policy) {
            self.engine.run_policy();
            self.background_runs += 1;
        }
        if self.scheduler.chance(gc) {
            self.engine.run_gc();
            self.background_runs += 1;
        }
        if self.scheduler.chance(1) {
            self.cross_check();
            self.background_runs += 1;
        }
        for _ in 0..self.scheduler.below(4) {
            let waiting = self.engine.pending_tasks() as u64;
            if waiting == 0 {
                break;
            }
            let pick = self.scheduler.below(waiting) as usize;
            if self.engine.run_pending(pick).is_some() {
                self.background_runs += 1;
            }
        }
    }

    /// Creates the local peer of `region` (a fresh Raft group replica of `voters`).
    pub(crate) fn add_peer(&mut self, region: Region, voters: Vec<u64>) -> Result<()> {
        let storage = MemStorage::new_with_conf_state((voters, vec![]));
        let node = RawNode::new(&raft_config(self.id), storage, &self.logger)?;
        let id = region.id.0;
        self.peers.insert(
            id,
            Peer {
                node,
                region,
                applied: 0,
                role: StateRole::Follower,
                initialized: true,
                merging: None,
            },
        );
        Ok(())
    }

    /// Creates an uninitialized peer of region `id`, joining its group after a membership
    /// change: it knows nothing until the leader's snapshot arrives.
    pub(crate) fn join(&mut self, id: u64) -> Result<()> {
        let node = RawNode::new(&raft_config(self.id), MemStorage::new(), &self.logger)?;
        let placeholder = Region::new(RegionId(id), KeyRange::everything(), RegionEpoch::new(0, 0));
        self.peers.insert(
            id,
            Peer {
                node,
                region: placeholder,
                applied: 0,
                role: StateRole::Follower,
                initialized: false,
                merging: None,
            },
        );
        self.history
            .entry(id)
            .or_default()
            .push(format!("store {}: uninitialized peer created", self.id));
        Ok(())
    }

    /// The voters of the local peer of region `id`.
    pub(crate) fn voters_of(&self, id: u64) -> Result<Vec<u64>> {
        let peer = self.peers.get(&id).context("no such peer")?;
        Ok(
            raft::Storage::initial_state(&peer.node.raft.raft_log.store)?
                .conf_state
                .voters,
        )
    }

    /// Destroys the local peer of region `id`: the engine hears of it first (the event is
    /// synchronous), then the peer's data leaves the disk, as TiKV clears a destroyed
    /// peer's range.
    pub(crate) fn destroy_peer(&mut self, id: u64) -> Result<()> {
        let Some(peer) = self.peers.get(&id) else {
            return Ok(());
        };
        let region = peer.initialized.then(|| peer.region.clone());
        let fence = self.bypass(
            id,
            &RaftEvent::DestroyPeer {
                id: RegionId(id),
                region: region.clone(),
            },
        )?;
        self.peers.remove(&id);
        if let Some(region) = region {
            let mut batch = WriteBatch::new();
            delete_range(&mut batch, &region.range);
            self.interleave_in_fence();
            fence.write(&batch)?;
        }
        self.interleave_in_fence();
        fence.finish();
        self.destroyed += 1;
        Ok(())
    }

    /// Starts a change outside the write path: the engine handles `event` and fences the
    /// ranges it touches until the returned fence is finished. A bus fault that drops the
    /// event still fences them (unannounced): the disk changes only through a fence.
    pub(crate) fn bypass(
        &mut self,
        region: u64,
        event: &RaftEvent,
    ) -> Result<BypassFence<RocksDisk>> {
        if self.record(region, event) {
            Ok(self.engine.begin_bypass(event)?)
        } else {
            Ok(self.engine.fence_ranges(event.bypass_ranges()))
        }
    }

    /// Publishes `event` to the engine (unless a bus fault drops it) and records it.
    pub(crate) fn publish(&mut self, region: u64, event: &RaftEvent) -> Result<()> {
        if self.record(region, event) {
            self.engine.on_event(event)?;
        }
        Ok(())
    }

    /// Records `event` in the region's history; false when a bus fault drops it.
    fn record(&mut self, region: u64, event: &RaftEvent) -> bool {
        let kind = event.kind();
        let shows_later = matches!(
            kind,
            EventKind::ApplySnapshot
                | EventKind::Split
                | EventKind::PrepareMerge
                | EventKind::CommitMerge
                | EventKind::RollbackMerge
                | EventKind::ChangePeer
        );
        let dropped = (self.drops_snapshot_events && kind == EventKind::ApplySnapshot)
            || (self.drops_epoch_events && shows_later);
        if dropped {
            self.dropped_events += 1;
        }
        let line = format!(
            "store {}: {}{:?}",
            self.id,
            if dropped { "DROPPED " } else { "" },
            event
        );
        self.history.entry(region).or_default().push(line);
        !dropped
    }

    /// Handles every peer's Ready: persists, applies, and returns the messages to send.
    pub(crate) fn handle_readies(&mut self) -> Result<Vec<(u64, Message)>> {
        let mut out = Vec::new();
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            self.handle_ready(id, &mut out)?;
        }
        Ok(out)
    }

    fn handle_ready(&mut self, id: u64, out: &mut Vec<(u64, Message)>) -> Result<()> {
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(());
        };
        if !peer.node.has_ready() {
            return Ok(());
        }
        let mut ready = peer.node.ready();
        let mut messages = ready.take_messages();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.apply_snapshot(id, snapshot)?;
        }
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        let store = peer.node.raft.raft_log.store.clone();
        store.wl().append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            store.wl().set_hardstate(hs.clone());
        }
        let role_change = ready.ss().map(|ss| ss.raft_state);
        let committed = ready.take_committed_entries();
        messages.extend(ready.take_persisted_messages());
        self.apply_entries(id, committed)?;
        // A peer that applied its own removal is gone, its messages with it.
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(());
        };
        let mut light = peer.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(id, committed)?;
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(());
        };
        peer.node.advance_apply();
        if let Some(role) = role_change {
            self.role_changed(id, role)?;
        }
        for mut message in messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.fill_snapshot(id, &mut message)?;
            }
            out.push((id, message));
        }
        Ok(())
    }

    fn role_changed(&mut self, id: u64, role: StateRole) -> Result<()> {
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        if peer.role == role {
            return Ok(());
        }
        peer.role = role;
        let (region, term, applied) = (peer.region.clone(), peer.node.raft.term, peer.applied);
        let role = match role {
            StateRole::Leader => PeerRole::Leader,
            StateRole::Candidate | StateRole::PreCandidate => PeerRole::Candidate,
            StateRole::Follower => PeerRole::Follower,
        };
        self.publish(
            id,
            &RaftEvent::RoleChange {
                region: region.clone(),
                role,
                term,
            },
        )?;
        if role == PeerRole::Leader {
            // The load hint a leader gives: the simulated policy caches every led region.
            // A refusal (already cached, memory full) is the policy's business, not the
            // simulation's.
            let _ = self.engine.load_region(region, applied);
        }
        Ok(())
    }

    /// A leader's snapshot message gets the region's data at its applied index.
    fn fill_snapshot(&mut self, id: u64, message: &mut Message) -> Result<()> {
        let peer = self.peers.get(&id).context("peer vanished")?;
        let cfs = self.data_of(&peer.region.range)?;
        let data = SnapshotData {
            region: peer.region.clone(),
            applied: peer.applied,
            merging: peer.merging,
            cfs,
        };
        message
            .mut_snapshot()
            .set_data(serde_json::to_vec(&data)?.into());
        self.snapshots_sent += 1;
        Ok(())
    }

    /// Every entry of `range` on this store's disk, per column family.
    pub(crate) fn data_of(&self, range: &KeyRange) -> Result<Vec<CfData>> {
        let snapshot = self.engine.disk().snapshot();
        let bounds = Bounds::new(range.start().to_vec(), range.end().map(<[u8]>::to_vec))?;
        let mut cfs = Vec::new();
        for cf in Cf::ALL {
            cfs.push(collect(&snapshot, cf, bounds.clone())?);
        }
        Ok(cfs)
    }

    /// A follower applies a Raft snapshot: the engine is told first (the event is
    /// synchronous), then the region's data is replaced on disk, outside the write path.
    /// Other local peers the snapshot's range overlaps are stale (a merge or a removal
    /// this store missed) and are destroyed first, as TiKV does.
    fn apply_snapshot(&mut self, id: u64, snapshot: Snapshot) -> Result<()> {
        let data: SnapshotData =
            serde_json::from_slice(snapshot.get_data()).context("snapshot data")?;
        let index = snapshot.get_metadata().index;
        self.snapshots_applied += 1;
        let stale: Vec<u64> = self
            .peers
            .iter()
            .filter(|(other, p)| {
                **other != id && p.initialized && p.region.range.overlaps(&data.region.range)
            })
            .map(|(other, _)| *other)
            .collect();
        for other in stale {
            self.destroy_peer(other)?;
        }
        let peer = self.peers.get(&id).context("peer vanished")?;
        let before = peer.initialized.then(|| peer.region.clone());
        let applied = data.applied.max(index);
        let event = RaftEvent::ApplySnapshot {
            before: before.clone(),
            after: data.region.clone(),
            applied_index: applied,
        };
        let fence = self.bypass(id, &event)?;
        let mut batch = WriteBatch::new();
        for region in before.iter().chain([&data.region]) {
            delete_range(&mut batch, &region.range);
        }
        put_all(&mut batch, data.cfs);
        self.interleave_in_fence();
        fence.write(&batch)?;
        self.interleave_in_fence();
        fence.finish();
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        peer.region = data.region;
        peer.applied = applied;
        peer.initialized = true;
        peer.merging = data.merging;
        peer.node
            .raft
            .raft_log
            .store
            .wl()
            .apply_snapshot(snapshot)?;
        Ok(())
    }

    fn apply_entries(&mut self, id: u64, entries: Vec<Entry>) -> Result<()> {
        for entry in entries {
            self.apply_entry(id, &entry)?;
        }
        Ok(())
    }

    fn apply_entry(&mut self, id: u64, entry: &Entry) -> Result<()> {
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(()); // destroyed by an earlier entry of the same round
        };
        if entry.index <= peer.applied {
            return Ok(()); // already in the snapshot this peer applied
        }
        peer.applied = entry.index;
        let header = ApplyHeader {
            region: peer.region.id,
            epoch: peer.region.epoch,
            first_index: entry.index,
            last_index: entry.index,
        };
        let command = match entry.get_entry_type() {
            EntryType::EntryConfChange => {
                let change: Membership =
                    serde_json::from_slice(&entry.context).context("conf change context")?;
                return self.change_peer(id, entry.index, change);
            }
            EntryType::EntryNormal if !entry.data.is_empty() => {
                Some(serde_json::from_slice::<Command>(&entry.data).context("entry data")?)
            }
            // Empty entries (a new leader's), and V2 conf changes, which are not proposed.
            EntryType::EntryNormal | EntryType::EntryConfChangeV2 => None,
        };
        let mut batch = HybridWriteBatch::new();
        batch.prepare(header);
        match command {
            Some(Command::Write { version, ops })
                if self.accepts(id, version, ops.iter().map(|op| op.key.as_slice())) =>
            {
                for op in ops {
                    match op.value {
                        Some(value) => batch.put(op.cf, op.key, value),
                        None => batch.delete(op.cf, op.key),
                    };
                }
            }
            Some(Command::Ingest { version, entries })
                if self.accepts(id, version, entries.iter().map(|(k, _)| k.as_slice())) =>
            {
                self.ingest(id, &entries)?;
            }
            // Nothing, or data the apply refused: only the index is reported.
            None | Some(Command::Write { .. } | Command::Ingest { .. }) => {}
            Some(Command::Split { at, new_region }) => {
                return self.split(id, entry.index, at, new_region);
            }
            Some(Command::PrepareMerge { target }) => {
                return self.prepare_merge(id, entry.index, target);
            }
            Some(Command::CommitMerge { source, cfs }) => {
                return self.commit_merge(id, entry.index, source, cfs);
            }
            Some(Command::RollbackMerge) => return self.rollback_merge(id, entry.index),
        }
        self.engine.write(&batch)?;
        Ok(())
    }

    /// Whether the apply takes a data command proposed at epoch `version` over `keys`
    /// (TiKV's EpochNotMatch and KeyNotInRegion checks, and no writes while merging).
    fn accepts<'k>(
        &mut self,
        id: u64,
        version: u64,
        mut keys: impl Iterator<Item = &'k [u8]>,
    ) -> bool {
        let Some(peer) = self.peers.get(&id) else {
            return false;
        };
        let ok = peer.region.epoch.version == version
            && peer.merging.is_none()
            && keys.all(|k| peer.region.range.contains_key(k));
        if !ok {
            self.refused += 1;
        }
        ok
    }

    /// Reports an admin entry's index to the engine under the region's (new) epoch: an
    /// apply round with no data.
    fn report_index(&mut self, region: &Region, index: u64) -> Result<()> {
        let mut batch = HybridWriteBatch::new();
        batch.prepare(ApplyHeader {
            region: region.id,
            epoch: region.epoch,
            first_index: index,
            last_index: index,
        });
        self.engine.write(&batch)?;
        Ok(())
    }

    /// An admin command the apply refuses: only its index is reported.
    fn refuse(&mut self, id: u64, index: u64) -> Result<()> {
        self.refused += 1;
        let region = self.peers.get(&id).context("peer vanished")?.region.clone();
        self.report_index(&region, index)
    }

    /// Applies a membership change: `conf_ver` moves (ChangePeer), the Raft group learns
    /// its new voters, and a store that applies its own removal destroys its peer.
    fn change_peer(&mut self, id: u64, index: u64, change: Membership) -> Result<()> {
        let mut cc = ConfChange::default();
        cc.set_change_type(if change.add {
            ConfChangeType::AddNode
        } else {
            ConfChangeType::RemoveNode
        });
        cc.node_id = change.store;
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        let state = peer.node.apply_conf_change(&cc)?;
        let storage = peer.node.raft.raft_log.store.clone();
        storage.wl().set_conf_state(state);
        if change.add {
            // The log up to here goes, so that the new peer starts from a snapshot of the
            // region (raft-rs's log starts at index 1 on every replica; TiKV's new peers
            // always start from a snapshot).
            storage.wl().compact(index)?;
        }
        let before = peer.region.clone();
        let after = bumped(&before, 0, 1);
        peer.region = after.clone();
        self.peer_changes += 1;
        self.publish(
            id,
            &RaftEvent::ChangePeer {
                before,
                after: after.clone(),
            },
        )?;
        self.report_index(&after, index)?;
        if !change.add && change.store == self.id {
            self.destroy_peer(id)?;
        }
        Ok(())
    }

    /// Applies PrepareMerge on the source.
    fn prepare_merge(&mut self, id: u64, index: u64, target: u64) -> Result<()> {
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        if peer.merging.is_some() {
            return self.refuse(id, index);
        }
        let before = peer.region.clone();
        let after = bumped(&before, 1, 1);
        peer.region = after.clone();
        peer.merging = Some(target);
        self.publish(
            id,
            &RaftEvent::PrepareMerge {
                before,
                after: after.clone(),
            },
        )?;
        self.report_index(&after, index)
    }

    /// Applies CommitMerge on the target: the engine hears of it, a source peer that has
    /// not caught up gets the source's final data on disk, and the source peer goes.
    fn commit_merge(
        &mut self,
        id: u64,
        index: u64,
        source: Region,
        cfs: Vec<CfData>,
    ) -> Result<()> {
        let target = self.peers.get(&id).context("peer vanished")?.region.clone();
        let local = self.peers.get(&source.id.0);
        let left = source.range.end() == Some(target.range.start());
        let right = target.range.end() == Some(source.range.start());
        let stale = local.is_some_and(|p| p.region.epoch.version > source.epoch.version);
        if !(left || right) || stale {
            return self.refuse(id, index);
        }
        let range = if left {
            KeyRange::new(
                source.range.start().to_vec(),
                target.range.end().unwrap_or_default().to_vec(),
            )?
        } else {
            KeyRange::new(
                target.range.start().to_vec(),
                source.range.end().unwrap_or_default().to_vec(),
            )?
        };
        let version = target.epoch.version.max(source.epoch.version) + 1;
        let after = Region::new(
            target.id,
            range,
            RegionEpoch::new(version, target.epoch.conf_ver),
        );
        let caught_up = local.is_some_and(|p| p.merging == Some(target.id.0));
        let described = local
            .filter(|p| p.initialized)
            .map_or_else(|| source.clone(), |p| p.region.clone());
        let event = RaftEvent::CommitMerge {
            before: target,
            after: after.clone(),
            source: described.clone(),
        };
        if caught_up {
            self.publish(id, &event)?;
        } else {
            // A source peer that has not caught up gets the source's final data here (TiKV
            // has it from the source's log). The data bypasses the write path, so the event
            // begins a fence over the merged range and the source as this peer knew it; a
            // hot merge result's reload waits for the fence.
            let fence = self.bypass(id, &event)?;
            let mut batch = WriteBatch::new();
            delete_range(&mut batch, &described.range);
            put_all(&mut batch, cfs);
            self.interleave_in_fence();
            fence.write(&batch)?;
            self.interleave_in_fence();
            fence.finish();
        }
        if self.peers.remove(&source.id.0).is_some() {
            let line = format!("store {}: merged into region {}", self.id, id);
            self.history.entry(source.id.0).or_default().push(line);
        }
        self.peers.get_mut(&id).context("peer vanished")?.region = after.clone();
        self.merges += 1;
        self.report_index(&after, index)
    }

    /// Applies RollbackMerge on the source.
    fn rollback_merge(&mut self, id: u64, index: u64) -> Result<()> {
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        if peer.merging.is_none() {
            return self.refuse(id, index);
        }
        let before = peer.region.clone();
        let after = bumped(&before, 1, 0);
        peer.region = after.clone();
        peer.merging = None;
        self.rollbacks += 1;
        self.publish(
            id,
            &RaftEvent::RollbackMerge {
                before,
                after: after.clone(),
            },
        )?;
        self.report_index(&after, index)
    }

    /// Applies an SST ingest: the engine evicts what it touches first (the event is
    /// synchronous), then the entries reach the disk outside the write path.
    fn ingest(&mut self, id: u64, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let peer = self.peers.get(&id).context("peer vanished")?;
        let region = peer.region.clone();
        let inside: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .filter(|(k, _)| region.range.contains_key(k))
            .cloned()
            .collect();
        let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
            return Ok(());
        };
        let mut end = last.0.clone();
        end.push(0);
        let ranges = vec![KeyRange::new(first.0.clone(), end)?];
        let fence = self.bypass(id, &RaftEvent::IngestSst { region, ranges })?;
        self.interleave_in_fence();
        fence.ingest(Cf::Write, &inside)?;
        self.interleave_in_fence();
        fence.finish();
        Ok(())
    }

    /// Applies a split: the engine hears of it, the left child keeps this peer, and a
    /// fresh Raft group starts for the right child on this store.
    fn split(&mut self, id: u64, index: u64, at: Vec<u8>, new_region: u64) -> Result<()> {
        let peer = self.peers.get(&id).context("peer vanished")?;
        let before = peer.region.clone();
        let range = &before.range;
        let splittable = range.contains_key(&at)
            && at.as_slice() != range.start()
            && peer.merging.is_none()
            && !self.peers.contains_key(&new_region);
        if !splittable {
            return self.refuse(id, index);
        }
        let epoch = RegionEpoch::new(before.epoch.version + 1, before.epoch.conf_ver);
        let end = range.end().map(<[u8]>::to_vec).unwrap_or_default();
        let left = Region::new(
            before.id,
            KeyRange::new(range.start().to_vec(), at.clone())?,
            epoch,
        );
        let right = Region::new(RegionId(new_region), KeyRange::new(at, end)?, epoch);
        let children = vec![
            SplitChild {
                region: left.clone(),
                applied_index: index,
            },
            SplitChild {
                region: right.clone(),
                applied_index: 0,
            },
        ];
        self.publish(id, &RaftEvent::Split { before, children })?;
        let voters = self.voters_of(id)?;
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        peer.region = left;
        let leads = peer.role == StateRole::Leader;
        self.add_peer(right, voters)?;
        if leads {
            // As TiKV does: the parent's leader campaigns for the new region at once.
            self.peers
                .get_mut(&new_region)
                .context("new peer")?
                .node
                .campaign()?;
        }
        Ok(())
    }

    /// Drops log entries the peer has applied, but the last `keep` (a lagging follower
    /// then needs a snapshot).
    pub(crate) fn compact_logs(&mut self, keep: u64) -> Result<()> {
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            let peer = self.peers.get_mut(&id).context("peer vanished")?;
            let store = peer.node.raft.raft_log.store.clone();
            let target = peer.applied.saturating_sub(keep);
            let first = raft::Storage::first_index(&store)?;
            let last = raft::Storage::last_index(&store)?;
            if target > first && target <= last {
                store.wl().compact(target)?;
                let region = peer.region.clone();
                self.publish(
                    id,
                    &RaftEvent::CompactLog {
                        region,
                        compact_index: target,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Restarts the store's engine over the same RocksDB: the cache starts empty. (The
    /// Raft peers keep their logs, as a store's Raft engine would.) Regions this store
    /// leads are loaded again, as the policy would.
    pub(crate) fn restart(&mut self) -> Result<()> {
        let parking = tempfile::Builder::new()
            .prefix("ime-sim-restart-")
            .tempdir()?;
        let parked = open_engine(parking.path(), &self.config, Mutations::default())?;
        let old = std::mem::replace(&mut self.engine, parked);
        self.retired.push(old.stats());
        old.close(); // closes the real database
        let fresh = open_engine(self.dir.path(), &self.config, self.mutations)?;
        drop(std::mem::replace(&mut self.engine, fresh));
        for peer in self.peers.values() {
            if peer.role == StateRole::Leader && peer.initialized {
                let _ = self.engine.load_region(peer.region.clone(), peer.applied);
            }
        }
        let line = format!("store {}: restarted, cache empty", self.id);
        for id in self.peers.keys() {
            self.history.entry(*id).or_default().push(line.clone());
        }
        Ok(())
    }

    /// A count of the report, over every engine this store has run.
    pub(crate) fn stat(&self, count: impl Fn(&Stats) -> u64) -> u64 {
        let retired: u64 = self.retired.iter().map(&count).sum();
        retired + count(&self.engine.stats())
    }

    /// The leader peer of region `id` on this store, if this store leads it.
    pub(crate) fn leads(&self, id: u64) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| p.role == StateRole::Leader)
    }
}

/// `region` with its epoch moved on by `version` and `conf_ver` (an admin command that
/// keeps the range).
fn bumped(region: &Region, version: u64, conf_ver: u64) -> Region {
    let epoch = RegionEpoch::new(
        region.epoch.version + version,
        region.epoch.conf_ver + conf_ver,
    );
    Region::new(region.id, region.range.clone(), epoch)
}

/// Deletes `range` from every column family.
fn delete_range(batch: &mut WriteBatch, range: &KeyRange) {
    let end = range.end().map_or_else(|| vec![0xff; 64], <[u8]>::to_vec);
    for cf in Cf::ALL {
        batch.delete_range(cf, range.start().to_vec(), end.clone());
    }
}

/// Puts every entry of `cfs` (default, lock, write).
fn put_all(batch: &mut WriteBatch, cfs: Vec<CfData>) {
    for (cf, entries) in Cf::ALL.into_iter().zip(cfs) {
        for (key, value) in entries {
            batch.put(cf, key, value);
        }
    }
}
