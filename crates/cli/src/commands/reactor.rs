//! `eshost reactor run`: the reactor guests in `--reactors`, run against
//! the store, their commands sent through this process's host; and
//! `parked`, `retry` and `policy`, what to do about events they fail.

use crate::args::{GlobalArgs, drained};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use eshost::dispatch::RetryPolicy;
use eshost_react::Supervisor;
use eshost_store::reactions::OnFailure;
use std::io::Write;
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

    /// List the events a reactor parked (every reactor's, if none is
    /// named): position, event, reason, when, and whether a retry waits.
    #[command(after_help = "Example:\n  eshost reactor parked checkout --json")]
    Parked {
        /// The reactor, as its guest names itself.
        name: Option<String>,
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },

    /// Ask for a reactor's parked events (or the one at --position) to be
    /// retried: its runner reacts to each again with the version it runs
    /// (deploy a fixed one first), records the actions once, and unparks
    /// it; an event that fails again stays parked with the new reason.
    #[command(after_help = "Examples:\n  \
        eshost reactor retry checkout\n  \
        eshost reactor retry checkout --position 1234")]
    Retry {
        /// The reactor, as its guest names itself.
        name: String,
        /// Only the event at this position.
        #[arg(long)]
        position: Option<i64>,
    },

    /// Set what a reactor does with an event it refuses or fails: `park`
    /// it and go on (the default: one bad event holds up no other), or
    /// `stop` there until it is retried (for reactors whose events must be
    /// handled in order). Kept in the store, so every host runs the
    /// reactor the same way.
    #[command(after_help = "Example:\n  eshost reactor policy checkout stop")]
    Policy {
        /// The reactor, as its guest names itself.
        name: String,
        #[arg(value_parser = ["park", "stop"])]
        on_failure: String,
    },
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
        ReactorCommand::Parked { name, json } => parked(global, name, json).await,
        ReactorCommand::Retry { name, position } => {
            let store = global.store().await?;
            let asked = store
                .reactions()
                .request_retry(&name, position, eshost_core::now_ms())
                .await?;
            if asked == 0 {
                bail!(
                    "{name} has no parked event{}",
                    position.map_or(String::new(), |p| format!(" at position {p}"))
                );
            }
            eprintln!(
                "{name}: {asked} parked event(s) to retry; its runner retries them on its next pass"
            );
            Ok(())
        }
        ReactorCommand::Policy { name, on_failure } => {
            let policy: OnFailure = on_failure.parse().map_err(anyhow::Error::msg)?;
            let store = global.store().await?;
            store
                .reactions()
                .set_on_failure(&name, policy, eshost_core::now_ms())
                .await?;
            eprintln!(
                "{name}: an event it fails is now {}",
                match policy {
                    OnFailure::Park => "parked, and it goes on",
                    OnFailure::Stop => "parked, and it stops there until the event is retried",
                }
            );
            Ok(())
        }
    }
}

async fn parked(global: &GlobalArgs, name: Option<String>, json: bool) -> Result<()> {
    let store = global.store().await?;
    let reactions = store.reactions();
    let names = match name {
        Some(name) => vec![name],
        None => reactions
            .reactors()
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect(),
    };
    let mut parked = Vec::new();
    for name in &names {
        parked.extend(reactions.parked_events(name).await?);
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &parked)?;
        writeln!(out)?;
        return Ok(());
    }
    if parked.is_empty() {
        writeln!(out, "no parked events")?;
    }
    for event in &parked {
        writeln!(
            out,
            "{} {}  {}  {}{}",
            event.reactor,
            event.position,
            event.event,
            event.reason,
            if event.retry_requested_at_ms.is_some() {
                "  (retry waiting)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
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
