//! The vocabulary of the disk trait: column families, write batches, sequence ranges,
//! iterator bounds and errors.

pub use ime_types::{BatchOp, Cf, KeyRange};

/// Operations applied atomically; each takes the next sequence number, in order, as
/// RocksDB assigns them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a point delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete {
            cf,
            key: key.into(),
        });
        self
    }

    /// Adds a range delete of `[start, end)`.
    pub fn delete_range(
        &mut self,
        cf: Cf,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(BatchOp::DeleteRange {
            cf,
            start: start.into(),
            end: end.into(),
        });
        self
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// How many operations (and so sequence numbers) the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The keys each operation touches, as ranges: a put's or a delete's one key, a range
    /// delete's range (an empty one touches nothing).
    pub fn touched(&self) -> impl Iterator<Item = KeyRange> + '_ {
        self.ops.iter().filter_map(|op| match op {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => {
                let mut after = key.clone();
                after.push(0); // the smallest key above `key`
                KeyRange::new(key.clone(), after).ok()
            }
            BatchOp::DeleteRange { start, end, .. } => {
                KeyRange::new(start.clone(), end.clone()).ok()
            }
        })
    }

    /// Whether every key it puts or deletes lies in one of `ranges` (false for a batch
    /// with a range delete).
    #[inline]
    pub fn within(&self, ranges: &[&KeyRange]) -> bool {
        self.ops.iter().all(|op| match op {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => {
                ranges.iter().any(|r| r.contains_key(key))
            }
            BatchOp::DeleteRange { .. } => false,
        })
    }

    /// Whether it deletes a range.
    #[inline]
    pub fn has_range_delete(&self) -> bool {
        (self.ops.iter()).any(|op| matches!(op, BatchOp::DeleteRange { .. }))
    }

    /// Checks what every engine refuses: an empty batch, an empty range.
    ///
    /// # Errors
    /// [`DiskError::EmptyBatch`], [`DiskError::InvalidRange`].
    pub fn validate(&self) -> Result<(), DiskError> {
        if self.ops.is_empty() {
            return Err(DiskError::EmptyBatch);
        }
        for op in &self.ops {
            if let BatchOp::DeleteRange { start, end, .. } = op {
                KeyRange::with_end(start.clone(), Some(end.clone()))?;
            }
        }
        Ok(())
    }
}

/// The sequence numbers a written batch received: `first..=last`, one per operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqRange {
    /// The first operation's sequence number.
    pub first: u64,
    /// The last operation's sequence number.
    pub last: u64,
}

/// Errors of the disk layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// A batch with no operation (it would take no sequence number).
    #[error("empty write batch")]
    EmptyBatch,
    /// A range whose end is not above its start.
    #[error(transparent)]
    InvalidRange(#[from] ime_types::InvalidRange),
    /// Ingested entries must be sorted by key without duplicates (as an SST is).
    #[error("ingest: keys are not strictly increasing at position {position}")]
    UnsortedIngest {
        /// Index of the first out-of-order key.
        position: usize,
    },
    /// A key, value or batch longer than RocksDB's write batch format can hold (a
    /// string of 4 GiB or more, more than `u32::MAX` operations).
    #[error("{what} too large for a RocksDB write batch: {len}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// RocksDB refused an operation.
    #[error("rocksdb {operation}: {detail}")]
    Rocks {
        /// What was being done.
        operation: &'static str,
        /// RocksDB's message.
        detail: String,
    },
    /// The file system refused (temporary directories, SST files).
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Checks that ingested entries are strictly increasing by key.
pub(crate) fn check_sorted(entries: &[crate::Entry]) -> Result<(), DiskError> {
    match entries.windows(2).position(|pair| pair[0].0 >= pair[1].0) {
        Some(i) => Err(DiskError::UnsortedIngest { position: i + 1 }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_within_ranges_when_each_key_is_in_one() {
        let (ab, cd) = (
            KeyRange::new("a", "b").unwrap(),
            KeyRange::new("c", "d").unwrap(),
        );
        let mut batch = WriteBatch::new();
        batch.put(Cf::Default, "a1", "v").delete(Cf::Lock, "c");
        assert!(batch.within(&[&ab, &cd]));
        assert!(!batch.within(&[&ab]), "c is in neither");
        assert!(!batch.within(&[]));
        batch.delete_range(Cf::Write, "a1", "a2");
        assert!(!batch.within(&[&ab, &cd]), "a range delete is never within");
        assert!(batch.has_range_delete());
    }

    #[test]
    fn a_batch_touches_each_key_and_each_non_empty_range() {
        let mut batch = WriteBatch::new();
        batch
            .put(Cf::Default, "k", "v")
            .delete(Cf::Lock, "a")
            .delete_range(Cf::Write, "c", "f")
            .delete_range(Cf::Write, "f", "c");
        let touched: Vec<KeyRange> = batch.touched().collect();
        assert_eq!(touched.len(), 3, "{touched:?}");
        assert!(touched[0].contains_key(b"k") && !touched[0].contains_key(b"k\0"));
        assert!(touched[1].contains_key(b"a") && !touched[1].contains_key(b"b"));
        assert_eq!(touched[2], KeyRange::new("c", "f").expect("a range"));
    }
}
