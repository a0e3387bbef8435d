//! The write side's integration tests: a real PostgreSQL (DATABASE_URL)
//! and the SQLite file store, and the real components `cargo xtask
//! build-guests` produced. One test binary, so the host links once.

use eshost_test_support as util;
use eshost_test_support::conformance;

mod bad_input;
mod conflict;
mod deployments;
mod faults;
mod faulty;
mod group_commit;
mod idempotent;
mod languages;
mod long_streams;
mod properties;
mod queued;
mod reactions;
mod sandbox;
mod scenario;
mod settle;
mod sharing;
mod snapshots;
mod tls;
mod upgrade;
