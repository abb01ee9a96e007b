//! `ime-disk` alone, over RocksDB: a database the store opened itself, its column
//! families named its own way, wrapped; batches whose sequence numbers are known, a
//! snapshot that keeps reading what it saw, bounded iteration, and an SST ingest — the
//! way a snapshot's data reaches the disk beside the write path.
//!
//! Run it: `cargo run -p ime-disk --example over_rocksdb`.

use std::sync::Arc;

use ime_disk::rocksdb::{ColumnFamilyDescriptor, DB, Options};
use ime_disk::{Cf, CfNames, DiskEngine, DiskSnapshot, KeyRange, RocksDisk, WriteBatch, collect};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = ["default", "kv_default", "kv_lock", "kv_write", "raft"]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&options, dir.path(), families)?);
    let names = CfNames {
        default: "kv_default".into(),
        lock: "kv_lock".into(),
        write: "kv_write".into(),
    };
    let disk = RocksDisk::wrap(Arc::clone(&db), names, false)?;

    // A batch: each operation takes the next sequence number, as RocksDB assigns them.
    let mut batch = WriteBatch::new();
    batch
        .put(Cf::Write, "k1", "v1")
        .put(Cf::Write, "k2", "v2")
        .put(Cf::Lock, "k2", "lock");
    let seqs = disk.write(&batch)?;
    println!("batch at sequence numbers {}..={}", seqs.first, seqs.last);

    // A snapshot keeps its view: a later delete range does not reach it.
    let before = disk.snapshot();
    disk.write(WriteBatch::new().delete_range(Cf::Write, "k1", "k3"))?;
    // The store writes its Raft log beside IME's families, as it always did.
    db.put_cf(
        db.cf_handle("raft").ok_or("no raft family")?,
        b"log/7",
        b"entry",
    )?;
    assert_eq!(before.get(Cf::Write, b"k1")?, Some(b"v1".to_vec()));
    assert_eq!(disk.snapshot().get(Cf::Write, b"k1")?, None);

    // Data that bypasses the write path arrives as an ingested SST.
    disk.ingest(Cf::Write, &[(b"k5".to_vec(), b"from a snapshot".to_vec())])?;
    let now = disk.snapshot();
    let write_cf = collect(&now, Cf::Write, KeyRange::everything())?;
    for (key, value) in &write_cf {
        let (key, value) = (String::from_utf8_lossy(key), String::from_utf8_lossy(value));
        println!("write CF at sequence {}: {key} = {value}", now.sequence());
    }
    assert_eq!(write_cf, [(b"k5".to_vec(), b"from a snapshot".to_vec())]);
    let seen_before = collect(&before, Cf::Write, KeyRange::new("k1", "k9")?)?;
    assert_eq!(
        seen_before.len(),
        2,
        "the old snapshot still reads both keys"
    );
    Ok(())
}
