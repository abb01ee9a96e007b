//! [`Stats`]: the engine's counters as one typed snapshot, read from the same Prometheus
//! counters [`crate::Metrics::render`] exposes. A field that does not exist does not compile, where a
//! counter looked up by name would silently read 0.
//!
//! Each group of outcomes is declared once (`counted!`): the public struct of counts, the
//! kind the engine increments, its Prometheus label, and the mapping between
//! the two — so the struct and the labels cannot drift apart.

use ime_controller::Fallback;
use ime_observer::EventKind;
use ime_region::{EvictReason, GapKind, ReadMiss};

macro_rules! counted {
    (
        $(#[doc = $sdoc:literal])* $counts:ident,
        $(#[doc = $kdoc:literal])* $kind:ident {
            $($(#[doc = $doc:literal])* $variant:ident / $field:ident => $label:literal,)+
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $counts {
            $($(#[doc = $doc])* pub $field: u64,)+
        }

        $(#[doc = $kdoc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $kind {
            $($(#[doc = $doc])* $variant,)+
        }

        impl $kind {
            /// Every kind, for reading the counters back.
            pub const ALL: &'static [$kind] = &[$($kind::$variant,)+];

            /// The Prometheus label.
            pub fn label(self) -> &'static str {
                match self {
                    $($kind::$variant => $label,)+
                }
            }
        }

        impl $counts {
            pub(crate) fn slot(&mut self, kind: $kind) -> &mut u64 {
                match kind {
                    $($kind::$variant => &mut self.$field,)+
                }
            }
        }
    };
}

counted! {
    /// Snapshots by where they were served from: memory, or why they fell back to disk.
    Snapshots,
    /// Where a snapshot was served from: memory, or a fallback reason.
    Source {
        /// Served from memory.
        Memory / from_memory => "memory",
        /// The engine is disabled.
        Disabled / disabled => "disabled",
        /// The region is not cached.
        NotCached / not_cached => "not_cached",
        /// Cached, but not readable in its state.
        NotReadable / not_readable => "not_readable",
        /// The reader's epoch is older than the cached one.
        EpochNotMatch / epoch_not_match => "epoch_not_match",
        /// read_ts at or below the safe point.
        TooOldRead / too_old_read => "too_old_read",
        /// The reader revealed a missed epoch (the region was evicted).
        EpochGap / epoch_gap => "epoch_gap",
        /// The reader revealed a missed index (the region was evicted).
        IndexGap / index_gap => "index_gap",
        /// The memory store could not give a snapshot at the disk's sequence.
        MemoryBehind / memory_behind => "memory_behind",
    }
}

impl Source {
    /// Where a snapshot with `fallback` (none: memory) was served from.
    pub fn of(fallback: Option<&Fallback>) -> Self {
        match fallback {
            None => Source::Memory,
            Some(Fallback::Disabled) => Source::Disabled,
            Some(Fallback::MemoryBehind) => Source::MemoryBehind,
            Some(Fallback::Miss(miss)) => match miss {
                ReadMiss::NotCached => Source::NotCached,
                ReadMiss::NotReadable(_) => Source::NotReadable,
                ReadMiss::EpochNotMatch { .. } => Source::EpochNotMatch,
                ReadMiss::TooOldRead { .. } => Source::TooOldRead,
                ReadMiss::Gap(GapKind::Epoch { .. }) => Source::EpochGap,
                ReadMiss::Gap(GapKind::Index { .. }) => Source::IndexGap,
            },
        }
    }
}

counted! {
    /// Loads by result.
    Loads,
    /// How a load ended.
    LoadResult {
        /// The region became Active.
        Ok / ok => "ok",
        /// The load stopped (a failure, or an eviction meanwhile).
        Failed / failed => "failed",
    }
}

impl From<bool> for LoadResult {
    /// `Ok` for a load that ended well (`true`), `Failed` otherwise.
    fn from(ok: bool) -> Self {
        if ok {
            LoadResult::Ok
        } else {
            LoadResult::Failed
        }
    }
}

counted! {
    /// Gaps detected: events the cache missed.
    Gaps,
    /// What revealed a gap.
    GapSource {
        /// An epoch that does not follow the cached one.
        Epoch / epoch => "EpochGap",
        /// An applied index past the cached one: an applied-index report was missed.
        Index / index => "IndexGap",
        /// Events the bus lost (a full queue, a failed observer).
        Delivery / delivery => "delivery",
    }
}

impl GapSource {
    /// The source of a gap of `kind`.
    pub fn of(kind: GapKind) -> Self {
        match kind {
            GapKind::Epoch { .. } => GapSource::Epoch,
            GapKind::Index { .. } => GapSource::Index,
        }
    }
}

counted! {
    /// Compactions of grown memtables, by result.
    Compactions,
    /// How a memtable compaction ended.
    CompactResult {
        /// Installed.
        Ok / ok => "ok",
        /// The range was gone (split or evicted) before it ran.
        RangeGone / range_gone => "range_gone",
        /// It failed.
        Failed / failed => "failed",
    }
}

counted! {
    /// GC collections (a range compacted at a safe point a GC round raised), by result.
    Collections,
    /// How a GC collection ended.
    CollectResult {
        /// Installed: the range is collected at the safe point.
        Collected / collected => "collected",
        /// Another compaction installed first; tried again.
        Lost / lost => "lost",
        /// The range was split or evicted meanwhile; the next round collects the children.
        RangeGone / range_gone => "range_gone",
        /// It failed.
        Failed / failed => "failed",
    }
}

counted! {
    /// Fences over disk changes outside the write path.
    Fences,
    /// What happened to a fence.
    FenceEvent {
        /// Begun.
        Begun / begun => "begun",
        /// Finished: the change is on disk.
        Finished / finished => "finished",
        /// Dropped without finish: its ranges stay evicted.
        Abandoned / abandoned => "abandoned",
        /// A load a fence held back until it lifted.
        HeldLoad / held_loads => "held_loads",
    }
}

/// The engine's counters at one moment (`ime_engine::Engine::stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Snapshots by where they were served from.
    pub snapshots: Snapshots,
    /// Evictions by reason, every reason listed (in `EvictReason::ALL` order).
    pub evictions: Vec<(EvictReason, u64)>,
    /// Loads by result.
    pub loads: Loads,
    /// Gaps detected.
    pub gaps: Gaps,
    /// Raft events handled, every kind listed (in `EventKind::ALL` order).
    pub events: Vec<(EventKind, u64)>,
    /// Differences the cross-checker found, all column families together.
    pub differences: u64,
    /// Compactions of grown memtables.
    pub compactions: Compactions,
    /// GC collections.
    pub collections: Collections,
    /// Fences.
    pub fences: Fences,
    /// Snapshots served from memory and dropped without a read.
    pub wasted_snapshots: u64,
    /// Bytes loads copied into memory.
    pub bytes_loaded: u64,
    /// Bytes deleting evicted regions freed.
    pub bytes_freed: u64,
}

impl Stats {
    /// Evictions for `reason`.
    pub fn evicted(&self, reason: EvictReason) -> u64 {
        self.evictions
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Events of `kind` handled.
    pub fn handled(&self, kind: EventKind) -> u64 {
        self.events
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}
