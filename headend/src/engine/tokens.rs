//! Top-up delivery, command results, receipts and reconciliation.

use concentrator_mpc::backend::Notice;
use concentrator_protocol::{
    result_code, AccountRequest, AccountSummary, Body, CommandResult, GatewayId, MessageId,
    ReceiptBody, Scope, SerialRange, TopUp,
};
use concentrator_security::signed::SignedDocument;
use openssl::nid::Nid;
use serde_json::json;

use super::{Engine, Fault, Outgoing};
use crate::audit::{Draft, EntryKind};
use crate::money::{money, money_u};
use crate::store::{
    ingested_key, pending_key, token_key, Batch, Ingested, MeterRecord, SubscriberRef, TokenRecord,
    TokenRef, TokenState,
};

/// A token sent (or answered) within this many seconds is not sent again by reconciliation; and a
/// meter asked for its account holds its top-ups this long at most for the answer.
const RECENT: u64 = 30;

/// Whether a result code says the gateway carried the top-up out (now or before): the token then
/// waits for its receipt, and only the receipt books it.
fn carried_out(code: u16) -> bool {
    matches!(code, result_code::DONE | result_code::ALREADY_DONE)
}

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
        let c = set.live(now).find(|c| c.tid.is_some())?;
        let tid: [u8; 8] = hex::decode(c.tid.as_deref()?).ok()?.try_into().ok()?;
        let gw = GatewayId::new(m.gateway.clone()).ok()?;
        let rand = c.rand.clone();
        Some((gw, Scope::Meter(concentrator_protocol::Tid(tid)), sub, rand))
    }

    pub(super) fn gateway_online(&self, gw: &str) -> bool {
        self.store
            .gateway(gw)
            .ok()
            .flatten()
            .is_some_and(|g| g.online)
    }

    /// Sends pending top-ups: of one meter (`Some`, as soon as possible), or of every meter whose
    /// command is due: never sent; sent without a result within the result timeout; answered with a
    /// temporary failure a result timeout ago; or answered "done" / "already done" a result timeout
    /// ago without the receipt arriving (then as a new command, so that the gateway's ledger answers
    /// the replay and sends the original receipt again).
    pub fn deliver(&mut self, meter: Option<&str>, now: u64) -> Vec<Outgoing> {
        let pending = match self.store.pending(meter) {
            Ok(p) => p,
            Err(e) => {
                log::error!("top-up delivery: {e}");
                return vec![];
            }
        };
        let mut out = Vec::new();
        let mut gateways: std::collections::HashMap<String, String> = Default::default();
        for r in pending {
            // Not due (sent, waiting for its result): no scope needed to pass it by.
            if self.shared
                && matches!(self.store.token(&r.meter, r.serial), Ok(Some(t)) if !self.due(&t, now))
            {
                continue;
            }
            // The token is read afresh and sent in a scope on its meter's gateway, so that two
            // workers never send it at once and a receipt booked meanwhile is seen.
            let gw = match gateways.get(&r.meter) {
                Some(g) => g.clone(),
                None => match self.store.meter(&r.meter) {
                    Ok(Some(m)) => {
                        gateways.insert(r.meter.clone(), m.gateway.clone());
                        m.gateway
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        log::error!("top-up delivery: {e}");
                        continue;
                    }
                },
            };
            if self.in_gateway.as_deref().is_some_and(|g| g != gw) {
                // Another gateway's token while in this gateway's scope (a birth): the next tick
                // sends it, in that gateway's own scope (scopes on two gateways could deadlock).
                continue;
            }
            match self.on_gateway(&gw, now, |this| this.deliver_one(&r, now)) {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(e) => log::error!("top-up {}#{}: {e}", r.meter, r.serial),
            }
        }
        out
    }

    /// One pending token of [`Engine::deliver`]: sent if due.
    fn deliver_one(&mut self, r: &TokenRef, now: u64) -> Option<Outgoing> {
        if let Some(at) = self.awaiting_account.get(&r.meter) {
            // The summary resends what the meter lacks; a gateway that does not answer holds the
            // meter's top-ups only briefly.
            if now < at.saturating_add(RECENT) {
                return None;
            }
        }
        let Ok(Some(t)) = self.store.token(&r.meter, r.serial) else {
            return None;
        };
        if t.state != TokenState::Pending || !self.due(&t, now) {
            return None;
        }
        let fresh = t.result.is_some_and(carried_out);
        if fresh {
            log::warn!(
                "top-up {}#{}: the gateway carried it out but its receipt has not come: sent again as a new command, for the receipt",
                t.meter,
                t.serial
            );
        }
        match self.send_token(t, now, fresh) {
            Ok(o) => return o,
            Err(e) => log::warn!("top-up {}#{}: {e}", r.meter, r.serial),
        }
        None
    }

    /// Whether a pending token's command is due (see [`Engine::deliver`]).
    fn due(&self, t: &TokenRecord, now: u64) -> bool {
        let timeout = self.s.result_timeout;
        match (t.sent_at, t.result) {
            (None, _) => true,
            (Some(at), None) => now >= at.saturating_add(timeout),
            (Some(at), Some(code)) => {
                // A receipt that does not follow a "done" is asked for again less and less often
                // (up to 64 timeouts apart), so a gateway that cannot send it does not fill the log.
                let wait = if carried_out(code) {
                    timeout.saturating_mul(1 << t.sends.saturating_sub(1).min(6))
                } else {
                    timeout
                };
                now >= t.result_at.unwrap_or(at).saturating_add(wait)
            }
        }
    }

    /// Seals and records one top-up command; `None` while the meter cannot be reached. `fresh`: as a
    /// new command (new message id) rather than a resend of the last one.
    fn send_token(
        &mut self,
        mut t: TokenRecord,
        now: u64,
        fresh: bool,
    ) -> Result<Option<Outgoing>, String> {
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
            Some(id) if !fresh => id,
            _ => self.new_id(),
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
        t.result_at = None;
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
                detail: Some(format!(
                    "send {}{}",
                    t.sends,
                    if fresh { " as a new command" } else { "" }
                )),
            };
            self.payments
                .append_with(&self.store, vec![draft], b)
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
    ) -> Result<Vec<Outgoing>, Fault> {
        if let Some(out) = self.tenancy_result(gw, meter, &r, now)? {
            return Ok(out);
        }
        if let Some(out) = self.remote_result(gw, meter, &r, now)? {
            return Ok(out);
        }
        if let Some(out) = self.backfill_result(gw, meter, &r, now)? {
            return Ok(out);
        }
        let Some(tr) = self.store.get::<TokenRef>(format!("cmd/{}", r.command))? else {
            log::info!(
                "gateway {gw}: result {} for command {} (not a top-up of ours)",
                r.code,
                r.command
            );
            return Ok(vec![]);
        };
        if meter != Some(tr.meter.as_str()) {
            return Err(Fault::Reject(format!(
                "result for the top-up of meter {} arrived in the scope of {}",
                tr.meter,
                meter.unwrap_or("the gateway")
            )));
        }
        let Some(mut t) = self.store.token(&tr.meter, tr.serial)? else {
            return Err(Fault::Reject(format!(
                "result for token {}#{}, which is not in the store",
                tr.meter, tr.serial
            )));
        };
        if t.state != TokenState::Pending {
            return Ok(vec![]);
        }
        t.result = Some(r.code);
        t.result_at = Some(now);
        let applied_there = self
            .store
            .meter(&t.meter)?
            .and_then(|m| m.summary)
            .and_then(|s| s.applied)
            .is_some_and(|v| v.iter().any(|&(a, b)| a <= t.serial && t.serial <= b));
        if r.code == result_code::TOKEN_REFUSED && applied_there {
            // A replay refused by a gateway whose last summary lists the serial applied: the token
            // was applied, and its receipt books it; it is not refused.
            log::warn!(
                "top-up {}#{}: gateway {gw} refused a repeat of it ({}), but its last account summary lists it applied: waiting for the receipt",
                t.meter,
                t.serial,
                r.reason.as_deref().unwrap_or("no reason")
            );
            t.result = Some(result_code::ALREADY_DONE);
        }
        match t.result.unwrap_or(r.code) {
            code if carried_out(code) => {
                log::info!(
                    "top-up {}#{}: gateway {gw} carried it out ({}); waiting for the receipt (sent again if none comes within {} s)",
                    t.meter,
                    t.serial,
                    if code == result_code::DONE { "done" } else { "already done" },
                    self.s.result_timeout
                );
                t.reason = None;
                let mut b = Batch::new();
                b.put(token_key(&t.meter, t.serial), &t);
                self.store.apply(b)?;
            }
            result_code::TOKEN_REFUSED | result_code::UNSUPPORTED | result_code::INVALID => {
                let reason = r
                    .reason
                    .unwrap_or_else(|| format!("refused with code {}", r.code));
                log::warn!(
                    "top-up {}#{} ({}) refused by gateway {gw}: {reason}",
                    t.meter,
                    t.serial,
                    money_u(t.amount_minor, &t.currency)
                );
                t.state = TokenState::Refused;
                t.reason = Some(reason.clone());
                // A token of a customer who moved out, refused because the account closed: refunded
                // here (the settlement refunds only those still pending when it comes).
                let moved_out = self.moved_out_order(&t)?;
                let draft = Draft {
                    at: now,
                    what: if moved_out.is_some() {
                        EntryKind::Refund
                    } else {
                        EntryKind::TokenRefused
                    },
                    customer: Some(t.customer.clone()),
                    meter: t.meter.clone(),
                    serial: t.serial,
                    amount_minor: t.amount_minor,
                    currency: t.currency.clone(),
                    detail: Some(match moved_out {
                        Some(order) => format!(
                            "order {order}: refused by the gateway after the change of tenancy ({reason}), refunded"
                        ),
                        None => reason.clone(),
                    }),
                };
                let mut b = Batch::new();
                b.put(token_key(&t.meter, t.serial), &t);
                b.remove(pending_key(&t.meter, t.serial));
                self.payments.append_with(&self.store, vec![draft], b)?;
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
                    "top-up {}#{}: gateway {gw} answered {other} ({}, {}); sent again in {} s",
                    t.meter,
                    t.serial,
                    if result_code::is_final(other) {
                        "final"
                    } else {
                        "temporary"
                    },
                    r.reason.as_deref().unwrap_or("no reason"),
                    self.s.result_timeout
                );
                // Kept for the customer while the token waits (the web app shows why).
                t.reason = r.reason.clone();
                let mut b = Batch::new();
                b.put(token_key(&t.meter, t.serial), &t);
                self.store.apply(b)?;
            }
        }
        Ok(vec![])
    }

    /// A signed receipt: the only thing that books a token applied.
    pub(super) fn receipt(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        id: MessageId,
        r: ReceiptBody,
        now: u64,
    ) -> Result<(), Fault> {
        let doc = SignedDocument::decode(&r.signed).map_err(|e| {
            Fault::Reject(format!(
                "receipt does not decode: bad or truncated {} at offset {}",
                e.what, e.offset
            ))
        })?;
        let receipt = self
            .s
            .receipts
            .verify(&doc, now)
            .map_err(|e| Fault::Reject(format!("receipt does not verify: {e}")))?;
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
            return Err(Fault::Reject(format!(
                "receipt names gateway {} and is signed by {}, but came from gateway {gw}",
                receipt.gateway_id,
                signer_cn.as_deref().unwrap_or("(no common name)")
            )));
        }
        if meter != Some(receipt.meter_id.as_str()) {
            return Err(Fault::Reject(format!(
                "receipt is for meter {} but came in the scope of {}",
                receipt.meter_id,
                meter.unwrap_or("the gateway")
            )));
        }
        let m = receipt.meter_id.clone();
        let currency = String::from_utf8_lossy(&receipt.currency).into_owned();
        let mut b = Batch::new();
        b.put(
            ingested_key("receipt", &m, receipt.applied_at, &id.0),
            &Ingested {
                gateway: gw.to_string(),
                meter: Some(m.clone()),
                id: id.to_string(),
                received_at: now,
                body: json!({"serial": receipt.serial, "amount_minor": receipt.amount_minor,
                             "currency": currency, "applied_at": receipt.applied_at,
                             "balance_after_minor": receipt.balance_after_minor, "signed": hex::encode(&r.signed)}),
            },
        );
        let Some(mut t) = self.store.token(&m, receipt.serial)? else {
            self.store.apply(b)?;
            return Err(Fault::Reject(format!(
                "receipt for token {m}#{} ({}), which this head-end did not issue; the receipt is stored",
                receipt.serial,
                money_u(receipt.amount_minor, &currency)
            )));
        };
        if t.amount_minor != receipt.amount_minor || t.currency.as_bytes() != receipt.currency {
            self.store.apply(b)?;
            return Err(Fault::Reject(format!(
                "receipt for {m}#{} says {} but the token was for {}; the receipt is stored, the token stays pending: check the gateway",
                receipt.serial,
                money_u(receipt.amount_minor, &currency),
                money_u(t.amount_minor, &t.currency)
            )));
        }
        if t.state == TokenState::Applied && t.receipt.is_some() {
            self.store.apply(b)?;
            return Ok(());
        }
        let was_applied = t.state == TokenState::Applied;
        t.state = TokenState::Applied;
        t.receipt = Some(hex::encode(&r.signed));
        t.balance_after_minor = Some(receipt.balance_after_minor);
        t.applied_at = Some(receipt.applied_at);
        b.put(token_key(&m, t.serial), &t);
        b.remove(pending_key(&m, t.serial));
        let (serial, balance, applied_at) =
            (t.serial, receipt.balance_after_minor, receipt.applied_at);
        let update = move |rec: &mut MeterRecord| {
            rec.last_applied_serial = rec.last_applied_serial.max(Some(serial));
            if rec.view.balance_at.is_none_or(|at| at <= applied_at) {
                rec.view.balance_minor = Some(balance);
                rec.view.balance_at = Some(applied_at);
            }
        };
        if was_applied {
            // A store from before receipts alone booked tokens; the receipt completes the record.
            self.store.update_meter_apply(&m, b, update)?;
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
                money(receipt.balance_after_minor, &currency)
            )),
        };
        self.store.update_meter(&m, b, update, |b| {
            self.payments.append_with(&self.store, vec![draft], b)
        })?;
        log::info!(
            "top-up {m}#{} ({}) applied (receipt from {gw}), balance {}",
            t.serial,
            money_u(t.amount_minor, &t.currency),
            money(receipt.balance_after_minor, &currency)
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

    /// Account requests (0x8A) to the meters of `gw` that have pending tokens (a gateway that was
    /// born again: whatever it was sent before may be lost).
    pub(super) fn reconcile(&mut self, gw: &str, now: u64) -> Vec<Outgoing> {
        let meters = match self.store.gateway(gw) {
            Ok(Some(g)) => g.meters,
            _ => return vec![],
        };
        let pending: Vec<String> = meters
            .into_iter()
            .filter(|m| self.store.pending(Some(m)).is_ok_and(|p| !p.is_empty()))
            .collect();
        self.ask_accounts(&pending, now)
    }

    /// The meters of the periodic pass, by gateway: those with a pending top-up that was sent and
    /// has had no answer for [`RECENT`] seconds or more. Tokens never sent are [`Engine::deliver`]'s.
    pub(super) fn unanswered_by_gateway(
        &self,
        now: u64,
    ) -> Result<Vec<(String, Vec<String>)>, String> {
        let e = |e: crate::store::StoreError| e.to_string();
        let mut by_gateway: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut seen = std::collections::HashSet::new();
        for r in self.store.pending(None).map_err(e)? {
            if seen.contains(&r.meter) {
                continue;
            }
            let Some(t) = self.store.token(&r.meter, r.serial).map_err(e)? else {
                continue;
            };
            let touched = t.sent_at.max(t.result_at);
            if t.state != TokenState::Pending
                || touched.is_none_or(|at| now < at.saturating_add(RECENT))
            {
                continue;
            }
            let Some(m) = self.store.meter(&r.meter).map_err(e)? else {
                continue;
            };
            seen.insert(r.meter.clone());
            by_gateway.entry(m.gateway).or_default().push(r.meter);
        }
        let mut out = Vec::new();
        for (gw, meters) in by_gateway {
            if self.gateway_online(&gw) {
                out.push((gw, meters));
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Account requests (0x8A) to `meters` (of one gateway, in its scope); their top-ups wait
    /// [`RECENT`] seconds at most for the summaries.
    pub(super) fn ask_accounts(&mut self, meters: &[String], now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for m in meters {
            let Ok(Some(rec)) = self.store.meter(m) else {
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

    /// An account summary arrived: reconciliation by applied sets. Nothing is booked from a summary;
    /// every pending token not sent or answered recently is sent again as a new command: one the
    /// gateway has not applied is applied now, one it has applied (its receipt missing here) is
    /// answered "already done" with the original receipt sent again, which books it. A gateway that
    /// does not list its applied serials gets the same. A token booked refused that the summary lists
    /// applied is sent again for its receipt too.
    pub(super) fn reconciled(
        &mut self,
        m: &str,
        a: &AccountSummary,
        now: u64,
    ) -> Result<Vec<Outgoing>, Fault> {
        self.awaiting_account.remove(m);
        let pending = self.store.pending(Some(m))?;
        let mut resend = Vec::new();
        for r in pending {
            let Some(t) = self.store.token(m, r.serial)? else {
                continue;
            };
            if t.state != TokenState::Pending {
                continue;
            }
            let why = match a.applied.as_deref() {
                Some(set) if SerialRange::contains(set, t.serial) => {
                    "the gateway applied it but its receipt is not here: sent again for the receipt"
                }
                Some(_) => "the gateway has not applied it: sent again",
                None => "the gateway does not list its applied serials: sent again",
            };
            let touched = t.sent_at.max(t.result_at);
            if touched.is_some_and(|at| now < at.saturating_add(RECENT)) {
                log::debug!("top-up {m}#{}: in flight, not sent again yet", t.serial);
                continue;
            }
            log::info!("top-up {m}#{} (reconciliation): {why}", t.serial);
            resend.push(t);
        }
        if let Some(set) = a.applied.as_deref() {
            // A token booked refused that the gateway lists as applied (a refusal that crossed with
            // an earlier delivery): its receipt is asked for, and books it.
            for t in self.store.tokens(m)? {
                if t.state != TokenState::Refused || !SerialRange::contains(set, t.serial) {
                    continue;
                }
                if t.sent_at.is_some_and(|at| now < at.saturating_add(RECENT)) {
                    continue;
                }
                log::error!(
                    "top-up {m}#{} ({}) is recorded refused but the gateway lists it applied: its receipt is asked for",
                    t.serial,
                    money_u(t.amount_minor, &t.currency)
                );
                resend.push(t);
            }
        }
        let mut out = Vec::new();
        for t in resend {
            let (meter, serial) = (t.meter.clone(), t.serial);
            match self.send_token(t, now, true) {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(err) => log::warn!("top-up {meter}#{serial}: {err}"),
            }
        }
        Ok(out)
    }
}
