//! The records of the store.

use concentrator_security::sqn::SqnGenerator;
use serde::{Deserialize, Serialize};

/// 16 key octets, stored as hex.
pub mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as hex.
    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Parses hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 16 octets"))
    }
}

/// Optional 16 key octets as hex.
pub mod hex16_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as hex or null.
    pub fn serialize<S: Serializer>(v: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&hex::encode(v)),
            None => s.serialize_none(),
        }
    }

    /// Parses hex or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 16]>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
            v.try_into()
                .map_err(|_| serde::de::Error::custom("expected 16 octets"))
        })
        .transpose()
    }
}

/// Whose record a subscriber identity (IMSI, security context) is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum SubscriberRef {
    /// A meter, by meter number.
    Meter(String),
    /// A gateway, by id.
    Gateway(String),
    /// A customer (AKA with the phone-facing server).
    Customer(String),
}

impl SubscriberRef {
    /// The key part (`m:…`, `g:…`, `c:…`).
    pub fn key(&self) -> String {
        match self {
            SubscriberRef::Meter(m) => format!("m:{m}"),
            SubscriberRef::Gateway(g) => format!("g:{g}"),
            SubscriberRef::Customer(c) => format!("c:{c}"),
        }
    }
}

/// What the head-end last heard of a meter's account and register.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// Balance, minor units, and when reported.
    pub balance_minor: Option<i64>,
    /// See `balance_minor`.
    pub balance_at: Option<u64>,
    /// Relay closed.
    pub supply_on: Option<bool>,
    /// Imported energy, Wh, and when read.
    pub last_reading_wh: Option<u64>,
    /// See `last_reading_wh`.
    pub last_reading_at: Option<u64>,
}

/// A meter as enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterRecord {
    /// Meter number (contract id; what tokens name).
    pub meter: String,
    /// The gateway it is behind.
    pub gateway: String,
    /// Dwelling.
    pub dwelling: String,
    /// Its subscriber identity.
    pub imsi: String,
    /// The other two inputs of its KID.
    pub msisdn: String,
    /// See `msisdn`.
    pub imei: String,
    /// KID, hex.
    pub kid: String,
    /// AKA key.
    #[serde(with = "hex16")]
    pub k: [u8; 16],
    /// AKA OPc.
    #[serde(with = "hex16")]
    pub opc: [u8; 16],
    /// The network side's SQN state.
    pub sqn: SqnGenerator,
    /// The highest serial whose receipt arrived. (Token serials are allocated from their own key,
    /// `ser/<meter>`, never from this record.)
    pub last_applied_serial: Option<u64>,
    /// What was last reported.
    pub view: AccountView,
    /// The newest account summary the gateway sent (reconciliation and account restores use it).
    #[serde(default)]
    pub summary: Option<SummaryView>,
}

/// A meter's account as its gateway last summarised it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryView {
    /// As of, unix s (the gateway's clock).
    pub at: u64,
    /// Credit, minor units.
    pub balance_minor: i64,
    /// Cumulative import register, Wh.
    pub register_wh: u64,
    /// Charges since enrolment, minor units.
    pub charged_minor: u64,
    /// Tariff in force.
    pub tariff_id: u32,
    /// The highest applied serial.
    pub last_token_serial: Option<u64>,
    /// Every applied serial as inclusive ranges `(first, last)`; `None` from gateways that do not say.
    pub applied: Option<Vec<(u64, u64)>>,
    /// When the head-end received it, unix s.
    pub received_at: u64,
}

/// An uplink message the head-end refused for good: acknowledged (so the gateway stops sending it) and
/// kept here for the operator (`concentrator-headend status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The gateway it came from.
    pub gateway: String,
    /// The meter whose scope it came in, if any.
    pub meter: Option<String>,
    /// Its kind's name (`receipt`, `result`, ...).
    pub kind: String,
    /// Message id, hex.
    pub id: String,
    /// When received, unix s.
    pub at: u64,
    /// Why it was refused, for people.
    pub reason: String,
}

/// The head of a gateway's audit chain as its account summaries reported it (the chain's outside
/// anchor), with the alarms raised when a later summary reported a shorter or different chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRecord {
    /// Entries in the chain.
    pub len: u64,
    /// SHA-256 of its last entry, hex.
    pub head: String,
    /// The summary's time, unix s (gateway clock).
    pub at: u64,
    /// The meter whose summary carried it.
    pub meter: String,
    /// When received, unix s.
    pub received_at: u64,
    /// Alarms, newest last (at most [`AnchorRecord::MAX_ALARMS`]).
    pub alarms: Vec<AnchorAlarm>,
    /// When the gateway last asked for an account restore (its store was replaced): a chain that starts
    /// again after this is recorded as a new chain, with the old head kept in `replaced`.
    #[serde(default)]
    pub restored_at: Option<u64>,
    /// Chains this gateway ended by replacing its store, oldest first, as `LEN:HEXHEAD` with when.
    #[serde(default)]
    pub replaced: Vec<AnchorAlarm>,
}

impl AnchorRecord {
    /// Alarms kept per gateway.
    pub const MAX_ALARMS: usize = 20;
}

/// A summary whose chain head contradicts the recorded anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorAlarm {
    /// When received, unix s.
    pub at: u64,
    /// What was wrong, for people.
    pub reason: String,
}

/// The last birth of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirthView {
    /// Software version.
    pub software: String,
    /// Daemon start, unix s.
    pub started_at: u64,
    /// Connection number.
    pub session: u32,
    /// Meters in the inventory, and how many are online.
    pub meters: u32,
    /// See `meters`.
    pub online: u32,
    /// Outbox length.
    pub outbox_len: u64,
    /// When received, unix s.
    pub at: u64,
}

/// A gateway as enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRecord {
    /// Gateway id (= certificate CN, MQTT user name).
    pub id: String,
    /// Its own subscriber identity (AKA for scope `gw`).
    pub imsi: String,
    /// AKA key.
    #[serde(with = "hex16")]
    pub k: [u8; 16],
    /// AKA OPc.
    #[serde(with = "hex16")]
    pub opc: [u8; 16],
    /// SQN state.
    pub sqn: SqnGenerator,
    /// Its certificate (PEM): MQTT client and receipt signer.
    pub cert_pem: String,
    /// The broker address it was given.
    pub broker: String,
    /// Meter numbers behind it.
    pub meters: Vec<String>,
    /// Online (birth seen, no death since).
    pub online: bool,
    /// The last birth.
    pub birth: Option<BirthView>,
}

/// A customer as enrolled and registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRecord {
    /// Id from provisioning.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// User name chosen at registration.
    pub user: Option<String>,
    /// Phone number.
    pub msisdn: String,
    /// Subscriber identity with the phone-facing server.
    pub imsi: String,
    /// AKA key, set at registration.
    #[serde(with = "hex16_opt")]
    pub k: Option<[u8; 16]>,
    /// AKA OPc, set at registration.
    #[serde(with = "hex16_opt")]
    pub opc: Option<[u8; 16]>,
    /// SQN state.
    pub sqn: SqnGenerator,
    /// `scrypt$…`.
    pub password_hash: Option<String>,
    /// Meter numbers.
    pub meters: Vec<String>,
    /// SHA-256 (hex) of the unused authorization code.
    pub auth_code_hash: Option<String>,
}

/// A security context as stored (one AKA run's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextRecord {
    /// The TID (meters), hex; `None` for a gateway's own context.
    pub tid: Option<String>,
    /// The RAND of the run (the session).
    pub rand: String,
    /// Integrity algorithm id.
    pub integrity: u8,
    /// Ciphering algorithm id.
    pub ciphering: u8,
    /// CK.
    #[serde(with = "hex16")]
    pub ck: [u8; 16],
    /// IK.
    #[serde(with = "hex16")]
    pub ik: [u8; 16],
    /// FRESH.
    pub fresh: u32,
    /// Established, unix s.
    pub established: u64,
    /// Lifetime, s.
    pub lifetime: u64,
    /// Downlink COUNTs below this are reserved (the next start resumes here).
    pub down_reserved: u32,
    /// The last uplink COUNT accepted.
    pub up_last: Option<u32>,
    /// On a shared store: which of the 64 uplink COUNTs up to `up_last` were accepted (bit n:
    /// `up_last` − n), so that a meter's messages taken by two workers or engines out of order are
    /// both accepted, and none twice. Absent: every COUNT up to `up_last` counts as accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_seen: Option<u64>,
    /// The gateway has used it (acknowledged the TID assignment or sent on the TID): downlink uses it.
    pub confirmed: bool,
}

/// The uplink COUNTs a context has accepted after `count`, or `None` if `count` was accepted before
/// or is 64 or more below the highest accepted (a replay, or too late): (the highest, the window of
/// [`ContextRecord::up_seen`]).
pub fn accept_count(last: Option<u32>, seen: Option<u64>, count: u32) -> Option<(u32, u64)> {
    let Some(last) = last else {
        return Some((count, 1));
    };
    let seen = seen.unwrap_or(u64::MAX);
    if count > last {
        let shift = count - last;
        let moved = if shift >= 64 { 0 } else { seen << shift };
        return Some((count, moved | 1));
    }
    let back = last - count;
    if back >= 64 || seen & (1u64 << back) != 0 {
        return None;
    }
    Some((last, seen | (1u64 << back)))
}

impl ContextRecord {
    /// End of validity.
    pub fn expires_at(&self) -> u64 {
        self.established.saturating_add(self.lifetime)
    }
}

/// A subscriber's contexts: the newest and the one before it (kept until it expires).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSet {
    /// The newest.
    pub current: Option<ContextRecord>,
    /// The one before.
    pub previous: Option<ContextRecord>,
}

impl ContextSet {
    /// The contexts that can carry a message at `now` (confirmed, not expired), the newest first.
    pub fn live(&self, now: u64) -> impl Iterator<Item = &ContextRecord> {
        [self.current.as_ref(), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .filter(move |c| c.confirmed && now < c.expires_at())
    }
}

/// What a TID stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TidRecord {
    /// The meter.
    pub meter: String,
    /// The gateway it was issued through.
    pub gateway: String,
    /// End of validity (the context's).
    pub expires_at: u64,
}

/// Where a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Signed, not confirmed.
    Pending,
    /// The gateway's signed receipt confirmed it (stores from before version 0.2 may hold tokens that
    /// reconciliation marked applied without a receipt).
    Applied,
    /// The gateway refused it.
    Refused,
}

/// An issued token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Meter number.
    pub meter: String,
    /// Serial.
    pub serial: u64,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// ISO 4217.
    pub currency: String,
    /// Issue time.
    pub issued_at: u64,
    /// Expiry.
    pub expires_at: u64,
    /// `SignedToken` octets, hex.
    pub token: String,
    /// The buyer.
    pub customer: String,
    /// The payment record entry of the purchase.
    pub record: u64,
    /// State.
    pub state: TokenState,
    /// The top-up command's message id (hex), once sent; resends keep it.
    pub command: Option<String>,
    /// When last sent, unix s.
    pub sent_at: Option<u64>,
    /// Times sent.
    pub sends: u32,
    /// The last command result code.
    pub result: Option<u16>,
    /// When that result arrived, unix s (a "done" waits this long plus the result timeout for its
    /// receipt; a temporary failure as long before the token is sent again).
    #[serde(default)]
    pub result_at: Option<u64>,
    /// Why refused.
    pub reason: Option<String>,
    /// The receipt (`SignedDocument` octets, hex).
    pub receipt: Option<String>,
    /// Balance after, from the receipt.
    pub balance_after_minor: Option<i64>,
    /// When applied (receipt's time, or reconciliation's).
    pub applied_at: Option<u64>,
}

/// A token by meter and serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRef {
    /// Meter number.
    pub meter: String,
    /// Serial.
    pub serial: u64,
}

/// An ingested uplink message, with who it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    /// The gateway it came through.
    pub gateway: String,
    /// Meter number, or `None` for the gateway's own scope.
    pub meter: Option<String>,
    /// Message id, hex.
    pub id: String,
    /// When received, unix s.
    pub received_at: u64,
    /// The body, as the protocol crate's `Debug` of the frame's content in a stable JSON form.
    pub body: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::accept_count;

    #[test]
    fn the_uplink_count_window_takes_each_count_once_in_any_order_within_64() {
        // A new context: the first COUNT starts the window.
        let (last, seen) = accept_count(None, None, 5).unwrap();
        assert_eq!((last, seen), (5, 1));
        // 7 before 6 (two workers): both taken, neither twice.
        let (last, seen) = accept_count(Some(last), Some(seen), 7).unwrap();
        let (last, seen) = accept_count(Some(last), Some(seen), 6).unwrap();
        assert_eq!(last, 7);
        for again in [5, 6, 7] {
            assert_eq!(
                accept_count(Some(last), Some(seen), again),
                None,
                "{again} twice"
            );
        }
        // Never seen but 64 or more below the last: too late.
        let (last, seen) = accept_count(Some(last), Some(seen), 100).unwrap();
        assert_eq!(accept_count(Some(last), Some(seen), 36), None);
        assert!(accept_count(Some(last), Some(seen), 37).is_some());
        // A jump of 64 or more forgets the old window.
        let (last, seen) = accept_count(Some(last), Some(seen), 1_000).unwrap();
        assert_eq!((last, seen), (1_000, 1));
        // A record written before the window existed: everything up to its last counts as taken.
        assert_eq!(accept_count(Some(10), None, 9), None);
        assert_eq!(accept_count(Some(10), None, 10), None);
        assert_eq!(
            accept_count(Some(10), None, 11),
            Some((11, u64::MAX << 1 | 1))
        );
    }
}
