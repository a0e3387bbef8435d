//! The read side's integration tests: following the global log and
//! projection guests, on both stores.

use eshost_test_support as util;
use eshost_test_support::conformance;

mod projections;
mod subscription;
