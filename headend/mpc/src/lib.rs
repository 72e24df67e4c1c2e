//! The customer's side of the system and the payment server's phone-facing server.
//!
//! - [`client::Client`]: what the phone app (and the `mpc` command-line stand-in) uses: register with the
//!   authorization code from the bank counter, log in (3GPP AKA against the server's challenge, which also
//!   authenticates the server, plus the password), then meters, top-up, balance, history, purchases and
//!   pushed notices, every request and answer in a protected envelope inside TLS.
//! - [`server::serve`]: the server end, run by the payment server (`concentrator-headend`), which reaches
//!   customers, meters and purchases only through [`backend::Backend`].
//! - [`profile`]: the phone's stored credentials and bought tokens (used by the `mpc` binary).
//!
//! The wire format is specified in docs/protocol.md, *Phone client and payment server*; [`wire`] frames
//! messages and [`message`] defines them.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod backend;
pub mod client;
pub mod feed;
pub mod human;
pub mod message;
pub mod password;
pub mod profile;
pub mod server;
pub mod tls;
pub mod wire;

/// The envelope sender name of the payment server's answers (device-name kind).
pub const SERVER_SENDER: &str = "payment-server";

/// Seconds since the Unix epoch (0 if the clock is before it, which the envelope's window then refuses).
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
