//! Typed errors. Each variant's doc says what a caller should do with it.

use std::path::PathBuf;
use thiserror::Error;

/// Why a command did not produce recorded events. Nothing was appended.
#[derive(Debug, Clone, Error)]
pub enum CommandError {
    /// No loaded component declares this aggregate. Fix the name or load the module.
    #[error("unknown aggregate {name:?} (loaded: {loaded})")]
    UnknownAggregate { name: String, loaded: String },

    /// The aggregate does not declare this command. Fix the command name.
    #[error("{aggregate} has no command {command:?} (it accepts: {accepted})")]
    UnknownCommand {
        aggregate: String,
        command: String,
        accepted: String,
    },

    /// The payload is larger than the host accepts. Fix the input.
    #[error("payload of {command} is {size} bytes; the limit is {limit}")]
    PayloadTooLarge {
        command: String,
        size: usize,
        limit: usize,
    },

    /// The payload is not JSON the stores can hold (see
    /// [`crate::store::storable_json`]). Fix the input.
    #[error("payload of {command} is not JSON the store can hold: {reason}")]
    PayloadNotJson { command: String, reason: String },

    /// The guest refused the command by its own rules. Not retryable as is:
    /// the command or the aggregate's state must change first.
    #[error("{aggregate} {id} refused {command}: {refusal}")]
    Refused {
        aggregate: String,
        id: String,
        command: String,
        refusal: Refusal,
    },

    /// Other writers kept winning the race for this stream. Safe to resend.
    #[error("{aggregate} {id}: still conflicting after {retries} retries")]
    RetriesExhausted {
        aggregate: String,
        id: String,
        retries: u32,
    },

    /// An id (aggregate, command, correlation or causation) is empty, too
    /// long or holds a NUL character. Fix the input.
    #[error("{what} {reason}")]
    InvalidId { what: &'static str, reason: String },

    /// The command id was recorded for a different command (another
    /// aggregate, command or payload). Use a new id for a new command.
    #[error("command id {command_id:?} was already used for {recorded}")]
    CommandIdReused {
        command_id: String,
        recorded: String,
    },

    /// The aggregate's queue is full: the host is taking commands for it
    /// faster than it can record them. Nothing was queued; resend later.
    #[error("{aggregate} {id}: the aggregate's queue is full ({capacity} commands); resend later")]
    Overloaded {
        aggregate: String,
        id: String,
        capacity: usize,
    },

    /// The host is shutting down and takes no new commands. Nothing was
    /// queued; resend to another host or after the restart.
    #[error("the host is shutting down and takes no new commands")]
    ShuttingDown,

    /// The stream's queue worker stopped before answering (a bug). Whether
    /// the command was recorded is unknown: read the stream before resending.
    #[error("{aggregate} {id}: the stream's worker stopped before answering")]
    WorkerLost { aggregate: String, id: String },

    /// The guest trapped or broke the contract. The instance was discarded.
    #[error(transparent)]
    Guest(#[from] GuestError),

    /// The event store failed. Resending with the same command id is safe:
    /// a command that was recorded is answered with its recorded outcome.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    /// A stable name for the kind of failure: the HTTP API's error `kind`
    /// and the metrics' `outcome` label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownAggregate { .. } => "unknown_aggregate",
            Self::UnknownCommand { .. } => "unknown_command",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::PayloadNotJson { .. } => "invalid_payload",
            Self::InvalidId { .. } => "invalid_id",
            Self::CommandIdReused { .. } => "idempotency_key_reused",
            Self::Refused { refusal, .. } => match refusal {
                Refusal::UnknownCommand(_) => "unknown_command",
                Refusal::InvalidPayload(_) => "invalid_payload",
                Refusal::InvalidCommand(_) => "invalid_command",
                Refusal::PreconditionFailed(_) => "precondition_failed",
            },
            Self::RetriesExhausted { .. } => "conflict",
            Self::Overloaded { .. } => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::WorkerLost { .. } => "internal",
            Self::Guest(GuestError::ApplyFailed(_)) => "unreplayable",
            Self::Guest(_) => "guest_fault",
            Self::Store(StoreError::UnsupportedUrl(_)) => "internal",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// A guest's reason for refusing a command (the WIT `command-error`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("unknown command: {0}")]
    UnknownCommand(String),
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
}

/// The guest misbehaved: it trapped, or returned something the contract forbids.
/// The host discards the instance; the stream is untouched.
#[derive(Debug, Clone, Error)]
pub enum GuestError {
    /// A trap or host-side failure while calling into the guest.
    #[error("{aggregate}: guest failed in {call}: {message}")]
    Trap {
        aggregate: String,
        call: &'static str,
        message: String,
    },

    /// The call broke a sandbox limit (time, fuel, memory, stack, events per
    /// command, payload size). The instance was discarded.
    #[error("{aggregate}: {limit} limit exceeded in {call}: {detail}")]
    LimitExceeded {
        aggregate: String,
        call: &'static str,
        limit: &'static str,
        detail: String,
    },

    /// The guest panicked; the message is the guest's own.
    #[error("{aggregate}: guest {message} (in {call})")]
    Panicked {
        aggregate: String,
        call: &'static str,
        message: String,
    },

    /// `handle` returned an event name the manifest does not declare.
    #[error("{aggregate}: guest returned undeclared event {event:?}")]
    UndeclaredEvent { aggregate: String, event: String },

    /// `handle` returned an event whose payload is not JSON the stores can
    /// hold and give back (see [`crate::store::storable_json`]).
    #[error(
        "{aggregate}: guest returned event {event} with a payload that cannot be stored: {reason}"
    )]
    EventPayloadNotJson {
        aggregate: String,
        event: String,
        reason: String,
    },

    /// `apply` refused recorded events: this version of the aggregate's
    /// logic cannot load the stream. Deterministic: resending never helps.
    #[error(transparent)]
    ApplyFailed(Box<ApplyFailure>),

    /// A projection guest failed an event: its `project` returned an error,
    /// or changes the host cannot apply. Deterministic: the projection stops
    /// at the event until a fixed guest is loaded.
    #[error("{projection}: {message}")]
    ProjectionFailed { projection: String, message: String },

    /// The instance this aggregate shared with others was lost to a trap
    /// in another aggregate's call. The aggregate is rebuilt from the store;
    /// a caller sees this only when that kept failing.
    #[error("{aggregate}: the guest instance was lost to another aggregate's failure; resend")]
    InstanceLost { aggregate: String },

    /// `restore` refused a snapshot. The host replays the stream instead.
    #[error("{aggregate} {id}: guest refused the snapshot at version {version}: {reason}")]
    SnapshotRefused {
        aggregate: String,
        id: String,
        version: u64,
        reason: String,
    },
}

/// `apply` refused recorded events: this version of the aggregate's logic
/// cannot load the stream (a renamed or removed event, a payload shape it no
/// longer reads, a bug). The guest must change (README: Upgrading an
/// aggregate).
#[derive(Debug, Clone, Error)]
#[error(
    "{aggregate} {id} cannot be loaded by {aggregate} {version}: {}: {reason}",
    failing_events(self.first, self.last, self.event.as_deref())
)]
pub struct ApplyFailure {
    pub aggregate: String,
    /// The guest's version (its manifest's).
    pub version: String,
    pub id: String,
    /// The sequence numbers of the refused `apply` call's first and last
    /// events: the same number when the failing event is known.
    pub first: u64,
    pub last: u64,
    /// The failing event's name, when known.
    pub event: Option<String>,
    pub reason: String,
}

/// `event 7 (ItemRenamed)`, or the span of an `apply` call that failed on
/// one of its events.
fn failing_events(first: u64, last: u64, event: Option<&str>) -> String {
    match event {
        Some(name) if first == last => format!("event {first} ({name})"),
        _ if first == last => format!("event {first}"),
        _ => format!("one of events {first}..={last}"),
    }
}

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
                failure: DatabaseFailure::NotSent | DatabaseFailure::Transient,
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
    /// Nothing reached the database: no connection came from the pool in
    /// time, or the server refused or could not take a connection. The
    /// request did not run; trying again may succeed.
    NotSent,
    /// The connection was lost or the server gave up (a restart, a
    /// serialization failure, a deadlock, a busy SQLite file) after the
    /// request may have been sent. Trying again may succeed; a write's
    /// outcome is unknown until looked up.
    Transient,
    /// Anything else: trying again fails the same way.
    Permanent,
}

/// A module could not be loaded. Names the file and the reason.
#[derive(Debug, Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

impl LoadError {
    pub(crate) fn new(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
