//! `eshost reactors`: what each reactor has done, from the store.

use crate::args::GlobalArgs;
use anyhow::Result;
use clap::Args;

use serde::Serialize;
use std::io::Write;

/// Events behind a reactor counted at most.
const MAX_LAG_COUNTED: u64 = 1_000_000;

/// List the reactors the store has a record of: name, version, position
/// (the last event it reacted to), lag (events of the aggregates it
/// subscribes to after that), parked events, timers not fired, actions not
/// yet performed, and what it does with an event it fails (park or stop).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  eshost reactors --json")]
pub struct ReactorsArgs {
    /// Print one JSON array.
    #[arg(long)]
    json: bool,
}

/// A reactor as `eshost reactors` shows it.
#[derive(Debug, Serialize)]
struct ReactorLine {
    name: String,
    version: String,
    digest: String,
    position: i64,
    /// Events of the aggregates it subscribes to recorded after its
    /// checkpoint (counted up to a million; all events when its guest is
    /// not in --reactors).
    lag: u64,
    parked: u64,
    timers: u64,
    /// Actions recorded and not yet performed (or to be tried again).
    pending: u64,
    /// What it does with an event it fails: park or stop.
    on_failure: eshost_store::reactions::OnFailure,
}

pub async fn run(global: &GlobalArgs, args: ReactorsArgs) -> Result<()> {
    let store = global.store().await?;
    let loaded = if global.reactors.is_dir() {
        global.runtime().load_reactors(&global.reactors)?
    } else {
        Vec::new()
    };
    let reactions = store.reactions();
    let mut lines = Vec::new();
    for record in reactions.reactors().await? {
        let aggregates: Vec<String> = loaded
            .iter()
            .find(|r| r.name == record.name)
            .map(|r| {
                r.subscriptions
                    .iter()
                    .map(|s| s.aggregate.clone())
                    .collect()
            })
            .unwrap_or_default();
        let lag = store
            .views()
            .events_after(record.position, &aggregates, MAX_LAG_COUNTED)
            .await?;
        let counts = reactions.reactor_counts(&record.name).await?;
        lines.push(ReactorLine {
            parked: counts.parked,
            timers: counts.timers,
            pending: counts.pending,
            name: record.name,
            version: record.version,
            digest: record.digest,
            position: record.position,
            on_failure: record.on_failure,
            lag,
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &lines)?;
        writeln!(out)?;
        return Ok(());
    }
    if lines.is_empty() {
        writeln!(
            out,
            "no reactors have run (eshost reactor run starts those in {})",
            global.reactors.display()
        )?;
    }
    for line in &lines {
        writeln!(
            out,
            "{} {}  position {}  lag {}  parked {}  timers {}  pending {}  on failure {}",
            line.name,
            line.version,
            line.position,
            line.lag,
            line.parked,
            line.timers,
            line.pending,
            line.on_failure.as_str()
        )?;
    }
    Ok(())
}
