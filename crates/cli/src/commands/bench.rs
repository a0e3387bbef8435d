//! `eshost bench`: flash-sale scenarios in both concurrency modes, beside
//! the database's own single-row INSERT rate.

use crate::args::GlobalArgs;
use anyhow::Result;
use clap::Args;
use eshost_bench as bench;

/// Benchmark flash-sale scenarios in both concurrency modes, next to the
/// database's own single-row INSERT rate at the same concurrency.
///
/// Scenarios: sample (8 buyers, stock 5), hot-item (2,000 buyers, stock
/// 1,000, one item), many-items (20,000 purchases over 1,000 items),
/// crowd (20,000 buyers, stock 10,000, one item, 1,000 callers, queued
/// only), cold-load (one stream of 100,000 events, with and without a snapshot),
/// guest-cost (decide plus evolve per command, in process, no database),
/// projection (sales-summary catching up on 100,000 events: cmd/s is
/// events/s; then following while hot-item runs: p50/p99 are the lag
/// from a purchase's answer to the view including it; in a scratch
/// schema or file of its own),
/// http-hot-item and http-many-items (in process and through `eshost
/// serve` on a loopback socket, side by side), cluster-hot-item and
/// cluster-many-items (through HAProxy to one host, three hosts
/// round-robin, three hosts routed by aggregate; needs `haproxy`; not
/// run by default), reactions (many-items beside the checkout sample's
/// pipeline, each on a fresh scratch store: orders each placed, bought by
/// the `checkout` reactor, reserved, paid by a buyer following the log,
/// confirmed and delivered to a sink; `commands-only` sends 4,000 orders'
/// four commands itself, with no reactor; `reacting` places 4,000 at
/// once, `paced` offers them for 5 s at half many-items' rate,
/// `paced-light` at half reacting's; for these, cmd/s is reactions/s
/// (three an order), p50/p99 run from an order placed to its confirmation
/// (commands-only: to its payment), and CPU is per reaction; needs
/// --modules target/checkout and --reactors target/reactors; not run by
/// default).
///
/// Through a cluster, each line also gives the callers' resends, and
/// HAProxy's longest queue wait and longest connection to a host (ms).
///
/// Under the table, one line per scenario with several modes gives each
/// mode's rate as a share of the first mode's in the same round; with
/// --rounds N, the median of N rounds, alternating which mode goes first.
/// A run that mostly waited (the machine under 30% busy, p50 over 10 ms)
/// is named there as latency-bound.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  eshost bench --scenario hot-item --database-url postgres://postgres@127.0.0.1/postgres\n  eshost bench --scenario http-many-items --callers 256 --rounds 3\n  eshost bench --scenario reactions --modules target/checkout --reactors target/reactors --rounds 3"
)]
pub struct BenchArgs {
    /// Scenarios to run [default: all but cluster-*].
    #[arg(long = "scenario", value_parser = clap::builder::PossibleValuesParser::new(bench::SCENARIOS))]
    scenarios: Vec<String>,
    /// Concurrent callers for hot-item and many-items (HTTP: one connection
    /// each); crowd always has 1,000.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    callers: u64,
    /// Run the scenarios that compare modes this many times, alternating
    /// which mode goes first, and sum them up by the median of each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    let BenchArgs {
        scenarios,
        callers,
        rounds,
        json,
    } = args;
    let (callers, rounds) = (callers as usize, rounds as usize);
    let modules = global.modules()?;
    let scenarios = if scenarios.is_empty() {
        bench::default_scenarios().map(str::to_string).collect()
    } else {
        scenarios
    };
    if !json {
        print_header();
    }
    let projections = if scenarios.iter().any(|s| s == "projection") {
        global.runtime().load_projections(&global.projections)?
    } else {
        Vec::new()
    };
    let reactors = if scenarios.iter().any(|s| s == "reactions") {
        global.runtime().load_reactors(&global.reactors)?
    } else {
        Vec::new()
    };
    let mut summaries = Vec::new();
    let mut stalled = Vec::new();
    for scenario in &scenarios {
        let components = bench::Components {
            modules: &modules,
            modules_dir: &global.modules,
            projections: &projections,
            reactors: &reactors,
        };
        let lines =
            bench::run(scenario, &components, &global.database_url, callers, rounds).await?;
        summaries.extend(bench::medians(&lines));
        stalled.extend(lines.iter().filter(|l| l.latency_bound()).map(stall));
        for line in lines {
            if json {
                println!("{}", serde_json::to_string(&line)?);
            } else {
                print_line(&line);
            }
        }
    }
    let nothing_under_the_table = summaries.is_empty() && stalled.is_empty();
    if !json && !nothing_under_the_table {
        println!();
        for summary in summaries {
            println!("{summary}");
        }
        for line in stalled {
            println!("{line}");
        }
    }
    Ok(())
}

/// One line for a run that mostly waited (see `BenchLine::latency_bound`).
fn stall(line: &bench::BenchLine) -> String {
    format!(
        "latency-bound: {} {} round {}: p50 {:.1} ms with the machine {:.0}% busy: the commands waited on something other than work",
        line.scenario,
        line.mode,
        line.round,
        line.p50_ms,
        line.cpu_busy_share.unwrap_or(0.0) * 100.0
    )
}

fn print_header() {
    println!(
        "{:<18} {:<12} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>6} {:>8} {:>12} {:>10} {:>6} {:>9} {:>7} {:>8} {:>8}",
        "scenario",
        "mode",
        "commands",
        "seconds",
        "cmd/s",
        "p50 ms",
        "p99 ms",
        "retry/cmd",
        "cmd/append",
        "cmd/commit",
        "failed",
        "oversold",
        "baseline/s",
        "cpu us/cmd",
        "busy %",
        "client us",
        "resends",
        "queue ms",
        "conn ms"
    );
}

fn print_line(line: &bench::BenchLine) {
    let or_dash = |figure: Option<f64>, scale: f64| {
        figure.map_or("-".to_string(), |x| format!("{:.0}", x * scale))
    };
    println!(
        "{:<18} {:<12} {:>8} {:>9.3} {:>10.0} {:>9.4} {:>9.4} {:>9.2} {:>10.1} {:>10.1} {:>6} {:>8} {:>12.0} {:>10} {:>6} {:>9} {:>7} {:>8} {:>8}",
        line.scenario,
        line.mode,
        line.commands,
        line.seconds,
        line.commands_per_s,
        line.p50_ms,
        line.p99_ms,
        line.retries_per_command,
        line.commands_per_append,
        line.commands_per_commit,
        line.failed,
        line.oversold,
        line.baseline_inserts_per_s,
        or_dash(line.cpu_us_per_command, 1.0),
        or_dash(line.cpu_busy_share, 100.0),
        or_dash(line.client_cpu_us_per_command, 1.0),
        line.resends.map_or("-".to_string(), |n| n.to_string()),
        or_dash(line.proxy_queue_max_ms, 1.0),
        or_dash(line.proxy_connect_max_ms, 1.0),
    );
}
