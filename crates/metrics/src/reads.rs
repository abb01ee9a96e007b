//! [`ReadCounters`]: one region's read statistics, for the eviction policy.

use std::sync::atomic::{AtomicU64, Ordering};

/// One region's reads since they were last taken: snapshots, MVCC versions scanned, keys
/// returned. Readers add to them without a lock; the policy takes them each round.
#[derive(Debug, Default)]
pub struct ReadCounters {
    reads: AtomicU64,
    scanned: AtomicU64,
    returned: AtomicU64,
}

impl ReadCounters {
    /// A snapshot of the region was taken.
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// An MVCC read scanned `scanned` versions and returned `returned` keys.
    pub fn scanned(&self, scanned: u64, returned: u64) {
        self.scanned.fetch_add(scanned, Ordering::Relaxed);
        self.returned.fetch_add(returned, Ordering::Relaxed);
    }

    /// The counts so far — reads, versions scanned, keys returned — reset to zero.
    pub fn take(&self) -> (u64, u64, u64) {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        (take(&self.reads), take(&self.scanned), take(&self.returned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_taking_them_resets_them() {
        let counters = ReadCounters::default();
        counters.read();
        counters.read();
        counters.scanned(10, 3);
        assert_eq!(counters.take(), (2, 10, 3));
        assert_eq!(counters.take(), (0, 0, 0));
    }
}
