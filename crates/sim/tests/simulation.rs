//! The simulator as CI runs it: short seeded runs with the nemesis must see no mismatch,
//! the seed scenarios must show their eviction reasons, and an engine broken on purpose
//! must be caught — the checker can fail.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use ime_engine::region::EvictReason;
use ime_sim::{Options, Report, RunRecord, Scenario, run};

fn options(seed: u64, scenario: Scenario) -> Options {
    Options {
        seed,
        ops: 150,
        scenario,
        ..Options::default()
    }
}

/// Every kind of change the nemesis makes, as counted over several runs.
fn kinds(seen: &Report) -> [(&'static str, u64); 11] {
    [
        ("reads from memory", seen.leader_reads[0]),
        ("splits", seen.splits),
        ("merges applied", seen.merges_applied.0),
        ("merge rollbacks applied", seen.merges_applied.1),
        ("membership changes applied", seen.peer_changes_applied),
        ("peers destroyed", seen.peers_destroyed),
        ("snapshots applied", seen.snapshots.1),
        ("leader transfers", seen.transfers),
        ("restarts", seen.restarts),
        ("events dropped by bus faults", seen.events_dropped),
        ("gaps detected", seen.epoch_gaps),
    ]
}

#[test]
fn short_seeded_runs_with_the_nemesis_see_no_mismatch() {
    // Seeds in a row until every kind of change has happened at least once (a few
    // suffice; the bound keeps a nemesis that stopped doing something from passing).
    let mut seen = Report::default();
    for seed in 1..=8 {
        let report = run(&Options {
            nemesis_percent: 30,
            ops: 300,
            ..options(seed, Scenario::Random)
        })
        .unwrap();
        assert!(report.mismatches.is_empty(), "{report}");
        seen.leader_reads[0] += report.leader_reads[0];
        seen.splits += report.splits;
        seen.merges_applied.0 += report.merges_applied.0;
        seen.merges_applied.1 += report.merges_applied.1;
        seen.peer_changes_applied += report.peer_changes_applied;
        seen.peers_destroyed += report.peers_destroyed;
        seen.snapshots.1 += report.snapshots.1;
        seen.transfers += report.transfers;
        seen.restarts += report.restarts;
        seen.events_dropped += report.events_dropped;
        seen.epoch_gaps += report.epoch_gaps + report.index_gaps;
        if kinds(&seen).iter().all(|(_, n)| *n > 0) {
            return;
        }
    }
    let missing: Vec<&str> = kinds(&seen)
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(what, _)| *what)
        .collect();
    panic!("eight seeded runs never saw: {missing:?}");
}

#[test]
fn the_seed_scenario_evicts_on_apply_snapshot() {
    let report = run(&options(3, Scenario::Seed)).unwrap();
    assert!(report.mismatches.is_empty(), "{report}");
    assert_eq!(report.evicted(EvictReason::ApplySnapshot), 1, "{report}");
    assert!(report.snapshots.1 > 0, "{report}");
}

/// The snapshot's event is lost, but its data reaches the disk only through a fence, and
/// a fence no event announced evicts what it covers: the region leaves the cache before
/// the data changes, and no read is stale.
#[test]
fn the_seed_scenario_with_its_event_lost_is_caught_by_the_fence() {
    let report = run(&options(3, Scenario::SeedUnobserved)).unwrap();
    assert!(report.mismatches.is_empty(), "{report}");
    assert_eq!(report.evicted(EvictReason::ApplySnapshot), 0, "{report}");
    assert_eq!(
        report.evicted(EvictReason::UnannouncedChange),
        1,
        "{report}"
    );
}

#[test]
fn a_lost_snapshot_at_the_same_epoch_is_caught_by_the_fence() {
    let report = run(&options(3, Scenario::SnapshotSameEpochUnobserved)).unwrap();
    assert!(report.mismatches.is_empty(), "{report}");
    assert_eq!(report.evicted(EvictReason::ApplySnapshot), 0, "{report}");
    assert_eq!(
        report.evicted(EvictReason::UnannouncedChange),
        1,
        "{report}"
    );
}

#[test]
fn a_broken_engine_is_caught_by_the_checker() {
    let broken = Options {
        broken_engine: true,
        ..options(3, Scenario::SnapshotSameEpochUnobserved)
    };
    let report = run(&broken).unwrap();
    assert!(
        !report.mismatches.is_empty(),
        "the checker must fail a broken engine:\n{report}"
    );
    let first = &report.mismatches[0];
    assert!(
        first
            .history
            .iter()
            .any(|line| line.contains("ApplySnapshot")),
        "{first:?}"
    );
}

/// What a replay must reproduce of a run: the Raft-driven history and what the checker saw.
fn outline(report: &Report) -> Vec<u64> {
    vec![
        report.ops,
        report.prewrites,
        report.commits,
        report.splits,
        report.ingests,
        report.restarts,
        report.merges_applied.0,
        report.merges_applied.1,
        report.peer_changes_applied,
        report.peers_destroyed,
        report.snapshots.1,
        report.leader_reads[0],
        report.leader_reads[1],
        report.follower_reads[0],
        report.follower_reads[1],
        report.epoch_gaps,
        report.index_gaps,
    ]
}

#[test]
fn a_run_record_replays_its_run() {
    let options = Options {
        nemesis_percent: 30,
        ops: 200,
        ..options(5, Scenario::Random)
    };
    let first = run(&options).unwrap();
    let record = RunRecord::new(&options, &first);
    let text = serde_json::to_string(&record).unwrap();
    let read: RunRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(read, record);
    let again = run(&read.options().unwrap()).unwrap();
    assert_eq!(outline(&again), outline(&first), "{first}\n{again}");
}

#[test]
fn a_run_record_replays_the_mismatches_of_a_broken_engine() {
    let broken = Options {
        broken_engine: true,
        ..options(3, Scenario::SnapshotSameEpochUnobserved)
    };
    let first = run(&broken).unwrap();
    assert!(!first.mismatches.is_empty());
    assert!(first.mismatches.iter().all(|m| m.key.is_some()), "{first}");
    let record = RunRecord::new(&broken, &first);
    let again = run(&record.options().unwrap()).unwrap();
    assert_eq!(again.mismatches, record.mismatches);
}

#[test]
fn a_run_cut_short_by_its_duration_replays_as_far_as_it_went() {
    let options = Options {
        ops: 1_000_000,
        duration: Some(std::time::Duration::from_millis(300)),
        ..options(6, Scenario::Random)
    };
    let first = run(&options).unwrap();
    assert!(first.ops > 0 && first.ops < 1_000_000, "{first}");
    let record = RunRecord::new(&options, &first);
    let replay = record.options().unwrap();
    assert_eq!((replay.ops, replay.duration), (first.ops, None));
    assert_eq!(outline(&run(&replay).unwrap()), outline(&first));
}

/// The interleaving bites: with fences that do not hold loads back (a test-only mutation),
/// the seeded scheduler runs a load between a change's event and its disk write on some
/// seed CI runs, and the checker catches the stale reads. With fences, the same seeds see
/// none (`short_seeded_runs_with_the_nemesis_see_no_mismatch` and this test's own check).
#[test]
fn without_fences_the_interleaving_finds_stale_reads() {
    for seed in 1..=12 {
        let options = Options {
            nemesis_percent: 30,
            ops: 300,
            ..options(seed, Scenario::Random)
        };
        let unfenced = run(&Options {
            unfenced_engine: true,
            ..options.clone()
        })
        .unwrap();
        if unfenced.mismatches.is_empty() {
            continue;
        }
        let fenced = run(&options).unwrap();
        assert!(fenced.mismatches.is_empty(), "{fenced}");
        eprintln!(
            "seed {seed}: {} stale reads without fences; the first: {:?}",
            unfenced.mismatches.len(),
            unfenced.mismatches[0]
        );
        return;
    }
    panic!("twelve seeds never caught the unfenced engine: the scheduler does not interleave");
}

/// Asked for, each store journals every event it publishes (through the bus, or with a
/// fence) in the observer's journal format, across restarts.
#[test]
fn the_stores_events_can_be_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(&Options {
        nemesis_percent: 30,
        ops: 200,
        event_journal: Some(dir.path().to_path_buf()),
        ..options(5, Scenario::Random)
    })
    .unwrap();
    assert!(report.mismatches.is_empty(), "{report}");
    let mut kinds = std::collections::BTreeSet::new();
    for store in 1..=3 {
        let path = dir.path().join(format!("store-{store}.events"));
        let contents = ime_engine::observer::read_journal(&path).unwrap();
        assert!(!contents.entries.is_empty(), "{}", path.display());
        for entry in contents.entries {
            if let ime_engine::observer::JournalEntry::Event(event) = entry {
                kinds.insert(event.kind().as_str());
            }
        }
    }
    for kind in ["Split", "RoleChange", "IngestSst"] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
}
