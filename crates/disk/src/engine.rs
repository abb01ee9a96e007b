//! The narrow disk-engine trait: what the cache needs of the source of truth, and no more.

use crate::{Cf, DiskError, KeyRange, SeqRange, WriteBatch};

/// The disk engine the cache loads from and falls back to.
///
/// # Contract
/// - [`write`](DiskEngine::write) applies a batch atomically; its operations take the
///   next sequence numbers in order, one each, and the range is returned. Writes are
///   serialized: a batch's range starts right after the previous batch's.
/// - A [`snapshot`](DiskEngine::snapshot) at sequence `S` sees exactly the operations with
///   sequence `<= S`, whatever is written, deleted or ingested afterwards.
/// - [`ingest`](DiskEngine::ingest) adds entries without the write path (as an SST
///   ingest does): snapshots taken before it do not see them, snapshots after do. It may
///   or may not take a sequence number (RocksDB gives a file that overlaps nothing, while
///   no snapshot is open, sequence 0); later writes still take later numbers and win.
pub trait DiskEngine: Send + Sync + 'static {
    /// A point-in-time view; owns what it needs (it outlives any borrow of the engine).
    type Snapshot: DiskSnapshot + 'static;

    /// Applies `batch` atomically and returns the sequence numbers it took.
    ///
    /// # Errors
    /// [`DiskError::EmptyBatch`], [`DiskError::InvalidRange`], or the engine's failure.
    fn write(&self, batch: &WriteBatch) -> Result<SeqRange, DiskError>;

    /// Applies `batch` atomically without reporting its sequence numbers, so that writers
    /// on several threads need not be serialized (RocksDB then commits them together).
    /// While one runs, the numbers a concurrent [`DiskEngine::write`] reports may include
    /// its operations.
    ///
    /// # Errors
    /// As [`DiskEngine::write`].
    fn apply(&self, batch: &WriteBatch) -> Result<(), DiskError> {
        self.write(batch).map(|_| ())
    }

    /// A snapshot at the latest sequence number.
    fn snapshot(&self) -> Self::Snapshot;

    /// The sequence number of the last operation written (or ingested).
    fn latest_sequence(&self) -> u64;

    /// A count that moves up with every change of the data — each write, apply and
    /// ingest, failed ones too — by the time the change is visible to a new snapshot:
    /// while it stays the same, a snapshot taken earlier holds what a new one would.
    /// The default is [`DiskEngine::latest_sequence`], right for an engine whose every
    /// change takes a sequence number.
    fn changes(&self) -> u64 {
        self.latest_sequence()
    }

    /// Adds `entries` (sorted by key, no duplicates) to `cf` without the write path.
    ///
    /// # Errors
    /// [`DiskError::UnsortedIngest`], or the engine's failure.
    fn ingest(&self, cf: Cf, entries: &[Entry]) -> Result<(), DiskError>;

    /// A short name for reports ("rocksdb", "memory").
    fn name(&self) -> &'static str;
}

/// A consistent view of the disk at one sequence number.
pub trait DiskSnapshot: Send + Sync {
    /// The sequence number it sees up to, inclusive.
    fn sequence(&self) -> u64;

    /// The value of `key` in `cf`, if any.
    ///
    /// # Errors
    /// The engine's failure.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError>;

    /// An iterator over `cf` within `bounds`, not positioned yet.
    ///
    /// # Errors
    /// The engine's failure.
    fn iter(&self, cf: Cf, bounds: KeyRange) -> Result<Box<dyn DiskIterator + '_>, DiskError>;
}

/// A positioned cursor over one column family of a snapshot, within bounds.
///
/// Positioning calls never leave the bounds: a seek below the lower bound lands on the
/// first key in bounds, a seek-for-prev at or above the upper bound on the last.
pub trait DiskIterator {
    /// To the first key in bounds.
    fn seek_to_first(&mut self);
    /// To the last key in bounds.
    fn seek_to_last(&mut self);
    /// To the first key `>= key`.
    fn seek(&mut self, key: &[u8]);
    /// To the last key `<= key`.
    fn seek_for_prev(&mut self, key: &[u8]);
    /// One key forward (no-op when not valid).
    fn next(&mut self);
    /// One key back (no-op when not valid).
    fn prev(&mut self);
    /// The current entry, `None` when the iterator is not on one.
    fn entry(&self) -> Option<(&[u8], &[u8])>;
    /// Any error the iteration met.
    ///
    /// # Errors
    /// The engine's failure.
    fn status(&self) -> Result<(), DiskError>;
}

/// Read access to a disk engine: snapshots and the latest sequence number, never a write
/// (an owner that must see every change — IME's engine — hands this out instead of the
/// engine itself).
pub struct DiskReader<'e, D: DiskEngine>(&'e D);

impl<'e, D: DiskEngine> DiskReader<'e, D> {
    /// Read access to `disk`.
    pub fn new(disk: &'e D) -> Self {
        DiskReader(disk)
    }

    /// A snapshot at the latest sequence number.
    pub fn snapshot(&self) -> D::Snapshot {
        self.0.snapshot()
    }

    /// The sequence number of the last operation written (or ingested).
    pub fn latest_sequence(&self) -> u64 {
        self.0.latest_sequence()
    }

    /// The disk engine's short name ("rocksdb", "memory").
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Reads every entry in bounds, in key order (for tests and cross-checks).
///
/// # Errors
/// The engine's failure.
pub fn collect<S: DiskSnapshot + ?Sized>(
    snapshot: &S,
    cf: Cf,
    bounds: KeyRange,
) -> Result<Vec<Entry>, DiskError> {
    let mut out = Vec::new();
    for_each(snapshot, cf, bounds, |key, value| {
        out.push((key.to_vec(), value.to_vec()));
        Ok::<(), DiskError>(())
    })?;
    Ok(out)
}

/// Hands `f` every entry in bounds, in key order, borrowed from the iterator (a load
/// copies each straight into memory, with no copy of its own); stops at `f`'s first
/// error.
///
/// # Errors
/// The engine's failure, or `f`'s.
pub fn for_each<S: DiskSnapshot + ?Sized, E: From<DiskError>>(
    snapshot: &S,
    cf: Cf,
    bounds: KeyRange,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut iter = snapshot.iter(cf, bounds)?;
    iter.seek_to_first();
    while let Some((key, value)) = iter.entry() {
        f(key, value)?;
        iter.next();
    }
    iter.status()?;
    Ok(())
}

/// The entries, and the bytes of their keys and values, in `range` across every column
/// family: what a copy of the range would hold.
///
/// # Errors
/// The engine's failure.
pub fn range_size<S: DiskSnapshot + ?Sized>(
    snapshot: &S,
    range: &KeyRange,
) -> Result<(u64, u64), DiskError> {
    let (mut entries, mut bytes) = (0u64, 0u64);
    for cf in Cf::ALL {
        let mut iter = snapshot.iter(cf, range.clone())?;
        iter.seek_to_first();
        while let Some((key, value)) = iter.entry() {
            entries += 1;
            bytes += (key.len() + value.len()) as u64;
            iter.next();
        }
        iter.status()?;
    }
    Ok((entries, bytes))
}
