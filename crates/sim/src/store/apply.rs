//! Applying committed entries: writes through the engine's write path with their apply
//! headers, and the admin commands (splits, merges, membership changes, ingests) with the
//! events and fences they publish.

use super::*;

impl Store {
    pub(super) fn apply_entries(&mut self, id: u64, entries: Vec<Entry>) -> Result<()> {
        for entry in entries {
            self.apply_entry(id, &entry)?;
        }
        Ok(())
    }

    pub(super) fn apply_entry(&mut self, id: u64, entry: &Entry) -> Result<()> {
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(()); // destroyed by an earlier entry of the same round
        };
        if entry.index <= peer.applied {
            return Ok(()); // already in the snapshot this peer applied
        }
        peer.applied = entry.index;
        let header = ApplyHeader {
            region: peer.region.id,
            epoch: peer.region.epoch,
            first_index: entry.index,
            last_index: entry.index,
        };
        let command = match entry.get_entry_type() {
            EntryType::EntryConfChange => {
                let change: Membership =
                    serde_json::from_slice(&entry.context).context("conf change context")?;
                return self.change_peer(id, entry.index, change);
            }
            EntryType::EntryNormal if !entry.data.is_empty() => {
                Some(serde_json::from_slice::<Command>(&entry.data).context("entry data")?)
            }
            // Empty entries (a new leader's), and V2 conf changes, which are not proposed.
            EntryType::EntryNormal | EntryType::EntryConfChangeV2 => None,
        };
        let mut batch = HybridWriteBatch::new();
        batch.prepare(header);
        match command {
            Some(Command::Write { version, ops })
                if self.accepts(id, version, ops.iter().map(|op| op.key.as_slice())) =>
            {
                for op in ops {
                    match op.value {
                        Some(value) => batch.put(op.cf, op.key, value),
                        None => batch.delete(op.cf, op.key),
                    };
                }
            }
            Some(Command::Ingest { version, entries })
                if self.accepts(id, version, entries.iter().map(|(k, _)| k.as_slice())) =>
            {
                self.ingest(id, &entries)?;
            }
            // Nothing, or data the apply refused: only the index is reported.
            None | Some(Command::Write { .. } | Command::Ingest { .. }) => {}
            Some(Command::Split { at, new_region }) => {
                return self.split(id, entry.index, at, new_region);
            }
            Some(Command::PrepareMerge { target }) => {
                return self.prepare_merge(id, entry.index, target);
            }
            Some(Command::CommitMerge { source, cfs }) => {
                return self.commit_merge(id, entry.index, source, cfs);
            }
            Some(Command::RollbackMerge) => return self.rollback_merge(id, entry.index),
        }
        self.engine.write(&batch)?;
        Ok(())
    }

    /// Whether the apply takes a data command proposed at epoch `version` over `keys`
    /// (TiKV's EpochNotMatch and KeyNotInRegion checks, and no writes while merging).
    pub(super) fn accepts<'k>(
        &mut self,
        id: u64,
        version: u64,
        mut keys: impl Iterator<Item = &'k [u8]>,
    ) -> bool {
        let Some(peer) = self.peers.get(&id) else {
            return false;
        };
        let ok = peer.region.epoch.version == version
            && peer.merging.is_none()
            && keys.all(|k| peer.region.range.contains_key(k));
        if !ok {
            self.refused += 1;
        }
        ok
    }

    /// Reports an admin entry's index to the engine under the region's (new) epoch: an
    /// apply round with no data.
    pub(super) fn report_index(&mut self, region: &Region, index: u64) -> Result<()> {
        let mut batch = HybridWriteBatch::new();
        batch.prepare(ApplyHeader {
            region: region.id,
            epoch: region.epoch,
            first_index: index,
            last_index: index,
        });
        self.engine.write(&batch)?;
        Ok(())
    }

    /// An admin command the apply refuses: only its index is reported.
    pub(super) fn refuse(&mut self, id: u64, index: u64) -> Result<()> {
        self.refused += 1;
        let region = self.peers.get(&id).context("peer vanished")?.region.clone();
        self.report_index(&region, index)
    }

    /// Applies a membership change: `conf_ver` moves (ChangePeer), the Raft group learns
    /// its new voters, and a store that applies its own removal destroys its peer.
    pub(super) fn change_peer(&mut self, id: u64, index: u64, change: Membership) -> Result<()> {
        let mut cc = ConfChange::default();
        cc.set_change_type(if change.add {
            ConfChangeType::AddNode
        } else {
            ConfChangeType::RemoveNode
        });
        cc.node_id = change.store;
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        let state = peer.node.apply_conf_change(&cc)?;
        let storage = peer.node.raft.raft_log.store.clone();
        storage.wl().set_conf_state(state);
        if change.add {
            // The log up to here goes, so that the new peer starts from a snapshot of the
            // region (raft-rs's log starts at index 1 on every replica; TiKV's new peers
            // always start from a snapshot).
            storage.wl().compact(index)?;
        }
        let before = peer.region.clone();
        let after = bumped(&before, 0, 1);
        peer.region = after.clone();
        self.peer_changes += 1;
        self.publish(
            id,
            &RaftEvent::ChangePeer {
                before,
                after: after.clone(),
            },
        )?;
        self.report_index(&after, index)?;
        if !change.add && change.store == self.id {
            self.destroy_peer(id)?;
        }
        Ok(())
    }

    /// Applies PrepareMerge on the source.
    pub(super) fn prepare_merge(&mut self, id: u64, index: u64, target: u64) -> Result<()> {
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        if peer.merging.is_some() {
            return self.refuse(id, index);
        }
        let before = peer.region.clone();
        let after = bumped(&before, 1, 1);
        peer.region = after.clone();
        peer.merging = Some(target);
        self.publish(
            id,
            &RaftEvent::PrepareMerge {
                before,
                after: after.clone(),
            },
        )?;
        self.report_index(&after, index)
    }

    /// Applies CommitMerge on the target: the engine hears of it, a source peer that has
    /// not caught up gets the source's final data on disk, and the source peer goes.
    pub(super) fn commit_merge(
        &mut self,
        id: u64,
        index: u64,
        source: Region,
        cfs: Vec<CfData>,
    ) -> Result<()> {
        let target = self.peers.get(&id).context("peer vanished")?.region.clone();
        let local = self.peers.get(&source.id.0);
        let left = source.range.end() == Some(target.range.start());
        let right = target.range.end() == Some(source.range.start());
        let stale = local.is_some_and(|p| p.region.epoch.version > source.epoch.version);
        if !(left || right) || stale {
            return self.refuse(id, index);
        }
        let range = if left {
            KeyRange::new(
                source.range.start().to_vec(),
                target.range.end().unwrap_or_default().to_vec(),
            )?
        } else {
            KeyRange::new(
                target.range.start().to_vec(),
                source.range.end().unwrap_or_default().to_vec(),
            )?
        };
        let version = target.epoch.version.max(source.epoch.version) + 1;
        let after = Region::new(
            target.id,
            range,
            RegionEpoch::new(version, target.epoch.conf_ver),
        );
        let caught_up = local.is_some_and(|p| p.merging == Some(target.id.0));
        let described = local
            .filter(|p| p.initialized)
            .map_or_else(|| source.clone(), |p| p.region.clone());
        let event = RaftEvent::CommitMerge {
            before: target,
            after: after.clone(),
            source: described.clone(),
        };
        if caught_up {
            self.publish(id, &event)?;
        } else {
            // A source peer that has not caught up gets the source's final data here (TiKV
            // has it from the source's log). The data bypasses the write path, so the event
            // begins a fence over the merged range and the source as this peer knew it; a
            // hot merge result's reload waits for the fence.
            let fence = self.bypass(id, &event)?;
            let mut batch = WriteBatch::new();
            delete_range(&mut batch, &described.range);
            put_all(&mut batch, cfs);
            self.interleave_in_fence();
            fence.write(&batch)?;
            self.interleave_in_fence();
            fence.finish();
        }
        if self.peers.remove(&source.id.0).is_some() {
            let line = format!("store {}: merged into region {}", self.id, id);
            self.history.entry(source.id.0).or_default().push(line);
        }
        self.peers.get_mut(&id).context("peer vanished")?.region = after.clone();
        self.merges += 1;
        self.report_index(&after, index)
    }

    /// Applies RollbackMerge on the source.
    pub(super) fn rollback_merge(&mut self, id: u64, index: u64) -> Result<()> {
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        if peer.merging.is_none() {
            return self.refuse(id, index);
        }
        let before = peer.region.clone();
        let after = bumped(&before, 1, 0);
        peer.region = after.clone();
        peer.merging = None;
        self.rollbacks += 1;
        self.publish(
            id,
            &RaftEvent::RollbackMerge {
                before,
                after: after.clone(),
            },
        )?;
        self.report_index(&after, index)
    }

    /// Applies an SST ingest: the engine evicts what it touches first (the event is
    /// synchronous), then the entries reach the disk outside the write path.
    pub(super) fn ingest(&mut self, id: u64, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let peer = self.peers.get(&id).context("peer vanished")?;
        let region = peer.region.clone();
        let inside: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .filter(|(k, _)| region.range.contains_key(k))
            .cloned()
            .collect();
        let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
            return Ok(());
        };
        let mut end = last.0.clone();
        end.push(0);
        let ranges = vec![KeyRange::new(first.0.clone(), end)?];
        let fence = self.bypass(id, &RaftEvent::IngestSst { region, ranges })?;
        self.interleave_in_fence();
        fence.ingest(Cf::Write, &inside)?;
        self.interleave_in_fence();
        fence.finish();
        Ok(())
    }

    /// Applies a split: the engine hears of it, the left child keeps this peer, and a
    /// fresh Raft group starts for the right child on this store.
    pub(super) fn split(
        &mut self,
        id: u64,
        index: u64,
        at: Vec<u8>,
        new_region: u64,
    ) -> Result<()> {
        let peer = self.peers.get(&id).context("peer vanished")?;
        let before = peer.region.clone();
        let range = &before.range;
        let splittable = range.contains_key(&at)
            && at.as_slice() != range.start()
            && peer.merging.is_none()
            && !self.peers.contains_key(&new_region);
        if !splittable {
            return self.refuse(id, index);
        }
        let epoch = RegionEpoch::new(before.epoch.version + 1, before.epoch.conf_ver);
        let end = range.end().map(<[u8]>::to_vec).unwrap_or_default();
        let left = Region::new(
            before.id,
            KeyRange::new(range.start().to_vec(), at.clone())?,
            epoch,
        );
        let right = Region::new(RegionId(new_region), KeyRange::new(at, end)?, epoch);
        let children = vec![
            SplitChild {
                region: left.clone(),
                applied_index: index,
            },
            SplitChild {
                region: right.clone(),
                applied_index: 0,
            },
        ];
        self.publish(id, &RaftEvent::Split { before, children })?;
        let voters = self.voters_of(id)?;
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        peer.region = left;
        let leads = peer.role == StateRole::Leader;
        self.add_peer(right, voters)?;
        if leads {
            // As TiKV does: the parent's leader campaigns for the new region at once.
            self.peers
                .get_mut(&new_region)
                .context("new peer")?
                .node
                .campaign()?;
        }
        Ok(())
    }
}
