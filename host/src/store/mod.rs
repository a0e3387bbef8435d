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

/// Where events live. Implementations must make `append` atomic and detect a
/// lost race by error code, never by message text.
#[async_trait]
pub trait EventStore: Send + Sync {
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
