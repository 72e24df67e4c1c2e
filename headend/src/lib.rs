//! The reference payment server (PS) `concentrator-headend`: the other end of the concentrator system.
//!
//! It keeps the subscribers (meters, gateways, customers) and their AKA credentials, runs AKA and the
//! security mode with every meter behind a gateway over MQTT (network side), signs credit tokens and
//! delivers them to the gateways until their receipts arrive, ingests readings, events, receipts and
//! account summaries, keeps an append-only hash-chained payment record, and serves the customers' phone
//! client through `concentrator-mpc`'s server and this crate's [`backend::PaymentServer`].
//!
//! Embedding (the all-in-one demo):
//!
//! ```no_run
//! use concentrator_headend::{config::Config, headend::{HeadEnd, StartOptions}, init, provision, spec::Spec};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let conf_path = init::run("pilot".as_ref(), &init::InitOptions::default())?;
//! let config = Config::load(&conf_path)?;
//! let he = HeadEnd::open(config.clone())?;
//! let spec = Spec::load("pilot-spec.toml".as_ref())?;
//! provision::run(&config, &he.store(), &spec, &provision::ProvisionOptions {
//!     out: "bundles".into(), rekey: false, paths: provision::BundlePaths::Local, validator: None,
//! })?;
//! let handle = he.start(StartOptions { serve_phones: true, ..Default::default() })?;
//! let backend = handle.backend();          // impl concentrator_mpc::backend::Backend
//! // ...
//! handle.stop()?;
//! # Ok(()) }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod audit;
pub mod backend;
pub mod config;
pub mod deprovision;
pub mod engine;
pub mod error;
pub mod headend;
pub mod init;
pub mod money;
pub mod mqtt;
pub mod notify;
pub mod pki;
pub mod provision;
pub mod remote;
pub mod spec;
pub mod status;
pub mod store;
pub mod tenancy;
pub mod web;

pub use error::{HeadEndError, Result};
pub use headend::{HeadEnd, HeadEndHandle, StartOptions};

/// Logs `level` and above of this project's crates to stderr (`LEVEL target: message`): the
/// command line's log, and the load generator's for the worker it runs in its own process. A
/// second call leaves the first logger in place.
pub fn log_to_stderr(level: log::LevelFilter) {
    let _ = log::set_boxed_logger(Box::new(StderrLog(level))).map(|()| log::set_max_level(level));
}

struct StderrLog(log::LevelFilter);

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) && r.target().starts_with("concentrator") {
            eprintln!("{} {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}
