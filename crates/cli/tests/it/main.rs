//! The `eshost` binary, driven from outside as a user drives it: the
//! command line, `eshost serve` as a process, several hosts behind HAProxy,
//! crowds of one-shot processes, followers, the relay to NATS.

use eshost_test_support as util;
use eshost_test_support::conformance;

mod checkout;
mod cli;
mod cluster;
mod console;
mod crowd;
mod deploy;
mod global_log;
mod languages;
mod personal;
mod projection_run;
mod reactor_failover;
mod reactor_run;
mod reference;
mod relay;
mod sandbox;
mod scaffold;
mod serve;
mod settings;
mod spec;
mod tls;
mod traces;
