//! Why a command did not produce recorded events. Each variant's doc says
//! what a caller should do with it.

pub use eshost_store::{DatabaseFailure, StoreError};
pub use eshost_wasm::{ApplyFailure, GuestError, LoadError, Refusal};
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
    /// [`eshost_core::storable_json`]). Fix the input.
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
    /// The message says nothing of the recorded command: it may be
    /// another caller's.
    #[error(
        "command id {command_id:?} was already used for a different command (another aggregate, command or payload); use a new id for a new command"
    )]
    CommandIdReused { command_id: String },

    /// The aggregate has no events: it was never created. Nothing to read.
    #[error("{aggregate} {id} has no events: it was never created")]
    NeverCreated { aggregate: String, id: String },

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
    /// Only a transient failure (kind `store_unavailable`) may pass on its
    /// own; a permanent one (`store_failed`) needs the operator.
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
            Self::NeverCreated { .. } => "not_found",
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
            // Fails the same way every time: resending cannot help.
            Self::Store(
                StoreError::Database {
                    failure: DatabaseFailure::Permanent,
                    ..
                }
                | StoreError::Migrate(_)
                | StoreError::PersonalData(_)
                | StoreError::AppendTooLarge { .. },
            ) => "store_failed",
            Self::Store(_) => "store_unavailable",
        }
    }
}
