//! Prints the policy table (every policy on every generated trace at 10%, 25% and 50%
//! capacity, as a ratio of MVCC work saved to the offline reference) as Markdown.
//! Run by `cargo xtask bench policy`.

use ime_eviction::{TraceShape, policy_table};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(42);
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
    Ok(())
}
