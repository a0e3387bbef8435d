//! Exit codes, and which error means which.

use eshost::{CommandError, GuestError, LoadError, StoreError};
use eshost_client::ClientError;

/// Success, including a command whose outcome is a recorded rejection event.
pub const OK: u8 = 0;
/// The input was wrong or the aggregate refused the command; nothing appended.
pub const REFUSED: u8 = 1;
/// Bad arguments (clap's own code).
pub const USAGE: u8 = 2;
/// The environment failed: store unreachable, a module that will not load, a
/// guest that trapped. Nothing appended.
pub const FAILED: u8 = 3;
/// Other writers kept winning the race, or the aggregate's queue was full;
/// resending the command is safe.
pub const CONFLICT: u8 = 4;
/// The loaded version of the aggregate's logic cannot apply the stream's
/// recorded events. Deterministic: resending never helps; the guest must
/// change.
pub const UNREPLAYABLE: u8 = 5;

pub const HELP: &str = "\
Exit codes:
  0  success (a recorded rejection, such as PurchaseRejected, is a success)
  1  refused: bad input, unknown aggregate or command, or the aggregate's rules said no
  2  usage error
  3  failure: event store, module loading or a guest trap
  4  conflict: retries exhausted, or the aggregate's queue was full; resending is safe
  5  unreplayable: the loaded version of the aggregate cannot apply the stream's events; resending never helps";

/// The error and its causes on one line. Causes whose text an outer error
/// already quotes (sqlx and wasmtime errors often do) are not repeated.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command failed: the error line names its id (the caller's, or the one
/// the command line made up), and, when resending it is how to learn or fix
/// its outcome (a store failure, a timeout, a conflict, a full queue), says
/// to resend with it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{error:#}; command id {command_id}{}",
    if *.resend {
        format!(": resend with --command-id {command_id} (a recorded command is answered with its outcome)")
    } else {
        String::new()
    }
)]
pub struct CommandFailed {
    pub command_id: String,
    pub error: anyhow::Error,
    pub resend: bool,
}

/// True when resending the failed command could help (see [`CommandFailed`]).
pub fn worth_resending(error: &anyhow::Error) -> bool {
    let guest_fault = matches!(
        error.downcast_ref::<CommandError>(),
        Some(CommandError::Guest(_))
    ) || error
        .downcast_ref::<ClientError>()
        .is_some_and(|e| matches!(e.kind(), "guest_fault" | "unreplayable"));
    let attempted = error.downcast_ref::<CommandError>().is_some()
        || error.downcast_ref::<ClientError>().is_some();
    attempted && !guest_fault && matches!(code(error), FAILED | CONFLICT)
}

/// The exit code for an error that reached the top of the binary.
pub fn code(error: &anyhow::Error) -> u8 {
    if let Some(failed) = error.downcast_ref::<CommandFailed>() {
        return code(&failed.error);
    }
    if let Some(e) = error.downcast_ref::<CommandError>() {
        return match e {
            CommandError::RetriesExhausted { .. } | CommandError::Overloaded { .. } => CONFLICT,
            CommandError::Guest(GuestError::ApplyFailed(_)) => UNREPLAYABLE,
            CommandError::Guest(_)
            | CommandError::Store(_)
            | CommandError::WorkerLost { .. }
            | CommandError::ShuttingDown => FAILED,
            _ => REFUSED,
        };
    }
    if let Some(e) = error.downcast_ref::<ClientError>() {
        return match e.kind() {
            "conflict" | "overloaded" => CONFLICT,
            "unreplayable" => UNREPLAYABLE,
            "guest_fault" | "store_unavailable" | "store_failed" | "shutting_down" | "timeout"
            | "internal" | "transport" | "unexpected" => FAILED,
            _ => REFUSED,
        };
    }
    if let Some(e) = error.downcast_ref::<eshost::upgrade::UpgradeError>() {
        return match e {
            eshost::upgrade::UpgradeError::Command(e) => code(&anyhow::Error::new(e.clone())),
            eshost::upgrade::UpgradeError::Load(_) => FAILED,
            eshost::upgrade::UpgradeError::NoSuchStream { .. } => REFUSED,
        };
    }
    if error.downcast_ref::<eshost_testing::SpecErrors>().is_some() {
        return USAGE;
    }
    if error.downcast_ref::<LoadError>().is_some()
        || error.downcast_ref::<StoreError>().is_some()
        || error
            .downcast_ref::<eshost_read::projector::ProjectorError>()
            .is_some()
        || error
            .downcast_ref::<crate::commands::ProjectionsFailed>()
            .is_some()
    {
        return FAILED;
    }
    REFUSED
}
