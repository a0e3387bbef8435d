//! Running a directory of projection guests for as long as a process lives
//! (`eshost projection run`, `eshost serve --run-projections`): one
//! [`Projector`] task per projection and, when the directory is watched
//! ([`watch_components`]), hot reload:
//!
//! - a new file starts its projection from its checkpoint;
//! - a changed file stops the running version once its current page is
//!   committed, then starts the new one from the same checkpoint. So a
//!   projection stopped by an event its guest failed resumes at that event
//!   once a fixed guest is dropped in. What the old version wrote stays:
//!   `eshost projection rebuild` is what recomputes a view from the start;
//! - a removed file stops its projection;
//! - a file that fails to load is logged, and what runs keeps running.
//!
//! A projection whose guest fails an event stays stopped (its status in
//! the store says why) until its file changes; the others go on.

use crate::projector::{Progress, Projector, ProjectorError};
use crate::subscription::MAX_ERROR_BACKOFF;
use eshost_store::EventStore;
use eshost_wasm::watch::watch_components;
use eshost_wasm::{LoadedProjection, Runtime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Runs the projections of one directory.
pub struct Supervisor {
    store: Arc<dyn EventStore>,
    runtime: Runtime,
    dir: PathBuf,
    /// Run only these names (every projection in `dir` when empty).
    only: Vec<String>,
    /// Catch up and end instead of following the log.
    once: bool,
}

/// How one projection's last run ended.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub version: String,
    /// sha256 of the component file that ran, hex.
    pub digest: String,
    pub progress: Progress,
    /// Why it stopped, if not because it was asked to.
    pub error: Option<ProjectorError>,
}

/// One projection name: what should run, and what does.
#[derive(Default)]
struct Slot {
    /// The component to run; `None` once its file is gone.
    wanted: Option<Arc<LoadedProjection>>,
    running: Option<Running>,
    /// A digest whose run ended by itself (an error, or `once` caught up):
    /// it is not started again until the file changes.
    ended: Option<String>,
    last: Option<Outcome>,
}

struct Running {
    task: Id,
    stop: CancellationToken,
    component: Arc<LoadedProjection>,
}

/// What a projector task returns.
type TaskResult = (Progress, Result<(), ProjectorError>);

impl Supervisor {
    pub fn new(
        store: Arc<dyn EventStore>,
        runtime: Runtime,
        dir: PathBuf,
        only: Vec<String>,
        once: bool,
    ) -> Self {
        Self {
            store,
            runtime,
            dir,
            only,
            once,
        }
    }

    /// Runs `initial` (the directory as loaded at start) until `stop` is
    /// cancelled, or, with `once`, until each has caught up. With `watch`
    /// (ignored with `once`), the directory is reloaded when it changes.
    /// Returns how each projection's last run ended, in name order.
    pub async fn run(
        self,
        initial: Vec<Arc<LoadedProjection>>,
        watch: bool,
        stop: CancellationToken,
    ) -> Vec<Outcome> {
        let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
        let mut tasks: JoinSet<TaskResult> = JoinSet::new();
        let (_watcher, mut changes) = match watch && !self.once {
            true => match watch_components(&self.dir) {
                Ok((watcher, changes)) => {
                    info!(dir = %self.dir.display(), "watching the projections directory");
                    (Some(watcher), Some(changes))
                }
                Err(e) => {
                    warn!(dir = %self.dir.display(), error = %e,
                        "cannot watch the projections directory; changes are not reloaded");
                    (None, None)
                }
            },
            false => (None, None),
        };
        self.want(&mut slots, initial);
        self.start_due(&mut slots, &mut tasks, &stop);
        loop {
            let following = changes.is_some() && !stop.is_cancelled();
            if tasks.is_empty() && !following {
                break;
            }
            tokio::select! {
                // Each task's stop is a child of `stop`: they all see it.
                () = stop.cancelled(), if following => {}
                change = next_change(&mut changes), if following => match change {
                    Some(()) => {
                        self.reload(&mut slots).await;
                        self.start_due(&mut slots, &mut tasks, &stop);
                    }
                    None => {
                        warn!("the projections directory is no longer watched");
                        changes = None;
                    }
                },
                Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.ended(&mut slots, ended);
                    self.start_due(&mut slots, &mut tasks, &stop);
                }
            }
        }
        slots.into_values().filter_map(|slot| slot.last).collect()
    }

    /// Makes `loaded` (filtered by `only`) what should run: a name missing
    /// from it should no longer run. A running version that is no longer
    /// wanted is told to stop.
    fn want(&self, slots: &mut BTreeMap<String, Slot>, loaded: Vec<Arc<LoadedProjection>>) {
        let mut wanted: BTreeMap<String, Arc<LoadedProjection>> = loaded
            .into_iter()
            .filter(|p| self.only.is_empty() || self.only.contains(&p.name))
            .map(|p| (p.name.clone(), p))
            .collect();
        for (name, slot) in slots.iter_mut() {
            slot.wanted = wanted.remove(name);
        }
        for (name, component) in wanted {
            slots.entry(name).or_default().wanted = Some(component);
        }
        for (name, slot) in slots.iter_mut() {
            let Some(running) = &slot.running else {
                continue;
            };
            match &slot.wanted {
                Some(wanted) if wanted.digest == running.component.digest => {}
                Some(wanted) => {
                    info!(projection = %name, from = %running.component.version, to = %wanted.version,
                        "reload: replacing (the current page is committed first)");
                    running.stop.cancel();
                }
                None => {
                    info!(projection = %name, "reload: removed; stopping");
                    running.stop.cancel();
                }
            }
        }
    }

    /// Loads the directory again (off the async runtime) and wants what it
    /// holds now.
    async fn reload(&self, slots: &mut BTreeMap<String, Slot>) {
        let current: Vec<_> = slots.values().filter_map(|s| s.wanted.clone()).collect();
        let (runtime, dir) = (self.runtime.clone(), self.dir.clone());
        let reloaded =
            tokio::task::spawn_blocking(move || runtime.reload_projections(&dir, &current)).await;
        let (loaded, errors) = match reloaded {
            Ok(reloaded) => reloaded,
            Err(e) => {
                error!(error = %e, "reloading the projections panicked; nothing changes");
                return;
            }
        };
        for error in &errors {
            warn!(%error, "reload: not loaded; what runs keeps running");
        }
        self.want(slots, loaded);
    }

    /// Starts every wanted projection that is not running, unless its run
    /// ended by itself, or everything is stopping.
    fn start_due(
        &self,
        slots: &mut BTreeMap<String, Slot>,
        tasks: &mut JoinSet<TaskResult>,
        stop: &CancellationToken,
    ) {
        if stop.is_cancelled() {
            return;
        }
        for slot in slots.values_mut() {
            let Some(component) = &slot.wanted else {
                continue;
            };
            if slot.running.is_some() || slot.ended.as_ref() == Some(&component.digest) {
                continue;
            }
            slot.ended = None;
            let task_stop = stop.child_token();
            let task = tasks
                .spawn(project(
                    self.store.clone(),
                    component.clone(),
                    self.once,
                    task_stop.clone(),
                ))
                .id();
            slot.running = Some(Running {
                task,
                stop: task_stop,
                component: component.clone(),
            });
        }
    }

    /// Records how a task ended.
    fn ended(
        &self,
        slots: &mut BTreeMap<String, Slot>,
        ended: Result<(Id, TaskResult), tokio::task::JoinError>,
    ) {
        let task = match &ended {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        let Some(slot) = slots
            .values_mut()
            .find(|s| s.running.as_ref().is_some_and(|r| r.task == task))
        else {
            return;
        };
        let Some(running) = slot.running.take() else {
            return;
        };
        let component = &running.component;
        let (progress, result) = match ended {
            Ok((_, result)) => result,
            Err(e) => (
                Progress::default(),
                Err(ProjectorError::Panicked {
                    projection: component.name.clone(),
                    reason: e.to_string(),
                }),
            ),
        };
        let error = match result {
            Ok(()) => {
                info!(projection = %component.name, position = progress.position,
                    projected = progress.projected, "projection stopped");
                None
            }
            Err(e) => {
                error!(projection = %component.name, error = %e,
                    "projection stopped; it starts again when its file changes");
                Some(e)
            }
        };
        if error.is_some() || self.once {
            slot.ended = Some(component.digest.clone());
        }
        slot.last = Some(Outcome {
            name: component.name.clone(),
            version: component.version.clone(),
            digest: component.digest.clone(),
            progress,
            error,
        });
    }
}

/// The next change the watcher reports, or never if there is no watcher.
async fn next_change(changes: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match changes {
        Some(changes) => changes.recv().await,
        None => std::future::pending().await,
    }
}

/// One projection's run: catch up (and, unless `once`, follow the log until
/// `stop`). A store that cannot be reached at the start is waited for.
async fn project(
    store: Arc<dyn EventStore>,
    component: Arc<LoadedProjection>,
    once: bool,
    stop: CancellationToken,
) -> TaskResult {
    let mut backoff = Duration::from_millis(100);
    let mut projector = loop {
        match Projector::live(store.clone(), component.clone()).await {
            Ok(projector) => break projector,
            Err(ProjectorError::Store(e)) if e.is_transient() && !once => {
                warn!(projection = %component.name, error = %e, "cannot register; trying again");
                tokio::select! {
                    () = stop.cancelled() => return (Progress::default(), Ok(())),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
            }
            Err(e) => return (Progress::default(), Err(e)),
        }
    };
    info!(projection = %component.name, version = %component.version,
        position = projector.progress().position, "projecting");
    let result = match once {
        true => projector.catch_up().await.map(drop),
        false => projector.run(stop.cancelled()).await,
    };
    (projector.progress(), result)
}
