//! A reader that begins after a change returned reads it: a write to a cached region, a
//! write to a region that is not cached, a fenced write, a fenced ingest — each read,
//! changed and read again with no other event in between (the engine's background runs
//! only when asked) — and a reader right after a load is served from memory. These hold
//! whatever the engine does to spare a reader its disk snapshot (a view kept between
//! reads was tried, and each case failed with its change left unannounced). Against
//! RocksDB.
#![cfg(feature = "rocksdb")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail loudly"
)]

mod common;

use common::{Peer, bypass_put, region, test_config};
use ime_disk::{Cf, WriteBatch};
use ime_engine::{Background, Engine};
use ime_memkv::codec::{MvccKey, WriteRecord, WriteType};
use ime_observer::RaftEvent;

fn peer() -> Peer<ime_disk::RocksDisk> {
    let disk = ime_disk::RocksDisk::open_temp(&ime_disk::RocksConfig::default()).unwrap();
    let policy = Box::new(ime_engine::eviction::default_policy());
    let engine = Engine::with_background(disk, test_config(), policy, Background::Manual).unwrap();
    let mut peer = Peer::new(engine);
    peer.add(region(1, "a", Some("m"), 4));
    peer.add(region(2, "m", None, 4));
    peer.commit(1, &[("b", Some("1"))]);
    peer.commit(2, &[("n", Some("2"))]);
    peer
}

/// Loads region `id` with the manual background: its tasks run here.
fn load(peer: &mut Peer<ime_disk::RocksDisk>, id: u64) {
    let (region, index) = (peer.region(id), peer.applied(id));
    peer.engine.load_region(region, index).unwrap();
    while peer.engine.run_pending(0).is_some() {}
}

fn value(peer: &mut Peer<ime_disk::RocksDisk>, id: u64, key: &str) -> Option<String> {
    let snapshot = peer.snapshot(id);
    common::assert_reads_match(&snapshot, &peer.region(id));
    snapshot
        .mvcc_get(key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn a_write_to_a_region_not_cached_is_read_at_once() {
    let mut peer = peer();
    assert_eq!(value(&mut peer, 2, "n").as_deref(), Some("2"));
    // A second read with nothing changed in between.
    assert_eq!(value(&mut peer, 2, "n").as_deref(), Some("2"));
    peer.commit(2, &[("n", Some("3"))]);
    assert_eq!(value(&mut peer, 2, "n").as_deref(), Some("3"));
}

#[test]
fn a_write_to_a_cached_region_is_read_at_once() {
    let mut peer = peer();
    // A reader before the load, from disk; right after the load, from memory (a view
    // older than the load would be refused by the loaded memory).
    assert_eq!(value(&mut peer, 1, "b").as_deref(), Some("1"));
    load(&mut peer, 1);
    assert!(peer.snapshot(1).from_memory());
    assert_eq!(value(&mut peer, 1, "b").as_deref(), Some("1"));
    peer.commit(1, &[("b", Some("4"))]);
    assert_eq!(value(&mut peer, 1, "b").as_deref(), Some("4"));
    // And a region of another stripe, read from disk, sees the disk as it is now.
    peer.commit(2, &[("n", Some("5"))]);
    assert_eq!(value(&mut peer, 2, "n").as_deref(), Some("5"));
}

#[test]
fn a_fenced_ingest_is_read_at_once() {
    let mut peer = peer();
    assert_eq!(value(&mut peer, 2, "nn"), None);
    let fence = peer
        .engine
        .begin_bypass(&RaftEvent::IngestSst {
            region: peer.region(2),
            ranges: vec![
                ime_region::KeyRange::new(
                    ime_memkv::codec::encode_bytes(b"n"),
                    ime_memkv::codec::encode_bytes(b"o"),
                )
                .unwrap(),
            ],
        })
        .unwrap();
    let ts = peer.next_ts();
    bypass_put(&fence, &[("nn", "ingested")], ts);
    fence.finish();
    assert_eq!(value(&mut peer, 2, "nn").as_deref(), Some("ingested"));
}

#[test]
fn a_fenced_write_is_read_at_once() {
    let mut peer = peer();
    assert_eq!(value(&mut peer, 1, "c"), None);
    let range = peer.region(1).range.clone();
    let fence = peer.engine.fence_ranges(vec![range]);
    let commit_ts = peer.next_ts();
    let key = MvccKey {
        user_key: b"c".to_vec(),
        ts: commit_ts,
    }
    .encode();
    let record = WriteRecord::new(WriteType::Put, commit_ts - 1, Some(b"fenced".to_vec()));
    let mut batch = WriteBatch::new();
    batch.put(Cf::Write, key, record.encode().unwrap());
    fence.write(&batch).unwrap();
    fence.finish();
    assert_eq!(value(&mut peer, 1, "c").as_deref(), Some("fenced"));
}
