//! One store of the simulated cluster: a RocksDB, an IME engine over it, and a Raft peer
//! (raft-rs `RawNode`) per region it hosts. Applying committed entries goes through the
//! engine's write path; admin commands and snapshots become the engine's `RaftEvent`s.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ime_engine::disk::{Cf, KeyRange, RocksDisk, WriteBatch, collect};
use ime_engine::observer::{
    BusConfig, EventBus, EventKind, FaultAction, FaultRule, FaultyObserver, JournalEntry,
    JournalObserver, JournalWriter, PeerRole, RaftEvent, RaftObserver,
};
use ime_engine::region::{Region, RegionEpoch, RegionId, SplitChild};
use ime_engine::{ApplyHeader, Background, BypassFence, Config, Engine, HybridWriteBatch, Stats};
use raft::prelude::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};

mod apply;
mod ready;
mod scheduler;

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
    /// The bus events reach the engine through (manual: the scheduler dispatches queued
    /// events), with the engine behind a fault injector.
    bus: Bus,
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
    /// Events the buses of engines closed by restarts delivered, and gaps they reported.
    retired_bus: BusCounts,
    /// The directory of its RocksDB, kept across restarts.
    dir: tempfile::TempDir,
    config: Config,
    mutations: Mutations,
    /// Where this store's events are journaled, when asked.
    journal: Option<std::path::PathBuf>,
    /// The seeded scheduler of this store's background work.
    scheduler: Rng,
    /// Background tasks, GC rounds and policy rounds the scheduler ran.
    pub(crate) background_runs: u64,
    /// What the engine's cross-checker found (run by the scheduler, and at the end).
    pub(crate) differences: Vec<Mismatch>,
}

/// An engine's event bus: manual (no dispatcher thread, so a seed replays), with the
/// engine registered behind a [`FaultyObserver`] that drops what a bus fault drops.
struct Bus {
    bus: EventBus,
    faults: Arc<FaultyObserver<Arc<dyn RaftObserver>>>,
    /// When asked (`--event-journal`): every event, in the observer's journal format, ahead
    /// of the engine on the bus (changes with fences are appended by hand).
    journal: Option<Arc<JournalObserver>>,
}

impl Bus {
    /// A bus to `engine`, journaling to `journal` (appended to if it exists) when given.
    fn new(engine: &Engine<RocksDisk>, journal: Option<&std::path::Path>) -> Result<Self> {
        let bus = EventBus::with_config(&BusConfig {
            manual: true,
            ..BusConfig::default()
        })?;
        let journal = match journal {
            None => None,
            Some(path) if path.exists() => Some(JournalWriter::open(path)?.0),
            Some(path) => Some(JournalWriter::create(path)?),
        }
        .map(|writer| Arc::new(JournalObserver::new(writer)));
        if let Some(journal) = &journal {
            bus.register(journal.clone(), 10);
        }
        let faults = Arc::new(FaultyObserver::new(engine.observer(), Vec::new()));
        bus.register(faults.clone(), 0);
        Ok(Bus {
            bus,
            faults,
            journal,
        })
    }

    /// What the bus delivered to the engine and the gaps it reported.
    fn counts(&self) -> BusCounts {
        let stats: Vec<_> = self
            .bus
            .stats()
            .into_iter()
            .filter(|s| s.name == ENGINE_OBSERVER)
            .collect();
        BusCounts {
            delivered: stats.iter().map(|s| s.delivered).sum(),
            gaps: stats.iter().map(|s| s.gaps).sum(),
        }
    }
}

/// The engine's name on a bus.
const ENGINE_OBSERVER: &str = "ime-engine";

/// Events a bus delivered to the engine, and the gaps it reported to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BusCounts {
    pub(crate) delivered: u64,
    pub(crate) gaps: u64,
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
    pub(crate) fn new(
        id: u64,
        config: &Config,
        mutations: Mutations,
        seed: u64,
        journal: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ime-sim-store-")
            .tempdir()?;
        let engine = open_engine(dir.path(), config, mutations)?;
        Ok(Store {
            id,
            bus: Bus::new(&engine, journal.as_deref())?,
            journal,
            engine,
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
            retired_bus: BusCounts::default(),
            dir,
            config: config.clone(),
            mutations,
            scheduler: Rng::new(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            background_runs: 0,
            differences: Vec::new(),
        })
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
            if let Some(journal) = &self.bus.journal {
                journal.append(&JournalEntry::Event(event.clone()))?;
            }
            Ok(self.engine.begin_bypass(event)?)
        } else {
            Ok(self.engine.fence_ranges(event.bypass_ranges()))
        }
    }

    /// Records `event` and publishes it to the engine through the store's bus (a sync event
    /// returns once the engine handled it; a queued one waits for the scheduler). A bus
    /// fault drops it in the fault injector in front of the engine.
    pub(crate) fn publish(&mut self, region: u64, event: &RaftEvent) -> Result<()> {
        if !self.record(region, event) {
            let drop_once = FaultRule::times(event.kind(), FaultAction::Drop, 1);
            self.bus.faults.add_rule(drop_once);
        }
        let report = self.bus.bus.publish(event.clone());
        if let Some(failure) = report.failures.first() {
            bail!(
                "store {}: the engine failed on {} for {:?}: {}",
                self.id,
                failure.kind,
                failure.regions,
                failure.detail
            );
        }
        Ok(())
    }

    /// Delivers up to `max` queued events of the bus (the scheduler's call).
    pub(crate) fn dispatch_events(&self, max: usize) -> usize {
        self.bus.bus.dispatch_queued(max)
    }

    /// Events the buses delivered to this store's engines, and the gaps they reported.
    pub(crate) fn bus_counts(&self) -> BusCounts {
        let now = self.bus.counts();
        BusCounts {
            delivered: self.retired_bus.delivered + now.delivered,
            gaps: self.retired_bus.gaps + now.gaps,
        }
    }

    /// Records `event` in the region's history; false when a bus fault drops it.
    pub(super) fn record(&mut self, region: u64, event: &RaftEvent) -> bool {
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

    /// Restarts the store's engine over the same RocksDB: the cache starts empty. (The
    /// Raft peers keep their logs, as a store's Raft engine would.) Regions this store
    /// leads are loaded again, as the policy would.
    pub(crate) fn restart(&mut self) -> Result<()> {
        let parking = tempfile::Builder::new()
            .prefix("ime-sim-restart-")
            .tempdir()?;
        // The old engine hears what its bus still holds; the bus, which holds the engine's
        // observer, goes before the engine so that the database closes.
        self.bus.bus.dispatch_queued(usize::MAX);
        let counts = self.bus.counts();
        self.retired_bus.delivered += counts.delivered;
        self.retired_bus.gaps += counts.gaps;
        let parked = open_engine(parking.path(), &self.config, Mutations::default())?;
        self.bus = Bus::new(&parked, None)?;
        let old = std::mem::replace(&mut self.engine, parked);
        self.retired.push(old.stats());
        old.close(); // closes the real database
        let fresh = open_engine(self.dir.path(), &self.config, self.mutations)?;
        self.bus = Bus::new(&fresh, self.journal.as_deref())?;
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
