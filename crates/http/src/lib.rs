//! eshost's HTTP API.
//!
//! - [`api`]: the wire types server and client share, and a command's
//!   headers. Always built; it depends on nothing of the host.
//! - [`server`] (feature `server`): `eshost serve`, axum over the write side
//!   (`eshost`) and the read side (`eshost-read`), one file per concern.
//! - [`client`] (feature `client`): the client the command line uses with
//!   `--server`: reqwest and the wire types, nothing of the host.
//!
//! The client never depends on the server: with only the `client` feature
//! this crate builds without the host, the store or the sandbox.

pub mod api;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "client")]
pub use client::{Client, ClientError};
