//! Snapshot reference counts by read_ts, and the read request a snapshot is taken for.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ime_types::LaneRef;
use serde::{Deserialize, Serialize};

use crate::{Gap, GapKind, RegionError, RegionId, RegionState};

/// Live snapshots of one record — a region, or a split parent kept for its snapshots —
/// shared with the tickets taken on it, so that a ticket goes back without the map.
///
/// Its counts are sharded: a snapshot registers in the shard of its thread's lane
/// ([`ime_types::lane`]), and its ticket goes back to that shard. Each shard is a small
/// lock on a cache line of its own, the only lock a registration or a release takes:
/// readers of one region on different threads never meet on a line, readers of different
/// regions never meet at all, and the map (whose owner serializes every other change)
/// only looks at the shards to bound a safe point or to settle an eviction.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    shards: [Shard; SHARDS],
}

/// Shards of a record: as many as reader threads are likely to run at once.
const SHARDS: usize = 4;

/// One shard's counts, on a cache line of its own.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Shard(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// `(read_ts, live snapshots)`, sorted by read_ts: a vector, whose room stays when it
    /// empties, so that the lock is held for no allocation on the read path.
    by_ts: Vec<(u64, usize)>,
    /// The map waits for the record to empty (an eviction, or a split parent): the
    /// release that empties it says so. Set in every shard at once.
    watched: bool,
}

impl Shard {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry {
    /// Every shard's counts, locked in order (the one order every caller takes them in).
    fn all(&self) -> [MutexGuard<'_, Counts>; SHARDS] {
        self.shards.each_ref().map(Shard::counts)
    }

    /// Registers a snapshot at `read_ts` in this thread's shard; returns the shard.
    pub(crate) fn add(&self, read_ts: u64) -> usize {
        let shard = ime_types::lane() % SHARDS;
        let Some(own) = self.shards.get(shard) else {
            return shard; // cannot be: the index is taken modulo the count
        };
        let mut counts = own.counts();
        match counts.by_ts.binary_search_by_key(&read_ts, |e| e.0) {
            Ok(at) => counts.by_ts.get_mut(at).into_iter().for_each(|e| e.1 += 1),
            Err(at) => counts.by_ts.insert(at, (read_ts, 1)),
        }
        shard
    }

    /// Removes one snapshot at `read_ts` from `shard`: `None` when there was none, else
    /// whether this release emptied a watched record. Emptying its shard of a watched
    /// record, it looks at every shard (all locked): of the releases that empty the
    /// record, the one that finds it empty and still watched reports it, and unwatches it.
    fn remove(&self, shard: usize, read_ts: u64) -> Option<bool> {
        {
            let mut counts = self.shards.get(shard)?.counts();
            let at = counts.by_ts.binary_search_by_key(&read_ts, |e| e.0).ok()?;
            let entry = counts.by_ts.get_mut(at)?;
            entry.1 -= 1;
            if entry.1 == 0 {
                counts.by_ts.remove(at);
            }
            if !(counts.watched && counts.by_ts.is_empty()) {
                return Some(false);
            }
        }
        let mut all = self.all();
        let drained = all.iter().all(|c| c.watched && c.by_ts.is_empty());
        if drained {
            all.iter_mut().for_each(|c| c.watched = false);
        }
        Some(drained)
    }

    /// True when empty; else the record is watched from now on, and the release that
    /// empties it reports it (every shard locked: no release can slip between the two).
    pub(crate) fn empty_or_watch(&self) -> bool {
        let mut all = self.all();
        let watched = all.iter().any(|c| !c.by_ts.is_empty());
        all.iter_mut().for_each(|c| c.watched = watched);
        !watched
    }

    /// The smallest live read_ts.
    pub(crate) fn oldest(&self) -> Option<u64> {
        let firsts = self
            .shards
            .iter()
            .map(|s| s.counts().by_ts.first().map(|e| e.0));
        firsts.flatten().min()
    }

    pub(crate) fn len(&self) -> usize {
        let each = self
            .shards
            .iter()
            .map(|s| s.counts().by_ts.iter().map(|e| e.1).sum::<usize>());
        each.sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.counts().by_ts.is_empty())
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
    pub(crate) registry: LaneRef<Registry>,
    /// The registry's shard it is counted in.
    pub(crate) shard: usize,
}

impl PartialEq for SnapshotTicket {
    fn eq(&self, other: &Self) -> bool {
        (self.region, self.version, self.generation, self.read_ts)
            == (other.region, other.version, other.generation, other.read_ts)
            && Arc::ptr_eq(self.registry.arc(), other.registry.arc())
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

    /// Hands the snapshot back, taking only its record's own lock (the shard it was
    /// counted in): readers release without the map, and so without whatever lock guards
    /// it.
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
        match self.registry.remove(self.shard, self.read_ts) {
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
    pub(crate) registry: LaneRef<Registry>,
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
        let shard = list.add(10);
        assert_eq!(list.add(10), shard, "one thread, one shard");
        list.add(7);
        assert_eq!((list.len(), list.oldest()), (3, Some(7)));
        assert_eq!(list.remove(shard, 7), Some(false));
        assert_eq!(list.remove(shard, 7), None);
        assert_eq!(list.remove(SHARDS, 10), None, "no such shard");
        assert_eq!(list.oldest(), Some(10));
        assert_eq!(
            (list.remove(shard, 10), list.remove(shard, 10)),
            (Some(false), Some(false))
        );
        assert!(list.is_empty());
    }

    #[test]
    fn only_the_release_that_empties_a_watched_record_reports_it() {
        let list = Registry::default();
        assert!(list.empty_or_watch(), "an empty record needs no watching");
        let shard = list.add(3);
        list.add(4);
        assert!(!list.empty_or_watch());
        assert_eq!(list.remove(shard, 3), Some(false));
        assert_eq!(list.remove(shard, 4), Some(true));
    }

    /// Snapshots registered on four threads (four shards) and released on others: the
    /// counts and the oldest read_ts cover every shard, and of the releases that empty
    /// the watched record exactly one reports it, whichever shard empties last.
    #[test]
    fn shards_of_many_threads_add_up_and_one_release_reports_the_drain() {
        for round in 0..50u64 {
            let list = Registry::default();
            let tickets: Vec<(usize, u64)> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..4u64)
                    .map(|t| {
                        let list = &list;
                        s.spawn(move || {
                            (0..3)
                                .map(|i| (list.add(10 + t * 3 + i), 10 + t * 3 + i))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .filter_map(|t| t.join().ok())
                    .flatten()
                    .collect()
            });
            let mut shards: Vec<usize> = tickets.iter().map(|t| t.0).collect();
            shards.sort_unstable();
            shards.dedup();
            assert!(shards.iter().all(|&s| s < SHARDS));
            assert_eq!((list.len(), list.oldest()), (12, Some(10)));
            assert!(!list.empty_or_watch());
            let reports: usize = std::thread::scope(|s| {
                let (a, b) = tickets.split_at(usize::try_from(round % 12).unwrap_or(6));
                let release = |part: &[(usize, u64)]| {
                    part.iter()
                        .filter(|&&(shard, ts)| list.remove(shard, ts) == Some(true))
                        .count()
                };
                let (a, b) = (s.spawn(move || release(a)), s.spawn(move || release(b)));
                a.join().unwrap_or(0) + b.join().unwrap_or(0)
            });
            assert_eq!(reports, 1, "round {round}");
            assert!(list.is_empty() && list.empty_or_watch());
        }
    }
}
