//! `ime-types`: the words IME's layers share, defined once.
//!
//! - [`Cf`]: TiKV's three column families, as the disk, the memory store, the engine and
//!   the simulator all name them;
//! - [`KeyRange`]: a half-open range of keys `[start, end)`, possibly unbounded above — a
//!   region's keys, a memory range's, an iterator's bounds, a range delete's;
//! - [`BatchOp`]: one operation of a write batch, as the disk takes it and the memory
//!   store applies it;
//! - [`RangeId`]: a range of keys the memory store holds, named by its owner (the
//!   controller allocates them, the engine hands them to the store);
//! - [`lane`]: a number per thread, by which structures that reader threads update give
//!   each thread a shard of its own, and [`LaneArc`], an `Arc` whose clones count per lane.
//!
//! ```
//! use ime_types::Cf;
//!
//! assert_eq!(Cf::ALL.map(Cf::name), ["default", "lock", "write"]);
//! assert_eq!(Cf::Write.index(), 2);
//!
//! use ime_types::KeyRange;
//!
//! let region = KeyRange::new("b", "m").unwrap();
//! assert!(region.contains_key(b"c") && !region.contains_key(b"m"));
//! assert!(KeyRange::everything().contains(&region));
//! assert!(KeyRange::new("m", "b").is_err());
//! ```
#![forbid(unsafe_code)]

use std::fmt;

use serde::{Deserialize, Serialize};

mod hex_bytes;
mod lane;
mod range;

pub use lane::{LaneArc, LaneRef, lane};
pub use range::{InvalidRange, KeyRange};

/// TiKV's three column families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Cf {
    /// `default`: large values, keyed by user key and start_ts.
    Default,
    /// `lock`: transaction locks, keyed by user key.
    Lock,
    /// `write`: commit records, keyed by user key and commit_ts.
    Write,
}

impl Cf {
    /// The three, in a fixed order.
    pub const ALL: [Cf; 3] = [Cf::Default, Cf::Lock, Cf::Write];

    /// The column family's name in RocksDB (and in TiKV).
    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => "default",
            Cf::Lock => "lock",
            Cf::Write => "write",
        }
    }

    /// Its position in [`Cf::ALL`].
    pub fn index(self) -> usize {
        match self {
            Cf::Default => 0,
            Cf::Lock => 1,
            Cf::Write => 2,
        }
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A range of keys the memory store holds, named by its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeId(pub u64);

impl fmt::Display for RangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "range {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_families_are_numbered_in_their_fixed_order() {
        for (i, cf) in Cf::ALL.into_iter().enumerate() {
            assert_eq!(cf.index(), i);
        }
        assert_eq!(Cf::Lock.to_string(), "lock");
    }

    #[test]
    fn names_round_trip_through_serde() {
        let json = serde_json::to_string(&Cf::ALL).expect("serializes");
        assert_eq!(json, r#"["Default","Lock","Write"]"#);
        let back: [Cf; 3] = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, Cf::ALL);
        assert_eq!(serde_json::to_string(&RangeId(7)).expect("serializes"), "7");
    }
}

/// One operation of a write batch (the disk's, which the memory store applies as is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets `key` to `value`.
    Put {
        /// The column family.
        cf: Cf,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Deletes `key`.
    Delete {
        /// The column family.
        cf: Cf,
        /// The key.
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        /// The column family.
        cf: Cf,
        /// First key deleted.
        start: Vec<u8>,
        /// First key kept.
        end: Vec<u8>,
    },
}
