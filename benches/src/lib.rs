//! Shared settings for IME's criterion suites (`benches/suites/*.rs`), run by
//! `cargo bench -p ime-benches` or, with ratios against same-run baselines,
//! `cargo xtask bench`.

use std::time::Duration;

use criterion::Criterion;

/// The one place warm-up and measurement times are set, so every suite runs alike.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args()
}

/// The number of keys a suite loads: `IME_BENCH_KEYS`, default 1,000,000.
pub fn keys_from_env() -> u64 {
    std::env::var("IME_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The `i`-th user key of a suite's data, TiKV-table-like (`t_0000000007_r`, spaced by 7).
pub fn user_key(i: u64) -> Vec<u8> {
    format!("t_{:010}_r", i * 7).into_bytes()
}
