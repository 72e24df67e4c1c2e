//! The shared test helpers live in the crate's `testkit` feature (the daemon's tests use them too).
#![allow(unused_imports)]

pub use concentrator_uplink::testkit::*;
