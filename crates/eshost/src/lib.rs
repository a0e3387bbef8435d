//! eshost: a host runtime for event-sourced aggregates whose domain logic is
//! compiled to WebAssembly components (the WIT contract in `wit/`). This
//! crate is the library's front door and its write side: [`Host`] runs
//! commands against the loaded components and records their events.
//!
//! # Layout
//!
//! - [`dispatch`]: [`Host`], which runs commands: admits them, decides them
//!   in the guest (queued per aggregate, or optimistically), appends with
//!   the expected version, settles unknown outcomes, takes snapshots.
//! - [`group_commit`]: appends of different streams ready at once, sent in
//!   one transaction.
//! - [`upgrade`]: a new version of a component checked against the recorded
//!   streams before it goes live.
//! - [`metrics`]: the host's metrics, in OpenMetrics text.
//! - `trace`: the spans of each command, and its trace context written
//!   into its events' metadata.
//! - [`error`]: why a command recorded nothing.
//!
//! The crates it stands on are re-exported, so one dependency gives the
//! whole write side: [`store`] (`eshost-store`: PostgreSQL and SQLite) and
//! [`wasm`] (`eshost-wasm`: the sandbox and the loaded components). The
//! read side (subscriptions, projections, the relay) is `eshost-read`, the
//! HTTP API `eshost-server` and `eshost-client`, guest tests without a database `eshost-testing`.

pub mod dispatch;
pub mod error;
pub mod group_commit;
pub mod metrics;
mod trace;
pub mod upgrade;

pub use eshost_store as store;
pub use eshost_wasm as wasm;

pub use dispatch::{Concurrency, Host, HostOptions, RetryPolicy};
pub use error::{
    ApplyFailure, CommandError, DatabaseFailure, GuestError, LoadError, Refusal, StoreError,
};
pub use eshost_core::{
    CommandId, CommandOutcome, CommandRequest, JsonText, PersonalEvent, RecordedEvent, Snapshot,
    StreamId,
};
pub use eshost_store::EventStore;
pub use eshost_wasm::{LoadedComponent, Modules, Runtime};
