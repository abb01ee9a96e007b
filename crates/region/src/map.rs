//! [`RegionMap`]: every cached region, by id and by range, and the one place that moves a
//! region through its lifecycle.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::range::{EndKey, end_key};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::snapshot::Registry;
use crate::{
    EvictCallback, EvictReason, KeyRange, Region, RegionError, RegionHashMap, RegionId, RegionState,
};
use ime_types::LaneArc;

/// One cached region's metadata.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Unique per record in this map: snapshot tickets name it, so a ticket can never be
    /// mistaken for one of a later record with the same id and version.
    pub(crate) generation: u64,
    pub(crate) region: Region,
    pub(crate) state: RegionState,
    pub(crate) safe_point: u64,
    /// Moved on under a shared reference too ([`RegionMap::try_report_applied`]): the
    /// apply side reports without holding the map alone.
    pub(crate) applied_index: AtomicU64,
    /// Shared with the tickets taken on it, each by its reader's lane's handle (so that
    /// readers on different threads write no count in common).
    pub(crate) snapshots: LaneArc<Registry>,
    /// Callbacks waiting for the eviction to finish; empty unless evicting.
    pub(crate) callbacks: Vec<EvictCallback>,
    /// Set exactly when the state is one of the evicting ones.
    pub(crate) evict_reason: Option<EvictReason>,
}

impl Entry {
    /// The applied index reported last.
    pub(crate) fn applied(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    pub(crate) fn new(region: Region, state: RegionState, safe_point: u64, applied: u64) -> Self {
        Entry {
            generation: 0,
            region,
            state,
            safe_point,
            applied_index: AtomicU64::new(applied),
            snapshots: LaneArc::new(Arc::default()),
            callbacks: Vec::new(),
            evict_reason: None,
        }
    }
}

/// Snapshots taken on a region before it split, kept until they drop: they hold back
/// the safe point of every region overlapping `range`.
#[derive(Debug)]
pub(crate) struct Historical {
    pub(crate) region: RegionId,
    pub(crate) version: u64,
    pub(crate) range: KeyRange,
    pub(crate) snapshots: Arc<Registry>,
}

/// Every cached region's metadata: by id, by range (an index on the end key), and the
/// snapshots of regions that have since split.
///
/// No two regions in the map overlap, whatever their state. The map does no I/O and owns
/// no data: its operations return what the engine must do (load, delete, fire callbacks)
/// as values.
#[derive(Debug, Default)]
pub struct RegionMap {
    pub(crate) by_id: RegionHashMap<Entry>,
    pub(crate) by_end: BTreeMap<EndKey, RegionId>,
    /// Split parents' snapshots, by the parent record's generation.
    pub(crate) historical: BTreeMap<u64, Historical>,
    pub(crate) next_generation: u64,
}

/// A region's metadata as listed for observability (serializable, for JSON dumps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    /// Id, range and epoch as cached.
    pub region: Region,
    /// Lifecycle state.
    pub state: RegionState,
    /// MVCC GC safe point.
    pub safe_point: u64,
    /// Last Raft applied index whose effects the cache holds.
    pub applied_index: u64,
    /// Live snapshots registered on it.
    pub snapshots: usize,
    /// The oldest live snapshot's read_ts.
    pub oldest_snapshot_ts: Option<u64>,
    /// Why it is being evicted, when it is.
    pub evict_reason: Option<EvictReason>,
}

/// Snapshots of a region that has since split, as listed for observability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoricalInfo {
    /// The region the snapshots were taken on.
    pub region: RegionId,
    /// Its epoch version then.
    pub version: u64,
    /// Its range then.
    pub range: KeyRange,
    /// How many are still live.
    pub snapshots: usize,
    /// The oldest one's read_ts.
    pub oldest_snapshot_ts: Option<u64>,
}

/// Why [`RegionMap::insert_pending`] refused a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InsertRejected {
    /// The id is already cached, and not as a stale Pending region.
    AlreadyCached {
        /// Its state (an evicting id cannot be loaded again until its data is gone).
        state: RegionState,
        /// Its cached epoch.
        epoch: crate::RegionEpoch,
    },
    /// Another region that is not a stale Pending one overlaps the range.
    Overlaps {
        /// The overlapping region.
        other: RegionId,
        /// Its state.
        state: RegionState,
    },
    /// The region is an uninitialized peer's (epoch `0/0`, no range of its own yet): it
    /// has no data to cache, and its placeholder range would cover every key.
    Uninitialized,
}

impl fmt::Display for InsertRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertRejected::AlreadyCached { state, epoch } => {
                write!(f, "already cached ({state}, {epoch})")
            }
            InsertRejected::Overlaps { other, state } => {
                write!(f, "overlaps region {other} ({state})")
            }
            InsertRejected::Uninitialized => {
                write!(f, "an uninitialized peer (epoch 0/0) has nothing to cache")
            }
        }
    }
}

impl RegionMap {
    /// An empty map.
    pub fn new() -> Self {
        RegionMap::default()
    }

    /// How many regions are cached, in any state.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no region is cached.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The cached region `id`'s state.
    pub fn state(&self, id: RegionId) -> Option<RegionState> {
        self.by_id.get(&id).map(|entry| entry.state)
    }

    /// The cached region `id` as it was last described (id, range, epoch).
    pub fn region(&self, id: RegionId) -> Option<&Region> {
        self.by_id.get(&id).map(|entry| &entry.region)
    }

    /// The listing of one region.
    pub fn info(&self, id: RegionId) -> Option<RegionInfo> {
        self.by_id.get(&id).map(info_of)
    }

    /// Every cached region, in key order.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.by_end
            .values()
            .filter_map(|id| self.by_id.get(id))
            .map(info_of)
            .collect()
    }

    /// Snapshots of regions that have since split, by region and version.
    pub fn historical(&self) -> Vec<HistoricalInfo> {
        self.historical
            .values()
            .map(|h| HistoricalInfo {
                region: h.region,
                version: h.version,
                range: h.range.clone(),
                snapshots: h.snapshots.len(),
                oldest_snapshot_ts: h.snapshots.oldest(),
            })
            .collect()
    }

    /// The cached regions overlapping `range`, in key order.
    pub fn overlapping(&self, range: &KeyRange) -> Vec<RegionId> {
        let from = Bound::Excluded(EndKey::Bounded(range.start().to_vec()));
        self.by_end
            .range((from, Bound::Unbounded))
            .map(|(_, id)| *id)
            .take_while(|id| {
                self.by_id
                    .get(id)
                    .is_some_and(|e| e.region.range.overlaps(range))
            })
            .collect()
    }

    /// Whether region `id`, or a region overlapping `range`, is being evicted: a load over
    /// them must wait until their memory is freed.
    pub fn eviction_in_the_way(&self, id: RegionId, range: &KeyRange) -> bool {
        let evicting = |id: RegionId| self.state(id).is_some_and(RegionState::is_evicting);
        evicting(id) || self.overlapping(range).into_iter().any(evicting)
    }

    /// Whether nothing but evictions stands in the way of loading region `id` over
    /// `range`: the id is not cached or is being evicted, and so is every region
    /// overlapping the range. Such a load is deferred, not refused.
    pub fn only_evictions_in_the_way(&self, id: RegionId, range: &KeyRange) -> bool {
        let evicting = |id: RegionId| self.state(id).is_some_and(RegionState::is_evicting);
        self.state(id).is_none_or(RegionState::is_evicting)
            && self.overlapping(range).into_iter().all(evicting)
    }

    /// The cached region holding `key`.
    pub fn region_at(&self, key: &[u8]) -> Option<RegionId> {
        let from = Bound::Excluded(EndKey::Bounded(key.to_vec()));
        let (_, id) = self.by_end.range((from, Bound::Unbounded)).next()?;
        let entry = self.by_id.get(id)?;
        entry.region.range.contains_key(key).then_some(*id)
    }

    /// Inserts `region` as Pending, with the Raft applied index its peer has now.
    ///
    /// Stale Pending regions in the way (the same id at an older epoch, or an overlapping
    /// Pending region at a lower epoch version) are replaced; they are returned.
    ///
    /// # Errors
    /// [`InsertRejected`] when the region is an uninitialized peer's, the id is cached
    /// otherwise, or the range overlaps a region that is not a stale Pending one. Nothing
    /// is changed then.
    pub fn insert_pending(
        &mut self,
        region: Region,
        applied_index: u64,
    ) -> Result<Vec<RegionId>, InsertRejected> {
        if !region.is_initialized() {
            return Err(InsertRejected::Uninitialized);
        }
        let stale = self.stale_pending_in_the_way(&region)?;
        for id in &stale {
            self.remove_entry(*id);
        }
        self.put_entry(Entry::new(region, RegionState::Pending, 0, applied_index));
        Ok(stale)
    }

    /// The Pending regions `region` may replace, or why it may not be inserted.
    fn stale_pending_in_the_way(&self, region: &Region) -> Result<Vec<RegionId>, InsertRejected> {
        let mut stale = Vec::new();
        if let Some(same) = self.by_id.get(&region.id) {
            let replaceable = same.state == RegionState::Pending
                && same.region.epoch.is_stale_than(&region.epoch);
            if !replaceable {
                let (state, epoch) = (same.state, same.region.epoch);
                return Err(InsertRejected::AlreadyCached { state, epoch });
            }
            stale.push(region.id);
        }
        for other in self.overlapping(&region.range) {
            if other == region.id {
                continue;
            }
            let Some(entry) = self.by_id.get(&other) else {
                continue;
            };
            if entry.state != RegionState::Pending
                || entry.region.epoch.version >= region.epoch.version
            {
                return Err(InsertRejected::Overlaps {
                    other,
                    state: entry.state,
                });
            }
            stale.push(other);
        }
        Ok(stale)
    }

    /// Adds an entry to both indexes. The caller has made sure nothing overlaps it.
    pub(crate) fn put_entry(&mut self, mut entry: Entry) {
        entry.generation = self.next_generation;
        self.next_generation += 1;
        self.by_end
            .insert(end_key(&entry.region.range), entry.region.id);
        self.by_id.insert(entry.region.id, entry);
    }

    /// Removes an entry from both indexes, whatever its state.
    pub(crate) fn remove_entry(&mut self, id: RegionId) -> Option<Entry> {
        let entry = self.by_id.remove(&id)?;
        self.by_end.remove(&end_key(&entry.region.range));
        Some(entry)
    }

    /// Moves region `id` one step through the lifecycle, as [`crate::TRANSITIONS`] allows;
    /// `None` removes it. Every state change in the crate goes through here.
    pub(crate) fn step(
        &mut self,
        id: RegionId,
        to: Option<RegionState>,
    ) -> Result<Option<Entry>, RegionError> {
        let entry = self.by_id.get_mut(&id).ok_or(RegionError::NotCached(id))?;
        entry.state.check_step(id, to)?;
        match to {
            Some(state) => {
                entry.state = state;
                Ok(None)
            }
            None => Ok(self.remove_entry(id)),
        }
    }

    /// The oldest live snapshot that must hold back region `id`'s safe point: its own, and
    /// those of split parents overlapping it.
    pub(crate) fn oldest_snapshot_over(&self, id: RegionId) -> Option<u64> {
        let entry = self.by_id.get(&id)?;
        let historical = self
            .historical
            .values()
            .filter(|h| h.range.overlaps(&entry.region.range))
            .filter_map(|h| h.snapshots.oldest());
        historical.chain(entry.snapshots.oldest()).min()
    }

    /// Checks every structural invariant; returns the first one broken.
    ///
    /// For tests and `strict` builds: no two regions overlap; the two indexes agree; the
    /// safe point is never above a live snapshot over the region; snapshots live only on
    /// Active and PendingEvict regions (and a PendingEvict region, or a split parent's
    /// record, has some); a region has an eviction reason and callbacks only while
    /// evicting. Tickets released on their own ([`crate::SnapshotTicket::release`]) count
    /// once their [`crate::Drained`] is handed back: call it with none in flight.
    ///
    /// # Errors
    /// A description of the broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.by_id.len() != self.by_end.len() {
            return Err(format!(
                "{} ids but {} range entries",
                self.by_id.len(),
                self.by_end.len()
            ));
        }
        let mut previous: Option<&Region> = None;
        for (end, id) in &self.by_end {
            let entry = self
                .by_id
                .get(id)
                .ok_or(format!("range index names unknown {id}"))?;
            if end_key(&entry.region.range) != *end || entry.region.id != *id {
                return Err(format!(
                    "range index entry {end:?} -> {id} disagrees with {}",
                    entry.region
                ));
            }
            if let Some(prev) = previous.filter(|p| p.range.overlaps(&entry.region.range)) {
                return Err(format!("{prev} overlaps {}", entry.region));
            }
            check_entry(entry, self.oldest_snapshot_over(*id))?;
            previous = Some(&entry.region);
        }
        match self.historical.iter().find(|(_, h)| h.snapshots.is_empty()) {
            Some((key, _)) => Err(format!("historical record {key:?} has no snapshots")),
            None => Ok(()),
        }
    }
}

fn check_entry(entry: &Entry, oldest_snapshot: Option<u64>) -> Result<(), String> {
    let region = &entry.region;
    if let Some(oldest) = oldest_snapshot.filter(|ts| entry.safe_point > *ts) {
        return Err(format!(
            "{region}: safe point {} above snapshot {oldest}",
            entry.safe_point
        ));
    }
    let snapshots_allowed = matches!(entry.state, RegionState::Active | RegionState::PendingEvict);
    if !snapshots_allowed && !entry.snapshots.is_empty() {
        return Err(format!("{region}: {} holds snapshots", entry.state));
    }
    if entry.state == RegionState::PendingEvict && entry.snapshots.is_empty() {
        return Err(format!("{region}: PendingEvict without snapshots"));
    }
    if entry.state.is_evicting() != entry.evict_reason.is_some() {
        return Err(format!(
            "{region}: {} with reason {:?}",
            entry.state, entry.evict_reason
        ));
    }
    if !entry.state.is_evicting() && !entry.callbacks.is_empty() {
        return Err(format!(
            "{region}: {} holds eviction callbacks",
            entry.state
        ));
    }
    Ok(())
}

fn info_of(entry: &Entry) -> RegionInfo {
    RegionInfo {
        region: entry.region.clone(),
        state: entry.state,
        safe_point: entry.safe_point,
        applied_index: entry.applied(),
        snapshots: entry.snapshots.len(),
        oldest_snapshot_ts: entry.snapshots.oldest(),
        evict_reason: entry.evict_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegionEpoch;

    fn region(id: u64, start: &str, end: &str) -> Region {
        let range = KeyRange::new(start, end).unwrap();
        Region::new(RegionId(id), range, RegionEpoch::new(3, 1))
    }

    fn map_of(regions: &[Region]) -> RegionMap {
        let mut map = RegionMap::new();
        for r in regions {
            map.insert_pending(r.clone(), 7).unwrap();
        }
        map
    }

    #[test]
    fn lookups_by_key_and_range_handle_unbounded_ends() {
        let map = map_of(&[region(1, "", "c"), region(2, "c", "f"), region(3, "k", "")]);
        assert_eq!(map.region_at(b""), Some(RegionId(1)));
        assert_eq!(map.region_at(b"c"), Some(RegionId(2)));
        assert_eq!(map.region_at(b"g"), None);
        assert_eq!(map.region_at(b"\xff\xff"), Some(RegionId(3)));
        let ids = |s: &str, e: &str| map.overlapping(&KeyRange::new(s, e).unwrap());
        assert_eq!(ids("b", "d"), [RegionId(1), RegionId(2)]);
        assert_eq!(ids("f", "k"), []);
        assert_eq!(ids("f", ""), [RegionId(3)]);
        assert_eq!(ids("", ""), [RegionId(1), RegionId(2), RegionId(3)]);
        map.check_invariants().unwrap();
    }

    #[test]
    fn the_listing_is_in_key_order_and_dumps_as_json() {
        let map = map_of(&[region(9, "m", ""), region(4, "a", "m")]);
        let listing = map.regions();
        let order: Vec<_> = listing.iter().map(|info| info.region.id).collect();
        assert_eq!(order, [RegionId(4), RegionId(9)]);
        let json = serde_json::to_string(&listing).unwrap();
        assert!(
            json.contains(r#""range":{"start":"6d","end":""}"#),
            "{json}"
        );
        assert!(json.contains(r#""state":"Pending""#), "{json}");
        let back: Vec<RegionInfo> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, listing);
    }

    #[test]
    fn a_refused_insert_changes_nothing() {
        let mut map = map_of(&[region(1, "a", "c"), region(2, "c", "e")]);
        let mut newer = region(5, "b", "d");
        newer.epoch.version = 2;
        let before = map.regions();
        let refused = map.insert_pending(newer, 1).unwrap_err();
        assert_eq!(
            refused,
            InsertRejected::Overlaps {
                other: RegionId(1),
                state: RegionState::Pending
            }
        );
        assert_eq!(map.regions(), before);
    }

    /// An uninitialized peer's region (epoch 0/0, the whole keyspace as a placeholder) is
    /// never cached: it would stand in the way of every real region (tikv/tikv#17767).
    #[test]
    fn an_uninitialized_region_is_never_inserted() {
        let mut map = RegionMap::new();
        let placeholder = Region::new(RegionId(8), KeyRange::everything(), RegionEpoch::default());
        assert!(!placeholder.is_initialized());
        assert_eq!(
            map.insert_pending(placeholder, 0),
            Err(InsertRejected::Uninitialized)
        );
        assert!(map.regions().is_empty());
        map.insert_pending(region(1, "a", "c"), 0).unwrap();
    }

    /// What stands in the way of a load: a region being evicted (wait for its memory) or
    /// one still cached (refuse).
    #[test]
    fn evictions_in_the_way_of_a_load() {
        let mut map = map_of(&[region(1, "a", "c"), region(2, "c", "e")]);
        let wide = KeyRange::new("a", "e").unwrap();
        assert!(!map.eviction_in_the_way(RegionId(9), &wide));
        assert!(!map.only_evictions_in_the_way(RegionId(9), &wide));
        // Region 1 is Pending: evicting removes it; make 2 Loading, then evict it.
        let _ticket = map.start_loading(RegionId(2)).unwrap();
        let _ = map.evict(RegionId(2), crate::EvictReason::Manual, None);
        assert_eq!(map.state(RegionId(2)), Some(RegionState::LoadingCanceled));
        assert!(map.eviction_in_the_way(RegionId(9), &wide));
        assert!(
            !map.only_evictions_in_the_way(RegionId(9), &wide),
            "1 is cached"
        );
        let right = KeyRange::new("c", "e").unwrap();
        assert!(map.only_evictions_in_the_way(RegionId(9), &right));
        assert!(map.eviction_in_the_way(RegionId(2), &KeyRange::new("x", "z").unwrap()));
    }
}
