//! `ime-disk`: the disk engine IME's cache loads from and falls back to.
//!
//! A narrow trait ([`DiskEngine`], [`DiskSnapshot`], [`DiskIterator`]): write batches over
//! TiKV's three column families whose sequence numbers are known, snapshots that expose
//! theirs, bounded iterators both ways, point gets, range deletes, and an ingest path that
//! bypasses the write path as an SST ingest does. Two implementations with the same
//! semantics, checked by one conformance suite:
//!
//! - `RocksDisk` (feature `rocksdb`, on by default): RocksDB in a directory the caller
//!   names, or a temporary one, or a database the embedder already holds (`RocksDisk::wrap`,
//!   its column families named as it likes);
//! - [`MemDisk`]: an in-memory reference for fast tests. Crates that need only this turn
//!   default features off and never compile RocksDB.
//!
//! ```
//! use ime_disk::*;
//!
//! # fn main() -> Result<(), DiskError> {
//! let disk = MemDisk::new();
//! let mut batch = WriteBatch::new();
//! batch.put(Cf::Write, "k1", "v1").put(Cf::Write, "k2", "v2");
//! let seqs = disk.write(&batch)?;
//! assert_eq!((seqs.first, seqs.last), (1, 2));
//!
//! let before = disk.snapshot();
//! disk.write(WriteBatch::new().delete_range(Cf::Write, "k1", "k3"))?;
//! assert_eq!(before.get(Cf::Write, b"k1")?, Some(b"v1".to_vec()));
//! assert_eq!(disk.snapshot().get(Cf::Write, b"k1")?, None);
//! assert_eq!(collect(&before, Cf::Write, KeyRange::everything())?.len(), 2);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod engine;
mod memory;
#[cfg(feature = "rocksdb")]
mod records;
#[cfg(feature = "rocksdb")]
mod rocks;
mod types;

pub use engine::{
    DiskEngine, DiskIterator, DiskReader, DiskSnapshot, Entry, collect, for_each, range_size,
};
pub use memory::{MemDisk, MemSnapshot};
#[cfg(feature = "rocksdb")]
pub use rocks::{CfNames, RocksConfig, RocksDisk, RocksSnapshot};
/// The `rocksdb` crate this adapter is built on, so that a database the embedder opens
/// ([`RocksDisk::wrap`]) is of the same type.
#[cfg(feature = "rocksdb")]
pub use rocksdb;
pub use types::{BatchOp, Cf, DiskError, KeyRange, SeqRange, WriteBatch};
