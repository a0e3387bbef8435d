//! The event store: streams of events keyed by (aggregate name, aggregate id),
//! appended with an expected version. The unique key on the sequence number is
//! the concurrency guard; a lost race surfaces as [`StoreError::Conflict`].

mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::error::StoreError;
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;

/// One aggregate instance's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub aggregate: String,
    pub id: String,
}

impl StreamId {
    pub fn new(aggregate: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            aggregate: aggregate.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.aggregate, self.id)
    }
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// JSON text: command, correlation and causation ids, component version and digest.
    pub metadata: String,
}

/// An event as the store holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedEvent {
    /// Global position, increasing across all streams.
    pub position: i64,
    pub aggregate: String,
    pub id: String,
    /// 1-based, gapless within the stream.
    pub sequence: u64,
    pub name: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Guest state as of one version of a stream, written by one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The sequence number of the last event the state includes.
    pub version: u64,
    /// Bytes the guest's `snapshot` produced and its `restore` accepts.
    pub state: Vec<u8>,
}

/// Where events live. Implementations must make `append` atomic and detect a
/// lost race by error code, never by message text.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// The latest snapshot of a stream written by the component with this digest.
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Stores a snapshot unless one at the same or a later version exists.
    async fn save_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError>;

    /// The stream's events with sequence numbers greater than `after`, in order.
    async fn load(&self, stream: &StreamId, after: u64) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Appends `events` as sequence numbers `expected_version + 1 ..` in one
    /// transaction. Fails with [`StoreError::Conflict`] if any of those
    /// sequence numbers is taken.
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>, StoreError>;
}

/// The result of an `INSERT ... RETURNING` of events: the recorded events in
/// sequence order, or [`StoreError::Conflict`] when `is_conflict` recognises
/// the error (by its code) as a lost race on the stream key.
fn appended<Row>(
    result: Result<Vec<Row>, sqlx::Error>,
    recorded: fn(&Row) -> Result<RecordedEvent, StoreError>,
    is_conflict: fn(&sqlx::Error) -> bool,
    stream: &StreamId,
    expected_version: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    match result {
        Ok(rows) => {
            let mut events = rows.iter().map(recorded).collect::<Result<Vec<_>, _>>()?;
            events.sort_by_key(|e| e.sequence);
            Ok(events)
        }
        Err(e) if is_conflict(&e) => Err(StoreError::Conflict {
            aggregate: stream.aggregate.clone(),
            id: stream.id.clone(),
            expected_version,
        }),
        Err(e) => Err(e.into()),
    }
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
