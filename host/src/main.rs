//! The `eshost` binary: tracing to stderr, then the command line.

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = eshost::cli::Cli::parse();
    match eshost::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", eshost::cli::exit::one_line(&e));
            ExitCode::from(eshost::cli::exit::code(&e))
        }
    }
}
