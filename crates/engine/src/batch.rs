//! [`HybridWriteBatch`]: one apply round's writes, in segments tagged with the region they
//! belong to, its epoch and the Raft entries they apply.

use ime_disk::{Cf, WriteBatch};
use ime_region::ApplyHeader;
use smallvec::SmallVec;

/// The writes of one apply round, as the apply side hands them to the engine.
///
/// Every applied index is reported, data or not: a segment may carry no operation (an
/// admin entry, an empty entry), and the engine still learns that the region's applied
/// index moved — so that a jump past entries it never saw is detected. A segment that
/// was prepared and never written to (tikv/tikv#17700) is just such a report.
///
/// ```
/// use ime_engine::{ApplyHeader, HybridWriteBatch};
/// use ime_disk::Cf;
/// use ime_region::{RegionEpoch, RegionId};
///
/// let mut batch = HybridWriteBatch::new();
/// let header = ApplyHeader { region: RegionId(1), epoch: RegionEpoch::new(1, 1), first_index: 6, last_index: 6 };
/// batch.prepare(header).put(Cf::Default, "k", "v").delete(Cf::Lock, "k");
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HybridWriteBatch {
    /// Each segment's header and how many of `ops` it holds, in order (a batch of one
    /// region's entries holds its one header without allocating).
    pub(crate) segments: SmallVec<[(ApplyHeader, usize); 1]>,
    /// Every segment's operations, in order: the batch the disk writes as it is.
    pub(crate) ops: WriteBatch,
}

impl HybridWriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the segment of one region's applied entries; the operations added next
    /// belong to it.
    pub fn prepare(&mut self, header: ApplyHeader) -> &mut Self {
        self.segments.push((header, 0));
        self
    }

    /// Adds a put to the current segment. (An operation before any `prepare` makes the
    /// batch invalid: the engine refuses it with [`crate::EngineError::InvalidBatch`].)
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.put(cf, key, value);
        self.counted()
    }

    /// Adds a delete to the current segment.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.delete(cf, key);
        self.counted()
    }

    /// Adds a range delete `[start, end)` to the current segment.
    pub fn delete_range(
        &mut self,
        cf: Cf,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.delete_range(cf, start, end);
        self.counted()
    }

    /// Operations in all segments.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when no segment carries an operation (it may still report applied indexes).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments' headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = &ApplyHeader> {
        self.segments.iter().map(|(header, _)| header)
    }

    /// Counts the operation just added in the current segment.
    fn counted(&mut self) -> &mut Self {
        if self.segments.is_empty() {
            // An operation without a region: kept so that `write` can refuse the batch.
            self.segments.push((UNTAGGED, 0));
        }
        if let Some((_, ops)) = self.segments.last_mut() {
            *ops += 1;
        }
        self
    }
}

/// The header of operations added before any `prepare`.
pub(crate) const UNTAGGED: ApplyHeader = ApplyHeader::NONE;
