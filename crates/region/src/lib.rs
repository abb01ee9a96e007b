//! `ime-region`: region metadata, epochs and the lifecycle state machine of IME's cache.
//!
//! A region is a key range `[start, end)` replicated by one Raft group; its epoch's
//! `version` grows on split and merge, its `conf_ver` on membership change. The
//! [`RegionMap`] holds every cached region's metadata by id and by range and moves each
//! through six states (TiKV's):
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> Pending: insert_pending
//!     Pending --> Loading: start_loading (disk snapshot taken)
//!     Pending --> [*]: evict (no data yet)
//!     Loading --> Active: finish_loading
//!     Loading --> LoadingCanceled: evict while loading
//!     Loading --> Evicting: fail_loading
//!     LoadingCanceled --> PendingEvict: loader stopped, snapshots live
//!     LoadingCanceled --> Evicting: loader stopped
//!     Active --> PendingEvict: evict
//!     PendingEvict --> Evicting: last snapshot released
//!     Evicting --> [*]: finish_eviction (data dropped)
//! ```
//!
//! The allowed steps are data ([`TRANSITIONS`]) checked in one place; a step outside the
//! table is a [`RegionError::InvalidTransition`] naming the region and both states, which
//! the engine answers by evicting the region, never by aborting.
//!
//! # Invariants
//! - No two regions in the map overlap, whatever their state; the id index and the range
//!   index always agree.
//! - A region's safe point never goes backwards and is never above the read_ts of a live
//!   snapshot over it, including snapshots taken on its parent before a split.
//! - Snapshots are registered only on Active regions; an evicted region stays
//!   PendingEvict until its last snapshot is released, and an id that is still evicting
//!   cannot be inserted again until its data is gone.
//! - Once Loading or Active, a region's applied index advances only by contiguous apply
//!   reports at the cached epoch; anything else is a gap ([`EvictReason::EpochGap`],
//!   [`EvictReason::IndexGap`]) and evicts the region.
//! - Every eviction has a reason; every [`EvictCallback`] fires exactly once, on every path
//!   (not cached, Pending, Loading, already evicting, or dropped).
//! - The crate does no I/O, starts no thread and reads no clock: the same calls give the
//!   same answers.
//!
//! # Example: the seed sequence of tikv/tikv#17405
//!
//! A region is cached at version 221; a Raft snapshot moves it to 222; then it splits.
//! TiKV's engine missed the snapshot and aborted on the split. Here the snapshot event
//! evicts the region, and the split finds nothing to assert on:
//!
//! ```
//! use ime_region::*;
//!
//! # fn main() -> Result<(), RegionError> {
//! let range = KeyRange::new("a", "z")?;
//! let v221 = Region::new(RegionId(34855), range.clone(), RegionEpoch::new(221, 5));
//! let mut map = RegionMap::new();
//! map.insert_pending(v221.clone(), 100).expect("nothing overlaps");
//! let load = map.start_loading(RegionId(34855))?;
//! assert!(matches!(map.finish_loading(&load)[..], [LoadEnd::Activated(RegionId(34855))]));
//!
//! // The follower applies a Raft snapshot carrying version 222: evict.
//! let eviction = map.evict(RegionId(34855), EvictReason::ApplySnapshot, None);
//! assert_eq!(eviction.step, EvictStep::ReadyToDelete);
//! map.finish_eviction(RegionId(34855))?; // the engine dropped the data
//!
//! // The split of version 222 finds nothing cached: no panic, nothing to do.
//! let v222 = Region::new(RegionId(34855), range, RegionEpoch::new(222, 5));
//! let children = [
//!     SplitChild { region: Region::new(RegionId(34855), KeyRange::new("a", "m")?, RegionEpoch::new(223, 5)), applied_index: 120 },
//!     SplitChild { region: Region::new(RegionId(40000), KeyRange::new("m", "z")?, RegionEpoch::new(223, 5)), applied_index: 5 },
//! ];
//! assert!(matches!(map.split(&v222, &children)?, SplitOutcome::NotCached));
//! assert!(map.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! Had the snapshot event been lost, the split would have found version 221 cached against
//! a source at 222 and returned [`SplitOutcome::Gap`] with the region evicted for
//! `EpochGap`.

mod apply;
mod callback;
mod error;
mod evict;
mod map;
mod range;
mod reason;
mod snapshot;
mod split;
mod state;

pub use apply::{ApplyHeader, ApplyOutcome, EpochChange, Gap, GapKind};
pub use callback::{EvictCallback, EvictionEnd};
pub use error::RegionError;
pub use evict::{EvictStep, Eviction, LoadEnd, LoadTicket};
pub use map::{HistoricalInfo, InsertRejected, RegionInfo, RegionMap};
pub use range::{
    EpochOrder, KeyRange, Region, RegionEpoch, RegionHashMap, RegionId, RegionIdHasher,
};
pub use reason::EvictReason;
pub use snapshot::{Drained, ReadMiss, ReadRefused, ReadRequest, SnapshotTicket};
pub use split::{SplitChild, SplitOutcome};
pub use state::{RegionState, TRANSITIONS, Target};

/// Reports a broken internal invariant: a panic in debug and `strict` builds, nothing in
/// release builds, where the caller goes on with a safe answer (the engine evicts).
macro_rules! never {
    ($($arg:tt)*) => {
        $crate::broken_invariant(format_args!($($arg)*))
    };
}
pub(crate) use never;

#[allow(
    clippy::panic,
    reason = "the one place a broken invariant may abort, in debug and strict builds only"
)]
#[cold]
pub(crate) fn broken_invariant(message: std::fmt::Arguments<'_>) {
    if cfg!(any(debug_assertions, feature = "strict")) {
        panic!("ime-region invariant broken: {message}");
    }
}
