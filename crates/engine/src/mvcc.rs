//! MVCC reads over a [`HybridSnapshot`] in TiKV's formats: a point get and a forward scan
//! at the snapshot's read_ts, with lock checks, counting the versions they scan (the MVCC
//! amplification the eviction policy weighs).

use ime_disk::{Cf, DiskEngine, DiskIterator, KeyRange};
use ime_memkv::codec::{WriteRecord, encode_bytes};
use ime_memkv::mvcc::{
    KvPair, MvccError, first_blocking_lock, lock_blocks, newest_put, newest_put_in, value_key,
    versions_at_or_below, visible_pairs,
};

use crate::{EngineError, HybridSnapshot};
use ime_metrics::{ReadLatencies, ReadOp};

impl<D: DiskEngine> HybridSnapshot<D> {
    /// The value of `user_key` at the snapshot's read_ts: the newest committed put at or
    /// below it (its short value, or the default-CF value), `None` under a delete or when
    /// there is none.
    ///
    /// # Errors
    /// [`MvccError::KeyIsLocked`] (as [`EngineError::Mvcc`]), or a read failure.
    pub fn mvcc_get(&self, user_key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let started = ReadLatencies::start(ReadOp::Get);
        let encoded = encode_bytes(user_key); // the lock CF's key, and the versions' prefix
        self.check_lock(&encoded)?;
        let versions = versions_at_or_below(&encoded, self.read_ts())?;
        let (put, scanned) = match self.memory_for(&versions) {
            Some(snapshot) => newest_put_in(snapshot, versions)?, // no cursor to set up
            None => {
                let mut it = self.cursor(Cf::Write, versions)?;
                it.seek_to_first();
                let newest = newest_put(&mut it)?;
                it.status()?;
                newest
            }
        };
        self.note_work((scanned, 1), ReadOp::Get, started);
        put.map(|record| self.value_of(user_key, record))
            .transpose()
    }

    /// Up to `limit` visible `(user_key, value)` pairs with user keys in `[start, end)`
    /// (`end == None`: unbounded), in key order, at the snapshot's read_ts, within the
    /// region: bounds reaching past it (an open end included) are clamped to the region's
    /// range, whether memory or the disk serves the snapshot.
    ///
    /// # Errors
    /// [`MvccError::KeyIsLocked`] for the first lock in the range at or below read_ts,
    /// or a read failure.
    pub fn mvcc_scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, EngineError> {
        self.mvcc_scan_with(start, end, limit, true)
    }

    /// [`mvcc_scan`](Self::mvcc_scan) with the lock check optional: without it, the
    /// committed view at read_ts whatever locks are pending (what a reader that resolves
    /// locks itself, or a checker, wants).
    ///
    /// # Errors
    /// As `mvcc_scan`; no [`MvccError::KeyIsLocked`] when `check_locks` is false.
    pub fn mvcc_scan_with(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        check_locks: bool,
    ) -> Result<Vec<KvPair>, EngineError> {
        let started = ReadLatencies::start(ReadOp::Scan);
        let asked = KeyRange::with_end(encode_bytes(start), end.map(encode_bytes))?;
        // The reader asked for the region: bounds past it (an open end) are clamped to
        // it, so that memory serves the scan.
        let Some(bounds) = self.clamp(asked) else {
            return Ok(Vec::new());
        };
        let read_ts = self.read_ts();
        if check_locks {
            let mut locks = self.cursor(Cf::Lock, bounds.clone())?;
            locks.seek_to_first();
            if let Some(err) = first_blocking_lock(&mut locks, read_ts)? {
                return Err(err.into());
            }
            locks.status()?;
        }
        let mut it = self.cursor(Cf::Write, bounds)?;
        it.seek_to_first();
        let value_of = |key: &[u8], record| self.value_of(key, record);
        let (out, scanned) = visible_pairs(&mut it, read_ts, limit, value_of)?;
        it.status()?;
        self.note_work((scanned, out.len() as u64), ReadOp::Scan, started);
        Ok(out)
    }

    /// The lock on the key whose lock-CF form (its memcomparable encoding) is `key`.
    fn check_lock(&self, key: &[u8]) -> Result<(), EngineError> {
        match self.get(Cf::Lock, key)? {
            Some(value) => match lock_blocks(key, &value, self.read_ts())? {
                Some(err) => Err(err.into()),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn value_of(&self, user_key: &[u8], record: WriteRecord) -> Result<Vec<u8>, EngineError> {
        let missing = || MvccError::DefaultNotFound {
            key: user_key.to_vec(),
            start_ts: record.start_ts,
        };
        match value_key(user_key, &record) {
            Some(key) => Ok(self.get(Cf::Default, &key)?.ok_or_else(missing)?),
            None => record.short_value.ok_or_else(|| missing().into()),
        }
    }
}
