//! Running commands against aggregates.
//!
//! [`Host`] is the library's front door: it owns the loaded modules, the event
//! store, the cache of hydrated aggregates, the retry policy and the
//! concurrency mode. Two modes:
//!
//! - [`Concurrency::Optimistic`] ([`optimistic`]): every command loads,
//!   decides and appends at the expected version on its own; a conflict
//!   catches up on the new events only, decides again, appends again.
//! - [`Concurrency::Queued`] ([`queue`], the default): commands for one
//!   stream wait in that stream's queue, are decided one after another against
//!   the in-memory state, and those waiting together are appended in one
//!   statement. No conflicts inside the process; across processes the unique
//!   key still guards every append.
//!
//! Every guest call runs on the host's [`GuestPool`] ([`guest`]), never on an
//! async worker thread. The loaded modules can be replaced while the host
//! runs ([`Host::replace_modules`]): commands already accepted finish on the
//! component they were accepted with. [`Host::shutdown`] drains the queues.

mod cache;
mod guest;
mod idempotency;
mod optimistic;
mod queue;
mod retry;
mod transient;

pub use cache::AggregateCache;
pub use queue::DEFAULT_QUEUE_CAPACITY;
pub use retry::RetryPolicy;

use crate::error::{CommandError, GuestError};
use crate::group_commit::{GroupCommit, GroupLimits};
use crate::metrics::{AggregateLabel, CommandLabels, Metrics};
pub use eshost_core::{CommandOutcome, CommandRequest};
use eshost_store::{EventStore, NewCommand, NewEvent, RecordedEvent, StreamId};
use eshost_wasm::instance::DecidedEvent;
use eshost_wasm::{GuestPool, Hydrated, LoadedComponent, Modules};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// The longest aggregate, command, correlation or causation id accepted, in
/// bytes. Ids are part of unique keys, and PostgreSQL caps a key's size.
pub const MAX_ID_BYTES: usize = 1024;

/// Events read from the store per page when replaying a stream. Two pages
/// are in memory at a time (one applying, one loading), so this bounds a
/// replay's memory whatever the stream's length.
pub const REPLAY_PAGE: u64 = 1_000;

type Answer = Result<CommandOutcome, CommandError>;

/// How commands on one stream are kept from trampling each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Each command races on its own; conflicts are retried.
    Optimistic,
    /// Commands for one stream queue in this process and are appended in batches.
    #[default]
    Queued,
}

/// How a host runs commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOptions {
    pub retry: RetryPolicy,
    pub concurrency: Concurrency,
    /// Hydrated aggregates kept in memory (least recently used go first).
    pub cache_capacity: usize,
    /// Bytes of guest linear memory the cached aggregates may hold in all.
    pub cache_memory_bytes: usize,
    /// A snapshot of guest state every this many events; 0 for never.
    pub snapshot_every: u64,
    /// Commands one aggregate's queue holds (queued mode); when it is full a
    /// command fails at once with [`CommandError::Overloaded`].
    pub queue_capacity: usize,
    /// Guest calls that may run at once (see [`GuestPool`]).
    pub guest_threads: usize,
    /// How appends of different streams are grouped into transactions.
    pub group_commit: GroupLimits,
    /// For a process that runs one command and exits: in queued mode, take
    /// the stream's lock across processes ([`EventStore::lock_stream`])
    /// before the command, waiting at most this long, so that many such
    /// processes on one aggregate take turns instead of racing and
    /// retrying. `None` (the default, and what a server wants: its queue
    /// already orders a stream's commands) takes no lock.
    pub stream_turns: Option<Duration>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            concurrency: Concurrency::default(),
            cache_capacity: cache::DEFAULT_CAPACITY,
            cache_memory_bytes: cache::DEFAULT_MEMORY_BYTES,
            snapshot_every: 100,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            guest_threads: eshost_wasm::pool::DEFAULT_THREADS,
            group_commit: GroupLimits::default(),
            stream_turns: None,
        }
    }
}

/// The host: cheap to clone, every clone shares modules, store and cache.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
}

struct Shared {
    /// Replaced whole on a reload; a command holds the component it was
    /// accepted with.
    modules: RwLock<Arc<Modules>>,
    store: Arc<dyn EventStore>,
    /// Every append goes through here, grouped with other streams' appends
    /// ready at the same moment.
    commits: GroupCommit,
    cache: AggregateCache,
    retry: RetryPolicy,
    concurrency: Concurrency,
    snapshot_every: u64,
    /// See [`HostOptions::stream_turns`].
    stream_turns: Option<Duration>,
    queues: queue::Queues,
    metrics: Metrics,
    /// Where guest calls run.
    guests: GuestPool,
    /// Cancelled by [`Host::shutdown`]: queue workers finish what they hold
    /// and stop, and new commands are refused.
    closing: CancellationToken,
    /// The queue workers, so shutdown can wait for them.
    workers: TaskTracker,
}

/// [`Host::shutdown`] ran out of time: some queue workers were still busy.
#[derive(Debug, thiserror::Error)]
#[error("{busy} aggregate queues were still busy after {waited:?}")]
pub struct ShutdownTimedOut {
    pub busy: usize,
    pub waited: Duration,
}

/// A validated command, ready to decide.
struct Prepared {
    component: Arc<LoadedComponent>,
    stream: StreamId,
    command: String,
    payload: String,
    command_id: String,
    /// True if the caller chose the id (so it may be a repeat).
    caller_command_id: bool,
    /// See [`NewCommand::fingerprint`].
    fingerprint: String,
    correlation_id: String,
    causation_id: String,
}

impl Host {
    /// A host in the default (queued) mode.
    pub fn new(modules: Modules, store: Arc<dyn EventStore>, retry: RetryPolicy) -> Self {
        Self::with_concurrency(modules, store, retry, Concurrency::default())
    }

    pub fn with_concurrency(
        modules: Modules,
        store: Arc<dyn EventStore>,
        retry: RetryPolicy,
        concurrency: Concurrency,
    ) -> Self {
        let options = HostOptions {
            retry,
            concurrency,
            ..HostOptions::default()
        };
        Self::with_options(modules, store, options)
    }

    pub fn with_options(
        modules: Modules,
        store: Arc<dyn EventStore>,
        options: HostOptions,
    ) -> Self {
        let metrics = Metrics::default();
        let commits = GroupCommit::with_metrics(
            store.clone(),
            options.group_commit,
            Some(metrics.group_commit.clone()),
        );
        Self {
            shared: Arc::new(Shared {
                modules: RwLock::new(Arc::new(modules)),
                store,
                commits,
                cache: AggregateCache::new(options.cache_capacity, options.cache_memory_bytes),
                retry: options.retry,
                concurrency: options.concurrency,
                snapshot_every: options.snapshot_every,
                stream_turns: options.stream_turns,
                queues: queue::Queues::new(options.queue_capacity),
                metrics,
                guests: GuestPool::new(options.guest_threads),
                closing: CancellationToken::new(),
                workers: TaskTracker::new(),
            }),
        }
    }

    /// The modules loaded now.
    pub fn modules(&self) -> Arc<Modules> {
        self.shared.modules()
    }

    /// Switches to another set of modules. Commands already accepted finish
    /// on the component they were accepted with; later ones use the new set.
    /// Cached instances of a replaced component are dropped when next used,
    /// and snapshots are keyed by component digest, so a new version never
    /// reads an old one's.
    pub fn replace_modules(&self, modules: Modules) {
        let mut current = self
            .shared
            .modules
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(modules);
    }

    /// True once [`Host::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.closing.is_cancelled()
    }

    /// Guest calls running now.
    pub fn guest_calls_running(&self) -> usize {
        self.shared.guests.busy()
    }

    /// Commands waiting in queues now (queued mode).
    pub fn queued_commands(&self) -> usize {
        self.shared.queues.depth()
    }

    /// Stops taking commands, lets every queue finish the commands it holds
    /// (their appends committed and snapshots written), and waits for that,
    /// at most `deadline`. Commands sent afterwards fail with
    /// [`CommandError::ShuttingDown`]. Callers of [`Host::execute`] still
    /// waiting are answered as usual.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), ShutdownTimedOut> {
        let shared = &self.shared;
        shared.closing.cancel();
        shared.workers.close();
        match tokio::time::timeout(deadline, shared.workers.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(ShutdownTimedOut {
                busy: shared.workers.len(),
                waited: deadline,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.shared.store
    }

    /// Counters and histograms over the host's lifetime.
    pub fn stats(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The host's metrics in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        self.shared.metrics.render(crate::metrics::Levels {
            queued_commands: self.queued_commands(),
            cached_aggregates: self.cached_aggregates(),
            cached_bytes: self.cached_bytes(),
            guest_calls_running: self.guest_calls_running(),
            aggregates_loaded: self.modules().len(),
            guest_instances: self.guest_instances(),
        })
    }

    /// Guest instances alive for the loaded components' aggregates (an
    /// instance holds the states of up to `aggregates_per_instance`).
    pub fn guest_instances(&self) -> usize {
        let modules = self.modules();
        modules.iter().map(|c| c.instances().0).sum()
    }

    pub fn concurrency(&self) -> Concurrency {
        self.shared.concurrency
    }

    pub fn cached_aggregates(&self) -> usize {
        self.shared.cache.len()
    }

    /// Bytes of guest memory the cached aggregates hold.
    pub fn cached_bytes(&self) -> usize {
        self.shared.cache.bytes()
    }

    /// Runs one command to completion. Rejection events are ordinary events:
    /// they come back in [`CommandOutcome::events`], not as errors.
    pub async fn execute(&self, request: &CommandRequest) -> Result<CommandOutcome, CommandError> {
        let started = std::time::Instant::now();
        let answer = self.run(request).await;
        self.shared
            .count_command(request, &answer, started.elapsed());
        answer
    }

    async fn run(&self, request: &CommandRequest) -> Result<CommandOutcome, CommandError> {
        if self.shared.closing.is_cancelled() {
            return Err(CommandError::ShuttingDown);
        }
        let prepared = self.shared.prepare(request)?;
        match self.shared.concurrency {
            Concurrency::Optimistic => self.shared.execute_optimistic(prepared).await,
            Concurrency::Queued => {
                let _turn = match self.shared.stream_turns {
                    Some(wait) => Some(
                        self.shared
                            .store
                            .lock_stream(&prepared.stream, wait)
                            .await?,
                    ),
                    None => None,
                };
                queue::submit(&self.shared, prepared).await
            }
        }
    }

    /// Brings an aggregate into memory, current (from its latest snapshot plus
    /// the events after it), so its next command pays no load: warm a hot
    /// item before a sale opens. Returns the version it is at.
    pub async fn load(&self, aggregate: &str, id: &str) -> Result<u64, CommandError> {
        let shared = &self.shared;
        let component = shared.component(aggregate)?;
        let stream = StreamId::new(aggregate, id);
        let hydrated = shared.current(&component, &stream).await?;
        let version = hydrated.version;
        shared.cache.put(stream, hydrated);
        Ok(version)
    }

    /// The aggregate's current state as the guest renders it.
    pub async fn state(
        &self,
        aggregate: &str,
        id: &str,
    ) -> Result<serde_json::Value, CommandError> {
        let (json, _version) = self.render(aggregate, id).await?;
        serde_json::from_str(&json).map_err(|e| {
            CommandError::Guest(GuestError::Trap {
                aggregate: aggregate.to_string(),
                call: "to-json",
                message: format!("returned text that is not JSON: {e}"),
            })
        })
    }

    /// The aggregate's current state as the guest renders it (JSON text),
    /// and the version (sequence number of the last event) it reflects.
    pub async fn render(&self, aggregate: &str, id: &str) -> Result<(String, u64), CommandError> {
        let shared = &self.shared;
        let component = shared.component(aggregate)?;
        let stream = StreamId::new(aggregate, id);
        let hydrated = shared.current(&component, &stream).await?;
        let (hydrated, json) = shared.render(hydrated).await?;
        let version = hydrated.version;
        shared.cache.put(stream, hydrated);
        Ok((json, version))
    }

    /// Takes a snapshot of an aggregate now (whatever `snapshot_every` says);
    /// returns the version it holds.
    pub async fn snapshot_now(&self, aggregate: &str, id: &str) -> Result<u64, CommandError> {
        let shared = &self.shared;
        let component = shared.component(aggregate)?;
        let stream = StreamId::new(aggregate, id);
        let hydrated = shared.current(&component, &stream).await?;
        let (hydrated, snapshot) = shared.take_snapshot(hydrated).await?;
        shared
            .store
            .save_snapshot(&stream, &component.digest, &snapshot)
            .await?;
        shared.cache.put(stream, hydrated);
        Ok(snapshot.version)
    }

    /// Every event of one stream, in order.
    pub async fn events(
        &self,
        aggregate: &str,
        id: &str,
    ) -> Result<Vec<RecordedEvent>, CommandError> {
        self.events_page(aggregate, id, 0, None).await
    }

    /// The stream's events after sequence number `after`, in order, at most
    /// `limit` of them (all when `None`).
    pub async fn events_page(
        &self,
        aggregate: &str,
        id: &str,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, CommandError> {
        self.shared.component(aggregate)?;
        let stream = StreamId::new(aggregate, id);
        let load = || self.shared.store.load_page(&stream, after, limit);
        Ok(self.shared.patiently("load", load).await?)
    }

    /// Every stream's events (or one aggregate type's) after position
    /// `after`, in position order, at most `limit` of them; see
    /// [`EventStore::read_all`].
    pub async fn read_all(
        &self,
        after: i64,
        aggregate: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, crate::error::StoreError> {
        let read = || self.shared.store.read_all(after, aggregate, limit);
        self.shared.patiently("read", read).await
    }

    /// Checks that the event store answers.
    pub async fn ping(&self) -> Result<(), crate::error::StoreError> {
        self.shared.store.ping().await
    }
}

impl Shared {
    /// Counts an answered command, labelled only with names this host has
    /// loaded (what a client typed could grow the label sets without end).
    fn count_command(&self, request: &CommandRequest, answer: &Answer, took: Duration) {
        let known = self
            .modules()
            .get(&request.aggregate)
            .is_some_and(|c| c.accepts(&request.command));
        let (aggregate, command) = if known {
            (request.aggregate.clone(), request.command.clone())
        } else {
            ("(unknown)".to_string(), "(unknown)".to_string())
        };
        let outcome = match answer {
            Ok(outcome) if outcome.replayed => "replayed",
            Ok(_) => "ok",
            Err(error) => error.kind(),
        };
        let metrics = &self.metrics;
        metrics
            .command_seconds
            .get_or_create(&AggregateLabel {
                aggregate: aggregate.clone(),
            })
            .observe(took.as_secs_f64());
        metrics
            .commands
            .get_or_create(&CommandLabels {
                aggregate,
                command,
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn modules(&self) -> Arc<Modules> {
        self.modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn component(&self, aggregate: &str) -> Result<Arc<LoadedComponent>, CommandError> {
        let modules = self.modules();
        modules
            .get(aggregate)
            .cloned()
            .ok_or_else(|| CommandError::UnknownAggregate {
                name: aggregate.to_string(),
                loaded: modules.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Checks what can be checked without the guest, and builds the metadata.
    fn prepare(&self, request: &CommandRequest) -> Result<Prepared, CommandError> {
        let component = self.component(&request.aggregate)?;
        if !component.accepts(&request.command) {
            return Err(CommandError::UnknownCommand {
                aggregate: request.aggregate.clone(),
                command: request.command.clone(),
                accepted: component.commands.join(", "),
            });
        }
        let max_payload = component.limits.max_payload_bytes;
        if request.payload.len() > max_payload {
            return Err(CommandError::PayloadTooLarge {
                command: request.command.clone(),
                size: request.payload.len(),
                limit: max_payload,
            });
        }
        if let Err(reason) = eshost_store::storable_json(&request.payload) {
            return Err(CommandError::PayloadNotJson {
                command: request.command.clone(),
                reason,
            });
        }
        check_id("aggregate id", &request.id)?;
        check_id("command id", request.command_id.as_str())?;
        for (what, id) in [
            ("correlation id", &request.correlation_id),
            ("causation id", &request.causation_id),
        ] {
            if let Some(id) = id {
                check_id(what, id)?;
            }
        }
        let command_id = request.command_id.as_str().to_string();
        let or_command_id = |id: &Option<String>| id.clone().unwrap_or_else(|| command_id.clone());
        Ok(Prepared {
            correlation_id: or_command_id(&request.correlation_id),
            causation_id: or_command_id(&request.causation_id),
            component,
            stream: StreamId::new(&request.aggregate, &request.id),
            command: request.command.clone(),
            payload: request.payload.clone(),
            command_id,
            caller_command_id: request.command_id.is_chosen(),
            fingerprint: idempotency::fingerprint(&request.command, &request.payload),
        })
    }

    /// An instance brought up to the latest stream: the cached one caught up,
    /// or a new one hydrated.
    async fn current(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
    ) -> Result<Hydrated, CommandError> {
        match self.cached(component, stream) {
            Some(cached) => Ok(self.catch_up(cached, stream).await?.0),
            None => self.hydrate(component, stream).await,
        }
    }

    /// The cached instance of a stream, if there is one of this very
    /// component that can still be used (one of a replaced version, or in
    /// an instance lost to a trap, is dropped).
    fn cached(&self, component: &LoadedComponent, stream: &StreamId) -> Option<Hydrated> {
        let cached = self
            .cache
            .take(stream)
            .filter(|cached| cached.component.digest == component.digest && !cached.is_lost());
        match cached {
            Some(_) => self.metrics.cache_hits.inc(),
            None => self.metrics.cache_misses.inc(),
        };
        cached
    }

    /// The cached instance for a stream (not known to be current), or a new
    /// one with the whole stream applied (current). The flag says which.
    async fn checkout(&self, prepared: &Prepared) -> Result<(Hydrated, bool), CommandError> {
        match self.cached(&prepared.component, &prepared.stream) {
            Some(cached) => Ok((cached, false)),
            None => Ok((
                self.hydrate(&prepared.component, &prepared.stream).await?,
                true,
            )),
        }
    }

    /// A new instance with the whole stream applied: from the latest usable
    /// snapshot this component wrote, plus the events after it.
    async fn hydrate(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
    ) -> Result<Hydrated, CommandError> {
        let snapshot = self.latest_snapshot(component, stream).await;
        let hydrated = self.instantiate(component, &stream.id, snapshot).await?;
        Ok(self.catch_up(hydrated, stream).await?.0)
    }

    /// The latest snapshot this component wrote of the stream, if snapshots
    /// are on and it can be read. One that cannot only costs a full replay.
    async fn latest_snapshot(
        &self,
        component: &LoadedComponent,
        stream: &StreamId,
    ) -> Option<eshost_store::Snapshot> {
        if self.snapshot_every == 0 {
            return None;
        }
        let load = || self.store.load_snapshot(stream, &component.digest);
        match self.patiently("load snapshot", load).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warn!(%stream, error = %e, "reading the snapshot failed; replaying the stream");
                None
            }
        }
    }

    /// After an append took the stream from `before` to `aggregate.version`:
    /// snapshots the state if that crossed a multiple of `snapshot_every`.
    /// An error means the guest failed and the instance is gone; a store
    /// failure only costs a later replay and is logged.
    async fn maybe_snapshot(
        &self,
        aggregate: Hydrated,
        stream: &StreamId,
        before: u64,
    ) -> Result<Hydrated, CommandError> {
        let every = self.snapshot_every;
        if every == 0 || aggregate.version / every == before / every {
            return Ok(aggregate);
        }
        let (aggregate, snapshot) = self.take_snapshot(aggregate).await?;
        let digest = &aggregate.component.digest;
        if let Err(e) = self.store.save_snapshot(stream, digest, &snapshot).await {
            warn!(%stream, error = %e, "saving a snapshot failed");
        }
        Ok(aggregate)
    }

    /// Applies the events recorded after the instance's version; returns the
    /// instance and how many there were. On an error the instance is gone.
    ///
    /// The stream is read [`REPLAY_PAGE`] events at a time, the next page
    /// loading while the guest applies this one: memory stays bounded by
    /// the page, not the stream, and a long replay costs about the larger of
    /// reading and applying, not their sum.
    async fn catch_up(
        &self,
        aggregate: Hydrated,
        stream: &StreamId,
    ) -> Result<(Hydrated, usize), CommandError> {
        let component = aggregate.component.clone();
        match self.replay(aggregate, stream, u64::MAX).await {
            Err(CommandError::Guest(GuestError::ApplyFailed(refused)))
                if refused.first < refused.last =>
            {
                let span = (refused.first, refused.last);
                let refused = GuestError::ApplyFailed(refused);
                Err(self
                    .locate_refused_event(&component, stream, span, refused)
                    .await)
            }
            replayed => replayed,
        }
    }

    /// Names the event that an `apply` call of several refused (the 0.1.0
    /// contract does not say which): replays the stream again, this time
    /// with the refused span one event per call. Only on the failure path,
    /// and only as far as the span; a deterministic guest fails again at
    /// the same event. Any other failure on the way is reported instead.
    async fn locate_refused_event(
        &self,
        component: &Arc<LoadedComponent>,
        stream: &StreamId,
        (first, last): (u64, u64),
        refused: GuestError,
    ) -> CommandError {
        let located = async {
            let snapshot = self
                .latest_snapshot(component, stream)
                .await
                .filter(|s| s.version < first);
            let aggregate = self.instantiate(component, &stream.id, snapshot).await?;
            let (aggregate, _) = self.replay(aggregate, stream, first - 1).await?;
            let load = || {
                self.store
                    .load_page(stream, first - 1, Some(last - first + 1))
            };
            let span = self.patiently("load", load).await?;
            self.with_instance(aggregate, move |a| a.apply_recorded_in_chunks(&span, 0))
                .await?;
            Ok::<_, CommandError>(())
        };
        match located.await {
            Err(error) => error,
            // The guest applied the span one by one: it is not deterministic.
            Ok(()) => refused.into(),
        }
    }

    /// [`catch_up`](Self::catch_up)'s replay: the events after the
    /// instance's version up to sequence `through`, page by page.
    async fn replay(
        &self,
        mut aggregate: Hydrated,
        stream: &StreamId,
        through: u64,
    ) -> Result<(Hydrated, usize), CommandError> {
        let page_size = |after: u64| REPLAY_PAGE.min(through.saturating_sub(after));
        let load_page = |after: u64| {
            self.patiently("load", move || {
                self.store.load_page(stream, after, Some(page_size(after)))
            })
        };
        let mut after = aggregate.version;
        let mut page = load_page(after).await?;
        let mut count = 0;
        loop {
            count += page.len();
            let last = match page.last() {
                Some(last) if page.len() as u64 == page_size(after) && last.sequence < through => {
                    last.sequence
                }
                // A short page is the end of the stream (or of the replay).
                _ => return Ok((self.apply_events(aggregate, page).await?, count)),
            };
            after = last;
            let (applied, next) = tokio::join!(self.apply_events(aggregate, page), load_page(last));
            aggregate = applied?;
            page = next?;
        }
    }

    fn refused(prepared: &Prepared, refusal: crate::error::Refusal) -> CommandError {
        CommandError::Refused {
            aggregate: prepared.stream.aggregate.clone(),
            id: prepared.stream.id.clone(),
            command: prepared.command.clone(),
            refusal,
        }
    }

    fn exhausted(prepared: &Prepared, retries: u32) -> CommandError {
        CommandError::RetriesExhausted {
            aggregate: prepared.stream.aggregate.clone(),
            id: prepared.stream.id.clone(),
            retries,
        }
    }
}

/// A command's decided events, ready to append under its id. The metadata
/// names the component that decided them.
fn to_new_command(
    prepared: &Prepared,
    decided_by: &LoadedComponent,
    events: &[DecidedEvent],
) -> NewCommand {
    let metadata = serde_json::json!({
        "commandId": prepared.command_id,
        "correlationId": prepared.correlation_id,
        "causationId": prepared.causation_id,
        "aggregateVersion": decided_by.version,
        "componentDigest": decided_by.digest,
    })
    .to_string();
    NewCommand {
        command_id: prepared.command_id.clone(),
        name: prepared.command.clone(),
        fingerprint: prepared.fingerprint.clone(),
        events: events
            .iter()
            .map(|e| NewEvent {
                name: e.name.clone(),
                payload: e.payload.clone(),
                metadata: metadata.clone(),
            })
            .collect(),
    }
}

/// Ids are stored exactly as given, within limits every store can key on.
fn check_id(what: &'static str, id: &str) -> Result<(), CommandError> {
    let reason = if id.is_empty() {
        "must not be empty".to_string()
    } else if id.len() > MAX_ID_BYTES {
        format!("is {} bytes; the limit is {MAX_ID_BYTES}", id.len())
    } else if id.contains('\0') {
        "must not contain a NUL character".to_string()
    } else {
        return Ok(());
    };
    Err(CommandError::InvalidId { what, reason })
}
