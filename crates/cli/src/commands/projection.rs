//! `eshost projection run` and `rebuild`: the projection guests in
//! `--projections`, run into their views.

use crate::args::GlobalArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use eshost_read::supervisor::Supervisor;
use eshost_read::{deployed, projector};

use eshost_wasm::LoadedProjection;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Run the projections deployed in the store (all, or those named),
    /// seeded from --projections: catch up from each one's checkpoint,
    /// then follow new events until Ctrl-C. A projection whose guest fails
    /// an event stops there (its status says why; the others go on); the
    /// exit code is then 3.
    #[command(after_help = "Examples:\n  \
        eshost projection run\n  \
        eshost projection run sales-summary --once\n\n\
        A file in the directory whose component the store has not seen is\n\
        deployed (seeded); `eshost deploy` deploys one from anywhere. The\n\
        store is looked at every second and the directory is watched: a new\n\
        version replaces the running one after its current page (it goes on\n\
        from the same checkpoint, so a projection stopped by an event resumes\n\
        there once a fixed guest is deployed). A removed file changes\n\
        nothing; a file that fails to load is logged while what runs goes on.\n\
        Write files with a rename (cp x.wasm dir/.x.tmp && mv ...).")]
    Run(RunArgs),

    /// Rebuild a projection's view from the first event, with the version
    /// deployed (else the one in --projections): the new view is built
    /// beside the live one, which readers keep seeing until the new
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
    /// Do not watch --projections for new or changed files.
    #[arg(long, env = "ESHOST_NO_WATCH")]
    pub no_watch: bool,
}

pub async fn run(global: &GlobalArgs, command: ProjectionCommand) -> Result<()> {
    match command {
        ProjectionCommand::Run(args) => run_projections(global, args).await,
        ProjectionCommand::Rebuild { name } => {
            // The version deployed, else the directory's.
            let runtime = global.runtime();
            let store = global.store().await?;
            let projection = match deployed::live::<LoadedProjection>(&*store, &runtime, &name)
                .await?
            {
                Some(live) => live,
                None => global.load_projections(&runtime, std::slice::from_ref(&name))?[0].clone(),
            };
            let (view, progress) = projector::rebuild(store, projection).await?;
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
    let store = global.store().await?;
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
