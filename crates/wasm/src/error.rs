//! The sandbox's errors: a guest that refused a command, misbehaved, or
//! could not be loaded. Each variant's doc says what a caller should do.

use std::path::PathBuf;
use thiserror::Error;

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
    /// hold and give back (see [`eshost_core::storable_json`]).
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

    /// A reactor refused an event (its guest returned an error) or asked
    /// for actions the host cannot perform. Deterministic: the event is
    /// parked with this reason.
    #[error("{reactor}: {message}")]
    ReactionFailed { reactor: String, message: String },

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
/// longer reads, a bug). The guest must change (the book: Upgrading an
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

/// A module could not be loaded. Names the file and the reason.
#[derive(Debug, Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

impl LoadError {
    pub fn new(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
