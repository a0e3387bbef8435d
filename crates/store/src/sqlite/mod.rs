//! The embedded SQLite event store: a single file, created on first use.
//! All of its SQL is in this folder: the streams, the log, checkpoints,
//! the catalog and locks here, projection views in `views.rs`.

mod deployments;
mod views;

use super::deployments::Deployments;
use super::views::ViewStore;
use super::{
    AppendOutcome, Catalog, Checkpoints, EventStore, GlobalLog, JsonText, Locks, RecordedCommand,
    RecordedEvent, Snapshot, StreamAppend, StreamId, StreamLock, Streams, Violation, append_error,
    appended, grouped, numbered, snapshot_from, to_i64,
};
use crate::error::StoreError;
use crate::subjects::NewSubjects;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY, the extended
/// result codes of a key violation. Which key it was follows from which
/// statement failed: the events' (the stream key is their only unique key)
/// or the commands'.
const KEY_VIOLATIONS: [&str; 2] = ["2067", "1555"];

/// Rows per multi-row INSERT, well under SQLite's limit of 32,766 bound
/// parameters per statement (six or seven per row here).
const ROWS_PER_INSERT: usize = 1_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

const SELECT_EVENTS: &str = "
    SELECT position, aggregate_name, aggregate_id, sequence_number, event_name,
           payload, metadata, created_at
    FROM events
    WHERE aggregate_name = ? AND aggregate_id = ? AND sequence_number > ?
    ORDER BY sequence_number
    LIMIT ?";

// One writer at a time, and positions numbered inside its transaction:
// the commit order is the position order, so every reader may read all.
const SELECT_ALL: &str = "
    SELECT position, aggregate_name, aggregate_id, sequence_number, event_name,
           payload, metadata, created_at
    FROM events
    WHERE position > ? AND (? IS NULL OR aggregate_name = ?)
    ORDER BY position
    LIMIT ?";

const INSERT_EVENTS: &str = "INSERT INTO events (aggregate_name, aggregate_id, sequence_number, event_name, payload, metadata, subject) ";

const INSERT_COMMANDS: &str = "INSERT INTO commands (command_id, aggregate_name, aggregate_id, \
     command_name, fingerprint, first_sequence, event_count) ";

const SELECT_COMMANDS: &str = "
    SELECT c.command_id, c.command_name, c.fingerprint,
           e.position, e.aggregate_name, e.aggregate_id, e.sequence_number, e.event_name,
           e.payload, e.metadata, e.created_at
    FROM commands c
    JOIN events e ON e.aggregate_name = c.aggregate_name AND e.aggregate_id = c.aggregate_id
                 AND e.sequence_number >= c.first_sequence
                 AND e.sequence_number < c.first_sequence + c.event_count
    WHERE c.command_id IN ";

const RETURNING: &str = " RETURNING position, aggregate_name, aggregate_id, sequence_number, \
     event_name, payload, metadata, created_at";

// Every stream has an event 1 (sequence numbers are gapless from 1), so its
// rows list the streams, one each, in the stream key's order.
const EVENT_NAMES: &str =
    "SELECT DISTINCT event_name FROM events WHERE aggregate_name = ? ORDER BY event_name";
const COUNT_STREAMS: &str =
    "SELECT count(*) FROM events WHERE aggregate_name = ? AND sequence_number = 1";
const STREAM_IDS: &str = "
    SELECT aggregate_id FROM events
    WHERE aggregate_name = ? AND sequence_number = 1 AND aggregate_id > ?
    ORDER BY aggregate_id
    LIMIT ?";
const SAMPLE_STREAM_IDS: &str = "
    SELECT aggregate_id FROM events
    WHERE aggregate_name = ? AND sequence_number = 1
    ORDER BY random()
    LIMIT ?";

const SELECT_CHECKPOINT: &str = "SELECT position FROM checkpoints WHERE name = ?";
const UPSERT_CHECKPOINT: &str = "
    INSERT INTO checkpoints (name, position) VALUES (?, ?)
    ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

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

/// After a snapshot is saved: other component versions' snapshots of the
/// stream at or below its version will never be read again.
const PRUNE_SNAPSHOTS: &str = "
    DELETE FROM snapshots
    WHERE aggregate_name = ? AND aggregate_id = ? AND component_digest <> ? AND version <= ?";

/// An event store in one SQLite file. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The file whose lock gives processes their turns (see `lock_stream`);
    /// none for an in-memory database.
    lock_file: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database a `sqlite://PATH` URL names,
    /// and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = Self::connect_options(url)?;
        // sqlx names an in-memory database with a URI of its own, so tell
        // it by the URL.
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Self::in_memory(options).await;
        }
        let file = options.get_filename();
        // Migrate on one connection first, so an unopenable file fails at once
        // with its real cause rather than as a pool timeout.
        let mut conn = SqliteConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        let mut lock_file = file.as_os_str().to_owned();
        lock_file.push("-eshost.lock");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            lock_file: Some(PathBuf::from(lock_file)),
        })
    }

    /// `sqlite::memory:`: every connection to it is a database of its own,
    /// so the store keeps exactly one, open for its whole life, and
    /// migrates that one. Nothing outlives the process: for tests and
    /// trials.
    async fn in_memory(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            lock_file: None,
        })
    }
}

impl SqliteStore {
    /// How the store connects: the file is created on first use; WAL lets
    /// readers work while one writer commits, and writers queue on the busy
    /// timeout instead of failing at once. Deleted content is overwritten
    /// with zeros (`secure_delete`), so a forgotten subject's snapshots do
    /// not linger in the file's free pages.
    pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
        Ok(SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("secure_delete", "on")
            .busy_timeout(Duration::from_secs(10)))
    }

    /// After a forget: copies the write-ahead log into the file and
    /// empties it, so the deleted pages' old images are gone from it too.
    /// Best effort: a reader in the middle of a long read holds the log
    /// back, and the next forget or checkpoint empties it.
    pub(crate) async fn after_forget(&self) -> Result<(), StoreError> {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        if busy != 0 {
            tracing::warn!(
                "a reader held the write-ahead log back; it is emptied at the next checkpoint"
            );
        }
        Ok(())
    }
}

fn recorded(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let decode_error = |e: serde_json::Error| StoreError::from(sqlx::Error::Decode(e.into()));
    let metadata: String = row.try_get("metadata")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        aggregate: row.try_get("aggregate_name")?,
        id: row.try_get("aggregate_id")?,
        sequence: row.try_get::<i64, _>("sequence_number")?.max(0) as u64,
        name: row.try_get("event_name")?,
        payload: JsonText::new(row.try_get("payload")?).map_err(decode_error)?,
        metadata: serde_json::from_str(&metadata).map_err(decode_error)?,
        created_at: row.try_get("created_at")?,
    })
}

impl SqliteStore {
    /// A group's appends, with `subjects` stored first in the same
    /// transaction; each append behind a savepoint of its own, so one that
    /// meets a key fails alone.
    async fn append_with(
        &self,
        appends: &[StreamAppend<'_>],
        subjects: &NewSubjects<'_>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        if appends.iter().all(|a| a.events() == 0) {
            return Ok(appends.iter().map(|_| Ok(Vec::new())).collect());
        }
        let mut tx = self.pool.begin().await?;
        Self::insert_subjects(&mut tx, subjects).await?;
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            let mut savepoint = Connection::begin(&mut *tx).await?;
            match insert_stream(&mut savepoint, append).await {
                Ok(events) => {
                    savepoint.commit().await?;
                    outcomes.push(Ok(events));
                }
                Err(key @ (StoreError::Conflict { .. } | StoreError::DuplicateCommand { .. })) => {
                    savepoint.rollback().await?;
                    outcomes.push(Err(key));
                }
                // The transaction rolls back when dropped.
                Err(other) => return Err(other),
            }
        }
        crate::finish_group(tx, &outcomes).await?;
        Ok(outcomes)
    }
}

fn is_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| KEY_VIOLATIONS.contains(&code.as_ref())))
}

#[async_trait]
impl EventStore for SqliteStore {
    fn streams(&self) -> &dyn Streams {
        self
    }

    fn log(&self) -> &dyn GlobalLog {
        self
    }

    fn checkpoints(&self) -> &dyn Checkpoints {
        self
    }

    fn catalog(&self) -> &dyn Catalog {
        self
    }

    fn locks(&self) -> &dyn Locks {
        self
    }

    fn views(&self) -> &dyn ViewStore {
        self
    }

    fn deployments(&self) -> &dyn Deployments {
        self
    }

    fn reactions(&self) -> &dyn crate::Reactions {
        self
    }

    fn subjects(&self) -> &dyn crate::Subjects {
        self
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl Streams for SqliteStore {
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
        row.as_ref().map(snapshot_from).transpose()
    }

    async fn save_snapshot(
        &self,
        stream: &StreamId,
        component_digest: &str,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(UPSERT_SNAPSHOT)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(component_digest)
            .bind(to_i64(snapshot.version))
            .bind(&snapshot.state)
            .execute(&mut *tx)
            .await?;
        sqlx::query(PRUNE_SNAPSHOTS)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(component_digest)
            .bind(to_i64(snapshot.version))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_page(
        &self,
        stream: &StreamId,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(SELECT_EVENTS)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(to_i64(after))
            // SQLite reads a negative limit as none.
            .bind(limit.map_or(-1, to_i64))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recorded).collect()
    }

    /// Each stream's rows go in under a savepoint: a stream that meets a
    /// key is rolled back to it alone, and the others commit together.
    async fn append_group(
        &self,
        appends: &[StreamAppend<'_>],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_with(appends, &NewSubjects::default()).await
    }

    async fn append_group_with_subjects(
        &self,
        appends: &[StreamAppend<'_>],
        subjects: &NewSubjects<'_>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_with(appends, subjects).await
    }

    async fn find_commands(
        &self,
        command_ids: &[&str],
    ) -> Result<Vec<RecordedCommand>, StoreError> {
        let mut found = Vec::new();
        for chunk in command_ids.chunks(ROWS_PER_INSERT) {
            let mut select = QueryBuilder::<Sqlite>::new(SELECT_COMMANDS);
            select.push("(");
            let mut ids = select.separated(", ");
            for id in chunk {
                ids.push_bind(*id);
            }
            select.push(") ORDER BY c.command_id, e.sequence_number");
            let rows = select.build().fetch_all(&self.pool).await?;
            found.extend(grouped(&rows, recorded)?);
        }
        Ok(found)
    }
}

#[async_trait]
impl GlobalLog for SqliteStore {
    async fn tail_start(&self, count: u64, aggregate: Option<&str>) -> Result<i64, StoreError> {
        let before: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM events WHERE (?1 IS NULL OR aggregate_name = ?1) \
             ORDER BY position DESC LIMIT 1 OFFSET ?2",
        )
        .bind(aggregate)
        .bind(to_i64(count))
        .fetch_optional(&self.pool)
        .await?;
        Ok(before.unwrap_or(0))
    }

    async fn read_all(
        &self,
        after: i64,
        aggregate: Option<&str>,
        limit: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(SELECT_ALL)
            .bind(after)
            .bind(aggregate)
            .bind(aggregate)
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recorded).collect()
    }
}

#[async_trait]
impl Checkpoints for SqliteStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(SELECT_CHECKPOINT)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn save_checkpoint(&self, name: &str, position: i64) -> Result<(), StoreError> {
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(name)
            .bind(position)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Catalog for SqliteStore {
    async fn event_names(&self, aggregate: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(EVENT_NAMES)
            .bind(aggregate)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn count_streams(&self, aggregate: &str) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(COUNT_STREAMS)
            .bind(aggregate)
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
    }

    async fn stream_ids(
        &self,
        aggregate: &str,
        after: &str,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(STREAM_IDS)
            .bind(aggregate)
            .bind(after)
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn sample_stream_ids(
        &self,
        aggregate: &str,
        count: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(SAMPLE_STREAM_IDS)
            .bind(aggregate)
            .bind(to_i64(count))
            .fetch_all(&self.pool)
            .await?)
    }
}

#[async_trait]
impl Locks for SqliteStore {
    /// One lock for the whole file (`PATH-eshost.lock`, an OS file lock):
    /// SQLite has one writer at a time anyway, so finer locks would buy
    /// little. Polled, so no thread waits on it.
    async fn lock_stream(
        &self,
        stream: &StreamId,
        wait: Duration,
    ) -> Result<StreamLock, StoreError> {
        let Some(path) = &self.lock_file else {
            return Ok(StreamLock::holding(()));
        };
        let failed = |reason: String| StoreError::Lock {
            stream: stream.to_string(),
            reason,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(StreamLock::holding(file)),
                Err(std::fs::TryLockError::WouldBlock)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(failed(format!(
                        "another process held {} for over {wait:?}",
                        path.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(failed(format!("cannot lock {}: {e}", path.display())));
                }
            }
        }
    }
}

/// One stream's rows, inserted in the caller's transaction: events first
/// (the stream key is the concurrency guard), then the command ids. A
/// violated key is a typed error, and the caller rolls back.
async fn insert_stream(
    tx: &mut SqliteConnection,
    append: &StreamAppend<'_>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let StreamAppend {
        stream,
        expected_version,
        commands,
    } = *append;
    let numbered = numbered(commands, expected_version);
    let events: Vec<_> = numbered.iter().flat_map(|(c, _)| &c.events).collect();
    let mut rows = Vec::with_capacity(events.len());
    for (chunk_index, chunk) in events.chunks(ROWS_PER_INSERT).enumerate() {
        let first = expected_version + (chunk_index * ROWS_PER_INSERT) as u64 + 1;
        let mut insert = QueryBuilder::<Sqlite>::new(INSERT_EVENTS);
        insert.push_values(chunk.iter().enumerate(), |mut row, (n, event)| {
            row.push_bind(&stream.aggregate)
                .push_bind(&stream.id)
                .push_bind(to_i64(first + n as u64))
                .push_bind(&event.name)
                .push_bind(&event.payload)
                .push_bind(&event.metadata)
                .push_bind(&event.subject);
        });
        insert.push(RETURNING);
        let inserted = insert.build().fetch_all(&mut *tx).await;
        let key = |e: &sqlx::Error| is_key_violation(e).then_some(Violation::StreamKey);
        rows.extend(appended(inserted, recorded, key, stream, expected_version)?);
    }
    for chunk in numbered.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(INSERT_COMMANDS);
        insert.push_values(chunk, |mut row, (command, first)| {
            row.push_bind(&command.command_id)
                .push_bind(&stream.aggregate)
                .push_bind(&stream.id)
                .push_bind(&command.name)
                .push_bind(&command.fingerprint)
                .push_bind(to_i64(*first))
                .push_bind(to_i64(command.events.len() as u64));
        });
        let key = |e: &sqlx::Error| is_key_violation(e).then_some(Violation::CommandKey);
        insert
            .build()
            .execute(&mut *tx)
            .await
            .map_err(|e| append_error(e, key, stream, expected_version))?;
    }
    Ok(rows)
}

crate::reactions::impl_reactions!(SqliteStore, sqlx::Sqlite);
crate::subjects::impl_subjects!(SqliteStore, sqlx::Sqlite);
