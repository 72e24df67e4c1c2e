//! The concentrator appliance: the daemon `concentratord` and the installer's tool `concentrator`.
//!
//! The library holds everything both binaries share (configuration, logging, the subcommands), so that
//! integration tests can drive the same code the binaries run.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cli;
