//! Readings, events, account summaries, births and deaths: stored with the meter's identity, the
//! meter's view updated, customers notified.

use concentrator_mpc::backend::Notice;
use concentrator_protocol::{
    event_code, protect, AccountSummary, Body, Event, MessageId, Readings, Topic,
};
use serde_json::json;

use super::{Engine, Fault, Outgoing};
use crate::store::{gateway_key, ingested_key, Batch, BirthView, Ingested, SummaryView};

/// Who an ingested record is about: the meter number, or `gw:<gateway>`.
pub fn owner(gw: &str, meter: Option<&str>) -> String {
    meter.map_or_else(|| format!("gw:{gw}"), str::to_string)
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    fn ingest(
        &self,
        b: &mut Batch,
        kind: &str,
        gw: &str,
        meter: Option<&str>,
        id: MessageId,
        at: u64,
        now: u64,
        body: serde_json::Value,
    ) {
        b.put(
            ingested_key(kind, &owner(gw, meter), at, &id.0),
            &Ingested {
                gateway: gw.to_string(),
                meter: meter.map(str::to_string),
                id: id.to_string(),
                received_at: now,
                body,
            },
        );
    }

    pub(super) fn readings(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        id: MessageId,
        r: Readings,
        now: u64,
    ) -> Result<(), Fault> {
        let Some(m) = meter else {
            let mut b = Batch::new();
            let list: Vec<_> = r
                .readings
                .iter()
                .map(|x| json!({"at": x.at, "quantity": x.quantity.code(), "value": x.value, "exponent": x.exponent}))
                .collect();
            let at = r.readings.iter().map(|x| x.at).max().unwrap_or(now);
            self.ingest(&mut b, "readings", gw, meter, id, at, now, json!(list));
            return Ok(self.store.apply(b)?);
        };
        // Each (time, quantity) of a meter once: a reading held already (backfilled before the live
        // one arrived late) is not stored again.
        self.store_readings(gw, m, id, &r.readings, None, now)
            .map(|_| ())
    }

    pub(super) fn event(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        id: MessageId,
        ev: Event,
        now: u64,
    ) -> Result<(), Fault> {
        let mut b = Batch::new();
        self.ingest(
            &mut b,
            "event",
            gw,
            meter,
            id,
            ev.at,
            now,
            json!({"at": ev.at, "code": ev.code, "severity": format!("{:?}", ev.severity), "detail": ev.detail, "values": ev.values}),
        );
        let Some(m) = meter else {
            let at = |i: usize| {
                ev.values
                    .get(i)
                    .and_then(|&v| u64::try_from(v).ok())
                    .map_or_else(
                        || "an unknown time".to_string(),
                        |t| concentrator_security::clock::LocalTime::of(t).to_string(),
                    )
            };
            match ev.code {
                event_code::VERIFICATION_FAILED => log::warn!(
                    "gateway {gw} reports a verification failure: {}",
                    ev.detail.as_deref().unwrap_or("(no detail)")
                ),
                event_code::LAST_GASP => log::warn!(
                    "gateway {gw}: last gasp, its supply failed at {}; it stops on its reserve",
                    at(0)
                ),
                event_code::POWER_RESTORED => log::warn!(
                    "gateway {gw}: supply back; it was out from {} to {}",
                    at(0),
                    at(1)
                ),
                _ => {}
            }
            return Ok(self.store.apply(b)?);
        };
        let notice = self.store.update_meter_apply(m, b, |rec| match ev.code {
            event_code::LOW_CREDIT => {
                let balance = ev
                    .values
                    .first()
                    .copied()
                    .or(rec.view.balance_minor)
                    .unwrap_or(0);
                Some(Notice::LowCredit {
                    meter: m.to_string(),
                    balance_minor: balance,
                    at: ev.at,
                })
            }
            event_code::RELAY_OPENED => {
                rec.view.supply_on = Some(false);
                Some(Notice::SupplyCut {
                    meter: m.to_string(),
                    at: ev.at,
                })
            }
            event_code::RELAY_CLOSED => {
                rec.view.supply_on = Some(true);
                Some(Notice::SupplyRestored {
                    meter: m.to_string(),
                    at: ev.at,
                })
            }
            _ => None,
        })?;
        if let Some(n) = notice.flatten() {
            self.notifier.meter(&self.store, m, n);
        }
        Ok(())
    }

    pub(super) fn account(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        id: MessageId,
        a: AccountSummary,
        now: u64,
    ) -> Result<Vec<Outgoing>, Fault> {
        let Some(m) = meter else {
            return Err(Fault::Reject(
                "an account summary in the gateway scope names no meter".into(),
            ));
        };
        let applied: Option<Vec<(u64, u64)>> = a
            .applied
            .as_ref()
            .map(|v| v.iter().map(|r| (r.first, r.last)).collect());
        let mut b = Batch::new();
        self.ingest(
            &mut b,
            "account",
            gw,
            meter,
            id,
            a.at,
            now,
            json!({"at": a.at, "balance_minor": a.balance_minor, "currency": a.currency, "last_token_serial": a.last_token_serial,
                   "register_wh": a.register_wh, "tariff_id": a.tariff_id, "charged_minor": a.charged_minor, "relay_closed": a.relay_closed,
                   "applied": applied, "audit": a.audit.map(|x| format!("{}:{}", x.len, hex::encode(x.head)))}),
        );
        let recorded = match a.audit {
            Some(anchor) => self.anchor(&mut b, gw, m, &anchor, a.at, now)?,
            None => None,
        };
        self.store.update_meter_apply(m, b, |rec| {
            if rec.view.balance_at.is_none_or(|t| t <= a.at) {
                rec.view.balance_minor = Some(a.balance_minor);
                rec.view.balance_at = Some(a.at);
                rec.view.supply_on = Some(a.relay_closed);
            }
            if rec.summary.as_ref().is_none_or(|s| s.at <= a.at) {
                rec.summary = Some(SummaryView {
                    at: a.at,
                    balance_minor: a.balance_minor,
                    register_wh: a.register_wh,
                    charged_minor: a.charged_minor,
                    tariff_id: a.tariff_id,
                    last_token_serial: a.last_token_serial,
                    applied,
                    received_at: now,
                });
            }
        })?;
        let mut out = self.reconciled(m, &a, now)?;
        // Recorded durably above; only now may the gateway hear of it.
        if let Some(anchor) = recorded {
            out.extend(self.confirm_anchor(gw, &anchor, now));
        }
        Ok(out)
    }

    /// Birth and death on the status topic.
    pub(super) fn status(
        &mut self,
        t: &Topic,
        payload: &[u8],
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        let gw = t.gateway().as_str().to_string();
        let frame = protect::open(t, payload, None, now).map_err(|e| format!("refused: {e}"))?;
        let mut rec = self
            .store
            .gateway(&gw)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("gateway {gw} vanished"))?;
        let mut b = Batch::new();
        let out = match frame.body {
            Body::Birth(birth) => {
                rec.online = true;
                rec.birth = Some(BirthView {
                    software: birth.software.clone(),
                    started_at: birth.started_at,
                    session: birth.session,
                    meters: birth.meters.len() as u32,
                    online: birth.meters.iter().filter(|m| m.online).count() as u32,
                    outbox_len: birth.outbox_len,
                    at: now,
                });
                self.ingest(
                    &mut b,
                    "birth",
                    &gw,
                    None,
                    frame.header.id,
                    now,
                    now,
                    json!({"software": birth.software, "started_at": birth.started_at, "session": birth.session,
                           "meters": birth.meters.iter().map(|m| json!({"tid": m.tid.map(|t| t.to_hex()), "model": m.model, "online": m.online})).collect::<Vec<_>>(),
                           "outbox_len": birth.outbox_len}),
                );
                b.put(gateway_key(&gw), &rec);
                self.store.commit(b).map_err(|e| e.to_string())?;
                log::info!(
                    "gateway {gw} is online (connection {}, {} meters)",
                    birth.session,
                    birth.meters.len()
                );
                let mut out = self.reconcile(&gw, now);
                out.extend(self.deliver(None, now));
                out
            }
            Body::Death(d) => {
                if rec.birth.as_ref().is_none_or(|b| b.session <= d.session) {
                    rec.online = false;
                }
                self.ingest(
                    &mut b,
                    "death",
                    &gw,
                    None,
                    frame.header.id,
                    now,
                    now,
                    json!({"session": d.session}),
                );
                b.put(gateway_key(&gw), &rec);
                self.store.commit(b).map_err(|e| e.to_string())?;
                log::info!("gateway {gw} is offline (connection {} ended)", d.session);
                vec![]
            }
            other => return Err(format!("{:?} on the status topic: ignored", other.kind())),
        };
        Ok(out)
    }
}

/// `value × 10^exponent` as whole units, if it fits.
pub(super) fn scaled(value: i64, exponent: i8) -> Option<u64> {
    let v = u64::try_from(value).ok()?;
    if exponent >= 0 {
        v.checked_mul(10u64.checked_pow(exponent as u32)?)
    } else {
        Some(
            v / 10u64
                .checked_pow(exponent.unsigned_abs() as u32)
                .unwrap_or(u64::MAX),
        )
    }
}
