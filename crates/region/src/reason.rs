//! Why a region is evicted: [`EvictReason`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::RegionError;

macro_rules! evict_reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Why a region left the cache. Every eviction has exactly one.
        ///
        /// TiKV's reasons, plus [`EvictReason::EpochGap`] and [`EvictReason::IndexGap`] for
        /// the events this engine detects it missed.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum EvictReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl EvictReason {
            /// Every reason, in declaration order (for metrics labels and tests).
            pub const ALL: &'static [EvictReason] = &[$(EvictReason::$name,)*];

            /// The reason's name, as in logs, metrics and transcripts.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EvictReason::$name => stringify!($name),)*
                }
            }
        }
    };
}

evict_reasons! {
    /// The load from the disk snapshot failed after it started.
    LoadFailed,
    /// The load could not start (for example, the disk snapshot could not be taken).
    LoadFailedWithoutStart,
    /// Memory reached its limit: a write would have passed capacity.
    MemoryLimitReached,
    /// Memory passed the evict threshold: the policy freed memory early, before any write
    /// would reach capacity.
    MemoryPressure,
    /// The local peer stopped leading.
    BecomeFollower,
    /// The eviction policy chose it.
    AutoEvict,
    /// A Raft DeleteRange command, or an UnsafeDestroyRange outside Raft, touched it.
    DeleteRange,
    /// PrepareMerge was applied: the region is about to be merged away.
    PrepareMerge,
    /// CommitMerge or RollbackMerge was applied.
    Merge,
    /// The cache was disabled.
    Disabled,
    /// A Raft snapshot replaced the region's data without passing the write path.
    ApplySnapshot,
    /// Flashback began or ended on the region.
    Flashback,
    /// An operator asked for it.
    Manual,
    /// The local peer was destroyed.
    DestroyPeer,
    /// An SST was ingested into its range.
    IngestSst,
    /// An event, write or read carried an epoch that does not follow the cached one: an
    /// event was missed.
    EpochGap,
    /// An applied index jumped past the cached one: entries were applied that the cache
    /// never saw (a snapshot can replace data without changing the epoch).
    IndexGap,
    /// Unsafe recovery or force-leader ran on the region.
    UnsafeRecovery,
    /// The embedder fenced a disk change over its range that no Raft event announced: the
    /// data is about to change outside the write path, so memory cannot serve it.
    UnannouncedChange,
    /// The write path could not keep memory and disk in step for a batch touching it: the
    /// memory store refused the batch for a reason other than its limit, the disk write
    /// failed, or the batch reached the region's memory without naming the region in a
    /// segment (its keys belong to a region the cache does not know of as such: a split
    /// or merge was missed).
    WriteFailed,
}

impl fmt::Display for EvictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EvictReason {
    type Err = RegionError;

    fn from_str(text: &str) -> Result<Self, RegionError> {
        EvictReason::ALL
            .iter()
            .copied()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| RegionError::UnknownReason(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_name() {
        for reason in EvictReason::ALL {
            assert_eq!(reason.as_str().parse::<EvictReason>().unwrap(), *reason);
        }
        assert!("Whatever".parse::<EvictReason>().is_err());
    }

    #[test]
    fn the_design_reasons_are_all_present() {
        let names: Vec<_> = EvictReason::ALL.iter().map(|r| r.as_str()).collect();
        for expected in [
            "LoadFailed",
            "LoadFailedWithoutStart",
            "MemoryLimitReached",
            "MemoryPressure",
            "BecomeFollower",
            "AutoEvict",
            "DeleteRange",
            "PrepareMerge",
            "Merge",
            "Disabled",
            "ApplySnapshot",
            "Flashback",
            "Manual",
            "DestroyPeer",
            "IngestSst",
            "EpochGap",
            "IndexGap",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
    }
}
