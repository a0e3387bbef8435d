//! A store that fails on purpose: it wraps a real [`EventStore`] and makes
//! chosen calls meet chosen faults (never sent, lost before or after the
//! commit, a conflict, a hang), so the dispatcher's retrying and settling
//! can be tested deterministically, each branch on its own. Every other
//! call, and every call with no fault planned, goes to the real store.

use super::views::{Committed, DocumentChange, ProjectionRecord, Switch, ViewId, VisitDocument};
use super::{
    AppendOutcome, AppendSignal, EventStore, JsonText, RecordedCommand, RecordedEvent, Snapshot,
    StreamAppend, StreamId, StreamLock, ViewStore,
};
use crate::error::{DatabaseFailure, StoreError};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The calls a fault can be planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Append,
    FindCommands,
}

/// What a planned call meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails as if no connection could be had: the store is not called.
    NotSent,
    /// Fails as if the connection dropped before the commit: the store is
    /// not called, and the caller cannot tell that from [`Fault::LoseReply`].
    LoseBeforeCommit,
    /// The store runs the call (an append commits), then the reply is lost:
    /// the caller sees the same error as for [`Fault::LoseBeforeCommit`].
    LoseReply,
    /// An append fails with a conflict on every stream, as if another
    /// writer came first: the store is not called.
    Conflict,
    /// Fails as the database does when it refuses a statement (a
    /// permanent error, not a key): the store is not called.
    Refused,
    /// The call goes to the store after this long.
    Hang(Duration),
    /// A lookup finds none of the command ids, as one that runs before a
    /// commit still in flight lands: the store is not called.
    NotFound,
}

/// An [`EventStore`] that injects [`Fault`]s into planned calls.
pub struct FaultyStore {
    inner: Arc<dyn EventStore>,
    state: Mutex<Plan>,
}

#[derive(Default)]
struct Plan {
    appends: VecDeque<Fault>,
    lookups: VecDeque<Fault>,
    append_calls: usize,
    lookup_calls: usize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn EventStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            state: Mutex::default(),
        })
    }

    /// The next call of `op` with no fault planned yet meets `fault`.
    pub fn plan(&self, op: Op, fault: Fault) {
        let mut plan = self.plan_state();
        match op {
            Op::Append => plan.appends.push_back(fault),
            Op::FindCommands => plan.lookups.push_back(fault),
        }
    }

    /// How many calls of `op` were made, faulty or not.
    pub fn calls(&self, op: Op) -> usize {
        let plan = self.plan_state();
        match op {
            Op::Append => plan.append_calls,
            Op::FindCommands => plan.lookup_calls,
        }
    }

    fn plan_state(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call of `op` and takes its planned fault, if any.
    fn next(&self, op: Op) -> Option<Fault> {
        let mut plan = self.plan_state();
        match op {
            Op::Append => {
                plan.append_calls += 1;
                plan.appends.pop_front()
            }
            Op::FindCommands => {
                plan.lookup_calls += 1;
                plan.lookups.pop_front()
            }
        }
    }

    /// Runs `call` through `fault` (`NotFound` and `Conflict` are the
    /// caller's to apply).
    async fn through<T>(
        fault: Option<Fault>,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let failed = |failure, message: &str| StoreError::Database {
            failure,
            message: format!("injected fault: {message}"),
        };
        match fault {
            None | Some(Fault::NotFound | Fault::Conflict) => call.await,
            Some(Fault::NotSent) => Err(failed(DatabaseFailure::NotSent, "no connection")),
            Some(Fault::LoseBeforeCommit) => Err(failed(
                DatabaseFailure::Transient,
                "connection lost before the commit",
            )),
            Some(Fault::LoseReply) => {
                call.await?;
                Err(failed(
                    DatabaseFailure::Transient,
                    "connection lost after the commit",
                ))
            }
            Some(Fault::Refused) => Err(failed(
                DatabaseFailure::Permanent,
                "the database refused the statement",
            )),
            Some(Fault::Hang(duration)) => {
                tokio::time::sleep(duration).await;
                call.await
            }
        }
    }
}

#[async_trait]
impl EventStore for FaultyStore {
    async fn append_group(
        &self,
        appends: &[StreamAppend<'_>],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let fault = self.next(Op::Append);
        if fault == Some(Fault::Conflict) {
            let conflict = |a: &StreamAppend<'_>| StoreError::Conflict {
                aggregate: a.stream.aggregate.clone(),
                id: a.stream.id.clone(),
                expected_version: a.expected_version,
            };
            return Ok(appends.iter().map(|a| Err(conflict(a))).collect());
        }
        Self::through(fault, self.inner.append_group(appends)).await
    }

    async fn find_commands(
        &self,
        command_ids: &[&str],
    ) -> Result<Vec<RecordedCommand>, StoreError> {
        let fault = self.next(Op::FindCommands);
        if fault == Some(Fault::NotFound) {
            return Ok(Vec::new());
        }
        Self::through(fault, self.inner.find_commands(command_ids)).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream, component_digest).await
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        self.inner
            .save_snapshot(stream, component_digest, snapshot)
            .await
    }

    async fn load_page(
        &self,
        stream: &StreamId,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.load_page(stream, after, limit).await
    }

    async fn read_all(
        &self,
        after: i64,
        aggregate: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, aggregate, limit).await
    }

    async fn append_signal(&self) -> Box<dyn AppendSignal> {
        self.inner.append_signal().await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: i64) -> Result<(), StoreError> {
        self.inner.save_checkpoint(name, position).await
    }

    async fn event_names(&self, aggregate: &str) -> Result<Vec<String>, StoreError> {
        self.inner.event_names(aggregate).await
    }

    async fn count_streams(&self, aggregate: &str) -> Result<u64, StoreError> {
        self.inner.count_streams(aggregate).await
    }

    async fn stream_ids(
        &self,
        aggregate: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.stream_ids(aggregate, after, limit).await
    }

    async fn sample_stream_ids(
        &self,
        aggregate: &str,
        count: u64,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.sample_stream_ids(aggregate, count).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn lock_stream(
        &self,
        stream: &StreamId,
        wait: Duration,
    ) -> Result<StreamLock, StoreError> {
        self.inner.lock_stream(stream, wait).await
    }
}

#[async_trait]
impl ViewStore for FaultyStore {
    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        self.inner.projections().await
    }

    async fn register_projection(
        &self,
        name: &str,
        version: &str,
        digest: &str,
    ) -> Result<ProjectionRecord, StoreError> {
        self.inner.register_projection(name, version, digest).await
    }

    async fn set_projection_status(
        &self,
        name: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.set_projection_status(name, status, error).await
    }

    async fn view_position(&self, view: &ViewId) -> Result<Option<i64>, StoreError> {
        self.inner.view_position(view).await
    }

    async fn load_document(
        &self,
        view: &ViewId,
        key: &str,
    ) -> Result<Option<JsonText>, StoreError> {
        self.inner.load_document(view, key).await
    }

    async fn commit_view(
        &self,
        view: &ViewId,
        from: i64,
        to: i64,
        changes: &[DocumentChange],
    ) -> Result<Committed, StoreError> {
        self.inner.commit_view(view, from, to, changes).await
    }

    async fn begin_rebuild(&self, projection: &str) -> Result<ViewId, StoreError> {
        self.inner.begin_rebuild(projection).await
    }

    async fn switch_view(&self, view: &ViewId) -> Result<Switch, StoreError> {
        self.inner.switch_view(view).await
    }

    async fn view_document(
        &self,
        projection: &str,
        key: &str,
    ) -> Result<Option<JsonText>, StoreError> {
        self.inner.view_document(projection, key).await
    }

    async fn scan_view(
        &self,
        projection: &str,
        visit: &mut VisitDocument<'_>,
    ) -> Result<u64, StoreError> {
        self.inner.scan_view(projection, visit).await
    }

    async fn events_after(
        &self,
        position: i64,
        aggregates: &[String],
        cap: u64,
    ) -> Result<u64, StoreError> {
        self.inner.events_after(position, aggregates, cap).await
    }
}
