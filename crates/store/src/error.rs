//! The store's one error type, and what a database failure says about the
//! request that met it. Each variant's doc says what a caller should do.

use thiserror::Error;

/// The event store failed. Cheap to clone: one failed batch append answers
/// every command in the batch.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// Another writer appended at this version first (unique key violation).
    /// The dispatcher catches this and retries; callers of the store must too.
    #[error("{aggregate} {id}: version {expected_version} is no longer current")]
    Conflict {
        aggregate: String,
        id: String,
        expected_version: u64,
    },

    /// A command id in this append is already recorded. The dispatcher
    /// answers such a command with its recorded outcome.
    #[error("{aggregate} {id}: a command id in this append is already recorded")]
    DuplicateCommand { aggregate: String, id: String },

    /// Connecting, querying or committing failed. Not a conflict.
    #[error("database error: {message}")]
    Database {
        failure: DatabaseFailure,
        message: String,
    },

    /// An append was sent, and whether it committed could not be found out
    /// by the command's deadline. It may have: resend the command with the
    /// same id, and its recorded outcome is the answer.
    #[error(
        "{stream}: the append's outcome is unknown ({reason}); resend the command with the same id"
    )]
    OutcomeUnknown { stream: String, reason: String },

    /// Applying the schema migrations failed.
    #[error("migrating the database failed: {0}")]
    Migrate(String),

    /// A stream's cross-process lock could not be taken (in time, or at all).
    #[error("{stream}: {reason}")]
    Lock { stream: String, reason: String },

    /// One append carried more events than a position can number.
    #[error("an append of {events} events is too large; at most {max} fit in one")]
    AppendTooLarge { events: usize, max: usize },

    /// Personal data could not be encrypted or decrypted: no master key is
    /// configured, or a stored key does not open with the ones that are.
    /// Nothing was written; configure the master key that wrapped it.
    #[error("personal data: {0}")]
    PersonalData(String),

    /// A new data subject's row was not stored: another writer stored a
    /// row for the same subject first (see
    /// [`Streams::append_group_with_subjects`](crate::Streams::append_group_with_subjects)).
    /// Nothing of the group was written; read the stored row and append
    /// again under it.
    #[error("a data subject's key was stored by another writer first")]
    SubjectTaken,

    /// The URL names a database kind this host cannot use.
    #[error("unsupported database URL {0:?} (expected postgres://... or sqlite://PATH)")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// True for a failure that says nothing about the request and may pass
    /// on its own (see [`DatabaseFailure`]). Worth retrying with backoff; a
    /// conflict is not among them (it has its own retry).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Database {
                failure: DatabaseFailure::NotSent
                    | DatabaseFailure::PoolExhausted
                    | DatabaseFailure::Transient,
                ..
            }
        )
    }

    /// True when no connection came from the pool within its wait. The
    /// wait was the retry: waiting again only keeps the caller longer.
    pub fn pool_exhausted(&self) -> bool {
        matches!(
            self,
            Self::Database {
                failure: DatabaseFailure::PoolExhausted,
                ..
            }
        )
    }

    /// True when a write that failed so may have committed all the same:
    /// the connection was lost after it may have been sent. Only a lookup
    /// tells. (A write that was never sent, or that the database refused,
    /// did not commit.)
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Database {
                failure: DatabaseFailure::Transient,
                ..
            }
        )
    }
}

/// What a database failure says about the request that met it. The stores
/// classify their driver's errors into these, so nothing above them
/// depends on the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFailure {
    /// Nothing reached the database: the server refused or could not take
    /// a connection. The request did not run; trying again may succeed.
    NotSent,
    /// Nothing reached the database: no connection came from the pool
    /// within its wait (every one busy, or the server refusing new ones
    /// all along). The request did not run; the wait was already spent.
    PoolExhausted,
    /// The connection was lost or the server gave up (a restart, a
    /// serialization failure, a deadlock, a busy SQLite file) after the
    /// request may have been sent. Trying again may succeed; a write's
    /// outcome is unknown until looked up.
    Transient,
    /// Anything else: trying again fails the same way.
    Permanent,
}
