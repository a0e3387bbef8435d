//! `eshost projections`: what each projection has done, from the store.

use crate::args::GlobalArgs;
use anyhow::Result;
use clap::Args;
use eshost_store::{self as store, EventStore};
use serde::Serialize;
use std::io::Write;
use std::sync::Arc;

/// Events behind a projection counted at most.
const MAX_LAG_COUNTED: u64 = 1_000_000;

/// List the projections the store has a record of: name, version,
/// generation, position (the last event its view includes), lag (events
/// after it), status (ok, or failed with the event and the error).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  eshost projections --json")]
pub struct ProjectionsArgs {
    /// Print one JSON array.
    #[arg(long)]
    json: bool,
}

/// A projection as `eshost projections` shows it.
#[derive(Debug, Serialize)]
struct ProjectionLine {
    #[serde(flatten)]
    record: store::ProjectionRecord,
    /// Events recorded after its checkpoint (counted up to a million).
    lag: u64,
}

pub async fn run(global: &GlobalArgs, args: ProjectionsArgs) -> Result<()> {
    let json = args.json;
    let store = global.store().await?;
    let projections = with_lag(global, &store).await?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &projections)?;
        writeln!(out)?;
        return Ok(());
    }
    if projections.is_empty() {
        writeln!(
            out,
            "no projections have run (eshost projection run starts those in {})",
            global.projections.display()
        )?;
        return Ok(());
    }
    for line in &projections {
        let r = &line.record;
        write!(
            out,
            "{} {}  generation {}  position {}  lag {}  {}",
            r.name, r.version, r.generation, r.position, line.lag, r.status
        )?;
        match &r.error {
            Some(error) => writeln!(out, ": {error}")?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

/// The store's projections with their lag. The aggregates each reads
/// come from its loaded guest, when it is in --projections.
async fn with_lag(global: &GlobalArgs, store: &Arc<dyn EventStore>) -> Result<Vec<ProjectionLine>> {
    let loaded = if global.projections.is_dir() {
        global.runtime().load_projections(&global.projections)?
    } else {
        Vec::new()
    };
    let mut lines = Vec::new();
    for record in store.views().projections().await? {
        let aggregates = loaded
            .iter()
            .find(|p| p.name == record.name)
            .map(|p| p.aggregates.clone())
            .unwrap_or_default();
        let lag = store
            .views()
            .events_after(record.position, &aggregates, MAX_LAG_COUNTED)
            .await?;
        lines.push(ProjectionLine { record, lag });
    }
    Ok(lines)
}
