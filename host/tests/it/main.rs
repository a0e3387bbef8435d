//! Integration tests: a real PostgreSQL (DATABASE_URL, else a testcontainers
//! PostgreSQL) and the real components `cargo xtask build-guests` produced.
//! One test binary, so the host links once.

mod bad_input;
mod cli;
mod cluster;
mod conflict;
mod crowd;
mod faults;
mod global_log;
mod group_commit;
mod idempotent;
mod languages;
mod loading;
mod long_streams;
mod openapi;
mod projections;
mod properties;
mod queued;
mod relay;
mod reload;
mod sandbox;
mod scenario;
mod server;
mod settle;
mod sharing;
mod snapshots;
mod spec;
mod tls;
mod upgrade;
mod util;
