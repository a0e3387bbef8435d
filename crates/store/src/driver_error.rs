//! sqlx's errors turned into [`StoreError`]s: the one place that knows the
//! driver's error types, so nothing above the stores depends on them.

use crate::error::{DatabaseFailure, StoreError};
use std::io::ErrorKind;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database {
            failure: classify(&error),
            message: error.to_string(),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(error.to_string())
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes that mean "try again"
/// after the request may have run.
const TRANSIENT_CODES: &[&str] = &[
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "57P01", // admin_shutdown (pg_terminate_backend, a fast shutdown)
    "57P02", // crash_shutdown
    "5",     // SQLITE_BUSY
    "6",     // SQLITE_LOCKED
    "261",   // SQLITE_BUSY_RECOVERY
    "517",   // SQLITE_BUSY_SNAPSHOT
    "773",   // SQLITE_BUSY_TIMEOUT
];

/// SQLSTATEs a server answers a connection attempt with: no request ran.
const NOT_SENT_CODES: &[&str] = &[
    "57P03", // cannot_connect_now (starting up)
    "53300", // too_many_connections
    "08001", // sqlclient_unable_to_establish_sqlconnection
    "08004", // sqlserver_rejected_establishment_of_sqlconnection
];

fn classify(error: &sqlx::Error) -> DatabaseFailure {
    match error {
        sqlx::Error::PoolTimedOut => DatabaseFailure::PoolExhausted,
        sqlx::Error::Io(io) if io.kind() == ErrorKind::ConnectionRefused => {
            DatabaseFailure::NotSent
        }
        sqlx::Error::Io(_) => DatabaseFailure::Transient,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if NOT_SENT_CODES.contains(&code.as_ref()) => DatabaseFailure::NotSent,
            Some(code)
                if TRANSIENT_CODES.contains(&code.as_ref())
                    // SQLSTATE class 08: connection exception.
                    || code.starts_with("08") && code.len() == 5 =>
            {
                DatabaseFailure::Transient
            }
            _ => DatabaseFailure::Permanent,
        },
        _ => DatabaseFailure::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: sqlx::Error) -> Option<DatabaseFailure> {
        match StoreError::from(error) {
            StoreError::Database { failure, .. } => Some(failure),
            _ => None,
        }
    }

    #[test]
    fn what_never_reached_the_database_is_told_apart_from_a_lost_connection() {
        let io = |kind| sqlx::Error::Io(std::io::Error::from(kind));
        assert_eq!(
            failure(sqlx::Error::PoolTimedOut),
            Some(DatabaseFailure::PoolExhausted)
        );
        assert_eq!(
            failure(io(ErrorKind::ConnectionRefused)),
            Some(DatabaseFailure::NotSent)
        );
        assert_eq!(
            failure(io(ErrorKind::ConnectionReset)),
            Some(DatabaseFailure::Transient)
        );
        assert_eq!(
            failure(sqlx::Error::RowNotFound),
            Some(DatabaseFailure::Permanent)
        );
        let refused = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(refused.is_transient() && !refused.outcome_unknown());
        let lost = StoreError::from(io(ErrorKind::UnexpectedEof));
        assert!(lost.is_transient() && lost.outcome_unknown());
        assert!(!StoreError::from(sqlx::Error::PoolClosed).is_transient());
    }
}
