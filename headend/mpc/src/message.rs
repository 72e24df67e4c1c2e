//! The messages between the phone and the payment server (docs/protocol.md, *Phone client and payment
//! server*): CBOR maps with integer keys, like the gateway protocol.
//!
//! Two layers. The outer [`Message`] (version, request id, [`Plain`] body) travels inside TLS; it carries
//! the registration and login exchanges in the clear (of the envelope; TLS still protects them) and,
//! after login, [`Plain::Sealed`]: a protected envelope whose plaintext is an [`Inner`] (request id
//! again, and a [`Sealed`] body). The request id inside the envelope must equal the outer one, so a
//! relay cannot pair an answer with another request.

use std::fmt;

use concentrator_security::SecurityMode;
use minicbor::{Decode, Encode};
use thiserror::Error;

use crate::backend::{
    BackendError, Delivery, HistoryEntry, HistoryKind, MeterView, Notice, Purchase,
};

/// The message version this crate writes and reads.
pub const VERSION: u8 = 1;
/// The newest [`NoticeWire`] kind this crate reads and writes (see [`Sealed::Watch`]).
pub const NEWEST_NOTICE_KIND: u8 = 8;
/// What a client that does not say reads: the kinds of the first version.
pub const FIRST_NOTICE_KINDS: u8 = 5;
/// The request id of messages that answer no request (pushed notices, errors about the connection).
pub const UNSOLICITED: u64 = 0;

/// Why octets are not a message of this protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// Not CBOR of the expected shape.
    #[error("malformed {what}: {reason}; the peer is not speaking mpc protocol v1 or the message was corrupted")]
    Malformed {
        /// Which layer ("message" or "sealed request/answer").
        what: &'static str,
        /// What the CBOR decoder said.
        reason: String,
    },
    /// A version this end does not read.
    #[error(
        "message version {0} is not supported (this end reads {VERSION}); upgrade the older end"
    )]
    UnsupportedVersion(u64),
    /// A field value that cannot be right.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A notice of a kind this end does not know (a newer server's): skipped, not an error of the
    /// connection.
    #[error("notice kind {0} is not one this client knows (1 to 8); it is skipped: upgrade mpc to see it")]
    UnknownNotice(u8),
    /// The encoder failed (only on a bug: writing to a Vec does not fail).
    #[error("cannot encode {0}")]
    Encode(&'static str),
}

/// The outer message.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Message {
    /// [`VERSION`].
    #[n(0)]
    pub version: u8,
    /// The request id: chosen by the client (never 0), copied into the answer; 0 for unsolicited messages.
    #[n(1)]
    pub id: u64,
    /// The body.
    #[n(2)]
    pub body: Plain,
}

/// An algorithm pair, `[integrity id, ciphering id]` as in the protected envelope's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct ModePair {
    /// Integrity algorithm id (1 UIA1, 2 128-EIA2).
    #[n(0)]
    pub integrity: u8,
    /// Ciphering algorithm id (1 UEA1, 2 128-EEA2).
    #[n(1)]
    pub ciphering: u8,
}

impl From<SecurityMode> for ModePair {
    fn from(m: SecurityMode) -> Self {
        ModePair {
            integrity: m.integrity.id(),
            ciphering: m.ciphering.id(),
        }
    }
}

impl ModePair {
    /// The pair as a security mode, if it is one this protocol allows (AES or KASUMI; never unciphered).
    pub fn mode(self) -> Option<SecurityMode> {
        [SecurityMode::AES, SecurityMode::KASUMI]
            .into_iter()
            .find(|m| ModePair::from(*m) == self)
    }
}

/// Outer bodies: registration, login, the sealed envelope, errors. Encoded `[kind, {fields}]`.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub enum Plain {
    /// Client: register with the authorization code from the bank counter.
    #[n(1)]
    Register {
        /// The one-time authorization code.
        #[n(0)]
        code: String,
        /// The user name chosen.
        #[n(1)]
        user: String,
        /// The password chosen.
        #[n(2)]
        password: String,
    },
    /// Server: the registration is done; the AKA credentials, sent this once.
    #[n(2)]
    Registered {
        /// The customer's id at the utility.
        #[n(0)]
        customer: String,
        /// The subscriber identity for AKA.
        #[n(1)]
        imsi: String,
        /// K.
        #[cbor(n(2), with = "minicbor::bytes")]
        k: [u8; 16],
        /// OPc.
        #[cbor(n(3), with = "minicbor::bytes")]
        opc: [u8; 16],
    },
    /// Client: start a login.
    #[n(3)]
    Login {
        /// The user name, or the IMSI (all digits).
        #[n(0)]
        identity: String,
        /// The algorithm pairs the client supports, preferred first.
        #[n(1)]
        modes: Vec<ModePair>,
    },
    /// Server: an AKA challenge.
    #[n(4)]
    Challenge {
        /// RAND.
        #[cbor(n(0), with = "minicbor::bytes")]
        rand: [u8; 16],
        /// AUTN.
        #[cbor(n(1), with = "minicbor::bytes")]
        autn: [u8; 16],
    },
    /// Client: the challenge verified and SQN was fresh: RES and the password.
    #[n(5)]
    Response {
        /// The RAND answered.
        #[cbor(n(0), with = "minicbor::bytes")]
        rand: [u8; 16],
        /// RES.
        #[cbor(n(1), with = "minicbor::bytes")]
        res: Vec<u8>,
        /// The password.
        #[n(2)]
        password: String,
    },
    /// Client: the challenge verified but SQN was stale: resynchronise.
    #[n(6)]
    SyncFailure {
        /// The RAND answered.
        #[cbor(n(0), with = "minicbor::bytes")]
        rand: [u8; 16],
        /// AUTS.
        #[cbor(n(1), with = "minicbor::bytes")]
        auts: [u8; 14],
    },
    /// Client: AUTN did not verify; the client stops (the server is not the utility's).
    #[n(7)]
    MacFailure {
        /// The RAND answered.
        #[cbor(n(0), with = "minicbor::bytes")]
        rand: [u8; 16],
    },
    /// Server: logged in; both ends now make the security context.
    #[n(8)]
    LoggedIn {
        /// The customer's id.
        #[n(0)]
        customer: String,
        /// The user name (the client's envelope sender).
        #[n(1)]
        user: String,
        /// The pair chosen from the client's list.
        #[n(2)]
        mode: ModePair,
        /// FRESH for UIA1.
        #[n(3)]
        fresh: u32,
        /// Key lifetime, seconds.
        #[n(4)]
        lifetime_s: u64,
        /// The envelope timestamp window, seconds.
        #[n(5)]
        window_s: u64,
    },
    /// Either side: a protected envelope holding an [`Inner`].
    #[n(9)]
    Sealed {
        /// The envelope octets.
        #[cbor(n(0), with = "minicbor::bytes")]
        envelope: Vec<u8>,
    },
    /// Client: end the session (the connection stays open for another login).
    #[n(10)]
    Logout {},
    /// Server: a request outside a session failed, or the connection is about to close.
    #[n(11)]
    Error {
        /// [`ErrorCode`] number.
        #[n(0)]
        code: u16,
        /// For people.
        #[n(1)]
        message: String,
    },
}

impl Plain {
    /// The kind's name, for logs and errors (never the fields: some are secrets).
    pub fn name(&self) -> &'static str {
        match self {
            Plain::Register { .. } => "register",
            Plain::Registered { .. } => "registered",
            Plain::Login { .. } => "login",
            Plain::Challenge { .. } => "challenge",
            Plain::Response { .. } => "response",
            Plain::SyncFailure { .. } => "sync failure",
            Plain::MacFailure { .. } => "MAC failure",
            Plain::LoggedIn { .. } => "logged in",
            Plain::Sealed { .. } => "sealed",
            Plain::Logout {} => "logout",
            Plain::Error { .. } => "error",
        }
    }

    /// An error body.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Plain {
        Plain::Error {
            code: code as u16,
            message: message.into(),
        }
    }
}

impl fmt::Debug for Plain {
    /// Names the kind only: passwords, K and OPc must not reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plain::{}", self.name())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("version", &self.version)
            .field("id", &self.id)
            .field("body", &self.body)
            .finish()
    }
}

/// The plaintext of a sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Inner {
    /// Equals the outer message's id.
    #[n(0)]
    pub id: u64,
    /// The body.
    #[n(1)]
    pub body: Sealed,
}

/// Requests and answers inside a session. Encoded `[kind, {fields}]`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub enum Sealed {
    /// Client: the customer's meters.
    #[n(1)]
    Meters {},
    /// Server: meters with their balance views (answers `Meters` and `Balance`).
    #[n(2)]
    MeterList {
        /// The meters.
        #[n(0)]
        meters: Vec<MeterWire>,
    },
    /// Client: buy credit.
    #[n(3)]
    TopUp {
        /// The meter number.
        #[n(0)]
        meter: String,
        /// Amount, minor currency units (> 0).
        #[n(1)]
        amount_minor: u64,
        /// Random, chosen once per purchase: asking again with it returns the same purchase.
        #[cbor(n(2), with = "minicbor::bytes")]
        request_id: [u8; 16],
    },
    /// Server: the purchase with its token.
    #[n(4)]
    Purchased {
        /// The purchase.
        #[n(0)]
        purchase: PurchaseWire,
    },
    /// Client: one meter's balance view, or every meter's.
    #[n(5)]
    Balance {
        /// The meter number; absent for all.
        #[n(0)]
        meter: Option<String>,
    },
    /// Client: history, newest first.
    #[n(6)]
    History {
        /// The meter number; absent for all.
        #[n(0)]
        meter: Option<String>,
        /// At most this many entries (the server caps it at 1000).
        #[n(1)]
        limit: u32,
    },
    /// Server: history entries.
    #[n(7)]
    HistoryList {
        /// The entries, newest first.
        #[n(0)]
        entries: Vec<HistoryWire>,
    },
    /// Client: purchases with their tokens, newest first.
    #[n(8)]
    Purchases {
        /// At most this many (the server caps it at 100).
        #[n(0)]
        limit: u32,
    },
    /// Server: purchases.
    #[n(9)]
    PurchaseList {
        /// Newest first.
        #[n(0)]
        purchases: Vec<PurchaseWire>,
    },
    /// Client: push notices on this connection from now on.
    #[n(10)]
    Watch {
        /// The newest notice kind the client reads ([`NEWEST_NOTICE_KIND`]): with 8, also the steps
        /// of a purchase on its way (6 delivered, 7 delayed) and 8 missed. Absent (what clients before
        /// those kinds send): only kinds 1–5.
        #[n(0)]
        newest_kind: Option<u8>,
    },
    /// Client: stop pushing notices.
    #[n(11)]
    Unwatch {},
    /// Server: done (answers `Watch` and `Unwatch`).
    #[n(12)]
    Done {},
    /// Server, unsolicited (id 0): something happened at one of the customer's meters.
    #[n(13)]
    Notice {
        /// The notice.
        #[n(0)]
        notice: NoticeWire,
    },
    /// Server: the request failed.
    #[n(14)]
    Error {
        /// [`ErrorCode`] number.
        #[n(0)]
        code: u16,
        /// For people.
        #[n(1)]
        message: String,
    },
}

impl Sealed {
    /// An error answer.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Sealed {
        Sealed::Error {
            code: code as u16,
            message: message.into(),
        }
    }

    /// An error answer for a backend failure.
    pub fn backend_error(e: &BackendError) -> Sealed {
        let code = match e {
            BackendError::NotFound(_) => ErrorCode::NotFound,
            BackendError::Refused(_) => ErrorCode::Refused,
            BackendError::Unavailable(_) => ErrorCode::Unavailable,
        };
        Sealed::error(code, e.to_string())
    }
}

/// Error codes, in [`Plain::Error`] and [`Sealed::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The octets were not a message (framing or CBOR); the connection closes.
    Malformed = 1,
    /// The message version is not 1; the connection closes.
    UnsupportedVersion = 2,
    /// The message is longer than the limit; the connection closes.
    TooLong = 3,
    /// The message is not expected now (a request before login, a response without a challenge).
    UnexpectedMessage = 4,
    /// Registration refused: the authorization code is unknown or already used (one answer for both).
    CodeRefused = 10,
    /// Registration refused: the user name is taken.
    UserTaken = 11,
    /// A field is not acceptable (user name, password length, amount 0, ...).
    BadRequest = 12,
    /// Login refused: the user name, the password or the key is wrong (one answer for all).
    LoginFailed = 13,
    /// Too many failed attempts; wait (the message says how long).
    TooManyAttempts = 14,
    /// The protected envelope was refused (altered, replayed, wrong sender); the connection closes.
    Protection = 20,
    /// The session's keys expired; log in again.
    SessionExpired = 21,
    /// The backend does not know a named thing.
    NotFound = 30,
    /// The backend refused the request.
    Refused = 31,
    /// The backend failed; the request may be repeated.
    Unavailable = 32,
    /// The server is stopping.
    ShuttingDown = 40,
    /// The connection was idle too long.
    IdleTimeout = 41,
}

impl ErrorCode {
    /// The code for a number, if it is one of ours.
    pub fn from_u16(n: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        [
            Malformed,
            UnsupportedVersion,
            TooLong,
            UnexpectedMessage,
            CodeRefused,
            UserTaken,
            BadRequest,
            LoginFailed,
            TooManyAttempts,
            Protection,
            SessionExpired,
            NotFound,
            Refused,
            Unavailable,
            ShuttingDown,
            IdleTimeout,
        ]
        .into_iter()
        .find(|c| *c as u16 == n)
    }
}

/// [`MeterView`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct MeterWire {
    #[n(0)]
    meter: String,
    #[n(1)]
    dwelling: String,
    #[n(2)]
    currency: String,
    #[n(3)]
    balance_minor: Option<i64>,
    #[n(4)]
    balance_at: Option<u64>,
    #[n(5)]
    supply_on: Option<bool>,
    #[n(6)]
    last_reading_wh: Option<u64>,
    #[n(7)]
    last_reading_at: Option<u64>,
    #[n(8)]
    pending_tokens: u32,
}

impl From<&MeterView> for MeterWire {
    fn from(m: &MeterView) -> Self {
        MeterWire {
            meter: m.meter.clone(),
            dwelling: m.dwelling.clone(),
            currency: m.currency.clone(),
            balance_minor: m.balance_minor,
            balance_at: m.balance_at,
            supply_on: m.supply_on,
            last_reading_wh: m.last_reading_wh,
            last_reading_at: m.last_reading_at,
            pending_tokens: m.pending_tokens,
        }
    }
}

impl From<MeterWire> for MeterView {
    fn from(m: MeterWire) -> Self {
        MeterView {
            meter: m.meter,
            dwelling: m.dwelling,
            currency: m.currency,
            balance_minor: m.balance_minor,
            balance_at: m.balance_at,
            supply_on: m.supply_on,
            last_reading_wh: m.last_reading_wh,
            last_reading_at: m.last_reading_at,
            pending_tokens: m.pending_tokens,
        }
    }
}

/// [`Purchase`] on the wire; `delivery`: 0 pending, 1 applied, 2 refused.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PurchaseWire {
    #[n(0)]
    record: u64,
    #[n(1)]
    meter: String,
    #[n(2)]
    serial: u64,
    #[n(3)]
    amount_minor: u64,
    #[n(4)]
    currency: String,
    #[n(5)]
    issued_at: u64,
    #[n(6)]
    expires_at: u64,
    #[cbor(n(7), with = "minicbor::bytes")]
    token: Vec<u8>,
    #[n(8)]
    delivery: u8,
}

impl From<&Purchase> for PurchaseWire {
    fn from(p: &Purchase) -> Self {
        PurchaseWire {
            record: p.record,
            meter: p.meter.clone(),
            serial: p.serial,
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            issued_at: p.issued_at,
            expires_at: p.expires_at,
            token: p.token.clone(),
            delivery: match p.delivery {
                Delivery::Pending => 0,
                Delivery::Applied => 1,
                Delivery::Refused => 2,
            },
        }
    }
}

impl TryFrom<PurchaseWire> for Purchase {
    type Error = MessageError;

    fn try_from(p: PurchaseWire) -> Result<Self, MessageError> {
        let delivery = match p.delivery {
            0 => Delivery::Pending,
            1 => Delivery::Applied,
            2 => Delivery::Refused,
            other => {
                return Err(MessageError::Invalid {
                    field: "purchase delivery",
                    reason: format!("{other} is not 0 (pending), 1 (applied) or 2 (refused)"),
                })
            }
        };
        Ok(Purchase {
            record: p.record,
            meter: p.meter,
            serial: p.serial,
            amount_minor: p.amount_minor,
            currency: p.currency,
            issued_at: p.issued_at,
            expires_at: p.expires_at,
            token: p.token,
            delivery,
        })
    }
}

/// [`HistoryEntry`] on the wire; `kind`: 1 purchased, 2 applied, 3 refused, 4 low credit, 5 supply cut,
/// 6 supply restored.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct HistoryWire {
    #[n(0)]
    at: u64,
    #[n(1)]
    meter: String,
    #[n(2)]
    kind: u8,
    #[n(3)]
    serial: Option<u64>,
    #[n(4)]
    amount_minor: Option<u64>,
    #[n(5)]
    balance_after_minor: Option<i64>,
    #[n(6)]
    detail: Option<String>,
}

const HISTORY_KINDS: [(u8, HistoryKind); 6] = [
    (1, HistoryKind::Purchased),
    (2, HistoryKind::Applied),
    (3, HistoryKind::Refused),
    (4, HistoryKind::LowCredit),
    (5, HistoryKind::SupplyCut),
    (6, HistoryKind::SupplyRestored),
];

impl From<&HistoryEntry> for HistoryWire {
    fn from(h: &HistoryEntry) -> Self {
        let kind = HISTORY_KINDS
            .iter()
            .find(|(_, k)| *k == h.what)
            .map_or(0, |(n, _)| *n);
        HistoryWire {
            at: h.at,
            meter: h.meter.clone(),
            kind,
            serial: h.serial,
            amount_minor: h.amount_minor,
            balance_after_minor: h.balance_after_minor,
            detail: h.detail.clone(),
        }
    }
}

impl TryFrom<HistoryWire> for HistoryEntry {
    type Error = MessageError;

    fn try_from(h: HistoryWire) -> Result<Self, MessageError> {
        let what = HISTORY_KINDS
            .iter()
            .find(|(n, _)| *n == h.kind)
            .map(|(_, k)| *k)
            .ok_or_else(|| MessageError::Invalid {
                field: "history kind",
                reason: format!("{} is not one of 1..=6", h.kind),
            })?;
        Ok(HistoryEntry {
            at: h.at,
            meter: h.meter,
            what,
            serial: h.serial,
            amount_minor: h.amount_minor,
            balance_after_minor: h.balance_after_minor,
            detail: h.detail,
        })
    }
}

/// [`Notice`] on the wire; `kind`: 1 applied, 2 refused, 3 low credit, 4 supply cut, 5 supply restored,
/// 6 delivered (sent to the gateway), 7 delayed (the gateway cannot apply it yet; `reason` says why),
/// 8 missed (`amount_minor` notices were dropped unread: reload). Kinds 6 to 8 are sent only to a connection that asked for them ([`Sealed::Watch`]'s `progress`);
/// a reader skips a kind it does not know ([`MessageError::UnknownNotice`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct NoticeWire {
    #[n(0)]
    kind: u8,
    #[n(1)]
    meter: String,
    #[n(2)]
    at: u64,
    #[n(3)]
    serial: Option<u64>,
    #[n(4)]
    amount_minor: Option<u64>,
    #[n(5)]
    balance_minor: Option<i64>,
    #[n(6)]
    reason: Option<String>,
}

impl NoticeWire {
    /// The kind number.
    pub fn kind(&self) -> u8 {
        self.kind
    }
}

impl From<&Notice> for NoticeWire {
    fn from(n: &Notice) -> Self {
        let blank = |kind: u8, meter: &str, at: u64| NoticeWire {
            kind,
            meter: meter.to_owned(),
            at,
            serial: None,
            amount_minor: None,
            balance_minor: None,
            reason: None,
        };
        match n {
            Notice::Applied {
                meter,
                serial,
                amount_minor,
                balance_after_minor,
                at,
            } => NoticeWire {
                serial: Some(*serial),
                amount_minor: Some(*amount_minor),
                balance_minor: Some(*balance_after_minor),
                ..blank(1, meter, *at)
            },
            Notice::Refused {
                meter,
                serial,
                reason,
                at,
            } => NoticeWire {
                serial: Some(*serial),
                reason: Some(reason.clone()),
                ..blank(2, meter, *at)
            },
            Notice::LowCredit {
                meter,
                balance_minor,
                at,
            } => NoticeWire {
                balance_minor: Some(*balance_minor),
                ..blank(3, meter, *at)
            },
            Notice::SupplyCut { meter, at } => blank(4, meter, *at),
            Notice::SupplyRestored { meter, at } => blank(5, meter, *at),
            Notice::Delivered { meter, serial, at } => NoticeWire {
                serial: Some(*serial),
                ..blank(6, meter, *at)
            },
            Notice::Delayed {
                meter,
                serial,
                reason,
                at,
            } => NoticeWire {
                serial: Some(*serial),
                reason: Some(reason.clone()),
                ..blank(7, meter, *at)
            },
            Notice::Missed { count, at } => NoticeWire {
                amount_minor: Some(*count),
                ..blank(8, "", *at)
            },
        }
    }
}

impl TryFrom<NoticeWire> for Notice {
    type Error = MessageError;

    fn try_from(n: NoticeWire) -> Result<Self, MessageError> {
        fn need<T>(v: Option<T>, field: &'static str) -> Result<T, MessageError> {
            v.ok_or(MessageError::Invalid {
                field,
                reason: "missing from the notice".into(),
            })
        }
        let (meter, at) = (n.meter, n.at);
        Ok(match n.kind {
            1 => Notice::Applied {
                meter,
                serial: need(n.serial, "notice serial (key 3)")?,
                amount_minor: need(n.amount_minor, "notice amount (key 4)")?,
                balance_after_minor: need(n.balance_minor, "notice balance (key 5)")?,
                at,
            },
            2 => Notice::Refused {
                meter,
                serial: need(n.serial, "notice serial (key 3)")?,
                reason: need(n.reason, "notice reason (key 6)")?,
                at,
            },
            3 => Notice::LowCredit {
                meter,
                balance_minor: need(n.balance_minor, "notice balance (key 5)")?,
                at,
            },
            4 => Notice::SupplyCut { meter, at },
            5 => Notice::SupplyRestored { meter, at },
            6 => Notice::Delivered {
                meter,
                serial: need(n.serial, "notice serial (key 3)")?,
                at,
            },
            7 => Notice::Delayed {
                meter,
                serial: need(n.serial, "notice serial (key 3)")?,
                reason: need(n.reason, "notice reason (key 6)")?,
                at,
            },
            8 => Notice::Missed {
                count: need(n.amount_minor, "notice count (key 4)")?,
                at,
            },
            other => return Err(MessageError::UnknownNotice(other)),
        })
    }
}

/// Version probe: decoded first, so a newer version is reported as such and not as malformed.
#[derive(Decode)]
#[cbor(map)]
struct Probe {
    #[n(0)]
    version: u64,
}

impl Message {
    /// A version-1 message.
    pub fn new(id: u64, body: Plain) -> Self {
        Message {
            version: VERSION,
            id,
            body,
        }
    }

    /// The CBOR octets.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        minicbor::to_vec(self).map_err(|_| MessageError::Encode("message"))
    }

    /// Parses CBOR octets: version first, then the whole message; trailing octets are refused.
    pub fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
        let malformed = |e: minicbor::decode::Error| MessageError::Malformed {
            what: "message",
            reason: e.to_string(),
        };
        let probe: Probe = minicbor::decode(bytes).map_err(malformed)?;
        if probe.version != u64::from(VERSION) {
            return Err(MessageError::UnsupportedVersion(probe.version));
        }
        let mut d = minicbor::Decoder::new(bytes);
        let m: Message = d.decode().map_err(malformed)?;
        if d.position() != bytes.len() {
            return Err(MessageError::Malformed {
                what: "message",
                reason: format!(
                    "{} octets after the message map",
                    bytes.len() - d.position()
                ),
            });
        }
        Ok(m)
    }
}

impl Inner {
    /// The CBOR octets.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        minicbor::to_vec(self).map_err(|_| MessageError::Encode("sealed request/answer"))
    }

    /// Parses the plaintext of an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Inner, MessageError> {
        let mut d = minicbor::Decoder::new(bytes);
        let inner: Inner = d.decode().map_err(|e| MessageError::Malformed {
            what: "sealed request/answer",
            reason: e.to_string(),
        })?;
        if d.position() != bytes.len() {
            return Err(MessageError::Malformed {
                what: "sealed request/answer",
                reason: "octets after the map".into(),
            });
        }
        Ok(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_versions_are_checked() {
        let m = Message::new(
            7,
            Plain::Challenge {
                rand: [1; 16],
                autn: [2; 16],
            },
        );
        let octets = m.encode().unwrap();
        assert_eq!(Message::decode(&octets).unwrap(), m);
        let mut v2 = Message::new(7, Plain::Logout {});
        v2.version = 2;
        assert_eq!(
            Message::decode(&v2.encode().unwrap()),
            Err(MessageError::UnsupportedVersion(2))
        );
        let mut trailing = octets.clone();
        trailing.push(0);
        assert!(matches!(
            Message::decode(&trailing),
            Err(MessageError::Malformed { .. })
        ));
    }

    #[test]
    fn the_encoding_is_the_documented_one() {
        // {0: 1, 1: 5, 2: [10, {}]}: a logout, as docs/protocol.md shows it.
        let octets = Message::new(5, Plain::Logout {}).encode().unwrap();
        assert_eq!(hex::encode(&octets), "a3000101050282 0aa0".replace(' ', ""));
    }

    #[test]
    fn watch_and_notices_stay_readable_across_versions() {
        // A client from before notice kinds 6-8 sends `[10, {}]`: it asks for nothing new.
        let old = minicbor::to_vec(Inner {
            id: 3,
            body: Sealed::Watch { newest_kind: None },
        })
        .unwrap();
        assert_eq!(hex::encode(&old), "a2000301820aa0");
        let new = Inner {
            id: 3,
            body: Sealed::Watch {
                newest_kind: Some(NEWEST_NOTICE_KIND),
            },
        };
        assert_eq!(Inner::decode(&new.encode().unwrap()).unwrap(), new);
        // A kind from a newer server is reported as such, so the client skips it.
        let future = NoticeWire {
            kind: 99,
            ..NoticeWire::from(&Notice::SupplyCut {
                meter: "M1".into(),
                at: 1,
            })
        };
        assert_eq!(
            Notice::try_from(future),
            Err(MessageError::UnknownNotice(99))
        );
    }

    #[test]
    fn notices_round_trip_through_the_wire_form() {
        let all = [
            Notice::Applied {
                meter: "M1".into(),
                serial: 3,
                amount_minor: 2000,
                balance_after_minor: 2500,
                at: 10,
            },
            Notice::Refused {
                meter: "M1".into(),
                serial: 4,
                reason: "expired".into(),
                at: 11,
            },
            Notice::LowCredit {
                meter: "M1".into(),
                balance_minor: -5,
                at: 12,
            },
            Notice::SupplyCut {
                meter: "M1".into(),
                at: 13,
            },
            Notice::SupplyRestored {
                meter: "M1".into(),
                at: 14,
            },
            Notice::Delivered {
                meter: "M1".into(),
                serial: 5,
                at: 15,
            },
            Notice::Delayed {
                meter: "M1".into(),
                serial: 5,
                reason: "meter M1 has no account until its first reading".into(),
                at: 16,
            },
            Notice::Missed { count: 9, at: 17 },
        ];
        for n in all {
            let wire = NoticeWire::from(&n);
            let octets = minicbor::to_vec(&wire).unwrap();
            let back: NoticeWire = minicbor::decode(&octets).unwrap();
            assert_eq!(Notice::try_from(back).unwrap(), n);
        }
    }
}
