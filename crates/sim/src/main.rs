//! `ime-sim`, the binary behind `cargo xtask sim`: runs one simulation, prints the report,
//! writes a JSON summary, and exits non-zero on any mismatch.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ime_sim::{Options, Scenario};

fn parse(args: &[String]) -> Result<(Options, PathBuf)> {
    let mut options = Options::default();
    let mut out = PathBuf::from("target/sim");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            "--stores" => options.stores = value()?.parse().context("--stores")?,
            "--ops" => options.ops = value()?.parse().context("--ops")?,
            "--scenario" => options.scenario = Scenario::parse(value()?)?,
            "--out" => out = PathBuf::from(value()?),
            other => bail!(
                "unknown argument {other:?} (known: --seed N --stores N --ops N --scenario NAME --out DIR)"
            ),
        }
    }
    Ok((options, out))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, out) = parse(&args)?;
    let report = ime_sim::run(&options)?;
    print!("{report}");
    std::fs::create_dir_all(&out)?;
    let path = out.join(format!("seed-{}-{}.json", report.seed, report.scenario));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!("  summary      {}", path.display());
    if !report.mismatches.is_empty() {
        bail!("{} mismatches", report.mismatches.len());
    }
    Ok(())
}
