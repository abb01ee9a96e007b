//! The event journal: events (and apply reports) appended to a file as length-prefixed,
//! checksummed bincode records, read back in order for replay.
//!
//! ```text
//! file   := magic record*
//! magic  := "IMEJRNL" 0x02 (the format's version: 2 since `TransferLeader` carries `cached`)
//! record := len:u32 LE | crc32(payload):u32 LE | payload (bincode 2, standard config)
//! ```
//!
//! A record cut short at the end of the file (a crash mid-append) is a truncated tail:
//! reading recovers every whole record before it and reports where the tail starts. A
//! whole record that fails its checksum or does not decode is corruption: a typed error
//! with its offset.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ime_region::{RegionEpoch, RegionId};
use serde::{Deserialize, Serialize};

use crate::{DeliveryGap, ObserverResult, RaftEvent, RaftObserver};

/// The first bytes of every journal file.
pub const MAGIC: &[u8; 8] = b"IMEJRNL\x02";

/// The largest payload a record may declare; anything larger is corruption.
pub const MAX_RECORD: u32 = 16 << 20;

const RECORD_HEADER: usize = 8;

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalEntry {
    /// A Raft event, as published.
    Event(RaftEvent),
    /// An apply report (a write-batch header): entries `first..=last` of `region` were
    /// applied at `epoch`.
    Applied {
        /// The region.
        region: RegionId,
        /// Its epoch at apply time.
        epoch: RegionEpoch,
        /// The first applied index of the batch.
        first: u64,
        /// The last applied index of the batch.
        last: u64,
    },
    /// The bus reported a gap to the journaling observer.
    Gap(DeliveryGap),
}

/// Errors reading or writing a journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file system refused.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the journal magic.
    #[error("journal {path}: not a journal file (bad magic)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A journal of another format version (an older IME wrote it).
    #[error("journal {path}: format version {found}, this build reads version {expected}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version the file has.
        found: u8,
        /// The version this build reads and writes.
        expected: u8,
    },
    /// A whole record is damaged.
    #[error("journal {path}: corrupt record at offset {offset}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// An entry could not be encoded (or is larger than [`MAX_RECORD`]).
    #[error("journal {path}: cannot encode entry: {detail}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// A journal's readable contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalContents {
    /// Every whole record, in order.
    pub entries: Vec<JournalEntry>,
    /// Where an incomplete last record starts, if the file ends in one.
    pub truncated_at: Option<u64>,
}

/// Appends entries to a journal file.
pub struct JournalWriter {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
}

impl JournalWriter {
    /// Creates (or empties) a journal at `path`.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn create(path: impl AsRef<Path>) -> Result<Self, JournalError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| io(&path, e))?;
        let mut writer = JournalWriter {
            path,
            out: BufWriter::new(file),
            offset: 0,
        };
        writer.write_all(MAGIC)?;
        Ok(writer)
    }

    /// Opens an existing journal to append to it, first cutting off a truncated tail (a
    /// crash mid-append). Returns the writer and the offset of the tail cut, if any.
    ///
    /// # Errors
    /// [`JournalError::Io`], [`JournalError::BadMagic`], [`JournalError::Corrupt`].
    pub fn open(path: impl AsRef<Path>) -> Result<(Self, Option<u64>), JournalError> {
        let path = path.as_ref().to_path_buf();
        let scan = scan(&path)?;
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        file.set_len(scan.valid_len).map_err(|e| io(&path, e))?;
        file.seek(SeekFrom::Start(scan.valid_len))
            .map_err(|e| io(&path, e))?;
        let mut writer = JournalWriter {
            path,
            out: BufWriter::new(file),
            offset: scan.valid_len,
        };
        if scan.valid_len == 0 {
            writer.write_all(MAGIC)?;
        }
        Ok((writer, scan.contents.truncated_at))
    }

    /// Appends one entry; returns the offset its record starts at. The record reaches
    /// the file on [`JournalWriter::flush`] (or drop).
    ///
    /// # Errors
    /// [`JournalError::Encode`], [`JournalError::Io`].
    pub fn append(&mut self, entry: &JournalEntry) -> Result<u64, JournalError> {
        let payload = bincode::serde::encode_to_vec(entry, bincode::config::standard())
            .map_err(|e| self.encode_error(e.to_string()))?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_RECORD);
        let len = len.ok_or_else(|| {
            self.encode_error(format!("{} bytes exceed the record limit", payload.len()))
        })?;
        let start = self.offset;
        let mut header = [0u8; RECORD_HEADER];
        header[..4].copy_from_slice(&len.to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        self.write_all(&header)?;
        self.write_all(&payload)?;
        Ok(start)
    }

    /// Pushes buffered records to the operating system.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn flush(&mut self) -> Result<(), JournalError> {
        self.out.flush().map_err(|e| io(&self.path, e))
    }

    /// Flushes and syncs the file to disk.
    ///
    /// # Errors
    /// [`JournalError::Io`].
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| io(&self.path, e))
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        self.out.write_all(bytes).map_err(|e| io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn encode_error(&self, detail: String) -> JournalError {
        JournalError::Encode {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Reads every whole record of the journal at `path`, in order.
///
/// # Errors
/// [`JournalError::Io`], [`JournalError::BadMagic`], or [`JournalError::Corrupt`] with the
/// offset of the first damaged record. A truncated tail is not an error: see
/// [`JournalContents::truncated_at`].
pub fn read_journal(path: impl AsRef<Path>) -> Result<JournalContents, JournalError> {
    Ok(scan(path.as_ref())?.contents)
}

/// Feeds the journal's events, in order, to `observer` (`on_event` for events, `on_gap`
/// for recorded gaps; apply reports are skipped). Returns the contents read, and the
/// observer's errors with the index of the entry that caused each.
///
/// # Errors
/// As [`read_journal`]; nothing is replayed from a corrupt journal.
pub fn replay(
    path: impl AsRef<Path>,
    observer: &dyn RaftObserver,
) -> Result<(JournalContents, Vec<(usize, String)>), JournalError> {
    let contents = read_journal(path)?;
    let mut errors = Vec::new();
    for (index, entry) in contents.entries.iter().enumerate() {
        let result: ObserverResult = match entry {
            JournalEntry::Event(event) => observer.on_event(event),
            JournalEntry::Gap(gap) => {
                observer.on_gap(gap);
                Ok(())
            }
            JournalEntry::Applied { .. } => Ok(()),
        };
        if let Err(err) = result {
            errors.push((index, err.to_string()));
        }
    }
    Ok((contents, errors))
}

struct Scan {
    contents: JournalContents,
    /// Length of the file up to the end of the last whole record.
    valid_len: u64,
}

fn scan(path: &Path) -> Result<Scan, JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io(path, e))?;
    let mut contents = JournalContents {
        entries: Vec::new(),
        truncated_at: None,
    };
    if bytes.len() < MAGIC.len() {
        if !MAGIC.starts_with(&bytes) {
            return Err(JournalError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        contents.truncated_at = Some(0);
        return Ok(Scan {
            contents,
            valid_len: 0,
        });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        let (name, version) = MAGIC.split_at(MAGIC.len() - 1);
        if bytes.starts_with(name) {
            return Err(JournalError::Version {
                path: path.to_path_buf(),
                found: bytes[name.len()],
                expected: version[0],
            });
        }
        return Err(JournalError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        match decode_record(&bytes[at..]) {
            Record::Whole(entry, used) => {
                contents.entries.push(entry);
                at += used;
            }
            Record::Truncated => {
                contents.truncated_at = Some(at as u64);
                break;
            }
            Record::Corrupt(detail) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: at as u64,
                    detail,
                });
            }
        }
    }
    let valid_len = contents.truncated_at.unwrap_or(bytes.len() as u64);
    Ok(Scan {
        contents,
        valid_len,
    })
}

enum Record {
    Whole(JournalEntry, usize),
    Truncated,
    Corrupt(String),
}

fn decode_record(bytes: &[u8]) -> Record {
    let Some((header, rest)) = bytes.split_first_chunk::<RECORD_HEADER>() else {
        return Record::Truncated;
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    if len > MAX_RECORD {
        return Record::Corrupt(format!(
            "declared length {len} exceeds the limit {MAX_RECORD}"
        ));
    }
    let Some(payload) = rest.get(..len as usize) else {
        return Record::Truncated;
    };
    if crc32fast::hash(payload) != crc {
        return Record::Corrupt("checksum mismatch".to_owned());
    }
    match bincode::serde::decode_from_slice::<JournalEntry, _>(payload, bincode::config::standard())
    {
        Ok((entry, used)) if used == payload.len() => {
            Record::Whole(entry, RECORD_HEADER + payload.len())
        }
        Ok((_, used)) => Record::Corrupt(format!(
            "{} trailing bytes after the entry",
            payload.len() - used
        )),
        Err(err) => Record::Corrupt(format!("undecodable entry: {err}")),
    }
}

fn io(path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An observer that appends every event and gap it receives to a journal, so that a run
/// leaves a file that replays its exact sequence.
pub struct JournalObserver {
    writer: std::sync::Mutex<JournalWriter>,
}

impl JournalObserver {
    /// Journals into `writer`.
    pub fn new(writer: JournalWriter) -> Self {
        JournalObserver {
            writer: std::sync::Mutex::new(writer),
        }
    }

    /// Appends an entry directly (an apply report, say).
    ///
    /// # Errors
    /// As [`JournalWriter::append`].
    pub fn append(&self, entry: &JournalEntry) -> Result<u64, JournalError> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let offset = writer.append(entry)?;
        writer.flush()?;
        Ok(offset)
    }
}

impl RaftObserver for JournalObserver {
    fn name(&self) -> &str {
        "journal"
    }

    fn on_event(&self, event: &RaftEvent) -> ObserverResult {
        self.append(&JournalEntry::Event(event.clone()))?;
        Ok(())
    }

    fn on_gap(&self, gap: &DeliveryGap) {
        if let Err(err) = self.append(&JournalEntry::Gap(gap.clone())) {
            tracing::error!(%err, "could not journal a gap");
        }
    }
}
