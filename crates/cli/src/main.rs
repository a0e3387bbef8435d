//! The `eshost` binary: tracing to stderr (bounded, never blocking), then
//! the command line.

mod cli;

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Many small buffers are allocated on one thread and freed on another
/// (a command's request, events and answer cross several); mimalloc
/// handles that with less locking than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A server says what it is doing (start, reloads, drain); a one-shot
    // command only warns. RUST_LOG overrides either.
    let default = match cli.command {
        cli::CliCommand::Serve(_) => "info",
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
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().init(),
    }
    let ran = cli::run(cli).await;
    // Every queued line is written before the last word.
    drop(written);
    match ran {
        Ok(()) => ExitCode::from(cli::exit::OK),
        Err(e) => {
            eprintln!("error: {}", cli::exit::one_line(&e));
            ExitCode::from(cli::exit::code(&e))
        }
    }
}

/// Log lines waiting for stderr at most; more are dropped.
const LOG_QUEUE_LINES: usize = 10_000;
