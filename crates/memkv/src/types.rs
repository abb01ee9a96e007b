//! The store's vocabulary: column families, ranges, write batches and errors.

pub use ime_types::{Cf, InvalidRange, KeyRange, RangeId};

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets a key.
    Put(Cf, Vec<u8>, Vec<u8>),
    /// Deletes a key.
    Delete(Cf, Vec<u8>),
    /// Deletes `[start, end)` in one column family.
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

/// One operation, borrowed: what [`crate::MemKv::write_ops`] takes, so that a caller
/// holding the bytes elsewhere (the engine's disk batch) writes without copying them into
/// a [`WriteBatch`] first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpRef<'a> {
    /// Sets a key.
    Put(Cf, &'a [u8], &'a [u8]),
    /// Deletes a key.
    Delete(Cf, &'a [u8]),
    /// Deletes `[start, end)` in one column family.
    DeleteRange(Cf, &'a [u8], &'a [u8]),
}

impl<'a> From<&'a ime_types::BatchOp> for OpRef<'a> {
    #[inline]
    fn from(op: &'a ime_types::BatchOp) -> Self {
        use ime_types::BatchOp;
        match op {
            BatchOp::Put { cf, key, value } => OpRef::Put(*cf, key, value),
            BatchOp::Delete { cf, key } => OpRef::Delete(*cf, key),
            BatchOp::DeleteRange { cf, start, end } => OpRef::DeleteRange(*cf, start, end),
        }
    }
}

impl Op {
    /// The same operation, borrowed.
    pub fn as_ref(&self) -> OpRef<'_> {
        match self {
            Op::Put(cf, k, v) => OpRef::Put(*cf, k, v),
            Op::Delete(cf, k) => OpRef::Delete(*cf, k),
            Op::DeleteRange(cf, s, e) => OpRef::DeleteRange(*cf, s, e),
        }
    }
}

/// Operations copied into one buffer, in order: what a caller keeps of batches it will
/// write later, with no allocation per operation (its bytes in one vector, where each
/// operation's end is, in another; both keep their room when cleared).
///
/// ```
/// use ime_memkv::{Cf, OpBuffer, OpRef};
///
/// let mut buffer = OpBuffer::default();
/// buffer.push(OpRef::Put(Cf::Write, b"k", b"v"));
/// buffer.push(OpRef::Delete(Cf::Lock, b"k"));
/// let ops: Vec<OpRef<'_>> = buffer.iter().collect();
/// assert_eq!(ops, [OpRef::Put(Cf::Write, b"k", b"v"), OpRef::Delete(Cf::Lock, b"k")]);
/// buffer.clear();
/// assert!(buffer.is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct OpBuffer {
    bytes: Vec<u8>,
    /// Each operation's kind, column family, and where its first and second part end in
    /// `bytes` (a put's key and value, a range's start and end; a delete has no second).
    ops: Vec<(OpKind, Cf, usize, usize)>,
}

#[derive(Clone, Copy, Debug)]
enum OpKind {
    Put,
    Delete,
    DeleteRange,
}

impl OpBuffer {
    /// Copies `op` in after the others.
    #[inline]
    pub fn push(&mut self, op: OpRef<'_>) {
        let (kind, cf, first, second) = match op {
            OpRef::Put(cf, key, value) => (OpKind::Put, cf, key, value),
            OpRef::Delete(cf, key) => (OpKind::Delete, cf, key, &[][..]),
            OpRef::DeleteRange(cf, start, end) => (OpKind::DeleteRange, cf, start, end),
        };
        self.bytes.extend_from_slice(first);
        let first_end = self.bytes.len();
        self.bytes.extend_from_slice(second);
        self.ops.push((kind, cf, first_end, self.bytes.len()));
    }

    /// The operations, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = OpRef<'_>> {
        let mut start = 0;
        self.ops.iter().map(move |&(kind, cf, first_end, end)| {
            let first = &self.bytes[start..first_end];
            let second = &self.bytes[first_end..end];
            start = end;
            match kind {
                OpKind::Put => OpRef::Put(cf, first, second),
                OpKind::Delete => OpRef::Delete(cf, first),
                OpKind::DeleteRange => OpRef::DeleteRange(cf, first, second),
            }
        })
    }

    /// The key ranges its operations touch: each key (as `[key, key\0)`), each range.
    pub fn touched(&self) -> impl Iterator<Item = KeyRange> + '_ {
        self.iter().filter_map(|op| match op {
            OpRef::Put(_, key, _) | OpRef::Delete(_, key) => {
                let mut after = key.to_vec();
                after.push(0); // the smallest key above `key`
                KeyRange::new(key.to_vec(), after).ok()
            }
            OpRef::DeleteRange(_, start, end) => KeyRange::new(start.to_vec(), end.to_vec()).ok(),
        })
    }

    /// How many operations it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The bytes of its keys and values.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
    }
}

/// Operations applied atomically with consecutive sequence numbers, one per operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Put(cf, key.into(), value.into()));
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete(cf, key.into()));
        self
    }

    /// Adds a range delete.
    pub fn delete_range(
        &mut self,
        cf: Cf,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(Op::DeleteRange(cf, start.into(), end.into()));
        self
    }

    /// The operations.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// How many sequence numbers the batch takes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Errors of the memory store. None leaves a write half-applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// Bounds whose end is not above their start.
    #[error(transparent)]
    InvalidBounds(#[from] ime_types::InvalidRange),
    /// A range with this id exists already.
    #[error("{0} exists already")]
    RangeExists(RangeId),
    /// A new range overlaps an existing one.
    #[error("{new} overlaps {existing}")]
    RangeOverlaps {
        /// The range being created.
        new: RangeId,
        /// The range it overlaps.
        existing: RangeId,
    },
    /// No range with this id.
    #[error("{0} does not exist")]
    NoSuchRange(RangeId),
    /// Iterator or load bounds outside the range.
    #[error("bounds outside {0}")]
    OutOfRange(RangeId),
    /// A batch's first sequence number is not above the last one applied (or read).
    #[error("sequence {first} is not above the last sequence {last}")]
    SequenceOutOfOrder {
        /// The batch's first sequence number.
        first: u64,
        /// The last one applied or snapshotted.
        last: u64,
    },
    /// A batch with no operation.
    #[error("empty write batch")]
    EmptyBatch,
    /// The write would pass the hard memory limit; nothing was applied.
    #[error("memory limit: {needed} more bytes would pass {limit} ({used} used)")]
    MemoryLimit {
        /// Bytes the write needs.
        needed: u64,
        /// Bytes in use.
        used: u64,
        /// The hard limit.
        limit: u64,
    },
    /// A snapshot below the range's last compaction (older versions may be gone) or its
    /// last load (the loaded entries are above it): it could not read the range right.
    #[error(
        "snapshot at {requested} is older than {range}'s last compaction or load at {compacted}"
    )]
    SnapshotTooOld {
        /// The range.
        range: RangeId,
        /// The sequence asked for.
        requested: u64,
        /// The last compaction's or load's sequence.
        compacted: u64,
    },
    /// A run whose keys or values would pass 4 GiB (a range that large is split first).
    #[error("a run of {keys} key bytes and {values} value bytes passes the 4 GiB limit")]
    RunTooLarge {
        /// Bytes of keys.
        keys: u64,
        /// Bytes of values.
        values: u64,
    },
    /// A split whose children do not partition the range.
    #[error("invalid split of {range}: {reason}")]
    InvalidSplit {
        /// The range being split.
        range: RangeId,
        /// What is wrong.
        reason: &'static str,
    },
    /// Loaded entries must be strictly increasing.
    #[error("load: keys not strictly increasing at position {0}")]
    UnsortedLoad(usize),
    /// A key of 256 MiB or more, or a value of 4 GiB or more: a memtable entry cannot
    /// hold it. Nothing of the batch was applied.
    #[error("an entry with a {key}-byte key and a {value}-byte value is too large for memory")]
    EntryTooLarge {
        /// The key's length.
        key: usize,
        /// The value's length.
        value: usize,
    },
    /// A memtable of the range has no room left for the batch (about 64 GiB of recent
    /// writes not yet compacted); nothing of the batch was applied.
    #[error("{0}'s memtable is full")]
    MemtableFull(RangeId),
    /// A range delete reaches a range whose load is under way ([`crate::MemKv::create_range`]):
    /// the store deletes the keys it holds, and the keys the load is about to bring would
    /// survive. Nothing of the batch was applied.
    #[error("a range delete reaches {0}, whose load is under way")]
    RangeDeleteWhileLoading(RangeId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = Op> {
        let cf = prop::sample::select(Cf::ALL.to_vec());
        let bytes = || prop::collection::vec(any::<u8>(), 0..8);
        prop_oneof![
            (cf.clone(), bytes(), bytes()).prop_map(|(cf, k, v)| Op::Put(cf, k, v)),
            (cf.clone(), bytes()).prop_map(|(cf, k)| Op::Delete(cf, k)),
            (cf, bytes(), bytes()).prop_map(|(cf, s, e)| Op::DeleteRange(cf, s, e)),
        ]
    }

    proptest! {
        /// A buffer gives back every operation pushed, in order, also once cleared and
        /// filled again.
        #[test]
        fn a_buffer_gives_back_what_was_pushed(
            first in prop::collection::vec(op(), 0..20),
            second in prop::collection::vec(op(), 0..20),
        ) {
            let mut buffer = OpBuffer::default();
            for ops in [&first, &second] {
                buffer.clear();
                for op in ops {
                    buffer.push(op.as_ref());
                }
                let back: Vec<OpRef<'_>> = buffer.iter().collect();
                let want: Vec<OpRef<'_>> = ops.iter().map(Op::as_ref).collect();
                prop_assert_eq!(back, want);
                prop_assert_eq!(buffer.len(), ops.len());
                prop_assert!(buffer.touched().count() <= ops.len()); // empty ranges left out
            }
        }
    }
}
