//! The concentrator's prepayment engine: a credit ledger that never loses or double-applies money.
//!
//! Used by `concentratord` (its bus scheduler feeds readings and relay read-backs, its uplink feeds tokens
//! and drains the outbox) and by the `concentrator` CLI (`accounts`, `topup`, `audit`).
//!
//! The rules that make it crash-safe by construction (see `docs/ledger.md`):
//! - **credit is derived**: `balance = opening + Σ tokens − Σ charges`, charges coming from the meter's
//!   own cumulative register; after a crash the consumption since the last durable checkpoint is charged
//!   once at the tariff in force;
//! - **a top-up is acknowledged only after the store has flushed** the one transaction that records its
//!   serial, adds the credit, recovers debt, appends the audit entry and puts the signed receipt into the
//!   outbox;
//! - **each serial applies once**, in any order: the ledger keeps the set of serials applied per meter
//!   (not only the highest), a token seen before returns its original receipt, and an account restored
//!   from the head-end's signed statement refuses the serials applied before the restore;
//! - a register that goes backwards, jumps, or belongs to a new meter is an event, never a negative charge.
//!
//! The engine is sans-IO apart from its [`Store`]: see [`Ledger`] for the inputs and [`Output`] for what
//! it asks the daemon to do.
//!
//! ```
//! use concentrator_ledger::{LedgerConfig, Ledger, NewAccount, MemStore, testkit::TestPki};
//!
//! let pki = TestPki::generate().unwrap();
//! let mut ledger = Ledger::open(
//!     MemStore::new(),
//!     LedgerConfig::example("gw-1"),
//!     pki.verifier(),
//!     pki.gateway_signer().unwrap(),
//! )
//! .unwrap();
//! let now = 1_717_430_400; // 2024-06-03 16:00 UTC
//! ledger.open_account(NewAccount {
//!     meter_id: "M1".into(), dwelling: "A-101".into(), model: None, protected: false,
//!     opening_balance_minor: 0, opening_debt_minor: 0, register_wh: 1_000, meter_serial: None,
//! }, now).unwrap();
//! let token = pki.token("M1", 1, 2_000, now - 60, now + 86_400).unwrap();
//! let receipt = ledger.apply_token(&token, now).unwrap();
//! assert_eq!(receipt.receipt.balance_after_minor, 2_000);
//! ledger.on_register("M1", "SN-1", 3_000, now + 900).unwrap(); // 2 kWh at 25 c = 0.50
//! assert_eq!(ledger.account("M1").unwrap().balance_minor(), 1_950);
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod account;
pub mod account_record;
pub mod anchor;
pub mod archive;
pub mod audit;
pub mod calendar;
mod charging;
pub mod check;
pub mod codec;
pub mod config;
mod error;
mod ledger;
pub mod money;
pub mod outbox;
pub mod relay;
pub mod relay_order;
mod restore;
pub mod schema;
pub mod store;
pub mod tariff;
pub mod tariff_schedule;
pub mod tenancy;
pub mod testkit;
mod topup;

pub use account::{Account, AccountState, RelayHold, RelayTarget};
pub use audit::{RelayAction, RelayState};
pub use charging::Reading;
pub use concentrator_durable::open_sled;
pub use config::{LedgerConfig, ReconnectMode};
pub use error::{LedgerError, RestoreAccountError, TopUpError};
pub use ledger::{
    load_accounts, stored_config, Ledger, LedgerEvent, NewAccount, Output, RelayCommand,
};
pub use outbox::{Outbox, OutboxEntry, OutboxKind, TopUpReceipt};
pub use relay_order::{OrderOutcome, RelayOrder};
pub use store::{DurableSync, FaultPlan, FaultyStore, MemStore, SledStore, Store, StoreError};
pub use tariff_schedule::{TariffChange, TariffOutcome, TariffRefused};
pub use tenancy::{
    NewTenant, OrderRecord, Reconciliation, Settlement, SignedSettlement, TenancyOrderError,
    TenancyOutcome,
};
pub use topup::{token_digest, token_key, MAX_TOKEN_AMOUNT};
