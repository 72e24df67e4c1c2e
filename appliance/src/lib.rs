//! The concentrator appliance: the daemon `concentratord` and the installer's tool `concentrator`.
//!
//! The library holds everything both binaries share (configuration, logging, the daemon's life cycle,
//! the subcommands), so that integration tests drive the same code the binaries run.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod balance;
pub mod bus_worker;
pub mod buses;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod drivers;
pub mod health;
pub mod logging;
pub mod modem;
pub mod notify;
pub mod ops;
pub mod power;
pub mod prepay;
pub mod scan;
pub mod scheduler;
pub mod sim_meters;
pub mod sms;
pub mod status;
pub mod timekeeper;
pub mod trial;
pub mod update;
pub mod uplink;
pub mod web;
pub mod words;
pub mod workers;
pub mod zigbee;
