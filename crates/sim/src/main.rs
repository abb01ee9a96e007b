//! `ime-sim`, the binary behind `cargo xtask sim`: runs one simulation, prints the report,
//! writes a JSON summary, and exits non-zero on any mismatch.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ime_sim::{Options, RunRecord, Scenario};
use indicatif::{ProgressBar, ProgressStyle};

fn parse(args: &[String]) -> Result<(Options, PathBuf)> {
    let mut options = Options::default();
    let mut out = PathBuf::from("target/sim");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--replay" => {
                let path = PathBuf::from(value()?);
                options = RunRecord::read(&path)?.options()?;
            }
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            "--stores" => options.stores = value()?.parse().context("--stores")?,
            "--ops" => options.ops = value()?.parse().context("--ops")?,
            "--nemesis" => {
                options.nemesis_percent = value()?.parse().context("--nemesis (a percent)")?;
                if options.nemesis_percent > 100 {
                    bail!("--nemesis is a percent: at most 100");
                }
            }
            "--scenario" => options.scenario = Scenario::parse(value()?)?,
            "--duration" => options.duration = Some(duration(value()?)?),
            "--out" => out = PathBuf::from(value()?),
            "--event-journal" => options.event_journal = Some(PathBuf::from(value()?)),
            // Engines broken on purpose, to see the checker fail: `broken` ignores
            // ApplySnapshot and gaps, `unfenced` lets loads start inside fences.
            "--mutation" => match value()?.as_str() {
                "broken" => options.broken_engine = true,
                "unfenced" => options.unfenced_engine = true,
                other => bail!("--mutation {other:?}: broken or unfenced"),
            },
            other => bail!(
                "unknown argument {other:?} (known: --seed N --stores N --ops N --nemesis PERCENT --duration 60s --scenario NAME --out DIR --replay RUN_RECORD --event-journal DIR --mutation broken|unfenced)"
            ),
        }
    }
    Ok((options, out))
}

/// `"90s"`, `"2m"` or a number of seconds.
fn duration(text: &str) -> Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("--duration {text:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        other => bail!("--duration: unknown unit {other:?} (s or m)"),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, out) = parse(&args)?;
    // Drawn on stderr, and only on a terminal (indicatif hides it otherwise).
    let bar = ProgressBar::new(options.ops).with_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} steps {elapsed} {msg}")?
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("seed {} {}", options.seed, options.scenario.name()));
    let report = ime_sim::run_with_progress(&options, &mut |step, _| bar.set_position(step))?;
    bar.finish_and_clear();
    print!("{report}");
    std::fs::create_dir_all(&out)?;
    let name = format!("seed-{}-{}", report.seed, report.scenario);
    let path = out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    let chart = out.join(format!("{name}.svg"));
    std::fs::write(&chart, ime_sim::memory_svg(&report)?)?;
    let record = out.join(format!("{name}.run.json"));
    let replay = RunRecord::new(&options, &report);
    std::fs::write(&record, serde_json::to_vec_pretty(&replay)?)?;
    println!("  summary      {}", path.display());
    println!("  chart        {}", chart.display());
    println!("  run record   {}", record.display());
    if !report.mismatches.is_empty() {
        println!(
            "  replay with: cargo xtask sim --replay {}",
            record.display()
        );
        bail!("{} mismatches", report.mismatches.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_bad_ones_are_refused() {
        let args: Vec<String> = [
            "--seed",
            "7",
            "--ops",
            "10",
            "--duration",
            "2m",
            "--scenario",
            "seed",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let (options, _) = parse(&args).unwrap();
        assert_eq!(
            (options.seed, options.ops, options.scenario),
            (7, 10, Scenario::Seed)
        );
        assert_eq!(options.duration, Some(Duration::from_secs(120)));
        let mutated: Vec<String> = ["--mutation", "unfenced"].map(String::from).to_vec();
        assert!(parse(&mutated).unwrap().0.unfenced_engine);
        for bad in [
            &["--seed"][..],
            &["--duration", "3h"],
            &["--scenario", "nope"],
            &["--what"],
            &["--mutation", "harmless"],
        ] {
            let bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
    }
}
