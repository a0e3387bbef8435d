//! Running the deployed projections for as long as a process lives
//! (`eshost projection run`, `eshost serve --run-projections`): one
//! [`Projector`] task per projection, each running the version live in the
//! store (see [`crate::deployed`]), seeded from a projections directory.
//!
//! - The store's live set is looked at every [`CONVERGE_INTERVAL`]: a
//!   version deployed or rolled back anywhere runs here within about that.
//! - The directory, when watched ([`watch_components`]), is read again
//!   when it changes: a new file, or a changed one, is seeded and runs. A
//!   file that fails to load is logged, and what runs keeps running; a
//!   file removed changes nothing.
//! - A new version stops the running one once its current page is
//!   committed, then starts from the same checkpoint. So a projection
//!   stopped by an event its guest failed resumes at that event once a
//!   fixed guest is deployed. What the old version wrote stays: a rebuild
//!   is what recomputes a view from the start.
//!
//! A projection whose guest fails an event stays stopped (its status in
//! the store says why) until another version goes live; the others go on.

use crate::deployed::Following;
use crate::projector::{Progress, Projector, ProjectorError};
use crate::subscription::MAX_ERROR_BACKOFF;
use eshost_store::EventStore;
use eshost_wasm::watch::watch_components;
use eshost_wasm::{LoadedProjection, Runtime};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often the store's live set is looked at.
pub const CONVERGE_INTERVAL: Duration = Duration::from_secs(1);

/// The projections a supervisor wants running, as it changes.
pub type Running = watch::Receiver<Vec<Arc<LoadedProjection>>>;

/// Runs the deployed projections, seeded from one directory.
pub struct Supervisor {
    store: Arc<dyn EventStore>,
    runtime: Runtime,
    dir: PathBuf,
    /// Run only these names (every deployed projection when empty).
    only: Vec<String>,
    /// Catch up and end instead of following the log.
    once: bool,
    live: Following<LoadedProjection>,
    /// The directory's components as last read.
    scanned: Vec<Arc<LoadedProjection>>,
    wanted: watch::Sender<Vec<Arc<LoadedProjection>>>,
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
    /// The component to run; `None` once it is no longer live.
    wanted: Option<Arc<LoadedProjection>>,
    running: Option<Task>,
    /// A digest whose run ended by itself (an error, or `once` caught up):
    /// it is not started again until another version is wanted.
    ended: Option<String>,
    last: Option<Outcome>,
}

/// A projector task, and the version it runs.
struct Task {
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
            live: Following::new(store.clone(), runtime.clone()),
            store,
            runtime,
            dir,
            only,
            once,
            scanned: Vec::new(),
            wanted: watch::channel(Vec::new()).0,
        }
    }

    /// The projections wanted running: those deployed that load here (and
    /// are among the names asked for), from the first look on.
    pub fn running(&self) -> Running {
        self.wanted.subscribe()
    }

    /// Runs the deployed projections, seeded from `initial` (the
    /// directory as loaded at start), until `stop` is cancelled, or, with
    /// `once`, until each has caught up. With `watch` (ignored with
    /// `once`), the directory is read again when it changes. A store that
    /// cannot be read at the start runs `initial` as it is. Returns how
    /// each projection's last run ended, in name order.
    pub async fn run(
        mut self,
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
        self.scanned = self.named(initial);
        match self.look().await {
            Some(live) => self.want(&mut slots, live),
            None => {
                warn!("cannot read the deployed projections; running the directory's");
                let initial = self.scanned.clone();
                self.want(&mut slots, initial);
            }
        }
        self.start_due(&mut slots, &mut tasks, &stop);
        let mut ticks = tokio::time::interval(CONVERGE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let following = !self.once && !stop.is_cancelled();
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
                _ = ticks.tick(), if following => {
                    if self.live_changed().await {
                        if let Some(live) = self.look().await {
                            self.want(&mut slots, live);
                        }
                        self.start_due(&mut slots, &mut tasks, &stop);
                    }
                }
                Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.ended(&mut slots, ended);
                    self.start_due(&mut slots, &mut tasks, &stop);
                }
            }
        }
        slots.into_values().filter_map(|slot| slot.last).collect()
    }

    /// Those of `loaded` among the names asked for.
    fn named(&self, loaded: Vec<Arc<LoadedProjection>>) -> Vec<Arc<LoadedProjection>> {
        loaded
            .into_iter()
            .filter(|p| self.only.is_empty() || self.only.contains(&p.name))
            .collect()
    }

    /// Seeds the store from the directory as last read and resolves the
    /// live set; `None` when the store could not be read (logged).
    async fn look(&mut self) -> Option<Vec<Arc<LoadedProjection>>> {
        let loaded = self.wanted.borrow().clone();
        let scanned = self.scanned.clone();
        let live = self.live.look(&scanned, &loaded).await?;
        Some(self.named(live))
    }

    /// Whether the store's live set differs from the last look's.
    async fn live_changed(&self) -> bool {
        self.live.changed().await
    }

    /// Makes `loaded` what should run: a name missing from it should no
    /// longer run. A running version that is no longer wanted is told to
    /// stop.
    fn want(&self, slots: &mut BTreeMap<String, Slot>, loaded: Vec<Arc<LoadedProjection>>) {
        self.wanted.send_replace(loaded.clone());
        let mut wanted: BTreeMap<String, Arc<LoadedProjection>> =
            loaded.into_iter().map(|p| (p.name.clone(), p)).collect();
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

    /// Reads the directory again (off the async runtime; unchanged files
    /// are not loaded again), then looks at the store.
    async fn reload(&mut self, slots: &mut BTreeMap<String, Slot>) {
        let (runtime, dir) = (self.runtime.clone(), self.dir.clone());
        let current = self.scanned.clone();
        let reloaded =
            tokio::task::spawn_blocking(move || runtime.reload_projections(&dir, &current)).await;
        let (loaded, errors) = match reloaded {
            Ok(reloaded) => reloaded,
            Err(e) => {
                error!(error = %e, "reading the projections directory panicked; nothing changes");
                return;
            }
        };
        for error in &errors {
            warn!(%error, "reload: not loaded; what runs keeps running");
        }
        self.scanned = self.named(loaded);
        if let Some(live) = self.look().await {
            self.want(slots, live);
        }
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
            slot.running = Some(Task {
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
                    "projection stopped; it starts again when another version goes live");
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
