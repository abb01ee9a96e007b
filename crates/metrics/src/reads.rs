//! [`ReadCounters`]: one region's read statistics, for the eviction policy; [`WorkTally`]
//! and [`IterWork`]: the MVCC work of one snapshot's reads, whoever drives them;
//! [`Difference`]: what the cross-checker reports.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::ShardedCounts;

use ime_region::RegionId;
use ime_types::Cf;

/// One region's reads since they were last taken: snapshots, MVCC versions scanned, keys
/// returned. Readers add to them without a lock, each thread to a shard of its own (four,
/// a cache line each: readers of one region never share a line); the policy takes them
/// each round.
#[derive(Debug)]
pub struct ReadCounters {
    counts: ShardedCounts,
}

/// Shards of a region's counters: a line each, so 256 bytes a region that is read.
const REGION_SHARDS: usize = 4;
/// The counters' places in their shard.
const READS: usize = 0;
const SCANNED: usize = 1;
const RETURNED: usize = 2;

impl Default for ReadCounters {
    fn default() -> Self {
        ReadCounters {
            counts: ShardedCounts::new(REGION_SHARDS, 3),
        }
    }
}

impl ReadCounters {
    /// A snapshot of the region was taken.
    #[inline]
    pub fn read(&self) {
        self.counts.add(READS, 1);
    }

    /// MVCC reads scanned `scanned` versions and returned `returned` keys.
    #[inline]
    pub fn scanned(&self, scanned: u64, returned: u64) {
        self.counts.add(SCANNED, scanned);
        self.counts.add(RETURNED, returned);
    }

    /// The counts so far — reads, versions scanned, keys returned — reset to zero.
    pub fn take(&self) -> (u64, u64, u64) {
        let take = |i| self.counts.take(i);
        (take(READS), take(SCANNED), take(RETURNED))
    }
}

/// MVCC work: versions touched, and keys returned (TiKV's `total_keys` and
/// `processed_keys`). Their ratio is the read amplification the cache exists to cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MvccWork {
    /// Versions (raw entries) the reads stepped on.
    pub scanned: u64,
    /// Keys they returned.
    pub returned: u64,
}

/// One snapshot's MVCC work, whoever drives its reads: its reader reads the total, and the
/// engine adds it to its region's [`ReadCounters`] when the snapshot drops (one add a
/// snapshot, none while it is read).
#[derive(Debug, Default)]
pub struct WorkTally {
    scanned: AtomicU64,
    returned: AtomicU64,
    read: AtomicBool,
}

impl WorkTally {
    /// A read touched `scanned` versions and returned `returned` keys.
    pub fn add(&self, scanned: u64, returned: u64) {
        self.touch();
        self.scanned.fetch_add(scanned, Ordering::Relaxed);
        self.returned.fetch_add(returned, Ordering::Relaxed);
    }

    /// The snapshot was read (a raw get, say, which is no MVCC work).
    pub fn touch(&self) {
        if !self.read.load(Ordering::Relaxed) {
            self.read.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the snapshot was read at all.
    pub fn was_read(&self) -> bool {
        self.read.load(Ordering::Relaxed)
    }

    /// The work so far.
    pub fn total(&self) -> MvccWork {
        MvccWork {
            scanned: self.scanned.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
        }
    }
}

/// The MVCC work of a raw iterator an embedder drives itself, from the entries it stops
/// at: each is a version touched, and in the write column family each new user key
/// (the key less its 8-byte timestamp suffix, TiKV's layout) is a key returned; in the
/// other column families an entry is a key.
#[derive(Debug, Default)]
pub struct IterWork {
    write_cf: bool,
    scanned: u64,
    returned: u64,
    last_user_key: Option<Vec<u8>>,
}

impl IterWork {
    /// Work of an iterator over the write column family (`write_cf`) or another.
    pub fn new(write_cf: bool) -> Self {
        IterWork {
            write_cf,
            ..IterWork::default()
        }
    }

    /// The iterator stopped at `key`.
    pub fn saw(&mut self, key: &[u8]) {
        self.scanned += 1;
        if !self.write_cf {
            self.returned += 1;
            return;
        }
        let user_key = &key[..key.len().saturating_sub(8)];
        if self.last_user_key.as_deref() != Some(user_key) {
            self.returned += 1;
            self.last_user_key = Some(user_key.to_vec());
        }
    }

    /// The work so far.
    pub fn total(&self) -> MvccWork {
        MvccWork {
            scanned: self.scanned,
            returned: self.returned,
        }
    }
}

/// A difference the cross-checker found between a region's memory and the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The region.
    pub region: RegionId,
    /// The column family.
    pub cf: Cf,
    /// The key (raw, as stored).
    pub key: Vec<u8>,
    /// What memory holds.
    pub memory: Option<Vec<u8>>,
    /// What disk holds.
    pub disk: Option<Vec<u8>>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Vec<u8>>| v.as_ref().map(|v| v.escape_ascii().to_string());
        write!(
            f,
            "region {} {} key {}: memory {:?}, disk {:?}",
            self.region,
            self.cf.name(),
            self.key.escape_ascii(),
            show(&self.memory),
            show(&self.disk)
        )
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

    #[test]
    fn a_tally_adds_up_and_says_whether_it_was_read() {
        let tally = WorkTally::default();
        assert!(!tally.was_read());
        tally.add(7, 2);
        tally.add(3, 1);
        assert!(tally.was_read());
        assert_eq!(
            tally.total(),
            MvccWork {
                scanned: 10,
                returned: 3
            }
        );
        let touched = WorkTally::default();
        touched.touch();
        assert!(touched.was_read());
        assert_eq!(touched.total(), MvccWork::default());
    }

    #[test]
    fn readers_on_many_threads_add_to_one_region() {
        let region = ReadCounters::default();
        std::thread::scope(|s| {
            for _ in 0..5 {
                s.spawn(|| {
                    region.read();
                    region.scanned(4, 1);
                });
            }
        });
        assert_eq!(region.take(), (5, 20, 5));
        assert_eq!(region.take(), (0, 0, 0));
    }

    #[test]
    fn an_iterator_returns_a_key_per_user_key_in_the_write_cf() {
        let version = |user: &[u8], ts: u64| [user, &ts.to_be_bytes()].concat();
        let mut writes = IterWork::new(true);
        for key in [
            version(b"a", 9),
            version(b"a", 5),
            version(b"b", 7),
            version(b"a", 1),
        ] {
            writes.saw(&key);
        }
        // `a` again after `b` (a reverse step or a seek back) counts again.
        assert_eq!(
            writes.total(),
            MvccWork {
                scanned: 4,
                returned: 3
            }
        );
        let mut locks = IterWork::new(false);
        locks.saw(b"k1");
        locks.saw(b"k");
        assert_eq!(
            locks.total(),
            MvccWork {
                scanned: 2,
                returned: 2
            }
        );
    }
}
