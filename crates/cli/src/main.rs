//! The `eshost` binary: settings from `eshost.toml` and the environment,
//! the command line, tracing to stderr (bounded, never blocking), then the
//! subcommand.
//!
//! # Layout
//!
//! - [`args`]: the options every subcommand shares, and a client's.
//! - [`config`]: `eshost.toml`, applied as the options' defaults.
//! - [`backend`]: where a command runs, here or on a server, chosen once.
//! - [`commands`]: one file per subcommand.
//! - [`exit`]: exit codes, and which error means which.
//! - [`reference`]: the book's reference pages, from the code.
//! - [`telemetry`]: traces by OTLP, when the OTEL_* variables ask.

mod args;
mod backend;
mod commands;
mod config;
mod exit;
mod keys;
mod reference;
mod telemetry;

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Many small buffers are allocated on one thread and freed on another
/// (a command's request, events and answer cross several); mimalloc
/// handles that with less locking than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any thread exists: the file's settings become defaults of the
    // environment variables clap reads.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = config::apply(&argv) {
        eprintln!("error: {}", exit::one_line(&e));
        return ExitCode::from(exit::USAGE);
    }
    let cli = args::Cli::parse_from(argv);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: args::Cli) -> ExitCode {
    // A server says what it is doing (start, reloads, drain); a one-shot
    // command only warns. RUST_LOG overrides either.
    let default = match cli.command {
        commands::Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Log lines go through a bounded queue to a writer thread: a stderr
    // nobody reads (a full pipe) drops lines instead of stalling the
    // caller, which may be a guest call on the clock.
    let (stderr, written) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::stderr());
    let telemetry = match telemetry::Telemetry::from_env() {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {}", exit::one_line(&e));
            return ExitCode::from(exit::USAGE);
        }
    };
    // Without traces the log's filter is global, as it always was, so a
    // span no log shows is never made; with them it is the log's own, and
    // the traces' layer takes eshost's spans at every level.
    let format = cli.global.log_format;
    match &telemetry {
        None => tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(format, stderr))
            .init(),
        Some(telemetry) => tracing_subscriber::registry()
            .with(log_layer(format, stderr).with_filter(filter))
            .with(telemetry.layer())
            .init(),
    }
    let ran = commands::run(cli, telemetry.is_some()).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    // Every queued line is written before the last word.
    drop(written);
    match ran {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {}", exit::one_line(&e));
            ExitCode::from(exit::code(&e))
        }
    }
}

/// The log's lines, as text or JSON, to `writer`.
fn log_layer<S>(
    format: args::LogFormat,
    writer: tracing_appender::non_blocking::NonBlocking,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        args::LogFormat::Text => logs.boxed(),
        args::LogFormat::Json => logs.json().boxed(),
    }
}

/// Log lines waiting for stderr at most; more are dropped.
const LOG_QUEUE_LINES: usize = 10_000;
