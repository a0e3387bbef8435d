//! The PostgreSQL store's appends: a group of streams' commands and events
//! as one statement in the common case, row by row checked when a key is
//! taken, and the events recorded read back from what was sent.

use super::{PostgresStore, violation};
use crate::error::{DatabaseFailure, StoreError};
use crate::subjects::{NewSubjects, SubjectKey};
use crate::{
    AppendOutcome, JsonText, RecordedEvent, StreamAppend, StreamId, Violation, numbered, to_i64,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::collections::HashMap;

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
    event_subjects: Vec<Option<&'a str>>,
    command_ids: Vec<&'a str>,
    command_aggregates: Vec<&'a str>,
    command_streams: Vec<&'a str>,
    command_names: Vec<&'a str>,
    fingerprints: Vec<&'a str>,
    firsts: Vec<i64>,
    counts: Vec<i32>,
    subjects: SubjectRows<'a>,
}

/// New data subjects' rows, as the column arrays the group statement
/// binds, in lookup order, so two groups never wait on each other's rows
/// in opposite orders.
#[derive(Default)]
struct SubjectRows<'a> {
    pseudonyms: Vec<&'a str>,
    lookups: Vec<&'a [u8]>,
    wrapped_keys: Vec<&'a [u8]>,
    sealed_subjects: Vec<&'a [u8]>,
    master_key_ids: Vec<&'a str>,
}

impl<'a> SubjectRows<'a> {
    fn sorted(subjects: &NewSubjects<'a>) -> Self {
        let mut candidates: Vec<&SubjectKey> = subjects.candidates.iter().collect();
        candidates.sort_by_key(|c| &c.lookup);
        let mut rows = Self::default();
        for candidate in candidates {
            rows.pseudonyms.push(&candidate.pseudonym);
            rows.lookups.push(&candidate.lookup);
            rows.wrapped_keys.push(&candidate.wrapped_key);
            rows.sealed_subjects.push(&candidate.sealed_subject);
            rows.master_key_ids.push(&candidate.master_key_id);
        }
        rows
    }

    /// Binds the subjects' columns, after the commands' and events'.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.pseudonyms)
            .bind(&self.lookups)
            .bind(&self.wrapped_keys)
            .bind(&self.sealed_subjects)
            .bind(&self.master_key_ids)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl<'a> GroupRows<'a> {
    fn sorted(appends: &[StreamAppend<'a>], subjects: &NewSubjects<'a>) -> Self {
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
                    rows.event_subjects.push(event.subject.as_deref());
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
        rows.subjects = SubjectRows::sorted(subjects);
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
            .bind(&self.event_subjects)
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

/// True if `error` is a new subject's lookup met stored already.
fn subject_taken(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(SUBJECT_LOOKUP_KEY))
}

/// The key on a subject's lookup (see migration 0012).
const SUBJECT_LOOKUP_KEY: &str = "subjects_lookup_key";

/// A reply that does not fit what was sent.
fn unexpected(message: String) -> StoreError {
    StoreError::Database {
        failure: DatabaseFailure::Permanent,
        message,
    }
}

/// Bits of a position that number an append's events: the rest is the
/// transaction id, so one append holds fewer than 2^20 events.
const POSITION_INDEX_BITS: u32 = 20;
const MAX_EVENTS_PER_APPEND: usize = 1 << POSITION_INDEX_BITS;

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
macro_rules! insert_group {
    ($($subjects:literal)?) => {
        concat!(
            "WITH ",
            $($subjects,)?
            "recorded_commands AS (
                INSERT INTO commands (command_id, aggregate_name, aggregate_id, command_name,
                                      fingerprint, first_sequence, event_count)
                SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                                     $5::text[], $6::bigint[], $7::int[])
            ), recorded_events AS (
                INSERT INTO events (position, aggregate_name, aggregate_id, sequence_number,
                                    event_name, payload, metadata, subject)
                SELECT (pg_current_xact_id()::text::bigint << 20) + e.n,
                       e.aggregate_name, e.aggregate_id, e.sequence_number, e.event_name,
                       e.payload::json, e.metadata::json, e.subject
                FROM UNNEST($8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[],
                            $13::text[], $14::text[])
                     WITH ORDINALITY AS e(aggregate_name, aggregate_id, sequence_number,
                                          event_name, payload, metadata, subject, n)
                RETURNING 1
            )
            SELECT pg_current_xact_id()::text::bigint AS xid,
                   to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
                       AS created_at,
                   (SELECT count(*) FROM recorded_events) AS events"
        )
    };
}

const INSERT_GROUP: &str = insert_group!();

// INSERT_GROUP with new data subjects' rows (decision record 0056) in the
// same statement, so in the same transaction and
// commit. A subject's lookup taken already fails the statement, and with
// it the whole group (`StoreError::SubjectTaken`).
const INSERT_GROUP_WITH_SUBJECTS: &str = insert_group!(
    "new_subjects AS (
        INSERT INTO subjects (pseudonym, lookup, wrapped_key, sealed_subject, master_key_id)
        SELECT * FROM UNNEST($15::text[], $16::bytea[], $17::bytea[], $18::bytea[],
                             $19::text[])
    ), "
);

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
                        payload, metadata, subject)
    SELECT (pg_current_xact_id()::text::bigint << 20) + e.n,
           e.aggregate_name, e.aggregate_id, e.sequence_number, e.event_name,
           e.payload::json, e.metadata::json, e.subject
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                $7::text[])
         WITH ORDINALITY AS e(aggregate_name, aggregate_id, sequence_number, event_name,
                              payload, metadata, subject, n)
    ON CONFLICT ON CONSTRAINT events_stream_sequence_key DO NOTHING
    RETURNING position,
              to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at";

// The rows of a group's streams that met a key, removed before the commit.
const UNDO_GROUP_APPEND: &str = "
    WITH undone AS (DELETE FROM commands WHERE command_id = ANY($2))
    DELETE FROM events WHERE position = ANY($1)";

impl PostgresStore {
    pub(super) async fn append_rows(
        &self,
        appends: &[StreamAppend<'_>],
        subjects: &NewSubjects<'_>,
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
        let rows = GroupRows::sorted(appends, subjects);
        let inserted = match subjects.is_empty() {
            true => rows.bind_events(rows.bind_commands(sqlx::query(INSERT_GROUP))),
            false => rows.subjects.bind(
                rows.bind_events(rows.bind_commands(sqlx::query(INSERT_GROUP_WITH_SUBJECTS))),
            ),
        }
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
            Err(e) if subject_taken(&e) => return Err(StoreError::SubjectTaken),
            Err(e) => match (violation(&e), appends) {
                (Some(key), [one]) => vec![Err(key.error(one.stream, one.expected_version))],
                (Some(_), _) => self.append_undoing(appends, &rows, subjects).await?,
                (None, _) => return Err(e.into()),
            },
        };
        if outcomes.iter().any(Result::is_ok) {
            // Full means a notification is due already.
            let _ = self.appended.try_send(());
        }
        Ok(outcomes)
    }

    /// A group's append when a key is taken: every row goes in with `ON
    /// CONFLICT DO NOTHING`, so a taken key skips its row instead of failing
    /// the statement, and a stream with a row skipped is undone (its rows
    /// deleted) in the same transaction before the others commit.
    async fn append_undoing(
        &self,
        appends: &[StreamAppend<'_>],
        rows: &GroupRows<'_>,
        subjects: &NewSubjects<'_>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::insert_subjects(&mut tx, subjects).await?;
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
        crate::finish_group(tx, &outcomes).await?;
        Ok(outcomes)
    }
}
