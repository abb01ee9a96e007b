//! `ime-memkv`: IME's in-memory MVCC store.
//!
//! This crate knows keys, ranges, sequence numbers and MVCC records; it knows nothing of
//! regions or Raft. What is here so far is [`codec`]: TiKV's byte formats (memcomparable
//! keys, MVCC keys with a descending timestamp, write and lock records), so that data can
//! be exchanged with a TiKV-format store. The layered store itself (a compact sorted run
//! plus a small concurrent map per range, snapshots, GC and memory accounting) is the
//! next step of its issue.
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
