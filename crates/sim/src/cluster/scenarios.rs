//! The named scenarios' scripted prologues (the seed story with real Raft).

use super::*;

impl Cluster {
    /// The named scenario's prologue, before the random run.
    pub(super) fn scenario(&mut self) -> Result<()> {
        match self.options.scenario {
            Scenario::Random => Ok(()),
            Scenario::Seed | Scenario::SeedUnobserved | Scenario::SnapshotSameEpochUnobserved => {
                self.seed_prologue()
            }
        }
    }

    /// `docs/scenarios.md` item 1 with real Raft. The last store caches region 1 as a follower
    /// (as TiKV's follower and learner caches do), then its link drops log appends: it
    /// hears heartbeats, stays a follower, and falls behind while the others write, split
    /// (the epoch moves on; not in `snapshot-same-epoch-unobserved`) and compact their
    /// logs. When the link heals it receives a Raft snapshot — ApplySnapshot evicts, or,
    /// with the event dropped, the next write or read reveals the gap. Then it leads the
    /// region, is read from, and the region splits again.
    pub(super) fn seed_prologue(&mut self) -> Result<()> {
        let lagging = self.options.stores;
        let at = (lagging - 1) as usize;
        for _ in 0..20 {
            self.step_quietly()?;
        }
        let peer = self.stores[at]
            .peers
            .get(&1)
            .context("region 1 on the lagging store")?;
        let (region, applied) = (peer.region.clone(), peer.applied);
        let _ = self.stores[at].engine.load_region(region, applied);
        let _ = self.stores[at]
            .engine
            .wait_idle(std::time::Duration::from_secs(60));
        if self.options.scenario != Scenario::Seed {
            self.stores[at].drops_snapshot_events = true;
        }
        self.slow_appends_to = Some(lagging);
        for _ in 0..30 {
            self.step_quietly()?;
        }
        if self.options.scenario != Scenario::SnapshotSameEpochUnobserved {
            self.split_at(1, b"k02000")?;
            for _ in 0..5 {
                self.step_quietly()?;
            }
        }
        for store in &mut self.stores {
            store.compact_logs(1)?;
        }
        self.slow_appends_to = None;
        for _ in 0..40 {
            self.tick();
            self.settle()?;
        }
        // Writes after the snapshot reach the lagging store too: its next apply report
        // is where a lost snapshot event shows (EpochGap, or IndexGap at the same epoch).
        for _ in 0..5 {
            self.step_quietly()?;
            self.read_all()?; // the lagging follower's reads too
        }
        self.stores[at].drops_snapshot_events = false;
        if let Some(leader) = self.leader_of(1) {
            let peer = self.stores[leader]
                .peers
                .get_mut(&1)
                .context("leader peer")?;
            peer.node.transfer_leader(lagging);
        }
        for _ in 0..20 {
            self.step_quietly()?;
            self.read_all()?;
        }
        self.split_at(1, b"k01000")?;
        for _ in 0..5 {
            self.step_quietly()?;
        }
        self.read_all()
    }

    /// A workload step without nemesis.
    pub(super) fn step_quietly(&mut self) -> Result<()> {
        self.workload()?;
        self.tick();
        self.settle()
    }

    /// Proposes a split of region `region` at user key `at`.
    pub(super) fn split_at(&mut self, region: u64, at: &[u8]) -> Result<()> {
        let command = Command::Split {
            at: encode_bytes(at),
            new_region: self.next_region,
        };
        if self.propose(region, &command)? {
            self.next_region += 1;
            self.report.splits += 1;
        }
        Ok(())
    }
}
