//! Runs the reactors deployed in the store, each in a task of its own
//! ([`Runner::run`]), until stopped: the same live set, seeded and
//! followed, as for projections (`eshost_read::deployed`, kind `reactor`).
//!
//! - The directory seeds the store: a file whose component the store has
//!   never seen for its name is recorded as `seeded` and runs from then
//!   on; with the directory watched, a new or changed file is read again
//!   at once. A file seen before and superseded since is not seeded again,
//!   and a removed file changes nothing.
//! - A version deployed in the store (`PUT /v1/reactors/{name}`, `eshost
//!   deploy`, a rollback) runs within about a second.
//! - A new version replaces the old one: the old runner stops after its
//!   current pass and the new one goes on from the same checkpoint.
//! - A store that cannot be read at the start runs the directory as it is;
//!   a file that fails to load is logged and what runs goes on.
//!
//! Each reactor's lease keeps one runner active across processes, so two
//! supervisors over one store share the work safely.

use crate::runner::{RunError, Runner};
use crate::sinks::Sinks;
use eshost::dispatch::Host;
use eshost_read::deployed::Following;
use eshost_wasm::watch::watch_components;
use eshost_wasm::{LoadedReactor, Runtime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often finished runners are looked for, and the store's live set
/// compared with what runs.
const CONVERGE_INTERVAL: Duration = Duration::from_secs(1);

/// What a reactor's run came to.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub error: Option<RunError>,
}

struct Running {
    component: Arc<LoadedReactor>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

/// Runs the store's live reactors, seeded from a directory.
pub struct Supervisor {
    host: Host,
    runtime: Runtime,
    dir: PathBuf,
    /// Only these, if any are named.
    names: Vec<String>,
    sinks: Sinks,
    holder: String,
    live: Following<LoadedReactor>,
    /// The directory as last read (those named).
    scanned: Vec<Arc<LoadedReactor>>,
}

impl Supervisor {
    /// Runs the reactors live in the store of `host`, seeded from `dir`
    /// (those in `names`, if any are named), delivering to `sinks`, holding
    /// leases as `holder`.
    pub fn new(
        host: Host,
        runtime: Runtime,
        dir: PathBuf,
        names: Vec<String>,
        sinks: Sinks,
        holder: String,
    ) -> Self {
        Self {
            live: Following::new(host.store().clone(), runtime.clone()),
            host,
            runtime,
            dir,
            names,
            sinks,
            holder,
            scanned: Vec::new(),
        }
    }

    /// Runs the live reactors, seeded from `reactors` (the directory as
    /// loaded at start), until `stop`, reading the directory again when it
    /// changes if `watch`; returns each run's outcome.
    pub async fn run(
        mut self,
        reactors: Vec<Arc<LoadedReactor>>,
        watch: bool,
        stop: CancellationToken,
    ) -> Vec<Outcome> {
        let mut running = BTreeMap::new();
        let mut ended = Vec::new();
        self.scanned = self.named(reactors);
        let wanted = match self.look(&running).await {
            Some(live) => live,
            None => {
                tracing::warn!("cannot read the deployed reactors; running the directory's");
                self.scanned.clone()
            }
        };
        self.start_changed(&mut running, wanted, &stop).await;
        // The watcher must live as long as the loop.
        let (_watcher, mut changes) = match watch.then(|| watch_components(&self.dir)) {
            Some(Ok((watcher, changes))) => (Some(watcher), Some(changes)),
            Some(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "cannot watch the reactors directory; new files are not picked up");
                (None, None)
            }
            None => (None, None),
        };
        let mut ticks = tokio::time::interval(CONVERGE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = async {
                    match &mut changes {
                        Some(changes) => changes.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.reload().await;
                    if let Some(live) = self.look(&running).await {
                        self.start_changed(&mut running, live, &stop).await;
                    }
                }
                _ = ticks.tick() => {
                    reap_finished(&mut running, &mut ended).await;
                    if self.live.changed().await
                        && let Some(live) = self.look(&running).await
                    {
                        self.start_changed(&mut running, live, &stop).await;
                    }
                }
            }
        }
        for (name, run) in std::mem::take(&mut running) {
            run.stop.cancel();
            ended.push(outcome(name, run.task).await);
        }
        ended
    }

    /// Those of `loaded` among the names asked for.
    fn named(&self, loaded: Vec<Arc<LoadedReactor>>) -> Vec<Arc<LoadedReactor>> {
        loaded
            .into_iter()
            .filter(|r| self.names.is_empty() || self.names.contains(&r.name))
            .collect()
    }

    /// Seeds the store from the directory as last read and resolves the
    /// live set (those named); `None` when the store could not be read
    /// (logged).
    async fn look(
        &mut self,
        running: &BTreeMap<String, Running>,
    ) -> Option<Vec<Arc<LoadedReactor>>> {
        let loaded: Vec<Arc<LoadedReactor>> =
            running.values().map(|run| run.component.clone()).collect();
        let scanned = self.scanned.clone();
        let live = self.live.look(&scanned, &loaded).await?;
        Some(self.named(live))
    }

    /// Reads the directory again; what loads replaces what was read
    /// before.
    async fn reload(&mut self) {
        let runtime = self.runtime.clone();
        let dir = self.dir.clone();
        // Loading compiles: not on an async worker.
        let loaded = tokio::task::spawn_blocking(move || runtime.load_reactors(&dir)).await;
        match loaded {
            Ok(Ok(reactors)) => self.scanned = self.named(reactors),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the reactors directory did not load; what runs goes on");
            }
            Err(e) => tracing::error!(error = %e, "loading the reactors directory panicked"),
        }
    }

    /// Starts each of `live` not running in that version.
    async fn start_changed(
        &self,
        running: &mut BTreeMap<String, Running>,
        live: Vec<Arc<LoadedReactor>>,
        stop: &CancellationToken,
    ) {
        for reactor in live {
            let unchanged = running
                .get(&reactor.name)
                .is_some_and(|run| run.component.digest == reactor.digest);
            if !unchanged {
                self.start(running, reactor, stop).await;
            }
        }
    }

    /// Starts `reactor`, after stopping the version it replaces.
    async fn start(
        &self,
        running: &mut BTreeMap<String, Running>,
        reactor: Arc<LoadedReactor>,
        stop: &CancellationToken,
    ) {
        if let Some(old) = running.remove(&reactor.name) {
            old.stop.cancel();
            if let Some(error) = outcome(reactor.name.clone(), old.task).await.error {
                tracing::warn!(reactor = %reactor.name, error = %error, "the replaced version had stopped");
            }
        }
        tracing::info!(reactor = %reactor.name, version = %reactor.version,
            digest = %reactor.digest, "running a reactor");
        let name = reactor.name.clone();
        let task_stop = stop.child_token();
        let runner = Runner::new(
            self.host.clone(),
            reactor.clone(),
            self.sinks.clone(),
            self.holder.clone(),
        );
        let task = tokio::spawn(runner.run(task_stop.clone()));
        running.insert(
            name,
            Running {
                component: reactor,
                stop: task_stop,
                task,
            },
        );
    }
}

/// Moves the runners that ended by themselves (with an error) to `ended`.
async fn reap_finished(running: &mut BTreeMap<String, Running>, ended: &mut Vec<Outcome>) {
    let finished: Vec<String> = running
        .iter()
        .filter(|(_, run)| run.task.is_finished())
        .map(|(name, _)| name.clone())
        .collect();
    for name in finished {
        if let Some(run) = running.remove(&name) {
            let outcome = outcome(name, run.task).await;
            if let Some(error) = &outcome.error {
                tracing::error!(reactor = %outcome.name, error = %error, "a reactor stopped");
            }
            ended.push(outcome);
        }
    }
}

async fn outcome(name: String, task: JoinHandle<Result<(), RunError>>) -> Outcome {
    let error = match task.await {
        Ok(result) => result.err(),
        Err(e) => Some(RunError::Panicked {
            reactor: name.clone(),
            reason: e.to_string(),
        }),
    };
    Outcome { name, error }
}
