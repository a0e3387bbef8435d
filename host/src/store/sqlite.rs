//! The embedded SQLite event store: a single file, created on first use.
//! All of its SQL is in this file.

use super::{EventStore, NewEvent, RecordedEvent, Snapshot, StreamId, appended};
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

const SELECT_SNAPSHOT: &str = "
    SELECT version, state FROM snapshots
    WHERE aggregate_name = ? AND aggregate_id = ? AND component_digest = ?";

// Keeps the latest: an older snapshot never replaces a newer one.
const UPSERT_SNAPSHOT: &str = "
    INSERT INTO snapshots (aggregate_name, aggregate_id, component_digest, version, state)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (aggregate_name, aggregate_id, component_digest) DO UPDATE
    SET version = excluded.version, state = excluded.state,
        created_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE snapshots.version < excluded.version";

/// An event store in one SQLite file. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite://PATH` URL names,
    /// and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = Self::connect_options(url)?;
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

impl SqliteStore {
    /// How the store connects: the file is created on first use; WAL lets
    /// readers work while one writer commits, and writers queue on the busy
    /// timeout instead of failing at once.
    pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
        Ok(SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10)))
    }
}

fn recorded(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let json = |column: &str| -> Result<serde_json::Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| StoreError::from(sqlx::Error::Decode(e.into())))
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
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(SELECT_SNAPSHOT)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(component_digest)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Snapshot {
                version: row.try_get::<i64, _>("version")?.max(0) as u64,
                state: row.try_get("state")?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        sqlx::query(UPSERT_SNAPSHOT)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(component_digest)
            .bind(i64::try_from(snapshot.version).unwrap_or(i64::MAX))
            .bind(&snapshot.state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
        let result = insert.build().fetch_all(&self.pool).await;
        appended(result, recorded, is_conflict, stream, expected_version)
    }
}
