//! The customer's side of the system (the `mpc` phone client) and the payment server's phone-facing
//! server. The server reaches the payment server's data only through [`backend::Backend`].
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod backend;
