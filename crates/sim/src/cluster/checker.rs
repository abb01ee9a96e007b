//! The checker: every region read at every store that hosts it, each answer compared with
//! the same store's disk at the same snapshot; at the end, every cache cross-checked.

use super::*;

impl Cluster {
    /// Reads every region at every store that hosts it (leaders and followers alike, each
    /// at its own applied index) and checks each answer against the same store's disk at
    /// the same snapshot.
    pub(super) fn read_all(&mut self) -> Result<()> {
        let read_ts = self.next_ts();
        for store in &self.stores {
            for (id, peer) in &store.peers {
                if !peer.initialized {
                    continue;
                }
                let snapshot = store.engine.snapshot(
                    RegionId(*id),
                    ReadRequest {
                        epoch_version: peer.region.epoch.version,
                        applied_index: peer.applied,
                        read_ts,
                    },
                );
                let found = read(&snapshot, &peer.region.range, true);
                if snapshot.from_memory() && found.is_ok() {
                    // The same scan on disk steps on every write-CF entry in its bounds.
                    let on_disk = disk_versions(&snapshot, &peer.region.range)?;
                    self.report.mvcc_read(snapshot.mvcc_work().scanned, on_disk);
                }
                let expected = reference(&snapshot, &peer.region.range, true)?;
                // The committed view without the lock check too: a pending lock must not
                // hide a stale version.
                let found_all = read(&snapshot, &peer.region.range, false);
                let expected_all = reference(&snapshot, &peer.region.range, false)?;
                let counts = if peer.role == raft::StateRole::Leader {
                    &mut self.report.leader_reads
                } else {
                    &mut self.report.follower_reads
                };
                counts[usize::from(!snapshot.from_memory())] += 1;
                for (found, expected) in [(found, expected), (found_all, expected_all)] {
                    if found != expected {
                        let history = store.history.get(id).cloned().unwrap_or_default();
                        let mismatch = Mismatch::new(store.id, *id, &found, &expected, history);
                        self.report.mismatches.push(mismatch);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<()> {
        for store in &mut self.stores {
            store.dispatch_events(usize::MAX);
            if !store.engine.wait_idle(std::time::Duration::from_secs(60)) {
                bail!("store {}: background work did not finish", store.id);
            }
            store.cross_check();
            self.report.mismatches.append(&mut store.differences);
        }
        self.report.collect(&self.stores);
        Ok(())
    }
}

/// What a read returns: the visible pairs, or the lock in the way.
pub(crate) type ReadResult = Result<Vec<KvPair>, String>;

fn user_bounds(range: &KeyRange) -> (Vec<u8>, Option<Vec<u8>>) {
    let decode = |k: &[u8]| decode_bytes(k).map(|(k, _)| k).unwrap_or_default();
    let start = if range.start().is_empty() {
        Vec::new()
    } else {
        decode(range.start())
    };
    (start, range.end().map(decode))
}

fn read(snapshot: &HybridSnapshot<RocksDisk>, range: &KeyRange, check_locks: bool) -> ReadResult {
    let (start, end) = user_bounds(range);
    snapshot
        .mvcc_scan_with(&start, end.as_deref(), usize::MAX, check_locks)
        .map_err(|e| e.to_string())
}

/// The write-CF versions a scan of `range` steps on at the snapshot's disk: every entry
/// in its bounds (an MVCC scan that returns everything visits each).
fn disk_versions(snapshot: &HybridSnapshot<RocksDisk>, range: &KeyRange) -> Result<u64> {
    let (start, end) = user_bounds(range);
    let bounds = KeyRange::with_end(encode_bytes(&start), end.as_deref().map(encode_bytes))?;
    let mut count = 0u64;
    ime_engine::disk::for_each(snapshot.disk(), Cf::Write, bounds, |_, _| {
        count += 1;
        Ok::<(), ime_engine::disk::DiskError>(())
    })?;
    Ok(count)
}

/// The engine's reference reading of the disk snapshot's raw entries (independent of its
/// read path), as a read result.
fn reference(
    snapshot: &HybridSnapshot<RocksDisk>,
    range: &KeyRange,
    check_locks: bool,
) -> Result<ReadResult> {
    let (start, end) = user_bounds(range);
    let bounds = KeyRange::with_end(encode_bytes(&start), end.as_deref().map(encode_bytes))?;
    let read_ts = snapshot.read_ts();
    Ok(
        match ime_engine::reference_scan(snapshot.disk(), &bounds, read_ts, check_locks) {
            Ok(pairs) => Ok(pairs),
            Err(err @ ime_engine::EngineError::Mvcc(ime_engine::MvccError::KeyIsLocked { .. })) => {
                Err(err.to_string())
            }
            Err(err) => return Err(err.into()),
        },
    )
}
