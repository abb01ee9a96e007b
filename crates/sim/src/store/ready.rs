//! Raft ready handling: persisting, sending, role changes, and Raft snapshots — filled from
//! the leader's disk, applied on a follower through a fence.

use super::*;

impl Store {
    /// Handles every peer's Ready: persists, applies, and returns the messages to send.
    pub(crate) fn handle_readies(&mut self) -> Result<Vec<(u64, Message)>> {
        let mut out = Vec::new();
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            self.handle_ready(id, &mut out)?;
        }
        Ok(out)
    }

    pub(super) fn handle_ready(&mut self, id: u64, out: &mut Vec<(u64, Message)>) -> Result<()> {
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(());
        };
        if !peer.node.has_ready() {
            return Ok(());
        }
        let mut ready = peer.node.ready();
        let mut messages = ready.take_messages();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.apply_snapshot(id, snapshot)?;
        }
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        let store = peer.node.raft.raft_log.store.clone();
        store.wl().append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            store.wl().set_hardstate(hs.clone());
        }
        let role_change = ready.ss().map(|ss| ss.raft_state);
        let committed = ready.take_committed_entries();
        messages.extend(ready.take_persisted_messages());
        self.apply_entries(id, committed)?;
        // A peer that applied its own removal is gone, its messages with it.
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(());
        };
        let mut light = peer.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().set_commit(commit);
        }
        messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(id, committed)?;
        let Some(peer) = self.peers.get_mut(&id) else {
            return Ok(());
        };
        peer.node.advance_apply();
        if let Some(role) = role_change {
            self.role_changed(id, role)?;
        }
        for mut message in messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.fill_snapshot(id, &mut message)?;
            }
            out.push((id, message));
        }
        Ok(())
    }

    pub(super) fn role_changed(&mut self, id: u64, role: StateRole) -> Result<()> {
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        if peer.role == role {
            return Ok(());
        }
        peer.role = role;
        let (region, term, applied) = (peer.region.clone(), peer.node.raft.term, peer.applied);
        let role = match role {
            StateRole::Leader => PeerRole::Leader,
            StateRole::Candidate | StateRole::PreCandidate => PeerRole::Candidate,
            StateRole::Follower => PeerRole::Follower,
        };
        self.publish(
            id,
            &RaftEvent::RoleChange {
                region: region.clone(),
                role,
                term,
            },
        )?;
        if role == PeerRole::Leader {
            // The load hint a leader gives: the simulated policy caches every led region.
            // A refusal (already cached, memory full) is the policy's business, not the
            // simulation's.
            let _ = self.engine.load_region(region, applied);
        }
        Ok(())
    }

    /// A leader's snapshot message gets the region's data at its applied index.
    pub(super) fn fill_snapshot(&mut self, id: u64, message: &mut Message) -> Result<()> {
        let peer = self.peers.get(&id).context("peer vanished")?;
        let cfs = self.data_of(&peer.region.range)?;
        let data = SnapshotData {
            region: peer.region.clone(),
            applied: peer.applied,
            merging: peer.merging,
            cfs,
        };
        message
            .mut_snapshot()
            .set_data(serde_json::to_vec(&data)?.into());
        self.snapshots_sent += 1;
        Ok(())
    }

    /// Every entry of `range` on this store's disk, per column family.
    pub(crate) fn data_of(&self, range: &KeyRange) -> Result<Vec<CfData>> {
        let snapshot = self.engine.disk().snapshot();
        let bounds = KeyRange::with_end(range.start().to_vec(), range.end().map(<[u8]>::to_vec))?;
        let mut cfs = Vec::new();
        for cf in Cf::ALL {
            cfs.push(collect(&snapshot, cf, bounds.clone())?);
        }
        Ok(cfs)
    }

    /// A follower applies a Raft snapshot: the engine is told first (the event is
    /// synchronous), then the region's data is replaced on disk, outside the write path.
    /// Other local peers the snapshot's range overlaps are stale (a merge or a removal
    /// this store missed) and are destroyed first, as TiKV does.
    pub(super) fn apply_snapshot(&mut self, id: u64, snapshot: Snapshot) -> Result<()> {
        let data: SnapshotData =
            serde_json::from_slice(snapshot.get_data()).context("snapshot data")?;
        let index = snapshot.get_metadata().index;
        self.snapshots_applied += 1;
        let stale: Vec<u64> = self
            .peers
            .iter()
            .filter(|(other, p)| {
                **other != id && p.initialized && p.region.range.overlaps(&data.region.range)
            })
            .map(|(other, _)| *other)
            .collect();
        for other in stale {
            self.destroy_peer(other)?;
        }
        let peer = self.peers.get(&id).context("peer vanished")?;
        let before = peer.initialized.then(|| peer.region.clone());
        let applied = data.applied.max(index);
        let event = RaftEvent::ApplySnapshot {
            before: before.clone(),
            after: data.region.clone(),
            applied_index: applied,
        };
        let fence = self.bypass(id, &event)?;
        let mut batch = WriteBatch::new();
        for region in before.iter().chain([&data.region]) {
            delete_range(&mut batch, &region.range);
        }
        put_all(&mut batch, data.cfs);
        self.interleave_in_fence();
        fence.write(&batch)?;
        self.interleave_in_fence();
        fence.finish();
        let peer = self.peers.get_mut(&id).context("peer vanished")?;
        peer.region = data.region;
        peer.applied = applied;
        peer.initialized = true;
        peer.merging = data.merging;
        peer.node
            .raft
            .raft_log
            .store
            .wl()
            .apply_snapshot(snapshot)?;
        Ok(())
    }

    /// Drops log entries the peer has applied, but the last `keep` (a lagging follower
    /// then needs a snapshot).
    pub(crate) fn compact_logs(&mut self, keep: u64) -> Result<()> {
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            let peer = self.peers.get_mut(&id).context("peer vanished")?;
            let store = peer.node.raft.raft_log.store.clone();
            let target = peer.applied.saturating_sub(keep);
            let first = raft::Storage::first_index(&store)?;
            let last = raft::Storage::last_index(&store)?;
            if target > first && target <= last {
                store.wl().compact(target)?;
                let region = peer.region.clone();
                self.publish(
                    id,
                    &RaftEvent::CompactLog {
                        region,
                        compact_index: target,
                    },
                )?;
            }
        }
        Ok(())
    }
}
