//! The HTTP API's integration tests: servers on loopback sockets over
//! both stores, the OpenAPI document (and schemathesis against it), hot
//! reload.

use eshost_test_support as util;
use eshost_test_support::conformance;

mod answers;
mod auth;
mod connections;
mod console;
mod deploy;
mod observe;
mod openapi;
mod personal;
mod reactors;
mod reload;
mod same_origin;
mod server;
