//! The `eshost` command line: parses arguments, builds what the subcommand
//! needs (modules, store, host), runs it and prints the result. Exit codes are
//! in [`exit`].

pub mod exit;
mod projection;
mod reference;
mod serve;
mod upgrade;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use eshost::dispatch::{CommandRequest, Concurrency, Host, HostOptions, REPLAY_PAGE, RetryPolicy};
use eshost_bench::{self as bench, demo};
use eshost_http::client::Client;
use eshost_read::relay;
use eshost_read::subscription::{self, Subscription};
use eshost_store as store;
use eshost_testing::projection::{ProjectionSpecFile, run_projection_case};
use eshost_testing::{SpecErrors, SpecFile, run_case};
use eshost_wasm::{ArtifactCache, Budget, Limits, Modules, Runtime};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The store used when no URL is given: a file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://eshost.db";

#[derive(Debug, Parser)]
#[command(
    name = "eshost",
    version,
    about = "Run event-sourced aggregates compiled to WebAssembly components",
    after_help = exit::HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// An `eshost serve` to send exec, state, events and aggregates to,
    /// e.g. http://127.0.0.1:8080. Without it they open the store and the
    /// modules in this process.
    #[arg(long, env = "ESHOST_SERVER", global = true)]
    pub server: Option<String>,

    /// The bearer token: `serve` requires it of every request (but
    /// /healthz); the other subcommands send it to `--server`.
    #[arg(long, env = "ESHOST_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,

    /// Event store: postgres://user@host:port/db, or sqlite://PATH (a file,
    /// created on first use).
    #[arg(long, env = "DATABASE_URL", global = true, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Directory of aggregate components: every *.wasm in it is loaded.
    /// The default is where `cargo xtask build-guests` puts them.
    #[arg(
        long,
        env = "ESHOST_MODULES",
        global = true,
        default_value = "target/modules"
    )]
    pub modules: PathBuf,

    /// Directory of projection components: every *.wasm in it is loaded by
    /// `projection run`, `projection rebuild` and `projections`.
    #[arg(
        long,
        env = "ESHOST_PROJECTIONS",
        global = true,
        default_value = "target/projections"
    )]
    pub projections: PathBuf,

    /// Where compiled components are cached
    /// [default: $XDG_CACHE_HOME/eshost, else ~/.cache/eshost].
    #[arg(long, env = "ESHOST_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component afresh; neither read nor write the cache.
    #[arg(long, global = true)]
    pub no_cache: bool,

    /// How commands on one aggregate are kept apart: queued (one queue per
    /// aggregate in this process, batched appends) or optimistic (each
    /// command races; conflicts are retried).
    #[arg(long, global = true, value_enum, default_value_t = ConcurrencyArg::Queued)]
    pub concurrency: ConcurrencyArg,

    /// Hydrated aggregates kept in memory (least recently used go first).
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_capacity: u64,

    /// Bytes of guest memory the cached aggregates may hold in all, in MiB.
    #[arg(long, global = true, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_memory_mib: u64,

    /// Snapshot an aggregate's state every N events (0: never).
    #[arg(long, global = true, default_value_t = 100)]
    pub snapshot_every: u64,

    /// Commands one aggregate's queue holds (queued mode); a command that
    /// finds it full is refused at once (HTTP 429).
    #[arg(long, global = true, default_value_t = eshost::dispatch::DEFAULT_QUEUE_CAPACITY as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_capacity: u64,

    /// Guest calls that may run at once, each on a thread of its own (never
    /// on the async runtime's threads).
    #[arg(long, global = true, default_value_t = eshost_wasm::pool::DEFAULT_THREADS as u64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub guest_threads: u64,

    /// How log lines (on stderr) are written.
    #[arg(long, env = "ESHOST_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ConcurrencyArg {
    Queued,
    Optimistic,
}

impl From<ConcurrencyArg> for Concurrency {
    fn from(arg: ConcurrencyArg) -> Self {
        match arg {
            ConcurrencyArg::Queued => Concurrency::Queued,
            ConcurrencyArg::Optimistic => Concurrency::Optimistic,
        }
    }
}

/// The sandbox limits on every guest call.
#[derive(Debug, Args)]
#[command(next_help_heading = "Sandbox limits")]
pub struct LimitArgs {
    /// Wall-clock budget of one guest call, in milliseconds.
    #[arg(long, global = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_time_ms: u64,

    /// Bound calls by fuel (instructions) instead of wall-clock time.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_fuel: Option<u64>,

    /// Linear memory of one guest instance, in MiB.
    #[arg(long, global = true, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub guest_memory_mib: u64,

    /// Events one command may produce.
    #[arg(long, global = true, default_value_t = 100)]
    pub max_events_per_command: usize,

    /// Bytes of one command payload or one event payload.
    #[arg(long, global = true, default_value_t = 65536)]
    pub max_payload_bytes: usize,

    /// Hydrated aggregates one guest instance holds (1: an instance each).
    /// They share the instance's memory limit, and a trap in one of them
    /// has all of them rebuilt from the store.
    #[arg(long, global = true, default_value_t = eshost_wasm::sandbox::DEFAULT_AGGREGATES_PER_INSTANCE as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub aggregates_per_instance: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            budget: match self.guest_fuel {
                Some(fuel) => Budget::Fuel(fuel),
                None => Budget::WallClock(Duration::from_millis(self.guest_time_ms)),
            },
            memory_bytes: usize::try_from(self.guest_memory_mib << 20).unwrap_or(usize::MAX),
            max_events_per_command: self.max_events_per_command,
            max_payload_bytes: self.max_payload_bytes,
            aggregates_per_instance: usize::try_from(self.aggregates_per_instance)
                .unwrap_or(usize::MAX),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// List the loaded aggregates: name, version, digest, file, commands, events.
    #[command(after_help = "Example:\n  eshost aggregates --json")]
    Aggregates {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },

    /// Run one command and print the events it appended, as JSON lines.
    ///
    /// A recorded rejection (such as PurchaseRejected) is a success. A command
    /// the aggregate refuses appends nothing and exits 1.
    #[command(after_help = "Examples:\n  \
        eshost exec FlashSaleItem s1 CreateFlashSale '{\"initialStock\":3}'\n  \
        eshost exec FlashSaleItem s1 PurchaseItem @purchase.json\n  \
        echo '{\"buyerId\":\"b1\",\"quantity\":1}' | eshost exec FlashSaleItem s1 PurchaseItem -")]
    Exec(ExecArgs),

    /// Print an aggregate's events, oldest first, as JSON lines; or, with
    /// --all, every stream's events in global position order.
    #[command(after_help = "Examples:\n  \
        eshost events FlashSaleItem s1\n  \
        eshost events --all --aggregate FlashSaleItem\n  \
        eshost events --all --from 1234567890 --follow\n  \
        eshost events --all --follow --subscription billing\n\n\
        Positions increase in the order readers see events but are sparse, not a count.\n\
        A reader that resumes with --from set to the last position it printed never\n\
        misses an event, even one whose transaction committed late.")]
    Events {
        /// Aggregate type, e.g. FlashSaleItem.
        #[arg(required_unless_present = "all")]
        aggregate: Option<String>,
        /// Aggregate instance id.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Every stream's events, in global position order.
        #[arg(long, conflicts_with_all = ["aggregate", "id"])]
        all: bool,
        /// With --all: only events after this position (0: from the first).
        #[arg(long, value_name = "POSITION")]
        from: Option<i64>,
        /// With --all: only this aggregate type's events.
        #[arg(long = "aggregate", id = "only_aggregate", value_name = "NAME")]
        only_aggregate: Option<String>,
        /// With --all: once caught up, keep printing new events until interrupted.
        #[arg(long)]
        follow: bool,
        /// With --all: a durable subscription. Start after its checkpoint
        /// in the store (unless --from is given), and save the checkpoint
        /// as printed events are flushed: run again with the same name, it
        /// resumes there. At least once: events printed after the last save
        /// are printed again.
        #[arg(long, value_name = "NAME")]
        subscription: Option<String>,
    },

    /// Print an aggregate's current state as JSON (exits 1 if it has no
    /// events).
    #[command(after_help = "Example:\n  eshost state FlashSaleItem s1")]
    State {
        /// Aggregate type, e.g. FlashSaleItem.
        aggregate: String,
        /// Aggregate instance id.
        id: String,
    },

    /// Run given/when/then spec files against guests (aggregates, or
    /// projections: given/then) in the sandbox, with no database. Prints each case as ok or FAIL (with a diff), then
    /// `N passed, M failed`; exits 1 if any case failed, 2 if a spec file
    /// could not be used (reported on stderr; the other files still run).
    #[command(
        after_help = "Example:\n  eshost test examples/flash-sale/tests/flash-sale.spec.toml\n\n\
        A spec file (TOML) names an aggregate and lists cases:\n  \
        aggregate = \"FlashSaleItem\"\n  \
        [[case]]\n  \
        name = \"quantity 0 is refused\"\n  \
        given = [{ event = \"FlashSaleCreated\", payload = { itemId = \"test-1\", initialStock = 5 } }]\n  \
        when = { command = \"PurchaseItem\", payload = { buyerId = \"b\", quantity = 0 } }\n  \
        error = \"invalid-command\"    # or: then = [{ event = ..., payload = ... }], state = { ... }\n\n\
        A projection's spec names the projection (from --projections); given events, then\n\
        the view's documents (exactly these), or an error the failing event's must contain:\n  \
        projection = \"sales-summary\"\n  \
        [[case]]\n  \
        name = \"a purchase counts\"\n  \
        given = [{ id = \"s1\", event = \"FlashSaleCreated\", payload = { itemId = \"s1\", initialStock = 5 } }]\n  \
        then = { \"item:s1\" = { stock = 5, ... }, total = { ... } }"
    )]
    Test {
        /// Spec files (TOML).
        #[arg(required = true)]
        specs: Vec<PathBuf>,
    },

    /// Create or upgrade the event store's tables (every other command does
    /// this too when it opens the store).
    #[command(
        after_help = "Example:\n  eshost migrate --database-url postgres://postgres@127.0.0.1/postgres"
    )]
    Migrate,

    /// Check a new version of an aggregate against the recorded streams
    /// before it goes live (`eshost upgrade check --help`).
    #[command(subcommand)]
    Upgrade(upgrade::UpgradeCommand),

    /// Serve the HTTP API until SIGTERM or SIGINT, then drain: every
    /// accepted command is answered and committed before the process exits.
    #[command(after_help = serve::HELP)]
    Serve(serve::ServeArgs),

    /// Publish every event, in global order, to NATS JetStream until
    /// Ctrl-C: subject PREFIX.{aggregate}.{id}, each event once in the
    /// stream, resuming after a restart where the stream left off.
    #[command(after_help = "Example:\n  \
        eshost relay --nats nats://127.0.0.1:4222 --database-url postgres://postgres@127.0.0.1/postgres\n\n\
        Each message is the event as `events --all` prints it, with its position as\n\
        Nats-Msg-Id. Names in subjects keep ASCII letters, digits, - and _; other bytes\n\
        are written %XX (an id a.b becomes a%2Eb).")]
    Relay(RelayArgs),

    /// List the projections the store has a record of: name, version,
    /// generation, position (the last event its view includes), lag (events
    /// after it), status (ok, or failed with the event and the error).
    #[command(after_help = "Example:\n  eshost projections --json")]
    Projections {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },

    /// Print a projection's document (its JSON), or with --all every
    /// document of its view as JSON lines {"key", "document"}, in key order,
    /// all from one consistent view (a rebuild never shows half-built).
    #[command(after_help = "Examples:\n  \
        eshost view sales-summary total\n  \
        eshost view sales-summary item:s1\n  \
        eshost view sales-summary --all")]
    View {
        /// The projection, e.g. sales-summary.
        name: String,
        /// The document's key (exits 1 if there is none).
        #[arg(required_unless_present = "all")]
        key: Option<String>,
        /// Every document.
        #[arg(long, conflicts_with = "key")]
        all: bool,
    },

    /// Run or rebuild projections: guests that build read models (views)
    /// from the global log (`eshost projection run --help`).
    #[command(subcommand)]
    Projection(projection::ProjectionCommand),

    /// Run a demo scenario.
    #[command(subcommand)]
    Demo(DemoCommand),

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
    /// run by default).
    ///
    /// Under the table, one line per scenario with several modes gives each
    /// mode's rate as a share of the first mode's in the same round; with
    /// --rounds N, the median of N rounds, alternating which mode goes first.
    #[command(
        after_help = "Examples:\n  eshost bench --scenario hot-item --database-url postgres://postgres@127.0.0.1/postgres\n  eshost bench --scenario http-many-items --callers 256 --rounds 3"
    )]
    Bench {
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
    },

    /// Print the command line's or the HTTP API's reference as Markdown
    /// (the book's reference pages are these).
    #[command(hide = true)]
    Reference {
        #[arg(value_enum)]
        page: reference::ReferencePage,
    },
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Aggregate type, e.g. FlashSaleItem.
    pub aggregate: String,
    /// Aggregate instance id.
    pub id: String,
    /// Command name, e.g. PurchaseItem.
    pub command: String,
    /// JSON text, @FILE to read it from a file, or - for stdin [default: {}].
    pub payload: Option<String>,
    /// Identifies this command [default: a new UUID]. Sent again with the
    /// same id, the command appends nothing and prints the events first
    /// recorded: safe to retry after a timeout. At most 1024 bytes.
    #[arg(long)]
    pub command_id: Option<String>,
    /// Recorded in the events' metadata [default: the command id].
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Recorded in the events' metadata [default: the command id].
    #[arg(long)]
    pub causation_id: Option<String>,
    /// Conflict retries before giving up.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,

    /// Print one JSON object, the HTTP API's answer: `command_id`,
    /// `replayed`, `retries` and the `events`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Create a flash sale and let buyers purchase one unit each, all at once.
    ///
    /// Every buyer's command completes: a purchase while stock lasts, a
    /// recorded rejection after. Conflicts between buyers are retried.
    #[command(after_help = "Example:\n  eshost demo flash-sale --stock 5 --buyers 8 --json")]
    FlashSale(FlashSaleArgs),
}

#[derive(Debug, Args)]
pub struct FlashSaleArgs {
    /// Units in stock.
    #[arg(long, default_value_t = 5)]
    pub stock: u64,
    /// Concurrent buyers, one unit each.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub buyers: u32,
    /// Conflict retries per command before it fails.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl GlobalArgs {
    pub(crate) fn runtime(&self) -> Runtime {
        let runtime = Runtime::with_limits(self.limits.limits());
        if self.no_cache {
            return runtime;
        }
        match self.cache_dir.clone().or_else(ArtifactCache::default_dir) {
            Some(dir) => runtime.with_cache_dir(dir),
            None => runtime,
        }
    }

    pub(crate) fn modules(&self) -> Result<Modules> {
        self.modules_with(&self.runtime())
    }

    fn modules_with(&self, runtime: &Runtime) -> Result<Modules> {
        let modules = runtime.load_dir(&self.modules)?;
        if modules.is_empty() {
            bail!(
                "{}: no *.wasm components (build them with `cargo xtask build-guests`)",
                self.modules.display()
            );
        }
        Ok(modules)
    }

    pub(crate) async fn host(&self, retry: RetryPolicy) -> Result<Host> {
        Ok(self.host_and_runtime(retry).await?.0)
    }

    /// A host, and the runtime its modules were loaded with (a reload
    /// loads more with the same engine).
    pub(crate) async fn host_and_runtime(&self, retry: RetryPolicy) -> Result<(Host, Runtime)> {
        let runtime = self.runtime();
        let modules = self.modules_with(&runtime)?;
        let store = store::open(&self.database_url).await?;
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let options = HostOptions {
            retry,
            concurrency: self.concurrency.into(),
            cache_capacity: size(self.cache_capacity),
            cache_memory_bytes: size(self.cache_memory_mib.saturating_mul(1 << 20)),
            snapshot_every: self.snapshot_every,
            queue_capacity: size(self.queue_capacity),
            guest_threads: size(self.guest_threads),
            ..HostOptions::default()
        };
        Ok((Host::with_options(modules, store, options), runtime))
    }
}

/// The client of `--server`, sending `--token` if there is one.
fn client(global: &GlobalArgs, server: &str) -> Result<Client> {
    Ok(Client::new(server, global.token.as_deref())?)
}

/// How long a one-shot subcommand waits, after its work, for the host's
/// queues to finish (snapshots written) before the process exits.
const DRAIN: Duration = Duration::from_secs(10);

/// Drains `host` after a one-shot subcommand, then hands on its result.
/// `eshost relay`'s options.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The NATS server.
    #[arg(long, env = "ESHOST_NATS", value_name = "URL")]
    pub nats: String,
    /// Subjects are PREFIX.{aggregate}.{id}.
    #[arg(long, default_value = "eshost.events")]
    pub subject_prefix: String,
    /// The JetStream stream, created over PREFIX.> if it does not exist.
    #[arg(long, default_value = "ESHOST_EVENTS")]
    pub stream: String,
    /// The relay's name: its checkpoint in the store is relay:NAME.
    #[arg(long, default_value = "relay")]
    pub name: String,
}

impl From<RelayArgs> for relay::RelayConfig {
    fn from(args: RelayArgs) -> Self {
        Self {
            nats_url: args.nats,
            subject_prefix: args.subject_prefix,
            stream: args.stream,
            name: args.name,
        }
    }
}

/// `eshost events --all`: the global log as JSON lines, read from the
/// store (no guest is loaded), up to the end or, with `follow`, on and on
/// until Ctrl-C. With a subscription name, it starts after that
/// subscription's checkpoint (unless `from` says where) and saves the
/// checkpoint each time what it printed is flushed: at least once, so a
/// reader killed between a flush and its checkpoint gets those events again.
async fn global_log(
    global: &GlobalArgs,
    from: Option<i64>,
    aggregate: Option<String>,
    follow: bool,
    subscription: Option<String>,
) -> Result<()> {
    use futures_util::StreamExt;
    if global.server.is_some() {
        bail!("events --all reads the store directly; drop --server (or ESHOST_SERVER)");
    }
    let store = store::open(&global.database_url).await?;
    let checkpoint = subscription.map(|name| format!("subscription:{name}"));
    let after = match (from, &checkpoint) {
        (Some(from), _) => from,
        (None, Some(checkpoint)) => store.load_checkpoint(checkpoint).await?.unwrap_or(0),
        (None, None) => 0,
    };
    let mut out = LogPrinter {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        store: store.clone(),
        checkpoint,
        printed: after,
        saved: after,
    };
    if !follow {
        let mut after = after;
        loop {
            let page = store
                .read_all(after, aggregate.as_deref(), subscription::PAGE)
                .await?;
            for event in &page {
                out.print(event)?;
            }
            out.commit().await?;
            match page.last() {
                Some(last) => after = last.position,
                None => return Ok(()),
            }
        }
    }
    let from = Subscription { after, aggregate };
    let mut events = std::pin::pin!(subscription::follow(store, from));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Written out in a batch every 50 ms: a reader sees new events within
    // that, and a busy log is not one write (or checkpoint) per event.
    let mut flush = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            _ = flush.tick() => out.commit().await?,
            event = events.next() => match event {
                Some(event) => out.print(&event?)?,
                None => break,
            },
        }
    }
    out.commit().await
}

/// Prints the global log and keeps a subscription's checkpoint behind what
/// it has flushed.
struct LogPrinter<W: std::io::Write> {
    out: W,
    store: Arc<dyn store::EventStore>,
    checkpoint: Option<String>,
    /// The position of the last event printed, and of the last saved.
    printed: i64,
    saved: i64,
}

impl<W: std::io::Write> LogPrinter<W> {
    fn print(&mut self, event: &store::RecordedEvent) -> Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.printed = event.position;
        Ok(())
    }

    /// Flushes what was printed, then saves the checkpoint (in that order:
    /// an event is never marked done before it is out).
    async fn commit(&mut self) -> Result<()> {
        self.out.flush()?;
        if let Some(checkpoint) = &self.checkpoint
            && self.printed > self.saved
        {
            self.store.save_checkpoint(checkpoint, self.printed).await?;
            self.saved = self.printed;
        }
        Ok(())
    }
}

async fn drained<T>(host: &Host, result: Result<T>) -> Result<T> {
    if let Err(e) = host.shutdown(DRAIN).await {
        tracing::warn!(error = %e, "exiting before the host drained");
    }
    result
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match cli.command {
        CliCommand::Aggregates { json } => aggregates(global, json).await,
        CliCommand::Exec(args) => exec(global, args).await,
        CliCommand::Events {
            all: true,
            from,
            only_aggregate,
            follow,
            subscription,
            ..
        } => global_log(global, from, only_aggregate, follow, subscription).await,
        CliCommand::Events {
            aggregate,
            id,
            from,
            only_aggregate,
            follow,
            subscription,
            ..
        } => {
            if from.is_some() || only_aggregate.is_some() || follow || subscription.is_some() {
                // clap's `requires` counts a flag's default as present.
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "--from, --aggregate, --follow and --subscription need --all",
                    )
                    .exit();
            }
            let (Some(aggregate), Some(id)) = (aggregate, id) else {
                bail!("name an aggregate and an id, or pass --all");
            };
            if let Some(server) = &global.server {
                let mut out = std::io::stdout().lock();
                let print = |events: &[eshost_store::RecordedEvent]| {
                    use std::io::Write;
                    for event in events {
                        writeln!(out, "{}", serde_json::to_string(event)?)?;
                    }
                    Ok(())
                };
                return Ok(client(global, server)?
                    .events(&aggregate, &id, print)
                    .await?);
            }
            let host = global.host(RetryPolicy::default()).await?;
            // Page by page: a stream of millions of events is never in
            // memory at once.
            let printed = async {
                use std::io::Write;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let mut after = 0;
                loop {
                    let page = host
                        .events_page(&aggregate, &id, after, Some(REPLAY_PAGE))
                        .await?;
                    for event in &page {
                        serde_json::to_writer(&mut out, event)?;
                        out.write_all(b"\n")?;
                    }
                    match page.last() {
                        Some(last) if page.len() as u64 == REPLAY_PAGE => after = last.sequence,
                        _ => break,
                    }
                }
                out.flush()?;
                Ok(())
            };
            let result = printed.await;
            drained(&host, result).await
        }
        CliCommand::State { aggregate, id } => {
            let (state, version) = match &global.server {
                Some(server) => {
                    let answer = client(global, server)?.state(&aggregate, &id).await?;
                    (answer.state.to_string(), answer.version)
                }
                None => {
                    let host = global.host(RetryPolicy::default()).await?;
                    let result = host
                        .render(&aggregate, &id)
                        .await
                        .map_err(anyhow::Error::from);
                    drained(&host, result).await?
                }
            };
            // A default state for a stream with no events would look like a
            // real aggregate; say what is true instead.
            if version == 0 {
                anyhow::bail!("{aggregate} {id} has no events: it was never created");
            }
            println!("{state}");
            Ok(())
        }
        CliCommand::Serve(args) => serve::run(global, args).await,
        CliCommand::Relay(args) => {
            if global.server.is_some() {
                bail!("relay reads the store directly; drop --server (or ESHOST_SERVER)");
            }
            let store = store::open(&global.database_url).await?;
            let stop = async {
                // An error here means no signal handler: run until killed.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            Ok(relay::run(store, args.into(), stop).await?)
        }
        CliCommand::Upgrade(command) => upgrade::run(global, command).await,
        CliCommand::Projections { json } => projection::list(global, json).await,
        CliCommand::View { name, key, .. } => projection::view(global, &name, key.as_deref()).await,
        CliCommand::Projection(command) => projection::run(global, command).await,
        CliCommand::Test { specs } => test_specs(global, &specs),
        CliCommand::Migrate => {
            store::open(&global.database_url).await?;
            eprintln!("{}: migrated", store::redact(&global.database_url));
            Ok(())
        }
        CliCommand::Demo(DemoCommand::FlashSale(args)) => demo_flash_sale(global, args).await,
        CliCommand::Bench {
            scenarios,
            callers,
            rounds,
            json,
        } => run_bench(global, scenarios, callers as usize, rounds as usize, json).await,
        CliCommand::Reference { page } => {
            print!("{}", reference::render(page));
            Ok(())
        }
    }
}

/// A spec file, with the component its cases run against.
enum LoadedSpec {
    Aggregate(SpecFile, Arc<eshost_wasm::LoadedComponent>),
    Projection(ProjectionSpecFile, Arc<eshost_wasm::LoadedProjection>),
}

impl LoadedSpec {
    /// Each case's name and, if it failed, why.
    fn run(&self) -> Vec<(&str, Option<String>)> {
        match self {
            Self::Aggregate(spec, component) => spec
                .cases
                .iter()
                .map(|case| (case.name.as_str(), run_case(component, case)))
                .collect(),
            Self::Projection(spec, component) => spec
                .cases
                .iter()
                .map(|case| (case.name.as_str(), run_projection_case(component, case)))
                .collect(),
        }
    }
}

fn test_specs(global: &GlobalArgs, specs: &[PathBuf]) -> Result<()> {
    let runtime = global.runtime();
    // Loaded when a spec first needs them.
    let mut modules: Option<Modules> = None;
    let mut projections: Option<Vec<Arc<eshost_wasm::LoadedProjection>>> = None;
    // A file that cannot be used is reported and skipped: the others still run.
    let mut load = |path: &PathBuf| -> std::result::Result<LoadedSpec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let is_projection = text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("projection"));
        if is_projection {
            let spec = ProjectionSpecFile::parse(&text)?;
            let loaded = match &mut projections {
                Some(loaded) => loaded,
                None => projections.insert(
                    runtime
                        .load_projections(&global.projections)
                        .map_err(|e| e.to_string())?,
                ),
            };
            let component = loaded
                .iter()
                .find(|p| p.name == spec.projection)
                .ok_or_else(|| {
                    let names: Vec<&str> = loaded.iter().map(|p| p.name.as_str()).collect();
                    format!(
                        "unknown projection {:?} (loaded from {}: {})",
                        spec.projection,
                        global.projections.display(),
                        names.join(", ")
                    )
                })?;
            return Ok(LoadedSpec::Projection(spec, component.clone()));
        }
        let spec = SpecFile::parse(&text)?;
        let loaded = match &mut modules {
            Some(loaded) => loaded,
            None => modules.insert(
                global
                    .modules_with(&runtime)
                    .map_err(|e| format!("{e:#}"))?,
            ),
        };
        let component = loaded.get(&spec.aggregate).ok_or_else(|| {
            format!(
                "unknown aggregate {:?} (loaded: {})",
                spec.aggregate,
                loaded.names().collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok(LoadedSpec::Aggregate(spec, component.clone()))
    };
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for path in specs {
        let spec = match load(path) {
            Ok(loaded) => loaded,
            Err(why) => {
                broken += 1;
                eprintln!("{}: spec error:", path.display());
                for line in why.lines() {
                    eprintln!("  {line}");
                }
                continue;
            }
        };
        println!("{}", path.display());
        for (name, failure) in spec.run() {
            match failure {
                None => {
                    passed += 1;
                    println!("  ok    {name}");
                }
                Some(failure) => {
                    failed += 1;
                    println!("  FAIL  {name}");
                    for line in failure.lines() {
                        println!("        {line}");
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if broken > 0 {
        return Err(SpecErrors {
            broken,
            files: specs.len(),
        }
        .into());
    }
    if failed > 0 {
        bail!("{failed} of {} cases failed", passed + failed);
    }
    Ok(())
}

async fn run_bench(
    global: &GlobalArgs,
    scenarios: Vec<String>,
    callers: usize,
    rounds: usize,
    json: bool,
) -> Result<()> {
    let modules = global.modules()?;
    let scenarios = if scenarios.is_empty() {
        bench::default_scenarios().map(str::to_string).collect()
    } else {
        scenarios
    };
    if !json {
        println!(
            "{:<18} {:<12} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>6} {:>8} {:>12} {:>10} {:>6} {:>9}",
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
            "client us"
        );
    }
    let projections = if scenarios.iter().any(|s| s == "projection") {
        global.runtime().load_projections(&global.projections)?
    } else {
        Vec::new()
    };
    let mut summaries = Vec::new();
    for scenario in &scenarios {
        let lines = bench::run(
            scenario,
            &modules,
            &global.modules,
            &projections,
            &global.database_url,
            callers,
            rounds,
        )
        .await?;
        summaries.extend(bench::medians(&lines));
        for line in lines {
            if json {
                println!("{}", serde_json::to_string(&line)?);
            } else {
                println!(
                    "{:<18} {:<12} {:>8} {:>9.3} {:>10.0} {:>9.4} {:>9.4} {:>9.2} {:>10.1} {:>10.1} {:>6} {:>8} {:>12.0} {:>10} {:>6} {:>9}",
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
                    line.cpu_us_per_command
                        .map_or("-".to_string(), |us| format!("{us:.0}")),
                    line.cpu_busy_share
                        .map_or("-".to_string(), |share| format!("{:.0}", share * 100.0)),
                    line.client_cpu_us_per_command
                        .map_or("-".to_string(), |us| format!("{us:.0}")),
                );
            }
        }
    }
    if !json && !summaries.is_empty() {
        println!();
        for summary in summaries {
            println!("{summary}");
        }
    }
    Ok(())
}

async fn aggregates(global: &GlobalArgs, json: bool) -> Result<()> {
    let listing = match &global.server {
        Some(server) => client(global, server)?.aggregates().await?,
        None => global.modules()?.describe(),
    };
    if json {
        println!("{}", serde_json::to_string(&listing)?);
        return Ok(());
    }
    for a in &listing {
        println!("{} {} ({})", a.name, a.version, a.file.display());
        println!("  digest   {}", a.digest);
        println!("  contract {}", a.contract);
        println!("  commands {}", a.commands.join(", "));
        println!("  events   {}", a.events.join(", "));
        if !a.old_events.is_empty() {
            println!("  old events (upcast) {}", a.old_events.join(", "));
        }
    }
    Ok(())
}

/// JSON text as given, `@FILE`, or `-` for stdin; absent means `{}`.
fn read_payload(payload: Option<&str>) -> Result<String> {
    match payload {
        None => Ok("{}".to_string()),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the payload from stdin")?;
            Ok(text)
        }
        Some(arg) => match arg.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read payload file {path}")),
            None => Ok(arg.to_string()),
        },
    }
}

async fn exec(global: &GlobalArgs, args: ExecArgs) -> Result<()> {
    // Read the input first: a bad @file fails before anything is opened.
    let payload = read_payload(args.payload.as_deref())?;
    // The id is settled here, so that a failure can name it: resending with
    // it is how a caller learns the outcome of a command left unknown.
    let command_id = args
        .command_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request = CommandRequest {
        command_id: Some(command_id.clone()),
        correlation_id: args.correlation_id,
        causation_id: args.causation_id,
        ..CommandRequest::new(args.aggregate, args.id, args.command, payload)
    };
    let result = match &global.server {
        Some(server) => client(global, server)?
            .execute(&request)
            .await
            .map_err(anyhow::Error::from),
        None => exec_here(global, &request, args.max_retries).await,
    };
    match result {
        Ok(outcome) => {
            if outcome.replayed {
                eprintln!(
                    "command id {command_id} was already recorded: nothing appended; its events follow"
                );
            }
            if args.json {
                println!("{}", serde_json::to_string(&outcome)?);
                return Ok(());
            }
            for event in &outcome.events {
                println!("{}", serde_json::to_string(event)?);
            }
            Ok(())
        }
        Err(error) => Err(exit::CommandFailed {
            command_id,
            resend: exit::worth_resending(&error),
            error,
        }
        .into()),
    }
}

/// Runs one command in this process. In queued mode, the stream is locked
/// across processes first: processes running commands on one aggregate take
/// turns instead of racing (decision record 0018 says why).
async fn exec_here(
    global: &GlobalArgs,
    request: &CommandRequest,
    max_retries: u32,
) -> Result<eshost::dispatch::CommandOutcome> {
    let retry = RetryPolicy {
        max_retries,
        ..RetryPolicy::default()
    };
    let host = global.host(retry).await?;
    let _turn = match host.concurrency() {
        Concurrency::Queued => {
            let stream = store::StreamId::new(&request.aggregate, &request.id);
            Some(host.store().lock_stream(&stream, STREAM_LOCK_WAIT).await?)
        }
        Concurrency::Optimistic => None,
    };
    let result = host.execute(request).await.map_err(anyhow::Error::from);
    drained(&host, result).await
}

/// How long `exec` waits for its turn on a stream other processes are using.
const STREAM_LOCK_WAIT: Duration = Duration::from_secs(30);

async fn demo_flash_sale(global: &GlobalArgs, args: FlashSaleArgs) -> Result<()> {
    let retry = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    let host = global.host(retry).await?;
    if host.modules().get(demo::AGGREGATE).is_none() {
        bail!(
            "{}: no component provides {}",
            global.modules.display(),
            demo::AGGREGATE
        );
    }
    let result = demo::flash_sale(&host, args.stock, args.buyers).await;
    let report = drained(&host, result.map_err(anyhow::Error::from)).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "flash sale {}: {} in stock, {} buyers at once ({:?}, max retries {})",
            report.sale_id,
            report.initial_stock,
            report.buyers,
            host.concurrency(),
            args.max_retries
        );
        println!(
            "  purchased {}, rejected {}, failed {}",
            report.purchased, report.rejected, report.failed
        );
        println!(
            "  stock remaining {}, sold {}, stream length {}",
            report.stock_remaining, report.sold, report.events
        );
        println!(
            "  conflict retries {}, {:.1} ms",
            report.retries,
            report.seconds * 1000.0
        );
        for error in &report.errors {
            println!("  error: {error}");
        }
    }
    if report.failed > 0 {
        bail!("{} of {} purchases failed", report.failed, report.buyers);
    }
    Ok(())
}
