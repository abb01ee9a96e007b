//! `ime-memkv` alone, as an MVCC memtable in TiKV's formats: a job queue's rows written
//! and deleted version by version, read at a timestamp from a snapshot (a pending lock
//! in the way, then resolved), and the versions nobody reads any more collected.
//!
//! Run it: `cargo run -p ime-memkv --example standalone`.

use ime_memkv::codec::{LockRecord, LockType, MvccKey, WriteRecord, WriteType, encode_bytes};
use std::error::Error;

use ime_memkv::mvcc::{first_blocking_lock, visible_pairs};
use ime_memkv::{Cf, KeyRange, MemConfig, MemKv, RangeId, WriteBatch};

fn main() -> Result<(), Box<dyn Error>> {
    let kv = MemKv::new(MemConfig {
        hard_limit: 64 << 20,
        soft_limit: 48 << 20,
    });
    // A range of user keys, bounded as TiKV bounds regions (memcomparable encoding).
    let jobs = KeyRange::with_end(encode_bytes(b"job/"), Some(encode_bytes(b"job0")))?;
    kv.create_range(RangeId(1), jobs.clone())?;

    // Each job is inserted (a Put with its value inline) and, but for the last, deleted
    // ten timestamps later: one batch per commit, at the next sequence number (the
    // disk's, when the store caches a disk).
    let seq = std::cell::Cell::new(0);
    let write = |batch: &WriteBatch| {
        seq.set(seq.get() + 1);
        kv.write(batch, seq.get())
    };
    let mut ts = 100;
    for job in 0..100u32 {
        let key = format!("job/{job:03}").into_bytes();
        let commit = |write_type, start_ts: u64, value: Option<&[u8]>, commit_ts| {
            let record = WriteRecord::new(write_type, start_ts, value.map(<[u8]>::to_vec));
            let key = MvccKey {
                user_key: key.clone(),
                ts: commit_ts,
            }
            .encode();
            let mut batch = WriteBatch::new();
            batch.put(Cf::Write, key, record.encode()?);
            write(&batch)?;
            Ok::<_, Box<dyn Error>>(())
        };
        commit(WriteType::Put, ts, Some(b"payload"), ts + 1)?;
        if job < 99 {
            commit(WriteType::Delete, ts + 10, None, ts + 11)?;
        }
        ts += 20;
    }

    // A transaction has prewritten job 099's deletion: a reader at or above its start
    // meets the lock, as TiKV's reader would.
    let lock = LockRecord::new(LockType::Delete, b"job/099".to_vec(), ts, 3000);
    let mut batch = WriteBatch::new();
    batch.put(Cf::Lock, encode_bytes(b"job/099"), lock.encode()?);
    write(&batch)?;
    let snapshot = kv.snapshot(RangeId(1), seq.get())?;
    let mut locks = snapshot.iter(Cf::Lock, jobs.clone())?;
    locks.seek_to_first();
    let blocked = first_blocking_lock(&mut locks, ts + 5)?;
    println!(
        "read at {}: {}",
        ts + 5,
        blocked.map_or("no lock".into(), |e| e.to_string())
    );

    // Below the lock's start_ts, the queue's live rows: one, after stepping over every
    // version of the deleted jobs.
    let read = |snapshot: &ime_memkv::Snapshot| -> Result<_, Box<dyn Error>> {
        let mut writes = snapshot.iter(Cf::Write, jobs.clone())?;
        writes.seek_to_first();
        let value = |_: &[u8], record: WriteRecord| Ok(record.short_value.unwrap_or_default());
        visible_pairs(&mut writes, ts - 1, usize::MAX, value)
    };
    let (live, touched) = read(&snapshot)?;
    println!("{} live row(s), {touched} versions touched", live.len());
    assert_eq!(live, [(b"job/099".to_vec(), b"payload".to_vec())]);

    // GC at a safe point below every reader: deleted rows go, with their deletions.
    let before = kv.memory_used();
    let stats = kv.compact(RangeId(1), Some(ts - 1))?;
    let (live_after, touched_after) = read(&kv.snapshot(RangeId(1), kv.last_sequence())?)?;
    assert_eq!(live_after, live);
    // The snapshot taken before GC still reads the old versions, unchanged; they are
    // freed when it drops.
    assert_eq!(read(&snapshot)?, (live, touched));
    drop(snapshot);
    println!(
        "GC removed {} versions: {touched_after} touched now; memory {before} -> {} bytes",
        stats.versions_removed,
        kv.memory_used()
    );
    assert!(touched_after < touched && kv.memory_used() < before);
    Ok(())
}
