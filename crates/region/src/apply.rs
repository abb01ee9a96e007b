//! Gap detection and the per-region counters the apply and read sides advance: the
//! applied index, the epoch, snapshots and the safe point.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::snapshot::Registry;
use crate::{
    Drained, EvictReason, EvictStep, Eviction, ReadMiss, ReadRefused, ReadRequest, Region,
    RegionEpoch, RegionError, RegionId, RegionMap, RegionState, SnapshotTicket,
};

/// Which region a segment of writes belongs to, and what Raft entries it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyHeader {
    /// The region.
    pub region: RegionId,
    /// Its epoch as the apply side knows it.
    pub epoch: RegionEpoch,
    /// The first Raft entry index the segment applies.
    pub first_index: u64,
    /// The last one (`first_index` for one entry).
    pub last_index: u64,
}

impl ApplyHeader {
    /// The header of no region (id 0, epoch 0/0, index 0).
    pub const NONE: ApplyHeader = ApplyHeader {
        region: RegionId(0),
        epoch: RegionEpoch {
            version: 0,
            conf_ver: 0,
        },
        first_index: 0,
        last_index: 0,
    };
}

/// What the cache missed, as a request or report revealed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapKind {
    /// An epoch that does not follow the cached one.
    Epoch {
        /// The cached epoch.
        cached: RegionEpoch,
        /// The epoch seen.
        seen: RegionEpoch,
    },
    /// An applied index past the cached one (or a batch starting beyond its successor).
    Index {
        /// The cached applied index.
        cached: u64,
        /// The index seen: a reader's applied index, or a batch's first index.
        seen: u64,
    },
}

impl GapKind {
    /// The eviction reason for this gap.
    pub fn reason(self) -> EvictReason {
        match self {
            GapKind::Epoch { .. } => EvictReason::EpochGap,
            GapKind::Index { .. } => EvictReason::IndexGap,
        }
    }
}

/// A detected gap and the eviction it caused.
#[derive(Debug)]
pub struct Gap {
    /// What was missed, with both values for the log.
    pub kind: GapKind,
    /// The eviction of the region.
    pub eviction: Eviction,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            GapKind::Epoch { cached, seen } => {
                write!(
                    f,
                    "EpochGap on region {}: cached {cached}, seen {seen}",
                    self.eviction.region
                )
            }
            GapKind::Index { cached, seen } => write!(
                f,
                "IndexGap on region {}: an applied-index report was missed (cached applied \
                 index {cached}, next expected {}, seen {seen})",
                self.eviction.region,
                cached.saturating_add(1)
            ),
        }
    }
}

/// What an apply report did.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// The region is not cached: nothing to track.
    NotCached,
    /// The applied index moved forward.
    Advanced,
    /// The batch was already covered (a repeated report): nothing changed.
    Unchanged,
    /// The region is being evicted: its index no longer matters.
    Ignored,
    /// The report revealed a gap; the region was evicted.
    Gap(Gap),
}

/// What an epoch change (ChangePeer) did.
#[derive(Debug)]
pub enum EpochChange {
    /// The region is not cached.
    NotCached,
    /// The cached epoch now equals the new one.
    Updated,
    /// The region is being evicted: nothing to update.
    Ignored,
    /// The cached epoch was not the one the change started from; the region was evicted.
    Gap(Gap),
}

impl RegionMap {
    /// The apply side applied entries `first..=last` of region `id` at `epoch` (a batch
    /// with or without data; `first == last` for one entry).
    ///
    /// While Pending the index is only tracked (there is no data to protect). Once Loading
    /// or Active, an epoch other than the cached one, or a `first` beyond the cached index
    /// plus one, means the cache missed something: the region is evicted.
    pub fn report_applied(
        &mut self,
        id: RegionId,
        epoch: RegionEpoch,
        first: u64,
        last: u64,
    ) -> ApplyOutcome {
        let Some(entry) = self.by_id.get_mut(&id) else {
            return ApplyOutcome::NotCached;
        };
        let cached = entry.applied();
        let kind = match entry.state {
            state if state.is_evicting() => return ApplyOutcome::Ignored,
            _ if entry.region.epoch != epoch => GapKind::Epoch {
                cached: entry.region.epoch,
                seen: epoch,
            },
            RegionState::Pending => {
                entry
                    .applied_index
                    .store(cached.max(last), Ordering::Release);
                return ApplyOutcome::Advanced;
            }
            _ if last <= cached => return ApplyOutcome::Unchanged,
            _ if first > cached.saturating_add(1) => GapKind::Index {
                cached,
                seen: first,
            },
            _ => {
                entry.applied_index.store(last, Ordering::Release);
                return ApplyOutcome::Advanced;
            }
        };
        ApplyOutcome::Gap(self.evict_for_gap(id, kind))
    }

    /// [`RegionMap::report_applied`] through a shared reference, for the reports that
    /// change nothing but the index (each region's are made in order, by its one apply
    /// thread): `None` when the report needs the map alone — an epoch other than the
    /// cached one, or a gap — and nothing was changed.
    pub fn try_report_applied(
        &self,
        id: RegionId,
        epoch: RegionEpoch,
        first: u64,
        last: u64,
    ) -> Option<ApplyOutcome> {
        let Some(entry) = self.by_id.get(&id) else {
            return Some(ApplyOutcome::NotCached);
        };
        if entry.state.is_evicting() {
            return Some(ApplyOutcome::Ignored);
        }
        if entry.region.epoch != epoch {
            return None;
        }
        if entry.state == RegionState::Pending {
            entry.applied_index.fetch_max(last, Ordering::AcqRel);
            return Some(ApplyOutcome::Advanced);
        }
        let next =
            |cached: u64| (last > cached && first <= cached.saturating_add(1)).then_some(last);
        match (entry.applied_index).fetch_update(Ordering::AcqRel, Ordering::Acquire, next) {
            Ok(_) => Some(ApplyOutcome::Advanced),
            Err(cached) if last <= cached => Some(ApplyOutcome::Unchanged),
            Err(_) => None, // a gap: evicting needs the map alone
        }
    }

    /// An event carried region `id` at `epoch` as its state before the event. If the cached
    /// region is serving or loading and its epoch differs, an event was missed: the region
    /// is evicted and the gap returned.
    pub fn check_epoch(&mut self, id: RegionId, epoch: RegionEpoch) -> Option<Gap> {
        let entry = self.by_id.get(&id)?;
        if entry.state.is_evicting() || entry.region.epoch == epoch {
            return None;
        }
        let kind = GapKind::Epoch {
            cached: entry.region.epoch,
            seen: epoch,
        };
        Some(self.evict_for_gap(id, kind))
    }

    /// A membership change moved region `id` from `before` to `after` (same range, new
    /// `conf_ver`): the cached epoch follows, or the region is evicted on a gap.
    pub fn change_epoch(&mut self, before: &Region, after: &Region) -> EpochChange {
        let id = before.id;
        let Some(entry) = self.by_id.get_mut(&id) else {
            return EpochChange::NotCached;
        };
        if entry.state.is_evicting() {
            return EpochChange::Ignored;
        }
        if entry.region != *before || after.id != id || after.range != before.range {
            let kind = GapKind::Epoch {
                cached: entry.region.epoch,
                seen: before.epoch,
            };
            return EpochChange::Gap(self.evict_for_gap(id, kind));
        }
        entry.region.epoch = after.epoch;
        EpochChange::Updated
    }

    /// Registers a snapshot for a read of region `id`, or says why memory cannot serve it.
    ///
    /// Served only when the region is Active, its epoch version equals the reader's, it
    /// holds every entry up to the reader's applied index, and `read_ts` is above its safe
    /// point. A reader ahead of the cache (newer version, or higher applied index) reveals
    /// a missed event: the region is evicted, the miss is [`ReadMiss::Gap`] and the
    /// refusal carries the gap with its eviction.
    pub fn acquire_snapshot(
        &mut self,
        id: RegionId,
        req: ReadRequest,
    ) -> Result<SnapshotTicket, ReadRefused> {
        match self.try_acquire_snapshot(id, req) {
            Ok(ticket) => Ok(ticket),
            Err(ReadMiss::Gap(kind)) => {
                let gap = self.evict_for_gap(id, kind);
                Err(ReadRefused {
                    miss: ReadMiss::Gap(gap.kind),
                    gap: Some(gap),
                })
            }
            Err(miss) => Err(miss.into()),
        }
    }

    /// [`RegionMap::acquire_snapshot`] through a shared reference, for many readers at
    /// once: a snapshot registers on the region's own record only. It changes nothing
    /// else, so a request that reveals a gap is refused with [`ReadMiss::Gap`] and
    /// nothing evicted: call [`RegionMap::acquire_snapshot`] (exclusive) to evict.
    ///
    /// # Errors
    /// Why memory cannot serve the read.
    pub fn try_acquire_snapshot(
        &self,
        id: RegionId,
        req: ReadRequest,
    ) -> Result<SnapshotTicket, ReadMiss> {
        let entry = self.by_id.get(&id).ok_or(ReadMiss::NotCached)?;
        let (cached_version, cached_index) = (entry.region.epoch.version, entry.applied());
        match entry.state {
            RegionState::Active | RegionState::Loading if req.epoch_version > cached_version => {
                Err(ReadMiss::Gap(GapKind::Epoch {
                    cached: entry.region.epoch,
                    seen: RegionEpoch {
                        version: req.epoch_version,
                        ..entry.region.epoch
                    },
                }))
            }
            RegionState::Active | RegionState::Loading if req.applied_index > cached_index => {
                Err(ReadMiss::Gap(GapKind::Index {
                    cached: cached_index,
                    seen: req.applied_index,
                }))
            }
            RegionState::Active if req.epoch_version < cached_version => {
                Err(ReadMiss::EpochNotMatch {
                    cached: cached_version,
                    requested: req.epoch_version,
                })
            }
            RegionState::Active if req.read_ts <= entry.safe_point => Err(ReadMiss::TooOldRead {
                safe_point: entry.safe_point,
                read_ts: req.read_ts,
            }),
            RegionState::Active => {
                let shard = entry.snapshots.add(req.read_ts);
                Ok(SnapshotTicket {
                    region: id,
                    version: cached_version,
                    generation: entry.generation,
                    read_ts: req.read_ts,
                    registry: entry.snapshots.handle(),
                    shard,
                })
            }
            state => Err(ReadMiss::NotReadable(state)),
        }
    }

    /// Hands back a snapshot. Returns the region id when this was the last snapshot of a
    /// PendingEvict region: it is now Evicting, and its data can be deleted.
    ///
    /// # Errors
    /// [`RegionError::UnknownSnapshot`] when its record does not hold the ticket.
    pub fn release_snapshot(
        &mut self,
        ticket: SnapshotTicket,
    ) -> Result<Option<RegionId>, RegionError> {
        Ok(ticket.release()?.and_then(|drained| self.drained(drained)))
    }

    /// The last snapshot of a record the map waits on was released on its own
    /// ([`SnapshotTicket::release`]): a PendingEvict region goes on to Evicting (its id is
    /// returned: its data can be deleted), a split parent's record goes. Anything else —
    /// the record is gone or has changed since — is nothing to do.
    pub fn drained(&mut self, drained: Drained) -> Option<RegionId> {
        let Drained {
            region,
            generation,
            registry,
        } = drained;
        let is_ours = |r: &Arc<Registry>| Arc::ptr_eq(r, registry.arc()) && r.is_empty();
        if let Some(entry) = (self.by_id.get(&region)).filter(|e| is_ours(e.snapshots.arc())) {
            let pending = entry.state == RegionState::PendingEvict;
            return (pending && self.settle(region) == EvictStep::ReadyToDelete).then_some(region);
        }
        if self
            .historical
            .get(&generation)
            .is_some_and(|h| is_ours(&h.snapshots))
        {
            self.historical.remove(&generation);
        }
        None
    }

    /// Raises region `id`'s GC safe point towards `target` and returns the one now in
    /// force. It never goes backwards, and never above the oldest live snapshot over the
    /// region (its own, or a split parent's).
    ///
    /// # Errors
    /// [`RegionError::NotCached`].
    pub fn advance_safe_point(&mut self, id: RegionId, target: u64) -> Result<u64, RegionError> {
        let limit = self.oldest_snapshot_over(id).unwrap_or(u64::MAX);
        let entry = self.by_id.get_mut(&id).ok_or(RegionError::NotCached(id))?;
        entry.safe_point = entry.safe_point.max(target.min(limit));
        Ok(entry.safe_point)
    }

    fn evict_for_gap(&mut self, id: RegionId, kind: GapKind) -> Gap {
        Gap {
            kind,
            eviction: self.evict(id, kind.reason(), None),
        }
    }
}
