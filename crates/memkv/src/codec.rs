//! TiKV-compatible encodings: memcomparable bytes, descending timestamps, varints, MVCC
//! keys, and write and lock records.
//!
//! ```text
//! memcomparable(key) := for each 8-byte group (the last zero-padded): group | 255 - pad
//!                       (a full last group is followed by an empty group: 0 x 8 | 247)
//! mvcc key           := memcomparable(user key) | !ts (u64 big-endian: newer sorts first)
//! write record       := type ('P' | 'D' | 'L' | 'R') | varint start_ts
//!                       ['v' len:u8 short value] ['R'] ['F' gc_fence:u64 BE]
//!                       ['l' last_change_ts:u64 BE | varint versions_to_last_change]
//!                       ['S' varint txn_source]
//! lock record        := see [`LockEntry`]
//! ```
//!
//! Checked against TiKV's `txn_types` (write.rs, lock.rs) and `tikv_util::codec`. As TiKV
//! does, a decoder stops at the first optional field it does not know (fields are written
//! in a fixed order, newer ones last); unlike TiKV it keeps those bytes
//! (`unknown_fields`), so a record written by a newer TiKV encodes back unchanged.

mod lock;

pub use lock::{LockEntry, LockRecord, LockType, SharedLocks};

/// Bytes per memcomparable group.
const GROUP: usize = 8;
/// The marker of a full group that is not the last.
const MARKER: u8 = 255;
/// Prefix of an inline short value.
pub const SHORT_VALUE_PREFIX: u8 = b'v';
/// The longest value stored inline in a write or lock record.
pub const SHORT_VALUE_MAX_LEN: usize = 255;

/// A malformed encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended inside an encoded item.
    #[error("truncated {what} at byte {at}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Offset where input ran out.
        at: usize,
    },
    /// A memcomparable group marker outside `247..=255`, or padding that is not zero.
    #[error("bad memcomparable group at byte {at}")]
    BadGroup {
        /// Offset of the group.
        at: usize,
    },
    /// A varint longer than ten bytes.
    #[error("varint overflows u64 at byte {at}")]
    VarintOverflow {
        /// Offset of the varint.
        at: usize,
    },
    /// An unknown record type or optional-field flag.
    #[error("unknown {what} flag {flag:#04x}")]
    UnknownFlag {
        /// Which flag.
        what: &'static str,
        /// The byte found.
        flag: u8,
    },
    /// A shared-lock record (several transactions' locks on one key) where a single lock
    /// was expected: decode it as a [`LockEntry`].
    #[error("a shared-lock record where a single lock was expected")]
    SharedLocks,
    /// A length that does not fit in memory (a negative or huge compact-bytes length).
    #[error("bad length of {what} at byte {at}")]
    BadLength {
        /// What was being decoded.
        what: &'static str,
        /// Offset of the length.
        at: usize,
    },
    /// A short value longer than [`SHORT_VALUE_MAX_LEN`].
    #[error("short value of {0} bytes exceeds {SHORT_VALUE_MAX_LEN}")]
    ShortValueTooLong(usize),
}

/// Encodes `key` memcomparably (order-preserving, self-delimiting).
pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    let mut chunks = key.chunks_exact(GROUP);
    for group in chunks.by_ref() {
        out.extend_from_slice(group);
        out.push(MARKER);
    }
    let rest = chunks.remainder();
    out.extend_from_slice(rest);
    out.resize(out.len() + GROUP - rest.len(), 0);
    out.push(MARKER - (GROUP - rest.len()) as u8);
    out
}

/// Decodes a memcomparable key from the start of `input`; returns it and the bytes used.
///
/// # Errors
/// [`CodecError::Truncated`] or [`CodecError::BadGroup`].
pub fn decode_bytes(input: &[u8]) -> Result<(Vec<u8>, usize), CodecError> {
    let mut out = Vec::with_capacity(input.len() / (GROUP + 1) * GROUP);
    let used = walk_groups(input, |real| out.extend_from_slice(real))?;
    Ok((out, used))
}

/// The memcomparable key at the start of `input`, checked: each group's real bytes go
/// to `emit`; returns the bytes the encoding takes.
fn walk_groups(input: &[u8], mut emit: impl FnMut(&[u8])) -> Result<usize, CodecError> {
    let mut at = 0;
    loop {
        let chunk = input.get(at..at + GROUP + 1).ok_or(CodecError::Truncated {
            what: "memcomparable group",
            at,
        })?;
        let marker = chunk[GROUP];
        let pad = usize::from(MARKER - marker);
        if pad > GROUP {
            return Err(CodecError::BadGroup { at });
        }
        let real = GROUP - pad;
        if chunk[real..GROUP].iter().any(|b| *b != 0) {
            return Err(CodecError::BadGroup { at });
        }
        emit(&chunk[..real]);
        at += GROUP + 1;
        if pad != 0 {
            return Ok(at);
        }
    }
}

/// An encoded MVCC key split without copying: the encoded user key (the prefix every
/// version of the key shares; equal prefixes, equal user keys) and the timestamp.
/// Accepts exactly what [`MvccKey::decode`] accepts.
///
/// # Errors
/// As [`MvccKey::decode`].
pub fn split_mvcc_key(input: &[u8]) -> Result<(&[u8], u64), CodecError> {
    let used = walk_groups(input, |_| {})?;
    mvcc_ts(input, used).map(|ts| (&input[..used], ts))
}

/// The timestamp suffix of an MVCC key whose user key takes `used` bytes.
fn mvcc_ts(input: &[u8], used: usize) -> Result<u64, CodecError> {
    let mut at = used;
    let ts = !read_u64(input, &mut at, "timestamp")?;
    if at != input.len() {
        return Err(CodecError::UnknownFlag {
            what: "trailing key",
            flag: input[at],
        });
    }
    Ok(ts)
}

/// Encodes `ts` so that larger timestamps sort first.
pub fn encode_ts_desc(ts: u64) -> [u8; 8] {
    (!ts).to_be_bytes()
}

/// Appends `value` as a LEB128 varint.
pub fn encode_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Decodes a varint at `input[*at..]`, advancing `at`.
///
/// # Errors
/// [`CodecError::Truncated`] or [`CodecError::VarintOverflow`].
pub fn decode_varint(input: &[u8], at: &mut usize) -> Result<u64, CodecError> {
    let start = *at;
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *input.get(*at).ok_or(CodecError::Truncated {
            what: "varint",
            at: start,
        })?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            if shift == 63 && byte > 1 {
                return Err(CodecError::VarintOverflow { at: start });
            }
            return Ok(value);
        }
    }
    Err(CodecError::VarintOverflow { at: start })
}

/// Appends `data` as TiKV's compact bytes: its length as a zigzag varint (`len << 1`), then
/// the bytes (how a lock record holds its primary and secondary keys).
pub fn encode_compact_bytes(out: &mut Vec<u8>, data: &[u8]) {
    encode_varint(out, (data.len() as u64) << 1);
    out.extend_from_slice(data);
}

/// Decodes compact bytes at `input[*at..]`, advancing `at`.
///
/// # Errors
/// [`CodecError::Truncated`], [`CodecError::VarintOverflow`], or [`CodecError::BadLength`]
/// for a negative length.
pub fn decode_compact_bytes(
    input: &[u8],
    at: &mut usize,
    what: &'static str,
) -> Result<Vec<u8>, CodecError> {
    let start = *at;
    let zigzag = decode_varint(input, at)?;
    if zigzag & 1 == 1 {
        return Err(CodecError::BadLength { what, at: start });
    }
    let bytes = usize::try_from(zigzag >> 1)
        .ok()
        .and_then(|len| input.get(*at..at.checked_add(len)?))
        .ok_or(CodecError::Truncated { what, at: *at })?;
    *at += bytes.len();
    Ok(bytes.to_vec())
}

fn read_u8(input: &[u8], at: &mut usize, what: &'static str) -> Result<u8, CodecError> {
    let byte = *input
        .get(*at)
        .ok_or(CodecError::Truncated { what, at: *at })?;
    *at += 1;
    Ok(byte)
}

fn read_u64(input: &[u8], at: &mut usize, what: &'static str) -> Result<u64, CodecError> {
    let bytes = input
        .get(*at..*at + 8)
        .ok_or(CodecError::Truncated { what, at: *at })?;
    *at += 8;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Ok(u64::from_be_bytes(word))
}

fn read_short_value<'a>(input: &'a [u8], at: &mut usize) -> Result<&'a [u8], CodecError> {
    let len = usize::from(read_u8(input, at, "short value length")?);
    let value = input.get(*at..*at + len).ok_or(CodecError::Truncated {
        what: "short value",
        at: *at,
    })?;
    *at += len;
    Ok(value)
}

fn push_short_value(out: &mut Vec<u8>, value: &[u8]) -> Result<(), CodecError> {
    let len = u8::try_from(value.len()).map_err(|_| CodecError::ShortValueTooLong(value.len()))?;
    out.push(SHORT_VALUE_PREFIX);
    out.push(len);
    out.extend_from_slice(value);
    Ok(())
}

/// An MVCC key: a user key and a timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MvccKey {
    /// The raw user key.
    pub user_key: Vec<u8>,
    /// The version's timestamp (start_ts in default, commit_ts in write).
    pub ts: u64,
}

impl MvccKey {
    /// The user key's encoded prefix: every version of it starts with these bytes.
    pub fn encode_user_key(user_key: &[u8]) -> Vec<u8> {
        encode_bytes(user_key)
    }

    /// The full encoded key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = encode_bytes(&self.user_key);
        out.extend_from_slice(&encode_ts_desc(self.ts));
        out
    }

    /// Decodes an encoded MVCC key.
    ///
    /// # Errors
    /// A malformed user key, or a missing or extra timestamp suffix.
    pub fn decode(input: &[u8]) -> Result<Self, CodecError> {
        let (user_key, used) = decode_bytes(input)?;
        let ts = mvcc_ts(input, used)?;
        Ok(MvccKey { user_key, ts })
    }
}

/// The kind of a write record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteType {
    /// A committed value.
    Put,
    /// A committed deletion.
    Delete,
    /// A committed lock-only write (no data change).
    Lock,
    /// A rollback marker.
    Rollback,
}

impl WriteType {
    fn flag(self) -> u8 {
        match self {
            WriteType::Put => b'P',
            WriteType::Delete => b'D',
            WriteType::Lock => b'L',
            WriteType::Rollback => b'R',
        }
    }

    fn from_flag(flag: u8) -> Result<Self, CodecError> {
        match flag {
            b'P' => Ok(WriteType::Put),
            b'D' => Ok(WriteType::Delete),
            b'L' => Ok(WriteType::Lock),
            b'R' => Ok(WriteType::Rollback),
            flag => Err(CodecError::UnknownFlag {
                what: "write type",
                flag,
            }),
        }
    }
}

/// A record of the write column family, keyed by (user key, commit_ts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct WriteRecord {
    /// Its kind.
    pub write_type: Option<WriteType>,
    /// The transaction's start_ts (the default CF's key for a long value).
    pub start_ts: u64,
    /// The value, when short enough to be inline.
    pub short_value: Option<Vec<u8>>,
    /// A rollback that shares this record's commit_ts.
    pub has_overlapped_rollback: bool,
    /// GC fence (TiKV's `gc_fence`).
    pub gc_fence: Option<u64>,
    /// `(last_change_ts, versions_to_last_change)`, TiKV's lock/rollback skipping hint.
    pub last_change: Option<(u64, u64)>,
    /// The transaction source (CDC).
    pub txn_source: Option<u64>,
    /// Trailing fields this decoder does not know, kept verbatim (empty when written here).
    pub unknown_fields: Vec<u8>,
}

const FLAG_OVERLAPPED_ROLLBACK: u8 = b'R';
const GC_FENCE_PREFIX: u8 = b'F';
const LAST_CHANGE_PREFIX: u8 = b'l';
const TXN_SOURCE_PREFIX: u8 = b'S';

impl WriteRecord {
    /// A record of `write_type` for the transaction started at `start_ts`.
    pub fn new(write_type: WriteType, start_ts: u64, short_value: Option<Vec<u8>>) -> Self {
        WriteRecord {
            write_type: Some(write_type),
            start_ts,
            short_value,
            ..WriteRecord::default()
        }
    }

    /// The kind (a decoded record always has one).
    pub fn kind(&self) -> WriteType {
        self.write_type.unwrap_or(WriteType::Put)
    }

    /// Encodes the record.
    ///
    /// # Errors
    /// [`CodecError::ShortValueTooLong`].
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![self.kind().flag()];
        encode_varint(&mut out, self.start_ts);
        if let Some(value) = &self.short_value {
            push_short_value(&mut out, value)?;
        }
        if self.has_overlapped_rollback {
            out.push(FLAG_OVERLAPPED_ROLLBACK);
        }
        if let Some(fence) = self.gc_fence {
            out.push(GC_FENCE_PREFIX);
            out.extend_from_slice(&fence.to_be_bytes());
        }
        if let Some((ts, versions)) = self.last_change {
            out.push(LAST_CHANGE_PREFIX);
            out.extend_from_slice(&ts.to_be_bytes());
            encode_varint(&mut out, versions);
        }
        if let Some(source) = self.txn_source {
            out.push(TXN_SOURCE_PREFIX);
            encode_varint(&mut out, source);
        }
        out.extend_from_slice(&self.unknown_fields);
        Ok(out)
    }

    /// Decodes a record.
    ///
    /// # Errors
    /// A malformed record: an unknown type or field, or truncation.
    pub fn decode(input: &[u8]) -> Result<Self, CodecError> {
        let mut record = WriteRecord::default();
        let (write_type, start_ts) = parse_record(input, |field| match field {
            Field::ShortValue(value) => record.short_value = Some(value.to_vec()),
            Field::OverlappedRollback => record.has_overlapped_rollback = true,
            Field::GcFence(fence) => record.gc_fence = Some(fence),
            Field::LastChange(ts, versions) => record.last_change = Some((ts, versions)),
            Field::TxnSource(source) => record.txn_source = Some(source),
            Field::Unknown(rest) => record.unknown_fields = rest.to_vec(),
        })?;
        record.write_type = Some(write_type);
        record.start_ts = start_ts;
        Ok(record)
    }

    /// A record's kind, its start_ts and whether it holds a short value, checked as
    /// [`WriteRecord::decode`] checks the record, without copying anything out of it.
    ///
    /// # Errors
    /// As [`WriteRecord::decode`].
    pub fn decode_head(input: &[u8]) -> Result<(WriteType, u64, bool), CodecError> {
        let mut short_value = false;
        let (write_type, start_ts) = parse_record(input, |field| {
            short_value |= matches!(field, Field::ShortValue(_));
        })?;
        Ok((write_type, start_ts, short_value))
    }
}

/// One optional field of a write record, borrowed from the input.
enum Field<'a> {
    ShortValue(&'a [u8]),
    OverlappedRollback,
    GcFence(u64),
    LastChange(u64, u64),
    TxnSource(u64),
    /// Fields this decoder does not know, from the first of them to the end.
    Unknown(&'a [u8]),
}

/// A write record's type and start_ts; each optional field goes to `field`, in order.
fn parse_record<'a>(
    input: &'a [u8],
    mut field: impl FnMut(Field<'a>),
) -> Result<(WriteType, u64), CodecError> {
    let mut at = 0;
    let write_type = WriteType::from_flag(read_u8(input, &mut at, "write type")?)?;
    let start_ts = decode_varint(input, &mut at)?;
    while at < input.len() {
        match read_u8(input, &mut at, "write field")? {
            SHORT_VALUE_PREFIX => field(Field::ShortValue(read_short_value(input, &mut at)?)),
            FLAG_OVERLAPPED_ROLLBACK => field(Field::OverlappedRollback),
            GC_FENCE_PREFIX => field(Field::GcFence(read_u64(input, &mut at, "gc fence")?)),
            LAST_CHANGE_PREFIX => {
                let ts = read_u64(input, &mut at, "last change")?;
                field(Field::LastChange(ts, decode_varint(input, &mut at)?));
            }
            TXN_SOURCE_PREFIX => field(Field::TxnSource(decode_varint(input, &mut at)?)),
            _ => {
                field(Field::Unknown(&input[at - 1..]));
                break;
            }
        }
    }
    Ok((write_type, start_ts))
}
