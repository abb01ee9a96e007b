//! [`EngineError`]: the facade's error, wrapping each layer's.

use ime_disk::DiskError;
use ime_memkv::MemError;
use ime_region::{RegionError, RegionId};

use ime_controller::Refusal;

use crate::ConfigError;

/// Errors of the engine. An expected cache miss is not one: a read that memory cannot
/// serve falls back to disk and says why ([`crate::Fallback`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The disk engine failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The memory store refused an operation.
    #[error(transparent)]
    Mem(#[from] MemError),
    /// Region metadata refused an operation.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// An MVCC read failed (a lock, corrupt data).
    #[error(transparent)]
    Mvcc(#[from] crate::MvccError),
    /// A configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A write batch whose segments are malformed.
    #[error("invalid write batch: {0}")]
    InvalidBatch(String),
    /// A load was refused.
    #[error("load of region {region} refused: {reason}")]
    LoadRefused {
        /// The region.
        region: RegionId,
        /// Why.
        reason: Refusal,
    },
    /// A background thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A write through a fence touches a key outside the fenced ranges.
    #[error("a write through a fence touches {key:?}, outside the ranges it fences")]
    OutsideFence {
        /// The key (or a range delete's start), escaped.
        key: String,
    },
}

impl From<ime_types::InvalidRange> for EngineError {
    fn from(err: ime_types::InvalidRange) -> Self {
        EngineError::Region(err.into())
    }
}
