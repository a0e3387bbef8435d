//! Guest cost per command (decide + evolve, in process, no database) under
//! each execution budget, side by side in one run:
//!
//!     cargo xtask build-guests
//!     cargo run --release -p eshost-bench --example guest_cost
//!
//! Rounds alternate between the budgets so machine noise hits both alike.

use eshost::wasm::{Budget, Limits, Runtime};
use eshost_bench::guest_cost_micros;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const COMMANDS_PER_ROUND: usize = 20_000;
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let component =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/modules/flash-sale.wasm");
    let budgets = [
        (
            "epoch (wall clock)",
            Budget::WallClock(Duration::from_secs(1)),
        ),
        ("fuel", Budget::Fuel(10_000_000)),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); budgets.len()];
    for _ in 0..ROUNDS {
        for (i, (_, budget)) in budgets.iter().enumerate() {
            let runtime = Runtime::with_limits(Limits {
                budget: *budget,
                ..Limits::default()
            });
            let loaded = Arc::new(runtime.load(&component)?);
            samples[i].extend(guest_cost_micros(loaded, COMMANDS_PER_ROUND)?);
        }
    }
    println!(
        "flash-sale guest, decide + evolve per command ({} commands x {ROUNDS} rounds per budget)",
        COMMANDS_PER_ROUND
    );
    let baseline = median(&mut samples[0].clone());
    for (i, (name, _)) in budgets.iter().enumerate() {
        let m = median(&mut samples[i]);
        let p99 = percentile(&mut samples[i], 0.99);
        println!(
            "  {name:<20} median {m:6.2} us   p99 {p99:6.2} us   {:.2}x epoch",
            m / baseline
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
}
