//! The control-socket operations of the ledger and the status board, shared by the CLI (through the
//! socket) and the web UI (in process, through the same [`ControlRoutes`]): one path, no second truth.
//!
//! - `status`: the status board (what `status.json` holds), now.
//! - `ledger.relay` `{meter, action: "open"|"close", by}`: an order to the ledger's relay authority
//!   ([`ToLedger::Relay`]), answered with the state read back from the meter; audited by the ledger
//!   with `by`.
//! - `ledger.token` `{token: HEX, meter?, by}`: a credit token applied exactly once through the ledger
//!   ([`ToLedger::Token`]); answered with the receipt, a replay refused with when it was applied.
//! - `ledger.tenancy` `{order: HEX, by}`: the head-end's signed change-of-tenancy order (an order file)
//!   carried out through the ledger ([`ToLedger::Tenancy`]); answered with the settlement's figures.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concentrator_ledger::money::format_minor;
use concentrator_ledger::{RelayOrder, RelayState, TopUpReceipt};
use serde_json::{json, Value};

use crate::control::ControlRoutes;
use crate::prepay::{
    RelayReply, RelayRequest, TenancyReply, TenancyRequest, ToLedger, TokenReply, TokenRequest,
};
use crate::status::StatusBoard;

/// How long `ledger.relay` waits for the read-back (the ledger gives up after 60 s itself).
pub const RELAY_WAIT: Duration = Duration::from_secs(65);
/// How long `ledger.token` waits for the ledger's flush.
pub const TOKEN_WAIT: Duration = Duration::from_secs(20);

/// Something that happened that people watching should see (the web UI's event list and stream).
pub type EventSink = Arc<dyn Fn(&str, String) + Send + Sync>;

/// Registers `status`, and with a ledger `ledger.relay` and `ledger.token`.
pub fn add_routes(
    routes: &mut ControlRoutes,
    status: Arc<StatusBoard>,
    ledger: Option<Sender<ToLedger>>,
    events: EventSink,
) {
    routes.add(
        "status",
        Arc::new(move |_: &Value| {
            let mut s = status.snapshot();
            s.updated_unix = crate::prepay::unix_now();
            serde_json::to_value(s).map_err(|e| format!("cannot encode the status: {e}"))
        }),
    );
    let Some(ledger) = ledger else {
        return;
    };
    let ledger = Arc::new(Mutex::new(ledger));
    let (l, ev) = (Arc::clone(&ledger), Arc::clone(&events));
    routes.add(
        "ledger.relay",
        Arc::new(move |args: &Value| relay(&l, &ev, args)),
    );
    let (l, ev) = (Arc::clone(&ledger), Arc::clone(&events));
    routes.add(
        "ledger.tenancy",
        Arc::new(move |args: &Value| tenancy(&l, &ev, args)),
    );
    routes.add(
        "ledger.token",
        Arc::new(move |args: &Value| token(&ledger, &events, args)),
    );
}

/// A change-of-tenancy order file, as hex text (or the octets the head-end wrote, hex-encoded by the
/// caller): verified and carried out by the ledger, which closes the account with a signed settlement
/// (sent to the head-end from the outbox) and opens the next tenant's.
fn tenancy(
    ledger: &Mutex<Sender<ToLedger>>,
    events: &EventSink,
    args: &Value,
) -> Result<Value, String> {
    let by = text(args, "by", "who applies it (\"installer NAME\")")?.to_string();
    let hex_text: String = text(args, "order", "the order file's text (hex)")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let order = hex::decode(&hex_text).map_err(|_| {
        "this is not a tenancy order file: it must be the hex text `concentrator-headend tenancy change --order-file` wrote; ask the utility for the file again".to_string()
    })?;
    let (reply, answer) = channel();
    send(
        ledger,
        ToLedger::Tenancy(TenancyRequest {
            meter: None,
            order,
            by: by.clone(),
            reply,
        }),
    )?;
    let outcome = answer.recv_timeout(TOKEN_WAIT).map_err(|_| {
        format!("the ledger did not answer within {} s; look at the log, then try again (an order is carried out once)", TOKEN_WAIT.as_secs())
    })?;
    match outcome {
        TenancyReply::Done(text) => {
            events("tenancy", format!("{text} (order applied by {by})"));
            Ok(json!({"outcome": "done", "text": text}))
        }
        TenancyReply::AlreadyDone(text) => {
            events(
                "tenancy",
                format!("{text} (order offered again by {by}: done before, nothing changed)"),
            );
            Ok(
                json!({"outcome": "already_done", "text": format!("{text}; this order was carried out before, nothing changed")}),
            )
        }
        TenancyReply::Refused(why) => {
            events(
                "tenancy",
                format!("tenancy order refused ({why}), offered by {by}"),
            );
            Err(format!("refused: {why}"))
        }
        TenancyReply::NotNow(why) => Err(format!("not carried out now: {why}")),
    }
}

fn text<'a>(args: &'a Value, key: &str, what: &str) -> Result<&'a str, String> {
    args.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("`{key}` is missing: give {what}"))
}

fn send(ledger: &Mutex<Sender<ToLedger>>, message: ToLedger) -> Result<(), String> {
    ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(message)
        .map_err(|_| {
            "the ledger has stopped (the daemon is shutting down); try again once it runs"
                .to_string()
        })
}

/// A relay state as people read it.
pub fn relay_word(state: RelayState) -> &'static str {
    match state {
        RelayState::Open => "open",
        RelayState::Closed => "closed",
        RelayState::Armed => "armed",
    }
}

fn relay(
    ledger: &Mutex<Sender<ToLedger>>,
    events: &EventSink,
    args: &Value,
) -> Result<Value, String> {
    let meter = text(args, "meter", "the meter number")?.to_string();
    let by = text(args, "by", "who orders it (\"installer NAME\")")?.to_string();
    let order = match text(args, "action", "`open` or `close`")? {
        "open" => RelayOrder::Open,
        "close" => RelayOrder::Close,
        other => {
            return Err(format!(
                "`action` is `{other}`: write `open` (supply off) or `close` (supply on)"
            ))
        }
    };
    let (reply, answer) = channel();
    send(
        ledger,
        ToLedger::Relay(RelayRequest {
            meter: meter.clone(),
            order,
            by: by.clone(),
            reply,
        }),
    )?;
    let outcome = answer.recv_timeout(RELAY_WAIT).map_err(|_| {
        format!("meter {meter} did not confirm its relay within {} s; check its bus on the overview and try again", RELAY_WAIT.as_secs())
    })?;
    match outcome {
        RelayReply::ReadBack(state) => {
            let word = relay_word(state);
            events(
                "relay",
                format!(
                    "meter {meter}: relay read back {word} after `{}` by {by}",
                    if order == RelayOrder::Open {
                        "open"
                    } else {
                        "close"
                    }
                ),
            );
            Ok(json!({"meter": meter, "read_back": word}))
        }
        RelayReply::Refused(why) => Err(format!("meter {meter}: the ledger refused: {why}")),
        RelayReply::NotNow(why) => Err(format!("meter {meter}: not now: {why}")),
    }
}

/// A receipt as JSON for people (amounts with their currency, the time in local time).
pub fn receipt_json(r: &TopUpReceipt) -> Value {
    let currency = String::from_utf8_lossy(&r.receipt.currency).to_string();
    json!({
        "meter": r.receipt.meter_id,
        "serial": r.receipt.serial,
        "amount": format!("{} {currency}", format_minor(i64::try_from(r.receipt.amount_minor).unwrap_or(i64::MAX))),
        "balance_after": format!("{} {currency}", format_minor(r.receipt.balance_after_minor)),
        "applied": concentrator_mpc::human::local_time(r.receipt.applied_at),
        "gateway": r.receipt.gateway_id,
        "signed_hex": hex::encode(&r.signed),
    })
}

fn token(
    ledger: &Mutex<Sender<ToLedger>>,
    events: &EventSink,
    args: &Value,
) -> Result<Value, String> {
    let by = text(args, "by", "who applies it (\"installer NAME\")")?.to_string();
    let octets =
        crate::prepay::inbox::token_octets(text(args, "token", "the token (hex text)")?.as_bytes());
    let signed = concentrator_security::token::SignedToken::decode(&octets).map_err(|e| {
        format!(
            "this is not a credit token: {e}; paste the whole token as the customer received it"
        )
    })?;
    let body = concentrator_security::token::CreditToken::decode(&signed.0.body).map_err(|e| {
        format!(
            "this is not a credit token: {e}; paste the whole token as the customer received it"
        )
    })?;
    let meter = match args
        .get("meter")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        Some(m) if m != body.meter_id => {
            return Err(format!(
                "this token is for meter {}, not {m}; give it to that meter's customer",
                body.meter_id
            ))
        }
        _ => body.meter_id.clone(),
    };
    let (reply, answer) = channel();
    send(
        ledger,
        ToLedger::Token(TokenRequest {
            meter: meter.clone(),
            token: octets,
            reply,
        }),
    )?;
    let outcome = answer
        .recv_timeout(TOKEN_WAIT)
        .map_err(|_| format!("the ledger did not answer within {} s; look at the log, then try again (a token is never applied twice)", TOKEN_WAIT.as_secs()))?;
    match outcome {
        TokenReply::Applied(r) => {
            let j = receipt_json(&r);
            log::info!("meter {meter}: token {} applied by {by}", r.receipt.serial);
            events(
                "token",
                format!(
                    "meter {meter}: token {} applied by {by}: {}, balance {}",
                    r.receipt.serial,
                    j["amount"].as_str().unwrap_or(""),
                    j["balance_after"].as_str().unwrap_or("")
                ),
            );
            Ok(json!({"outcome": "applied", "receipt": j}))
        }
        TokenReply::AlreadyApplied(r) => {
            log::warn!(
                "meter {meter}: token {} offered again by {by}; not applied again",
                r.receipt.serial
            );
            events(
                "token",
                format!(
                    "meter {meter}: token {} offered again by {by}: refused, it was applied before",
                    r.receipt.serial
                ),
            );
            Err(format!(
                "refused: token {} for meter {meter} was already applied on {} ({} then) and is never applied twice; the customer's credit is already on the meter",
                r.receipt.serial, concentrator_mpc::human::local_time(r.receipt.applied_at),
                receipt_json(&r)["amount"].as_str().unwrap_or("")
            ))
        }
        TokenReply::AppliedBeforeRestore(why) => {
            events(
                "token",
                format!("meter {meter}: token offered by {by} was applied before the store was restored: {why}"),
            );
            Err(format!(
                "refused: {why}; the customer's credit for it is already in the balance the head-end restored"
            ))
        }
        TokenReply::Refused(why) => {
            events(
                "token",
                format!("meter {meter}: token refused ({why}), offered by {by}"),
            );
            Err(format!("refused: {why}"))
        }
        TokenReply::NotNow(why) => Err(format!("not applied now: {why}")),
    }
}
