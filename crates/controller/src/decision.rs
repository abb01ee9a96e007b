//! What the controller decides, as values: [`Action`]s gathered in [`Decisions`], and the
//! typed answers of admission ([`Admission`], [`Refusal`]) and of a load's first stage
//! ([`LoadStart`]).

use std::fmt;
use std::time::Duration;

use ime_region::{
    EvictCallback, EvictReason, GapKind, InsertRejected, KeyRange, LoadTicket, ReadMiss,
    RegionEpoch, RegionId,
};
use ime_types::RangeId;

/// What the controller is told of the world with a call: it reads no clock and no memory
/// counter of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// Time since the engine started.
    pub now: Duration,
    /// Bytes the memory store holds now.
    pub memory_used: u64,
}

/// One child's share of a split memory range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPart {
    /// The child region.
    pub region: RegionId,
    /// The new memory range that holds its keys.
    pub range: RangeId,
    /// Its keys.
    pub keys: KeyRange,
}

/// One thing the engine must do (or record) because of a decision, in order.
#[derive(Debug)]
pub enum Action {
    /// Take `range` out of the memory store now: snapshots already taken keep reading it;
    /// its memory is freed on the region's [`Action::Delete`]. Report the bytes it held
    /// with [`crate::Controller::note_size`] first, if the policy is to know them.
    DropMemory {
        /// The region that held it.
        region: RegionId,
        /// The memory range.
        range: RangeId,
        /// Why.
        reason: EvictReason,
    },
    /// Split memory range `parent` into `parts` (the children of a cached region's split).
    /// If the store refuses, report it with [`crate::Controller::memory_split_failed`].
    SplitMemory {
        /// The parent's range, gone once split.
        parent: RangeId,
        /// The children's ranges, in key order.
        parts: Vec<SplitPart>,
    },
    /// Queue the first stage of this region's load ([`crate::Controller::start_load`]).
    Load(RegionId),
    /// The region is Evicting: free its dropped memory, then report
    /// [`crate::Controller::finish_eviction`].
    Delete(RegionId),
    /// Fire this callback, outside any lock.
    Fire(EvictCallback),
    /// An event, report or read revealed that the cache missed an event. The region's
    /// eviction follows in the same decisions.
    Gap {
        /// The region.
        region: RegionId,
        /// What was missed.
        kind: GapKind,
    },
    /// A region was evicted (or its eviction moved on): for metrics and the lifecycle log.
    Evicted {
        /// The region.
        region: RegionId,
        /// Its epoch, while the map still knows it.
        epoch: Option<RegionEpoch>,
        /// Why.
        reason: EvictReason,
        /// The state it left.
        from: &'static str,
        /// The state it is in now (`"removed"` when gone).
        to: &'static str,
    },
    /// Another lifecycle step, for the log.
    Step {
        /// The region.
        region: RegionId,
        /// Its epoch, when known.
        epoch: Option<RegionEpoch>,
        /// The state it left (`"none"` when it was not cached).
        from: &'static str,
        /// The state it is in now.
        to: &'static str,
        /// Why.
        why: String,
    },
    /// A load asked for by something other than the embedder (a warm-up, a pin, a policy
    /// round, a reload after a merge) was refused.
    Refused {
        /// The region.
        region: RegionId,
        /// Who asked.
        source: LoadSource,
        /// Why not.
        refusal: Refusal,
    },
    /// A load waits for a fence to lift.
    HeldByFence(RegionId),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::DropMemory {
                region,
                range,
                reason,
            } => write!(f, "drop {range} of region {region} ({reason})"),
            Action::SplitMemory { parent, parts } => {
                write!(f, "split {parent} into")?;
                for p in parts {
                    write!(f, " {}={} {}", p.region, p.range, p.keys)?;
                }
                Ok(())
            }
            Action::Load(region) => write!(f, "load region {region}"),
            Action::Delete(region) => write!(f, "delete region {region}"),
            Action::Fire(callback) => write!(f, "fire callback ({:?})", callback.end()),
            Action::Gap { region, kind } => match kind {
                GapKind::Epoch { cached, seen } => {
                    write!(
                        f,
                        "epoch gap on region {region}: cached {cached}, seen {seen}"
                    )
                }
                GapKind::Index { cached, seen } => write!(
                    f,
                    "index gap on region {region}: an applied-index report was missed \
                     (cached applied index {cached}, next expected {}, seen {seen})",
                    cached.saturating_add(1)
                ),
            },
            Action::Evicted {
                region,
                reason,
                from,
                to,
                ..
            } => write!(f, "region {region} {from} -> {to} ({reason})"),
            Action::Step {
                region,
                from,
                to,
                why,
                ..
            } => write!(f, "region {region} {from} -> {to} ({why})"),
            Action::Refused {
                region,
                source,
                refusal,
            } => write!(f, "{source:?} load of region {region} refused: {refusal}"),
            Action::HeldByFence(region) => write!(f, "load of region {region} held by a fence"),
        }
    }
}

/// Who asked for a load the controller started on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadSource {
    /// A leader transfer to this store, warming its region up.
    Warmup,
    /// A pinned range this store now leads.
    Pin,
    /// An eviction-policy round.
    Policy,
    /// A merge's result, reloaded because a source was cached.
    Reload,
    /// A load deferred until evictions in its way were done.
    Deferred,
}

/// Decisions, in the order the engine carries them out.
#[derive(Debug, Default)]
#[must_use = "decisions must be carried out"]
pub struct Decisions {
    actions: Vec<Action>,
}

impl Decisions {
    /// None yet.
    pub fn new() -> Self {
        Decisions::default()
    }

    pub(crate) fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// The actions so far.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

impl IntoIterator for Decisions {
    type Item = Action;
    type IntoIter = std::vec::IntoIter<Action>;

    fn into_iter(self) -> Self::IntoIter {
        self.actions.into_iter()
    }
}

/// What became of a load request the controller accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Pending, its first stage queued ([`Action::Load`]).
    Queued,
    /// Pending, waiting for a fence over its range to lift.
    Fenced,
    /// Not inserted yet: regions being evicted stand in its way; it is inserted and
    /// queued once their memory is freed, unless an eviction of its range comes first.
    Deferred,
    /// Already Pending, Loading or Active: nothing to do.
    AlreadyCached,
}

/// Why a load was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The engine is disabled.
    #[error("the engine is disabled")]
    Disabled,
    /// The region is in flashback.
    #[error("the region is in flashback")]
    Flashback,
    /// Memory is at the stop-load threshold.
    #[error("memory {used} is at the stop-load threshold {threshold}")]
    StopLoad {
        /// Bytes in use.
        used: u64,
        /// The threshold.
        threshold: u64,
    },
    /// The region map refused it (an uninitialized peer, an overlap with a region still
    /// cached).
    #[error("{0}")]
    Conflict(InsertRejected),
}

/// Why a snapshot is served from disk rather than memory. An expected outcome, counted by
/// reason, never an error. Deliberately exhaustive: a consumer that counts or reports
/// fallbacks must say what it does with a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The engine is disabled.
    Disabled,
    /// The region's metadata refused the read: not cached, not readable in its state, an
    /// older epoch, a read_ts at or below the safe point, or a gap the request revealed
    /// (the region was evicted then).
    Miss(ReadMiss),
    /// The memory store cannot give a snapshot in step with the disk snapshot: a
    /// compaction is ahead of it, or a write of the region was between disk and memory
    /// and had parked no state for readers (a write parks one only for regions read
    /// lately).
    MemoryBehind,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Disabled => f.write_str("the engine is disabled"),
            Fallback::Miss(miss) => miss.fmt(f),
            Fallback::MemoryBehind => f.write_str("memory is behind the disk snapshot"),
        }
    }
}

/// What a load's first stage should do.
#[derive(Debug)]
pub enum LoadStart {
    /// Start: create `range` in the memory store, take the disk snapshot, copy. Report the
    /// end with [`crate::Controller::finish_load`] (or, if the range cannot be created,
    /// [`crate::Controller::load_not_started`]).
    Start {
        /// The load, as the region map handed it out.
        ticket: LoadTicket,
        /// The memory range to fill.
        range: RangeId,
    },
    /// A fence covers the range: the region waits Pending until it lifts.
    Fenced,
    /// Refused now (disabled, flashback, memory): the region is evicted.
    Refused,
    /// No longer Pending (replaced, split or evicted meanwhile): nothing to do.
    Gone,
}

/// A region's range to collect at a safe point (a GC round's work).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcTarget {
    /// The region.
    pub region: RegionId,
    /// Its memory range.
    pub range: RangeId,
    /// The safe point to collect at.
    pub safe_point: u64,
}
