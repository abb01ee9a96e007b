//! Memory accounting: a shared counter of bytes held, and charges that give their bytes
//! back when the structure holding them is dropped (after the last snapshot reading it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::layer::SpareRuns;

/// Counts every byte the store holds, against a hard limit and a soft threshold.
#[derive(Debug)]
pub(crate) struct MemoryTracker {
    used: AtomicU64,
    hard_limit: AtomicU64,
    soft_limit: AtomicU64,
    /// The arrays of large runs dropped lately, kept for the next runs built (not
    /// counted in `used`).
    pub(crate) spares: SpareRuns,
}

impl MemoryTracker {
    /// A tracker with the given limits.
    pub(crate) fn new(hard_limit: u64, soft_limit: u64) -> Arc<Self> {
        Arc::new(MemoryTracker {
            used: AtomicU64::new(0),
            hard_limit: AtomicU64::new(hard_limit),
            soft_limit: AtomicU64::new(soft_limit),
            spares: SpareRuns::default(),
        })
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The hard limit: a write that would pass it is refused.
    pub(crate) fn hard_limit(&self) -> u64 {
        self.hard_limit.load(Ordering::Acquire)
    }

    /// Changes both limits (memory already held stays held).
    pub(crate) fn set_limits(&self, hard_limit: u64, soft_limit: u64) {
        self.hard_limit.store(hard_limit, Ordering::Release);
        self.soft_limit.store(soft_limit, Ordering::Release);
    }

    /// True when usage is at or above the soft threshold: time to evict.
    pub(crate) fn over_soft_limit(&self) -> bool {
        self.used() >= self.soft_limit.load(Ordering::Acquire)
    }

    /// Reserves `bytes` if the hard limit allows; false (and nothing reserved) if not.
    pub(crate) fn try_reserve(&self, bytes: u64) -> bool {
        let mut current = self.used();
        loop {
            let Some(next) = current
                .checked_add(bytes)
                .filter(|n| *n <= self.hard_limit())
            else {
                return false;
            };
            match self.used.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Reserves as many bytes as the hard limit allows, at most `max` and at least `min`;
    /// `None` (nothing reserved) when not even `min` fit.
    pub(crate) fn try_reserve_up_to(&self, min: u64, max: u64) -> Option<u64> {
        let mut current = self.used();
        loop {
            let room = self.hard_limit().saturating_sub(current);
            let bytes = max.min(room);
            if bytes < min {
                return None;
            }
            match self.used.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(bytes),
                Err(seen) => current = seen,
            }
        }
    }

    /// Adds `bytes` whatever the limit (structures rebuilt from data already counted).
    pub(crate) fn force_reserve(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    pub(crate) fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes charged to a tracker by one structure; given back when it drops.
#[derive(Debug)]
pub(crate) struct Charge {
    tracker: Arc<MemoryTracker>,
    bytes: AtomicU64,
}

impl Charge {
    pub(crate) fn new(tracker: &Arc<MemoryTracker>) -> Self {
        Charge {
            tracker: Arc::clone(tracker),
            bytes: AtomicU64::new(0),
        }
    }

    /// Records `bytes` already reserved on the tracker as held by this structure.
    pub(crate) fn add_reserved(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives back `bytes` of what it holds (a part it freed).
    pub(crate) fn give_back(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.tracker.release(bytes);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// The tracker it charges.
    pub(crate) fn tracker(&self) -> &Arc<MemoryTracker> {
        &self.tracker
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.tracker.release(self.bytes());
    }
}
