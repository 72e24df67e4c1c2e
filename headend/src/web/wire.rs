//! The web app's JSON: request bodies and WebSocket messages from the phone (decoded here, the fuzz
//! targets' entry points) and the answers. Byte strings travel as lower-case hex; times as Unix
//! seconds, which the app turns into the phone's local time (never shown raw).

use concentrator_mpc::backend::{Delivery, HistoryEntry, HistoryKind, MeterView, Notice, Purchase};
use serde::{Deserialize, Serialize};

/// Largest request body or WebSocket message the server reads.
pub const MAX_BODY: usize = 8 * 1024;

/// Why a body from the phone is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Decodes a JSON request body of type `T` (unknown fields refused, at most [`MAX_BODY`] octets).
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, BadRequest> {
    if body.len() > MAX_BODY {
        return Err(BadRequest(format!(
            "the {what} request has {} octets; at most {MAX_BODY} are read",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        BadRequest(format!(
            "the {what} request is not valid JSON of its shape: {e}"
        ))
    })
}

/// `count` octets from lower-case or upper-case hex.
pub fn hex_bytes<const N: usize>(field: &str, text: &str) -> Result<[u8; N], BadRequest> {
    let v = hex::decode(text).map_err(|_| BadRequest(format!("{field} is not hex")))?;
    v.try_into()
        .map_err(|_| BadRequest(format!("{field} must be {N} octets ({} hex digits)", 2 * N)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub code: String,
    pub user: String,
    pub password: String,
}

#[derive(Debug, Serialize)]
pub struct Registered {
    pub customer: String,
    pub user: String,
    pub imsi: String,
    pub k: String,
    pub opc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub identity: String,
}

#[derive(Debug, Serialize)]
pub struct ChallengeAnswer {
    /// Names this login attempt in the next step.
    pub challenge: String,
    pub rand: String,
    pub autn: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub challenge: String,
    pub auts: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub challenge: String,
    pub res: String,
    pub password: String,
}

#[derive(Debug, Serialize)]
pub struct LoggedIn {
    pub token: String,
    pub customer: String,
    pub user: String,
    pub expires_at: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    pub meter: String,
    pub amount_minor: u64,
    /// The idempotency key: 16 random octets (hex) the phone chose for this purchase.
    pub key: String,
}

/// A message from the phone on the live stream.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LiveIn {
    /// The session token (the first message).
    Auth(String),
    /// Keep-alive; answered with `pong`.
    Ping(u64),
}

#[derive(Debug, Serialize)]
pub struct MeterJson {
    pub meter: String,
    pub dwelling: String,
    pub currency: String,
    pub balance_minor: Option<i64>,
    pub balance_at: Option<u64>,
    pub supply_on: Option<bool>,
    pub last_reading_wh: Option<u64>,
    pub last_reading_at: Option<u64>,
    pub pending_tokens: u32,
}

impl From<MeterView> for MeterJson {
    fn from(m: MeterView) -> Self {
        MeterJson {
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

/// A purchase and where it is: `paid` (in the payment record, token signed), `delivered` (sent to the
/// gateway), `applied` (the gateway's signed receipt came) or `refused` (with the gateway's reason).
#[derive(Debug, Serialize)]
pub struct PurchaseJson {
    pub record: u64,
    pub meter: String,
    pub serial: u64,
    pub amount_minor: u64,
    pub currency: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub token: String,
    pub state: &'static str,
    /// The gateway's reason: for `refused`, why; for `delivered`, why it cannot apply it yet.
    pub reason: Option<String>,
    /// What the customer can do about that reason (the words `mpc` prints).
    pub advice: Option<String>,
}

impl PurchaseJson {
    pub fn new(p: &Purchase, delivered: bool, reason: Option<String>) -> Self {
        let state = match p.delivery {
            Delivery::Applied => "applied",
            Delivery::Refused => "refused",
            Delivery::Pending if delivered => "delivered",
            Delivery::Pending => "paid",
        };
        let advice = reason.as_ref().and_then(|reason| {
            let (meter, serial, reason, at) = (p.meter.clone(), p.serial, reason.clone(), 0);
            concentrator_mpc::human::advice(&match p.delivery {
                Delivery::Refused => Notice::Refused {
                    meter,
                    serial,
                    reason,
                    at,
                },
                Delivery::Pending => Notice::Delayed {
                    meter,
                    serial,
                    reason,
                    at,
                },
                Delivery::Applied => return None,
            })
        });
        PurchaseJson {
            record: p.record,
            meter: p.meter.clone(),
            serial: p.serial,
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            issued_at: p.issued_at,
            expires_at: p.expires_at,
            token: hex::encode(&p.token),
            state,
            reason,
            advice,
        }
    }
}

fn kind_name(k: HistoryKind) -> &'static str {
    match k {
        HistoryKind::Purchased => "purchased",
        HistoryKind::Applied => "applied",
        HistoryKind::Refused => "refused",
        HistoryKind::LowCredit => "low_credit",
        HistoryKind::SupplyCut => "supply_cut",
        HistoryKind::SupplyRestored => "supply_restored",
    }
}

#[derive(Debug, Serialize)]
pub struct HistoryJson {
    pub at: u64,
    pub meter: String,
    pub what: &'static str,
    pub serial: Option<u64>,
    pub amount_minor: Option<u64>,
    pub balance_after_minor: Option<i64>,
    pub detail: Option<String>,
}

impl From<HistoryEntry> for HistoryJson {
    fn from(h: HistoryEntry) -> Self {
        HistoryJson {
            at: h.at,
            meter: h.meter,
            what: kind_name(h.what),
            serial: h.serial,
            amount_minor: h.amount_minor,
            balance_after_minor: h.balance_after_minor,
            detail: h.detail,
        }
    }
}

/// A notice as the live stream sends it: `{"type": "applied" | "refused" | "low_credit" |
/// "supply_cut" | "supply_restored" | "delivered" | "delayed" | "missed", ...}`; `refused`, `delayed`
/// and `missed` carry `advice`, what the customer can do (the words `mpc` prints).
pub fn notice_json(n: &Notice) -> serde_json::Value {
    use serde_json::json;
    let advice = concentrator_mpc::human::advice(n);
    match n {
        Notice::Applied {
            meter,
            serial,
            amount_minor,
            balance_after_minor,
            at,
        } => json!({"type": "applied", "meter": meter, "serial": serial,
            "amount_minor": amount_minor, "balance_after_minor": balance_after_minor, "at": at}),
        Notice::Refused {
            meter,
            serial,
            reason,
            at,
        } => json!({"type": "refused", "meter": meter, "serial": serial, "reason": reason,
            "advice": advice, "at": at}),
        Notice::LowCredit {
            meter,
            balance_minor,
            at,
        } => {
            json!({"type": "low_credit", "meter": meter, "balance_minor": balance_minor, "at": at})
        }
        Notice::SupplyCut { meter, at } => json!({"type": "supply_cut", "meter": meter, "at": at}),
        Notice::SupplyRestored { meter, at } => {
            json!({"type": "supply_restored", "meter": meter, "at": at})
        }
        Notice::Delivered { meter, serial, at } => {
            json!({"type": "delivered", "meter": meter, "serial": serial, "at": at})
        }
        Notice::Delayed {
            meter,
            serial,
            reason,
            at,
        } => json!({"type": "delayed", "meter": meter, "serial": serial, "reason": reason,
            "advice": advice, "at": at}),
        Notice::Missed { count, at } => {
            json!({"type": "missed", "count": count, "advice": advice, "at": at})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_and_unknown_fields_or_big_bodies_are_refused() {
        let t: TopUpRequest =
            decode("top-up", br#"{"meter":"M","amount_minor":500,"key":"00"}"#).unwrap();
        assert_eq!(t.amount_minor, 500);
        assert!(
            decode::<TopUpRequest>("top-up", br#"{"meter":"M","amount_minor":-1,"key":""}"#)
                .is_err()
        );
        assert!(decode::<LoginRequest>("login", br#"{"identity":"a","x":1}"#).is_err());
        assert!(decode::<LoginRequest>("login", &vec![b' '; MAX_BODY + 1]).is_err());
        assert_eq!(
            decode::<LiveIn>("live", br#"{"auth":"abc"}"#).unwrap(),
            LiveIn::Auth("abc".into())
        );
        assert!(hex_bytes::<16>("key", "00").is_err());
        assert_eq!(hex_bytes::<2>("key", "0aFF").unwrap(), [0x0a, 0xff]);
    }
}
