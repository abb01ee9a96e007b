//! [`RocksDisk`]: the RocksDB implementation, with TiKV's three column families.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBRawIteratorWithThreadMode, IngestExternalFileOptions, Options, ReadOptions,
    SnapshotWithThreadMode, SstFileWriter, WriteOptions,
};

use crate::types::check_sorted;
use crate::{
    BatchOp, Cf, DiskEngine, DiskError, DiskIterator, DiskSnapshot, KeyRange, SeqRange, WriteBatch,
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

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            sync_writes: false,
        }
    }
}

/// How many times a snapshot tries to read its sequence number without the write lock.
const SNAPSHOT_TRIES: usize = 4;

/// RocksDB with the column families `default`, `lock` and `write`.
pub struct RocksDisk {
    db: Arc<DB>,
    /// Serializes writes so that a batch's sequence numbers can be read off around it (and
    /// a snapshot that could not read its sequence number otherwise).
    write_lock: Mutex<()>,
    write_options: WriteOptions,
    path: PathBuf,
    ingest_counter: AtomicU64,
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
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let mut cf_options = Options::default();
        cf_options.set_block_based_table_factory(&table);
        cf_options.set_write_buffer_size(config.write_buffer_bytes);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.increase_parallelism(2);
        let descriptors =
            Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_options.clone()));
        let db = DB::open_cf_descriptors(&options, &path, descriptors).map_err(rocks("open"))?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(config.sync_writes);
        Ok(RocksDisk {
            db: Arc::new(db),
            write_lock: Mutex::new(()),
            write_options,
            path,
            ingest_counter: AtomicU64::new(0),
            _temp: None,
        })
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

    /// `batch` as RocksDB's, each column family looked up once.
    fn rocks_batch(&self, batch: &WriteBatch) -> Result<rocksdb::WriteBatch, DiskError> {
        batch.validate()?;
        let handles = [
            cf_handle(&self.db, Cf::Default)?,
            cf_handle(&self.db, Cf::Lock)?,
            cf_handle(&self.db, Cf::Write)?,
        ];
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } => {
                    rocks_batch.put_cf(handles[cf.index()], key, value)
                }
                BatchOp::Delete { cf, key } => rocks_batch.delete_cf(handles[cf.index()], key),
                BatchOp::DeleteRange { cf, start, end } => {
                    rocks_batch.delete_range_cf(handles[cf.index()], start, end);
                }
            }
        }
        Ok(rocks_batch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn cf_handle(db: &DB, cf: Cf) -> Result<&ColumnFamily, DiskError> {
    db.cf_handle(cf.name()).ok_or_else(|| DiskError::Rocks {
        operation: "column family",
        detail: format!("{cf} is missing"),
    })
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
        let first = self.db.latest_sequence_number() + 1;
        self.db
            .write_opt(rocks_batch, &self.write_options)
            .map_err(rocks("write"))?;
        Ok(SeqRange {
            first,
            last: self.db.latest_sequence_number(),
        })
    }

    fn apply(&self, batch: &WriteBatch) -> Result<(), DiskError> {
        let rocks_batch = self.rocks_batch(batch)?;
        self.db
            .write_opt(rocks_batch, &self.write_options)
            .map_err(rocks("write"))
    }

    fn snapshot(&self) -> RocksSnapshot {
        // The snapshot's sequence number, read on both sides of it: the same before and
        // after, it is the snapshot's (sequence numbers only grow). A write published in
        // between makes the two differ; after a few tries, the write lock holds writers
        // off. Readers therefore do not wait for a write in flight, but in the rare case.
        for _ in 0..SNAPSHOT_TRIES {
            let before = self.db.latest_sequence_number();
            let inner = OwnedSnapshot::new(Arc::clone(&self.db), |db| db.snapshot());
            if self.db.latest_sequence_number() == before {
                return RocksSnapshot {
                    inner,
                    sequence: before,
                };
            }
        }
        let _guard = self.lock();
        let sequence = self.db.latest_sequence_number();
        let inner = OwnedSnapshot::new(Arc::clone(&self.db), |db| db.snapshot());
        RocksSnapshot { inner, sequence }
    }

    fn latest_sequence(&self) -> u64 {
        self.db.latest_sequence_number()
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
        let result =
            self.db
                .ingest_external_file_cf_opts(cf_handle(&self.db, cf)?, &ingest, vec![&file]);
        let _ = std::fs::remove_file(&file);
        result.map_err(rocks("ingest"))
    }

    fn name(&self) -> &'static str {
        "rocksdb"
    }
}

type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;

self_cell::self_cell!(
    /// A RocksDB snapshot that owns a handle on its database.
    struct OwnedSnapshot {
        owner: Arc<DB>,
        #[covariant]
        dependent: Snapshot,
    }
);

/// A snapshot of a [`RocksDisk`]; keeps the database open while it lives.
pub struct RocksSnapshot {
    inner: OwnedSnapshot,
    sequence: u64,
}

impl DiskSnapshot for RocksSnapshot {
    fn sequence(&self) -> u64 {
        self.sequence
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        let handle = cf_handle(self.inner.borrow_owner(), cf)?;
        let snapshot = self.inner.borrow_dependent();
        snapshot
            .get_cf_opt(handle, key, ReadOptions::default())
            .map_err(rocks("get"))
    }

    fn iter(&self, cf: Cf, bounds: KeyRange) -> Result<Box<dyn DiskIterator + '_>, DiskError> {
        let handle = cf_handle(self.inner.borrow_owner(), cf)?;
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
