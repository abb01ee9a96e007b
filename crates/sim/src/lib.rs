//! `ime-sim`: IME under a real Raft cluster.
//!
//! Several stores in one process, each with its own RocksDB (in a temporary directory)
//! and its own [`ime_engine::Engine`]; regions replicated by raft-rs groups; a workload of
//! MVCC transactions in TiKV's formats (prewrites that lock, commits that write records,
//! rollbacks, short and long values) proposed through Raft and applied on every store
//! through its engine's write path; a seeded nemesis (partitions and heals, leader
//! transfers, splits, merges committed or rolled back, peer moves with destroys, SST
//! ingests, store restarts, log compaction that forces Raft snapshots onto lagging
//! followers, dropped bus events, GC); and a checker that compares every read with the
//! same store's disk at the same snapshot, then cross-checks every cache at the end. A
//! [`RunRecord`] replays a run.
//!
//! ```no_run
//! let options = ime_sim::Options { ops: 200, ..ime_sim::Options::default() };
//! let report = ime_sim::run(&options).unwrap();
//! assert!(report.mismatches.is_empty(), "{report}");
//! ```

mod chart;
mod cluster;
mod report;
mod store;

pub use chart::memory_svg;
pub use report::{Mismatch, Report};

use anyhow::{Context, Result, bail};
use ime_engine::Config;
use serde::{Deserialize, Serialize};

/// A named scenario: a scripted prologue before the random run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Only the seeded random run.
    Random,
    /// `docs/scenarios.md` item 1 with real Raft: a store falls behind, its log is compacted, a
    /// split moves the epoch on, the store receives a snapshot carrying the new version
    /// (ApplySnapshot evicts), leads the region, and the region splits again.
    Seed,
    /// The same with the snapshot event dropped on its way to the lagging store's engine:
    /// the snapshot's data still reaches the disk only through a fence, which evicts the
    /// region unannounced (`UnannouncedChange`) before the data changes.
    SeedUnobserved,
    /// A snapshot that does not change the epoch, its event dropped: the fence evicts
    /// (`UnannouncedChange`).
    SnapshotSameEpochUnobserved,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 4] = [
        Scenario::Random,
        Scenario::Seed,
        Scenario::SeedUnobserved,
        Scenario::SnapshotSameEpochUnobserved,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Random => "random",
            Scenario::Seed => "seed",
            Scenario::SeedUnobserved => "seed-unobserved",
            Scenario::SnapshotSameEpochUnobserved => "snapshot-same-epoch-unobserved",
        }
    }

    /// The scenario named `name`.
    ///
    /// # Errors
    /// An unknown name, listing the known ones.
    pub fn parse(name: &str) -> Result<Self> {
        match Scenario::ALL.into_iter().find(|s| s.name() == name) {
            Some(s) => Ok(s),
            None => {
                let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                bail!("unknown scenario {name:?}; known: {}", known.join(", "))
            }
        }
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The seed of every random choice.
    pub seed: u64,
    /// Stores in the cluster (each replicates every region).
    pub stores: u64,
    /// Steps of workload (three proposals each), nemesis and reads.
    pub ops: u64,
    /// Stop after this long even if steps remain (`None`: run every step).
    pub duration: Option<std::time::Duration>,
    /// The chance of a nemesis action per step, in percent.
    pub nemesis_percent: u64,
    /// Splits stop at this many regions.
    pub max_regions: usize,
    /// The scripted prologue.
    pub scenario: Scenario,
    /// Test only: engines that ignore ApplySnapshot and gaps, to prove the checker fails.
    pub broken_engine: bool,
    /// Test only: engines whose fences do not hold loads back, to prove the interleaving
    /// scheduler finds the stale reads fences prevent.
    pub unfenced_engine: bool,
    /// A directory to journal each store's Raft events into (`store-N.events`, the
    /// observer's journal format, readable with `ime_observer::read_journal`).
    pub event_journal: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            stores: 3,
            ops: 1500,
            duration: None,
            nemesis_percent: 8,
            max_regions: 16,
            scenario: Scenario::Random,
            broken_engine: false,
            unfenced_engine: false,
            event_journal: None,
        }
    }
}

/// The engines' configuration in the simulator: small enough that memory limits matter
/// and memtables are compacted (in pieces a scheduler interleaves with the rest),
/// background ticks left to the simulator's own GC steps.
fn engine_config() -> Result<Config> {
    Ok(Config::from_toml(
        r#"
        capacity = "128KiB"
        gc-run-interval = "1h"
        load-evict-interval = "1h"
        warmup-timeout = "200ms"
        memtable-compaction-entries = 32
        "#,
    )?)
}

/// Runs a simulation and returns its report (mismatches included; the caller decides).
///
/// # Errors
/// A store that cannot be opened, or a Raft or engine failure the simulation cannot go on
/// from.
pub fn run(options: &Options) -> Result<Report> {
    run_with_progress(options, &mut |_, _| {})
}

/// [`run`], calling `progress(step, steps)` after every step.
///
/// # Errors
/// As [`run`].
pub fn run_with_progress(options: &Options, progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
    if options.stores < 3 {
        bail!("--stores must be at least 3 (a store is partitioned away at times)");
    }
    let mut cluster = cluster::Cluster::new(options.clone(), &engine_config()?)?;
    cluster.run(progress)?;
    Ok(cluster.report.clone())
}

/// What replays a run: every option that steers it, with the number of steps it really
/// ran (a run cut short by `--duration` replays exactly as far), and the mismatches it
/// found, each with its store, region, key and event history. The same seed and options
/// replay the same Raft history and the same interleaving of the engines' background work
/// (the stores' schedulers are seeded), so what is cached at each read replays too. (Not
/// to be confused with `ime-observer`'s event journal, a file of Raft events.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`Options::seed`].
    pub seed: u64,
    /// [`Options::stores`].
    pub stores: u64,
    /// The steps the run took.
    pub ops: u64,
    /// [`Options::nemesis_percent`].
    pub nemesis_percent: u64,
    /// [`Options::max_regions`].
    pub max_regions: usize,
    /// The scenario's name.
    pub scenario: String,
    /// [`Options::broken_engine`].
    pub broken_engine: bool,
    /// [`Options::unfenced_engine`].
    #[serde(default)]
    pub unfenced_engine: bool,
    /// What the run found.
    pub mismatches: Vec<Mismatch>,
}

impl RunRecord {
    /// The record of a run made with `options` that produced `report`.
    pub fn new(options: &Options, report: &Report) -> Self {
        RunRecord {
            seed: options.seed,
            stores: options.stores,
            ops: report.ops,
            nemesis_percent: options.nemesis_percent,
            max_regions: options.max_regions,
            scenario: options.scenario.name().to_owned(),
            broken_engine: options.broken_engine,
            unfenced_engine: options.unfenced_engine,
            mismatches: report.mismatches.clone(),
        }
    }

    /// The options that replay the run (no time limit: the steps are counted).
    ///
    /// # Errors
    /// An unknown scenario name.
    pub fn options(&self) -> Result<Options> {
        Ok(Options {
            seed: self.seed,
            stores: self.stores,
            ops: self.ops,
            duration: None,
            nemesis_percent: self.nemesis_percent,
            max_regions: self.max_regions,
            scenario: Scenario::parse(&self.scenario)?,
            broken_engine: self.broken_engine,
            unfenced_engine: self.unfenced_engine,
            event_journal: None,
        })
    }

    /// Reads a run record file.
    ///
    /// # Errors
    /// The file cannot be read or is not a run record.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a run record", path.display()))
    }
}
