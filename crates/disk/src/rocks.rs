//! [`RocksDisk`]: the RocksDB implementation, with TiKV's three column families.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBRawIteratorWithThreadMode, IngestExternalFileOptions, Options, ReadOptions,
    SnapshotWithThreadMode, SstFileWriter, WriteOptions,
};

use crate::records::Records;
use crate::types::check_sorted;
use crate::{
    Cf, DiskEngine, DiskError, DiskIterator, DiskSnapshot, KeyRange, SeqRange, WriteBatch,
};

/// RocksDB settings that matter for a cache benchmark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocksConfig {
    /// Size of the shared block cache.
    pub block_cache_bytes: usize,
    /// Size of each column family's memtable.
    pub write_buffer_bytes: usize,
    /// Sync the WAL on every write (off: WAL written, not synced).
    pub sync_writes: bool,
}

impl RocksConfig {
    /// The options [`RocksDisk::open`] opens its database with: the database's, and each
    /// column family's (a shared LRU block cache of [`RocksConfig::block_cache_bytes`],
    /// bloom filters of 10 bits a key, memtables of [`RocksConfig::write_buffer_bytes`]).
    /// A baseline opened beside the engine with these is the same RocksDB, nothing of
    /// IME's in front (the benchmarks' bare writers).
    pub fn options(&self) -> (Options, Options) {
        let cache = Cache::new_lru_cache(self.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let mut cf_options = Options::default();
        cf_options.set_block_based_table_factory(&table);
        cf_options.set_write_buffer_size(self.write_buffer_bytes);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        (options, cf_options)
    }
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            sync_writes: false,
        }
    }
}

/// The names of the column families that hold TiKV's three (`default`, `lock` and
/// `write` in a TiKV store; another store may name them otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CfNames {
    /// Values too long to be inline in a write record.
    pub default: String,
    /// Locks.
    pub lock: String,
    /// Write records (commits, rollbacks).
    pub write: String,
}

impl Default for CfNames {
    fn default() -> Self {
        CfNames {
            default: Cf::Default.name().to_string(),
            lock: Cf::Lock.name().to_string(),
            write: Cf::Write.name().to_string(),
        }
    }
}

impl CfNames {
    fn name(&self, cf: Cf) -> &str {
        match cf {
            Cf::Default => &self.default,
            Cf::Lock => &self.lock,
            Cf::Write => &self.write,
        }
    }
}

/// The database and its column families' names, shared by the disk and its snapshots.
struct Db {
    db: Arc<DB>,
    names: CfNames,
}

impl Db {
    /// Moves a database that never took a sequence number (fresh, or holding only
    /// ingested files) to sequence 1, with a write no read can see: the lock family's
    /// empty key rewritten as it is (put back if present, deleted if absent).
    ///
    /// RocksDB's compaction reads a previous snapshot at sequence 0 as "no previous
    /// snapshot" when it drops a delete at the bottom level, and with it every older
    /// version of the key; a snapshot held at sequence 0 then loses the versions it
    /// should read under a later delete (RocksDB 10.4, `compaction_iterator.cc`).
    /// From sequence 1 on, no snapshot can be taken at 0.
    fn leave_sequence_zero(&self) -> Result<(), DiskError> {
        if self.db.latest_sequence_number() > 0 {
            return Ok(());
        }
        let cf = self.cf(Cf::Lock)?;
        let mut batch = rocksdb::WriteBatch::default();
        match self.db.get_cf(cf, b"").map_err(rocks("get"))? {
            Some(value) => batch.put_cf(cf, b"", value),
            None => batch.delete_cf(cf, b""),
        }
        self.db.write(batch).map_err(rocks("write"))
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, DiskError> {
        let name = self.names.name(cf);
        self.db.cf_handle(name).ok_or_else(|| DiskError::Rocks {
            operation: "column family",
            detail: format!("the column family {name:?} (IME's {cf}) is missing"),
        })
    }
}

/// How many times a snapshot tries to read its sequence number without the write lock.
const SNAPSHOT_TRIES: usize = 4;

/// RocksDB with TiKV's three column families: a database of its own
/// ([`open`](Self::open)), or one the embedder already holds ([`wrap`](Self::wrap)).
pub struct RocksDisk {
    db: Arc<Db>,
    /// Serializes writes so that a batch's sequence numbers can be read off around it (and
    /// a snapshot that could not read its sequence number otherwise).
    write_lock: Mutex<()>,
    write_options: WriteOptions,
    /// RocksDB's encoding of each operation on each column family (the batches' format).
    records: Records,
    path: PathBuf,
    ingest_counter: AtomicU64,
    /// [`DiskEngine::changes`]: RocksDB's sequence number does not move for an ingested
    /// file that overlaps nothing.
    changes: AtomicU64,
    /// Keeps a temporary directory alive as long as the engine.
    _temp: Option<tempfile::TempDir>,
}

impl RocksDisk {
    /// Opens (or creates) a database in `path`.
    ///
    /// # Errors
    /// [`DiskError::Rocks`] when RocksDB cannot open it.
    pub fn open(path: impl AsRef<Path>, config: &RocksConfig) -> Result<Self, DiskError> {
        let path = path.as_ref().to_path_buf();
        let (options, cf_options) = config.options();
        let descriptors =
            Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options.clone()));
        let db = DB::open_cf_descriptors(&options, &path, descriptors).map_err(rocks("open"))?;
        RocksDisk::with(Arc::new(db), CfNames::default(), config.sync_writes, path)
    }

    /// Wraps a database the embedder already opened, with its column families named in
    /// `names`; the database stays the embedder's (other column families, a Raft log
    /// among them, are its own business). `sync_writes` as [`RocksConfig::sync_writes`].
    ///
    /// The cache's contract holds for the three column families: every write to them
    /// goes through the engine (its write path, or a bypass fence for what bypasses it —
    /// a snapshot's data, an ingest, a delete range), never straight to the database.
    ///
    /// # Errors
    /// [`DiskError::Rocks`] naming a column family the database does not have.
    pub fn wrap(db: Arc<DB>, names: CfNames, sync_writes: bool) -> Result<Self, DiskError> {
        let path = db.path().to_path_buf();
        RocksDisk::with(db, names, sync_writes, path)
    }

    fn with(db: Arc<DB>, names: CfNames, sync: bool, path: PathBuf) -> Result<Self, DiskError> {
        let db = Db { db, names };
        // Every family looked up (a missing one is an error) before anything is written.
        let records = Records::learn([db.cf(Cf::Default)?, db.cf(Cf::Lock)?, db.cf(Cf::Write)?])?;
        db.leave_sequence_zero()?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync);
        Ok(RocksDisk {
            db: Arc::new(db),
            write_lock: Mutex::new(()),
            write_options,
            records,
            path,
            ingest_counter: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            _temp: None,
        })
    }

    /// The database, shared with the caller (to write its own column families, or read
    /// RocksDB's properties).
    pub fn db(&self) -> &Arc<DB> {
        &self.db.db
    }

    /// Opens a fresh database in a temporary directory, removed when the engine drops.
    ///
    /// # Errors
    /// [`DiskError::Io`] or [`DiskError::Rocks`].
    pub fn open_temp(config: &RocksConfig) -> Result<Self, DiskError> {
        let dir = tempfile::Builder::new()
            .prefix("ime-rocksdb-")
            .tempdir()
            .map_err(|source| DiskError::Io {
                operation: "create a temporary directory",
                source,
            })?;
        let mut disk = RocksDisk::open(dir.path(), config)?;
        disk._temp = Some(dir);
        Ok(disk)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `batch` as RocksDB's: encoded here in RocksDB's own format (see [`Records`]) and
    /// handed over in one piece, one copy, where RocksDB's `put` costs a call through its
    /// C interface, a column family lookup and a check of the batch's size per operation.
    fn rocks_batch(&self, batch: &WriteBatch) -> Result<rocksdb::WriteBatch, DiskError> {
        batch.validate()?;
        let rep = self.records.encode(batch)?;
        Ok(rocksdb::WriteBatch::from_data(&rep))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn rocks(operation: &'static str) -> impl Fn(rocksdb::Error) -> DiskError {
    move |err| DiskError::Rocks {
        operation,
        detail: err.into_string(),
    }
}

impl DiskEngine for RocksDisk {
    type Snapshot = RocksSnapshot;

    fn write(&self, batch: &WriteBatch) -> Result<SeqRange, DiskError> {
        let rocks_batch = self.rocks_batch(batch)?;
        let _guard = self.lock();
        let first = self.db.db.latest_sequence_number() + 1;
        let written = (self.db.db).write_opt(rocks_batch, &self.write_options);
        self.changes.fetch_add(1, Ordering::SeqCst);
        written.map_err(rocks("write"))?;
        Ok(SeqRange {
            first,
            last: self.db.db.latest_sequence_number(),
        })
    }

    fn apply(&self, batch: &WriteBatch) -> Result<(), DiskError> {
        let rocks_batch = self.rocks_batch(batch)?;
        let written = (self.db.db).write_opt(rocks_batch, &self.write_options);
        self.changes.fetch_add(1, Ordering::SeqCst);
        written.map_err(rocks("write"))
    }

    fn snapshot(&self) -> RocksSnapshot {
        // The snapshot's sequence number, read on both sides of it: the same before and
        // after, it is the snapshot's (sequence numbers only grow). A write published in
        // between makes the two differ; after a few tries, the write lock holds writers
        // off. Readers therefore do not wait for a write in flight, but in the rare case.
        for _ in 0..SNAPSHOT_TRIES {
            let before = self.db.db.latest_sequence_number();
            let inner = OwnedSnapshot::new(Arc::clone(&self.db), |db| db.db.snapshot());
            if self.db.db.latest_sequence_number() == before {
                return RocksSnapshot {
                    inner,
                    sequence: before,
                };
            }
        }
        let _guard = self.lock();
        let sequence = self.db.db.latest_sequence_number();
        let inner = OwnedSnapshot::new(Arc::clone(&self.db), |db| db.db.snapshot());
        RocksSnapshot { inner, sequence }
    }

    fn latest_sequence(&self) -> u64 {
        self.db.db.latest_sequence_number()
    }

    fn ingest(&self, cf: Cf, entries: &[crate::Entry]) -> Result<(), DiskError> {
        check_sorted(entries)?;
        if entries.is_empty() {
            return Ok(());
        }
        let n = self.ingest_counter.fetch_add(1, Ordering::Relaxed);
        let file = self.path.join(format!("ingest-{n}.sst"));
        let options = Options::default();
        let mut writer = SstFileWriter::create(&options);
        writer.open(&file).map_err(rocks("sst open"))?;
        for (key, value) in entries {
            writer.put(key, value).map_err(rocks("sst put"))?;
        }
        writer.finish().map_err(rocks("sst finish"))?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        let _guard = self.lock();
        let result = self.db.cf(cf).and_then(|handle| {
            (self.db.db)
                .ingest_external_file_cf_opts(handle, &ingest, vec![&file])
                .map_err(rocks("ingest"))
        });
        self.changes.fetch_add(1, Ordering::SeqCst);
        let _ = std::fs::remove_file(&file);
        result
    }

    fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }
}

type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;

self_cell::self_cell!(
    /// A RocksDB snapshot that owns a handle on its database.
    struct OwnedSnapshot {
        owner: Arc<Db>,
        #[covariant]
        dependent: Snapshot,
    }
);

/// A snapshot of a [`RocksDisk`]; keeps the database open while it lives. Aligned to a
/// cache line: readers that share one (in an `Arc`) move its reference count on a line
/// apart from what each of them reads.
#[repr(align(64))]
pub struct RocksSnapshot {
    inner: OwnedSnapshot,
    sequence: u64,
}

impl DiskSnapshot for RocksSnapshot {
    fn sequence(&self) -> u64 {
        self.sequence
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        let handle = self.inner.borrow_owner().cf(cf)?;
        let snapshot = self.inner.borrow_dependent();
        snapshot
            .get_cf_opt(handle, key, ReadOptions::default())
            .map_err(rocks("get"))
    }

    fn iter(&self, cf: Cf, bounds: KeyRange) -> Result<Box<dyn DiskIterator + '_>, DiskError> {
        let handle = self.inner.borrow_owner().cf(cf)?;
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(bounds.start().to_vec());
        if let Some(upper) = bounds.end() {
            options.set_iterate_upper_bound(upper.to_vec());
        }
        let raw = self
            .inner
            .borrow_dependent()
            .raw_iterator_cf_opt(handle, options);
        Ok(Box::new(RocksIter { raw, bounds }))
    }
}

/// A RocksDB raw iterator, clamped to its bounds.
struct RocksIter<'a> {
    raw: DBRawIteratorWithThreadMode<'a, DB>,
    bounds: KeyRange,
}

impl DiskIterator for RocksIter<'_> {
    fn seek_to_first(&mut self) {
        self.raw.seek_to_first();
    }

    fn seek_to_last(&mut self) {
        self.raw.seek_to_last();
    }

    fn seek(&mut self, key: &[u8]) {
        if key < self.bounds.start() {
            self.raw.seek_to_first();
        } else {
            self.raw.seek(key);
        }
    }

    fn seek_for_prev(&mut self, key: &[u8]) {
        if self.bounds.end().is_some_and(|upper| key >= upper) {
            self.raw.seek_to_last();
        } else {
            self.raw.seek_for_prev(key);
        }
    }

    fn next(&mut self) {
        if self.raw.valid() {
            self.raw.next();
        }
    }

    fn prev(&mut self) {
        if self.raw.valid() {
            self.raw.prev();
        }
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.raw
            .item()
            .filter(|(key, _)| self.bounds.contains_key(key))
    }

    fn status(&self) -> Result<(), DiskError> {
        self.raw.status().map_err(rocks("iterate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchOp;

    use proptest::prelude::*;

    /// `batch` through RocksDB's own `put_cf`, `delete_cf` and `delete_range_cf`.
    fn rocks_own(disk: &RocksDisk, batch: &WriteBatch) -> Vec<u8> {
        let mut rocks = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } => {
                    rocks.put_cf(disk.db.cf(*cf).unwrap(), key, value)
                }
                BatchOp::Delete { cf, key } => rocks.delete_cf(disk.db.cf(*cf).unwrap(), key),
                BatchOp::DeleteRange { cf, start, end } => {
                    rocks.delete_range_cf(disk.db.cf(*cf).unwrap(), start, end);
                }
            }
        }
        rocks.data().to_vec()
    }

    /// A batch of every kind of operation on every family, with short and long keys and
    /// values (lengths of one to three varint bytes).
    fn mixed() -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch
            .put(Cf::Write, b"k".to_vec(), Vec::new())
            .put(Cf::Default, vec![b'k'; 200], vec![b'v'; 20_000])
            .put(Cf::Lock, Vec::new(), b"v".to_vec())
            .delete(Cf::Lock, vec![b'l'; 130])
            .delete(Cf::Write, b"w".to_vec())
            .delete(Cf::Default, vec![b'd'; 127])
            .delete_range(Cf::Default, b"a".to_vec(), vec![b'z'; 300])
            .delete_range(Cf::Write, b"a".to_vec(), b"b".to_vec())
            .delete_range(Cf::Lock, b"a".to_vec(), vec![b'z'; 128]);
        batch
    }

    /// What the disk encodes is byte for byte what RocksDB's own calls encode, in room
    /// sized for it (no reallocation).
    #[test]
    fn a_batch_is_encoded_as_rocksdb_encodes_it() {
        let disk = RocksDisk::open_temp(&RocksConfig::default()).unwrap();
        let batch = mixed();
        let encoded = disk.records.encode(&batch).unwrap();
        assert_eq!(encoded, rocks_own(&disk, &batch));
        assert!(encoded.capacity() >= encoded.len());
        assert!(crate::records::encoded_bytes(&batch) >= encoded.len());
        let rocks = disk.rocks_batch(&batch).unwrap();
        assert_eq!((rocks.data(), rocks.len()), (&encoded[..], batch.len()));
    }

    /// A database the embedder opened with families of its own before IME's (so that
    /// IME's have other ids), named otherwise: still RocksDB's encoding, and the writes
    /// land in the families they name.
    #[test]
    fn a_wrapped_database_with_other_families_is_encoded_as_rocksdb_encodes_it() {
        let dir = tempfile::tempdir().unwrap();
        let names = CfNames {
            default: "d".into(),
            lock: "l".into(),
            write: "w".into(),
        };
        let (options, cf_options) = RocksConfig::default().options();
        let families = ["raft", "extra", "w", "l", "d"]
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options.clone()));
        let db = DB::open_cf_descriptors(&options, dir.path(), families).unwrap();
        let disk = RocksDisk::wrap(Arc::new(db), names, false).unwrap();
        let batch = mixed();
        assert_eq!(
            disk.records.encode(&batch).unwrap(),
            rocks_own(&disk, &batch)
        );
        let mut puts = WriteBatch::new();
        for cf in Cf::ALL {
            puts.put(cf, cf.name().as_bytes().to_vec(), b"v".to_vec());
        }
        disk.write(&puts).unwrap();
        for (cf, name) in Cf::ALL.into_iter().zip(["d", "l", "w"]) {
            let handle = disk.db().cf_handle(name).unwrap();
            let found = disk.db().get_cf(handle, cf.name()).unwrap();
            assert_eq!(found.as_deref(), Some(&b"v"[..]), "{cf} in {name}");
        }
    }

    fn any_op() -> impl Strategy<Value = BatchOp> {
        let cf = prop::sample::select(Cf::ALL.to_vec());
        let bytes = || {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..20),
                prop::collection::vec(any::<u8>(), 120..140),
                prop::collection::vec(any::<u8>(), 16_380..16_390),
            ]
        };
        prop_oneof![
            (cf.clone(), bytes(), bytes()).prop_map(|(cf, key, value)| BatchOp::Put {
                cf,
                key,
                value
            }),
            (cf.clone(), bytes()).prop_map(|(cf, key)| BatchOp::Delete { cf, key }),
            (cf, bytes(), bytes()).prop_map(|(cf, start, end)| BatchOp::DeleteRange {
                cf,
                start,
                end
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any batch (ranges not checked: the encoding takes them as they come).
        #[test]
        fn any_batch_is_encoded_as_rocksdb_encodes_it(ops in prop::collection::vec(any_op(), 1..40)) {
            let disk = shared_disk();
            let mut batch = WriteBatch::new();
            for op in ops {
                match op {
                    BatchOp::Put { cf, key, value } => batch.put(cf, key, value),
                    BatchOp::Delete { cf, key } => batch.delete(cf, key),
                    BatchOp::DeleteRange { cf, start, end } => batch.delete_range(cf, start, end),
                };
            }
            let encoded = disk.records.encode(&batch).unwrap();
            prop_assert!(crate::records::encoded_bytes(&batch) >= encoded.len());
            prop_assert_eq!(encoded, rocks_own(disk, &batch));
        }
    }

    /// One database for the property's cases (opening one takes tens of milliseconds).
    fn shared_disk() -> &'static RocksDisk {
        static DISK: std::sync::OnceLock<RocksDisk> = std::sync::OnceLock::new();
        DISK.get_or_init(|| RocksDisk::open_temp(&RocksConfig::default()).unwrap())
    }
}
