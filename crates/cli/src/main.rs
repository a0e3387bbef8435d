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

mod args;
mod backend;
mod commands;
mod config;
mod exit;
mod reference;

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.global.log_format {
        args::LogFormat::Text => logs.init(),
        args::LogFormat::Json => logs.json().init(),
    }
    let ran = commands::run(cli).await;
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

/// Log lines waiting for stderr at most; more are dropped.
const LOG_QUEUE_LINES: usize = 10_000;
