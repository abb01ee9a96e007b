//! Prints the policy table (every policy on every generated trace at 10%, 25% and 50%
//! capacity, as a ratio of MVCC work saved to the offline reference) as Markdown, for
//! each seed given — by default 42, the seed the policies were tuned on, and 20261130, a
//! seed held out from tuning (a policy that only fits its tuning seed shows there).
//! Run by `cargo xtask bench policy`.

use ime_eviction::{TraceShape, policy_table};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut seeds: Vec<u64> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    if seeds.is_empty() {
        seeds = vec![42, 20_261_130];
    }
    for seed in seeds {
        table(seed)?;
    }
    Ok(())
}

fn table(seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    let rows = policy_table(seed, TraceShape::default())?;
    println!("seed {seed}; {:?}\n", TraceShape::default());
    println!(
        "| trace | capacity | policy | net work saved / offline | byte hit ratio | loads/h | evictions/h | flaps |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let s = &row.score;
        println!(
            "| {} | {:.0}% | {} | {:.3} | {:.3} | {:.1} | {:.1} | {} |",
            s.trace,
            row.capacity_fraction * 100.0,
            s.policy,
            row.ratio(),
            s.byte_hit_ratio(),
            s.loads_per_hour(),
            s.evictions_per_hour(),
            s.flaps
        );
    }
    println!();
    Ok(())
}
