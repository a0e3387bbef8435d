//! The event store: streams of events keyed by (aggregate name, aggregate id),
//! appended with an expected version, each command's id recorded with its
//! events. Two unique keys guard every append: the sequence number (a lost
//! race surfaces as [`StoreError::Conflict`]) and the command id (a repeated
//! command as [`StoreError::DuplicateCommand`]). Beside the events it
//! keeps the read side's checkpoints and views, what each host serves
//! ([`deployments`]), and what reactors need kept ([`reactions`]).

pub mod deployments;
mod driver_error;
pub mod error;
mod postgres;
pub mod reactions;
mod sqlite;
pub mod subjects;
pub mod views;

pub use deployments::{ComponentKind, DeployAction, Deployment, Deployments, NewDeployment};
pub use error::{DatabaseFailure, StoreError};
pub use eshost_core::{
    JsonText, MAX_PAYLOAD_DEPTH, ProjectionRecord, RecordedEvent, Snapshot, StreamId, storable_json,
};
pub use postgres::PostgresStore;
pub use reactions::Reactions;
pub use sqlite::SqliteStore;
pub use subjects::Subjects;
pub use views::{ViewId, ViewStore};

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// JSON text: command, correlation and causation ids, component version and digest.
    pub metadata: String,
    /// The pseudonym of the data subject whose personal data the event
    /// holds (decision record 0056), indexed so that a forget finds the
    /// subject's streams; `None` for an event with none.
    pub subject: Option<String>,
}

/// One command's events, appended together and recorded under its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// Unique across all streams.
    pub command_id: String,
    /// The command's name.
    pub name: String,
    /// sha256 (hex) of the name and payload: tells a repeat of this command
    /// from another command that reuses its id.
    pub fingerprint: String,
    pub events: Vec<NewEvent>,
}

/// One stream's part of [`Streams::append_group`].
#[derive(Debug, Clone, Copy)]
pub struct StreamAppend<'a> {
    pub stream: &'a StreamId,
    pub expected_version: u64,
    pub commands: &'a [NewCommand],
}

impl StreamAppend<'_> {
    /// The bytes this append sends: what bounds a group of appends.
    pub fn bytes(&self) -> usize {
        self.commands.iter().map(NewCommand::bytes).sum()
    }

    /// The events this append records.
    pub fn events(&self) -> usize {
        self.commands.iter().map(|c| c.events.len()).sum()
    }
}

/// One stream's outcome in a group: its recorded events, in sequence
/// order, or the key it met.
pub type AppendOutcome = Result<Vec<RecordedEvent>, StoreError>;

impl NewCommand {
    /// The bytes this command's append sends, roughly: its ids, names,
    /// payloads and metadata.
    pub fn bytes(&self) -> usize {
        let events: usize = self
            .events
            .iter()
            .map(|e| e.name.len() + e.payload.len() + e.metadata.len())
            .sum();
        self.command_id.len() + self.name.len() + self.fingerprint.len() + events
    }
}

/// A command recorded earlier, with the events it appended.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCommand {
    pub command_id: String,
    pub stream: StreamId,
    pub name: String,
    pub fingerprint: String,
    pub events: Vec<RecordedEvent>,
}

/// A stream's turn across processes, held until dropped (see
/// [`Locks::lock_stream`]).
pub struct StreamLock(#[allow(dead_code)] Box<dyn std::any::Any + Send>);

impl StreamLock {
    fn holding(guard: impl std::any::Any + Send) -> Self {
        Self(Box::new(guard))
    }
}

/// How often a caught-up follower reads again when nothing wakes it sooner.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Wakes a caught-up follower of the global log when events may have been
/// appended (see [`GlobalLog::append_signal`]).
#[async_trait]
pub trait AppendSignal: Send {
    /// Returns when events may have been appended, or after `max` at most.
    async fn wait(&mut self, max: Duration);
}

/// No signal: the follower reads again every [`POLL_INTERVAL`].
pub struct Polling;

#[async_trait]
impl AppendSignal for Polling {
    async fn wait(&mut self, max: Duration) {
        tokio::time::sleep(max.min(POLL_INTERVAL)).await;
    }
}

/// Never a signal: a caught-up follower reads again only after the longest
/// wait it allows, for one that needs no haste and should cost the
/// database next to nothing.
pub struct Unhurried;

#[async_trait]
impl AppendSignal for Unhurried {
    async fn wait(&mut self, max: Duration) {
        tokio::time::sleep(max).await;
    }
}

/// Where events live, by role. A store implements each role, and the
/// write side, the read side and the tools each use the roles they need
/// (`store.streams().append(..)`, `store.log().read_all(..)`); a wrapper
/// such as the fault-injecting store wraps one role and hands out the
/// others as they are. Implementations must make appends atomic and detect
/// a lost race by error code, never by message text.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appending and reading streams, their snapshots, and the records of
    /// commands.
    fn streams(&self) -> &dyn Streams;

    /// Every stream's events in one order, for readers of the whole log.
    fn log(&self) -> &dyn GlobalLog;

    /// Where durable readers of the global log have got to.
    fn checkpoints(&self) -> &dyn Checkpoints;

    /// What has been recorded, by aggregate type: for the upgrade check.
    fn catalog(&self) -> &dyn Catalog;

    /// Turns on streams across processes.
    fn locks(&self) -> &dyn Locks;

    /// The projections' views.
    fn views(&self) -> &dyn ViewStore;

    /// What each host serves: the deployed components and their history.
    fn deployments(&self) -> &dyn Deployments;

    /// What reactors need kept: checkpoints, the outbox, timers, parked
    /// events, leases.
    fn reactions(&self) -> &dyn Reactions;

    /// The keys of personal data: one row per data subject.
    fn subjects(&self) -> &dyn Subjects;

    /// Takes what `aggregate`'s guest declares as personal data (decision
    /// record 0056), replacing what it declared before. A store that does
    /// not encrypt personal data ignores it and stores such events as
    /// written; [`keeps_personal_data`](Self::keeps_personal_data) says
    /// which.
    fn declare_personal(&self, _aggregate: &str, _events: &[eshost_core::PersonalEvent]) {}

    /// True when this store encrypts declared personal data.
    fn keeps_personal_data(&self) -> bool {
        false
    }

    /// What a command on `aggregate` is recorded under, to tell a repeat of
    /// it from another command that reuses its id: here its
    /// [`fingerprint`](eshost_core::command::fingerprint). A store that
    /// encrypts personal data keys it for an aggregate that declares some,
    /// since a plain hash of a payload confirms a guess at what it holds.
    fn command_fingerprint(&self, aggregate: &str, name: &str, payload: &str) -> String {
        let _ = aggregate;
        eshost_core::command::fingerprint(name, payload)
    }

    /// Forgets the data subject with this id (decision record 0056): records
    /// their erasure in the log, then deletes their key, the snapshots of
    /// the streams they appear in, and where they appear. `None` when no
    /// subject has this id: never recorded, or forgotten already. Only a
    /// store that encrypts personal data can forget; others refuse.
    async fn forget_subject(
        &self,
        _subject: &str,
    ) -> Result<Option<eshost_core::Erasure>, StoreError> {
        Err(StoreError::PersonalData(
            "no master key is configured, so this store holds personal data as written and \
             cannot forget it (see the book's chapter on personal data)"
                .into(),
        ))
    }

    /// Checks that the database answers (a round trip).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Streams of events, appended with an expected version, each command's id
/// recorded with its events; and the streams' snapshots.
#[async_trait]
pub trait Streams: Send + Sync {
    /// The latest snapshot of a stream written by the component with this digest.
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Stores a snapshot unless one at the same or a later version exists,
    /// and drops the stream's snapshots by other component digests at or
    /// below its version: after an upgrade they would never be read again.
    async fn save_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError>;

    /// The stream's events with sequence numbers greater than `after`, in order.
    async fn load(&self, stream: &StreamId, after: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        self.load_page(stream, after, None).await
    }

    /// The stream's events with sequence numbers greater than `after`, in
    /// order, at most `limit` of them (all when `None`).
    async fn load_page(
        &self,
        stream: &StreamId,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Appends the commands' events as sequence numbers `expected_version + 1
    /// ..`, each command's contiguous and in order, and records each command
    /// id with them, all in one transaction. A command without events is not
    /// recorded. Fails with [`StoreError::Conflict`] if any of those sequence
    /// numbers is taken and [`StoreError::DuplicateCommand`] if any of the
    /// command ids is; then nothing is written.
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        commands: &[NewCommand],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let append = StreamAppend {
            stream,
            expected_version,
            commands,
        };
        let mut outcomes = self.append_group(&[append]).await?;
        outcomes.pop().unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Several streams' appends (each as [`append`](Self::append) would
    /// make it) in one transaction, one commit. Each stream has its own
    /// outcome, in the order given: a stream that meets a key
    /// ([`StoreError::Conflict`], [`StoreError::DuplicateCommand`]) has
    /// nothing written and does not fail the others. `Err` means the
    /// transaction as a whole failed, for every stream alike. A stream
    /// must not appear twice.
    async fn append_group(
        &self,
        appends: &[StreamAppend<'_>],
    ) -> Result<Vec<AppendOutcome>, StoreError>;

    /// [`append_group`](Self::append_group), storing new data subjects'
    /// rows in the same transaction, so that personal data costs no
    /// commit of its own. A candidate whose lookup is stored already fails
    /// the whole call with [`StoreError::SubjectTaken`], and nothing is
    /// written. The rows are stored with the group if any append's outcome
    /// is `Ok`, and not at all if none is.
    async fn append_group_with_subjects(
        &self,
        appends: &[StreamAppend<'_>],
        subjects: &subjects::NewSubjects<'_>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let _ = (appends, subjects);
        Err(StoreError::PersonalData(
            "this store cannot store data subjects with an append".to_owned(),
        ))
    }

    /// The recorded commands among `command_ids`, each with its events, in
    /// no particular order; ids never recorded are left out.
    async fn find_commands(&self, command_ids: &[&str])
    -> Result<Vec<RecordedCommand>, StoreError>;
}

/// The global log: every stream's events in one order.
#[async_trait]
pub trait GlobalLog: Send + Sync {
    /// Events of every stream (or of one aggregate type) with positions
    /// greater than `after`, in position order, at most `limit` of them.
    /// Gap-safe: once a position has been returned, no event with a lower
    /// one can become visible later, so a reader that goes on from the last
    /// position it saw never skips an event. An event still being written
    /// (and those after it) waits for a later call.
    async fn read_all(
        &self,
        after: i64,
        aggregate: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Where a reader that wants only the newest `count` events (of one
    /// aggregate type, or of all) starts: the position just before them,
    /// 0 when there are no more than `count`. Not gap-safe by itself: an
    /// event still being written below it may become visible later.
    async fn tail_start(&self, count: u64, aggregate: Option<&str>) -> Result<i64, StoreError>;

    /// What wakes a follower of [`read_all`](Self::read_all) when events
    /// are appended. By default nothing does and it polls; PostgreSQL
    /// listens for the notification hosts send after their appends.
    async fn append_signal(&self) -> Box<dyn AppendSignal> {
        Box::new(Polling)
    }

    /// The oldest transaction still writing, which holds the log's
    /// horizon: events committed after it began are not readable until it
    /// ends. `None` when no transaction is writing, and always on a store
    /// whose writers take turns (SQLite).
    async fn horizon_holder(&self) -> Result<Option<HorizonHolder>, StoreError> {
        Ok(None)
    }
}

/// The transaction that holds the global log's horizon (see
/// [`GlobalLog::horizon_holder`]): who to look at when followers and
/// projections stop moving.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonHolder {
    /// The database backend's process id (`pg_stat_activity.pid`).
    pub pid: i32,
    /// How long its transaction has been open, in seconds.
    pub held_seconds: f64,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// The client's `application_name`, often empty.
    pub application: String,
}

/// Where durable readers of the global log have got to.
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// The position a durable reader of the global log last saved under
    /// `name`, if it saved one.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<i64>, StoreError>;

    /// Saves `position` as where the reader `name` has got to.
    async fn save_checkpoint(&self, name: &str, position: i64) -> Result<(), StoreError>;
}

/// What has been recorded, by aggregate type.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Every event name recorded for an aggregate type, sorted.
    async fn event_names(&self, aggregate: &str) -> Result<Vec<String>, StoreError>;

    /// How many streams an aggregate type has.
    async fn count_streams(&self, aggregate: &str) -> Result<u64, StoreError>;

    /// An aggregate type's stream ids greater than `after` (`""` for the
    /// first page), in order, at most `limit` of them.
    async fn stream_ids(
        &self,
        aggregate: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<String>, StoreError>;

    /// `count` of an aggregate type's stream ids, chosen at random.
    async fn sample_stream_ids(
        &self,
        aggregate: &str,
        count: u64,
    ) -> Result<Vec<String>, StoreError>;
}

/// Turns on streams across processes.
#[async_trait]
pub trait Locks: Send + Sync {
    /// Waits, at most `wait`, until no other process holds this stream's
    /// lock, then holds it until the guard is dropped (or the process
    /// ends). For processes that run one command and exit: taking turns
    /// costs each a short wait, where racing costs conflicts and retries.
    /// Advisory: it guards nothing by itself (the unique keys do).
    async fn lock_stream(
        &self,
        stream: &StreamId,
        wait: Duration,
    ) -> Result<StreamLock, StoreError>;
}

/// What a failed append means, told apart by error code and constraint.
#[derive(Clone, Copy)]
enum Violation {
    /// The stream's sequence key: someone appended first.
    StreamKey,
    /// The commands' key: a command id is already recorded.
    CommandKey,
}

/// The result of an append's `INSERT ... RETURNING` of events: the recorded
/// events in sequence order, or the typed error for a violated key.
fn appended<Row>(
    result: Result<Vec<Row>, sqlx::Error>,
    recorded: fn(&Row) -> Result<RecordedEvent, StoreError>,
    violation: impl Fn(&sqlx::Error) -> Option<Violation>,
    stream: &StreamId,
    expected_version: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    match result {
        Ok(rows) => {
            let mut events = rows.iter().map(recorded).collect::<Result<Vec<_>, _>>()?;
            events.sort_by_key(|e| e.sequence);
            Ok(events)
        }
        Err(e) => Err(append_error(e, violation, stream, expected_version)),
    }
}

impl Violation {
    /// The typed error for this key on `stream`.
    fn error(self, stream: &StreamId, expected_version: u64) -> StoreError {
        match self {
            Violation::StreamKey => StoreError::Conflict {
                aggregate: stream.aggregate.clone(),
                id: stream.id.clone(),
                expected_version,
            },
            Violation::CommandKey => StoreError::DuplicateCommand {
                aggregate: stream.aggregate.clone(),
                id: stream.id.clone(),
            },
        }
    }
}

/// A failed append's error: typed for a violated key, else the database's.
fn append_error(
    error: sqlx::Error,
    violation: impl Fn(&sqlx::Error) -> Option<Violation>,
    stream: &StreamId,
    expected_version: u64,
) -> StoreError {
    match violation(&error) {
        Some(key) => key.error(stream, expected_version),
        None => error.into(),
    }
}

/// Ends a group's transaction: committed if any append was recorded, else
/// rolled back, so that rows stored beside the appends (new subjects') are
/// no one's when none was.
async fn finish_group<DB: sqlx::Database>(
    tx: sqlx::Transaction<'_, DB>,
    outcomes: &[AppendOutcome],
) -> Result<(), StoreError> {
    match outcomes.iter().any(Result::is_ok) {
        true => tx.commit().await?,
        false => tx.rollback().await?,
    }
    Ok(())
}

/// A sequence number or count as the stores' 64-bit signed integer.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `version, state` row as a snapshot.
fn snapshot_from<R: sqlx::Row>(row: &R) -> Result<Snapshot, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(Snapshot {
        version: row.try_get::<i64, _>("version")?.max(0) as u64,
        state: row.try_get("state")?,
    })
}

/// The commands that record events, each with the sequence number of its
/// first event, counting from `expected_version + 1`.
fn numbered(commands: &[NewCommand], expected_version: u64) -> Vec<(&NewCommand, u64)> {
    let mut next = expected_version + 1;
    commands
        .iter()
        .filter(|c| !c.events.is_empty())
        .map(|c| {
            let first = next;
            next += c.events.len() as u64;
            (c, first)
        })
        .collect()
}

/// Groups rows of `command_id, command_name, fingerprint` plus an event's
/// columns, ordered by command id and then sequence, into recorded commands.
fn grouped<R: sqlx::Row>(
    rows: &[R],
    recorded: fn(&R) -> Result<RecordedEvent, StoreError>,
) -> Result<Vec<RecordedCommand>, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let mut commands: Vec<RecordedCommand> = Vec::new();
    for row in rows {
        let command_id: String = row.try_get("command_id")?;
        let event = recorded(row)?;
        match commands.last_mut() {
            Some(last) if last.command_id == command_id => last.events.push(event),
            _ => commands.push(RecordedCommand {
                command_id,
                stream: StreamId::new(&event.aggregate, &event.id),
                name: row.try_get("command_name")?,
                fingerprint: row.try_get("fingerprint")?,
                events: vec![event],
            }),
        }
    }
    Ok(commands)
}

/// Opens the store a URL names (`postgres://...` or `sqlite://PATH`) and
/// applies its migrations.
pub async fn open(url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact(url)))
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
