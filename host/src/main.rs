//! The `eshost` binary: tracing to stderr, then the command line.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = eshost::cli::Cli::parse();
    // A server says what it is doing (start, reloads, drain); a one-shot
    // command only warns. RUST_LOG overrides either.
    let default = match cli.command {
        eshost::cli::CliCommand::Serve(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.global.log_format {
        eshost::cli::LogFormat::Text => logs.init(),
        eshost::cli::LogFormat::Json => logs.json().init(),
    }
    match eshost::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", eshost::cli::exit::one_line(&e));
            ExitCode::from(eshost::cli::exit::code(&e))
        }
    }
}
