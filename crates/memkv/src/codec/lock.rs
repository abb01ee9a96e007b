//! TiKV's lock-CF records: single locks (prewrites, pessimistic locks, async-commit and
//! pipelined-DML locks) and shared locks.
//!
//! ```text
//! lock         := type ('P' | 'D' | 'L' | 'S') | compact primary | varint start_ts
//!                 [varint ttl]
//!                 ['v' len:u8 short value] ['f' for_update_ts:u64 BE]
//!                 ['t' txn_size:u64 BE] ['c' min_commit_ts:u64 BE]
//!                 ['a' varint n | n x compact secondary]   (async commit)
//!                 ['r' varint n | n x rollback_ts:u64 BE]
//!                 ['l' last_change_ts:u64 BE | varint versions_to_last_change]
//!                 ['s' varint txn_source] ['F' (locked with conflict)]
//!                 ['g' generation:u64 BE]                   (pipelined DML)
//! shared locks := 'H' ['i' flags:u8] ['h' varint n | n x compact lock]
//! compact x    := zigzag varint len(x) | x
//! ```
//!
//! A lock record's key is the memcomparable user key, without a timestamp.

use super::{
    CodecError, SHORT_VALUE_PREFIX, decode_compact_bytes, decode_varint, encode_bytes,
    encode_compact_bytes, encode_varint, push_short_value, read_short_value, read_u8, read_u64,
};

/// The kind of a single lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockType {
    /// A prewritten put.
    Put,
    /// A prewritten delete.
    Delete,
    /// A lock-only prewrite (`SELECT ... FOR UPDATE` committed as a Lock record).
    Lock,
    /// A pessimistic lock, not yet prewritten.
    Pessimistic,
}

const FLAG_PUT: u8 = b'P';
const FLAG_DELETE: u8 = b'D';
const FLAG_LOCK: u8 = b'L';
const FLAG_PESSIMISTIC: u8 = b'S';
const FLAG_SHARED: u8 = b'H';

const FOR_UPDATE_TS_PREFIX: u8 = b'f';
const TXN_SIZE_PREFIX: u8 = b't';
const MIN_COMMIT_TS_PREFIX: u8 = b'c';
const ASYNC_COMMIT_PREFIX: u8 = b'a';
const ROLLBACK_TS_PREFIX: u8 = b'r';
const LAST_CHANGE_PREFIX: u8 = b'l';
const TXN_SOURCE_PREFIX: u8 = b's';
const LOCKED_WITH_CONFLICT_PREFIX: u8 = b'F';
const GENERATION_PREFIX: u8 = b'g';
const SHARED_FLAGS_PREFIX: u8 = b'i';
const SHARED_TXNS_PREFIX: u8 = b'h';
/// The shared-lock flags TiKV defines (bit 0: shrink-only).
const SHARED_FLAGS_KNOWN: u8 = 0b0000_0001;

impl LockType {
    fn flag(self) -> u8 {
        match self {
            LockType::Put => FLAG_PUT,
            LockType::Delete => FLAG_DELETE,
            LockType::Lock => FLAG_LOCK,
            LockType::Pessimistic => FLAG_PESSIMISTIC,
        }
    }

    fn from_flag(flag: u8) -> Result<Self, CodecError> {
        match flag {
            FLAG_PUT => Ok(LockType::Put),
            FLAG_DELETE => Ok(LockType::Delete),
            FLAG_LOCK => Ok(LockType::Lock),
            FLAG_PESSIMISTIC => Ok(LockType::Pessimistic),
            FLAG_SHARED => Err(CodecError::SharedLocks),
            flag => Err(CodecError::UnknownFlag {
                what: "lock type",
                flag,
            }),
        }
    }
}

/// One transaction's lock on a key.
///
/// Optional fields are `None` (or empty) when absent from the encoding; TiKV writes each
/// only when it is set (a non-zero timestamp or size, a non-empty list).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockRecord {
    /// Its kind.
    pub lock_type: LockType,
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// The transaction's start_ts.
    pub start_ts: u64,
    /// Time to live, in milliseconds.
    pub ttl: u64,
    /// The value, when short enough to be inline.
    pub short_value: Option<Vec<u8>>,
    /// Pessimistic for_update_ts.
    pub for_update_ts: Option<u64>,
    /// The transaction's size (keys).
    pub txn_size: Option<u64>,
    /// The smallest commit_ts the transaction may take: a reader below it is not blocked.
    pub min_commit_ts: Option<u64>,
    /// Async commit: `Some` (the secondary keys, listed on the primary's lock only) when
    /// the transaction commits asynchronously.
    pub secondaries: Option<Vec<Vec<u8>>>,
    /// Timestamps of protected rollbacks that collided with this lock.
    pub rollback_ts: Vec<u64>,
    /// `(last_change_ts, versions_to_last_change)`, TiKV's hint to skip Lock records.
    pub last_change: Option<(u64, u64)>,
    /// The transaction source (CDC).
    pub txn_source: Option<u64>,
    /// A pessimistic lock taken with conflict (fair locking).
    pub locked_with_conflict: bool,
    /// Pipelined DML: the flush generation that wrote this lock.
    pub generation: Option<u64>,
    /// Trailing fields this decoder does not know, kept verbatim (empty when written here).
    pub unknown_fields: Vec<u8>,
}

impl LockRecord {
    /// A lock without optional fields.
    pub fn new(lock_type: LockType, primary: impl Into<Vec<u8>>, start_ts: u64, ttl: u64) -> Self {
        LockRecord {
            lock_type,
            primary: primary.into(),
            start_ts,
            ttl,
            short_value: None,
            for_update_ts: None,
            txn_size: None,
            min_commit_ts: None,
            secondaries: None,
            rollback_ts: Vec::new(),
            last_change: None,
            txn_source: None,
            locked_with_conflict: false,
            generation: None,
            unknown_fields: Vec::new(),
        }
    }

    /// Whether this lock blocks a snapshot-isolation read at `read_ts` of the key whose
    /// lock-CF key is `encoded_key`, by TiKV's rule: only a prewritten Put or Delete that
    /// started at or below `read_ts` blocks, and not when its `min_commit_ts` is above
    /// `read_ts` (it will commit above the reader), nor for a read at `u64::MAX` of the
    /// primary key of a transaction that does not commit asynchronously (such a reader
    /// asks for the latest committed version, and the primary decides the commit).
    pub fn blocks_read(&self, encoded_key: &[u8], read_ts: u64) -> bool {
        if self.start_ts > read_ts || !matches!(self.lock_type, LockType::Put | LockType::Delete) {
            return false;
        }
        if self.min_commit_ts.is_some_and(|min| min > read_ts) {
            return false;
        }
        !(read_ts == u64::MAX
            && self.secondaries.is_none()
            && encoded_key == encode_bytes(&self.primary).as_slice())
    }

    /// Encodes the record, fields in TiKV's order.
    ///
    /// # Errors
    /// [`CodecError::ShortValueTooLong`].
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![self.lock_type.flag()];
        encode_compact_bytes(&mut out, &self.primary);
        encode_varint(&mut out, self.start_ts);
        encode_varint(&mut out, self.ttl);
        if let Some(value) = &self.short_value {
            push_short_value(&mut out, value)?;
        }
        for (prefix, field) in [
            (FOR_UPDATE_TS_PREFIX, self.for_update_ts),
            (TXN_SIZE_PREFIX, self.txn_size),
            (MIN_COMMIT_TS_PREFIX, self.min_commit_ts),
        ] {
            if let Some(value) = field {
                out.push(prefix);
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
        if let Some(secondaries) = &self.secondaries {
            out.push(ASYNC_COMMIT_PREFIX);
            encode_varint(&mut out, secondaries.len() as u64);
            for key in secondaries {
                encode_compact_bytes(&mut out, key);
            }
        }
        if !self.rollback_ts.is_empty() {
            out.push(ROLLBACK_TS_PREFIX);
            encode_varint(&mut out, self.rollback_ts.len() as u64);
            for ts in &self.rollback_ts {
                out.extend_from_slice(&ts.to_be_bytes());
            }
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
        if self.locked_with_conflict {
            out.push(LOCKED_WITH_CONFLICT_PREFIX);
        }
        if let Some(generation) = self.generation {
            out.push(GENERATION_PREFIX);
            out.extend_from_slice(&generation.to_be_bytes());
        }
        out.extend_from_slice(&self.unknown_fields);
        Ok(out)
    }

    /// Decodes a single lock (as TiKV, a record that ends after its start_ts has a zero
    /// ttl).
    ///
    /// # Errors
    /// A malformed record: an unknown type, truncation, a bad length, or
    /// [`CodecError::SharedLocks`] for a shared-lock record.
    pub fn decode(input: &[u8]) -> Result<Self, CodecError> {
        let mut at = 0;
        let lock_type = LockType::from_flag(read_u8(input, &mut at, "lock type")?)?;
        let primary = decode_compact_bytes(input, &mut at, "primary key")?;
        let start_ts = decode_varint(input, &mut at)?;
        let ttl = if at == input.len() {
            0
        } else {
            decode_varint(input, &mut at)?
        };
        let mut record = LockRecord::new(lock_type, primary, start_ts, ttl);
        while at < input.len() {
            match read_u8(input, &mut at, "lock field")? {
                SHORT_VALUE_PREFIX => {
                    record.short_value = Some(read_short_value(input, &mut at)?.to_vec());
                }
                FOR_UPDATE_TS_PREFIX => {
                    record.for_update_ts = Some(read_u64(input, &mut at, "for_update_ts")?)
                }
                TXN_SIZE_PREFIX => record.txn_size = Some(read_u64(input, &mut at, "txn_size")?),
                MIN_COMMIT_TS_PREFIX => {
                    record.min_commit_ts = Some(read_u64(input, &mut at, "min_commit_ts")?)
                }
                ASYNC_COMMIT_PREFIX => {
                    let count = decode_varint(input, &mut at)?;
                    let mut keys = Vec::new();
                    for _ in 0..count {
                        keys.push(decode_compact_bytes(input, &mut at, "secondary key")?);
                    }
                    record.secondaries = Some(keys);
                }
                ROLLBACK_TS_PREFIX => {
                    let count = decode_varint(input, &mut at)?;
                    for _ in 0..count {
                        let ts = read_u64(input, &mut at, "rollback_ts")?;
                        record.rollback_ts.push(ts);
                    }
                }
                LAST_CHANGE_PREFIX => {
                    let ts = read_u64(input, &mut at, "last change")?;
                    record.last_change = Some((ts, decode_varint(input, &mut at)?));
                }
                TXN_SOURCE_PREFIX => record.txn_source = Some(decode_varint(input, &mut at)?),
                LOCKED_WITH_CONFLICT_PREFIX => record.locked_with_conflict = true,
                GENERATION_PREFIX => {
                    record.generation = Some(read_u64(input, &mut at, "generation")?)
                }
                _ => {
                    record.unknown_fields = input[at - 1..].to_vec();
                    break;
                }
            }
        }
        Ok(record)
    }
}

/// Several transactions' shared locks on one key (TiKV's `SharedLocks`). They never block
/// a snapshot read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SharedLocks {
    /// The flags byte, when written (bit 0: shrink-only, no new shared lock may join).
    pub flags: Option<u8>,
    /// Each transaction's lock, in the record's order.
    pub txns: Vec<LockRecord>,
    /// Trailing fields this decoder does not know, kept verbatim.
    pub unknown_fields: Vec<u8>,
}

impl SharedLocks {
    /// Encodes the record.
    ///
    /// # Errors
    /// [`CodecError::ShortValueTooLong`] from a transaction's lock.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![FLAG_SHARED];
        if let Some(flags) = self.flags {
            out.extend_from_slice(&[SHARED_FLAGS_PREFIX, flags]);
        }
        out.push(SHARED_TXNS_PREFIX);
        encode_varint(&mut out, self.txns.len() as u64);
        for lock in &self.txns {
            encode_compact_bytes(&mut out, &lock.encode()?);
        }
        out.extend_from_slice(&self.unknown_fields);
        Ok(out)
    }

    fn decode_fields(input: &[u8], mut at: usize) -> Result<Self, CodecError> {
        let mut shared = SharedLocks::default();
        while at < input.len() {
            match read_u8(input, &mut at, "shared lock field")? {
                SHARED_FLAGS_PREFIX => {
                    let flags = read_u8(input, &mut at, "shared lock flags")?;
                    if flags & !SHARED_FLAGS_KNOWN != 0 {
                        return Err(CodecError::UnknownFlag {
                            what: "shared lock flags",
                            flag: flags,
                        });
                    }
                    shared.flags = Some(flags);
                }
                SHARED_TXNS_PREFIX => {
                    let count = decode_varint(input, &mut at)?;
                    for _ in 0..count {
                        let bytes = decode_compact_bytes(input, &mut at, "shared lock")?;
                        shared.txns.push(LockRecord::decode(&bytes)?);
                    }
                }
                _ => {
                    shared.unknown_fields = input[at - 1..].to_vec();
                    break;
                }
            }
        }
        Ok(shared)
    }
}

/// A lock-CF value: one transaction's lock, or a key's shared locks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LockEntry {
    /// One transaction's lock.
    Single(LockRecord),
    /// Several transactions' shared locks.
    Shared(SharedLocks),
}

impl LockEntry {
    /// Decodes a lock-CF value.
    ///
    /// # Errors
    /// A malformed record: an unknown type or shared-lock flag, truncation, a bad length.
    pub fn decode(input: &[u8]) -> Result<Self, CodecError> {
        match input.first() {
            Some(&FLAG_SHARED) => Ok(LockEntry::Shared(SharedLocks::decode_fields(input, 1)?)),
            _ => Ok(LockEntry::Single(LockRecord::decode(input)?)),
        }
    }

    /// Encodes the value.
    ///
    /// # Errors
    /// [`CodecError::ShortValueTooLong`].
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        match self {
            LockEntry::Single(lock) => lock.encode(),
            LockEntry::Shared(shared) => shared.encode(),
        }
    }

    /// The lock that blocks a snapshot read at `read_ts` of the key whose lock-CF key is
    /// `encoded_key`, if any ([`LockRecord::blocks_read`]; shared locks never block).
    pub fn blocking(&self, encoded_key: &[u8], read_ts: u64) -> Option<&LockRecord> {
        match self {
            LockEntry::Single(lock) if lock.blocks_read(encoded_key, read_ts) => Some(lock),
            LockEntry::Single(_) | LockEntry::Shared(_) => None,
        }
    }
}
