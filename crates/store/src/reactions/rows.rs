//! Reading what [`impl_reactions!`](super::sql::impl_reactions) selects:
//! a row of each reactions table as its type, and a stored value that does
//! not read back as a typed error.

use super::{ActionStatus, OnFailure, OutboxEntry, ParkedEvent, ReactorRecord, Timer};
use crate::StoreError;

/// A stored JSON column that does not read back: the store is damaged.
pub(crate) fn unreadable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        failure: crate::DatabaseFailure::Permanent,
        message: format!("an unreadable {what}: {e}"),
    }
}

pub(crate) fn status_from(text: &str) -> Result<ActionStatus, StoreError> {
    Ok(match text {
        "pending" => ActionStatus::Pending,
        "done" => ActionStatus::Done,
        "refused" => ActionStatus::Refused,
        "parked" => ActionStatus::Parked,
        other => return Err(unreadable("action status", other)),
    })
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Actions and commands are plain data with JSON payloads: serializing
    // them does not fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// An outbox row (`id, reactor, position, action, attempts`).
pub(crate) fn outbox_entry<R: sqlx::Row>(row: &R) -> Result<OutboxEntry, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let action: String = row.try_get("action")?;
    Ok(OutboxEntry {
        id: row.try_get("id")?,
        reactor: row.try_get("reactor")?,
        position: row.try_get("position")?,
        action: serde_json::from_str(&action).map_err(|e| unreadable("action", e))?,
        attempts: row.try_get("attempts")?,
    })
}

/// A parked row (`reactor, position, event, reason, at_ms,
/// retry_requested_at_ms`).
pub(crate) fn parked_event<R: sqlx::Row>(row: &R) -> Result<ParkedEvent, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(ParkedEvent {
        reactor: row.try_get("reactor")?,
        position: row.try_get("position")?,
        event: row.try_get("event")?,
        reason: row.try_get("reason")?,
        at_ms: row.try_get("at_ms")?,
        retry_requested_at_ms: row.try_get("retry_requested_at_ms")?,
    })
}

/// A reactor row (`name, version, digest, position, updated_at_ms,
/// on_failure`).
pub(crate) fn reactor_record<R: sqlx::Row>(row: &R) -> Result<ReactorRecord, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(ReactorRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        position: row.try_get("position")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        on_failure: on_failure_from(row.try_get("on_failure")?)?,
    })
}

pub(crate) fn on_failure_from(text: String) -> Result<OnFailure, StoreError> {
    text.parse().map_err(|e| unreadable("failure policy", e))
}

/// A timer row (`reactor, key, id, position, due_at_ms, command`).
pub(crate) fn timer<R: sqlx::Row>(row: &R) -> Result<Timer, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let command: String = row.try_get("command")?;
    Ok(Timer {
        reactor: row.try_get("reactor")?,
        key: row.try_get("key")?,
        id: row.try_get("id")?,
        position: row.try_get("position")?,
        due_at_ms: row.try_get("due_at_ms")?,
        command: serde_json::from_str(&command).map_err(|e| unreadable("timer's command", e))?,
    })
}
