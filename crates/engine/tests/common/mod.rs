//! The local peer of a Raft store, as the engine's tests play it: regions with their
//! epochs and applied indexes, MVCC writes in TiKV's formats through the engine's write
//! path, and reads checked against an independent MVCC reading of the disk snapshot.

#![allow(dead_code, reason = "each test file uses part of the helper")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test helper: failing loudly is its job"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use ime_disk::{Cf, DiskEngine, DiskSnapshot, KeyRange, MemDisk};
use ime_engine::{
    ApplyHeader, Config, Engine, HybridSnapshot, HybridWriteBatch, KvPair, TaskKind, WriteOutcome,
};
use ime_memkv::codec::{MvccKey, WriteRecord, WriteType, encode_bytes};
use ime_region::{ReadRequest, Region, RegionEpoch, RegionId, RegionState};

/// A region over user keys `[start, end)` (encoded, as TiKV's region boundaries are).
pub(crate) fn region(id: u64, start: &str, end: Option<&str>, version: u64) -> Region {
    let range = KeyRange::new(
        encode_bytes(start.as_bytes()),
        end.map(|e| encode_bytes(e.as_bytes())).unwrap_or_default(),
    )
    .unwrap();
    Region::new(RegionId(id), range, RegionEpoch::new(version, 1))
}

/// The same region at another epoch version.
pub(crate) fn at_version(region: &Region, version: u64) -> Region {
    Region::new(
        region.id,
        region.range.clone(),
        RegionEpoch::new(version, region.epoch.conf_ver),
    )
}

/// A config for tests: background ticks slow enough not to interfere.
pub(crate) fn test_config() -> Config {
    Config::from_toml(
        r#"
        capacity = "256MiB"
        gc-run-interval = "1h"
        load-evict-interval = "1h"
        warmup-timeout = "300ms"
        "#,
    )
    .unwrap()
}

/// The local peer: the engine and what Raft knows of each region.
pub(crate) struct Peer<D: DiskEngine> {
    pub(crate) engine: Engine<D>,
    pub(crate) regions: BTreeMap<RegionId, (Region, u64)>,
    ts: u64,
}

impl Peer<MemDisk> {
    pub(crate) fn in_memory() -> Self {
        Peer::new(Engine::new(MemDisk::new(), test_config()).unwrap())
    }
}

#[cfg(feature = "rocksdb")]
impl Peer<ime_disk::RocksDisk> {
    pub(crate) fn rocks() -> Self {
        let disk = ime_disk::RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
        Peer::new(Engine::new(disk, test_config()).unwrap())
    }
}

impl<D: DiskEngine> Peer<D> {
    pub(crate) fn new(engine: Engine<D>) -> Self {
        Peer {
            engine,
            regions: BTreeMap::new(),
            ts: 10,
        }
    }

    pub(crate) fn add(&mut self, region: Region) {
        self.regions.insert(region.id, (region, 5));
    }

    pub(crate) fn region(&self, id: u64) -> Region {
        self.regions[&RegionId(id)].0.clone()
    }

    pub(crate) fn applied(&self, id: u64) -> u64 {
        self.regions[&RegionId(id)].1
    }

    /// Raft moved the region to `region` (a new epoch) at applied index `index`.
    pub(crate) fn set(&mut self, region: Region, index: u64) {
        self.regions.insert(region.id, (region, index));
    }

    /// A fresh timestamp.
    pub(crate) fn next_ts(&mut self) -> u64 {
        self.ts += 10;
        self.ts
    }

    /// Loads region `id` and waits for the loader.
    pub(crate) fn load(&mut self, id: u64) {
        let (region, index) = self.regions[&RegionId(id)].clone();
        self.engine.load_region(region, index).unwrap();
        self.idle();
    }

    /// Runs the background work but the policy rounds writes and loads ask for, which
    /// stay queued (a test of what happens before they run).
    pub(crate) fn idle_without_rounds(&self) {
        loop {
            let kinds = self.engine.pending_kinds();
            let Some(at) = kinds.iter().position(|k| *k != TaskKind::PolicyRound) else {
                return;
            };
            self.engine.run_pending(at);
        }
    }

    pub(crate) fn idle(&self) {
        assert!(
            self.engine.wait_idle(Duration::from_secs(30)),
            "background work did not finish"
        );
    }

    pub(crate) fn state(&self, id: u64) -> Option<RegionState> {
        self.engine
            .regions()
            .into_iter()
            .find(|r| r.region.id == RegionId(id))
            .map(|r| r.state)
    }

    /// Commits `value` (or a delete, `None`) for each key in region `id`, in one Raft entry.
    pub(crate) fn commit(&mut self, id: u64, items: &[(&str, Option<&str>)]) -> WriteOutcome {
        let start_ts = self.next_ts();
        let commit_ts = self.next_ts();
        let (region, index) = self.regions[&RegionId(id)].clone();
        let mut batch = HybridWriteBatch::new();
        let header = ApplyHeader {
            region: region.id,
            epoch: region.epoch,
            first_index: index + 1,
            last_index: index + 1,
        };
        batch.prepare(header);
        for (key, value) in items {
            let write_key = MvccKey {
                user_key: key.as_bytes().to_vec(),
                ts: commit_ts,
            }
            .encode();
            let record = match value {
                Some(v) if v.len() <= 8 => {
                    WriteRecord::new(WriteType::Put, start_ts, Some(v.as_bytes().to_vec()))
                }
                Some(v) => {
                    let default_key = MvccKey {
                        user_key: key.as_bytes().to_vec(),
                        ts: start_ts,
                    }
                    .encode();
                    batch.put(Cf::Default, default_key, v.as_bytes().to_vec());
                    WriteRecord::new(WriteType::Put, start_ts, None)
                }
                None => WriteRecord::new(WriteType::Delete, start_ts, None),
            };
            batch.put(Cf::Write, write_key, record.encode().unwrap());
        }
        self.regions.insert(region.id, (region, index + 1));
        self.engine.write(&batch).unwrap()
    }

    /// Writes lock-CF records for region `id` (user key, record), in one Raft entry.
    pub(crate) fn put_locks(
        &mut self,
        id: u64,
        locks: &[(&str, ime_memkv::codec::LockEntry)],
    ) -> WriteOutcome {
        self.write_entry(id, |batch| {
            for (key, lock) in locks {
                let value = lock.encode().unwrap();
                batch.put(Cf::Lock, encode_bytes(key.as_bytes()), value);
            }
        })
    }

    /// One Raft entry of region `id`, with the operations `fill` puts in it.
    pub(crate) fn write_entry(
        &mut self,
        id: u64,
        fill: impl FnOnce(&mut HybridWriteBatch),
    ) -> WriteOutcome {
        let (region, index) = self.regions[&RegionId(id)].clone();
        let mut batch = HybridWriteBatch::new();
        batch.prepare(ApplyHeader {
            region: region.id,
            epoch: region.epoch,
            first_index: index + 1,
            last_index: index + 1,
        });
        fill(&mut batch);
        self.regions.insert(region.id, (region, index + 1));
        self.engine.write(&batch).unwrap()
    }

    /// An entry without data (an admin command, an empty entry) for region `id`.
    pub(crate) fn empty_entry(&mut self, id: u64) -> WriteOutcome {
        let (region, index) = self.regions[&RegionId(id)].clone();
        let header = ApplyHeader {
            region: region.id,
            epoch: region.epoch,
            first_index: index + 1,
            last_index: index + 1,
        };
        self.regions.insert(region.id, (region, index + 1));
        self.engine.report_applied(header)
    }

    /// An entry of region `id` applied without telling the engine (a missed report).
    pub(crate) fn skip_entry(&mut self, id: u64) {
        self.regions.get_mut(&RegionId(id)).unwrap().1 += 1;
    }

    /// A snapshot of region `id` as its peer would ask for it now.
    pub(crate) fn snapshot(&mut self, id: u64) -> HybridSnapshot<D> {
        let read_ts = self.next_ts();
        let (region, index) = self.regions[&RegionId(id)].clone();
        self.engine.snapshot(
            region.id,
            ReadRequest {
                epoch_version: region.epoch.version,
                applied_index: index,
                read_ts,
            },
        )
    }

    /// Reads region `id` (a full MVCC scan and a get of every key) and checks every answer
    /// against the disk at the same sequence; returns whether memory served it.
    pub(crate) fn check(&mut self, id: u64) -> bool {
        let snapshot = self.snapshot(id);
        let region = self.region(id);
        assert_reads_match(&snapshot, &region);
        snapshot.from_memory()
    }

    /// The visible pairs of region `id` now, as the engine serves them.
    pub(crate) fn scan(&mut self, id: u64) -> Vec<KvPair> {
        let snapshot = self.snapshot(id);
        let region = self.region(id);
        scan_region(&snapshot, &region)
    }
}

/// The user-key bounds of a region.
fn user_bounds(region: &Region) -> (Vec<u8>, Option<Vec<u8>>) {
    let decode = |k: &[u8]| ime_memkv::codec::decode_bytes(k).unwrap().0;
    let start = if region.range.start().is_empty() {
        Vec::new()
    } else {
        decode(region.range.start())
    };
    (start, region.range.end().map(decode))
}

pub(crate) fn scan_region<D: DiskEngine>(
    snapshot: &HybridSnapshot<D>,
    region: &Region,
) -> Vec<KvPair> {
    let (start, end) = user_bounds(region);
    snapshot
        .mvcc_scan(&start, end.as_deref(), usize::MAX)
        .unwrap()
}

/// Asserts that the snapshot's MVCC scan and gets of `region` equal an independent MVCC
/// reading of its disk snapshot (same sequence).
pub(crate) fn assert_reads_match<D: DiskEngine>(snapshot: &HybridSnapshot<D>, region: &Region) {
    let expected = reference_scan(snapshot.disk(), &region.range, snapshot.read_ts());
    let got = scan_region(snapshot, region);
    assert_eq!(
        got,
        expected,
        "region {} read at {} (from memory: {}) differs from disk",
        region.id,
        snapshot.read_ts(),
        snapshot.from_memory()
    );
    for (key, value) in &expected {
        assert_eq!(
            snapshot.mvcc_get(key).unwrap().as_ref(),
            Some(value),
            "get {key:?}"
        );
    }
}

/// MVCC reading straight off the disk's raw entries (the engine's reference reader).
pub(crate) fn reference_scan<S: DiskSnapshot>(
    disk: &S,
    range: &KeyRange,
    read_ts: u64,
) -> Vec<KvPair> {
    let bounds =
        KeyRange::with_end(range.start().to_vec(), range.end().map(<[u8]>::to_vec)).unwrap();
    ime_engine::reference_scan(disk, &bounds, read_ts, false).unwrap()
}

/// Writes `items` to the disk through `fence`, outside the write path (what a snapshot
/// apply, an ingest or a delete range does), as committed puts at `commit_ts`.
pub(crate) fn bypass_put<D: DiskEngine>(
    fence: &ime_engine::BypassFence<D>,
    items: &[(&str, &str)],
    commit_ts: u64,
) {
    let mut entries: Vec<KvPair> = items
        .iter()
        .map(|(k, v)| {
            let key = MvccKey {
                user_key: k.as_bytes().to_vec(),
                ts: commit_ts,
            }
            .encode();
            let record =
                WriteRecord::new(WriteType::Put, commit_ts - 1, Some(v.as_bytes().to_vec()));
            (key, record.encode().unwrap())
        })
        .collect();
    entries.sort();
    fence.ingest(Cf::Write, &entries).unwrap();
}
