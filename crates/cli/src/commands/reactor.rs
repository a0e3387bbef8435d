//! `eshost reactor run`: the reactor guests in `--reactors`, run against
//! the store, their commands sent through this process's host.

use crate::args::{GlobalArgs, drained};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use eshost::dispatch::RetryPolicy;
use eshost_react::Supervisor;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum ReactorCommand {
    /// Run the reactors in --reactors (all, or those named) until Ctrl-C:
    /// each reacts to the events it subscribes to from its checkpoint on,
    /// its commands sent to the aggregates in --modules, its timers fired
    /// when due, its deliveries sent to the sinks in --sinks. Each action
    /// is performed once, by the id the host gives it, across crashes and
    /// restarts. One runner is active per reactor across processes (a
    /// lease in the store, taken over 5 s after its holder stops).
    #[command(after_help = "Examples:\n  \
        eshost reactor run --modules target/checkout --sinks sinks.toml\n  \
        eshost reactor run checkout --no-watch\n\n\
        The directory is watched: a new or changed file is loaded and its\n\
        reactor restarted from the same checkpoint; a removed file changes\n\
        nothing; a file that fails to load is logged while what runs goes\n\
        on. Write files with a rename (cp x.wasm dir/.x.tmp && mv ...).")]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Reactors to run [default: every one in --reactors].
    pub names: Vec<String>,
    /// Do not watch --reactors for new or changed files.
    #[arg(long, env = "ESHOST_NO_WATCH")]
    pub no_watch: bool,
}

pub async fn run(global: &GlobalArgs, command: ReactorCommand) -> Result<()> {
    match command {
        ReactorCommand::Run(args) => run_reactors(global, args).await,
    }
}

async fn run_reactors(global: &GlobalArgs, args: RunArgs) -> Result<()> {
    let sinks = global.sinks()?;
    let runtime = global.runtime();
    let reactors = global.load_reactors(&runtime, &args.names)?;
    for reactor in &reactors {
        let missing: Vec<&str> = reactor
            .sinks
            .iter()
            .map(String::as_str)
            .filter(|sink| !sinks.names().any(|name| name == *sink))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(reactor = %reactor.name, sinks = %missing.join(", "),
                "deliveries to sinks --sinks does not name are parked");
        }
    }
    let host = global.host(RetryPolicy::default()).await?;
    let supervisor = Supervisor::new(
        host.clone(),
        runtime,
        global.reactors.clone(),
        args.names,
        sinks,
        holder(),
    );
    let stop = CancellationToken::new();
    let interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.cancel();
        }
    });
    eprintln!(
        "running {} reactor(s) from {}; Ctrl-C stops",
        reactors.len(),
        global.reactors.display()
    );
    let outcomes = supervisor.run(reactors, !args.no_watch, stop).await;
    drained(&host, Ok(())).await?;
    let failed: Vec<_> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    for error in &failed {
        eprintln!("error: {error}");
    }
    if !failed.is_empty() {
        bail!("{} reactor(s) stopped with an error", failed.len());
    }
    Ok(())
}

/// Who holds a lease: this host and process.
pub(crate) fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{}:{}", host.trim(), std::process::id())
}
