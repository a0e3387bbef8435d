//! The PostgreSQL event store. All of its SQL is in this folder: the
//! streams, the log, checkpoints, the catalog and locks here, appends in
//! `append.rs`, projection views in `views.rs`.

mod append;
mod deployments;
mod views;

use super::deployments::Deployments;
use super::views::ViewStore;
use super::{
    AppendOutcome, AppendSignal, Catalog, Checkpoints, EventStore, GlobalLog, HorizonHolder,
    JsonText, Locks, POLL_INTERVAL, Polling, RecordedCommand, RecordedEvent, Snapshot,
    StreamAppend, StreamId, StreamLock, Streams, Violation, grouped, snapshot_from, to_i64,
};
use crate::error::StoreError;
use crate::subjects::NewSubjects;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::types::Json;
use sqlx::{Connection, Row};
use std::str::FromStr;
use std::time::Duration;

/// A pooled connection idle this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// How long a request waits for a connection from the pool: every one
/// busy, or the server refusing new ones (its `max_connections` used up).
/// Past it the request fails at once as unavailable (503 over HTTP),
/// rather than hold its caller while nothing can be done.
pub const POOL_WAIT: Duration = Duration::from_secs(2);

/// The unique constraint whose violation means "someone appended first".
const STREAM_KEY: &str = "events_stream_sequence_key";
/// The unique constraint whose violation means "this command is recorded".
const COMMAND_KEY: &str = "commands_pkey";
/// SQLSTATE unique_violation.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE lock_not_available: `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const SELECT_EVENTS: &str = "
    SELECT position, aggregate_name, aggregate_id, sequence_number, event_name,
           payload, metadata,
           to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at
    FROM events
    WHERE aggregate_name = $1 AND aggregate_id = $2 AND sequence_number > $3
    ORDER BY sequence_number
    LIMIT $4";

/// Every stream's events after a position, in position order, below the
/// horizon: positions of transactions older than the oldest one still
/// running. Every such transaction has ended, and every later one has a
/// larger id, so nothing can become visible below what this returns. The
/// horizon and the rows come from one statement, hence one snapshot.
///
/// The horizon is compared as `position + 0`, which no index serves: as an
/// index bound, a table without statistics yet (a store just filled) makes
/// the planner expect a handful of rows and fetch every row after `$1`, then
/// sort them, for each page (80 ms a page at 100,000 events). Scanning the
/// key in order from `$1` and stopping at the limit is right in every case.
const SELECT_ALL: &str = "
    SELECT position, aggregate_name, aggregate_id, sequence_number, event_name,
           payload, metadata,
           to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at
    FROM events
    WHERE position > $1
      AND position + 0 < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)
      AND ($2::text IS NULL OR aggregate_name = $2)
    ORDER BY position
    LIMIT $3";

// The backend whose transaction holds the horizon `SELECT_ALL` reads
// below: the oldest with a transaction id (one that has written), which
// is the snapshot's xmin. Only its own database's backends are visible to
// a role without pg_read_all_stats; others' fields are NULL.
const SELECT_HORIZON_HOLDER: &str = "
    SELECT pid, state, application_name,
           COALESCE(EXTRACT(EPOCH FROM now() - xact_start), 0)::float8 AS held_seconds
    FROM pg_stat_activity
    WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
    ORDER BY age(backend_xid) DESC
    LIMIT 1";

const SELECT_COMMANDS: &str = "
    SELECT c.command_id, c.command_name, c.fingerprint,
           e.position, e.aggregate_name, e.aggregate_id, e.sequence_number, e.event_name,
           e.payload, e.metadata,
           to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at
    FROM commands c
    JOIN events e ON e.aggregate_name = c.aggregate_name AND e.aggregate_id = c.aggregate_id
                 AND e.sequence_number >= c.first_sequence
                 AND e.sequence_number < c.first_sequence + c.event_count
    WHERE c.command_id = ANY($1)
    ORDER BY c.command_id, e.sequence_number";

// A session-level advisory lock per stream (a 64-bit hash of its name; a
// collision only makes two streams take turns). Held by the connection, so
// it ends with the connection, whatever happens to the process.
const LOCK_STREAM: &str = "SELECT pg_advisory_lock(hashtextextended($1, 0))";

// Every stream has an event 1 (sequence numbers are gapless from 1), so its
// rows list the streams, one each, in the stream key's order.
const EVENT_NAMES: &str =
    "SELECT DISTINCT event_name FROM events WHERE aggregate_name = $1 ORDER BY event_name";
const COUNT_STREAMS: &str =
    "SELECT count(*) FROM events WHERE aggregate_name = $1 AND sequence_number = 1";
const STREAM_IDS: &str = "
    SELECT aggregate_id FROM events
    WHERE aggregate_name = $1 AND sequence_number = 1 AND aggregate_id > $2
    ORDER BY aggregate_id
    LIMIT $3";
const SAMPLE_STREAM_IDS: &str = "
    SELECT aggregate_id FROM events
    WHERE aggregate_name = $1 AND sequence_number = 1
    ORDER BY random()
    LIMIT $2";

const SELECT_CHECKPOINT: &str = "SELECT position FROM checkpoints WHERE name = $1";
const UPSERT_CHECKPOINT: &str = "
    INSERT INTO checkpoints (name, position) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()";

const SELECT_SNAPSHOT: &str = "
    SELECT version, state FROM snapshots
    WHERE aggregate_name = $1 AND aggregate_id = $2 AND component_digest = $3";

// Keeps the latest: an older snapshot never replaces a newer one.
const UPSERT_SNAPSHOT: &str = "
    INSERT INTO snapshots (aggregate_name, aggregate_id, component_digest, version, state)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (aggregate_name, aggregate_id, component_digest) DO UPDATE
    SET version = EXCLUDED.version, state = EXCLUDED.state, created_at = now()
    WHERE snapshots.version < EXCLUDED.version";

/// After a snapshot is saved: other component versions' snapshots of the
/// stream at or below its version will never be read again.
const PRUNE_SNAPSHOTS: &str = "
    DELETE FROM snapshots
    WHERE aggregate_name = $1 AND aggregate_id = $2 AND component_digest <> $3 AND version <= $4";

/// The channel a host notifies after its appends commit.
const APPENDED_CHANNEL: &str = "eshost_events";

/// At most one notification per this long from one host: appends in
/// between share it.
const NOTIFY_EVERY: Duration = Duration::from_millis(10);

/// An event store in PostgreSQL. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Tells the notifier task an append committed (capacity 1, so appends
    /// waiting for the next notification are one message).
    appended: tokio::sync::mpsc::Sender<()>,
}

impl PostgresStore {
    /// After a forget: nothing to do. A dump never holds deleted rows; the
    /// table files keep them until VACUUM reclaims the space (decision
    /// record 0056).
    pub(crate) async fn after_forget(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Connects and applies the migrations. Safe to run from many processes at
    /// once: sqlx serialises migrations with an advisory lock.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = Self::connect_options(url)?;
        // One plain connection first: an unreachable server fails at once with
        // its real cause, instead of a pool timing out 30 s later.
        let mut conn = PgConnection::connect_with(&options).await?;
        if !schema_is_current(&mut conn).await? {
            MIGRATOR.run(&mut conn).await?;
        }
        conn.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(POOL_WAIT)
            // sqlx pings every connection it hands out by default: one
            // more round trip for every statement, 16-20% of many-items'
            // rate. A connection in steady use has just proved itself; one
            // that sat idle (the server may have dropped it) is pinged.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        let (appended, notifier) = tokio::sync::mpsc::channel(1);
        tokio::spawn(notify_appends(pool.clone(), notifier));
        Ok(Self { pool, appended })
    }

    /// The connection settings a URL names. libpq's default `sslmode`,
    /// `prefer`, encrypts whenever the server offers TLS; over loopback that
    /// protects nothing and costs about a fifth of the commit rate, so there
    /// the default is plain. A URL that names `sslmode` gets what it names.
    pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        if !url.contains("sslmode=") && is_loopback(options.get_host()) {
            return Ok(options.ssl_mode(PgSslMode::Disable));
        }
        Ok(options)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Sends `NOTIFY eshost_events` after appends commit, at most once per
/// [`NOTIFY_EVERY`], until the store is dropped. Outside the appends'
/// transactions: a NOTIFY inside one would make every commit take the
/// notification queue's lock in turn.
async fn notify_appends(pool: PgPool, mut appended: tokio::sync::mpsc::Receiver<()>) {
    while appended.recv().await.is_some() {
        let notified = sqlx::query("SELECT pg_notify($1, '')")
            .bind(APPENDED_CHANNEL)
            .execute(&pool)
            .await;
        if let Err(e) = notified {
            // Followers poll as well; a lost notification only delays them.
            tracing::debug!(error = %e, "could not notify followers of an append");
        }
        tokio::time::sleep(NOTIFY_EVERY).await;
    }
}

/// Wakes a follower on `NOTIFY eshost_events`.
struct Listening(sqlx::postgres::PgListener);

#[async_trait]
impl AppendSignal for Listening {
    async fn wait(&mut self, max: Duration) {
        match tokio::time::timeout(max, self.0.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                // The listener reconnects on its next call; meanwhile poll.
                tracing::debug!(error = %e, "listening for appends failed");
                tokio::time::sleep(max.min(POLL_INTERVAL)).await;
            }
        }
    }
}

/// True when every migration this build carries is applied, unchanged.
/// Then the migrator is not run: it would take its lock and, on every
/// start, draw a notice that its table already exists.
async fn schema_is_current(conn: &mut PgConnection) -> Result<bool, StoreError> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(&mut *conn)
        .await?;
    if table.is_none() {
        return Ok(false);
    }
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await?;
    Ok(MIGRATOR.iter().all(|migration| {
        applied.iter().any(|(version, checksum)| {
            *version == migration.version && **checksum == *migration.checksum
        })
    }))
}

/// A host name that never leaves the machine: loopback, or a Unix socket
/// directory.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn recorded(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        aggregate: row.try_get("aggregate_name")?,
        id: row.try_get("aggregate_id")?,
        sequence: row.try_get::<i64, _>("sequence_number")?.max(0) as u64,
        name: row.try_get("event_name")?,
        payload: row.try_get::<Json<JsonText>, _>("payload")?.0,
        metadata: row.try_get("metadata")?,
        created_at: row.try_get("created_at")?,
    })
}

fn violation(error: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    if db.code().as_deref() != Some(UNIQUE_VIOLATION) {
        return None;
    }
    match db.constraint() {
        Some(STREAM_KEY) => Some(Violation::StreamKey),
        Some(COMMAND_KEY) => Some(Violation::CommandKey),
        _ => None,
    }
}

#[async_trait]
impl EventStore for PostgresStore {
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
impl Streams for PostgresStore {
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
            .bind(limit.map(to_i64))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recorded).collect()
    }

    /// In the common case no key is taken, and the whole group is one
    /// statement (so one round trip, its commit included): all of it lands
    /// or none. Only when a key is taken is it sent again, row by row
    /// checked (see `append_undoing`). Rows go in sorted by key, so two
    /// groups touching the same streams wait on each other in one order
    /// and never deadlock.
    async fn append_group(
        &self,
        appends: &[StreamAppend<'_>],
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_rows(appends, &NewSubjects::default()).await
    }

    async fn append_group_with_subjects(
        &self,
        appends: &[StreamAppend<'_>],
        subjects: &NewSubjects<'_>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_rows(appends, subjects).await
    }

    async fn find_commands(
        &self,
        command_ids: &[&str],
    ) -> Result<Vec<RecordedCommand>, StoreError> {
        if command_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(SELECT_COMMANDS)
            .bind(command_ids)
            .fetch_all(&self.pool)
            .await?;
        grouped(&rows, recorded)
    }
}

#[async_trait]
impl GlobalLog for PostgresStore {
    async fn tail_start(&self, count: u64, aggregate: Option<&str>) -> Result<i64, StoreError> {
        let before: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM events WHERE ($2::text IS NULL OR aggregate_name = $2) \
             ORDER BY position DESC OFFSET $1 LIMIT 1",
        )
        .bind(to_i64(count))
        .bind(aggregate)
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
            .bind(to_i64(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(recorded).collect()
    }

    async fn append_signal(&self) -> Box<dyn AppendSignal> {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
            listener.listen(APPENDED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => Box::new(Listening(listener)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for appends; polling instead");
                Box::new(Polling)
            }
        }
    }

    async fn horizon_holder(&self) -> Result<Option<HorizonHolder>, StoreError> {
        let row = sqlx::query(SELECT_HORIZON_HOLDER)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| HorizonHolder {
            pid: row.get("pid"),
            held_seconds: row.get("held_seconds"),
            state: row.get::<Option<String>, _>("state").unwrap_or_default(),
            application: row
                .get::<Option<String>, _>("application_name")
                .unwrap_or_default(),
        }))
    }
}

#[async_trait]
impl Checkpoints for PostgresStore {
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
impl Catalog for PostgresStore {
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
impl Locks for PostgresStore {
    async fn lock_stream(
        &self,
        stream: &StreamId,
        wait: Duration,
    ) -> Result<StreamLock, StoreError> {
        // A connection of its own, out of the pool: dropping it closes it,
        // which releases the lock.
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{}ms", wait.as_millis().max(1)))
            .execute(&mut conn)
            .await?;
        let key = format!("{}\u{1f}{}", stream.aggregate, stream.id);
        match sqlx::query(LOCK_STREAM).bind(key).execute(&mut conn).await {
            Ok(_) => Ok(StreamLock::holding(conn)),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                Err(StoreError::Lock {
                    stream: stream.to_string(),
                    reason: format!("another process held the stream for over {wait:?}"),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

crate::reactions::impl_reactions!(PostgresStore, sqlx::Postgres);
crate::subjects::impl_subjects!(PostgresStore, sqlx::Postgres);
