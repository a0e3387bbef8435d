//! The read side's commands: `eshost projections` (what each projection
//! has done), `eshost view` (its documents), and `eshost projection run` /
//! `rebuild` (running the projection guests in `--projections`).

use super::GlobalArgs;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use eshost_read::projector;
use eshost_read::supervisor::Supervisor;
use eshost_store::{self as store, EventStore};
use eshost_wasm::{LoadedProjection, Runtime};
use serde::Serialize;
use std::io::Write;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Events behind a projection counted at most, for `projections`.
const MAX_LAG_COUNTED: u64 = 1_000_000;

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Run the projections in --projections (all, or those named): catch
    /// up from each one's checkpoint, then follow new events until Ctrl-C.
    /// A projection whose guest fails an event stops there (its status
    /// says why; the others go on); the exit code is then 3.
    #[command(after_help = "Examples:\n  \
        eshost projection run\n  \
        eshost projection run sales-summary --once\n\n\
        The directory is watched: a new file starts its projection, a changed\n\
        one replaces the running version after its current page (the new one\n\
        goes on from the same checkpoint, so a projection stopped by an event\n\
        resumes there once a fixed guest is dropped in), a removed one stops\n\
        it, and a file that fails to load is logged while what runs goes on.\n\
        Write files with a rename (cp x.wasm dir/.x.tmp && mv ...).")]
    Run(RunArgs),

    /// Rebuild a projection's view from the first event: the new view is
    /// built beside the live one, which readers keep seeing until the new
    /// one has caught up and replaces it, in one transaction.
    #[command(after_help = "Example:\n  eshost projection rebuild sales-summary")]
    Rebuild {
        /// The projection, as its guest names itself.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Projections to run [default: every one in --projections].
    pub names: Vec<String>,
    /// Catch up and exit instead of following new events.
    #[arg(long)]
    pub once: bool,
    /// Do not watch --projections for new, changed or removed files.
    #[arg(long)]
    pub no_watch: bool,
}

/// A projection as `eshost projections` shows it.
#[derive(Debug, Serialize)]
struct ProjectionLine {
    #[serde(flatten)]
    record: store::ProjectionRecord,
    /// Events recorded after its checkpoint (counted up to a million).
    lag: u64,
}

/// `eshost projections`: every projection the store has a record of.
pub async fn list(global: &GlobalArgs, json: bool) -> Result<()> {
    let store = store::open(&global.database_url).await?;
    let projections = global.projections_with_lag(&store).await?;
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

impl GlobalArgs {
    /// The store's projections with their lag. The aggregates each reads
    /// come from its loaded guest, when it is in --projections.
    async fn projections_with_lag(
        &self,
        store: &Arc<dyn EventStore>,
    ) -> Result<Vec<ProjectionLine>> {
        let loaded = if self.projections.is_dir() {
            self.runtime().load_projections(&self.projections)?
        } else {
            Vec::new()
        };
        let mut lines = Vec::new();
        for record in store.projections().await? {
            let aggregates = loaded
                .iter()
                .find(|p| p.name == record.name)
                .map(|p| p.aggregates.clone())
                .unwrap_or_default();
            let lag = store
                .events_after(record.position, &aggregates, MAX_LAG_COUNTED)
                .await?;
            lines.push(ProjectionLine { record, lag });
        }
        Ok(lines)
    }

    /// The projection guests in --projections (those named, if any), loaded
    /// by `runtime`; all or nothing.
    pub(crate) fn load_projections(
        &self,
        runtime: &Runtime,
        names: &[String],
    ) -> Result<Vec<Arc<LoadedProjection>>> {
        if !self.projections.is_dir() {
            bail!(
                "{}: no projections directory (build the sample with `cargo xtask build-guests`, or pass --projections DIR)",
                self.projections.display()
            );
        }
        let loaded = runtime.load_projections(&self.projections)?;
        if let Some(missing) = names.iter().find(|n| !loaded.iter().any(|p| &p.name == *n)) {
            let known: Vec<&str> = loaded.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "no projection {missing:?} in {} (loaded: {})",
                self.projections.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        let chosen: Vec<_> = loaded
            .into_iter()
            .filter(|p| names.is_empty() || names.contains(&p.name))
            .collect();
        if chosen.is_empty() {
            bail!("{}: no *.wasm projections", self.projections.display());
        }
        Ok(chosen)
    }
}

/// One line of `eshost view NAME --all`.
#[derive(Serialize)]
struct ViewLine<'a> {
    key: &'a str,
    document: &'a store::JsonText,
}

/// `eshost view NAME KEY` or `eshost view NAME --all`.
pub async fn view(global: &GlobalArgs, name: &str, key: Option<&str>) -> Result<()> {
    let store = store::open(&global.database_url).await?;
    // Not locked: the scan's visitor must be Send.
    let mut out = std::io::BufWriter::new(std::io::stdout());
    match key {
        Some(key) => match store.view_document(name, key).await? {
            Some(document) => writeln!(out, "{}", serde_json::to_string(&document)?)?,
            None => bail!("{name} has no document {key:?}"),
        },
        None => {
            let mut visit = |key: &str, document: &store::JsonText| {
                serde_json::to_writer(&mut out, &ViewLine { key, document })?;
                out.write_all(b"\n")
            };
            let count = store.scan_view(name, &mut visit).await?;
            if count == 0 && !store.projections().await?.iter().any(|p| p.name == name) {
                bail!("no projection {name:?} has run on this store");
            }
        }
    }
    out.flush()?;
    Ok(())
}

pub async fn run(global: &GlobalArgs, command: ProjectionCommand) -> Result<()> {
    match command {
        ProjectionCommand::Run(args) => run_projections(global, args).await,
        ProjectionCommand::Rebuild { name } => {
            let projection =
                global.load_projections(&global.runtime(), std::slice::from_ref(&name))?;
            let store = store::open(&global.database_url).await?;
            let (view, progress) = projector::rebuild(store, projection[0].clone()).await?;
            eprintln!(
                "{}: rebuilt as generation {} through position {} ({} events projected); readers see it now",
                view.projection, view.generation, progress.position, progress.projected
            );
            Ok(())
        }
    }
}

async fn run_projections(global: &GlobalArgs, args: RunArgs) -> Result<()> {
    let runtime = global.runtime();
    let projections = global.load_projections(&runtime, &args.names)?;
    let store = store::open(&global.database_url).await?;
    let supervisor = Supervisor::new(
        store,
        runtime,
        global.projections.clone(),
        args.names,
        args.once,
    );
    let stop = CancellationToken::new();
    let interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.cancel();
        }
    });
    let outcomes = supervisor.run(projections, !args.no_watch, stop).await;
    let mut failures = 0;
    for outcome in outcomes {
        match outcome.error {
            Some(e) => {
                eprintln!("error: {e}");
                failures += 1;
            }
            None => eprintln!(
                "{}: at position {} ({} events projected)",
                outcome.name, outcome.progress.position, outcome.progress.projected
            ),
        }
    }
    if failures > 0 {
        return Err(ProjectionsFailed(failures).into());
    }
    Ok(())
}

/// Some projections stopped with an error (each already printed).
#[derive(Debug, thiserror::Error)]
#[error("{0} projection(s) stopped with an error")]
pub struct ProjectionsFailed(pub usize);
