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
