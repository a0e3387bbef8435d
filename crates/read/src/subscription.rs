//! Following the global log: every stream's events in position order, read page
//! by page from the store and then, once caught up, as they are recorded. That
//! no event is ever skipped is the store's promise
//! ([`GlobalLog::read_all`](eshost_store::GlobalLog::read_all)); this module
//! owns the cursor and the waiting: for the store's signal that events were
//! appended
//! ([`GlobalLog::append_signal`](eshost_store::GlobalLog::append_signal)), and
//! at most [`MAX_SIGNAL_WAIT`].

use async_trait::async_trait;
use eshost_store::StoreError;
use eshost_store::{AppendSignal, EventStore, RecordedEvent};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

pub use eshost_store::POLL_INTERVAL;

/// Events read from the store per query.
pub const PAGE: u64 = 1_000;

/// The longest a caught-up follower waits for its store's signal before it
/// reads anyway: a signal can be lost (a reconnect, a writer that does not
/// send one), and on PostgreSQL a long transaction elsewhere can hold
/// events back after the signal came.
pub const MAX_SIGNAL_WAIT: Duration = Duration::from_secs(1);

/// The longest a follower waits after a transient store error before it
/// tries again (the wait doubles from [`POLL_INTERVAL`]).
pub const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// Where a reader of the global log starts, and what it reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Events with positions greater than this (0: from the beginning).
    pub after: i64,
    /// Only this aggregate type's events; every type's when `None`.
    pub aggregate: Option<String>,
}

/// The events `from` names, then new ones as they are recorded, forever.
/// A transient store error (a lost connection, a restart) is waited out and
/// the read tried again from the same position; any other error is yielded
/// and ends the stream.
pub fn follow(
    store: Arc<dyn EventStore>,
    from: Subscription,
) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static {
    follow_with(store, from, None)
}

/// [`follow`], woken by `signal` once caught up (by the store's own signal,
/// taken when first needed, if `None`).
pub fn follow_with(
    store: Arc<dyn EventStore>,
    from: Subscription,
    signal: Option<Box<dyn AppendSignal>>,
) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static {
    let follower = Follower::new(store, from, signal);
    let cursor = (follower, VecDeque::new());
    stream::try_unfold(cursor, |(mut follower, mut buffered)| async move {
        while buffered.is_empty() {
            buffered.extend(follower.next_page().await?);
        }
        let event = buffered.pop_front();
        Ok(event.map(|event| (event, (follower, buffered))))
    })
}

/// A reader of the global log that goes on where it stopped: each
/// [`next_page`](Self::next_page) is the events after the last page.
pub struct Follower {
    store: Arc<dyn EventStore>,
    /// `after` is the position of the last event handed out.
    at: Subscription,
    /// Taken when the follower first catches up, unless given.
    signal: Option<Box<dyn AppendSignal>>,
}

impl Follower {
    /// Starts after `from`, woken by `signal` once caught up (by the
    /// store's own signal, taken when first needed, if `None`).
    pub fn new(
        store: Arc<dyn EventStore>,
        from: Subscription,
        signal: Option<Box<dyn AppendSignal>>,
    ) -> Self {
        Self {
            store,
            at: from,
            signal,
        }
    }

    /// The position of the last event handed out (where it goes on after).
    pub fn position(&self) -> i64 {
        self.at.after
    }

    /// Goes on after `position` instead.
    pub fn seek(&mut self, position: i64) {
        self.at.after = position;
    }

    /// The next events, at most [`PAGE`], waiting for some when caught up.
    /// A transient store error is waited out and the read tried again; any
    /// other error is returned, and the follower stays where it was.
    pub async fn next_page(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut backoff = POLL_INTERVAL;
        loop {
            let read = self
                .store
                .log()
                .read_all(self.at.after, self.at.aggregate.as_deref(), PAGE)
                .await;
            match read {
                Ok(page) => match page.last() {
                    Some(last) => {
                        self.at.after = last.position;
                        return Ok(page);
                    }
                    None => {
                        let signal = match &mut self.signal {
                            Some(signal) => signal,
                            None => self.signal.insert(self.store.log().append_signal().await),
                        };
                        signal.wait(MAX_SIGNAL_WAIT).await;
                    }
                },
                Err(e) if e.is_transient() => {
                    warn!(error = %e, after = self.at.after, "reading the global log failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One store signal shared by many followers (a server's): a task waits on
/// the store's signal and wakes them all, so a hundred followers hold one
/// listening connection, not a hundred. Cheap to clone; the task ends when
/// the last clone is dropped.
#[derive(Clone)]
pub struct SharedSignal(watch::Receiver<u64>);

impl SharedSignal {
    pub async fn start(store: &dyn EventStore) -> Self {
        let mut signal = store.log().append_signal().await;
        let (wake, woken) = watch::channel(0u64);
        tokio::spawn(async move {
            while !wake.is_closed() {
                signal.wait(MAX_SIGNAL_WAIT).await;
                wake.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        Self(woken)
    }
}

#[async_trait]
impl AppendSignal for SharedSignal {
    async fn wait(&mut self, max: Duration) {
        if let Ok(Err(_)) = tokio::time::timeout(max, self.0.changed()).await {
            // The task is gone: poll.
            tokio::time::sleep(max.min(POLL_INTERVAL)).await;
        }
    }
}
