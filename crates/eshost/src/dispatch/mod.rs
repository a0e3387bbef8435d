//! Running commands against aggregates.
//!
//! [`Host`] is the library's front door. A command goes through these
//! stages, each a module, in this order:
//!
//! 1. [`admit`]: checked without the guest (the aggregate and command are
//!    loaded, the payload and ids within limits), its metadata settled.
//! 2. One of two modes. [`queue`] (the default,
//!    [`Concurrency::Queued`]): commands for one stream wait in that
//!    stream's queue, are decided one after another against the in-memory
//!    state, and those waiting together are appended in one statement; no
//!    conflicts inside the process, and across processes the unique key
//!    still guards every append. [`optimistic`]
//!    ([`Concurrency::Optimistic`]): every command decides and appends at
//!    the expected version on its own; a conflict catches up on the new
//!    events only, decides again, appends again.
//! 3. Deciding in the guest: [`aggregates`] brings the aggregate's instance
//!    up to its stream (cache, snapshot, replay); [`guest`] makes every call
//!    into it on the host's [`GuestPool`], never on an async worker thread.
//! 4. [`settle`]: the events appended at the version they were decided on,
//!    through [`crate::group_commit`], an unknown outcome settled by looking
//!    the command ids up; a repeat answered from its record
//!    ([`idempotency`]). [`records`] is the store as these stages use it.
//! 5. A snapshot when one is due ([`Aggregates::maybe_snapshot`]).
//!
//! The loaded modules can be replaced while the host runs
//! ([`Host::replace_modules`]): commands already accepted finish on the
//! component they were accepted with. [`Host::shutdown`] drains the queues.

mod admit;
mod aggregates;
mod cache;
mod guest;
mod idempotency;
mod optimistic;
mod queue;
mod records;
mod retry;
mod settle;

pub use admit::MAX_ID_BYTES;
pub use cache::AggregateCache;
pub use queue::DEFAULT_QUEUE_CAPACITY;
pub use retry::RetryPolicy;

use crate::error::{CommandError, GuestError};
use crate::group_commit::{GroupCommit, GroupLimits};
use crate::metrics::{AggregateLabel, CommandLabels, Metrics};
use admit::Admission;
use aggregates::Aggregates;
pub use eshost_core::{CommandOutcome, CommandRequest};
use eshost_store::{EventStore, RecordedEvent, StreamId};
use eshost_wasm::{GuestPool, Modules};
use records::Records;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// For a process that runs one command and exits: in queued mode, take the
    /// stream's lock across processes
    /// ([`Locks::lock_stream`](eshost_store::Locks::lock_stream)) before the
    /// command, waiting at most this long, so that many such processes on one
    /// aggregate take turns instead of racing and retrying. `None` (the
    /// default, and what a server wants: its queue already orders a stream's
    /// commands) takes no lock.
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
    stages: Arc<Stages>,
}

/// The stages a command goes through (see the module docs), each owning
/// its own state; the modes reach each by name.
struct Stages {
    admission: Admission,
    aggregates: Aggregates,
    records: Arc<Records>,
    concurrency: Concurrency,
    /// Queued mode's queues, one per busy stream.
    queues: queue::Queues,
    /// See [`HostOptions::stream_turns`].
    stream_turns: Option<Duration>,
    metrics: Arc<Metrics>,
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
        declare_personal(store.as_ref(), &modules);
        let metrics = Arc::new(Metrics::default());
        let commits = GroupCommit::with_metrics(
            store.clone(),
            options.group_commit,
            Some(metrics.group_commit.clone()),
        );
        let records = Arc::new(Records {
            store,
            commits,
            retry: options.retry,
            metrics: metrics.clone(),
        });
        let aggregates = Aggregates {
            records: records.clone(),
            cache: AggregateCache::new(options.cache_capacity, options.cache_memory_bytes),
            guests: GuestPool::new(options.guest_threads),
            snapshot_every: options.snapshot_every,
            metrics: metrics.clone(),
        };
        Self {
            stages: Arc::new(Stages {
                admission: Admission::new(modules),
                aggregates,
                records,
                concurrency: options.concurrency,
                queues: queue::Queues::new(options.queue_capacity),
                stream_turns: options.stream_turns,
                metrics,
                closing: CancellationToken::new(),
                workers: TaskTracker::new(),
            }),
        }
    }

    /// The modules loaded now.
    pub fn modules(&self) -> Arc<Modules> {
        self.stages.admission.modules()
    }

    /// Switches to another set of modules. Commands already accepted finish
    /// on the component they were accepted with; later ones use the new set.
    /// Cached instances of a replaced component are dropped when next used,
    /// and snapshots are keyed by component digest, so a new version never
    /// reads an old one's.
    pub fn replace_modules(&self, modules: Modules) {
        declare_personal(self.stages.records.store.as_ref(), &modules);
        self.stages.admission.replace(modules);
    }

    /// True once [`Host::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.stages.closing.is_cancelled()
    }

    /// Guest calls running now.
    pub fn guest_calls_running(&self) -> usize {
        self.stages.aggregates.guests.busy()
    }

    /// Commands waiting in queues now (queued mode).
    pub fn queued_commands(&self) -> usize {
        self.stages.queues.depth()
    }

    /// Stops taking commands, lets every queue finish the commands it holds
    /// (their appends committed and snapshots written), and waits for that,
    /// at most `deadline`. Commands sent afterwards fail with
    /// [`CommandError::ShuttingDown`]. Callers of [`Host::execute`] still
    /// waiting are answered as usual.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), ShutdownTimedOut> {
        let stages = &self.stages;
        stages.closing.cancel();
        stages.workers.close();
        match tokio::time::timeout(deadline, stages.workers.wait()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(ShutdownTimedOut {
                busy: stages.workers.len(),
                waited: deadline,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.stages.records.store
    }

    /// Counters and histograms over the host's lifetime.
    pub fn stats(&self) -> &Metrics {
        &self.stages.metrics
    }

    /// The host's metrics in OpenMetrics text, without the closing
    /// `# EOF` (a server appends its own, then closes the exposition).
    pub fn render_metrics(&self) -> String {
        self.stages.metrics.render(crate::metrics::Levels {
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
        self.stages.concurrency
    }

    pub fn cached_aggregates(&self) -> usize {
        self.stages.aggregates.cache.len()
    }

    /// Bytes of guest memory the cached aggregates hold.
    pub fn cached_bytes(&self) -> usize {
        self.stages.aggregates.cache.bytes()
    }

    /// Runs one command to completion. Rejection events are ordinary events:
    /// they come back in [`CommandOutcome::events`], not as errors.
    pub async fn execute(&self, request: &CommandRequest) -> Result<CommandOutcome, CommandError> {
        let started = std::time::Instant::now();
        let answer = self.run(request).await;
        self.count_command(request, &answer, started.elapsed());
        answer
    }

    async fn run(&self, request: &CommandRequest) -> Result<CommandOutcome, CommandError> {
        let stages = &self.stages;
        if stages.closing.is_cancelled() {
            return Err(CommandError::ShuttingDown);
        }
        let admitted = stages.admission.admit(request, &*stages.records.store)?;
        match stages.concurrency {
            Concurrency::Optimistic => optimistic::execute(stages, admitted).await,
            Concurrency::Queued => {
                let _turn = match stages.stream_turns {
                    Some(wait) => Some(
                        stages
                            .records
                            .store
                            .locks()
                            .lock_stream(&admitted.stream, wait)
                            .await?,
                    ),
                    None => None,
                };
                queue::submit(stages, admitted).await
            }
        }
    }

    /// Brings an aggregate into memory, current (from its latest snapshot plus
    /// the events after it), so its next command pays no load: warm a hot
    /// item before a sale opens. Returns the version it is at.
    pub async fn load(&self, aggregate: &str, id: &str) -> Result<u64, CommandError> {
        let aggregates = &self.stages.aggregates;
        let component = self.stages.admission.component(aggregate)?;
        let stream = StreamId::new(aggregate, id);
        let hydrated = aggregates.current(&component, &stream).await?;
        let version = hydrated.version;
        aggregates.cache.put(stream, hydrated);
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
    /// An aggregate with no events is [`CommandError::NeverCreated`], and
    /// nothing of it is kept.
    pub async fn render(&self, aggregate: &str, id: &str) -> Result<(String, u64), CommandError> {
        let aggregates = &self.stages.aggregates;
        let component = self.stages.admission.component(aggregate)?;
        admit::check_aggregate_id(id)?;
        let stream = StreamId::new(aggregate, id);
        let hydrated = aggregates.current(&component, &stream).await?;
        if hydrated.version == 0 {
            return Err(CommandError::NeverCreated {
                aggregate: aggregate.to_string(),
                id: id.to_string(),
            });
        }
        let (hydrated, json) = aggregates.render(hydrated).await?;
        let version = hydrated.version;
        aggregates.cache.put(stream, hydrated);
        Ok((json, version))
    }

    /// Takes a snapshot of an aggregate now (whatever `snapshot_every` says);
    /// returns the version it holds.
    pub async fn snapshot_now(&self, aggregate: &str, id: &str) -> Result<u64, CommandError> {
        let aggregates = &self.stages.aggregates;
        let component = self.stages.admission.component(aggregate)?;
        let stream = StreamId::new(aggregate, id);
        let hydrated = aggregates.current(&component, &stream).await?;
        let (hydrated, snapshot) = aggregates.take_snapshot(hydrated).await?;
        self.stages
            .records
            .store
            .streams()
            .save_snapshot(&stream, &component.digest, &snapshot)
            .await?;
        aggregates.cache.put(stream, hydrated);
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
        self.stages.admission.component(aggregate)?;
        admit::check_aggregate_id(id)?;
        let stream = StreamId::new(aggregate, id);
        let records = &self.stages.records;
        let load = || records.store.streams().load_page(&stream, after, limit);
        Ok(records.patiently("load", load).await?)
    }

    /// Every stream's events (or one aggregate type's) after position
    /// `after`, in position order, at most `limit` of them; see
    /// [`GlobalLog::read_all`](eshost_store::GlobalLog::read_all).
    pub async fn read_all(
        &self,
        after: i64,
        aggregate: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, crate::error::StoreError> {
        let records = &self.stages.records;
        let read = || records.store.log().read_all(after, aggregate, limit);
        records.patiently("read", read).await
    }

    /// Forgets a data subject (see
    /// [`EventStore::forget_subject`](eshost_store::EventStore::forget_subject))
    /// and drops this host's states of the streams they appeared in, so
    /// the next read of each replays it without them. `None` when there was
    /// nothing left to forget.
    pub async fn forget(
        &self,
        subject: &str,
    ) -> Result<Option<eshost_core::Erasure>, crate::error::StoreError> {
        let erasure = self.stages.records.store.forget_subject(subject).await?;
        if let Some(erasure) = &erasure {
            let streams: Vec<StreamId> = erasure.streams.iter().map(StreamId::from).collect();
            self.drop_erased(&streams);
        }
        Ok(erasure)
    }

    /// Drops this host's states of these streams, whose data subject was
    /// forgotten (here, or by another host: a server follows the log's
    /// erasures). A state made before now is not kept or snapshotted.
    pub fn drop_erased(&self, streams: &[StreamId]) {
        self.stages.aggregates.cache.erase(streams);
    }

    /// Checks that the event store answers.
    pub async fn ping(&self) -> Result<(), crate::error::StoreError> {
        self.stages.records.store.ping().await
    }

    /// Counts an answered command, labelled only with names this host has
    /// loaded (what a client typed could grow the label sets without end).
    fn count_command(&self, request: &CommandRequest, answer: &Answer, took: Duration) {
        let known = self
            .stages
            .admission
            .knows(&request.aggregate, &request.command);
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
        let metrics = &self.stages.metrics;
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
}

/// Tells the store what each guest declares as personal data (decision
/// record 0056), before any of its commands runs. A store without a master
/// key ignores it and keeps such data as written (`eshost serve` warns).
fn declare_personal(store: &dyn EventStore, modules: &Modules) {
    for component in modules.iter() {
        store.declare_personal(&component.name, &component.personal);
    }
}
