//! Timing shared by the hand-rolled benchmarks.

use std::time::{Duration, Instant};

/// Runs `work` a tenth of `iterations` times to warm up, then times
/// `iterations` runs and prints the mean per run in `unit` (`"µs"` or
/// `"ns"`) after `label`.
pub(crate) fn time(label: &str, unit: &str, iterations: u32, mut work: impl FnMut()) {
    for _ in 0..iterations / 10 {
        work();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        work();
    }
    let per: Duration = started.elapsed() / iterations;
    let value = match unit {
        "ns" => per.as_secs_f64() * 1e9,
        _ => per.as_secs_f64() * 1e6,
    };
    println!("{label:<52} {value:>8.2} {unit}");
}
