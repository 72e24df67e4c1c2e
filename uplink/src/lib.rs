//! The concentrator's way to the utility's head-end.
//!
//! Used by `concentratord`. Contents:
//!
//! - [`modem`]: the cellular modem on its AT port: a sans-IO AT engine, a supervisor that keeps the modem
//!   registered and the data link up with staged recovery (reconnect, reset, power-key pulse, then a
//!   "needs attention" report), and a simulated modem with faults for tests and demos;
//! - [`contexts`]: the security contexts the uplink seals and opens with, provisioned or made by AKA with
//!   the head-end (the gateway's USIM end), with their counters and SQN windows kept across restarts;
//! - [`link`]: the data link, pppd supervised as a child process with a chat script generated here;
//! - [`mqtt`]: MQTT over TLS to the head-end (rumqttc), draining durable outboxes in sled (the uplink's
//!   own for readings and events, and the ledger's for receipts), with birth and death messages,
//!   reconnect backoff, and verified, at-most-once downlink commands.
//!
//! The wire messages are `concentrator-protocol`'s; the design is in `docs/uplink.md`.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod contexts;
pub mod link;
pub mod modem;
pub mod mqtt;
#[cfg(feature = "testkit")]
pub mod testkit;
