//! The options every subcommand shares: where the store and the components
//! are, the host's settings and the sandbox's limits; and the two a client
//! of a server adds. Each is a flag, an `ESHOST_*` environment variable and
//! a key of `eshost.toml` (see [`crate::config`]).
//!
//! They are global (accepted before or after the subcommand's name) and
//! shown apart from a subcommand's own options in its `--help`.

use crate::commands::Command;
use anyhow::{Result, bail};
use clap::{Args, Parser};
use eshost::dispatch::{Concurrency, DEFAULT_QUEUE_CAPACITY, Host, HostOptions, RetryPolicy};
use eshost_wasm::{ArtifactCache, Budget, Limits, LoadError, LoadedProjection, Modules, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store used when none is configured: a file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://eshost.db";

#[derive(Debug, Parser)]
#[command(
    name = "eshost",
    version,
    about = "Run event-sourced aggregates compiled to WebAssembly components",
    after_help = crate::exit::HELP,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Settings file [default: ./eshost.toml when there is one]. Its keys
    /// are the options' environment variables without ESHOST_, in lower
    /// case with dashes (`database-url = "postgres://..."`); a flag or a
    /// variable set outside it wins.
    #[arg(long, env = "ESHOST_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Event store: postgres://user@host:port/db, or sqlite://PATH (a file,
    /// created on first use). DATABASE_URL is read too, after
    /// ESHOST_DATABASE_URL.
    #[arg(long, env = "ESHOST_DATABASE_URL", global = true, default_value = DEFAULT_DATABASE_URL, value_name = "URL", hide_env_values = true)]
    pub database_url: String,

    /// Directory of aggregate components: every *.wasm in it is loaded.
    #[arg(
        long,
        env = "ESHOST_MODULES",
        global = true,
        default_value = "modules",
        value_name = "DIR"
    )]
    pub modules: PathBuf,

    /// Directory of projection components: every *.wasm in it is loaded by
    /// `projection run`, `projection rebuild`, `projections` and
    /// `serve --run-projections`.
    #[arg(
        long,
        env = "ESHOST_PROJECTIONS",
        global = true,
        default_value = "projections",
        value_name = "DIR"
    )]
    pub projections: PathBuf,

    /// Directory of reactor components: every *.wasm in it is loaded by
    /// `reactor run`, `reactors` and `test` for reactor specs.
    #[arg(
        long,
        env = "ESHOST_REACTORS",
        global = true,
        default_value = "reactors",
        value_name = "DIR"
    )]
    pub reactors: PathBuf,

    /// The sinks reactors deliver to: a TOML file with a table per sink,
    /// its `url` and optional `headers`, a header's value taking a secret
    /// from the environment as `${NAME}` [default: no sinks; deliveries
    /// are parked].
    #[arg(long, env = "ESHOST_SINKS", global = true, value_name = "FILE")]
    pub sinks: Option<PathBuf>,

    /// Where compiled components are cached
    /// [default: $XDG_CACHE_HOME/eshost, else ~/.cache/eshost].
    #[arg(long, env = "ESHOST_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component afresh; neither read nor write the cache.
    #[arg(long, env = "ESHOST_NO_CACHE", global = true)]
    pub no_cache: bool,

    /// How log lines (on stderr) are written.
    #[arg(long, env = "ESHOST_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub host: HostArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub keys: crate::keys::KeyArgs,
}

/// How the host runs commands.
#[derive(Debug, Args)]
#[command(next_help_heading = "Host settings (global)")]
pub struct HostArgs {
    /// How commands on one aggregate are kept apart: queued (one queue per
    /// aggregate in this process, batched appends) or optimistic (each
    /// command races; conflicts are retried).
    #[arg(long, env = "ESHOST_CONCURRENCY", global = true, value_enum, default_value_t = ConcurrencyArg::Queued)]
    pub concurrency: ConcurrencyArg,

    /// Hydrated aggregates kept in memory (least recently used go first).
    #[arg(long, env = "ESHOST_CACHE_CAPACITY", global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_capacity: u64,

    /// Guest memory the cached aggregates may hold in all, in MiB.
    #[arg(long, env = "ESHOST_CACHE_MEMORY_MIB", global = true, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_memory_mib: u64,

    /// Snapshot an aggregate's state every N events (0: never).
    #[arg(
        long,
        env = "ESHOST_SNAPSHOT_EVERY",
        global = true,
        default_value_t = 100,
        value_name = "N"
    )]
    pub snapshot_every: u64,

    /// Commands one aggregate's queue holds (queued mode); a command that
    /// finds it full is refused at once (exit 4, HTTP 429).
    #[arg(long, env = "ESHOST_QUEUE_CAPACITY", global = true, default_value_t = DEFAULT_QUEUE_CAPACITY as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_capacity: u64,

    /// Guest calls that may run at once. A call starts on the async thread
    /// that makes it and, if it outlives one epoch tick (10 ms), goes on
    /// on a thread of its own.
    #[arg(long, env = "ESHOST_GUEST_THREADS", global = true, default_value_t = eshost_wasm::pool::DEFAULT_THREADS as u64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub guest_threads: u64,
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
#[command(next_help_heading = "Sandbox limits (global)")]
pub struct LimitArgs {
    /// Wall-clock budget of one guest call, in milliseconds.
    #[arg(long, env = "ESHOST_GUEST_TIME_MS", global = true, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_time_ms: u64,

    /// Bound calls by fuel (instructions) instead of wall-clock time.
    #[arg(long, env = "ESHOST_GUEST_FUEL", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_fuel: Option<u64>,

    /// Linear memory of one guest instance, in MiB.
    #[arg(long, env = "ESHOST_GUEST_MEMORY_MIB", global = true, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub guest_memory_mib: u64,

    /// Events one command may produce.
    #[arg(
        long,
        env = "ESHOST_MAX_EVENTS_PER_COMMAND",
        global = true,
        default_value_t = 100
    )]
    pub max_events_per_command: usize,

    /// Bytes of one command payload or one event payload.
    #[arg(
        long,
        env = "ESHOST_MAX_PAYLOAD_BYTES",
        global = true,
        default_value_t = 65536
    )]
    pub max_payload_bytes: usize,

    /// Hydrated aggregates one guest instance holds (1: an instance each).
    /// They share the instance's memory limit, and a trap in one of them
    /// has all of them rebuilt from the store.
    #[arg(long, env = "ESHOST_AGGREGATES_PER_INSTANCE", global = true, default_value_t = eshost_wasm::sandbox::DEFAULT_AGGREGATES_PER_INSTANCE as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
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

/// For the subcommands that can run here or on a server: where the server
/// is. Without it they open the store and the modules in this process.
#[derive(Debug, Args)]
#[command(next_help_heading = "Server")]
pub struct RemoteArgs {
    /// An `eshost serve` to send the request to, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "ESHOST_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// The bearer token to send to --server.
    #[arg(long, env = "ESHOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM certificates to trust, beside the system's, for an https
    /// --server whose certificate a private CA signed.
    #[arg(long, env = "ESHOST_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// How long a one-shot subcommand waits, after its work, for the host's
/// queues to finish (snapshots written) before the process exits.
pub const DRAIN: Duration = Duration::from_secs(10);

/// How long a one-shot process waits for its turn on a stream other
/// processes are using.
const STREAM_TURN_WAIT: Duration = Duration::from_secs(30);

impl GlobalArgs {
    pub fn runtime(&self) -> Runtime {
        let runtime = Runtime::with_limits(self.limits.limits());
        if self.no_cache {
            return runtime;
        }
        match self.cache_dir.clone().or_else(ArtifactCache::default_dir) {
            Some(dir) => runtime.with_cache_dir(dir),
            None => runtime,
        }
    }

    pub fn modules(&self) -> Result<Modules> {
        self.modules_with(&self.runtime())
    }

    /// The components in `--modules`: all of them, or an error with a hint
    /// that says where the directory was looked for and how to name it.
    pub fn modules_with(&self, runtime: &Runtime) -> Result<Modules> {
        let dir = &self.modules;
        if !dir.is_dir() {
            return Err(LoadError::new(
                shown(dir),
                "no such modules directory; name the directory of your components with --modules DIR (or ESHOST_MODULES, or modules in eshost.toml)",
            )
            .into());
        }
        let modules = runtime.load_dir(dir)?;
        if modules.is_empty() {
            return Err(LoadError::new(
                shown(dir),
                "no *.wasm components; put them there, or name their directory with --modules DIR",
            )
            .into());
        }
        Ok(modules)
    }

    /// The host's options: the global settings, `retry`, and, for a
    /// process that runs one command and exits, turns on its stream.
    pub fn host_options(&self, retry: RetryPolicy, one_command: bool) -> HostOptions {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let host = &self.host;
        HostOptions {
            retry,
            concurrency: host.concurrency.into(),
            cache_capacity: size(host.cache_capacity),
            cache_memory_bytes: size(host.cache_memory_mib.saturating_mul(1 << 20)),
            snapshot_every: host.snapshot_every,
            queue_capacity: size(host.queue_capacity),
            guest_threads: size(host.guest_threads),
            stream_turns: one_command.then_some(STREAM_TURN_WAIT),
            ..HostOptions::default()
        }
    }

    /// A host for a subcommand that does its work and exits.
    pub async fn host(&self, retry: RetryPolicy) -> Result<Host> {
        self.host_with(self.host_options(retry, false)).await
    }

    /// A host for a process that runs one command and exits: in queued
    /// mode it takes the stream's turn across processes first, so that
    /// many such processes on one aggregate queue instead of racing
    /// (decision record 0018).
    pub async fn host_for_one_command(&self, retry: RetryPolicy) -> Result<Host> {
        self.host_with(self.host_options(retry, true)).await
    }

    async fn host_with(&self, options: HostOptions) -> Result<Host> {
        let modules = self.modules()?;
        let store = self.store_for(Some(&modules)).await?;
        Ok(Host::with_options(modules, store, options))
    }

    /// The event store, encrypting personal data when a master key is at
    /// hand (see [`crate::keys`]).
    pub async fn store(&self) -> Result<Arc<dyn eshost_store::EventStore>> {
        self.store_for(None).await
    }

    /// The event store for a process that runs `modules`: on SQLite, a
    /// guest among them that declares personal data has a key made.
    pub async fn store_for(
        &self,
        modules: Option<&Modules>,
    ) -> Result<Arc<dyn eshost_store::EventStore>> {
        self.keys.open_store(&self.database_url, modules).await
    }

    /// The projection guests in --projections that seed the store, loaded
    /// by `runtime`, all or nothing; none without such a directory (what
    /// is deployed runs all the same).
    pub fn projection_seeds(&self, runtime: &Runtime) -> Result<Vec<Arc<LoadedProjection>>> {
        match self.projections.is_dir() {
            true => Ok(runtime.load_projections(&self.projections)?),
            false => Ok(Vec::new()),
        }
    }

    /// The projection guests in --projections (those named, if any), loaded
    /// by `runtime`; all or nothing.
    /// The sinks in `--sinks`, or none.
    pub fn sinks(&self) -> Result<eshost_react::Sinks> {
        Ok(match &self.sinks {
            Some(file) => eshost_react::Sinks::load(file)?,
            None => eshost_react::Sinks::default(),
        })
    }

    /// The reactors in `--reactors` (those in `names`, if any): all of
    /// them, or an error naming what is missing.
    pub fn load_reactors(
        &self,
        runtime: &Runtime,
        names: &[String],
    ) -> Result<Vec<Arc<eshost_wasm::LoadedReactor>>> {
        let dir = &self.reactors;
        if !dir.is_dir() {
            return Err(LoadError::new(
                shown(dir),
                "no such reactors directory; name it with --reactors DIR (or ESHOST_REACTORS, or reactors in eshost.toml)",
            )
            .into());
        }
        let loaded = runtime.load_reactors(dir)?;
        if let Some(missing) = names.iter().find(|n| !loaded.iter().any(|r| &r.name == *n)) {
            let known: Vec<&str> = loaded.iter().map(|r| r.name.as_str()).collect();
            bail!(
                "no reactor {missing:?} in {} (loaded: {})",
                shown(dir).display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        if loaded.is_empty() {
            bail!(
                "{}: no reactor components (*.wasm); name their directory with --reactors DIR",
                shown(dir).display()
            );
        }
        Ok(loaded
            .into_iter()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            .collect())
    }

    pub fn load_projections(
        &self,
        runtime: &Runtime,
        names: &[String],
    ) -> Result<Vec<Arc<LoadedProjection>>> {
        let dir = &self.projections;
        if !dir.is_dir() {
            return Err(LoadError::new(
                shown(dir),
                "no such projections directory; name it with --projections DIR (or ESHOST_PROJECTIONS, or projections in eshost.toml)",
            )
            .into());
        }
        let loaded = runtime.load_projections(dir)?;
        if let Some(missing) = names.iter().find(|n| !loaded.iter().any(|p| &p.name == *n)) {
            let known: Vec<&str> = loaded.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "no projection {missing:?} in {} (loaded: {})",
                shown(dir).display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        let chosen: Vec<_> = loaded
            .into_iter()
            .filter(|p| names.is_empty() || names.contains(&p.name))
            .collect();
        if chosen.is_empty() {
            bail!(
                "{}: no *.wasm projections; name their directory with --projections DIR",
                shown(dir).display()
            );
        }
        Ok(chosen)
    }
}

/// A directory as a message shows it: absolute, so a relative default
/// says where it was looked for.
fn shown(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Drains `host` after a one-shot subcommand, then hands on its result.
pub async fn drained<T>(host: &Host, result: Result<T>) -> Result<T> {
    if let Err(e) = host.shutdown(DRAIN).await {
        tracing::warn!(error = %e, "exiting before the host drained");
    }
    result
}
