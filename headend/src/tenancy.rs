//! Change of tenancy, the utility's side: an operator orders it (`concentrator-headend tenancy change`),
//! the head-end signs the order with its token key and sends it to the meter's gateway until the
//! gateway's signed settlement comes back ([`crate::engine`]); the settlement books a refund of the
//! credit left (or a bill for the debt) to the customer who left, refunds that customer's tokens that
//! were never applied, and moves the meter from the old customer's account to the new one.
//!
//! An order is made here, in the store, when the CLI can open the store (a stopped sled head-end, or
//! PostgreSQL); otherwise the CLI leaves a request in the *order spool* (`orders/` beside
//! `headend.toml`) and the running head-end makes the order from it within a second, leaving
//! `NAME.done` (or `NAME.refused`) with its answer for the CLI.

use std::path::{Path, PathBuf};

use concentrator_security::signed::DocumentSigner;
use concentrator_security::tenancy::TenancyOrder;
use serde::{Deserialize, Serialize};

use crate::audit::{Draft, EntryKind, PaymentRecord};
use crate::money::money_u;
use crate::store::{customer_key, meter_key, Batch, Store, TenancyRecord, TenancyState};

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// The meter.
    pub meter: String,
    /// The customer who leaves (linked to the meter now).
    pub from: String,
    /// The customer who moves in (provisioned; registers with their authorization code).
    pub to: String,
    /// When the account closes, unix s (now when not given).
    pub effective_at: u64,
    /// The new tenant's opening credit, minor units (0: none; the new tenant buys credit).
    #[serde(default)]
    pub opening_credit_minor: u64,
}

/// Why an order was not made.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// Something the operator named does not fit.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error("the store failed: {0}; nothing was ordered, try again")]
    Store(#[from] crate::store::StoreError),
}

/// The directory of the order spool for a configuration.
pub fn spool_dir(config: &crate::config::Config) -> PathBuf {
    config.base.join("orders")
}

/// Checks the request against the store, signs the order and records it (flushed) with a
/// `tenancy_ordered` entry in the payment record. The old customer keeps the meter until the
/// settlement; no one can buy credit for it meanwhile.
pub fn create_order(
    store: &Store,
    payments: &PaymentRecord,
    signer: &DocumentSigner,
    currency: &str,
    req: &OrderRequest,
    now: u64,
) -> Result<TenancyRecord, OrderError> {
    let refused = |s: String| OrderError::Refused(s);
    let Some(meter) = store.meter(&req.meter)? else {
        return Err(refused(format!(
            "meter {} is not enrolled here: check the meter number (concentrator-headend status lists them)",
            req.meter
        )));
    };
    let Some(from) = store.customer(&req.from)? else {
        return Err(refused(format!(
            "customer {} (--from) is not enrolled here: check the customer id",
            req.from
        )));
    };
    if !from.meters.iter().any(|m| m == &meter.meter) {
        return Err(refused(format!(
            "meter {} is not linked to customer {} (--from): name the customer who has it now",
            meter.meter, req.from
        )));
    }
    if store.customer(&req.to)?.is_none() {
        return Err(refused(format!(
            "customer {} (--to) is not enrolled here: provision the new customer first (a [[customers]] entry, concentrator-headend provision), then order the change",
            req.to
        )));
    }
    if req.from == req.to {
        return Err(refused(
            "--from and --to name the same customer: a change of tenancy needs a new customer"
                .into(),
        ));
    }
    if let Some(t) = store.tenancy_in_progress(&meter.meter)? {
        return Err(refused(format!(
            "meter {} has change of tenancy order {} ({} to {}) waiting for its settlement: wait for it (concentrator-headend status)",
            meter.meter, t.order_id, t.from, t.to
        )));
    }
    let currency_bytes: [u8; 3] = currency.as_bytes().try_into().map_err(|_| {
        refused(format!(
            "the pilot's currency {currency:?} is not three ISO 4217 letters"
        ))
    })?;
    let key = meter_key(&meter.meter);
    let rec = store.scope(&[key.as_bytes()], || -> Result<TenancyRecord, OrderError> {
        if let Some(t) = store.tenancy_in_progress(&meter.meter)? {
            return Err(refused(format!(
                "meter {} has change of tenancy order {} waiting already",
                meter.meter, t.order_id
            )));
        }
        let order_id = store.next_order_id()?;
        let last_old_serial = store.highest_issued_serial(&meter.meter)?;
        let order = TenancyOrder {
            meter_id: meter.meter.clone(),
            order_id,
            old_customer: req.from.clone(),
            new_customer: req.to.clone(),
            effective_at: req.effective_at,
            issued_at: now,
            last_old_serial,
            opening_credit_minor: req.opening_credit_minor,
            currency: currency_bytes,
            key_id: [0; 8],
        };
        let signed = order
            .sign_with(signer)
            .map_err(|e| refused(format!("the order cannot be signed: {e}")))?;
        let rec = TenancyRecord {
            order_id,
            meter: meter.meter.clone(),
            from: req.from.clone(),
            to: req.to.clone(),
            effective_at: req.effective_at,
            ordered_at: now,
            last_old_serial,
            opening_credit_minor: req.opening_credit_minor,
            currency: currency.to_string(),
            signed: hex::encode(&signed),
            state: TenancyState::Pending,
            command: None,
            sent_at: None,
            sends: 0,
            result: None,
            result_at: None,
            reason: None,
            settlement: None,
        };
        let mut b = Batch::new();
        Store::put_new_tenancy(&mut b, &rec);
        let draft = Draft {
            at: now,
            what: EntryKind::TenancyOrdered,
            customer: Some(req.from.clone()),
            meter: meter.meter.clone(),
            serial: order_id,
            amount_minor: req.opening_credit_minor,
            currency: currency.to_string(),
            detail: Some(format!(
                "order {order_id}: {} leaves, {} moves in (opening credit {}); tokens up to serial {last_old_serial} are {}'s",
                req.from,
                req.to,
                money_u(req.opening_credit_minor, currency),
                req.from
            )),
        };
        payments.append(store, vec![draft], |_| b.clone())?;
        Ok(rec)
    })??;
    store.flush()?;
    log::info!(
        "change of tenancy order {} for meter {}: {} to {}, effective {}",
        rec.order_id,
        rec.meter,
        rec.from,
        rec.to,
        crate::money::time(rec.effective_at)
    );
    Ok(rec)
}

/// Moves the meter from the old customer's account to the new one's (in `batch`).
pub(crate) fn relink(
    store: &Store,
    t: &TenancyRecord,
    batch: &mut Batch,
) -> Result<(), crate::store::StoreError> {
    if let Some(mut c) = store.customer(&t.from)? {
        c.meters.retain(|m| m != &t.meter);
        batch.put(customer_key(&c.id), &c);
    }
    if let Some(mut c) = store.customer(&t.to)? {
        if !c.meters.iter().any(|m| m == &t.meter) {
            c.meters.push(t.meter.clone());
        }
        batch.put(customer_key(&c.id), &c);
    }
    Ok(())
}

/// Leaves a request in the spool for the running head-end; returns the file's path.
pub fn spool(dir: &Path, req: &OrderRequest, now_nanos: u128) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = format!("{now_nanos}-{}", sanitize(&req.meter));
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(req).unwrap_or_default())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Takes the requests waiting in the spool (each taken by one process only: renamed first), makes the
/// orders and leaves `NAME.done` (with the signed order in `NAME.order`, hex) or `NAME.refused` with
/// the answer.
pub fn take_spool(
    dir: &Path,
    store: &Store,
    payments: &PaymentRecord,
    signer: &DocumentSigner,
    currency: &str,
    now: u64,
) -> Vec<TenancyRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Some(stem) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let taking = dir.join(format!(".{stem}.taking-{}", std::process::id()));
        if std::fs::rename(&path, &taking).is_err() {
            continue; // another worker took it
        }
        let answer = match std::fs::read(&taking)
            .map_err(|e| format!("cannot read the request: {e}"))
            .and_then(|v| {
                serde_json::from_slice::<OrderRequest>(&v)
                    .map_err(|e| format!("the request is not a tenancy order request: {e}"))
            }) {
            Err(why) => Err(why),
            Ok(req) => match create_order(store, payments, signer, currency, &req, now) {
                Ok(rec) => {
                    let text = format!(
                        "order {}: meter {} from {} to {}, effective {}; sent to gateway {} (the settlement books the refund or bill)",
                        rec.order_id,
                        rec.meter,
                        rec.from,
                        rec.to,
                        crate::money::time(rec.effective_at),
                        store.meter(&rec.meter).ok().flatten().map(|m| m.gateway).unwrap_or_default()
                    );
                    // The signed order, for an installer's order file (`--order-file`).
                    let _ = std::fs::write(
                        dir.join(format!("{stem}.order")),
                        format!("{}\n", rec.signed),
                    );
                    out.push(rec);
                    Ok(text)
                }
                Err(OrderError::Store(e)) => {
                    // Left for the next try.
                    log::error!("tenancy order request {stem}: {e}");
                    let _ = std::fs::rename(&taking, &path);
                    continue;
                }
                Err(e) => Err(e.to_string()),
            },
        };
        let (ext, text) = match answer {
            Ok(t) => ("done", t),
            Err(t) => {
                log::warn!("tenancy order request {stem} refused: {t}");
                ("refused", t)
            }
        };
        let _ = std::fs::write(dir.join(format!("{stem}.{ext}")), format!("{text}\n"));
        let _ = std::fs::remove_file(&taking);
    }
    out
}

/// Parses a time as people write it, in UTC (as the head-end prints times): `2026-12-06 13:05`,
/// `2026-12-06 13:05:09`, either with ` UTC` after it or a `T` between date and time.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "time {text:?} is not YYYY-MM-DD HH:MM[:SS] UTC (for example \"2026-12-06 13:05 UTC\")"
        )
    };
    let t = text.trim();
    let t = t.strip_suffix("UTC").unwrap_or(t).trim();
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, clock) = t.split_once([' ', 'T']).ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let c: Vec<&str> = clock.trim().split(':').collect();
    if d.len() != 3 || !(2..=3).contains(&c.len()) {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (h, min) = (num(c[0])?, num(c[1])?);
    let sec = if c.len() == 3 { num(c[2])? } else { 0 };
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&min)
        || !(0..60).contains(&sec)
    {
        return Err(bad());
    }
    // Days from civil (the inverse of crate::money::time).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix = days * 86_400 + h * 3_600 + min * 60 + sec;
    let unix = u64::try_from(unix).map_err(|_| bad())?;
    if crate::money::time(unix).get(..10) != Some(date) {
        return Err(format!("{} (there is no such day)", bad()));
    }
    Ok(unix)
}

/// Parses an amount as people write it (`5`, `5.5`, `5.50`) into minor units.
pub fn parse_amount(text: &str) -> Result<u64, String> {
    let bad = || format!("amount {text:?} is not a decimal amount such as 5.00");
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() || frac.len() > 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let w: u64 = whole.parse().map_err(|_| bad())?;
    let f: u64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    w.checked_mul(100)
        .and_then(|v| v.checked_add(f))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_amounts_as_people_write_them() {
        assert_eq!(parse_time("2026-12-06 13:05:09 UTC"), Ok(1_796_562_309));
        assert_eq!(parse_time("2026-12-06T13:05:09Z"), Ok(1_796_562_309));
        assert_eq!(parse_time("2000-02-29 00:00"), Ok(951_782_400));
        assert!(parse_time("2001-02-29 00:00")
            .unwrap_err()
            .contains("no such day"));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_amount("5"), Ok(500));
        assert_eq!(parse_amount("5.5"), Ok(550));
        assert_eq!(parse_amount("12.34"), Ok(1_234));
        assert!(parse_amount("1.234").is_err());
        assert!(parse_amount("-1").is_err());
    }
}
