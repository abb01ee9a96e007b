//! `ime-memkv`: IME's in-memory MVCC store.
//!
//! This crate knows keys, ranges, sequence numbers and MVCC records; it knows nothing of
//! regions or Raft, and is usable alone.
//!
//! - [`codec`]: TiKV's byte formats (memcomparable keys, MVCC keys with a descending
//!   timestamp, write and lock records), so data can be exchanged with a TiKV-format store.
//! - [`MemKv`]: ranges of keys in three column families, each two compact sorted runs
//!   (a base, and a delta that compactions fold recent writes into until it reaches the
//!   base) plus memtables of recent writes (skiplists in arenas: no allocation
//!   per entry, readers never wait for the writer); writes with the caller's
//!   sequence numbers; [`Snapshot`]s that hold `Arc`s to their layers (no lock, no epoch
//!   guard, writers never blocked) with point gets and bounded iterators both ways;
//!   [`MemKv::compact`] with TiKV's MVCC GC rules, or without GC a piece at a time
//!   ([`MemKv::compaction`], [`MemKv::compact_some`]); O(1) range drops; memory accounting
//!   with a hard limit and a soft threshold; the arrays of large runs (and of the
//!   compactions' copies of memtables) dropped lately kept for the next load or compaction ([`MemKv::spare_bytes`], [`MemKv::age_spares`]).
//!
//! ```
//! use ime_memkv::*;
//!
//! # fn main() -> Result<(), MemError> {
//! let kv = MemKv::new(MemConfig { hard_limit: 1 << 20, soft_limit: 1 << 19 });
//! kv.create_range(RangeId(1), KeyRange::with_end("a", Some(b"m".to_vec()))?)?;
//! kv.write(WriteBatch::new().put(Cf::Default, "b", "1").put(Cf::Default, "z", "ignored"), 1)?;
//! let before = kv.snapshot(RangeId(1), 2)?;
//! kv.write(WriteBatch::new().delete(Cf::Default, "b"), 3)?;
//! assert_eq!(before.get(Cf::Default, b"b"), Some(b"1".to_vec()));
//! assert_eq!(kv.snapshot(RangeId(1), 3)?.get(Cf::Default, b"b"), None);
//! # Ok(())
//! # }
//! ```
//!
//! The codecs:
//!
//! ```
//! use ime_memkv::codec::*;
//!
//! let key = MvccKey { user_key: b"k".to_vec(), ts: 7 };
//! let newer = MvccKey { user_key: b"k".to_vec(), ts: 9 };
//! assert!(newer.encode() < key.encode(), "newer versions sort first");
//! assert_eq!(MvccKey::decode(&key.encode()).unwrap(), key);
//!
//! let put = WriteRecord::new(WriteType::Put, 5, Some(b"abc".to_vec()));
//! assert_eq!(put.encode().unwrap(), b"P\x05v\x03abc");
//! ```

#![forbid(unsafe_code)]

pub mod codec;
mod gc;
mod layer;
mod memory;
mod memtable;
pub mod mvcc;
mod snapshot;
mod store;
mod types;

pub use gc::{Compaction, GcStats, Retained, Retention};
pub use mvcc::{KvPair, MvccError};
pub use snapshot::{Snapshot, SnapshotIter};
pub use store::{
    BatchPlan, DroppedRange, LoadTarget, LoadedRun, Loader, MEMTABLE_COMPACTION_MIN, MemConfig,
    MemKv,
};
pub use types::{Cf, InvalidRange, KeyRange, MemError, Op, OpBuffer, OpRef, RangeId, WriteBatch};
