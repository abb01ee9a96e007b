//! `cargo xtask`: the project's one entry point for what CI runs.
//!
//! ```text
//! cargo xtask ci [--fast]      fmt check, clippy (warnings denied), tests, docs (warnings
//!                              denied); the tidy checks run as tests of this crate
//! cargo xtask bench [SUITE..]  criterion suites, then each figure as a ratio against its
//!                              baseline measured in the same run
//! cargo xtask sim [ARGS..]     the simulator (a Raft cluster driving IME), release build
//! cargo xtask soak [--seeds N] many simulator seeds in a row, stopping at the first failure
//! ```

mod bench;
mod tidy;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci [--fast]         what CI runs: fmt check, clippy -D warnings, all tests, docs -D warnings
                      (--fast skips clippy and the doc build)
  bench [SUITE...]    run the criterion suites (all, or those named: disk, memkv,
                      observer, policy) and print
                      each figure as a ratio against its same-run baseline
  sim [ARGS...]       run the simulator: --seed N --stores N --ops N --duration 60s
                      --scenario NAME --out DIR
                      (scenarios: random, seed, seed-unobserved, snapshot-same-epoch-unobserved)
  soak [--seeds N]    run the simulator on seeds 1..=N (default 20), stopping at the first failure";

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
    match args.as_slice() {
        ["ci"] => ci(false),
        ["ci", "--fast"] => ci(true),
        ["bench", suites @ ..] => bench::run(&tidy::workspace_root(), suites),
        ["sim", rest @ ..] => sim(rest),
        ["soak"] => soak(20),
        ["soak", "--seeds", n] => soak(n.parse().context("--seeds takes a number")?),
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

/// Runs the simulator on seeds `1..=seeds`, stopping at the first that fails.
fn soak(seeds: u64) -> Result<()> {
    for seed in 1..=seeds {
        let seed = seed.to_string();
        sim(&["--seed", &seed]).with_context(|| format!("seed {seed} failed"))?;
    }
    println!("soak: {seeds} seeds, no mismatch");
    Ok(())
}

/// Runs every check CI runs, in order of increasing cost, stopping at the first failure.
fn ci(fast: bool) -> Result<()> {
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
    if !fast {
        cargo(
            &["doc", "--workspace", "--no-deps", "--locked"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )?;
    }
    println!("xtask ci: all checks passed");
    Ok(())
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
