//! [`RaftEvent`]: every way the Raft layer can change a region, as one closed enum.

use std::fmt;

use ime_region::{KeyRange, Region, RegionId, SplitChild};
use serde::{Deserialize, Serialize};

/// The local peer's role in a region's Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerRole {
    /// Leads the group: serves reads and proposes writes.
    Leader,
    /// A voting follower.
    Follower,
    /// A voter campaigning for leadership.
    Candidate,
    /// A non-voting learner.
    Learner,
}

/// Something the Raft layer did that can change a region's range, epoch, role or data.
///
/// The enum is deliberately **not** `#[non_exhaustive]`: the engine handles it with an
/// exhaustive `match` and no wildcard arm, so a new variant does not compile until every
/// handler says what it does with it. Each variant carries the region *after* the event
/// (id, range, epoch) and, where there is one, the region *before*, so that a handler can
/// tell whether the cache saw the state the event starts from; if not, an event was
/// missed and the region is evicted (`EpochGap`).
///
/// Per variant, the docs say what the cache must do and why.
///
/// # Changes outside the write path
/// Some events announce data that reaches the disk without the cache's write path (a
/// snapshot's data, an ingested SST, a range delete, a merge source's catch-up, a
/// flashback's rewrite, a destroyed peer's cleanup): [`RaftEvent::bypass_ranges`] names
/// the ranges. The contract for the embedder: the event is delivered *before* that data
/// is written, and no load of those ranges may take its disk snapshot until the data is
/// on disk. A cache enforces the second half by fencing the ranges from the event until
/// the write is done (`ime_engine::Engine::begin_bypass` returns the fence the data is
/// written through); the disk offers no other way in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftEvent {
    /// The local peer applied a Raft snapshot: the region's data was replaced wholesale
    /// on disk without passing the write path, possibly without any epoch change.
    ///
    /// Cache: **evict** (`ApplySnapshot`) before the call returns. The cache cannot know
    /// what changed; this is the event TiKV's engine did not observe (tikv/tikv#17405).
    ApplySnapshot {
        /// The region before, `None` for an uninitialized peer's first snapshot.
        before: Option<Region>,
        /// The region the snapshot describes.
        after: Region,
        /// The applied index the snapshot moved the peer to.
        applied_index: u64,
    },
    /// A split (TiKV's Split and BatchSplit alike: two or more children) was applied.
    ///
    /// Cache: **keep** the data; the children are derived from the cached parent (same
    /// state, same safe point). If the cached parent is not `before`, an event was missed:
    /// evict with `EpochGap` — never assert (TiKV aborted here).
    Split {
        /// The region that split, as it was.
        before: Region,
        /// The children, each with the applied index it starts at; one keeps `before.id`.
        children: Vec<SplitChild>,
    },
    /// PrepareMerge was applied on the merge source: its writes stop, and it will be
    /// merged into a neighbour or rolled back.
    ///
    /// Cache: **evict** (`PrepareMerge`): the source's data is about to move.
    PrepareMerge {
        /// The source as it was.
        before: Region,
        /// The source after PrepareMerge (its epoch bumped).
        after: Region,
    },
    /// CommitMerge was applied on the merge target: the source's range joined it.
    ///
    /// Cache: **evict** the target and the source (`Merge`), then reload the merged region
    /// if it was hot (tikv/tikv#18098, #18134). The source's data must be on this store's
    /// disk before any load of the merged range takes its snapshot: in TiKV the source
    /// peer has caught up on its log before the target applies CommitMerge; a store that
    /// writes a lagging source's data itself fences it with this event (see
    /// [`RaftEvent::bypass_ranges`]).
    CommitMerge {
        /// The target as it was.
        before: Region,
        /// The merged region.
        after: Region,
        /// The source that was merged in, as it was.
        source: Region,
    },
    /// RollbackMerge was applied on the source: the merge was abandoned.
    ///
    /// Cache: **evict** (`Merge`), then reload if hot. An unobserved RollbackMerge brought
    /// TiKV's abort back (tikv/tikv#18008).
    RollbackMerge {
        /// The source as it was.
        before: Region,
        /// The source after the rollback (its epoch bumped).
        after: Region,
    },
    /// A membership change (ChangePeer / ChangePeerV2) was applied: `conf_ver` moved.
    ///
    /// Cache: **update the epoch**; no data changed. A cached epoch other than `before`'s is
    /// a gap.
    ChangePeer {
        /// The region as it was.
        before: Region,
        /// The region after (same range, new `conf_ver`).
        after: Region,
    },
    /// The local peer's role changed (an election, a step-down, a learner promotion).
    ///
    /// Cache: becoming a **follower** (or candidate, or learner) evicts (`BecomeFollower`):
    /// reads go to leaders and the cache should not hold what it no longer serves;
    /// becoming **leader** is a load hint.
    RoleChange {
        /// The region.
        region: Region,
        /// The new role.
        role: PeerRole,
        /// The Raft term of the change.
        term: u64,
    },
    /// Leadership is being transferred to the local peer.
    ///
    /// Cache: when the old leader had the region cached (`cached`, carried in the transfer
    /// as TiKV does), **warm** it (load it) before the transfer is acknowledged, but never
    /// hold the acknowledgement past its deadline; a new term clears the warm-up
    /// (tikv/tikv#17882, #18453, #19776). A region the old leader did not cache is left
    /// to the eviction policy, like any other.
    TransferLeader {
        /// The region.
        region: Region,
        /// The term the transfer happens in.
        term: u64,
        /// Whether the old leader had the region cached.
        cached: bool,
    },
    /// The local peer was destroyed (removed from the group, merged away, or replaced).
    ///
    /// Cache: **evict** (`DestroyPeer`). An uninitialized peer (`region == None`) has no
    /// range and no data: a no-op, never a panic.
    DestroyPeer {
        /// The region id.
        id: RegionId,
        /// The region as it was, `None` for an uninitialized peer.
        region: Option<Region>,
    },
    /// An SST was ingested into the region: data reached disk without the write path.
    ///
    /// Cache: **evict** every region the SST's ranges touch (`IngestSst`), before the
    /// ingest is visible (tikv/tikv#17182).
    IngestSst {
        /// The region the ingest was applied to.
        region: Region,
        /// The key ranges the SSTs cover.
        ranges: Vec<KeyRange>,
    },
    /// A DeleteRange Raft command was applied.
    ///
    /// Cache: **evict** every overlapping region (`DeleteRange`) (tikv/tikv#17644).
    DeleteRange {
        /// The region the command was applied to.
        region: Region,
        /// The deleted range.
        range: KeyRange,
    },
    /// A range was destroyed outside Raft (UnsafeDestroyRange, after a table drop's GC).
    ///
    /// Cache: **evict** every overlapping region (`DeleteRange`) (tikv/tikv#17626).
    UnsafeDestroyRange {
        /// The destroyed range.
        range: KeyRange,
    },
    /// PrepareFlashback was applied: the region is about to be rewritten to an old
    /// version, outside the normal MVCC write path.
    ///
    /// Cache: **evict** (`Flashback`) and refuse loads until FinishFlashback.
    PrepareFlashback {
        /// The region as it was.
        before: Region,
        /// The region in flashback.
        after: Region,
    },
    /// FinishFlashback was applied: the flashback is over.
    ///
    /// Cache: **evict** (`Flashback`) whatever was loaded meanwhile, and allow loads again.
    FinishFlashback {
        /// The region as it was.
        before: Region,
        /// The region after.
        after: Region,
    },
    /// The peer switched to or from a witness (a witness keeps the log but no data).
    ///
    /// Cache: **evict** (`DestroyPeer`): a witness has no data to cache, and a peer that
    /// stops being one receives its data by snapshot.
    SwitchWitness {
        /// The region as it was.
        before: Region,
        /// The region after.
        after: Region,
        /// Whether the local peer is now a witness.
        is_witness: bool,
    },
    /// The Raft log was compacted up to `compact_index`.
    ///
    /// Cache: **nothing** (statistics only). A follower that falls behind the compacted
    /// log will receive a snapshot, which arrives as [`RaftEvent::ApplySnapshot`].
    CompactLog {
        /// The region.
        region: Region,
        /// The first index still in the log.
        compact_index: u64,
    },
    /// Online unsafe recovery rewrote the region's peers (a majority was lost).
    ///
    /// Cache: **evict** (`UnsafeRecovery`): the region's history can no longer be trusted.
    UnsafeRecovery {
        /// The region after recovery.
        region: Region,
    },
    /// The local peer was forced to lead without a quorum (part of unsafe recovery).
    ///
    /// Cache: **evict** (`UnsafeRecovery`).
    ForceLeader {
        /// The region.
        region: Region,
        /// The forced term.
        term: u64,
    },
}

/// How the bus delivers an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// On the publisher's thread: the publish call returns only after every observer has
    /// returned. For everything that changes what a read may see.
    Sync,
    /// Through the bounded channel to the bus's dispatcher thread: statistics and load
    /// hints. Per-region order with sync events is kept.
    Queued,
}

macro_rules! event_kinds {
    ($($kind:ident),* $(,)?) => {
        /// The variant of a [`RaftEvent`], without its data: for metrics, fault rules and
        /// journal listings.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum EventKind {
            $(#[doc = concat!("[`RaftEvent::", stringify!($kind), "`]")] $kind,)*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$kind,)*];

            /// The kind's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$kind => stringify!($kind),)*
                }
            }
        }

        impl RaftEvent {
            /// This event's kind.
            pub fn kind(&self) -> EventKind {
                match self {
                    $(RaftEvent::$kind { .. } => EventKind::$kind,)*
                }
            }
        }
    };
}

event_kinds!(
    ApplySnapshot,
    Split,
    PrepareMerge,
    CommitMerge,
    RollbackMerge,
    ChangePeer,
    RoleChange,
    TransferLeader,
    DestroyPeer,
    IngestSst,
    DeleteRange,
    UnsafeDestroyRange,
    PrepareFlashback,
    FinishFlashback,
    SwitchWitness,
    CompactLog,
    UnsafeRecovery,
    ForceLeader,
);

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RaftEvent {
    /// How the bus delivers this event: queued only for statistics (CompactLog) and load
    /// hints (becoming leader); everything else synchronously.
    pub fn delivery(&self) -> Delivery {
        match self {
            RaftEvent::CompactLog { .. } => Delivery::Queued,
            RaftEvent::RoleChange {
                role: PeerRole::Leader,
                ..
            } => Delivery::Queued,
            _ => Delivery::Sync,
        }
    }

    /// The regions the event concerns, by id (the first is the event's own region). Empty
    /// for [`RaftEvent::UnsafeDestroyRange`], which names a range instead.
    pub fn regions(&self) -> Vec<RegionId> {
        match self {
            RaftEvent::ApplySnapshot { after: region, .. }
            | RaftEvent::PrepareMerge { before: region, .. }
            | RaftEvent::RollbackMerge { before: region, .. }
            | RaftEvent::ChangePeer { before: region, .. }
            | RaftEvent::RoleChange { region, .. }
            | RaftEvent::TransferLeader { region, .. }
            | RaftEvent::IngestSst { region, .. }
            | RaftEvent::DeleteRange { region, .. }
            | RaftEvent::PrepareFlashback { before: region, .. }
            | RaftEvent::FinishFlashback { before: region, .. }
            | RaftEvent::SwitchWitness { before: region, .. }
            | RaftEvent::CompactLog { region, .. }
            | RaftEvent::UnsafeRecovery { region }
            | RaftEvent::ForceLeader { region, .. } => vec![region.id],
            RaftEvent::Split { before, children } => {
                let mut ids = vec![before.id];
                ids.extend(
                    children
                        .iter()
                        .map(|c| c.region.id)
                        .filter(|id| *id != before.id),
                );
                ids
            }
            RaftEvent::CommitMerge { before, source, .. } => vec![before.id, source.id],
            RaftEvent::DestroyPeer { id, .. } => vec![*id],
            RaftEvent::UnsafeDestroyRange { .. } => Vec::new(),
        }
    }

    /// The key ranges whose cached data the event may change, as far as it says: the
    /// regions' ranges (before and after), and any explicit ranges.
    pub fn ranges(&self) -> Vec<KeyRange> {
        let regions: Vec<&Region> = match self {
            RaftEvent::ApplySnapshot { before, after, .. } => {
                before.iter().chain([after]).collect()
            }
            RaftEvent::Split { before, .. } => vec![before],
            RaftEvent::PrepareMerge { before, after }
            | RaftEvent::RollbackMerge { before, after }
            | RaftEvent::ChangePeer { before, after }
            | RaftEvent::PrepareFlashback { before, after }
            | RaftEvent::FinishFlashback { before, after }
            | RaftEvent::SwitchWitness { before, after, .. } => vec![before, after],
            RaftEvent::CommitMerge {
                before,
                after,
                source,
            } => vec![before, after, source],
            RaftEvent::RoleChange { region, .. }
            | RaftEvent::TransferLeader { region, .. }
            | RaftEvent::CompactLog { region, .. }
            | RaftEvent::UnsafeRecovery { region }
            | RaftEvent::ForceLeader { region, .. } => vec![region],
            RaftEvent::DestroyPeer { region, .. } => region.iter().collect(),
            RaftEvent::IngestSst { region, ranges } => {
                let mut out = ranges.clone();
                out.push(region.range.clone());
                return out;
            }
            RaftEvent::DeleteRange { range, .. } | RaftEvent::UnsafeDestroyRange { range } => {
                return vec![range.clone()];
            }
        };
        regions.into_iter().map(|r| r.range.clone()).collect()
    }
}

impl RaftEvent {
    /// The key ranges whose data reaches the disk *outside the write path* with this
    /// event: what an embedder fences (`ime_engine::Engine::begin_bypass`) while it writes
    /// that data. Empty for events that change no data, or whose data goes through the
    /// write path.
    ///
    /// | event | ranges |
    /// |---|---|
    /// | ApplySnapshot | the region before (if any) and after: its data is replaced |
    /// | CommitMerge | the merged region and the source as this peer knew it: a lagging source's catch-up |
    /// | IngestSst | the SSTs' ranges and the region's |
    /// | DeleteRange, UnsafeDestroyRange | the deleted range |
    /// | DestroyPeer | the destroyed peer's range (its data is cleared) |
    /// | PrepareFlashback, FinishFlashback | the region (it is rewritten in between) |
    /// | SwitchWitness | the region (a witness drops its data, a former one receives it) |
    /// | UnsafeRecovery, ForceLeader | the region |
    /// | Split, PrepareMerge, RollbackMerge, ChangePeer, RoleChange, TransferLeader, CompactLog | none |
    pub fn bypass_ranges(&self) -> Vec<KeyRange> {
        match self {
            RaftEvent::ApplySnapshot { .. }
            | RaftEvent::IngestSst { .. }
            | RaftEvent::DeleteRange { .. }
            | RaftEvent::UnsafeDestroyRange { .. }
            | RaftEvent::DestroyPeer { .. } => self.ranges(),
            RaftEvent::CommitMerge { after, source, .. } => {
                vec![after.range.clone(), source.range.clone()]
            }
            RaftEvent::PrepareFlashback { before, after }
            | RaftEvent::FinishFlashback { before, after }
            | RaftEvent::SwitchWitness { before, after, .. } => {
                vec![before.range.clone(), after.range.clone()]
            }
            RaftEvent::UnsafeRecovery { region } | RaftEvent::ForceLeader { region, .. } => {
                vec![region.range.clone()]
            }
            RaftEvent::Split { .. }
            | RaftEvent::PrepareMerge { .. }
            | RaftEvent::RollbackMerge { .. }
            | RaftEvent::ChangePeer { .. }
            | RaftEvent::RoleChange { .. }
            | RaftEvent::TransferLeader { .. }
            | RaftEvent::CompactLog { .. } => Vec::new(),
        }
    }
}

impl fmt::Display for RaftEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.regions().iter().map(ToString::to_string).collect();
        write!(f, "{} [{}]", self.kind(), ids.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ime_region::{RegionEpoch, RegionId};

    fn region(id: u64, start: &str, end: &str, version: u64) -> Region {
        let range = KeyRange::new(start, end).unwrap();
        Region::new(RegionId(id), range, RegionEpoch::new(version, 1))
    }

    #[test]
    fn bypass_ranges_name_the_data_that_skips_the_write_path() {
        let (a, b) = (region(1, "a", "m", 2), region(1, "a", "z", 3));
        let source = region(2, "m", "z", 2);
        let snapshot = RaftEvent::ApplySnapshot {
            before: Some(a.clone()),
            after: b.clone(),
            applied_index: 9,
        };
        assert_eq!(snapshot.bypass_ranges(), [a.range.clone(), b.range.clone()]);
        let first = RaftEvent::ApplySnapshot {
            before: None,
            after: b.clone(),
            applied_index: 9,
        };
        assert_eq!(first.bypass_ranges(), std::slice::from_ref(&b.range));
        let merge = RaftEvent::CommitMerge {
            before: a.clone(),
            after: b.clone(),
            source,
        };
        let wide_source = region(2, "m", "zz", 1);
        assert_eq!(merge.bypass_ranges()[0], b.range);
        let lagging = RaftEvent::CommitMerge {
            before: region(1, "a", "m", 2),
            after: b.clone(),
            source: wide_source.clone(),
        };
        assert_eq!(
            lagging.bypass_ranges(),
            [b.range.clone(), wide_source.range]
        );
        let ingest = RaftEvent::IngestSst {
            region: b.clone(),
            ranges: vec![KeyRange::new("c", "d").unwrap()],
        };
        assert!(ingest.bypass_ranges().contains(&b.range));
        let uninitialized = RaftEvent::DestroyPeer {
            id: RegionId(5),
            region: None,
        };
        assert!(uninitialized.bypass_ranges().is_empty());
        for quiet in [
            RaftEvent::Split {
                before: a.clone(),
                children: Vec::new(),
            },
            RaftEvent::TransferLeader {
                region: a.clone(),
                term: 2,
                cached: true,
            },
            RaftEvent::CompactLog {
                region: a,
                compact_index: 4,
            },
        ] {
            assert!(quiet.bypass_ranges().is_empty(), "{quiet}");
        }
    }
}
