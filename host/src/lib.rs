//! eshost: a host runtime for event-sourced aggregates whose domain logic is
//! compiled to WebAssembly components (`wit/aggregate.wit`).
//!
//! # Layout
//!
//! - [`runtime`]: wasmtime engine, loading and checking components, hydrated
//!   aggregate instances holding their state inside the guest.
//! - [`store`]: the event store trait and its PostgreSQL implementation.
//! - [`dispatch`]: [`Host`], which runs commands: load, decide, append with the
//!   expected version, retry on conflict with backoff.
//! - [`demo`]: the flash-sale reference scenario.
//! - [`cli`]: the `eshost` command line (the binary only wires it up).
//! - [`error`]: typed errors.

pub mod cli;
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod runtime;
pub mod store;

pub use dispatch::{CommandOutcome, CommandRequest, Host, RetryPolicy};
pub use error::{CommandError, GuestError, LoadError, Refusal, StoreError};
pub use runtime::{LoadedComponent, Modules};
pub use store::{EventStore, RecordedEvent, StreamId};
