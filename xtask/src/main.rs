//! `cargo xtask`: the project's one entry point for what CI runs.
//!
//! ```text
//! cargo xtask ci [--fast]      fmt check, clippy (warnings denied), tests, each crate's
//!                              example, docs (warnings denied); the tidy checks run as
//!                              tests of this crate
//! cargo xtask bench [SUITE..]  criterion suites, then each figure as a ratio against its
//!                              baseline measured in the same run
//! cargo xtask sim [ARGS..]     the simulator (a Raft cluster driving IME), release build
//! cargo xtask soak [--seeds N] [--duration 10m] [--nemesis PERCENT] [--ops N]
//!                              many simulator seeds in a row, stopping at the first failure
//! ```

mod bench;
mod preflight;
mod tidy;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci [--fast]         what CI runs: fmt check, clippy -D warnings, all tests, each library
                      crate's example, docs -D warnings
                      (--fast skips clippy and the doc build)
  bench [SUITE...]    run the criterion suites (all, or those named: disk, memkv,
                      observer, policy) and print
                      each figure as a ratio against its same-run baseline
  sim [ARGS...]       run the simulator: --seed N --stores N --ops N --nemesis PERCENT
                      --duration 60s --scenario NAME --out DIR --replay RUN_RECORD
                      --event-journal DIR --mutation broken|unfenced
                      (scenarios: random, seed, seed-unobserved, snapshot-same-epoch-unobserved)
  soak [--seeds N] [--duration 10m] [--nemesis PERCENT] [--ops N] [--stores N]
                      run the simulator on seeds 1, 2, ... until N seeds (default 20, or no
                      limit with --duration alone) or the duration has passed, stopping at
                      the first failure; the other options go to every run";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Every command but help builds RocksDB; say at once when it cannot.
    if !matches!(args.as_slice(), ["help" | "--help" | "-h"] | []) {
        preflight::libclang()?;
    }
    match args.as_slice() {
        ["ci"] => ci(false),
        ["ci", "--fast"] => ci(true),
        ["bench", suites @ ..] => bench::run(&tidy::workspace_root(), suites),
        ["sim", rest @ ..] => sim(rest),
        ["soak", rest @ ..] => soak(rest),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{}`\n\n{USAGE}", other.join(" ")),
    }
}

/// Runs the simulator binary, built in release mode, with `args`.
fn sim(args: &[&str]) -> Result<()> {
    let mut all = vec!["run", "--release", "--quiet", "-p", "ime-sim", "--"];
    all.extend_from_slice(args);
    cargo(&all, &[])
}

/// How long and how many seeds a soak runs, and the simulator options passed on.
#[derive(Debug, PartialEq, Eq)]
struct SoakLimits {
    seeds: Option<u64>,
    duration: Option<std::time::Duration>,
    /// `--nemesis`, `--ops`, `--stores`, passed to every run.
    sim_args: Vec<String>,
}

fn soak_limits(args: &[&str]) -> Result<SoakLimits> {
    let mut limits = SoakLimits {
        seeds: None,
        duration: None,
        sim_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match *flag {
            "--seeds" => limits.seeds = Some(value.parse().context("--seeds takes a number")?),
            "--duration" => {
                let (n, unit) = value.split_at(
                    value
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(value.len()),
                );
                let n: u64 = n.parse().with_context(|| format!("--duration {value:?}"))?;
                let secs = match unit {
                    "" | "s" => n,
                    "m" => n * 60,
                    "h" => n * 3600,
                    other => bail!("--duration: unknown unit {other:?} (s, m or h)"),
                };
                limits.duration = Some(std::time::Duration::from_secs(secs));
            }
            "--nemesis" | "--ops" | "--stores" => {
                value
                    .parse::<u64>()
                    .with_context(|| format!("{flag} takes a number"))?;
                limits
                    .sim_args
                    .extend([flag.to_string(), value.to_string()]);
            }
            other => bail!(
                "unknown soak argument {other:?} \
                 (known: --seeds N --duration 10m --nemesis PERCENT --ops N --stores N)"
            ),
        }
    }
    if limits.seeds.is_none() && limits.duration.is_none() {
        limits.seeds = Some(20);
    }
    Ok(limits)
}

/// Runs the simulator on seeds 1, 2, ... within the limits, stopping at the first that
/// fails (its run record, in `target/sim`, replays it).
fn soak(args: &[&str]) -> Result<()> {
    let limits = soak_limits(args)?;
    let started = std::time::Instant::now();
    let mut seed = 0;
    while limits.seeds.is_none_or(|n| seed < n)
        && limits.duration.is_none_or(|d| started.elapsed() < d)
    {
        seed += 1;
        let text = seed.to_string();
        let mut args = vec!["--seed", text.as_str()];
        args.extend(limits.sim_args.iter().map(String::as_str));
        sim(&args).with_context(|| format!("seed {seed} failed"))?;
    }
    println!(
        "soak: {seed} seeds in {:.0?}, no mismatch",
        started.elapsed()
    );
    Ok(())
}

/// Runs every check CI runs, in order of increasing cost, stopping at the first failure.
/// Last, checks that those commands ran RocksDB's build script (and so its C++ build) at
/// most once between them: they must agree on its hash.
fn ci(fast: bool) -> Result<()> {
    let started = std::time::SystemTime::now();
    cargo(&["fmt", "--all", "--check"], &[])?;
    if !fast {
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
    }
    cargo(&["test", "--workspace", "--locked"], &[])?;
    run_examples(&target_dir())?;
    if !fast {
        cargo(
            &["doc", "--workspace", "--no-deps", "--locked"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )?;
    }
    rocksdb_built_once(&target_dir(), started)?;
    println!("xtask ci: all checks passed");
    Ok(())
}

/// Each library crate's runnable example, as (crate directory, package, example): its
/// README opens with the example's source (a tidy test checks it), and `ci` runs it.
pub(crate) const EXAMPLES: &[(&str, &str, &str)] = &[
    ("crates/memkv", "ime-memkv", "standalone"),
    ("crates/region", "ime-region", "lifecycle"),
    ("crates/observer", "ime-observer", "bus_and_journal"),
    ("crates/eviction", "ime-eviction", "replay_trace"),
    ("crates/disk", "ime-disk", "over_rocksdb"),
    ("crates/engine", "ime-engine", "apply_loop"),
];

/// Runs every example in [`EXAMPLES`], as `cargo test` built them (so nothing is built
/// again with other features), printing how long each took.
fn run_examples(target: &std::path::Path) -> Result<()> {
    let dir = target.join("debug").join("examples");
    for (_, package, name) in EXAMPLES {
        let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let started = std::time::Instant::now();
        let output = Command::new(&binary)
            .current_dir(tidy::workspace_root())
            .output()
            .with_context(|| format!("could not run example {package}/{name} ({binary:?})"))?;
        if !output.status.success() {
            bail!(
                "example {package}/{name} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        println!(
            "xtask: example {package}/{name} ran in {:.2?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// The target directory cargo uses here.
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tidy::workspace_root().join("target"))
}

/// Fails when RocksDB's build script ran more than once (in the debug profile) since
/// `since`: two commands then disagreed on its hash, and RocksDB's C++ was compiled twice.
fn rocksdb_built_once(target: &std::path::Path, since: std::time::SystemTime) -> Result<()> {
    let runs = rocksdb_build_runs(&target.join("debug").join("build"), since);
    if runs.len() > 1 {
        bail!(
            "RocksDB was built {} times by one `cargo xtask ci` ({}): the commands disagree \
             on librocksdb-sys's build hash (host features or profile settings differ)",
            runs.len(),
            runs.join(", ")
        );
    }
    Ok(())
}

/// The librocksdb-sys build-script runs under `build_dir` whose output was written since
/// `since`, by directory name.
fn rocksdb_build_runs(build_dir: &std::path::Path, since: std::time::SystemTime) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(build_dir) else {
        return Vec::new();
    };
    let mut runs: Vec<String> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("librocksdb-sys-")
        })
        .filter(|e| {
            std::fs::metadata(e.path().join("output"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    runs
}

/// Runs `cargo <args>` from the workspace root with extra environment variables.
pub(crate) fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(tidy::workspace_root())
        .status()
        .with_context(|| format!("could not start `cargo {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check counts build-script runs written since the CI run began, and only those.
    #[test]
    fn rocksdb_build_runs_count_only_fresh_outputs() {
        let target = tempfile_dir();
        let dir = target.join("debug").join("build");
        let run = |name: &str, with_output: bool| {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).unwrap();
            if with_output {
                std::fs::write(path.join("output"), "cargo:rustc-link-lib=rocksdb").unwrap();
            }
        };
        let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        run("librocksdb-sys-aaaa", true);
        run("librocksdb-sys-bbbb", false); // a compiled build script, not a run
        run("zstd-sys-cccc", true);
        assert_eq!(rocksdb_build_runs(&dir, before), ["librocksdb-sys-aaaa"]);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(rocksdb_build_runs(&dir, later).is_empty());
        assert!(rocksdb_built_once(&target, before).is_ok());
        run("librocksdb-sys-dddd", true);
        assert_eq!(rocksdb_build_runs(&dir, before).len(), 2);
        assert!(rocksdb_built_once(&target, before).is_err());
        std::fs::remove_dir_all(&target).unwrap();
    }

    /// A fresh directory under the system's temporary one.
    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-rocksdb-runs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn soak_limits_parse() {
        let limits = |args: &[&str]| soak_limits(args).unwrap();
        assert_eq!(limits(&[]).seeds, Some(20));
        assert_eq!(limits(&["--seeds", "5"]).seeds, Some(5));
        let passed = limits(&["--seeds", "3", "--nemesis", "20", "--ops", "800"]);
        assert_eq!(passed.sim_args, ["--nemesis", "20", "--ops", "800"]);
        let timed = limits(&["--duration", "2m"]);
        assert_eq!(
            (timed.seeds, timed.duration),
            (None, Some(std::time::Duration::from_secs(120)))
        );
        for bad in [
            &["--seeds"][..],
            &["--seeds", "x"],
            &["--duration", "5d"],
            &["--what", "1"],
            &["--nemesis", "lots"],
        ] {
            assert!(soak_limits(bad).is_err(), "{bad:?}");
        }
    }
}
