//! [`Records`]: RocksDB's write batch format, written here.
//!
//! A RocksDB write batch is one string: a 12-byte header (a sequence number the write
//! fills in, then the count of records, both little-endian), then one record per
//! operation. A record is a prefix naming its kind of operation and its column family
//! (a type byte, followed by the family's id as a varint unless it is the default
//! family), then its key and, for a put, its value, or for a range deletion its end, each
//! as a varint length and the bytes. The format is RocksDB's write-ahead log record, so
//! it does not change between RocksDB's versions; even so, nothing of it but the header
//! is written from memory here: the prefixes are read off batches RocksDB encoded itself
//! for each family when the disk opens, and a test holds what this module encodes to be
//! byte for byte what RocksDB's own `put`, `delete` and `delete_range` encode.

use rocksdb::ColumnFamily;

use crate::{BatchOp, DiskError, WriteBatch};

/// The header: the sequence number (8 bytes) and the count of records (4 bytes).
const HEADER: usize = 12;

/// The longest prefix: a type byte and a 32-bit varint.
const PREFIX_MAX: usize = 6;

/// The bytes a record of one kind of operation on one column family begins with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Prefix {
    bytes: [u8; PREFIX_MAX],
    len: u8,
}

impl Prefix {
    /// The prefix of the one record of `rocks` (a batch of one operation whose strings
    /// are all empty, `strings` of them): what lies between the header and the strings'
    /// zero lengths.
    fn of_probe(rocks: &rocksdb::WriteBatch, strings: usize) -> Option<Prefix> {
        let data = rocks.data();
        let header = data.get(..HEADER)?;
        let record = data.get(HEADER..)?;
        let split = record.len().checked_sub(strings)?;
        let (prefix, lengths) = record.split_at(split);
        let one_record = header[..8] == [0; 8] && header[8..] == 1u32.to_le_bytes();
        let sound = one_record && lengths.iter().all(|&b| b == 0);
        if !sound || prefix.is_empty() || prefix.len() > PREFIX_MAX {
            return None;
        }
        let mut bytes = [0; PREFIX_MAX];
        bytes[..prefix.len()].copy_from_slice(prefix);
        Some(Prefix {
            bytes,
            len: u8::try_from(prefix.len()).ok()?,
        })
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// How RocksDB encodes each kind of operation (put, delete, range delete) on each of the
/// three column families (in [`crate::Cf::ALL`]'s order), learnt from RocksDB itself.
#[derive(Clone, Debug)]
pub(crate) struct Records {
    prefixes: [[Prefix; 3]; 3],
}

impl Records {
    /// Reads the prefixes off batches RocksDB encodes for the three families' handles.
    ///
    /// # Errors
    /// [`DiskError::Rocks`] if a batch RocksDB encoded does not read as the format above.
    pub(crate) fn learn(handles: [&ColumnFamily; 3]) -> Result<Records, DiskError> {
        let learn_one = |handle: &ColumnFamily| {
            let (mut put, mut delete, mut range) = Default::default();
            rocksdb::WriteBatch::put_cf(&mut put, handle, b"", b"");
            rocksdb::WriteBatch::delete_cf(&mut delete, handle, b"");
            rocksdb::WriteBatch::delete_range_cf(&mut range, handle, b"", b"");
            Some([
                Prefix::of_probe(&put, 2)?,
                Prefix::of_probe(&delete, 1)?,
                Prefix::of_probe(&range, 2)?,
            ])
        };
        let unknown = || DiskError::Rocks {
            operation: "write batch format",
            detail: "a batch RocksDB encoded does not read as a header and one record".into(),
        };
        let [default, lock, write] = handles.map(learn_one);
        Ok(Records {
            prefixes: [
                default.ok_or_else(unknown)?,
                lock.ok_or_else(unknown)?,
                write.ok_or_else(unknown)?,
            ],
        })
    }

    /// `batch` in RocksDB's format, sequence number zero (the write sets it).
    ///
    /// # Errors
    /// [`DiskError::TooLarge`] for a key or value of 4 GiB or more, or more than
    /// `u32::MAX` operations (what RocksDB's format cannot hold).
    pub(crate) fn encode(&self, batch: &WriteBatch) -> Result<Vec<u8>, DiskError> {
        let count = u32::try_from(batch.len()).map_err(|_| DiskError::TooLarge {
            what: "operations in a batch",
            len: batch.len(),
        })?;
        let mut rep = Vec::with_capacity(encoded_bytes(batch));
        rep.extend_from_slice(&[0; 8]);
        rep.extend_from_slice(&count.to_le_bytes());
        for op in batch.ops() {
            let (cf, kind, first, second) = match op {
                BatchOp::Put { cf, key, value } => (cf, 0, key, Some(value)),
                BatchOp::Delete { cf, key } => (cf, 1, key, None),
                BatchOp::DeleteRange { cf, start, end } => (cf, 2, start, Some(end)),
            };
            rep.extend_from_slice(self.prefixes[cf.index()][kind].as_slice());
            put_string(&mut rep, first, "key")?;
            if let Some(second) = second {
                put_string(&mut rep, second, "value")?;
            }
        }
        Ok(rep)
    }
}

/// Appends `bytes` as a varint32 length and the bytes.
fn put_string(rep: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), DiskError> {
    let mut len = u32::try_from(bytes.len()).map_err(|_| DiskError::TooLarge {
        what,
        len: bytes.len(),
    })?;
    while len >= 0x80 {
        rep.push((len & 0x7f) as u8 | 0x80); // the low seven bits, and "more follows"
        len >>= 7;
    }
    rep.push(len as u8);
    rep.extend_from_slice(bytes);
    Ok(())
}

/// The bytes `batch` takes in RocksDB's format, at most: the header, and per operation a
/// prefix and two lengths (each varint at most 5 bytes) around its two parts.
pub(crate) fn encoded_bytes(batch: &WriteBatch) -> usize {
    let part = |op: &BatchOp| match op {
        BatchOp::Put { key, value, .. } => key.len() + value.len(),
        BatchOp::Delete { key, .. } => key.len(),
        BatchOp::DeleteRange { start, end, .. } => start.len() + end.len(),
    };
    HEADER
        + batch
            .ops()
            .iter()
            .map(|op| PREFIX_MAX + 10 + part(op))
            .sum::<usize>()
}
