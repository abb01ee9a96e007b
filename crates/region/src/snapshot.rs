//! Snapshot reference counts by read_ts, and the read request a snapshot is taken for.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::{Gap, GapKind, RegionError, RegionId, RegionState};

/// Live snapshots of one record — a region, or a split parent kept for its snapshots —
/// shared with the tickets taken on it, so that a ticket goes back without the map.
///
/// Its own small lock is the only one a release takes: readers of different regions
/// never meet on it, and the map (whose owner serializes every other change) only
/// looks at it to bound a safe point or to settle an eviction.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// `(read_ts, live snapshots)`, sorted by read_ts: a vector, whose room stays when it
    /// empties, so that the lock is held for no allocation on the read path.
    by_ts: Vec<(u64, usize)>,
    /// The map waits for the record to empty (an eviction, or a split parent): the
    /// release that empties it says so.
    watched: bool,
}

impl Registry {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add(&self, read_ts: u64) {
        let mut counts = self.counts();
        match counts.by_ts.binary_search_by_key(&read_ts, |e| e.0) {
            Ok(at) => counts.by_ts.get_mut(at).into_iter().for_each(|e| e.1 += 1),
            Err(at) => counts.by_ts.insert(at, (read_ts, 1)),
        }
    }

    /// Removes one snapshot at `read_ts`: `None` when there was none, else whether this
    /// release emptied a watched record.
    fn remove(&self, read_ts: u64) -> Option<bool> {
        let mut counts = self.counts();
        let at = counts.by_ts.binary_search_by_key(&read_ts, |e| e.0).ok()?;
        let entry = counts.by_ts.get_mut(at)?;
        entry.1 -= 1;
        if entry.1 == 0 {
            counts.by_ts.remove(at);
        }
        Some(counts.watched && counts.by_ts.is_empty())
    }

    /// True when empty; else the record is watched from now on, and the release that
    /// empties it reports it (one lock: no release can slip between the two).
    pub(crate) fn empty_or_watch(&self) -> bool {
        let mut counts = self.counts();
        counts.watched = !counts.by_ts.is_empty();
        !counts.watched
    }

    /// The smallest live read_ts.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.counts().by_ts.first().map(|e| e.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.counts().by_ts.iter().map(|e| e.1).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts().by_ts.is_empty()
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

/// Proof that a snapshot was registered on a region; hand it back exactly once, with
/// [`SnapshotTicket::release`] (no map needed) or
/// [`RegionMap::release_snapshot`](crate::RegionMap::release_snapshot).
///
/// It is neither `Clone` nor `Copy`, so it cannot be released twice. It holds the record
/// it was registered on: after the region splits, that is the parent's historical record,
/// which keeps holding back the children's safe points until its last ticket returns.
#[derive(Debug)]
#[must_use = "a ticket that is never released holds back GC forever"]
pub struct SnapshotTicket {
    pub(crate) region: RegionId,
    pub(crate) version: u64,
    /// The generation of the map record it was registered on.
    pub(crate) generation: u64,
    pub(crate) read_ts: u64,
    pub(crate) registry: Arc<Registry>,
}

impl PartialEq for SnapshotTicket {
    fn eq(&self, other: &Self) -> bool {
        (self.region, self.version, self.generation, self.read_ts)
            == (other.region, other.version, other.generation, other.read_ts)
            && Arc::ptr_eq(&self.registry, &other.registry)
    }
}

impl Eq for SnapshotTicket {}

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

    /// Hands the snapshot back, taking only its record's own lock: readers release
    /// without the map, and so without whatever lock guards it.
    ///
    /// Returns a [`Drained`] when this was the last snapshot of a record the map waits
    /// on (a PendingEvict region, a split parent): give it to
    /// [`RegionMap::drained`](crate::RegionMap::drained) so that the eviction goes on or
    /// the record goes.
    ///
    /// # Errors
    /// [`RegionError::UnknownSnapshot`] when the record does not hold the ticket (it
    /// cannot happen with tickets the map handed out).
    pub fn release(self) -> Result<Option<Drained>, RegionError> {
        match self.registry.remove(self.read_ts) {
            Some(false) => Ok(None),
            Some(true) => Ok(Some(Drained {
                region: self.region,
                generation: self.generation,
                registry: self.registry,
            })),
            None => Err(RegionError::UnknownSnapshot {
                region: self.region,
                version: self.version,
                read_ts: self.read_ts,
            }),
        }
    }
}

/// The last snapshot of a record the map waits on has been released: hand it to
/// [`RegionMap::drained`](crate::RegionMap::drained).
#[derive(Debug)]
#[must_use = "the map waits for it: an eviction or a split parent's record is held until then"]
pub struct Drained {
    pub(crate) region: RegionId,
    pub(crate) generation: u64,
    pub(crate) registry: Arc<Registry>,
}

impl Drained {
    /// The region the snapshots were taken on.
    pub fn region(&self) -> RegionId {
        self.region
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
        let list = Registry::default();
        list.add(10);
        list.add(10);
        list.add(7);
        assert_eq!((list.len(), list.oldest()), (3, Some(7)));
        assert_eq!(list.remove(7), Some(false));
        assert_eq!(list.remove(7), None);
        assert_eq!(list.oldest(), Some(10));
        assert_eq!(
            (list.remove(10), list.remove(10)),
            (Some(false), Some(false))
        );
        assert!(list.is_empty());
    }

    #[test]
    fn only_the_release_that_empties_a_watched_record_reports_it() {
        let list = Registry::default();
        assert!(list.empty_or_watch(), "an empty record needs no watching");
        list.add(3);
        list.add(4);
        assert!(!list.empty_or_watch());
        assert_eq!(list.remove(3), Some(false));
        assert_eq!(list.remove(4), Some(true));
    }
}
