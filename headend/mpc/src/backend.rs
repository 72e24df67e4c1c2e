//! What the phone-facing server needs from the payment server (`concentrator-headend` implements it).
//!
//! The contract between the two crates: change it only together with the head-end.

use concentrator_security::sqn::SqnGenerator;

/// A customer as the payment server keeps it. Created by provisioning (id, MSISDN, IMSI, authorization
/// code, linked meters); the registration over the phone client sets the user name, the password hash
/// and the AKA credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Stable id from provisioning, e.g. `C-0001`.
    pub id: String,
    /// User name chosen at registration (unique); `None` before registration.
    pub user: Option<String>,
    pub msisdn: String,
    /// The customer's subscriber identity for AKA with the payment server (6–15 digits).
    pub imsi: String,
    /// AKA credentials, set at registration.
    pub k: Option<[u8; 16]>,
    pub opc: Option<[u8; 16]>,
    /// The network side's SQN state for this customer; saved (flushed) before a challenge is sent.
    pub sqn: SqnGenerator,
    /// `scrypt$<log2 N>$<r>$<p>$<salt hex>$<hash hex>`; `None` before registration.
    pub password_hash: Option<String>,
    /// Meter numbers (contract ids) the customer may top up and watch.
    pub meters: Vec<String>,
}

/// What the customer sees of one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterView {
    /// The meter number (contract id), as on the meter and in the tokens.
    pub meter: String,
    pub dwelling: String,
    pub currency: String,
    /// The balance the gateway last reported (minor units; negative on emergency credit) and when.
    pub balance_minor: Option<i64>,
    pub balance_at: Option<u64>,
    /// Supply on (relay closed), as last reported.
    pub supply_on: Option<bool>,
    /// The last imported-energy reading, Wh, and when.
    pub last_reading_wh: Option<u64>,
    pub last_reading_at: Option<u64>,
    /// Tokens bought and not yet confirmed applied by the gateway.
    pub pending_tokens: u32,
}

/// Where a bought token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Signed and queued for the gateway; no receipt yet.
    Pending,
    /// The gateway's signed receipt arrived.
    Applied,
    /// The gateway refused it (reason in the history).
    Refused,
}

/// A purchase: the payment record entry and the signed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// Sequence number of the purchase in the payment record.
    pub record: u64,
    pub meter: String,
    pub serial: u64,
    pub amount_minor: u64,
    pub currency: String,
    pub issued_at: u64,
    pub expires_at: u64,
    /// The `SignedToken` wire octets (docs/protocol.md), for the customer to keep and hand to the gateway
    /// through the local path when the uplink is down.
    pub token: Vec<u8>,
    pub delivery: Delivery,
}

/// One line of a customer's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub at: u64,
    pub meter: String,
    pub what: HistoryKind,
    pub serial: Option<u64>,
    pub amount_minor: Option<u64>,
    pub balance_after_minor: Option<i64>,
    /// For people: a refusal's reason, an alert's text.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    Purchased,
    Applied,
    Refused,
    LowCredit,
    SupplyCut,
    SupplyRestored,
}

/// Pushed to a customer's open sessions as it happens (not polled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The gateway's receipt for a token arrived.
    Applied {
        meter: String,
        serial: u64,
        amount_minor: u64,
        balance_after_minor: i64,
        at: u64,
    },
    /// The gateway refused a token.
    Refused {
        meter: String,
        serial: u64,
        reason: String,
        at: u64,
    },
    /// The gateway reported low credit (event 10).
    LowCredit {
        meter: String,
        balance_minor: i64,
        at: u64,
    },
    /// The supply was cut (event 1) or restored (event 2).
    SupplyCut {
        meter: String,
        at: u64,
    },
    SupplyRestored {
        meter: String,
        at: u64,
    },
    /// A bought token was sent to the meter's gateway (it may be sent again; this comes once).
    Delivered {
        meter: String,
        serial: u64,
        at: u64,
    },
    /// The gateway cannot apply a token yet, for a reason that may pass (no account until the meter's
    /// first reading, the meter is offline, the store is busy): the head-end sends it again by itself.
    Delayed {
        meter: String,
        serial: u64,
        reason: String,
        at: u64,
    },
    /// This many notices were dropped because the phone did not read them in time (its queue is
    /// bounded, [`crate::feed`]): what it shows may be incomplete; reload the history.
    Missed {
        count: u64,
        at: u64,
    },
}

impl Notice {
    /// The meter the notice is about (empty for [`Notice::Missed`]).
    pub fn meter(&self) -> &str {
        match self {
            Notice::Applied { meter, .. }
            | Notice::Refused { meter, .. }
            | Notice::LowCredit { meter, .. }
            | Notice::SupplyCut { meter, .. }
            | Notice::SupplyRestored { meter, .. }
            | Notice::Delivered { meter, .. }
            | Notice::Delayed { meter, .. } => meter,
            Notice::Missed { .. } => "",
        }
    }

    /// The token the notice is about, for the steps of a purchase (delivered, delayed, applied,
    /// refused).
    pub fn serial(&self) -> Option<u64> {
        match self {
            Notice::Applied { serial, .. }
            | Notice::Refused { serial, .. }
            | Notice::Delivered { serial, .. }
            | Notice::Delayed { serial, .. } => Some(*serial),
            _ => None,
        }
    }

    /// Whether it says where a purchase is on its way (delivered, delayed), which a phone sees only
    /// when it asked for it ([`crate::message::Sealed::Watch`]'s `progress`).
    pub fn is_progress(&self) -> bool {
        matches!(self, Notice::Delivered { .. } | Notice::Delayed { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Something named does not exist (a meter number, a customer).
    #[error("{0}")]
    NotFound(String),
    /// The request is not allowed (not the customer's meter, an amount out of range, ...).
    #[error("{0}")]
    Refused(String),
    /// The store or another internal part failed; the request may be repeated.
    #[error("{0}")]
    Unavailable(String),
}

/// The payment server, as seen from the phone-facing server. Implementations are shared between the
/// connection threads.
pub trait Backend: Send + Sync {
    fn customer_by_auth_code(&self, code: &str) -> Result<Option<Customer>, BackendError>;
    fn customer_by_user(&self, user: &str) -> Result<Option<Customer>, BackendError>;
    fn customer_by_imsi(&self, imsi: &str) -> Result<Option<Customer>, BackendError>;
    /// Writes the record, flushed. `consume_code`: the authorization code used up by this write (a
    /// registration), invalidated in the same transaction.
    fn save_customer(&self, c: &Customer, consume_code: Option<&str>) -> Result<(), BackendError>;
    /// The customer's meters.
    fn meters(&self, customer_id: &str) -> Result<Vec<MeterView>, BackendError>;
    /// Buys credit: records the purchase in the payment record, signs a token with the next serial of
    /// the meter, queues it for the gateway, and returns it. Idempotent by `request_id`: the same request
    /// id returns the same purchase (a phone that lost the answer asks again without paying twice).
    fn top_up(
        &self,
        customer_id: &str,
        meter: &str,
        amount_minor: u64,
        request_id: [u8; 16],
    ) -> Result<Purchase, BackendError>;
    /// The customer's purchases and meter events, newest first.
    fn history(
        &self,
        customer_id: &str,
        meter: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, BackendError>;
    /// The customer's purchases, newest first (with tokens, for a phone that lost its copies).
    fn purchases(&self, customer_id: &str, limit: usize) -> Result<Vec<Purchase>, BackendError>;
    /// Notices for the customer's meters from now on, until the feed is dropped; bounded
    /// ([`crate::feed`]).
    fn subscribe(&self, customer_id: &str) -> crate::feed::NoticeFeed;
    /// The login gate every phone-facing front end of this payment server shares (one count of
    /// failed logins and registrations, one SQN lock; [`crate::server::gate`]). `None`: each server
    /// makes its own from its configuration.
    fn gate(&self) -> Option<std::sync::Arc<crate::server::gate::Gate>> {
        None
    }
}
