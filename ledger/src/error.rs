//! Errors of the ledger, each naming what failed, where, and what to do.

use concentrator_security::restore::RestoreError;
use concentrator_security::TokenError;

use crate::audit::AuditError;
use crate::config::ConfigError;
use crate::outbox::TopUpReceipt;
use crate::store::StoreError;

/// A failure of a ledger operation. Nothing the operation was about has been acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record does not decode.
    #[error("ledger record {key} in {keyspace} is corrupt: {reason}; restore the store from a backup and let the head-end reconcile")]
    Corrupt {
        /// The keyspace.
        keyspace: &'static str,
        /// The key (printable).
        key: String,
        /// Why.
        reason: String,
    },
    /// The audit chain is broken.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The store was written by a newer version of the software.
    #[error("ledger store has schema version {found}, this build reads up to {supported}; install the newer concentrator again (never downgrade a ledger)")]
    SchemaTooNew {
        /// In the store.
        found: u32,
        /// This build's.
        supported: u32,
    },
    /// The store holds data but no schema version.
    #[error("ledger store holds data but no schema version; it was not written by the ledger: point the daemon at the right store directory")]
    Unversioned,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store has no configuration and none was given.
    #[error("ledger store has no stored configuration: start concentratord once to initialise it")]
    NoStoredConfig,
    /// No account for the meter.
    #[error("meter {meter:?} has no open account in this ledger: check the meter id, or open an account for it")]
    UnknownMeter {
        /// The meter.
        meter: String,
    },
    /// The meter already has an account.
    #[error("meter {meter:?} already has an open account: use a change of tenancy to replace it")]
    AccountExists {
        /// The meter.
        meter: String,
    },
    /// Emergency credit cannot be selected now.
    #[error("emergency credit for meter {meter:?} is not available: {reason}")]
    EmergencyRefused {
        /// The meter.
        meter: String,
        /// Why.
        reason: String,
    },
    /// A meter id that cannot be used.
    #[error("meter id {meter:?} is invalid: use 1 to 32 printable ASCII characters, as printed on the meter")]
    BadMeterId {
        /// The id.
        meter: String,
    },
    /// Signing a receipt or settlement with the gateway key failed.
    #[error("signing the {what} with the gateway key failed: {reason}; check the gateway key and certificate")]
    Signing {
        /// What was signed.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Writing output (export) failed.
    #[error("writing ledger output failed: {0}")]
    Output(String),
}

/// Why a top-up was not applied. In every case the ledger is unchanged and nothing was acknowledged,
/// except [`TopUpError::Replayed`], which hands back the original receipt of the earlier application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopUpError {
    /// The token failed verification (malformed, forged signature, untrusted CA, not a head-end key,
    /// key id mismatch, another meter, expired, not yet valid).
    #[error("token refused: {0}")]
    Token(#[from] TokenError),
    /// The token is for a meter without an account here.
    #[error("token for meter {meter:?}, which has no account on this gateway: deliver it to the gateway that serves that meter")]
    UnknownMeter {
        /// The token's meter.
        meter: String,
    },
    /// This very token was applied before; nothing changed. The original receipt is attached.
    #[error("token {serial} for meter {meter:?} was already applied; nothing changed (the original receipt is returned)")]
    Replayed {
        /// The meter.
        meter: String,
        /// The serial.
        serial: u64,
        /// The receipt of the first application.
        original: Box<TopUpReceipt>,
    },
    /// The serial was applied to this meter before the gateway's store was restored from the head-end
    /// (listed in the head-end's account statement); nothing changed.
    #[error("token {serial} for meter {meter:?} was applied before this gateway's store was restored from the head-end; nothing changed (the head-end's account statement lists it as applied)")]
    AppliedBeforeRestore {
        /// The meter.
        meter: String,
        /// The serial.
        serial: u64,
    },
    /// The serial was issued to the meter's previous tenant and never applied before the change of
    /// tenancy: it is that customer's money, refused here; the head-end refunds it.
    #[error("token {serial} for meter {meter:?} was bought by {customer:?}, whose account was closed by change of tenancy order {order_id}: refused, nothing changed; the head-end refunds it to {customer:?}")]
    PreviousTenant {
        /// The meter.
        meter: String,
        /// The serial.
        serial: u64,
        /// The customer who left.
        customer: String,
        /// The order that closed the account.
        order_id: u64,
    },
    /// A different token with an already used serial: a head-end fault.
    #[error("a different token with serial {serial} for meter {meter:?} was already applied: report this to the head-end operator")]
    SerialConflict {
        /// The meter.
        meter: String,
        /// The serial.
        serial: u64,
    },
    /// The token's currency is not the ledger's.
    #[error("token currency {got} is not the ledger's currency {expected}: the head-end must issue the token in {expected}")]
    Currency {
        /// In the token.
        got: String,
        /// Configured.
        expected: String,
    },
    /// The amount is beyond what the ledger accepts.
    #[error("token amount {amount} is beyond what one token may carry ({max}): a head-end fault")]
    Amount {
        /// The amount.
        amount: u64,
        /// The limit.
        max: u64,
    },
    /// The application could not be persisted; it is not applied and not acknowledged. Retry later.
    #[error("top-up not acknowledged: {0}")]
    Ledger(#[from] LedgerError),
}

/// Why an account was not restored from the head-end's statement. [`RestoreAccountError::Ledger`] is
/// temporary (send the statement again); the others are final for this statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreAccountError {
    /// The statement failed verification (signature, chain, role, key id, meter, age, fields).
    #[error(transparent)]
    Statement(#[from] RestoreError),
    /// The meter already has an account here: nothing to restore.
    #[error("meter {meter:?} already has an account on this gateway; a restore only creates a lost account")]
    AccountExists {
        /// The meter.
        meter: String,
    },
    /// The statement's currency is not the ledger's.
    #[error("account statement currency {got} is not the ledger's currency {expected}: the head-end must state the account in {expected}")]
    Currency {
        /// In the statement.
        got: String,
        /// Configured.
        expected: String,
    },
    /// The restore could not be persisted; nothing changed. Retry later.
    #[error("account not restored: {0}")]
    Ledger(#[from] LedgerError),
}
