//! `eshost reactors`: what each reactor has done, from the store.

use crate::args::GlobalArgs;
use anyhow::Result;
use clap::Args;
use eshost_store as store;
use serde::Serialize;
use std::io::Write;

/// Events behind a reactor counted at most.
const MAX_LAG_COUNTED: u64 = 1_000_000;

/// List the reactors the store has a record of: name, version, position
/// (the last event it reacted to), lag (events of the aggregates it
/// subscribes to after that), parked events, pending timers, and what it
/// does with an event it fails (park or stop).
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
    parked: usize,
    timers: usize,
    /// What it does with an event it fails: park or stop.
    on_failure: eshost_store::reactions::OnFailure,
}

pub async fn run(global: &GlobalArgs, args: ReactorsArgs) -> Result<()> {
    let store = store::open(&global.database_url).await?;
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
        lines.push(ReactorLine {
            parked: reactions.parked_events(&record.name).await?.len(),
            timers: reactions.timers(&record.name).await?.len(),
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
            "{} {}  position {}  lag {}  parked {}  timers {}  on failure {}",
            line.name,
            line.version,
            line.position,
            line.lag,
            line.parked,
            line.timers,
            line.on_failure.as_str()
        )?;
    }
    Ok(())
}
