//! eshost: a host runtime for event-sourced aggregates whose domain logic is
//! compiled to WebAssembly components (`wit/aggregate.wit`).
//!
//! # Layout
//!
//! - [`runtime`]: wasmtime engine, sandbox limits, loading and checking
//!   components, the compiled-code cache, hydrated aggregate instances
//!   holding their state inside the guest.
//! - [`store`]: the event store trait (and the projections' [`store::ViewStore`])
//!   with its PostgreSQL and SQLite implementations.
//! - [`subscription`]: following the global log; [`relay`]: to NATS JetStream.
//! - [`projector`]: running projection guests into their views, and rebuilds;
//!   [`supervisor`]: a directory of them, hot-reloaded.
//! - [`dispatch`]: [`Host`], which runs commands: load, decide, append with the
//!   expected version, retry on conflict with backoff.
//! - [`testing`]: given/when/then tests of guest logic in the sandbox, no
//!   database (the Rust API and `eshost test` spec files).
//! - [`upgrade`]: a new version of a component checked against the recorded
//!   streams before it goes live (`eshost upgrade check`).
//! - [`demo`]: the flash-sale reference scenario.
//! - [`bench`]: `eshost bench`, scenarios against the database's own limit.
//! - [`server`]: `eshost serve`, the HTTP API over a [`Host`].
//! - [`client`]: the HTTP client the command line uses with `--server`.
//! - [`cluster`]: several hosts behind HAProxy on one machine, for the
//!   tests and the bench (the reference deployment in `deploy/`).
//! - [`cli`]: the `eshost` command line (the binary only wires it up).
//! - [`error`]: typed errors.
//! - [`metrics`]: the host's metrics, in Prometheus' text format.

pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod metrics;
pub mod projector;
pub mod relay;
pub mod runtime;
pub mod server;
pub mod store;
pub mod subscription;
pub mod supervisor;
pub mod testing;
pub mod upgrade;

pub use dispatch::{CommandOutcome, CommandRequest, Concurrency, Host, HostOptions, RetryPolicy};
pub use error::{
    ApplyFailure, CommandError, DatabaseFailure, GuestError, LoadError, Refusal, StoreError,
};
pub use runtime::{LoadedComponent, Modules};
pub use store::{EventStore, RecordedEvent, Snapshot, StreamId};
