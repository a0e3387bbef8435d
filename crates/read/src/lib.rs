//! eshost's read side: everything that follows the global log once events
//! are recorded. It reads the store and runs projection guests in the
//! sandbox; it never writes events.
//!
//! # Layout
//!
//! - [`subscription`]: following the global log from a position, gap-safe,
//!   woken by the store's append signal.
//! - [`projector`]: one projection guest run into its view, exactly once
//!   per event, and rebuilds beside the live view.
//! - [`deployed`]: which version of each projection runs: deployed in the
//!   store, seeded from a directory; deploying and rolling back.
//! - [`supervisor`]: the deployed projections, each run and restarted,
//!   switched when the store's live set or the directory changes.
//! - [`relay`]: the global log published to NATS JetStream, each event
//!   once, in order.

pub mod deployed;
pub mod projector;
pub mod relay;
pub mod subscription;
pub mod supervisor;

pub use subscription::{Subscription, follow};
