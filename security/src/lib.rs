//! Security core of the concentrator: mutual authentication and message protection for smart meters.
//!
//! The seed design authenticates a meter and the server to each other with 3GPP AKA and protects every
//! message with integrity and ciphering. This crate is that, for all three parties alike:
//!
//! - the **gateway** (`concentratord`), which runs AKA on each meter's behalf, checks SQN freshness, keeps
//!   the security contexts and applies credit tokens;
//! - the **head-end**, which generates authentication vectors, issues TIDs and signs credit tokens;
//! - the **phone client**, which carries tokens and receipts and verifies their signatures.
//!
//! It does no I/O: every function takes values (keys, messages, the current time) and returns values, so
//! that the callers own storage, clocks and transport.
//!
//! Contents, from primitives up:
//!
//! | module | what |
//! | --- | --- |
//! | [`milenage`] | f1..f5*, OPc, AUTN, AUTS (TS 35.206, TS 33.102) |
//! | [`kasumi`], [`uea1_uia1`] | KASUMI, UEA1 (f8) and UIA1 (f9) over bit lengths (TS 35.201/35.202) |
//! | [`eea2_eia2`] | 128-EEA2 (AES-CTR) and 128-EIA2 (AES-CMAC) over bit lengths (TS 33.401 Annex B) |
//! | [`sqn`] | SEQ‖IND freshness on the meter side, fresh SQN generation per subscriber (TS 33.102 Annex C) |
//! | [`aka`] | both ends of an AKA run: vector generation, AUTN checking (MAC before SQN), resynchronisation |
//! | [`security_mode`] | algorithm agreement and the key lifetime of a security context |
//! | [`envelope`] | the protected-message wire format and its verification |
//! | [`identity`] | KID derivation, TIDs bound to a session |
//! | [`suci`] | ECIES concealment of an identity (TS 33.501 Annex C, profiles A and B) |
//! | [`token`], [`receipt`], [`signed`], [`pki`] | credit tokens and receipts signed with ECDSA P-256, chains to the utility CA |
//! | [`clock`] | the clock tolerances every party shares (skew, certificate backdating) |
//! | [`restore`] | the head-end's signed account statement that restores a gateway's lost account |
//! | [`tenancy`] | the head-end's signed change-of-tenancy order and the gateway's signed settlement |
//!
//! The wire formats are described in `docs/security.md`.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod aes128;
pub mod aka;
pub mod bits;
pub mod clock;
pub mod eea2_eia2;
pub mod envelope;
pub mod identity;
pub mod kasumi;
mod kasumi_sbox;
pub mod milenage;
pub mod pki;
pub mod receipt;
pub mod restore;
pub mod security_mode;
pub mod signed;
pub mod sqn;
pub mod suci;
pub mod tenancy;
pub mod token;
pub mod uea1_uia1;
pub mod wire;

pub use bits::{Direction, LengthError};
pub use eea2_eia2::{Eea2, Eia2};
pub use envelope::{Channel, EnvelopeError};
pub use kasumi::Kasumi;
pub use milenage::{Milenage, MilenageOutput};
pub use security_mode::{SecurityContext, SecurityMode};
pub use token::{CreditToken, SignedToken, TokenError, TokenSigner, TokenVerifier};
pub use uea1_uia1::{Uea1, Uia1};
