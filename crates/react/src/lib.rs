//! eshost's reactions (decision record 0055): a reactor guest's reactions
//! to the global log, recorded with its checkpoint, then performed, each
//! action once by the id the host derives for it.
//!
//! - [`runner`]: one reactor's passes: lease, react to a page, record it,
//!   fire the timers that are due, perform what is pending.
//! - [`sinks`]: the outbound sinks deliveries go to, as the operator
//!   configures them (a sinks file);
//! - [`supervisor`]: a directory's reactors, each run in a task of its own,
//!   the directory watched.

pub mod runner;
pub mod sinks;
pub mod supervisor;

pub use runner::{Clock, Pass, RunError, Runner, system_clock};
pub use sinks::{Sink, Sinks, SinksFileError};
pub use supervisor::{Outcome, Supervisor};
