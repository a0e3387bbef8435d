//! A store that fails on purpose: it wraps a real [`EventStore`] and makes
//! chosen calls meet chosen faults (never sent, lost before or after the
//! commit, a conflict, a hang), so the dispatcher's retrying and settling
//! can be tested deterministically, each branch on its own. Every other
//! call, and every call with no fault planned, goes to the real store: it
//! wraps only the [`Streams`] role, and hands out the real store's others.
//!
//! It lives with the tests that use it, not in the store crate behind a
//! feature: it is no one's API, and a feature only tests turned on made
//! `cargo install` of the CLI rebuild the store and every crate above it.

use async_trait::async_trait;
use eshost::store::{
    AppendOutcome, Catalog, Checkpoints, DatabaseFailure, EventStore, GlobalLog, Locks,
    RecordedCommand, RecordedEvent, Snapshot, StoreError, StreamAppend, StreamId, Streams,
    ViewStore,
};
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

/// Faults are planned for appends and lookups, both calls on streams: the
/// other roles are the real store's own.
#[async_trait]
impl EventStore for FaultyStore {
    fn streams(&self) -> &dyn Streams {
        self
    }

    fn log(&self) -> &dyn GlobalLog {
        self.inner.log()
    }

    fn checkpoints(&self) -> &dyn Checkpoints {
        self.inner.checkpoints()
    }

    fn catalog(&self) -> &dyn Catalog {
        self.inner.catalog()
    }

    fn locks(&self) -> &dyn Locks {
        self.inner.locks()
    }

    fn views(&self) -> &dyn ViewStore {
        self.inner.views()
    }

    fn deployments(&self) -> &dyn eshost::store::Deployments {
        self.inner.deployments()
    }

    fn reactions(&self) -> &dyn eshost::store::Reactions {
        self.inner.reactions()
    }

    fn subjects(&self) -> &dyn eshost::store::Subjects {
        self.inner.subjects()
    }

    fn declare_personal(&self, aggregate: &str, events: &[eshost::PersonalEvent]) {
        self.inner.declare_personal(aggregate, events)
    }

    fn keeps_personal_data(&self) -> bool {
        self.inner.keeps_personal_data()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl Streams for FaultyStore {
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
        let streams = self.inner.streams();
        Self::through(fault, streams.append_group(appends)).await
    }

    async fn find_commands(
        &self,
        command_ids: &[&str],
    ) -> Result<Vec<RecordedCommand>, StoreError> {
        let fault = self.next(Op::FindCommands);
        if fault == Some(Fault::NotFound) {
            return Ok(Vec::new());
        }
        let streams = self.inner.streams();
        Self::through(fault, streams.find_commands(command_ids)).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let streams = self.inner.streams();
        streams.load_snapshot(stream, component_digest).await
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        let streams = self.inner.streams();
        streams
            .save_snapshot(stream, component_digest, snapshot)
            .await
    }

    async fn load_page(
        &self,
        stream: &StreamId,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.streams().load_page(stream, after, limit).await
    }
}
