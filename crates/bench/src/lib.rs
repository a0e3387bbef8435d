//! What the `eshost` command line runs to show the host at work, kept out
//! of the library's API:
//!
//! - this file: `eshost bench`, the host's throughput and latency on
//!   flash-sale scenarios (`purchases.rs` drives them in process, over
//!   HTTP or through a cluster; `cold_load.rs`, `guest_cost.rs`), next to
//!   the database's own limit measured in the same run (`baseline.rs`),
//!   with where the CPU went (`cpu.rs`);
//! - [`http`]: the bench's lean HTTP load driver;
//! - [`cluster`]: several hosts behind HAProxy on one machine (the
//!   reference deployment in `deploy/`), for the bench and the tests;
//! - [`demo`]: the flash-sale reference scenario;
//! - [`checkout`]: the checkout sample, two aggregates and a reactor (and
//!   `reactions.rs`, its pipeline measured beside many-items);
//! - `personal.rs`: many-items with its buyers encrypted, beside plain.

mod baseline;
pub mod checkout;
pub mod cluster;
mod cold_load;
mod cpu;
pub mod demo;
mod guest_cost;
pub mod http;
mod personal;
mod projection;
mod purchases;
mod reactions;
mod scratch;

use baseline::baseline_inserts;
use cold_load::cold_load;
use eshost::dispatch::{Concurrency, Host, HostOptions, RetryPolicy};
use eshost_store as store;
use eshost_wasm::Modules;
use guest_cost::guest_cost;
pub use guest_cost::guest_cost_micros;
use purchases::{Driver, purchases_run};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

const AGGREGATE: &str = "FlashSaleItem";

/// What `eshost bench` knows how to run.
pub const SCENARIOS: &[&str] = &[
    "sample",
    "hot-item",
    "many-items",
    "personal",
    "crowd",
    "cold-load",
    "guest-cost",
    "projection",
    "http-hot-item",
    "http-many-items",
    "cluster-hot-item",
    "cluster-many-items",
    "reactions",
];

/// What `eshost bench` runs when no scenario is named: all but the cluster
/// scenarios, which need HAProxy, and reactions, which needs the checkout
/// sample's components.
pub fn default_scenarios() -> impl Iterator<Item = &'static str> {
    SCENARIOS
        .iter()
        .copied()
        .filter(|s| !s.starts_with("cluster-") && *s != "reactions")
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown scenario {0:?} (known: {known})", known = SCENARIOS.join(", "))]
    UnknownScenario(String),
    #[error("no component provides {AGGREGATE}")]
    NoFlashSale,
    #[error(transparent)]
    Command(#[from] eshost::error::CommandError),
    #[error(transparent)]
    Store(#[from] eshost::error::StoreError),
    #[error("baseline: {0}")]
    Baseline(#[from] sqlx::Error),
    #[error(transparent)]
    Guest(#[from] eshost::error::GuestError),
    #[error("the guest refused a benchmark command: {0}")]
    Refused(eshost::error::Refusal),
    #[error("a benchmark task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the benchmark's server or its connections: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Projector(#[from] eshost_read::projector::ProjectorError),
    #[error(
        "the projection scenario needs the sales-summary projection (build it with `cargo xtask build-guests`)"
    )]
    NoSalesSummary,
    #[error(
        "the reactions scenario needs the checkout sample: --modules target/checkout --reactors target/reactors (built by `cargo xtask build-guests`)"
    )]
    NoCheckout,
}

/// One scenario, in one mode: one line of output.
#[derive(Debug, Clone, Serialize)]
pub struct BenchLine {
    pub scenario: String,
    pub mode: String,
    /// Which round of the scenario this line is from, from 1 (see [`run`]).
    pub round: usize,
    pub commands: usize,
    pub seconds: f64,
    pub commands_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub retries_per_command: f64,
    /// Commands per append: how well batching worked (1 where it does not apply).
    pub commands_per_append: f64,
    /// Commands per transaction: how well batching and group commit worked
    /// together (1 where they do not apply).
    pub commands_per_commit: f64,
    pub failed: usize,
    /// True if any sale sold more than its stock.
    pub oversold: bool,
    /// What the database commits on its own: single-row INSERTs per second
    /// at the same concurrency, measured in the same run.
    pub baseline_inserts_per_s: f64,
    /// The whole machine's busy CPU time (host, callers, database, anything
    /// else running) per command, in microseconds, while the commands ran;
    /// `None` where it is not measured or `/proc/stat` is not there.
    pub cpu_us_per_command: Option<f64>,
    /// The share of the machine's CPU time that was busy meanwhile, from 0
    /// to 1: below 1, the run waited on something other than the CPU.
    pub cpu_busy_share: Option<f64>,
    /// Over sockets: the CPU time the callers' own thread took per command
    /// (requests written, answers read, the kernel's work for both), in
    /// microseconds; part of `cpu_us_per_command`. In a deployment the
    /// clients run elsewhere.
    pub client_cpu_us_per_command: Option<f64>,
    /// Through a cluster: the commands the callers sent again (a lost
    /// connection, 502/503/504, 429, a conflict), over the run.
    pub resends: Option<u64>,
    /// Through a cluster: the longest a request waited in HAProxy's queue,
    /// and the longest a connection from HAProxy to a host took to open,
    /// over the run, in ms (see [`cluster::ProxyStats`]).
    pub proxy_queue_max_ms: Option<f64>,
    pub proxy_connect_max_ms: Option<f64>,
}

/// Below this busy share a run with a p50 above [`LATENCY_BOUND_P50_MS`]
/// is latency-bound (see [`BenchLine::latency_bound`]).
pub const LATENCY_BOUND_BUSY: f64 = 0.30;
pub const LATENCY_BOUND_P50_MS: f64 = 10.0;

impl BenchLine {
    /// `commands` done in `seconds`, with the latency percentiles of
    /// `sorted_ms`; the rest neutral (no retries, one command per append,
    /// none failed, none oversold, no baseline).
    pub fn timed(
        scenario: &str,
        mode: &str,
        commands: usize,
        seconds: f64,
        sorted_ms: &[f64],
    ) -> Self {
        Self {
            scenario: scenario.into(),
            mode: mode.into(),
            round: 1,
            commands,
            seconds,
            commands_per_s: commands as f64 / seconds,
            p50_ms: percentile(sorted_ms, 0.50),
            p99_ms: percentile(sorted_ms, 0.99),
            retries_per_command: 0.0,
            commands_per_append: 1.0,
            commands_per_commit: 1.0,
            failed: 0,
            oversold: false,
            baseline_inserts_per_s: 0.0,
            cpu_us_per_command: None,
            cpu_busy_share: None,
            client_cpu_us_per_command: None,
            resends: None,
            proxy_queue_max_ms: None,
            proxy_connect_max_ms: None,
        }
    }

    /// True if the run mostly waited: the machine less than 30% busy while
    /// half the commands took over 10 ms. Commands that wait with nothing
    /// to do are waiting on a timer, a queue or a dropped packet, not on
    /// work: a stall, which the table flags under its lines.
    pub fn latency_bound(&self) -> bool {
        self.cpu_busy_share
            .is_some_and(|busy| busy < LATENCY_BOUND_BUSY && self.p50_ms > LATENCY_BOUND_P50_MS)
    }
}

/// True for the scenarios whose modes are compared side by side, which
/// `rounds` repeats.
pub fn compares_modes(scenario: &str) -> bool {
    matches!(
        scenario,
        "sample" | "hot-item" | "many-items" | "personal" | "crowd" | "reactions"
    ) || scenario.starts_with("http-")
        || scenario.starts_with("cluster-")
}

/// The components a scenario may run, and where the aggregates came from
/// (the cluster scenarios' hosts load that directory).
#[derive(Clone, Copy)]
pub struct Components<'a> {
    pub modules: &'a Modules,
    pub modules_dir: &'a std::path::Path,
    pub projections: &'a [Arc<eshost_wasm::LoadedProjection>],
    pub reactors: &'a [Arc<eshost_wasm::LoadedReactor>],
}

/// Runs one scenario in each of its modes (cold-load: with and without a
/// snapshot; guest-cost: in process, under the sandbox budget the modules
/// were loaded with; projection: catching up, then the lag while hot-item
/// runs).
///
/// A scenario that [`compares_modes`] runs `rounds` times, the order of its
/// modes reversed every other round: on a noisy machine one stall moves a
/// short run's rate by a third, and a mode that always ran second would
/// always meet a bigger table. [`medians`] sums the rounds up.
pub async fn run(
    scenario: &str,
    components: &Components<'_>,
    url: &str,
    callers: usize,
    rounds: usize,
) -> Result<Vec<BenchLine>, BenchError> {
    let rounds = if compares_modes(scenario) {
        rounds.max(1)
    } else {
        1
    };
    let mut lines = Vec::new();
    for round in 1..=rounds {
        // The reactions scenario's modes run in one order (its paced mode
        // needs many-items' rate), each on a fresh store.
        let reversed = round % 2 == 0 && scenario != "reactions";
        let mut these = run_once(scenario, components, url, callers, reversed).await?;
        if reversed {
            these.reverse();
        }
        for line in &mut these {
            line.round = round;
        }
        lines.extend(these);
    }
    Ok(lines)
}

/// One round of [`run`]: every mode once, in reverse order if `reversed`.
async fn run_once(
    scenario: &str,
    components: &Components<'_>,
    url: &str,
    callers: usize,
    reversed: bool,
) -> Result<Vec<BenchLine>, BenchError> {
    let Components {
        modules,
        modules_dir,
        projections,
        reactors,
    } = *components;
    const BOTH: &[Concurrency] = &[Concurrency::Queued, Concurrency::Optimistic];
    let (sales, stock, purchases, callers, modes) = match scenario {
        "sample" => (1, 5, 8, 8, BOTH),
        "hot-item" => (1, 1_000, 2_000, callers, BOTH),
        "many-items" => (1_000, 10, 20_000, callers, BOTH),
        // A flash sale as it happens: a thousand buyers at once on one item.
        // Racing them optimistically would measure little but retries.
        "crowd" => (1, 10_000, 20_000, 1_000, &[Concurrency::Queued][..]),
        "cold-load" => return cold_load(modules, url).await,
        "guest-cost" => return guest_cost(modules),
        "projection" => {
            let summary = projections
                .iter()
                .find(|p| p.name == "sales-summary")
                .ok_or(BenchError::NoSalesSummary)?;
            return projection::run(modules, summary.clone(), url, callers).await;
        }
        "http-hot-item" | "http-many-items" | "cluster-hot-item" | "cluster-many-items" => {
            // (sales, stock, purchases) as in hot-item and many-items.
            let sales = if scenario.ends_with("hot-item") {
                (1, 1_000, 2_000)
            } else {
                (1_000, 10, 20_000)
            };
            return if scenario.starts_with("http-") {
                over_http(scenario, modules, url, sales, callers, reversed).await
            } else {
                over_cluster(
                    scenario,
                    modules,
                    modules_dir,
                    url,
                    sales,
                    callers,
                    reversed,
                )
                .await
            };
        }
        "reactions" => return reactions::run(modules, reactors, url, callers).await,
        "personal" => return personal::run(modules, url, callers, reversed).await,
        other => return Err(BenchError::UnknownScenario(other.to_string())),
    };
    let baseline = baseline_inserts(url, callers, Duration::from_secs(2)).await?;
    let mut lines = Vec::new();
    for mode in in_order(modes, reversed) {
        let store = store::open(url).await?;
        let options = HostOptions {
            concurrency: mode,
            // More patience than the default: the point is to show what
            // racing costs, not to fail fast.
            retry: RetryPolicy {
                max_retries: 20,
                ..RetryPolicy::default()
            },
            ..HostOptions::default()
        };
        let host = Host::with_options(modules.clone(), store, options);
        let driver = Driver::InProcess(host.clone());
        let mut line = purchases_run(&host, &driver, sales, stock, purchases, callers).await?;
        line.scenario = scenario.to_string();
        line.mode = format!("{mode:?}").to_lowercase();
        line.baseline_inserts_per_s = baseline;
        lines.push(line);
    }
    Ok(lines)
}

/// The same scenario in process (queued) and over HTTP through `eshost
/// serve` in this process, on real sockets with keep-alive connections (one
/// per caller), at the same concurrency, next to the INSERT baseline: the
/// client and the server share the machine, as they would on one box.
async fn over_http(
    scenario: &str,
    modules: &Modules,
    url: &str,
    (sales, stock, purchases): (usize, u64, usize),
    callers: usize,
    reversed: bool,
) -> Result<Vec<BenchLine>, BenchError> {
    let baseline = baseline_inserts(url, callers, Duration::from_secs(2)).await?;
    let mut lines = Vec::new();
    for mode in in_order(&["queued", "http"], reversed) {
        let store = store::open(url).await?;
        let host = Host::with_options(modules.clone(), store, HostOptions::default());
        let (driver, server) = match mode {
            "http" => {
                // Listening as `eshost serve` does, with its backlog.
                let listener = eshost_server::connections::listen(
                    ([127, 0, 0, 1], 0).into(),
                    eshost_server::connections::DEFAULT_LISTEN_BACKLOG,
                )?;
                let address = listener.local_addr()?;
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let app = eshost_server::App::new(host.clone(), Default::default());
                let serving = tokio::spawn(eshost_server::serve(listener, app, async move {
                    let _ = stopped.await;
                }));
                (Driver::Http(address), Some((stop, serving)))
            }
            _ => (Driver::InProcess(host.clone()), None),
        };
        let mut line = purchases_run(&host, &driver, sales, stock, purchases, callers).await?;
        if let Some((stop, serving)) = server {
            let _ = stop.send(());
            if let Ok(Err(e)) = serving.await {
                tracing::warn!(error = %e, "the benchmark's server stopped badly");
            }
        }
        line.scenario = scenario.to_string();
        line.mode = mode.to_string();
        line.baseline_inserts_per_s = baseline;
        lines.push(line);
    }
    Ok(lines)
}

/// The same scenario over HTTP through HAProxy to separate `eshost serve`
/// processes (see [`crate::cluster`]): one host, three hosts with
/// round-robin routing, three hosts routed by a consistent hash of the
/// aggregate (the reference deployment). Callers resend through lost
/// connections and 502/503/504 with the same key, as clients must.
async fn over_cluster(
    scenario: &str,
    modules: &Modules,
    modules_dir: &std::path::Path,
    url: &str,
    (sales, stock, purchases): (usize, u64, usize),
    callers: usize,
    reversed: bool,
) -> Result<Vec<BenchLine>, BenchError> {
    use crate::cluster::{Cluster, ClusterConfig, Routing};
    let baseline = baseline_inserts(url, callers, Duration::from_secs(2)).await?;
    let mut lines = Vec::new();
    let setups = [
        ("1-host", 1, Routing::ConsistentHash),
        ("3-hosts-rr", 3, Routing::RoundRobin),
        ("3-hosts-hash", 3, Routing::ConsistentHash),
    ];
    for (mode, hosts, routing) in in_order(&setups, reversed) {
        let cluster = Cluster::start(&ClusterConfig::new(hosts, routing, url, modules_dir)).await?;
        // Sales are created and checked through a host of this process on
        // the same database; the purchases go through HAProxy.
        let store = store::open(url).await?;
        let host = Host::with_options(modules.clone(), store, HostOptions::default());
        let mut line =
            purchases_through_cluster(&cluster, &host, (sales, stock, purchases, callers)).await?;
        line.scenario = scenario.to_string();
        line.mode = mode.to_string();
        line.baseline_inserts_per_s = baseline;
        lines.push(line);
    }
    Ok(lines)
}

/// The cluster scenarios' purchases: `purchases` of one unit over `sales`
/// sales of `stock` (created through `host`, which must be on the
/// cluster's database), from `callers` callers sending through HAProxy and
/// resending as clients must. The line has the machine's busy share, the
/// resends and HAProxy's own figures, and the hosts' batching (from their
/// metrics).
pub async fn purchases_through_cluster(
    cluster: &cluster::Cluster,
    host: &Host,
    (sales, stock, purchases, callers): (usize, u64, usize, usize),
) -> Result<BenchLine, BenchError> {
    let appends_before = cluster.metric_sum("eshost_appends_total").await;
    let commits_before = cluster.metric_sum("eshost_commits_total").await;
    let driver = Driver::Cluster(cluster.address());
    let mut line = purchases_run(host, &driver, sales, stock, purchases, callers).await?;
    let appends = cluster.metric_sum("eshost_appends_total").await - appends_before;
    let commits = cluster.metric_sum("eshost_commits_total").await - commits_before;
    let proxy = cluster.proxy_stats().await?;
    line.proxy_queue_max_ms = Some(proxy.queue_max_ms);
    line.proxy_connect_max_ms = Some(proxy.connect_max_ms);
    line.commands_per_append = purchases as f64 / appends.max(1.0);
    line.commands_per_commit = purchases as f64 / commits.max(1.0);
    Ok(line)
}

/// `items` in their order, or reversed.
fn in_order<T: Copy>(items: &[T], reversed: bool) -> Vec<T> {
    let mut items = items.to_vec();
    if reversed {
        items.reverse();
    }
    items
}

/// One scenario's modes over its rounds: the median rate of each, and each
/// against the first mode (in process, queued, one host), median and per
/// round. One line of text.
#[derive(Debug, Clone, PartialEq)]
pub struct Medians {
    pub scenario: String,
    pub rounds: usize,
    /// Each mode with its median commands per second, in the lines' order.
    pub modes: Vec<(String, f64)>,
    /// For each mode after the first: its rate over the first mode's in the
    /// same round, each round, then the median of those.
    pub ratios: Vec<(String, Vec<f64>, f64)>,
}

/// Sums up one scenario's lines (see [`run`]); `None` if it ran one mode.
pub fn medians(lines: &[BenchLine]) -> Option<Medians> {
    let first = lines.first()?;
    let mut modes: Vec<&str> = Vec::new();
    for line in lines {
        if !modes.contains(&line.mode.as_str()) {
            modes.push(&line.mode);
        }
    }
    if modes.len() < 2 {
        return None;
    }
    let rate = |mode: &str, round: usize| {
        lines
            .iter()
            .find(|l| l.mode == mode && l.round == round)
            .map(|l| l.commands_per_s)
    };
    let rounds = lines.iter().map(|l| l.round).max().unwrap_or(1);
    let median_of = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        median(&values)
    };
    let rates = |mode: &str| (1..=rounds).filter_map(|r| rate(mode, r)).collect();
    Some(Medians {
        scenario: first.scenario.clone(),
        rounds,
        modes: modes
            .iter()
            .map(|m| (m.to_string(), median_of(rates(m))))
            .collect(),
        ratios: modes[1..]
            .iter()
            .map(|mode| {
                let each: Vec<f64> = (1..=rounds)
                    .filter_map(|r| Some(rate(mode, r)? / rate(modes[0], r)?))
                    .collect();
                (mode.to_string(), each.clone(), median_of(each))
            })
            .collect(),
    })
}

impl std::fmt::Display for Medians {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, first_rate) = &self.modes[0];
        let rounds = match self.rounds {
            1 => "one round".to_string(),
            n => format!("median of {n} rounds"),
        };
        write!(
            f,
            "{}, {rounds}: {first} {first_rate:.0} cmd/s",
            self.scenario
        )?;
        for ((mode, rate), (_, each, ratio)) in self.modes[1..].iter().zip(&self.ratios) {
            write!(
                f,
                "; {mode} {rate:.0} cmd/s, {:.0}% of {first}",
                ratio * 100.0
            )?;
            if each.len() > 1 {
                let each: Vec<String> = each.iter().map(|r| format!("{:.0}%", r * 100.0)).collect();
                write!(f, " (rounds: {})", each.join(", "))?;
            }
        }
        Ok(())
    }
}

/// The median of sorted values; 0 for none.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(mode: &str, round: usize, commands_per_s: f64) -> BenchLine {
        BenchLine {
            round,
            commands_per_s,
            ..BenchLine::timed("http-many-items", mode, 1, 1.0, &[])
        }
    }

    #[test]
    fn medians_compare_each_mode_with_the_first_in_the_same_round() {
        let lines = [
            line("queued", 1, 100.0),
            line("http", 1, 80.0),
            line("queued", 2, 200.0),
            line("http", 2, 100.0),
            line("queued", 3, 150.0),
            line("http", 3, 105.0),
        ];
        let medians = medians(&lines).expect("two modes");
        assert_eq!(medians.rounds, 3);
        assert_eq!(
            medians.modes,
            [("queued".to_string(), 150.0), ("http".to_string(), 100.0)]
        );
        // Per round 80%, 50%, 70%: the median ratio is not the ratio of
        // the medians (67%).
        let (mode, each, ratio) = &medians.ratios[0];
        assert_eq!(mode, "http");
        assert_eq!(each, &[0.8, 0.5, 0.7]);
        assert!((ratio - 0.7).abs() < 1e-9, "{ratio}");
        assert_eq!(
            medians.to_string(),
            "http-many-items, median of 3 rounds: queued 150 cmd/s; \
             http 100 cmd/s, 70% of queued (rounds: 80%, 50%, 70%)"
        );
    }

    #[test]
    fn a_run_that_mostly_waited_is_latency_bound() {
        let run = |busy: Option<f64>, p50_ms: f64| BenchLine {
            cpu_busy_share: busy,
            p50_ms,
            ..line("1-host", 1, 1890.0)
        };
        // The stalled run of decision record 0057: 26% busy, p50 29.7 ms.
        assert!(run(Some(0.26), 29.7).latency_bound());
        assert!(!run(Some(0.86), 29.7).latency_bound(), "busy: working");
        assert!(!run(Some(0.26), 4.0).latency_bound(), "fast: idle");
        assert!(!run(None, 29.7).latency_bound(), "not measured");
    }

    #[test]
    fn one_mode_has_nothing_to_compare() {
        assert_eq!(
            medians(&[line("queued", 1, 1.0), line("queued", 2, 2.0)]),
            None
        );
        assert_eq!(medians(&[]), None);
    }

    #[test]
    fn an_even_count_has_the_mean_of_its_middle_values_as_median() {
        assert_eq!(median(&[1.0, 2.0, 4.0, 8.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }
}
