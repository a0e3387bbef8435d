//! Group commit: appends for different streams that are ready at the same
//! moment go to the store together, in one transaction and one commit
//! ([`Streams::append_group`](eshost_store::Streams::append_group)), each with its own outcome.
//!
//! A caller hands its append to [`GroupCommit::append`] and waits for the
//! outcome. Up to [`GroupLimits::committers`] tasks each take what is
//! waiting (bounded in streams, events and bytes), send it as one group and
//! answer each caller. While the committers are busy, appends pile up and
//! the next group is larger: the busier the store, the fewer commits per
//! append. An append that finds a committer idle goes alone at once, so a
//! quiet host waits for nothing.
//!
//! A group that fails as a whole with an error that is not transient is
//! taken apart: each append is sent again alone, so one stream's rows that
//! the database refuses fail that stream only. A transient failure is every
//! member's to settle, as it would be for an append sent alone.
//!
//! Each group's transaction is a `commit` span: a child of its first
//! traced append, linking the `append` span of every command it carries
//! (see [`crate::trace`]).

use crate::error::{DatabaseFailure, StoreError};
use eshost_store::{AppendOutcome, EventStore, NewCommand, StreamAppend, StreamId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::{Arc, OnceLock};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, Span, debug_span, warn};

/// How groups are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Groups in flight at once, each on its own connection.
    pub committers: usize,
    /// Streams in one group at most.
    pub max_streams: usize,
    /// Events in one group at most (an append with more goes alone).
    pub max_events: usize,
    /// Bytes of ids, names, payloads and metadata in one group at most (an
    /// append with more goes alone). PostgreSQL refuses a message over
    /// 1 GiB; this keeps a group far below it.
    pub max_bytes: usize,
    /// Appends waiting for a committer at most; a caller that finds the
    /// queue full waits for room, up to its deadline. Each waiting append
    /// is held by its caller too: the queue adds no copy.
    pub queue: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            committers: 2,
            max_streams: 256,
            max_events: 1 << 16,
            max_bytes: 16 << 20,
            queue: 4096,
        }
    }
}

/// One caller's append, waiting for a group.
struct Pending {
    stream: StreamId,
    expected_version: u64,
    commands: Arc<[NewCommand]>,
    reply: oneshot::Sender<AppendOutcome>,
    /// The `append` spans of the commands it carries that are traced.
    traces: Vec<Span>,
}

impl Pending {
    fn as_append(&self) -> StreamAppend<'_> {
        StreamAppend {
            stream: &self.stream,
            expected_version: self.expected_version,
            commands: &self.commands,
        }
    }
}

/// The appends waiting, and the one taken that did not fit its group.
struct Waiting {
    receiver: mpsc::Receiver<Pending>,
    carried: Option<Pending>,
}

impl Waiting {
    /// The next group: the oldest append waiting (waiting for one if none
    /// is), then as many more as are waiting and fit. `None` once every
    /// sender is gone.
    async fn next_group(&mut self, limits: &GroupLimits) -> Option<Vec<Pending>> {
        let first = match self.carried.take() {
            Some(pending) => pending,
            None => self.receiver.recv().await?,
        };
        let size = |p: &Pending| (p.as_append().bytes(), p.as_append().events());
        let (mut bytes, mut events) = size(&first);
        let mut group = vec![first];
        while group.len() < limits.max_streams {
            let Ok(next) = self.receiver.try_recv() else {
                break;
            };
            let (next_bytes, next_events) = size(&next);
            let fits = bytes + next_bytes <= limits.max_bytes
                && events + next_events <= limits.max_events
                && group.iter().all(|p| p.stream != next.stream);
            if !fits {
                self.carried = Some(next);
                break;
            }
            bytes += next_bytes;
            events += next_events;
            group.push(next);
        }
        Some(group)
    }
}

/// What the committers count: each transaction that committed, and its
/// streams.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    pub commits: Counter,
    pub streams: Histogram,
}

/// Where the committers take their groups from and send them to.
struct Committers {
    store: Arc<dyn EventStore>,
    limits: GroupLimits,
    waiting: Mutex<Waiting>,
    metrics: Option<CommitMetrics>,
}

/// Appends grouped into shared transactions (see the module docs).
pub struct GroupCommit {
    sender: mpsc::Sender<Pending>,
    committers: Arc<Committers>,
    /// Set once the committer tasks are running: they start with the first
    /// append, on its runtime.
    started: OnceLock<()>,
}

impl GroupCommit {
    pub fn new(store: Arc<dyn EventStore>, limits: GroupLimits) -> Self {
        Self::with_metrics(store, limits, None)
    }

    /// As [`new`](Self::new), counting each group sent in `metrics`.
    pub fn with_metrics(
        store: Arc<dyn EventStore>,
        limits: GroupLimits,
        metrics: Option<CommitMetrics>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(limits.queue.max(1));
        let committers = Arc::new(Committers {
            store,
            limits,
            waiting: Mutex::new(Waiting {
                receiver,
                carried: None,
            }),
            metrics,
        });
        Self {
            sender,
            committers,
            started: OnceLock::new(),
        }
    }

    /// Appends `commands` to `stream` at `expected_version`, in whichever
    /// group forms next; the outcome is [`Streams::append`](eshost_store::Streams::append)'s. An append
    /// that cannot join the queue by `deadline` is not sent and fails as
    /// [`DatabaseFailure::NotSent`]. The group's `commit` span links
    /// `traces` (the commands' `append` spans; none when untraced).
    pub async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        commands: Arc<[NewCommand]>,
        deadline: Instant,
        traces: Vec<Span>,
    ) -> AppendOutcome {
        self.start();
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            stream: stream.clone(),
            expected_version,
            commands,
            reply,
            traces,
        };
        let queued = tokio::time::timeout_at(deadline, self.sender.send(pending)).await;
        if !matches!(queued, Ok(Ok(()))) {
            return Err(StoreError::Database {
                failure: DatabaseFailure::NotSent,
                message: "no room to queue the append before its deadline".into(),
            });
        }
        outcome.await.unwrap_or_else(|_| {
            // The committer went away with the append: it may have been sent.
            Err(StoreError::Database {
                failure: DatabaseFailure::Transient,
                message: "the committer stopped before answering".into(),
            })
        })
    }

    fn start(&self) {
        self.started.get_or_init(|| {
            for _ in 0..self.committers.limits.committers.max(1) {
                tokio::spawn(commit_groups(self.committers.clone()));
            }
        });
    }
}

/// One committer: takes groups and commits them until every sender is gone.
async fn commit_groups(committers: Arc<Committers>) {
    loop {
        let group = {
            let mut waiting = committers.waiting.lock().await;
            waiting.next_group(&committers.limits).await
        };
        let Some(group) = group else {
            return;
        };
        committers.commit(group).await;
    }
}

impl Committers {
    /// One transaction, counted once it committed: a try that failed
    /// (and is sent again, by the caller or stream by stream) is no
    /// commit, so a commit always holds at least one whole append.
    async fn append(&self, appends: &[StreamAppend<'_>]) -> Result<Vec<AppendOutcome>, StoreError> {
        let outcomes = self.store.streams().append_group(appends).await?;
        if let Some(metrics) = &self.metrics {
            metrics.commits.inc();
            metrics.streams.observe(appends.len() as f64);
        }
        Ok(outcomes)
    }

    async fn commit(&self, group: Vec<Pending>) {
        let span = commit_span(&group);
        self.commit_in_span(group).instrument(span).await;
    }

    async fn commit_in_span(&self, group: Vec<Pending>) {
        let appends: Vec<StreamAppend<'_>> = group.iter().map(Pending::as_append).collect();
        // A caller left without an outcome (a store answering fewer than
        // asked) hears "the committer stopped" and settles by lookup.
        let outcomes = match self.append(&appends).await {
            Ok(outcomes) => outcomes,
            Err(error) if group.len() > 1 && !error.is_transient() => {
                // Which append the database refused is not known: send each
                // alone, so the error reaches only the one it belongs to.
                warn!(streams = group.len(), %error, "a group append failed; appending its streams one by one");
                let mut outcomes = Vec::with_capacity(group.len());
                for append in &appends {
                    outcomes.push(
                        self.append(&[*append]).await.and_then(|mut outcome| {
                            outcome.pop().unwrap_or_else(|| Ok(Vec::new()))
                        }),
                    );
                }
                outcomes
            }
            Err(error) => group.iter().map(|_| Err(error.clone())).collect(),
        };
        drop(appends);
        for (pending, outcome) in group.into_iter().zip(outcomes) {
            // The caller may have given up waiting; that is its business.
            let _ = pending.reply.send(outcome);
        }
    }
}

/// The span of one group's transaction: a child of the first traced
/// append it carries, linking every traced append (the first included, so
/// the links alone name every command). No span when none is traced.
fn commit_span(group: &[Pending]) -> Span {
    let mut traced = group.iter().flat_map(|pending| &pending.traces);
    let Some(first) = traced.next() else {
        return Span::none();
    };
    let commands: usize = group.iter().map(|pending| pending.commands.len()).sum();
    let span = debug_span!(parent: first, "commit", streams = group.len(), commands);
    span.follows_from(first);
    for append in traced {
        span.follows_from(append);
    }
    span
}
