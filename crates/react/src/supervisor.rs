//! Runs a directory's reactors, each in a task of its own ([`Runner::run`]),
//! until stopped. With the directory watched, a new or changed file is
//! loaded and its reactor (re)started: the old runner stops after its
//! current pass and the new version goes on from the same checkpoint. A
//! file that fails to load is logged and what runs goes on; a removed file
//! changes nothing. Each reactor's lease keeps one runner active across
//! processes, so two supervisors over one store share the work safely.

use crate::runner::{RunError, Runner};
use crate::sinks::Sinks;
use eshost::dispatch::Host;
use eshost_wasm::watch::watch_components;
use eshost_wasm::{LoadedReactor, Runtime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often finished runners are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// What a reactor's run came to.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub error: Option<RunError>,
}

struct Running {
    digest: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

/// Runs reactors from a directory.
pub struct Supervisor {
    host: Host,
    runtime: Runtime,
    dir: PathBuf,
    /// Only these, if any are named.
    names: Vec<String>,
    sinks: Sinks,
    holder: String,
}

impl Supervisor {
    /// Runs the reactors of `dir` (those in `names`, if any) through
    /// `host`, delivering to `sinks`, holding leases as `holder`.
    pub fn new(
        host: Host,
        runtime: Runtime,
        dir: PathBuf,
        names: Vec<String>,
        sinks: Sinks,
        holder: String,
    ) -> Self {
        Self {
            host,
            runtime,
            dir,
            names,
            sinks,
            holder,
        }
    }

    /// Runs `reactors` (as loaded from the directory) until `stop`,
    /// following the directory if `watch`; returns each one's outcome.
    pub async fn run(
        self,
        reactors: Vec<Arc<LoadedReactor>>,
        watch: bool,
        stop: CancellationToken,
    ) -> Vec<Outcome> {
        let mut running = BTreeMap::new();
        let mut ended = Vec::new();
        for reactor in reactors {
            self.start(&mut running, reactor, &stop).await;
        }
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
        let mut reap = tokio::time::interval(REAP_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = async {
                    match &mut changes {
                        Some(changes) => changes.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.reload(&mut running, &stop).await,
                _ = reap.tick() => reap_finished(&mut running, &mut ended).await,
            }
        }
        for (name, run) in std::mem::take(&mut running) {
            run.stop.cancel();
            ended.push(outcome(name, run.task).await);
        }
        ended
    }

    /// Loads the directory again and starts what is new or changed.
    async fn reload(&self, running: &mut BTreeMap<String, Running>, stop: &CancellationToken) {
        let runtime = self.runtime.clone();
        let dir = self.dir.clone();
        // Loading compiles: not on an async worker.
        let loaded = tokio::task::spawn_blocking(move || runtime.load_reactors(&dir)).await;
        let reactors = match loaded {
            Ok(Ok(reactors)) => reactors,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the reactors directory did not load; what runs goes on");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "loading the reactors directory panicked");
                return;
            }
        };
        for reactor in reactors {
            let unchanged = running
                .get(&reactor.name)
                .is_some_and(|run| run.digest == reactor.digest);
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
        if !self.names.is_empty() && !self.names.contains(&reactor.name) {
            return;
        }
        if let Some(old) = running.remove(&reactor.name) {
            old.stop.cancel();
            if let Some(error) = outcome(reactor.name.clone(), old.task).await.error {
                tracing::warn!(reactor = %reactor.name, error = %error, "the replaced version had stopped");
            }
        }
        tracing::info!(reactor = %reactor.name, version = %reactor.version,
            digest = %reactor.digest, "running a reactor");
        let name = reactor.name.clone();
        let digest = reactor.digest.clone();
        let task_stop = stop.child_token();
        let runner = Runner::new(
            self.host.clone(),
            reactor,
            self.sinks.clone(),
            self.holder.clone(),
        );
        let task = tokio::spawn(runner.run(task_stop.clone()));
        running.insert(
            name,
            Running {
                digest,
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
