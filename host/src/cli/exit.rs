//! Exit codes, and which error means which.

use crate::error::{CommandError, LoadError, StoreError};

/// Success, including a command whose outcome is a recorded rejection event.
pub const OK: u8 = 0;
/// The input was wrong or the aggregate refused the command; nothing appended.
pub const REFUSED: u8 = 1;
/// Bad arguments (clap's own code).
pub const USAGE: u8 = 2;
/// The environment failed: store unreachable, a module that will not load, a
/// guest that trapped. Nothing appended.
pub const FAILED: u8 = 3;
/// Other writers kept winning the race; resending the command is safe.
pub const CONFLICT: u8 = 4;

pub const HELP: &str = "\
Exit codes:
  0  success (a recorded rejection, such as PurchaseRejected, is a success)
  1  refused: bad input, unknown aggregate or command, or the aggregate's rules said no
  2  usage error
  3  failure: event store, module loading or a guest trap
  4  conflict: retries exhausted; resending is safe";

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

/// The exit code for an error that reached the top of the binary.
pub fn code(error: &anyhow::Error) -> u8 {
    if let Some(e) = error.downcast_ref::<CommandError>() {
        return match e {
            CommandError::RetriesExhausted { .. } => CONFLICT,
            CommandError::Guest(_) | CommandError::Store(_) | CommandError::WorkerLost { .. } => {
                FAILED
            }
            _ => REFUSED,
        };
    }
    if error.downcast_ref::<LoadError>().is_some() || error.downcast_ref::<StoreError>().is_some() {
        return FAILED;
    }
    REFUSED
}
