//! `ime-engine` embedded in a minimal apply loop: the store's own RocksDB (TiKV's column
//! families beside its Raft log) wrapped as the disk, a Raft log of transactions, admin
//! commands and a split applied entry by entry, MVCC reads served from memory, and the
//! metrics mounted in the store's own Prometheus registry.
//!
//! Run it: `cargo run -p ime-engine --example apply_loop`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use ime_disk::rocksdb::{ColumnFamilyDescriptor, DB, Options};
use ime_disk::{CfNames, RocksDisk};
use ime_engine::{ApplyHeader, Config, Engine, HybridWriteBatch};
use ime_memkv::codec::{MvccKey, WriteRecord, WriteType, encode_bytes};
use ime_observer::RaftEvent;
use ime_region::{KeyRange, ReadRequest, Region, RegionEpoch, RegionId, SplitChild};

/// One Raft log entry of this toy store.
enum Entry {
    /// A committed transaction: keys and values (`None`: a delete) at `commit_ts`.
    Commit {
        rows: Vec<(&'static str, Option<&'static str>)>,
        commit_ts: u64,
    },
    /// An admin command with no data (a compact-log, a no-op).
    Admin,
    /// The region splits at a user key; the right half becomes region `new_id`.
    Split { at: &'static str, new_id: u64 },
}

fn main() -> Result<(), Box<dyn Error>> {
    // The store's database, opened by the store: TiKV's three families and its Raft log.
    let dir = tempfile::tempdir()?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = ["default", "lock", "write", "raft"]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&options, dir.path(), families)?);
    let disk = RocksDisk::wrap(Arc::clone(&db), CfNames::default(), false)?;
    let engine = Engine::new(disk, Config::from_toml("capacity = \"64MiB\"")?)?;
    let registry = prometheus::Registry::new();
    registry.register(Box::new(engine.metrics()))?;

    // Region 1 holds every user key; this store leads it and caches it from index 5.
    let bounds = |start: &str, end: Option<&str>| {
        KeyRange::with_end(
            encode_bytes(start.as_bytes()),
            end.map(|e| encode_bytes(e.as_bytes())),
        )
    };
    let mut region = Region::new(RegionId(1), bounds("", None)?, RegionEpoch::new(1, 1));
    let mut applied = 5;
    engine.load_region(region.clone(), applied)?;
    if !engine.wait_idle(Duration::from_secs(10)) {
        return Err("the load did not finish within 10 s".into());
    }

    let log = [
        Entry::Commit {
            rows: vec![("apple", Some("red")), ("melon", Some("green"))],
            commit_ts: 20,
        },
        Entry::Admin,
        Entry::Commit {
            rows: vec![("apple", None), ("peach", Some("pink"))],
            commit_ts: 40,
        },
        Entry::Split { at: "m", new_id: 2 },
        Entry::Commit {
            rows: vec![("banana", Some("yellow"))],
            commit_ts: 60,
        },
    ];
    for entry in log {
        applied += 1;
        let header = ApplyHeader {
            region: region.id,
            epoch: region.epoch,
            first_index: applied,
            last_index: applied,
        };
        match entry {
            Entry::Commit { rows, commit_ts } => {
                let mut batch = HybridWriteBatch::new();
                batch.prepare(header);
                for (key, value) in rows {
                    let write_type = if value.is_some() {
                        WriteType::Put
                    } else {
                        WriteType::Delete
                    };
                    let inline = value.map(|v| v.as_bytes().to_vec());
                    let record = WriteRecord::new(write_type, commit_ts - 1, inline);
                    let key = MvccKey {
                        user_key: key.as_bytes().to_vec(),
                        ts: commit_ts,
                    };
                    batch.put(ime_disk::Cf::Write, key.encode(), record.encode()?);
                }
                engine.write(&batch)?;
            }
            Entry::Admin => {
                engine.report_applied(header);
            }
            Entry::Split { at, new_id } => {
                let epoch = RegionEpoch::new(region.epoch.version + 1, region.epoch.conf_ver);
                let left = Region::new(region.id, bounds("", Some(at))?, epoch);
                let right = Region::new(RegionId(new_id), bounds(at, None)?, epoch);
                engine.on_event(&RaftEvent::Split {
                    before: region.clone(),
                    children: vec![
                        SplitChild {
                            region: left.clone(),
                            applied_index: applied,
                        },
                        SplitChild {
                            region: right,
                            applied_index: applied,
                        },
                    ],
                })?;
                region = left;
            }
        }
    }
    // The right half was never written after the split; its applied index stayed.
    let right = ReadRequest {
        epoch_version: 2,
        applied_index: 9,
        read_ts: 100,
    };
    let snapshot = engine.snapshot(RegionId(2), right);
    println!("region 2 from memory: {}", snapshot.from_memory());
    assert!(snapshot.from_memory());
    let rows = snapshot.mvcc_scan(b"", None, usize::MAX)?;
    assert_eq!(
        rows,
        [
            (b"melon".to_vec(), b"green".to_vec()),
            (b"peach".to_vec(), b"pink".to_vec())
        ]
    );

    // Region 1 at a timestamp before the delete of "apple", and after it.
    let left = |read_ts| ReadRequest {
        epoch_version: 2,
        applied_index: applied,
        read_ts,
    };
    let before = engine.snapshot(RegionId(1), left(30));
    let after = engine.snapshot(RegionId(1), left(100));
    assert!(before.from_memory() && after.from_memory());
    println!(
        "apple at 30: {:?}",
        before.mvcc_get(b"apple")?.map(String::from_utf8)
    );
    assert_eq!(before.mvcc_get(b"apple")?, Some(b"red".to_vec()));
    assert_eq!(after.mvcc_get(b"apple")?, None);
    assert_eq!(after.mvcc_get(b"banana")?, Some(b"yellow".to_vec()));

    // The store's own registry now holds the engine's metrics too.
    let families = registry.gather();
    let count = |name: &str| families.iter().filter(|f| f.name() == name).count();
    assert_eq!(
        count("ime_snapshots_total") + count("ime_read_duration_seconds"),
        2
    );
    println!("engine stats: {:?}", engine.stats().snapshots);
    Ok(())
}
