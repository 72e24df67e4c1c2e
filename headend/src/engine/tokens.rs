//! Top-up delivery, command results, receipts and reconciliation.

use concentrator_mpc::backend::Notice;
use concentrator_protocol::{
    result_code, AccountRequest, Body, CommandResult, GatewayId, MessageId, ReceiptBody, Scope,
    TopUp,
};
use concentrator_security::signed::SignedDocument;
use openssl::nid::Nid;
use serde_json::json;

use super::{Engine, Outgoing};
use crate::audit::{Draft, EntryKind};
use crate::store::{
    ingested_key, meter_key, pending_key, token_key, Batch, Ingested, MeterRecord, SubscriberRef,
    TokenRecord, TokenRef, TokenState,
};

/// A token sent within this many seconds is not sent again by reconciliation.
const RECENT: u64 = 30;

fn parse_id(hex_id: &str) -> Option<MessageId> {
    let v = hex::decode(hex_id).ok()?;
    Some(MessageId(v.try_into().ok()?))
}

impl Engine {
    /// Where downlink messages for a meter go: its gateway, the scope of its newest confirmed live
    /// context's TID, and that context's RAND.
    pub(super) fn meter_target(
        &self,
        m: &MeterRecord,
        now: u64,
    ) -> Option<(GatewayId, Scope, SubscriberRef, String)> {
        let sub = SubscriberRef::Meter(m.meter.clone());
        let set = self.store.contexts(&sub).ok()?;
        let c = [set.current, set.previous]
            .into_iter()
            .flatten()
            .find(|c| c.confirmed && now < c.expires_at() && c.tid.is_some())?;
        let tid: [u8; 8] = hex::decode(c.tid.as_deref()?).ok()?.try_into().ok()?;
        let gw = GatewayId::new(m.gateway.clone()).ok()?;
        Some((
            gw,
            Scope::Meter(concentrator_protocol::Tid(tid)),
            sub,
            c.rand,
        ))
    }

    fn gateway_online(&self, gw: &str) -> bool {
        self.store
            .gateway(gw)
            .ok()
            .flatten()
            .is_some_and(|g| g.online)
    }

    /// Sends pending top-ups: of one meter (`Some`, as soon as possible), or of every meter whose
    /// command is due (never sent, or sent without a result within the timeout, or a retry result).
    pub fn deliver(&mut self, meter: Option<&str>, now: u64) -> Vec<Outgoing> {
        let pending = match self.store.pending(meter) {
            Ok(p) => p,
            Err(e) => {
                log::error!("top-up delivery: {e}");
                return vec![];
            }
        };
        let timeout = self.s.result_timeout;
        let mut out = Vec::new();
        for r in pending {
            if let Some(at) = self.awaiting_account.get(&r.meter) {
                if now < at.saturating_add(timeout) {
                    continue;
                }
            }
            let Ok(Some(t)) = self.store.token(&r.meter, r.serial) else {
                continue;
            };
            let due = match (t.sent_at, t.result) {
                (None, _) => true,
                (Some(_), Some(result_code::DONE | result_code::ALREADY_DONE)) => false,
                (Some(at), _) => now >= at.saturating_add(timeout),
            };
            if due {
                match self.send_token(t, now) {
                    Ok(Some(o)) => out.push(o),
                    Ok(None) => {}
                    Err(e) => log::warn!("top-up {}#{}: {e}", r.meter, r.serial),
                }
            }
        }
        out
    }

    /// Seals and records one top-up command; `None` while the meter cannot be reached.
    fn send_token(&mut self, mut t: TokenRecord, now: u64) -> Result<Option<Outgoing>, String> {
        let e = |e: crate::store::StoreError| e.to_string();
        let m = self
            .store
            .meter(&t.meter)
            .map_err(e)?
            .ok_or_else(|| format!("meter {} vanished", t.meter))?;
        if !self.gateway_online(&m.gateway) {
            return Ok(None);
        }
        let Some((gw, scope, sub, rand)) = self.meter_target(&m, now) else {
            return Ok(None);
        };
        let token = hex::decode(&t.token).map_err(|e| format!("stored token is not hex: {e}"))?;
        let id = match t.command.as_deref().and_then(parse_id) {
            Some(id) => id,
            None => self.new_id(),
        };
        let out = self.seal(
            &gw,
            scope,
            &sub,
            &rand,
            Body::TopUp(TopUp { token }),
            Some(id),
            now,
        )?;
        let resend = t.sends > 0;
        t.command = Some(id.to_string());
        t.sent_at = Some(now);
        t.sends += 1;
        t.result = None;
        let mut b = Batch::new();
        b.put(token_key(&t.meter, t.serial), &t);
        b.put(
            format!("cmd/{id}"),
            &TokenRef {
                meter: t.meter.clone(),
                serial: t.serial,
            },
        );
        if resend {
            let draft = Draft {
                at: now,
                what: EntryKind::Resent,
                customer: Some(t.customer.clone()),
                meter: t.meter.clone(),
                serial: t.serial,
                amount_minor: t.amount_minor,
                currency: t.currency.clone(),
                detail: Some(format!("send {}", t.sends)),
            };
            self.payments
                .append(&self.store, vec![draft], |_| b)
                .map_err(e)?;
        } else {
            self.store.commit(b).map_err(e)?;
        }
        log::info!(
            "top-up {}#{} sent to gateway {gw} (send {})",
            t.meter,
            t.serial,
            t.sends
        );
        Ok(Some(out))
    }

    pub(super) fn command_result(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        r: CommandResult,
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        let e = |e: crate::store::StoreError| e.to_string();
        let Some(tr) = self
            .store
            .get::<TokenRef>(format!("cmd/{}", r.command))
            .map_err(e)?
        else {
            log::info!(
                "gateway {gw}: result {} for command {} (not a top-up of ours)",
                r.code,
                r.command
            );
            return Ok(vec![]);
        };
        if meter != Some(tr.meter.as_str()) {
            return Err(format!(
                "result for the top-up of meter {} arrived in the scope of {meter:?}: ignored",
                tr.meter
            ));
        }
        let Some(mut t) = self.store.token(&tr.meter, tr.serial).map_err(e)? else {
            return Err(format!("token {}#{} vanished", tr.meter, tr.serial));
        };
        if t.state != TokenState::Pending {
            return Ok(vec![]);
        }
        t.result = Some(r.code);
        match r.code {
            result_code::DONE | result_code::ALREADY_DONE => {
                log::info!(
                    "top-up {}#{}: gateway {gw} carried it out ({}); waiting for the receipt",
                    t.meter,
                    t.serial,
                    r.code
                );
                let mut b = Batch::new();
                b.put(token_key(&t.meter, t.serial), &t);
                self.store.apply(b).map_err(e)?;
            }
            result_code::TOKEN_REFUSED | result_code::UNSUPPORTED | result_code::INVALID => {
                let reason = r
                    .reason
                    .unwrap_or_else(|| format!("refused with code {}", r.code));
                log::warn!(
                    "top-up {}#{} refused by gateway {gw}: {reason}",
                    t.meter,
                    t.serial
                );
                t.state = TokenState::Refused;
                t.reason = Some(reason.clone());
                let draft = Draft {
                    at: now,
                    what: EntryKind::TokenRefused,
                    customer: Some(t.customer.clone()),
                    meter: t.meter.clone(),
                    serial: t.serial,
                    amount_minor: t.amount_minor,
                    currency: t.currency.clone(),
                    detail: Some(reason.clone()),
                };
                let mut b = Batch::new();
                b.put(token_key(&t.meter, t.serial), &t);
                b.remove(pending_key(&t.meter, t.serial));
                self.payments
                    .append(&self.store, vec![draft], |_| b)
                    .map_err(e)?;
                self.notifier.meter(
                    &self.store,
                    &t.meter,
                    Notice::Refused {
                        meter: t.meter.clone(),
                        serial: t.serial,
                        reason,
                        at: now,
                    },
                );
            }
            other => {
                log::warn!(
                    "top-up {}#{}: gateway {gw} answered {other} ({}); sent again in {} s",
                    t.meter,
                    t.serial,
                    r.reason.as_deref().unwrap_or("no reason"),
                    self.s.result_timeout
                );
                t.sent_at = Some(now);
                let mut b = Batch::new();
                b.put(token_key(&t.meter, t.serial), &t);
                self.store.apply(b).map_err(e)?;
            }
        }
        Ok(vec![])
    }

    pub(super) fn receipt(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        id: MessageId,
        r: ReceiptBody,
        now: u64,
    ) -> Result<(), String> {
        let e = |e: crate::store::StoreError| e.to_string();
        let doc =
            SignedDocument::decode(&r.signed).map_err(|e| format!("receipt refused: {e:?}"))?;
        let receipt = self
            .s
            .receipts
            .verify(&doc, now)
            .map_err(|e| format!("receipt refused: {e}"))?;
        let signer_cn = doc
            .chain
            .first()
            .and_then(|der| openssl::x509::X509::from_der(der).ok())
            .and_then(|c| {
                c.subject_name()
                    .entries_by_nid(Nid::COMMONNAME)
                    .next()
                    .and_then(|n| n.data().to_string().ok())
            });
        if receipt.gateway_id != gw || signer_cn.as_deref() != Some(gw) {
            return Err(format!(
                "receipt refused: it names gateway {} and is signed by {:?}, but came from gateway {gw}",
                receipt.gateway_id, signer_cn
            ));
        }
        if meter != Some(receipt.meter_id.as_str()) {
            return Err(format!(
                "receipt refused: it is for meter {} but came in the scope of {meter:?}",
                receipt.meter_id
            ));
        }
        let m = receipt.meter_id.clone();
        let mut b = Batch::new();
        b.put(
            ingested_key("receipt", &m, receipt.applied_at, &id.0),
            &Ingested {
                gateway: gw.to_string(),
                meter: Some(m.clone()),
                id: id.to_string(),
                received_at: now,
                body: json!({"serial": receipt.serial, "amount_minor": receipt.amount_minor,
                             "currency": String::from_utf8_lossy(&receipt.currency), "applied_at": receipt.applied_at,
                             "balance_after_minor": receipt.balance_after_minor, "signed": hex::encode(&r.signed)}),
            },
        );
        let Some(mut t) = self.store.token(&m, receipt.serial).map_err(e)? else {
            self.store.apply(b).map_err(e)?;
            return Err(format!(
                "receipt for token {m}#{} that this head-end did not issue: stored, not matched",
                receipt.serial
            ));
        };
        if t.amount_minor != receipt.amount_minor || t.currency.as_bytes() != receipt.currency {
            self.store.apply(b).map_err(e)?;
            return Err(format!(
                "receipt for {m}#{} says {} {} but the token was for {} {}: stored, not matched; check the gateway",
                receipt.serial,
                receipt.amount_minor,
                String::from_utf8_lossy(&receipt.currency),
                t.amount_minor,
                t.currency
            ));
        }
        if t.state == TokenState::Applied && t.receipt.is_some() {
            self.store.apply(b).map_err(e)?;
            return Ok(());
        }
        let was_applied = t.state == TokenState::Applied;
        t.state = TokenState::Applied;
        t.receipt = Some(hex::encode(&r.signed));
        t.balance_after_minor = Some(receipt.balance_after_minor);
        t.applied_at = Some(receipt.applied_at);
        b.put(token_key(&m, t.serial), &t);
        b.remove(pending_key(&m, t.serial));
        if let Some(mut rec) = self.store.meter(&m).map_err(e)? {
            rec.last_applied_serial = rec.last_applied_serial.max(Some(t.serial));
            if rec
                .view
                .balance_at
                .is_none_or(|at| at <= receipt.applied_at)
            {
                rec.view.balance_minor = Some(receipt.balance_after_minor);
                rec.view.balance_at = Some(receipt.applied_at);
            }
            b.put(meter_key(&m), &rec);
        }
        if was_applied {
            // Reconciliation had already marked it; the receipt completes the record.
            self.store.apply(b).map_err(e)?;
            return Ok(());
        }
        let draft = Draft {
            at: now,
            what: EntryKind::TokenApplied,
            customer: Some(t.customer.clone()),
            meter: m.clone(),
            serial: t.serial,
            amount_minor: t.amount_minor,
            currency: t.currency.clone(),
            detail: Some(format!(
                "receipt from {gw}, balance after {}",
                receipt.balance_after_minor
            )),
        };
        self.payments
            .append(&self.store, vec![draft], |_| b)
            .map_err(e)?;
        log::info!(
            "top-up {m}#{} applied (receipt from {gw}), balance {}",
            t.serial,
            receipt.balance_after_minor
        );
        self.notifier.meter(
            &self.store,
            &m,
            Notice::Applied {
                meter: m.clone(),
                serial: t.serial,
                amount_minor: t.amount_minor,
                balance_after_minor: receipt.balance_after_minor,
                at: receipt.applied_at,
            },
        );
        Ok(())
    }

    /// Account requests (0x8A) to the meters of `gw` that have pending tokens.
    pub(super) fn reconcile(&mut self, gw: &str, now: u64) -> Vec<Outgoing> {
        let meters = match self.store.gateway(gw) {
            Ok(Some(g)) => g.meters,
            _ => return vec![],
        };
        let mut out = Vec::new();
        for m in meters {
            if self
                .store
                .pending(Some(&m))
                .map(|p| p.is_empty())
                .unwrap_or(true)
            {
                continue;
            }
            let Ok(Some(rec)) = self.store.meter(&m) else {
                continue;
            };
            let Some((gwid, scope, sub, rand)) = self.meter_target(&rec, now) else {
                continue;
            };
            match self.seal(
                &gwid,
                scope,
                &sub,
                &rand,
                Body::AccountRequest(AccountRequest {}),
                None,
                now,
            ) {
                Ok(o) => {
                    self.awaiting_account.insert(m.clone(), now);
                    out.push(o);
                }
                Err(e) => log::warn!("reconciliation of meter {m}: {e}"),
            }
        }
        out
    }

    /// An account summary arrived: tokens up to its last applied serial are applied; later pending
    /// ones are sent again (the gateway answers "already done" for one it has, never credits twice).
    pub(super) fn reconciled(
        &mut self,
        gw: &str,
        m: &str,
        a: &concentrator_protocol::AccountSummary,
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        let e = |e: crate::store::StoreError| e.to_string();
        self.awaiting_account.remove(m);
        let pending = self.store.pending(Some(m)).map_err(e)?;
        let mut resend = Vec::new();
        for r in pending {
            let Some(mut t) = self.store.token(m, r.serial).map_err(e)? else {
                continue;
            };
            if a.last_token_serial.is_some_and(|last| t.serial <= last) {
                t.state = TokenState::Applied;
                t.applied_at = Some(a.at);
                let mut b = Batch::new();
                b.put(token_key(m, t.serial), &t);
                b.remove(pending_key(m, t.serial));
                if let Some(mut rec) = self.store.meter(m).map_err(e)? {
                    rec.last_applied_serial = rec.last_applied_serial.max(Some(t.serial));
                    b.put(meter_key(m), &rec);
                }
                let draft = Draft {
                    at: now,
                    what: EntryKind::TokenApplied,
                    customer: Some(t.customer.clone()),
                    meter: m.to_string(),
                    serial: t.serial,
                    amount_minor: t.amount_minor,
                    currency: t.currency.clone(),
                    detail: Some(format!(
                        "account summary from {gw}: last applied serial {}, balance {}",
                        a.last_token_serial.unwrap_or(0),
                        a.balance_minor
                    )),
                };
                self.payments
                    .append(&self.store, vec![draft], |_| b)
                    .map_err(e)?;
                log::info!(
                    "top-up {m}#{} applied (reconciled from the account summary)",
                    t.serial
                );
                self.notifier.meter(
                    &self.store,
                    m,
                    Notice::Applied {
                        meter: m.to_string(),
                        serial: t.serial,
                        amount_minor: t.amount_minor,
                        balance_after_minor: a.balance_minor,
                        at: a.at,
                    },
                );
            } else if t.sent_at.is_none_or(|at| now >= at.saturating_add(RECENT)) {
                resend.push(t);
            }
        }
        let mut out = Vec::new();
        for t in resend {
            let (meter, serial) = (t.meter.clone(), t.serial);
            match self.send_token(t, now) {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(err) => log::warn!("top-up {meter}#{serial}: {err}"),
            }
        }
        Ok(out)
    }
}
