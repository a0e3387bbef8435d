//! Running projections: each follows the global log from its view's checkpoint,
//! hands every event it reads to its guest (on a blocking thread, never an
//! async worker), and commits a page's document changes together with the
//! checkpoint, in one transaction
//! ([`ViewStore::commit_view`](eshost_store::ViewStore::commit_view)). So an
//! event's effect lands exactly once, whether the process is killed mid-page or
//! two runners race (the loser's commit finds the checkpoint moved, and it
//! starts again from there).
//!
//! An event the guest fails stops the projection there: the events before
//! it are committed, its status becomes `failed` with the error, and it is
//! never skipped. Running it again (a fixed guest loaded) retries that event.
//!
//! An event that carries its command's trace (a `traceparent` in its
//! metadata) is projected in a `project` span continuing that trace, when
//! traces are exported.
//!
//! A rebuild ([`rebuild`]) projects every event into a new generation of
//! the view beside the live one, then switches readers over in one
//! transaction.

use crate::subscription::{Follower, MAX_ERROR_BACKOFF, PAGE, POLL_INTERVAL, Subscription};
use eshost_store::StoreError;
use eshost_store::views::{Committed, STATUS_FAILED, STATUS_OK, Switch};
use eshost_store::{EventStore, RecordedEvent, ViewId};
use eshost_wasm::GuestError;
use eshost_wasm::projection::{LoadDocument, ProjectError, ViewReadError};
use eshost_wasm::{LoadedProjection, ProjectionInstance, ViewDocuments};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tracing::{Span, debug_span, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Bytes of changes a projector holds before it commits, even mid-page.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

/// How many times a rebuild catches up and tries to switch before it gives
/// up: each try fails only if the live view moved on meanwhile.
const MAX_SWITCH_ATTEMPTS: usize = 100;

/// Why a projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// The guest failed this event; the projection's status says so too.
    #[error("{projection} stopped at position {position} ({event}): {reason}")]
    Stopped {
        projection: String,
        position: i64,
        /// `Aggregate id #sequence Name`.
        event: String,
        /// The error's text without the projection's name in front.
        reason: String,
        error: Box<GuestError>,
    },
    /// Another rebuild replaced the generation this one was building.
    #[error("{0}: another rebuild started; this one stopped")]
    Superseded(String),
    /// A rebuild kept finding the live view ahead of it.
    #[error("{0}: the live view kept moving ahead; the rebuild did not switch")]
    NoSwitch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task panicked (a bug).
    #[error("{projection}: the projecting thread failed: {reason}")]
    Panicked { projection: String, reason: String },
}

/// What a projector has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events handed to the guest and committed.
    pub projected: u64,
    /// The checkpoint: the position of the last event the view includes.
    pub position: i64,
}

/// Which generation a projector writes, and what it does when the
/// checkpoint moved under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The live view: another runner moved it, or a rebuild replaced it;
    /// go on from the live view's checkpoint.
    Live,
    /// A generation being rebuilt: only another rebuild touches it.
    Rebuild,
}

/// One projection's runner, at one generation's checkpoint.
pub struct Projector {
    store: Arc<dyn EventStore>,
    component: Arc<LoadedProjection>,
    view: ViewId,
    target: Target,
    progress: Progress,
    /// The guest instance and the view it reads; `None` while on a
    /// blocking thread, or after a trap until the next page.
    instance: Option<ProjectionInstance>,
    documents: Option<ViewDocuments>,
    /// The store's status for the projection is `ok`.
    status_ok: bool,
    /// Told the new checkpoint after each commit (see [`Projector::on_commit`]).
    on_commit: Option<OnCommit>,
}

/// Called with the new checkpoint after each commit.
pub type OnCommit = Box<dyn FnMut(i64) + Send>;

impl Projector {
    /// A runner of the live view, from its checkpoint (registering the
    /// projection if the store has no record of it).
    pub async fn live(
        store: Arc<dyn EventStore>,
        component: Arc<LoadedProjection>,
    ) -> Result<Self, ProjectorError> {
        let record = store
            .views()
            .register_projection(
                &component.name,
                &component.version,
                &format!("sha256:{}", component.digest),
            )
            .await?;
        let view = ViewId {
            projection: record.name,
            generation: record.generation,
        };
        let mut projector = Self::at(store, component, view, Target::Live, record.position);
        projector.status_ok = record.status == STATUS_OK;
        Ok(projector)
    }

    /// A runner of a new generation of the view, from position 0.
    async fn rebuilding(
        store: Arc<dyn EventStore>,
        component: Arc<LoadedProjection>,
    ) -> Result<Self, ProjectorError> {
        // Registered first, so a rebuild of a projection that never ran
        // has a live view to replace.
        Self::live(store.clone(), component.clone()).await?;
        let view = store.views().begin_rebuild(&component.name).await?;
        Ok(Self::at(store, component, view, Target::Rebuild, 0))
    }

    fn at(
        store: Arc<dyn EventStore>,
        component: Arc<LoadedProjection>,
        view: ViewId,
        target: Target,
        position: i64,
    ) -> Self {
        let documents = Some(documents_of(store.clone(), view.clone()));
        Self {
            store,
            component,
            view,
            target,
            progress: Progress {
                projected: 0,
                position,
            },
            instance: None,
            documents,
            status_ok: true,
            on_commit: None,
        }
    }

    /// Calls `on_commit` with the new checkpoint after each commit: when
    /// the view includes the events up to it (for measuring lag).
    pub fn on_commit(&mut self, on_commit: OnCommit) {
        self.on_commit = Some(on_commit);
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// What this projector reads: every event. Events of aggregate types
    /// the projection does not read are skipped as it goes (its checkpoint
    /// moves past them all the same). Reading every type keeps the store's
    /// read a plain walk along the position key, whatever its statistics.
    fn subscription(&self) -> Subscription {
        Subscription {
            after: self.progress.position,
            aggregate: None,
        }
    }

    /// Projects events until `stop` completes: catches up, then follows the
    /// log. Transient store errors are waited out; a guest failure stops
    /// the projection (status `failed`) and is returned.
    pub async fn run(&mut self, stop: impl Future<Output = ()>) -> Result<(), ProjectorError> {
        tokio::pin!(stop);
        let mut follower = Follower::new(self.store.clone(), self.subscription(), None);
        let mut backoff = POLL_INTERVAL;
        loop {
            let page = tokio::select! {
                _ = &mut stop => return Ok(()),
                page = follower.next_page() => page?,
            };
            match self.project_page(page).await {
                Ok(()) => backoff = POLL_INTERVAL,
                Err(ProjectorError::Store(e)) if e.is_transient() => {
                    warn!(projection = %self.view.projection, error = %e, "projecting failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
                Err(e) => return Err(e),
            }
            // After a lost race or a failed read the checkpoint is where to
            // go on from, not the last page read.
            if follower.position() != self.progress.position {
                follower.seek(self.progress.position);
            }
        }
    }

    /// Projects every event recorded so far (pages until one is not full),
    /// then returns.
    pub async fn catch_up(&mut self) -> Result<Progress, ProjectorError> {
        loop {
            let subscription = self.subscription();
            let page = self
                .store
                .log()
                .read_all(subscription.after, subscription.aggregate.as_deref(), PAGE)
                .await?;
            let full = page.len() as u64 == PAGE;
            self.project_page(page).await?;
            if !full {
                return Ok(self.progress);
            }
        }
    }

    /// Projects one page and commits it (in parts, if its changes grow past
    /// [`MAX_PENDING_BYTES`]).
    async fn project_page(&mut self, page: Vec<RecordedEvent>) -> Result<(), ProjectorError> {
        // Events at or before the checkpoint were committed by a runner
        // that won a race: a page read before it is partly stale.
        let mut rest: Vec<RecordedEvent> = page
            .into_iter()
            .filter(|e| e.position > self.progress.position)
            .collect();
        while !rest.is_empty() {
            let (outcome, unprojected) = self.project_on_blocking_thread(rest).await?;
            rest = unprojected;
            let through = outcome.through;
            if through > self.progress.position {
                self.commit(through, outcome.projected).await?;
            }
            if let Some((event, error)) = outcome.failure {
                return Err(self.stopped(&event, error).await);
            }
            if self.progress.position != through {
                // The commit found the checkpoint moved: the rest of this
                // page may be someone else's already.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Hands `events` to the guest, in order, on a blocking thread (where
    /// the instance is made, too, if there is none), until one fails or the
    /// changes grow past [`MAX_PENDING_BYTES`]. Returns what was projected
    /// and the events not yet projected.
    async fn project_on_blocking_thread(
        &mut self,
        events: Vec<RecordedEvent>,
    ) -> Result<(Projected, Vec<RecordedEvent>), ProjectorError> {
        let prepared = match self.instance.take() {
            Some(instance) => Ok(instance),
            None => Err(self
                .documents
                .take()
                .unwrap_or_else(|| documents_of(self.store.clone(), self.view.clone()))),
        };
        let component = self.component.clone();
        let start = self.progress.position;
        let joined = tokio::task::spawn_blocking(move || {
            let mut instance = match prepared {
                Ok(instance) => instance,
                Err(documents) => match ProjectionInstance::new(component, documents) {
                    Ok(instance) => instance,
                    Err(failed) => {
                        let (error, documents) = *failed;
                        let first = events.into_iter().next();
                        return Pass::NotInstantiated {
                            error,
                            documents,
                            first,
                        };
                    }
                },
            };
            let (outcome, rest, healthy) = project_events(&mut instance, events, start);
            Pass::Ran {
                instance,
                outcome,
                rest,
                healthy,
            }
        })
        .await
        .map_err(|e| ProjectorError::Panicked {
            projection: self.view.projection.clone(),
            reason: e.to_string(),
        })?;
        let (instance, outcome, rest, healthy) = match joined {
            Pass::Ran {
                instance,
                outcome,
                rest,
                healthy,
            } => (instance, outcome, rest, healthy),
            Pass::NotInstantiated {
                error,
                documents,
                first,
            } => {
                self.documents = Some(documents);
                // Instantiating is part of projecting the first event.
                return match first {
                    Some(first) => Err(self.stopped(&first, error).await),
                    None => Ok((Projected::nothing(start), Vec::new())),
                };
            }
        };
        if healthy {
            self.instance = Some(instance);
        } else {
            // A trap leaves the instance unusable; its view is still good.
            self.documents = Some(instance.into_documents());
        }
        match outcome {
            Err(e) => {
                self.forget();
                Err(ProjectorError::Store(e))
            }
            Ok(projected) => Ok((projected, rest)),
        }
    }

    fn documents_mut(&mut self) -> Option<&mut ViewDocuments> {
        match &mut self.instance {
            Some(instance) => Some(instance.documents()),
            None => self.documents.as_mut(),
        }
    }

    /// Drops what this projector holds of the view: pending changes and cache.
    fn forget(&mut self) {
        if let Some(documents) = self.documents_mut() {
            documents.forget();
        }
    }

    /// Commits the pending changes with the checkpoint moved to `through`.
    /// If the checkpoint had moved, reloads where to go on from.
    async fn commit(&mut self, through: i64, projected: u64) -> Result<(), ProjectorError> {
        let changes = self
            .documents_mut()
            .map(|documents| documents.pending())
            .unwrap_or_default();
        let committed = self
            .store
            .views()
            .commit_view(&self.view, self.progress.position, through, &changes)
            .await;
        match committed {
            Ok(Committed::Yes) => {
                if let Some(documents) = self.documents_mut() {
                    documents.committed();
                }
                self.progress.position = through;
                self.progress.projected += projected;
                if let Some(on_commit) = &mut self.on_commit {
                    on_commit(through);
                }
                if !self.status_ok && self.target == Target::Live {
                    // It goes on past where it had failed: say so.
                    self.store
                        .views()
                        .set_projection_status(&self.view.projection, STATUS_OK, None)
                        .await?;
                    self.status_ok = true;
                }
                Ok(())
            }
            Ok(Committed::Moved) => {
                self.forget();
                self.reload().await
            }
            Err(e) => {
                self.forget();
                Err(e.into())
            }
        }
    }

    /// Finds where the view's checkpoint is now (and, for the live view,
    /// which generation is live).
    async fn reload(&mut self) -> Result<(), ProjectorError> {
        match self.target {
            Target::Live => {
                let records = self.store.views().projections().await?;
                let record = records
                    .into_iter()
                    .find(|r| r.name == self.view.projection)
                    .ok_or_else(|| ProjectorError::Superseded(self.view.projection.clone()))?;
                if record.generation != self.view.generation {
                    info!(projection = %record.name, generation = record.generation, "the view was rebuilt; going on from the new one");
                    self.view.generation = record.generation;
                    self.instance = None;
                    self.documents = Some(documents_of(self.store.clone(), self.view.clone()));
                }
                self.progress.position = record.position;
            }
            Target::Rebuild => match self.store.views().view_position(&self.view).await? {
                Some(position) => self.progress.position = position,
                None => return Err(ProjectorError::Superseded(self.view.projection.clone())),
            },
        }
        Ok(())
    }

    /// Records that `event` stopped the projection, and returns the error.
    async fn stopped(&mut self, event: &RecordedEvent, error: GuestError) -> ProjectorError {
        let text = error.to_string();
        let prefix = format!("{}: ", self.view.projection);
        let reason = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
        let stopped = ProjectorError::Stopped {
            reason,
            projection: self.view.projection.clone(),
            position: event.position,
            event: format!(
                "{} {} #{} {}",
                event.aggregate, event.id, event.sequence, event.name
            ),
            error: Box::new(error),
        };
        if self.target == Target::Live {
            let message = stopped.to_string();
            let recorded = self
                .store
                .views()
                .set_projection_status(&self.view.projection, STATUS_FAILED, Some(&message))
                .await;
            if let Err(e) = recorded {
                warn!(projection = %self.view.projection, error = %e, "could not record the projection's failure");
            }
        }
        stopped
    }
}

/// What a pass on the blocking thread came back with.
enum Pass {
    Ran {
        instance: ProjectionInstance,
        outcome: Result<Projected, StoreError>,
        rest: Vec<RecordedEvent>,
        /// May the instance be called again (no trap)?
        healthy: bool,
    },
    NotInstantiated {
        error: GuestError,
        documents: ViewDocuments,
        first: Option<RecordedEvent>,
    },
}

/// What one pass over events on the blocking thread did.
struct Projected {
    /// The position the view includes once the pending changes commit.
    through: i64,
    /// Events handed to the guest (not counting skipped ones).
    projected: u64,
    /// The event the guest failed, and how.
    failure: Option<(RecordedEvent, GuestError)>,
}

impl Projected {
    fn nothing(through: i64) -> Self {
        Self {
            through,
            projected: 0,
            failure: None,
        }
    }
}

/// Projects `events` in order from checkpoint `start`. Returns what was
/// done (or the store error that interrupted it), the events left, and
/// whether the instance may be called again.
fn project_events(
    instance: &mut ProjectionInstance,
    events: Vec<RecordedEvent>,
    start: i64,
) -> (Result<Projected, StoreError>, Vec<RecordedEvent>, bool) {
    let mut done = Projected::nothing(start);
    let mut events = events.into_iter();
    while let Some(event) = events.next() {
        if !instance.component.reads(&event.aggregate) {
            done.through = event.position;
            continue;
        }
        let span = project_span(&instance.component.name, &event);
        let projecting = span.enter();
        let projected = instance.project(&event);
        drop(projecting);
        match projected {
            Ok(()) => {
                done.through = event.position;
                done.projected += 1;
                if instance.documents().pending_bytes() > MAX_PENDING_BYTES {
                    return (Ok(done), events.collect(), true);
                }
            }
            Err(ProjectError::View(e)) => return (Err(store_error(e)), Vec::new(), false),
            Err(ProjectError::Guest(error)) => {
                done.failure = Some((event, error));
                return (Ok(done), Vec::new(), false);
            }
        }
    }
    (Ok(done), Vec::new(), true)
}

/// The `project` span of an event that carries a trace, continuing it; no
/// span for one that does not (a rebuild of untraced history exports
/// nothing).
fn project_span(projection: &str, event: &RecordedEvent) -> Span {
    let Some(traceparent) = event.traceparent() else {
        return Span::none();
    };
    let span = debug_span!(
        parent: None,
        "project",
        projection,
        event = %event.name,
        position = event.position
    );
    if !span.is_disabled() {
        let carrier = HashMap::from([(
            eshost_core::event::TRACEPARENT.to_string(),
            traceparent.to_string(),
        )]);
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&carrier)
        });
        // Refused only for a span the export does not take: nothing to continue.
        let _ = span.set_parent(parent);
    }
    span
}

/// The view a guest reads: documents of `view`, loaded from `store` on a
/// cache miss. Runs on the blocking thread the guest call runs on, so it
/// may wait for the store there.
fn documents_of(store: Arc<dyn EventStore>, view: ViewId) -> ViewDocuments {
    let runtime = tokio::runtime::Handle::current();
    let load: LoadDocument = Box::new(move |key: &str| {
        runtime
            .block_on(store.views().load_document(&view, key))
            .map_err(Into::into)
    });
    ViewDocuments::new(load)
}

/// The store error [`documents_of`] boxed on its way through the sandbox.
fn store_error(error: ViewReadError) -> StoreError {
    match error.downcast::<StoreError>() {
        Ok(error) => *error,
        // Only documents_of loads a view here; kept whole all the same.
        Err(other) => StoreError::Database {
            failure: eshost_store::DatabaseFailure::Transient,
            message: other.to_string(),
        },
    }
}

/// Rebuilds a projection's view: every event projected into a new
/// generation beside the live one, which readers keep reading until the
/// new one, caught up, replaces it in one transaction. Returns the new
/// generation and where it got to.
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    component: Arc<LoadedProjection>,
) -> Result<(ViewId, Progress), ProjectorError> {
    let mut projector = Projector::rebuilding(store.clone(), component).await?;
    for _ in 0..MAX_SWITCH_ATTEMPTS {
        projector.catch_up().await?;
        match store.views().switch_view(&projector.view).await? {
            Switch::Done => {
                // The new view includes every event the old one did.
                store
                    .views()
                    .set_projection_status(&projector.view.projection, STATUS_OK, None)
                    .await?;
                return Ok((projector.view.clone(), projector.progress));
            }
            Switch::Behind { live_position } => {
                info!(projection = %projector.view.projection, live_position, "the live view is ahead; catching up before switching");
            }
        }
    }
    Err(ProjectorError::NoSwitch(projector.view.projection.clone()))
}
