//! `cargo xtask bench`: runs the criterion suites, then prints every figure as a ratio
//! against its baseline measured in the same run (absolute times on these shared machines
//! mean little; ratios of neighbours in one run do).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One reported figure: `measured` against `baseline`, both criterion benchmark ids
/// (`group/function`): times, or (for ids under [`BYTES_GROUP_PREFIX`]) byte counts a
/// suite writes beside criterion's results, or values a suite measured itself and wrote
/// as `value.json` with their unit (the headline workload's write times and versions
/// touched per row).
struct Figure {
    suite: &'static str,
    name: &'static str,
    measured: &'static str,
    baseline: &'static str,
}

/// Figures whose group starts so are byte counts, not times.
const BYTES_GROUP_PREFIX: &str = "memkv/memtable_memory";

const FIGURES: &[Figure] = &[
    Figure {
        suite: "engine",
        name: "hybrid point get vs disk-only, same engine (goal 1/3)",
        measured: "engine/point_get_in_turn/hybrid",
        baseline: "engine/point_get_in_turn/disk_only",
    },
    Figure {
        suite: "engine",
        name: "  the same, criterion's times one after the other",
        measured: "engine/point_get/hybrid",
        baseline: "engine/point_get/disk_only",
    },
    Figure {
        suite: "engine",
        name: "hybrid MVCC scan, 100 versions/key, after GC vs disk-only (goal 1/20)",
        measured: "engine/mvcc_scan_100_versions/hybrid_after_gc",
        baseline: "engine/mvcc_scan_100_versions/disk_only",
    },
    Figure {
        suite: "engine",
        name: "hybrid write apply, batches of 16, vs bare RocksDB (goal 1.11 = 0.9x throughput)",
        measured: "engine/write_batch_16_in_turn/hybrid",
        baseline: "engine/write_batch_16_in_turn/rocksdb",
    },
    Figure {
        suite: "engine",
        name: "  the same, criterion's times one after the other",
        measured: "engine/write_batch_16/hybrid",
        baseline: "engine/write_batch_16/rocksdb",
    },
    Figure {
        suite: "engine",
        name: "  the hybrid write vs IME's disk layer alone (what the cache costs a write)",
        measured: "engine/write_batch_16_in_turn/hybrid",
        baseline: "engine/write_batch_16_in_turn/ime_disk",
    },
    Figure {
        suite: "engine",
        name: "  IME's disk layer alone vs bare RocksDB",
        measured: "engine/write_batch_16_in_turn/ime_disk",
        baseline: "engine/write_batch_16_in_turn/rocksdb",
    },
    Figure {
        suite: "engine",
        name: "load a region vs a bare RocksDB iteration, no copies (goal 1.5)",
        measured: "engine/load_in_turn/load_region",
        baseline: "engine/load_in_turn/rocksdb_iteration",
    },
    Figure {
        suite: "engine",
        name: "  the same, criterion's times one after the other",
        measured: "engine/load/load_region",
        baseline: "engine/load/rocksdb_iteration",
    },
    Figure {
        suite: "engine",
        name: "evict a 256 MiB region (foreground call) vs a tiny one (goal under 10 ms)",
        measured: "engine/evict/large_region",
        baseline: "engine/evict/tiny_region",
    },
    Figure {
        suite: "engine",
        name: "get p99 on another region during evictions vs quiet, after a load (goal 1.2)",
        measured: "engine/get_p99_other_region_in_turn/during_evictions",
        baseline: "engine/get_p99_other_region_in_turn/quiet",
    },
    Figure {
        suite: "engine",
        name: "  the same, criterion's times one after the other",
        measured: "engine/get_p99_other_region/during_evictions",
        baseline: "engine/get_p99_other_region/quiet",
    },
    Figure {
        suite: "engine",
        name: "cached gets: two reader threads vs one, same work (goal 0.56 = 1.8x)",
        measured: "engine/readers_in_turn/two_threads",
        baseline: "engine/readers_in_turn/one_thread",
    },
    Figure {
        suite: "engine",
        name: "  the same, criterion's times one after the other",
        measured: "engine/readers/two_threads",
        baseline: "engine/readers/one_thread",
    },
    Figure {
        suite: "engine",
        name: "  arithmetic sharing nothing, two threads vs one (the machine's ceiling)",
        measured: "engine/arithmetic_in_turn/two_threads",
        baseline: "engine/arithmetic_in_turn/one_thread",
    },
    Figure {
        suite: "engine",
        name: "  binary searches sharing nothing written, two threads vs one (the ceiling for work that waits on memory)",
        measured: "engine/searches_in_turn/two_threads",
        baseline: "engine/searches_in_turn/one_thread",
    },
    Figure {
        suite: "engine",
        name: "two apply threads, different regions, vs two on bare RocksDB (goal 1.11)",
        measured: "engine/two_writers_in_turn/hybrid",
        baseline: "engine/two_writers_in_turn/rocksdb",
    },
    Figure {
        suite: "engine",
        name: "  the same, criterion's times one after the other",
        measured: "engine/two_writers/hybrid",
        baseline: "engine/two_writers/rocksdb",
    },
    Figure {
        suite: "engine",
        name: "  the same, rounds whose hybrid block saw no compaction end",
        measured: "engine/two_writers_in_turn_no_compaction/hybrid",
        baseline: "engine/two_writers_in_turn_no_compaction/rocksdb",
    },
    Figure {
        suite: "engine",
        name: "cached get p99 beside a writer on another region vs quiet (goal 1.2)",
        measured: "engine/get_p99_beside_a_writer_in_turn/writing",
        baseline: "engine/get_p99_beside_a_writer_in_turn/quiet",
    },
    Figure {
        suite: "engine",
        name: "the same p99 beside a bare RocksDB writer vs quiet (the machine's share)",
        measured: "engine/get_p99_beside_a_writer_in_turn/bare_writer",
        baseline: "engine/get_p99_beside_a_writer_in_turn/quiet",
    },
    Figure {
        suite: "engine",
        name: "the same p99 beside the engine's writer vs beside a bare one (the engine's)",
        measured: "engine/get_p99_beside_a_writer_in_turn/writing",
        baseline: "engine/get_p99_beside_a_writer_in_turn/bare_writer",
    },
    Figure {
        suite: "engine",
        name: "  the first p99 ratio, criterion's times one after the other",
        measured: "engine/get_p99_beside_a_writer/writing",
        baseline: "engine/get_p99_beside_a_writer/quiet",
    },
    Figure {
        suite: "headline",
        name: "queue table: live-row scan, 400k versions, hybrid vs disk-only (goal 1/50)",
        measured: "headline/scan_400k/hybrid",
        baseline: "headline/scan_400k/disk_only",
    },
    Figure {
        suite: "headline",
        name: "queue table: live-row scan, 40k versions, hybrid vs disk-only",
        measured: "headline/scan_40k/hybrid",
        baseline: "headline/scan_40k/disk_only",
    },
    Figure {
        suite: "headline",
        name: "queue table: live-row scan, 4M versions, hybrid vs disk-only",
        measured: "headline/scan_4m/hybrid",
        baseline: "headline/scan_4m/disk_only",
    },
    Figure {
        suite: "headline",
        name: "queue table: hybrid scan at 4M versions vs at 40k (flat: 1)",
        measured: "headline/scan_4m/hybrid",
        baseline: "headline/scan_40k/hybrid",
    },
    Figure {
        suite: "headline",
        name: "queue table: disk-only scan at 4M versions vs at 40k",
        measured: "headline/scan_4m/disk_only",
        baseline: "headline/scan_40k/disk_only",
    },
    Figure {
        suite: "headline",
        name: "queue table: versions touched per row, 400k, hybrid vs disk-only",
        measured: "headline/versions_400k/hybrid",
        baseline: "headline/versions_400k/disk_only",
    },
    Figure {
        suite: "headline",
        name: "queue table: write per batch, 400k, hybrid vs disk-only (goal 1.05)",
        measured: "headline/write_400k/hybrid",
        baseline: "headline/write_400k/disk_only",
    },
    Figure {
        suite: "memkv",
        name: "memkv point get (1M keys) vs a BTreeMap",
        measured: "memkv/point_get/memkv",
        baseline: "memkv/point_get/btreemap",
    },
    Figure {
        suite: "memkv",
        name: "memkv point get (1M keys) vs RocksDB, warm (goal 1/3)",
        measured: "memkv/point_get/memkv",
        baseline: "memkv/point_get/rocksdb",
    },
    Figure {
        suite: "memkv",
        name: "memkv snapshot + get: two threads vs one, same work",
        measured: "memkv/readers/two_threads",
        baseline: "memkv/readers/one_thread",
    },
    Figure {
        suite: "memkv",
        name: "memkv MVCC scan after GC vs RocksDB (goal 1/20)",
        measured: "memkv/mvcc_scan_100_versions/after_gc",
        baseline: "memkv/mvcc_scan_100_versions/rocksdb",
    },
    Figure {
        suite: "memkv",
        name: "memkv scan, 1 version/key vs iterating a Vec",
        measured: "memkv/scan_1_version/memkv",
        baseline: "memkv/scan_1_version/vec",
    },
    Figure {
        suite: "memkv",
        name: "memkv MVCC scan, 100 versions/key: after GC vs before",
        measured: "memkv/mvcc_scan_100_versions/after_gc",
        baseline: "memkv/mvcc_scan_100_versions/before_gc",
    },
    Figure {
        suite: "memkv",
        name: "memkv bulk load in key order vs collecting a BTreeMap",
        measured: "memkv/bulk_load/memkv",
        baseline: "memkv/bulk_load/btreemap",
    },
    Figure {
        suite: "memkv",
        name: "memkv drop (foreground) of a 100k-entry range vs a 10-entry one",
        measured: "memkv/drop_range/large",
        baseline: "memkv/drop_range/tiny",
    },
    Figure {
        suite: "memkv",
        name: "memkv drop (foreground) of a 256 MiB range beside 1M keys vs beside 1k (goal 1)",
        measured: "memkv/drop_256mib/beside_large",
        baseline: "memkv/drop_256mib/beside_small",
    },
    Figure {
        suite: "memkv",
        name: "memtable write, batches of 16 vs BTreeMap inserts (the old memtable)",
        measured: "memkv/memtable_write_16/memkv",
        baseline: "memkv/memtable_write_16/btreemap",
    },
    Figure {
        suite: "memkv",
        name: "memtable memory per entry vs its key + value bytes (goal 2)",
        measured: "memkv/memtable_memory/memtable",
        baseline: "memkv/memtable_memory/encoded",
    },
    Figure {
        suite: "disk",
        name: "RocksDB point get (1M keys, warm) vs a BTreeMap",
        measured: "disk/point_get/rocksdb",
        baseline: "disk/point_get/btreemap",
    },
    Figure {
        suite: "disk",
        name: "RocksDB MVCC scan, 100 versions/key vs a BTreeMap",
        measured: "disk/mvcc_scan_100_versions/rocksdb",
        baseline: "disk/mvcc_scan_100_versions/btreemap",
    },
    Figure {
        suite: "disk",
        name: "RocksDB MVCC scan vs RocksDB full iteration",
        measured: "disk/mvcc_scan_100_versions/rocksdb",
        baseline: "disk/mvcc_scan_100_versions/rocksdb_full_iteration",
    },
    Figure {
        suite: "disk",
        name: "RocksDB write batch of 16 (WAL on) vs BTreeMap inserts",
        measured: "disk/write_batch_16/rocksdb_wal",
        baseline: "disk/write_batch_16/btreemap",
    },
    Figure {
        suite: "observer",
        name: "sync dispatch per event vs a locked dynamic call",
        measured: "observer/dispatch/sync",
        baseline: "observer/dispatch/locked_dyn_call",
    },
    Figure {
        suite: "observer",
        name: "queued dispatch per event vs a bare crossbeam channel",
        measured: "observer/dispatch/queued",
        baseline: "observer/dispatch/channel_baseline",
    },
    Figure {
        suite: "observer",
        name: "journal append (buffered) vs bincode encoding alone",
        measured: "observer/journal/append_buffered",
        baseline: "observer/journal/encode_only",
    },
    Figure {
        suite: "observer",
        name: "journal append + flush vs bincode encoding alone",
        measured: "observer/journal/append_flushed",
        baseline: "observer/journal/encode_only",
    },
];

/// The eviction-policy table is a replay, not a timing: it runs as an example.
const POLICY_SUITE: &str = "policy";

/// Runs the suites named in `args` (all when none) and prints the ratio table.
pub(crate) fn run(root: &Path, args: &[&str]) -> Result<()> {
    let all = args.is_empty();
    let (policy, timed): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| **a == POLICY_SUITE);
    if all || !policy.is_empty() {
        crate::cargo(
            &[
                "run",
                "--quiet",
                "--release",
                "-p",
                "ime-eviction",
                "--example",
                "policy_table",
            ],
            &[],
        )?;
        if !all && timed.is_empty() {
            return Ok(());
        }
    }
    let suites: Vec<&str> = if all {
        let mut suites: Vec<&str> = FIGURES.iter().map(|f| f.suite).collect();
        suites.dedup();
        suites
    } else {
        timed
    };
    for suite in &suites {
        if !FIGURES.iter().any(|f| f.suite == *suite) {
            bail!("unknown bench suite `{suite}`");
        }
        crate::cargo(&["bench", "-p", "ime-benches", "--bench", suite], &[])?;
    }
    let criterion_dir = target_dir(root)?.join("criterion");
    println!(
        "\n{:<58} {:>12} {:>12} {:>8}",
        "figure", "measured", "baseline", "ratio"
    );
    for figure in FIGURES.iter().filter(|f| suites.contains(&f.suite)) {
        let (measured, baseline, format): (f64, f64, fn(f64) -> String) =
            if let Some((measured, unit)) = value(&criterion_dir, figure.measured)? {
                let (baseline, _) = value(&criterion_dir, figure.baseline)?
                    .with_context(|| format!("no value for {}", figure.baseline))?;
                let format: fn(f64) -> String = match unit.as_str() {
                    "ns" => format_ns,
                    _ => format_count,
                };
                (measured, baseline, format)
            } else if figure.measured.starts_with(BYTES_GROUP_PREFIX) {
                let measured = bytes(&criterion_dir, figure.measured)?;
                (
                    measured,
                    bytes(&criterion_dir, figure.baseline)?,
                    format_bytes,
                )
            } else {
                let measured = mean_ns(&criterion_dir, figure.measured)?;
                (
                    measured,
                    mean_ns(&criterion_dir, figure.baseline)?,
                    format_ns,
                )
            };
        println!(
            "{:<58} {:>12} {:>12} {:>8}",
            figure.name,
            format(measured),
            format(baseline),
            format_ratio(measured / baseline),
        );
    }
    println!(
        "\nratio = measured / baseline, both from this run (times: lower is faster; bytes: \
         lower is leaner). The engine's point get, write of 16, readers, writers, p99 \
         beside a writer, p99 during evictions and load are timed in blocks of each side in \
         turn, which meet the same drift of a shared machine; criterion's times of the same, \
         one benchmark after the other, follow some of them."
    );
    Ok(())
}

fn format_ns(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{:.2} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{:.2} us", ns / 1e3),
        ns => format!("{ns:.1} ns"),
    }
}

/// A ratio as `1.23x`, or, below a tenth, as `1/82` (so that a small one keeps its digits,
/// and reads like the goals written as fractions).
fn format_ratio(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.1 {
        format!("1/{:.0}", 1.0 / ratio)
    } else {
        format!("{ratio:.2}x")
    }
}

fn format_count(count: f64) -> String {
    format!("{count:.1}")
}

/// A value a suite measured itself (`<group>/<function>/value.json`: `value` and `unit`),
/// if it wrote one for `id`.
fn value(criterion_dir: &Path, id: &str) -> Result<Option<(f64, String)>> {
    let (group, function) = id.rsplit_once('/').unwrap_or(("", id));
    let path = criterion_dir
        .join(group.replace('/', "_"))
        .join(function)
        .join("value.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let number = json["value"]
        .as_f64()
        .with_context(|| format!("{} has no value", path.display()))?;
    Ok(Some((
        number,
        json["unit"].as_str().unwrap_or("").to_owned(),
    )))
}

fn format_bytes(bytes: f64) -> String {
    format!("{bytes:.1} B")
}

/// The byte count a suite wrote for `id` (`<group>/<function>/bytes.json`).
fn bytes(criterion_dir: &Path, id: &str) -> Result<f64> {
    result(criterion_dir, id, "bytes.json", &["bytes"])
}

/// Criterion's mean estimate for benchmark `id`, in nanoseconds per iteration.
fn mean_ns(criterion_dir: &Path, id: &str) -> Result<f64> {
    result(
        criterion_dir,
        id,
        "new/estimates.json",
        &["mean", "point_estimate"],
    )
}

/// The number at `field` (a path of object keys) in benchmark `id`'s `file`. Criterion
/// files a benchmark under its group's name with `/` made `_`.
fn result(criterion_dir: &Path, id: &str, file: &str, field: &[&str]) -> Result<f64> {
    let (group, function) = id.rsplit_once('/').unwrap_or(("", id));
    let path = criterion_dir
        .join(group.replace('/', "_"))
        .join(function)
        .join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no result for {id} at {}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    field
        .iter()
        .fold(&json, |value, key| &value[*key])
        .as_f64()
        .with_context(|| format!("{} has no {}", path.display(), field.join(".")))
}

fn target_dir(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("cargo metadata")?;
    let json: Value = serde_json::from_slice(&output.stdout).context("cargo metadata output")?;
    let dir = json["target_directory"]
        .as_str()
        .context("no target_directory in cargo metadata")?;
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times come from criterion's estimates, byte counts from the suites' own files, each
    /// under the group's name with `/` made `_`; a missing file or field is an error.
    #[test]
    fn results_are_read_where_criterion_and_the_suites_file_them() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-results-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let time = dir.join("memkv_readers/one_thread/new");
        let size = dir.join("memkv_memtable_memory/memtable");
        std::fs::create_dir_all(&time).unwrap();
        std::fs::create_dir_all(&size).unwrap();
        std::fs::write(
            time.join("estimates.json"),
            r#"{"mean": {"point_estimate": 12.5}}"#,
        )
        .unwrap();
        std::fs::write(size.join("bytes.json"), r#"{"bytes": 68.1}"#).unwrap();
        assert_eq!(mean_ns(&dir, "memkv/readers/one_thread").unwrap(), 12.5);
        assert_eq!(bytes(&dir, "memkv/memtable_memory/memtable").unwrap(), 68.1);
        assert!(bytes(&dir, "memkv/memtable_memory/encoded").is_err());
        std::fs::write(size.join("bytes.json"), r#"{"size": 1}"#).unwrap();
        let err = bytes(&dir, "memkv/memtable_memory/memtable").unwrap_err();
        assert!(err.to_string().contains("has no bytes"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_figure_names_a_known_suite_and_distinct_ids() {
        for figure in FIGURES {
            assert_ne!(figure.measured, figure.baseline, "{}", figure.name);
            assert!(figure.measured.starts_with(figure.suite), "{}", figure.name);
            assert!(figure.baseline.starts_with(figure.suite), "{}", figure.name);
        }
    }

    #[test]
    fn tiny_ratios_print_as_fractions() {
        assert_eq!(format_ratio(1.37), "1.37x");
        assert_eq!(format_ratio(0.25), "0.25x");
        assert_eq!(format_ratio(0.0122), "1/82");
        assert_eq!(format_ratio(10.0 / 32_140.0), "1/3214");
    }

    #[test]
    fn durations_print_in_readable_units() {
        assert_eq!(format_ns(1_500.0), "1.50 us");
        assert_eq!(format_ns(12.34), "12.3 ns");
        assert_eq!(format_ns(2.5e9), "2.50 s");
    }
}
