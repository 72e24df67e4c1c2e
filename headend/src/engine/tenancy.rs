//! Change of tenancy on the wire: orders (0x8C) sent until the gateway's settlement (0x0D) arrives, and
//! the settlement booked in the payment record (see [`crate::tenancy`]).

use concentrator_protocol::{result_code, Body, CommandResult, MessageId, SettlementBody};
use concentrator_security::tenancy::SettlementDocument;
use openssl::nid::Nid;

use super::{Engine, Fault, Outgoing};
use crate::audit::{Draft, EntryKind};
use crate::money::money_u;
use crate::store::{
    pending_key, tenancy_command_key, tenancy_key, tenancy_pending_key, token_key, Batch,
    SettlementView, TenancyRecord, TenancyState, TokenState,
};

fn parse_id(hex_id: &str) -> Option<MessageId> {
    let v = hex::decode(hex_id).ok()?;
    Some(MessageId(v.try_into().ok()?))
}

impl Engine {
    /// Takes the operator's requests from the order spool (when one is set) and sends every order that
    /// is due: never sent; sent without a result within the result timeout; answered with a temporary
    /// failure a result timeout ago; or answered "done" a result timeout ago without the settlement
    /// arriving (then as a new command, so that the gateway answers "already done" and sends the same
    /// settlement again).
    pub fn deliver_orders(&mut self, now: u64) -> Vec<Outgoing> {
        if let Some(dir) = self.order_spool.clone() {
            crate::tenancy::take_spool(
                &dir,
                &self.store,
                &self.payments,
                &self.s.statements,
                &self.s.currency,
                now,
            );
        }
        let pending = match self.store.pending_tenancies() {
            Ok(p) => p,
            Err(e) => {
                log::error!("tenancy orders: {e}");
                return vec![];
            }
        };
        let mut out = Vec::new();
        for t in pending {
            if !self.order_due(&t, now) {
                continue;
            }
            let Ok(Some(m)) = self.store.meter(&t.meter) else {
                continue;
            };
            if self.in_gateway.as_deref().is_some_and(|g| g != m.gateway) {
                continue;
            }
            let id = t.order_id;
            match self.on_gateway(&m.gateway, now, |this| this.send_order(id, now)) {
                Ok(Ok(Some(o))) => out.push(o),
                Ok(Ok(None)) => {}
                Ok(Err(e)) | Err(crate::store::StoreError::Db { reason: e, .. }) => {
                    log::warn!("tenancy order {id} (meter {}): {e}", t.meter)
                }
                Err(e) => log::warn!("tenancy order {id} (meter {}): {e}", t.meter),
            }
        }
        out
    }

    fn order_due(&self, t: &TenancyRecord, now: u64) -> bool {
        let timeout = self.s.result_timeout;
        if t.state != TenancyState::Pending {
            return false;
        }
        match (t.sent_at, t.result) {
            (None, _) => true,
            (Some(at), None) => now >= at.saturating_add(timeout),
            (Some(at), Some(_)) => now >= t.result_at.unwrap_or(at).saturating_add(timeout),
        }
    }

    /// Seals and records one order command (read afresh in the gateway's scope); `None` while the meter
    /// cannot be reached.
    fn send_order(&mut self, order_id: u64, now: u64) -> Result<Option<Outgoing>, String> {
        let e = |e: crate::store::StoreError| e.to_string();
        let Some(mut t) = self.store.tenancy(order_id).map_err(e)? else {
            return Ok(None);
        };
        if !self.order_due(&t, now) {
            return Ok(None);
        }
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
        let order = hex::decode(&t.signed).map_err(|e| format!("stored order is not hex: {e}"))?;
        // A resend after a temporary failure or a timeout keeps the message id; after "done" without a
        // settlement it is a new command.
        let fresh = t
            .result
            .is_some_and(|c| matches!(c, result_code::DONE | result_code::ALREADY_DONE));
        let id = match t.command.as_deref().and_then(parse_id) {
            Some(id) if !fresh => id,
            _ => self.new_id(),
        };
        let out = self.seal(
            &gw,
            scope,
            &sub,
            &rand,
            Body::TenancyChange(concentrator_protocol::TenancyChange { order }),
            Some(id),
            now,
        )?;
        t.command = Some(id.to_string());
        t.sent_at = Some(now);
        t.sends += 1;
        t.result = None;
        t.result_at = None;
        let mut b = Batch::new();
        b.put(tenancy_key(t.order_id), &t);
        b.put(tenancy_command_key(&id.to_string()), &t.order_id);
        self.store.commit(b).map_err(e)?;
        log::info!(
            "tenancy order {} (meter {}, {} to {}) sent to gateway {gw} (send {})",
            t.order_id,
            t.meter,
            t.from,
            t.to,
            t.sends
        );
        Ok(Some(out))
    }

    /// The change-of-tenancy order (its id) that moved the buyer of token `t` out of its meter, when the
    /// token was theirs (a serial up to the order's boundary) and the order was not refused.
    pub(super) fn moved_out_order(
        &self,
        t: &crate::store::TokenRecord,
    ) -> Result<Option<u64>, crate::store::StoreError> {
        Ok(self
            .store
            .tenancies_of(&t.meter)?
            .into_iter()
            .find(|o| {
                o.state != TenancyState::Refused
                    && o.from == t.customer
                    && t.serial <= o.last_old_serial
            })
            .map(|o| o.order_id))
    }

    /// A command result that answers a tenancy order; `None` when the command was not one.
    pub(super) fn tenancy_result(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        r: &CommandResult,
        now: u64,
    ) -> Result<Option<Vec<Outgoing>>, Fault> {
        let Some(order_id) = self
            .store
            .get::<u64>(tenancy_command_key(&r.command.to_string()))?
        else {
            return Ok(None);
        };
        let Some(mut t) = self.store.tenancy(order_id)? else {
            return Ok(Some(vec![]));
        };
        if meter != Some(t.meter.as_str()) {
            return Err(Fault::Reject(format!(
                "result for tenancy order {order_id} of meter {} arrived in the scope of {}",
                t.meter,
                meter.unwrap_or("the gateway")
            )));
        }
        if t.state != TenancyState::Pending {
            return Ok(Some(vec![]));
        }
        t.result = Some(r.code);
        t.result_at = Some(now);
        t.reason = r.reason.clone();
        let mut b = Batch::new();
        match r.code {
            result_code::DONE | result_code::ALREADY_DONE => log::info!(
                "tenancy order {order_id} (meter {}): gateway {gw} closed the account; waiting for its settlement",
                t.meter
            ),
            result_code::TOKEN_REFUSED | result_code::UNSUPPORTED | result_code::INVALID => {
                let why = r
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("refused with code {}", r.code));
                log::warn!(
                    "tenancy order {order_id} (meter {}) refused by gateway {gw}: {why}; order a new change when the cause is fixed",
                    t.meter
                );
                t.state = TenancyState::Refused;
                b.remove(tenancy_pending_key(order_id));
            }
            other => log::warn!(
                "tenancy order {order_id} (meter {}): gateway {gw} answered {other} ({}); sent again in {} s",
                t.meter,
                r.reason.as_deref().unwrap_or("no reason"),
                self.s.result_timeout
            ),
        }
        b.put(tenancy_key(order_id), &t);
        self.store.apply(b)?;
        Ok(Some(vec![]))
    }

    /// A signed settlement: verified, then booked once: the refund of the credit left (or the bill
    /// for the debt) to the customer who left, refunds of that customer's tokens never applied, the
    /// new tenant's opening, and the meter moved between the customers' accounts.
    pub(super) fn settlement(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        s: SettlementBody,
        now: u64,
    ) -> Result<(), Fault> {
        let (doc, signed) = self
            .s
            .receipts
            .verify_settlement(&s.signed, now)
            .map_err(|e| Fault::Reject(format!("settlement does not verify: {e}")))?;
        let signer_cn = signed
            .chain
            .first()
            .and_then(|der| openssl::x509::X509::from_der(der).ok())
            .and_then(|c| {
                c.subject_name()
                    .entries_by_nid(Nid::COMMONNAME)
                    .next()
                    .and_then(|n| n.data().to_string().ok())
            });
        if doc.gateway_id != gw || signer_cn.as_deref() != Some(gw) {
            return Err(Fault::Reject(format!(
                "settlement names gateway {} and is signed by {}, but came from gateway {gw}",
                doc.gateway_id,
                signer_cn.as_deref().unwrap_or("(no common name)")
            )));
        }
        if meter != Some(doc.meter_id.as_str()) {
            return Err(Fault::Reject(format!(
                "settlement is for meter {} but came in the scope of {}",
                doc.meter_id,
                meter.unwrap_or("the gateway")
            )));
        }
        let Some(t) = self.store.tenancy(doc.order_id)? else {
            return Err(Fault::Reject(format!(
                "settlement for tenancy order {}, which this head-end did not make",
                doc.order_id
            )));
        };
        if t.meter != doc.meter_id || t.from != doc.old_customer {
            return Err(Fault::Reject(format!(
                "settlement for order {} names meter {} and customer {}, but the order was for meter {} and customer {}",
                doc.order_id, doc.meter_id, doc.old_customer, t.meter, t.from
            )));
        }
        if t.settlement.is_some() {
            log::debug!(
                "tenancy order {}: its settlement was booked already; this copy changes nothing",
                t.order_id
            );
            return Ok(());
        }
        self.book_settlement(t, doc, &s.signed, now)
    }

    fn book_settlement(
        &mut self,
        mut t: TenancyRecord,
        doc: SettlementDocument,
        signed: &[u8],
        now: u64,
    ) -> Result<(), Fault> {
        let cur = t.currency.clone();
        let m = t.meter.clone();
        let mut drafts = Vec::new();
        let mut b = Batch::new();
        let order = t.order_id;
        if doc.remaining_credit_minor > 0 {
            drafts.push(Draft {
                at: now,
                what: EntryKind::Refund,
                customer: Some(t.from.clone()),
                meter: m.clone(),
                serial: 0,
                amount_minor: doc.remaining_credit_minor,
                currency: cur.clone(),
                detail: Some(format!(
                    "order {order}: credit left when account {} closed (register {} Wh), refunded to {}",
                    doc.account_no, doc.closing_register_wh, t.from
                )),
            });
        }
        if doc.debt_minor > 0 {
            drafts.push(Draft {
                at: now,
                what: EntryKind::Bill,
                customer: Some(t.from.clone()),
                meter: m.clone(),
                serial: 0,
                amount_minor: doc.debt_minor,
                currency: cur.clone(),
                detail: Some(format!(
                    "order {order}: debt left when account {} closed (register {} Wh), billed to {}",
                    doc.account_no, doc.closing_register_wh, t.from
                )),
            });
        }
        // The old customer's tokens the gateway never applied: refunded, and never sent again.
        let mut refunded = Vec::new();
        for mut tok in self.store.tokens(&m)? {
            if tok.state != TokenState::Pending
                || tok.customer != t.from
                || tok.serial > t.last_old_serial
            {
                continue;
            }
            tok.state = TokenState::Refused;
            tok.reason = Some(format!(
                "never applied before change of tenancy order {order} closed the account: refunded"
            ));
            b.put(token_key(&m, tok.serial), &tok);
            b.remove(pending_key(&m, tok.serial));
            refunded.push((tok.serial, tok.amount_minor));
            drafts.push(Draft {
                at: now,
                what: EntryKind::Refund,
                customer: Some(tok.customer.clone()),
                meter: m.clone(),
                serial: tok.serial,
                amount_minor: tok.amount_minor,
                currency: tok.currency.clone(),
                detail: Some(format!(
                    "order {order}: token never applied to the closed account, refunded"
                )),
            });
        }
        drafts.push(Draft {
            at: now,
            what: EntryKind::TenancyOpened,
            customer: Some(t.to.clone()),
            meter: m.clone(),
            serial: order,
            amount_minor: t.opening_credit_minor,
            currency: cur.clone(),
            detail: Some(format!(
                "order {order}: account {} opened for {} with opening credit {}",
                doc.account_no + 1,
                t.to,
                money_u(t.opening_credit_minor, &cur)
            )),
        });
        let credit = doc.remaining_credit_minor;
        let debt = doc.debt_minor;
        t.state = TenancyState::Settled;
        t.settlement = Some(SettlementView {
            account_no: doc.account_no,
            closed_at: doc.closed_at,
            closing_register_wh: doc.closing_register_wh,
            remaining_credit_minor: credit,
            debt_minor: debt,
            last_serial: doc.last_serial,
            audit_len: doc.audit_len,
            audit_head: hex::encode(doc.audit_head),
            signed: hex::encode(signed),
            refunded_tokens: refunded.clone(),
            booked_at: now,
        });
        b.put(tenancy_key(order), &t);
        b.remove(tenancy_pending_key(order));
        crate::tenancy::relink(&self.store, &t, &mut b)?;
        let opening = i64::try_from(t.opening_credit_minor).unwrap_or(i64::MAX);
        let closed_at = doc.closed_at;
        self.store.update_meter(
            &m,
            b,
            move |rec| {
                rec.view.balance_minor = Some(opening);
                rec.view.balance_at = Some(closed_at);
            },
            |b| self.payments.append_with(&self.store, drafts.clone(), b),
        )?;
        log::info!(
            "tenancy order {order} settled: meter {m} moved from {} to {}; {} {}{}",
            t.from,
            t.to,
            if debt > 0 { "billed" } else { "refunded" },
            money_u(if debt > 0 { debt } else { credit }, &cur),
            if refunded.is_empty() {
                String::new()
            } else {
                format!(
                    ", and {} token(s) never applied refunded ({})",
                    refunded.len(),
                    money_u(refunded.iter().map(|(_, a)| a).sum(), &cur)
                )
            }
        );
        Ok(())
    }
}
