//! The embedded SQLite event store: a single file, created on first use.
//! All of its SQL is in this file.

use super::{EventStore, NewEvent, RecordedEvent, StreamId};
use crate::error::StoreError;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use std::str::FromStr;
use std::time::Duration;

/// SQLITE_CONSTRAINT_UNIQUE, the extended result code of a unique violation.
const UNIQUE_VIOLATION: &str = "2067";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const SELECT_EVENTS: &str = "
    SELECT position, aggregate_name, aggregate_id, sequence_number, event_name,
           payload, metadata, created_at
    FROM events
    WHERE aggregate_name = ? AND aggregate_id = ? AND sequence_number > ?
    ORDER BY sequence_number";

const INSERT_EVENTS: &str = "INSERT INTO events (aggregate_name, aggregate_id, sequence_number, event_name, payload, metadata) ";

const RETURNING: &str = " RETURNING position, aggregate_name, aggregate_id, sequence_number, \
     event_name, payload, metadata, created_at";

/// An event store in one SQLite file. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite://PATH` URL names,
    /// and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers work while one writer commits; writers queue on
            // the busy timeout instead of failing at once.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        // Migrate on one connection first, so an unopenable file fails at once
        // with its real cause rather than as a pool timeout.
        let mut conn = SqliteConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }
}

fn recorded(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let json = |column: &str| -> Result<serde_json::Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Database(sqlx::Error::Decode(e.into())))
    };
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        aggregate: row.try_get("aggregate_name")?,
        id: row.try_get("aggregate_id")?,
        sequence: row.try_get::<i64, _>("sequence_number")?.max(0) as u64,
        name: row.try_get("event_name")?,
        payload: json("payload")?,
        metadata: json("metadata")?,
        created_at: row.try_get("created_at")?,
    })
}

fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(UNIQUE_VIOLATION))
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn load(&self, stream: &StreamId, after: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(SELECT_EVENTS)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recorded).collect()
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // One multi-row INSERT: a single statement is atomic on its own.
        let mut insert = QueryBuilder::<Sqlite>::new(INSERT_EVENTS);
        insert.push_values(events.iter().enumerate(), |mut row, (n, event)| {
            let sequence = expected_version + n as u64 + 1;
            row.push_bind(&stream.aggregate)
                .push_bind(&stream.id)
                .push_bind(i64::try_from(sequence).unwrap_or(i64::MAX))
                .push_bind(&event.name)
                .push_bind(&event.payload)
                .push_bind(&event.metadata);
        });
        insert.push(RETURNING);
        match insert.build().fetch_all(&self.pool).await {
            Ok(rows) => {
                let mut recorded = rows.iter().map(recorded).collect::<Result<Vec<_>, _>>()?;
                recorded.sort_by_key(|e| e.sequence);
                Ok(recorded)
            }
            Err(e) if is_conflict(&e) => Err(StoreError::Conflict {
                aggregate: stream.aggregate.clone(),
                id: stream.id.clone(),
                expected_version,
            }),
            Err(e) => Err(e.into()),
        }
    }
}
