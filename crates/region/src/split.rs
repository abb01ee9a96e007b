//! Split: children derived from the cached parent, or the parent evicted on an epoch gap.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::apply::{Gap, GapKind};
use crate::map::{Entry, Historical};
use crate::{InsertRejected, Region, RegionError, RegionId, RegionMap, RegionState};

/// One region a split produced, with the Raft applied index it starts at (for the child
/// that keeps the source id, the split entry's index; for a new region, the index its
/// fresh Raft log starts at).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitChild {
    /// The child as Raft describes it after the split.
    pub region: Region,
    /// Its applied index right after the split.
    pub applied_index: u64,
}

/// What a split did to the cache.
#[derive(Debug)]
pub enum SplitOutcome {
    /// The source region is not cached: nothing to do.
    NotCached,
    /// The cached region matched the source: the children replace it, in its state and with
    /// its safe point. Its live snapshots now hold back the children's safe points.
    Derived {
        /// The state the children inherited (Loading or Active).
        state: RegionState,
        /// The children, in key order.
        children: Vec<RegionId>,
    },
    /// The source was Pending (possibly at an older epoch): it is replaced by the children
    /// as Pending regions, each inserted by [`RegionMap::insert_pending`]'s rules.
    ReplacedPending {
        /// Children now Pending.
        inserted: Vec<RegionId>,
        /// Children refused, with the reason.
        rejected: Vec<(RegionId, InsertRejected)>,
    },
    /// The cached region is already being evicted: it stays whole, under its old range,
    /// until its data is gone, and blocks loads of the children until then.
    Ignored(RegionState),
    /// The cached epoch (or range) is not the source's: an event was missed. The region was
    /// evicted with `EpochGap`.
    Gap(Gap),
}

impl RegionMap {
    /// Region `source` split into `children`.
    ///
    /// # Errors
    /// [`RegionError::InvalidSplit`] when the children do not partition the source range
    /// or reuse an id cached elsewhere; the map is unchanged then.
    pub fn split(
        &mut self,
        source: &Region,
        children: &[SplitChild],
    ) -> Result<SplitOutcome, RegionError> {
        self.validate_split(source, children)?;
        let Some(entry) = self.by_id.get(&source.id) else {
            return Ok(SplitOutcome::NotCached);
        };
        match entry.state {
            RegionState::Pending => Ok(self.replace_pending(source.id, children)),
            state if state.is_evicting() => Ok(SplitOutcome::Ignored(state)),
            _ if entry.region != *source => {
                let kind = GapKind::Epoch {
                    cached: entry.region.epoch,
                    seen: source.epoch,
                };
                Ok(SplitOutcome::Gap(Gap {
                    kind,
                    eviction: self.evict(source.id, kind.reason(), None),
                }))
            }
            state => Ok(self.derive_children(source.id, state, children)),
        }
    }

    fn derive_children(
        &mut self,
        id: RegionId,
        state: RegionState,
        children: &[SplitChild],
    ) -> SplitOutcome {
        let Some(parent) = self.remove_entry(id) else {
            return SplitOutcome::NotCached;
        };
        if !parent.snapshots.empty_or_watch() {
            let record = Historical {
                region: id,
                version: parent.region.epoch.version,
                range: parent.region.range.clone(),
                snapshots: Arc::clone(parent.snapshots.arc()),
            };
            self.historical.insert(parent.generation, record);
        }
        for child in children {
            let entry = Entry::new(
                child.region.clone(),
                state,
                parent.safe_point,
                child.applied_index,
            );
            self.put_entry(entry);
        }
        SplitOutcome::Derived {
            state,
            children: children.iter().map(|c| c.region.id).collect(),
        }
    }

    fn replace_pending(&mut self, id: RegionId, children: &[SplitChild]) -> SplitOutcome {
        self.remove_entry(id);
        let (mut inserted, mut rejected) = (Vec::new(), Vec::new());
        for child in children {
            match self.insert_pending(child.region.clone(), child.applied_index) {
                Ok(_) => inserted.push(child.region.id),
                Err(reason) => rejected.push((child.region.id, reason)),
            }
        }
        SplitOutcome::ReplacedPending { inserted, rejected }
    }

    /// The children must be non-empty, lie in the source range, cover it without overlap,
    /// have distinct ids, and not reuse the id of another cached region.
    fn validate_split(&self, source: &Region, children: &[SplitChild]) -> Result<(), RegionError> {
        let invalid = |detail: String| {
            Err(RegionError::InvalidSplit {
                region: source.id,
                detail,
            })
        };
        let mut sorted: Vec<&Region> = children.iter().map(|c| &c.region).collect();
        sorted.sort_by(|a, b| a.range.start().cmp(b.range.start()));
        let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
            return invalid("no children".to_owned());
        };
        if first.range.start() != source.range.start() || last.range.end() != source.range.end() {
            return invalid(format!(
                "children span {} .. {}, not {}",
                first.range, last.range, source.range
            ));
        }
        for pair in sorted.windows(2) {
            if pair[0].range.end() != Some(pair[1].range.start()) {
                return invalid(format!(
                    "{} and {} are not adjacent",
                    pair[0].range, pair[1].range
                ));
            }
        }
        for (i, child) in sorted.iter().enumerate() {
            if sorted[..i].iter().any(|other| other.id == child.id) {
                return invalid(format!("region id {} appears twice", child.id));
            }
            let elsewhere = child.id != source.id && self.by_id.contains_key(&child.id);
            if elsewhere {
                return invalid(format!(
                    "child id {} is already cached for another range",
                    child.id
                ));
            }
        }
        Ok(())
    }
}
