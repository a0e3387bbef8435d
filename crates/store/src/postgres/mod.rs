//! The PostgreSQL event store. All of its SQL is in this folder: the
//! streams, the log, checkpoints, the catalog and locks here, projection
//! views in `views.rs`.

mod views;

use super::views::ViewStore;
use super::{
    AppendOutcome, AppendSignal, Catalog, Checkpoints, EventStore, GlobalLog, HorizonHolder,
    JsonText, Locks, POLL_INTERVAL, Polling, RecordedCommand, RecordedEvent, Snapshot,
    StreamAppend, StreamId, StreamLock, Streams, Violation, grouped, numbered, snapshot_from,
    to_i64,
};
use crate::error::{DatabaseFailure, StoreError};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::types::Json;
use sqlx::{Connection, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// A group's rows, as the column arrays its statements bind: streams in
/// key order, commands in id order.
#[derive(Default)]
struct GroupRows<'a> {
    aggregates: Vec<&'a str>,
    ids: Vec<&'a str>,
    sequences: Vec<i64>,
    names: Vec<&'a str>,
    payloads: Vec<&'a str>,
    metadata: Vec<&'a str>,
    command_ids: Vec<&'a str>,
    command_aggregates: Vec<&'a str>,
    command_streams: Vec<&'a str>,
    command_names: Vec<&'a str>,
    fingerprints: Vec<&'a str>,
    firsts: Vec<i64>,
    counts: Vec<i32>,
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl<'a> GroupRows<'a> {
    fn sorted(appends: &[StreamAppend<'a>]) -> Self {
        let mut appends: Vec<&StreamAppend<'a>> = appends.iter().collect();
        appends.sort_by_key(|a| (&a.stream.aggregate, &a.stream.id));
        let mut rows = Self::default();
        let mut commands = Vec::new();
        for append in appends {
            let stream = append.stream;
            for (command, first) in numbered(append.commands, append.expected_version) {
                commands.push((command, stream, first));
                for (sequence, event) in (first..).zip(&command.events) {
                    rows.aggregates.push(&stream.aggregate);
                    rows.ids.push(&stream.id);
                    rows.sequences.push(to_i64(sequence));
                    rows.names.push(&event.name);
                    rows.payloads.push(&event.payload);
                    rows.metadata.push(&event.metadata);
                }
            }
        }
        commands.sort_by_key(|(command, ..)| &command.command_id);
        for (command, stream, first) in commands {
            rows.command_ids.push(&command.command_id);
            rows.command_aggregates.push(&stream.aggregate);
            rows.command_streams.push(&stream.id);
            rows.command_names.push(&command.name);
            rows.fingerprints.push(&command.fingerprint);
            rows.firsts.push(to_i64(first));
            rows.counts
                .push(i32::try_from(command.events.len()).unwrap_or(i32::MAX));
        }
        rows
    }

    /// Binds the events' columns, in the order the statements number them.
    fn bind_events<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.aggregates)
            .bind(&self.ids)
            .bind(&self.sequences)
            .bind(&self.names)
            .bind(&self.payloads)
            .bind(&self.metadata)
    }

    /// Binds the commands' columns, in the order the statements number them.
    fn bind_commands<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.command_ids)
            .bind(&self.command_aggregates)
            .bind(&self.command_streams)
            .bind(&self.command_names)
            .bind(&self.fingerprints)
            .bind(&self.firsts)
            .bind(&self.counts)
    }
}

/// Recorded events by stream: (aggregate, id) to events.
type ByStream<'a> = HashMap<(&'a str, &'a str), Vec<RecordedEvent>>;

impl<'a> GroupRows<'a> {
    /// The events a group statement inserted, by stream, from its one row:
    /// each event is what was sent, at the position its transaction and
    /// its place in the statement give it.
    fn recorded(&self, reply: &PgRow) -> Result<ByStream<'a>, StoreError> {
        let xid: i64 = reply.try_get("xid")?;
        let inserted: i64 = reply.try_get("events")?;
        let created_at: String = reply.try_get("created_at")?;
        if usize::try_from(inserted).ok() != Some(self.names.len()) {
            return Err(unexpected(format!(
                "{inserted} events inserted of {} sent",
                self.names.len()
            )));
        }
        let mut by_stream = ByStream::new();
        for n in 0..self.names.len() {
            self.push_recorded(
                &mut by_stream,
                n,
                (xid << POSITION_INDEX_BITS) + n as i64 + 1,
                &created_at,
            )?;
        }
        Ok(by_stream)
    }

    /// The events a statement returned one row each (position and time),
    /// by stream: rows it skipped are missing.
    fn recorded_rows(&self, inserted: &[PgRow]) -> Result<ByStream<'a>, StoreError> {
        let mut by_stream = ByStream::new();
        for row in inserted {
            let position: i64 = row.try_get("position")?;
            let index = (position & ((1 << POSITION_INDEX_BITS) - 1)) as usize;
            let n = index.checked_sub(1).filter(|&n| n < self.names.len());
            let Some(n) = n else {
                return Err(unexpected(format!("position {position} names no row sent")));
            };
            let created_at: String = row.try_get("created_at")?;
            self.push_recorded(&mut by_stream, n, position, &created_at)?;
        }
        Ok(by_stream)
    }

    /// Event `n` as sent, recorded at `position`.
    fn push_recorded(
        &self,
        by_stream: &mut ByStream<'a>,
        n: usize,
        position: i64,
        created_at: &str,
    ) -> Result<(), StoreError> {
        let payload = JsonText::new(self.payloads[n].to_string())
            .map_err(|e| unexpected(format!("a payload sent is not JSON: {e}")))?;
        let metadata = serde_json::from_str(self.metadata[n])
            .map_err(|e| unexpected(format!("metadata sent is not JSON: {e}")))?;
        by_stream
            .entry((self.aggregates[n], self.ids[n]))
            .or_default()
            .push(RecordedEvent {
                position,
                aggregate: self.aggregates[n].to_string(),
                id: self.ids[n].to_string(),
                sequence: self.sequences[n].max(0) as u64,
                name: self.names[n].to_string(),
                payload,
                metadata,
                created_at: created_at.to_string(),
            });
        Ok(())
    }
}

/// A stream's events out of [`GroupRows::recorded`], in sequence order.
fn take_stream<'a>(by_stream: &mut ByStream<'a>, stream: &'a StreamId) -> Vec<RecordedEvent> {
    let mut events = by_stream
        .remove(&(stream.aggregate.as_str(), stream.id.as_str()))
        .unwrap_or_default();
    events.sort_by_key(|e| e.sequence);
    events
}

/// A reply that does not fit what was sent.
fn unexpected(message: String) -> StoreError {
    StoreError::Database {
        failure: DatabaseFailure::Permanent,
        message,
    }
}

/// The unique constraint whose violation means "someone appended first".
/// How long a request waits for a connection from the pool: every one
/// busy, or the server refusing new ones (its `max_connections` used up).
/// Past it the request fails at once as unavailable (503 over HTTP),
/// rather than hold its caller while nothing can be done.
pub const POOL_WAIT: Duration = Duration::from_secs(2);

const STREAM_KEY: &str = "events_stream_sequence_key";
/// The unique constraint whose violation means "this command is recorded".
const COMMAND_KEY: &str = "commands_pkey";
/// SQLSTATE unique_violation.
const UNIQUE_VIOLATION: &str = "23505";
/// Bits of a position that number an append's events: the rest is the
/// transaction id, so one append holds fewer than 2^20 events.
const POSITION_INDEX_BITS: u32 = 20;
const MAX_EVENTS_PER_APPEND: usize = 1 << POSITION_INDEX_BITS;
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

// A group's append (one stream or many) as one statement, so one implicit
// transaction: the commands and all their events land, or nothing does. A
// data-modifying WITH runs to completion whether or not the main query
// reads it. An event's position is its transaction's id shifted left by
// POSITION_INDEX_BITS plus its index in the append (see SELECT_ALL and
// decision record 0028, "Global order").
//
// The reply is one row, however many events: the transaction id, the time
// every row was given (created_at defaults to now(), the transaction's
// start) and how many events went in. The rest of each event is what was
// sent (see `GroupRows::recorded`).
const INSERT_GROUP: &str = "
    WITH recorded_commands AS (
        INSERT INTO commands (command_id, aggregate_name, aggregate_id, command_name,
                              fingerprint, first_sequence, event_count)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::bigint[], $7::int[])
    ), recorded_events AS (
        INSERT INTO events (position, aggregate_name, aggregate_id, sequence_number,
                            event_name, payload, metadata)
        SELECT (pg_current_xact_id()::text::bigint << 20) + e.n,
               e.aggregate_name, e.aggregate_id, e.sequence_number, e.event_name,
               e.payload::json, e.metadata::json
        FROM UNNEST($8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[],
                    $13::text[])
             WITH ORDINALITY AS e(aggregate_name, aggregate_id, sequence_number, event_name,
                                  payload, metadata, n)
        RETURNING 1
    )
    SELECT pg_current_xact_id()::text::bigint AS xid,
           to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at,
           (SELECT count(*) FROM recorded_events) AS events";

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

// A group's statements when a key is taken (see `append_undoing`): a taken
// key skips its row, and the rows returned show which went in. Positions as
// in INSERT_GROUP.
const INSERT_GROUP_COMMANDS: &str = "
    INSERT INTO commands (command_id, aggregate_name, aggregate_id, command_name,
                          fingerprint, first_sequence, event_count)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[], $7::int[])
    ON CONFLICT (command_id) DO NOTHING
    RETURNING command_id, aggregate_name, aggregate_id";

const INSERT_GROUP_EVENTS: &str = "
    INSERT INTO events (position, aggregate_name, aggregate_id, sequence_number, event_name,
                        payload, metadata)
    SELECT (pg_current_xact_id()::text::bigint << 20) + e.n,
           e.aggregate_name, e.aggregate_id, e.sequence_number, e.event_name,
           e.payload::json, e.metadata::json
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
         WITH ORDINALITY AS e(aggregate_name, aggregate_id, sequence_number, event_name,
                              payload, metadata, n)
    ON CONFLICT ON CONSTRAINT events_stream_sequence_key DO NOTHING
    RETURNING position,
              to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at";

// The rows of a group's streams that met a key, removed before the commit.
const UNDO_GROUP_APPEND: &str = "
    WITH undone AS (DELETE FROM commands WHERE command_id = ANY($2))
    DELETE FROM events WHERE position = ANY($1)";

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
    /// A group's append when a key is taken: every row goes in with `ON
    /// CONFLICT DO NOTHING`, so a taken key skips its row instead of failing
    /// the statement, and a stream with a row skipped is undone (its rows
    /// deleted) in the same transaction before the others commit.
    async fn append_undoing(
        &self,
        appends: &[StreamAppend<'_>],
        rows: &GroupRows<'_>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Each command id that went in, with the stream it went in for.
        let recorded_ids: HashMap<String, StreamId> = rows
            .bind_commands(sqlx::query(INSERT_GROUP_COMMANDS))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| {
                let stream = StreamId::new(
                    row.try_get::<String, _>("aggregate_name")?,
                    row.try_get::<String, _>("aggregate_id")?,
                );
                Ok((row.try_get("command_id")?, stream))
            })
            .collect::<Result<_, StoreError>>()?;
        let inserted = rows
            .bind_events(sqlx::query(INSERT_GROUP_EVENTS))
            .fetch_all(&mut *tx)
            .await?;
        let mut by_stream = rows.recorded_rows(&inserted)?;

        let mut outcomes = Vec::with_capacity(appends.len());
        let mut undo_positions: Vec<i64> = Vec::new();
        let mut undo_commands: Vec<&str> = Vec::new();
        for append in appends {
            let stream = append.stream;
            let events = take_stream(&mut by_stream, stream);
            let recording = append.commands.iter().filter(|c| !c.events.is_empty());
            let mut ids = recording.clone().map(|c| c.command_id.as_str());
            let ours = |id: &str| recorded_ids.get(id) == Some(stream);
            let key = if !ids.all(ours) {
                Some(Violation::CommandKey)
            } else if events.len() != append.events() {
                Some(Violation::StreamKey)
            } else {
                None
            };
            match key {
                None => outcomes.push(Ok(events)),
                Some(key) => {
                    undo_positions.extend(events.iter().map(|e| e.position));
                    undo_commands.extend(
                        recording
                            .map(|c| c.command_id.as_str())
                            .filter(|&id| ours(id)),
                    );
                    outcomes.push(Err(key.error(stream, append.expected_version)));
                }
            }
        }
        if !undo_positions.is_empty() || !undo_commands.is_empty() {
            sqlx::query(UNDO_GROUP_APPEND)
                .bind(&undo_positions)
                .bind(&undo_commands)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
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
        if appends.iter().all(|a| a.events() == 0) {
            return Ok(appends.iter().map(|_| Ok(Vec::new())).collect());
        }
        let total: usize = appends.iter().map(StreamAppend::events).sum();
        if total >= MAX_EVENTS_PER_APPEND {
            return Err(StoreError::AppendTooLarge {
                events: total,
                max: MAX_EVENTS_PER_APPEND - 1,
            });
        }
        let rows = GroupRows::sorted(appends);
        let inserted = rows
            .bind_events(rows.bind_commands(sqlx::query(INSERT_GROUP)))
            .fetch_one(&self.pool)
            .await;
        let outcomes = match inserted {
            Ok(reply) => {
                let mut by_stream = rows.recorded(&reply)?;
                appends
                    .iter()
                    .map(|a| Ok(take_stream(&mut by_stream, a.stream)))
                    .collect()
            }
            Err(e) => match (violation(&e), appends) {
                (Some(key), [one]) => vec![Err(key.error(one.stream, one.expected_version))],
                (Some(_), _) => self.append_undoing(appends, &rows).await?,
                (None, _) => return Err(e.into()),
            },
        };
        if outcomes.iter().any(Result::is_ok) {
            // Full means a notification is due already.
            let _ = self.appended.try_send(());
        }
        Ok(outcomes)
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
