//! The host's metrics, rendered in Prometheus' text format (`GET /metrics`):
//! what commands did and how long they took, conflicts, batch sizes, guest
//! call time, the cache and the queues.
//!
//! Counters and histograms are updated where things happen (dispatch, the
//! queue, the guest pool); gauges are read when scraped. Labels carry only
//! names the host has loaded, never raw request text, so a client cannot
//! grow the label sets without bound.

use crate::group_commit::CommitMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub aggregate: String,
    pub command: String,
    /// `ok`, `replayed`, or the error's kind (the HTTP API's `kind`).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregateLabel {
    pub aggregate: String,
}

/// What the scrape reads from the host at that moment.
pub struct Levels {
    pub queued_commands: usize,
    pub cached_aggregates: usize,
    pub cached_bytes: usize,
    pub guest_calls_running: usize,
    pub aggregates_loaded: usize,
    pub guest_instances: usize,
}

/// Every metric one host keeps.
pub struct Metrics {
    registry: Registry,
    /// Commands answered, by aggregate, command and outcome.
    pub commands: Family<CommandLabels, Counter>,
    /// From accepting a command to answering it, by aggregate.
    pub command_seconds: Family<AggregateLabel, Histogram>,
    /// Appends that lost the race on the unique key.
    pub conflicts: Counter,
    /// Appends (one per batch in queued mode).
    pub appends: Counter,
    /// Commands per append.
    pub batch_commands: Histogram,
    /// Transactions that committed appended events (each a group of
    /// streams' appends), and the streams in each; the committers count
    /// them. A try that failed is not one.
    pub group_commit: CommitMetrics,
    /// Store calls tried again after a transient database error.
    pub transient_retries: Counter,
    /// How long guest calls ran, by aggregate.
    pub guest_call_seconds: Family<AggregateLabel, Histogram>,
    /// A command found its aggregate hydrated in memory, or did not.
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    /// Aggregates rebuilt from the store because their shared instance
    /// was lost to another aggregate's trap.
    pub aggregates_rebuilt: Counter,
    queued_commands: Gauge,
    cached_aggregates: Gauge,
    cached_bytes: Gauge,
    guest_calls_running: Gauge,
    aggregates_loaded: Gauge,
    guest_instances: Gauge,
}

impl Default for Metrics {
    // One registration per metric, each with its help text: a list, long
    // because the metrics are many, not because it branches.
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.000_05, 2.5, 14));
        let mut metrics = Self {
            registry: Registry::with_prefix("eshost"),
            commands: Family::default(),
            command_seconds: Family::new_with_constructor(seconds),
            conflicts: Counter::default(),
            appends: Counter::default(),
            batch_commands: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            group_commit: CommitMetrics {
                commits: Counter::default(),
                streams: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            },
            transient_retries: Counter::default(),
            guest_call_seconds: Family::new_with_constructor(seconds),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            aggregates_rebuilt: Counter::default(),
            queued_commands: Gauge::default(),
            cached_aggregates: Gauge::default(),
            cached_bytes: Gauge::default(),
            guest_calls_running: Gauge::default(),
            aggregates_loaded: Gauge::default(),
            guest_instances: Gauge::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "commands",
            "Commands answered, by aggregate, command and outcome",
            metrics.commands.clone(),
        );
        registry.register(
            "command_seconds",
            "Time from accepting a command to answering it",
            metrics.command_seconds.clone(),
        );
        registry.register(
            "conflicts",
            "Appends that lost the race for a sequence number and were retried",
            metrics.conflicts.clone(),
        );
        registry.register(
            "appends",
            "Appends (one per batch in queued mode)",
            metrics.appends.clone(),
        );
        registry.register(
            "batch_commands",
            "Commands per append",
            metrics.batch_commands.clone(),
        );
        registry.register(
            "commits",
            "Transactions that committed appended events (group commit: one per group of streams)",
            metrics.group_commit.commits.clone(),
        );
        registry.register(
            "commit_streams",
            "Streams appended per transaction (group commit)",
            metrics.group_commit.streams.clone(),
        );
        registry.register(
            "transient_retries",
            "Store calls tried again after a transient database error",
            metrics.transient_retries.clone(),
        );
        registry.register(
            "guest_call_seconds",
            "Time guest calls ran",
            metrics.guest_call_seconds.clone(),
        );
        registry.register(
            "cache_hits",
            "Commands that found their aggregate hydrated in memory",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Commands whose aggregate had to be hydrated from the store",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "aggregates_rebuilt",
            "Aggregates rebuilt from the store after another aggregate's trap lost the instance they shared",
            metrics.aggregates_rebuilt.clone(),
        );
        registry.register(
            "queued_commands",
            "Commands waiting in aggregate queues",
            metrics.queued_commands.clone(),
        );
        registry.register(
            "cached_aggregates",
            "Hydrated aggregates held in memory",
            metrics.cached_aggregates.clone(),
        );
        registry.register(
            "cached_guest_memory_bytes",
            "Guest linear memory the cached aggregates hold",
            metrics.cached_bytes.clone(),
        );
        registry.register(
            "guest_calls_running",
            "Guest calls running now",
            metrics.guest_calls_running.clone(),
        );
        registry.register(
            "aggregates_loaded",
            "Aggregate components loaded",
            metrics.aggregates_loaded.clone(),
        );
        registry.register(
            "guest_instances",
            "Guest instances alive, each holding the states of one or more aggregates",
            metrics.guest_instances.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// The text format, with the gauges set to `levels`.
    pub fn render(&self, levels: Levels) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.queued_commands.set(gauge(levels.queued_commands));
        self.cached_aggregates.set(gauge(levels.cached_aggregates));
        self.cached_bytes.set(gauge(levels.cached_bytes));
        self.guest_calls_running
            .set(gauge(levels.guest_calls_running));
        self.aggregates_loaded.set(gauge(levels.aggregates_loaded));
        self.guest_instances.set(gauge(levels.guest_instances));
        let mut text = String::new();
        // Writing to a String cannot fail. No `# EOF`: the server adds
        // metrics of its own after these, then ends the exposition.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        text
    }
}
