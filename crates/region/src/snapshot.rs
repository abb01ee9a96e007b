//! Snapshot reference counts by read_ts, and the read request a snapshot is taken for.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Gap, GapKind, RegionId, RegionState};

/// Live snapshots of one region: how many at each read_ts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotList {
    by_ts: BTreeMap<u64, usize>,
}

impl SnapshotList {
    pub(crate) fn add(&mut self, read_ts: u64) {
        *self.by_ts.entry(read_ts).or_default() += 1;
    }

    /// Removes one snapshot at `read_ts`; false when there was none.
    pub(crate) fn remove(&mut self, read_ts: u64) -> bool {
        let Some(count) = self.by_ts.get_mut(&read_ts) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.by_ts.remove(&read_ts);
        }
        true
    }

    /// The smallest live read_ts.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.by_ts.keys().next().copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_ts.values().sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_ts.is_empty()
    }
}

/// What a reader asks of a region: the epoch version and applied index its peer has, and
/// the MVCC timestamp to read at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The region's epoch version as the reader's peer knows it.
    pub epoch_version: u64,
    /// The peer's Raft applied index: the cache must hold every entry up to it.
    pub applied_index: u64,
    /// The MVCC read timestamp.
    pub read_ts: u64,
}

/// Proof that a snapshot was registered on a region; hand it back to
/// [`RegionMap::release_snapshot`](crate::RegionMap::release_snapshot) exactly once.
///
/// It is neither `Clone` nor `Copy`, so it cannot be released twice. It remembers the epoch
/// version it was taken at: after the region splits, the release goes to the historical
/// record of the parent, which keeps holding back the children's safe points.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket that is never released holds back GC forever"]
pub struct SnapshotTicket {
    pub(crate) region: RegionId,
    pub(crate) version: u64,
    /// The generation of the map record it was registered on.
    pub(crate) generation: u64,
    pub(crate) read_ts: u64,
}

impl SnapshotTicket {
    /// The region the snapshot reads.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// The epoch version it was taken at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Its read_ts.
    pub fn read_ts(&self) -> u64 {
        self.read_ts
    }
}

/// Why a read cannot be served from memory. An expected outcome, not an error: the read
/// falls back to disk and the engine counts the reason.
///
/// Deliberately **not** `#[non_exhaustive]`: consumers (the engine's fallback reasons and
/// their metrics) match it exhaustively, so a new kind of miss does not compile until
/// each says what it does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMiss {
    /// The region is not cached.
    NotCached,
    /// The region is cached but not serving reads in this state.
    NotReadable(RegionState),
    /// The reader's epoch version is older than the cached one: the reader is behind.
    EpochNotMatch {
        /// The cached version.
        cached: u64,
        /// The reader's version.
        requested: u64,
    },
    /// read_ts is at or below the region's safe point: versions it needs may be gone.
    TooOldRead {
        /// The region's safe point.
        safe_point: u64,
        /// The reader's read_ts.
        read_ts: u64,
    },
    /// The request shows the cache missed an event (a newer epoch, or an applied index
    /// past the cached one); the region has been evicted.
    Gap(GapKind),
}

impl ReadMiss {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ReadMiss::NotCached => "not_cached",
            ReadMiss::NotReadable(_) => "not_readable",
            ReadMiss::EpochNotMatch { .. } => "epoch_not_match",
            ReadMiss::TooOldRead { .. } => "too_old_read",
            ReadMiss::Gap(GapKind::Epoch { .. }) => "epoch_gap",
            ReadMiss::Gap(GapKind::Index { .. }) => "index_gap",
        }
    }
}

impl fmt::Display for ReadMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadMiss::NotCached => f.write_str("NotCached"),
            ReadMiss::NotReadable(state) => write!(f, "NotReadable({state})"),
            ReadMiss::EpochNotMatch { cached, requested } => {
                write!(f, "EpochNotMatch(cached v{cached}, requested v{requested})")
            }
            ReadMiss::TooOldRead {
                safe_point,
                read_ts,
            } => {
                write!(
                    f,
                    "TooOldRead(read_ts {read_ts} <= safe point {safe_point})"
                )
            }
            ReadMiss::Gap(kind) => write!(f, "Gap({})", kind.reason()),
        }
    }
}

/// A snapshot [`crate::RegionMap::acquire_snapshot`] refused: why, and — when the request
/// revealed a missed event — the gap, whose eviction the caller must carry out.
#[derive(Debug)]
pub struct ReadRefused {
    /// Why memory cannot serve the read.
    pub miss: ReadMiss,
    /// The gap the request revealed (with `miss` being [`ReadMiss::Gap`]).
    pub gap: Option<Gap>,
}

impl From<ReadMiss> for ReadRefused {
    fn from(miss: ReadMiss) -> Self {
        ReadRefused { miss, gap: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_read_ts() {
        let mut list = SnapshotList::default();
        list.add(10);
        list.add(10);
        list.add(7);
        assert_eq!((list.len(), list.oldest()), (3, Some(7)));
        assert!(list.remove(7));
        assert!(!list.remove(7));
        assert_eq!(list.oldest(), Some(10));
        assert!(list.remove(10) && list.remove(10));
        assert!(list.is_empty());
    }
}
