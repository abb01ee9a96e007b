//! One store of the simulated cluster: a RocksDB, an IME engine over it, and a Raft peer
//! (raft-rs `RawNode`) per region it hosts. Applying committed entries goes through the
//! engine's write path; admin commands and snapshots become the engine's `RaftEvent`s.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use ime_engine::disk::{Bounds, Cf, DiskEngine, RocksDisk, WriteBatch, collect};
use ime_engine::observer::{EventKind, PeerRole, RaftEvent};
use ime_engine::region::{KeyRange, Region, RegionEpoch, RegionId, SplitChild};
use ime_engine::{ApplyHeader, Config, Engine, HybridWriteBatch};
use raft::prelude::{Entry, EntryType, Message, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};

/// What a Raft entry carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Writes, in TiKV's formats, as one batch.
    Write(Vec<Op>),
    /// Split the region at this (encoded) key; the right half becomes region `new_region`.
    Split { at: Vec<u8>, new_region: u64 },
    /// An SST of write-CF entries (sorted, distinct keys) ingested into the region.
    Ingest { entries: Vec<(Vec<u8>, Vec<u8>)> },
}

/// One write of a command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Op {
    pub(crate) cf: usize,
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
    cfs: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// The local replica of one region.
pub(crate) struct Peer {
    pub(crate) node: RawNode<MemStorage>,
    pub(crate) region: Region,
    pub(crate) applied: u64,
    pub(crate) role: StateRole,
}

/// A store: its disk, its engine, its peers.
pub(crate) struct Store {
    pub(crate) id: u64,
    pub(crate) engine: Engine<RocksDisk>,
    pub(crate) peers: BTreeMap<u64, Peer>,
    /// A bus fault: ApplySnapshot events are dropped before they reach the engine.
    pub(crate) drops_snapshot_events: bool,
    /// Events published per region, for the report of a mismatch.
    pub(crate) history: BTreeMap<u64, Vec<String>>,
    logger: slog::Logger,
    pub(crate) voters: Vec<u64>,
    /// Raft snapshots sent and applied.
    pub(crate) snapshots_sent: u64,
    pub(crate) snapshots_applied: u64,
    /// The directory of its RocksDB, kept across restarts.
    dir: tempfile::TempDir,
    config: Config,
}

/// A RocksDB in `dir` (created or reopened), with a fresh engine over it.
fn open_engine(dir: &std::path::Path, config: &Config) -> Result<Engine<RocksDisk>> {
    let disk =
        RocksDisk::open(dir, &ime_engine::disk::RocksConfig::default()).context("open RocksDB")?;
    Ok(Engine::new(disk, config.clone())?)
}

fn raft_config(id: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: 10,
        // One election timeout, not a random one in [10, 20): raft-rs draws it from the
        // thread's RNG, which would make runs of one seed differ.
        min_election_tick: 10,
        max_election_tick: 11,
        heartbeat_tick: 3,
        max_inflight_msgs: 256,
        check_quorum: true,
        ..Default::default()
    }
}

impl Store {
    pub(crate) fn new(id: u64, voters: Vec<u64>, config: &Config) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ime-sim-store-")
            .tempdir()?;
        Ok(Store {
            id,
            engine: open_engine(dir.path(), config)?,
            peers: BTreeMap::new(),
            drops_snapshot_events: false,
            history: BTreeMap::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            voters,
            snapshots_sent: 0,
            snapshots_applied: 0,
            dir,
            config: config.clone(),
        })
    }

    /// Creates the local peer of `region` (a fresh Raft group replica).
    pub(crate) fn add_peer(&mut self, region: Region) -> Result<()> {
        let storage = MemStorage::new_with_conf_state((self.voters.clone(), vec![]));
        let node = RawNode::new(&raft_config(self.id), storage, &self.logger)?;
        let id = region.id.0;
        self.peers.insert(
            id,
            Peer {
                node,
                region,
                applied: 0,
                role: StateRole::Follower,
            },
        );
        Ok(())
    }

    /// Publishes `event` to the engine (unless a bus fault drops it) and records it.
    pub(crate) fn publish(&mut self, region: u64, event: &RaftEvent) -> Result<()> {
        let dropped = self.drops_snapshot_events && event.kind() == EventKind::ApplySnapshot;
        let line = format!(
            "store {}: {}{:?}",
            self.id,
            if dropped { "DROPPED " } else { "" },
            event
        );
        self.history.entry(region).or_default().push(line);
        if !dropped {
            self.engine.on_event(event)?;
        }
        Ok(())
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
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        let mut light = peer.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(id, committed)?;
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
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
            let _ = self.engine.load_region(region, applied);
        }
        Ok(())
    }

    /// A leader's snapshot message gets the region's data at its applied index.
    fn fill_snapshot(&mut self, id: u64, message: &mut Message) -> Result<()> {
        let peer = self.peers.get(&id).context("peer vanished")?;
        let snapshot = self.engine.disk().snapshot();
        let range = &peer.region.range;
        let bounds = Bounds::new(range.start().to_vec(), range.end().map(<[u8]>::to_vec))?;
        let mut cfs = Vec::new();
        for cf in Cf::ALL {
            cfs.push(collect(&snapshot, cf, bounds.clone())?);
        }
        let data = SnapshotData {
            region: peer.region.clone(),
            applied: peer.applied,
            cfs,
        };
        message
            .mut_snapshot()
            .set_data(serde_json::to_vec(&data)?.into());
        self.snapshots_sent += 1;
        Ok(())
    }

    /// A follower applies a Raft snapshot: the engine is told first (the event is
    /// synchronous), then the region's data is replaced on disk, outside the write path.
    fn apply_snapshot(&mut self, id: u64, snapshot: Snapshot) -> Result<()> {
        let data: SnapshotData =
            serde_json::from_slice(snapshot.get_data()).context("snapshot data")?;
        let index = snapshot.get_metadata().index;
        self.snapshots_applied += 1;
        let peer = self.peers.get(&id).context("peer vanished")?;
        let before = peer.region.clone();
        let applied = data.applied.max(index);
        let event = RaftEvent::ApplySnapshot {
            before: Some(before.clone()),
            after: data.region.clone(),
            applied_index: applied,
        };
        self.publish(id, &event)?;
        let mut batch = WriteBatch::new();
        for range in [&before.range, &data.region.range] {
            let end = range.end().map_or_else(|| vec![0xff; 64], <[u8]>::to_vec);
            for cf in Cf::ALL {
                batch.delete_range(cf, range.start().to_vec(), end.clone());
            }
        }
        for (cf, entries) in Cf::ALL.into_iter().zip(data.cfs) {
            for (key, value) in entries {
                batch.put(cf, key, value);
            }
        }
        self.engine.disk().write(&batch)?;
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        peer.region = data.region;
        peer.applied = applied;
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
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
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
            EntryType::EntryNormal if !entry.data.is_empty() => {
                Some(serde_json::from_slice::<Command>(&entry.data).context("entry data")?)
            }
            _ => None,
        };
        let mut batch = HybridWriteBatch::new();
        batch.prepare(header);
        match command {
            None => {}
            Some(Command::Write(ops)) => {
                for op in ops {
                    let cf = Cf::ALL[op.cf % 3];
                    match op.value {
                        Some(value) => batch.put(cf, op.key, value),
                        None => batch.delete(cf, op.key),
                    };
                }
            }
            Some(Command::Ingest { entries }) => self.ingest(id, &entries)?,
            Some(Command::Split { at, new_region }) => {
                return self.split(id, entry.index, at, new_region);
            }
        }
        self.engine.write(&batch)?;
        Ok(())
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
        self.publish(id, &RaftEvent::IngestSst { region, ranges })?;
        self.engine.disk().ingest(Cf::Write, &inside)?;
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
            && !self.peers.contains_key(&new_region);
        let header = ApplyHeader {
            region: before.id,
            epoch: before.epoch,
            first_index: index,
            last_index: index,
        };
        if !splittable {
            let mut batch = HybridWriteBatch::new();
            batch.prepare(header);
            self.engine.write(&batch)?;
            return Ok(());
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
        self.peers.get_mut(&id).context("peer vanished")?.region = left;
        self.add_peer(right)?;
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
    pub(crate) fn restart(&mut self, broken: bool) -> Result<()> {
        let parking = tempfile::Builder::new()
            .prefix("ime-sim-restart-")
            .tempdir()?;
        let parked = open_engine(parking.path(), &self.config)?;
        let old = std::mem::replace(&mut self.engine, parked);
        old.close(); // closes the real database
        let fresh = open_engine(self.dir.path(), &self.config)?;
        drop(std::mem::replace(&mut self.engine, fresh));
        if broken {
            self.engine.break_for_tests();
        }
        for peer in self.peers.values() {
            if peer.role == StateRole::Leader {
                let _ = self.engine.load_region(peer.region.clone(), peer.applied);
            }
        }
        let line = format!("store {}: restarted, cache empty", self.id);
        for id in self.peers.keys() {
            self.history.entry(*id).or_default().push(line.clone());
        }
        Ok(())
    }

    /// The leader peer of region `id` on this store, if this store leads it.
    pub(crate) fn leads(&self, id: u64) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| p.role == StateRole::Leader)
    }
}
