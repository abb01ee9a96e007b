//! The nemesis: partitions and heals, leader transfers, SST ingests, merges committed or
//! rolled back, peer moves with destroys, splits, and the stale-peer GC.

use super::*;

impl Cluster {
    /// One nemesis action, chosen by the seed.
    pub(super) fn nemesis(&mut self) -> Result<()> {
        match self.rng.below(10) {
            8 => self.merge()?,
            9 => self.move_peer()?,
            0 => {
                // Partition a store away, or heal.
                if self.isolated.is_empty() {
                    let id = 1 + self.rng.below(self.options.stores);
                    self.isolated.insert(id);
                    self.report.partitions += 1;
                } else {
                    self.isolated.clear();
                }
            }
            1 => self.transfer_leader()?,
            6 => self.ingest()?,
            7 => {
                let i = self.rng.below(self.options.stores) as usize;
                self.stores[i].restart()?;
                self.report.restarts += 1;
            }
            2 => self.split()?,
            3 => {
                // Log compaction everywhere: lagging peers will need snapshots.
                for store in &mut self.stores {
                    store.compact_logs(3)?;
                }
            }
            4 => {
                // A bus fault on one store: its next snapshot events are lost.
                let i = self.rng.below(self.options.stores) as usize;
                let store = &mut self.stores[i];
                if self.rng.chance(50) {
                    store.drops_snapshot_events = !store.drops_snapshot_events;
                } else {
                    store.drops_epoch_events = !store.drops_epoch_events;
                }
            }
            _ => {
                let safe_point = self.ts.saturating_sub(200);
                for store in &self.stores {
                    store.engine.set_safe_point(safe_point);
                    store.engine.run_gc();
                }
            }
        }
        Ok(())
    }

    pub(super) fn transfer_leader(&mut self) -> Result<()> {
        let regions = self.regions();
        let region = regions[self.rng.below(regions.len() as u64) as usize];
        let Some(at) = self.leader_of(region) else {
            return Ok(());
        };
        let target = 1 + self.rng.below(self.options.stores);
        let Some(to) = self.stores.iter().position(|s| s.id == target) else {
            return Ok(());
        };
        if to == at
            || !self.stores[to]
                .peers
                .get(&region)
                .is_some_and(|p| p.initialized)
        {
            return Ok(());
        }
        let peer = self.stores[at].peers.get(&region).context("leader peer")?;
        let (term, described) = (
            peer.node.raft.term,
            self.stores[to].peers[&region].region.clone(),
        );
        // The transfer carries whether the old leader had the region cached.
        let cached = self.stores[at]
            .engine
            .regions()
            .iter()
            .any(|r| r.region.id == RegionId(region) && r.state == RegionState::Active);
        self.stores[to].publish(
            region,
            &RaftEvent::TransferLeader {
                region: described,
                term,
                cached,
            },
        )?;
        self.stores[at]
            .peers
            .get_mut(&region)
            .context("leader peer")?
            .node
            .transfer_leader(target);
        self.report.transfers += 1;
        Ok(())
    }

    /// An SST of three committed puts on consecutive keys, ingested through Raft.
    pub(super) fn ingest(&mut self) -> Result<()> {
        let first = self.rng.below(KEYS - 3);
        let Some(region) = self.region_of(&user_key(first)) else {
            return Ok(());
        };
        let commit_ts = self.next_ts();
        let mut entries = Vec::new();
        for n in first..first + 3 {
            let key = MvccKey {
                user_key: user_key(n),
                ts: commit_ts,
            }
            .encode();
            let value = format!("ingested at {commit_ts}").into_bytes();
            let record = WriteRecord::new(WriteType::Put, commit_ts - 1, Some(value));
            entries.push((key, record.encode()?));
        }
        let Some((_, peer)) = self.led(region) else {
            return Ok(());
        };
        let version = peer.region.epoch.version;
        if self.propose(region, &Command::Ingest { version, entries })? {
            self.report.ingests += 1;
        }
        Ok(())
    }

    /// Regions a merge involves (sources still merging or awaiting their decision's
    /// apply, and their targets) or whose membership is changing: no split, no new merge,
    /// no membership change on them.
    pub(super) fn busy(&self) -> BTreeSet<u64> {
        let mut busy = BTreeSet::new();
        for store in &self.stores {
            for (id, peer) in &store.peers {
                if let Some(target) = peer.merging {
                    busy.extend([*id, target]);
                }
                if !peer.initialized {
                    busy.insert(*id);
                }
            }
        }
        busy.extend(self.joining.iter().map(|(_, region)| *region));
        busy
    }

    /// The nemesis's merge step. With a merge under way (a source whose leader applied
    /// PrepareMerge), commit or roll it back — decided once per merge, proposed again
    /// until applied (a proposal can be lost with a leader); otherwise start one: a
    /// region and its neighbour, hosted by the same stores, neither busy.
    pub(super) fn merge(&mut self) -> Result<()> {
        if let Some((source, target)) = self.merge_under_way() {
            let roll = self.rng.chance(30);
            let commit = *self.merge_decisions.entry(source).or_insert(!roll);
            if commit && self.commit_merge(source, target)? {
                return Ok(());
            }
            // Rolled back by decision, or the target is no longer its neighbour.
            self.merge_decisions.insert(source, false);
            if self.propose(source, &Command::RollbackMerge)? {
                self.report.merge_rollbacks += 1;
            }
            return Ok(());
        }
        // The first mergeable pair from a random place in the region list.
        let regions = self.regions();
        let busy = self.busy();
        let offset = self.rng.below(regions.len() as u64) as usize;
        let mut chosen = None;
        for source in regions.iter().cycle().skip(offset).take(regions.len()) {
            let Some((_, peer)) = self.led(*source) else {
                continue;
            };
            let range = &peer.region.range;
            let target = regions.iter().copied().find(|t| {
                self.led(*t).is_some_and(|(_, p)| {
                    p.region.range.end() == Some(range.start())
                        || range.end() == Some(p.region.range.start())
                })
            });
            if let Some(target) = target
                && !busy.contains(source)
                && !busy.contains(&target)
                && self.same_hosts(*source, target)?
            {
                chosen = Some((*source, target));
                break;
            }
        }
        let Some((source, target)) = chosen else {
            return Ok(());
        };
        self.merge_decisions.remove(&source);
        if self.propose(source, &Command::PrepareMerge { target })? {
            self.report.merges_started += 1;
        }
        Ok(())
    }

    /// A merge whose source's leader applied PrepareMerge: (source, target).
    pub(super) fn merge_under_way(&self) -> Option<(u64, u64)> {
        self.regions().into_iter().find_map(|id| {
            self.led(id)
                .and_then(|(_, peer)| peer.merging.map(|target| (id, target)))
        })
    }

    /// Whether regions `a` and `b` have the same voters at their leaders and an
    /// initialized peer on exactly those stores (TiKV merges only such neighbours).
    pub(super) fn same_hosts(&self, a: u64, b: u64) -> Result<bool> {
        let (Some((la, _)), Some((lb, _))) = (self.led(a), self.led(b)) else {
            return Ok(false);
        };
        let (va, vb) = (self.stores[la].voters_of(a)?, self.stores[lb].voters_of(b)?);
        let hosts = |id: u64| -> Vec<u64> {
            self.stores
                .iter()
                .filter(|s| s.peers.get(&id).is_some_and(|p| p.initialized))
                .map(|s| s.id)
                .collect()
        };
        let mut sorted = va.clone();
        sorted.sort_unstable();
        Ok(va.len() == vb.len()
            && va.iter().all(|v| vb.contains(v))
            && hosts(a) == sorted
            && hosts(b) == sorted)
    }

    /// Proposes CommitMerge of `source` into `target` with the source's final data, if
    /// the target is still its neighbour. Returns false when it is not.
    pub(super) fn commit_merge(&mut self, source: u64, target: u64) -> Result<bool> {
        let (Some((at, peer)), Some((_, target_peer))) = (self.led(source), self.led(target))
        else {
            return Ok(true); // no leader now: decide again next time
        };
        let region = peer.region.clone();
        let t = &target_peer.region.range;
        if !(region.range.end() == Some(t.start()) || t.end() == Some(region.range.start())) {
            return Ok(false);
        }
        let cfs = self.stores[at].data_of(&region.range)?;
        if self.propose(
            target,
            &Command::CommitMerge {
                source: region,
                cfs,
            },
        )? {
            self.report.merge_commits += 1;
        }
        Ok(true)
    }

    /// The nemesis's peer move, in two steps as PD makes them: a region on every store
    /// loses a voter (never its leader's; not while a store is partitioned away, so the
    /// rest keep a quorum); a region with fewer voters than stores gains one on a store
    /// that hosts no peer of it (the new peer starts uninitialized and is caught up by a
    /// Raft snapshot).
    pub(super) fn move_peer(&mut self) -> Result<()> {
        let regions = self.regions();
        let region = regions[self.rng.below(regions.len() as u64) as usize];
        if self.busy().contains(&region) {
            return Ok(());
        }
        let Some((at, _)) = self.led(region) else {
            return Ok(());
        };
        let voters = self.stores[at].voters_of(region)?;
        let leader = self.stores[at].id;
        let change = if voters.len() < self.stores.len() {
            let candidates: Vec<u64> = self
                .stores
                .iter()
                .filter(|s| !voters.contains(&s.id) && !s.peers.contains_key(&region))
                .map(|s| s.id)
                .collect();
            if candidates.is_empty() {
                return Ok(());
            }
            let store = candidates[self.rng.below(candidates.len() as u64) as usize];
            Membership { add: true, store }
        } else {
            if !self.isolated.is_empty() {
                return Ok(());
            }
            let others: Vec<u64> = voters.iter().copied().filter(|v| *v != leader).collect();
            let store = others[self.rng.below(others.len() as u64) as usize];
            Membership { add: false, store }
        };
        let mut cc = raft::prelude::ConfChange::default();
        cc.set_change_type(if change.add {
            raft::prelude::ConfChangeType::AddNode
        } else {
            raft::prelude::ConfChangeType::RemoveNode
        });
        cc.node_id = change.store;
        let context = serde_json::to_vec(&change)?;
        let peer = self.stores[at]
            .peers
            .get_mut(&region)
            .context("leader peer")?;
        if peer.node.propose_conf_change(context, cc).is_ok() {
            if change.add {
                self.joining.insert((change.store, region));
                self.report.peers_added += 1;
            } else {
                self.report.peers_removed += 1;
            }
        }
        Ok(())
    }

    /// Destroys stale peers: a peer on a store its region's leader no longer counts among
    /// the voters (it missed its removal, or the removal is still on its way), as TiKV's
    /// stale-peer GC does. Partitioned stores keep theirs until they are reachable.
    pub(super) fn destroy_stale_peers(&mut self) -> Result<()> {
        for region in self.regions() {
            let Some((at, _)) = self.led(region) else {
                continue;
            };
            let voters = self.stores[at].voters_of(region)?;
            for store in &mut self.stores {
                if !voters.contains(&store.id)
                    && !self.isolated.contains(&store.id)
                    && store.peers.contains_key(&region)
                {
                    store.destroy_peer(region)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn split(&mut self) -> Result<()> {
        if self.regions().len() >= self.options.max_regions {
            return Ok(());
        }
        let at = user_key(1 + self.rng.below(KEYS - 1));
        let Some(region) = self.region_of(&at) else {
            return Ok(());
        };
        if self.busy().contains(&region) {
            return Ok(());
        }
        let new_region = self.next_region;
        let command = Command::Split {
            at: encode_bytes(&at),
            new_region,
        };
        if self.propose(region, &command)? {
            self.next_region += 1;
            self.report.splits += 1;
        }
        Ok(())
    }
}
