//! Change of tenancy and reconciliation with the head-end.
//!
//! A change of tenancy charges the final reading, closes the account with a signed [`Settlement`]
//! (remaining credit to refund, debt to collect, the last serial applied) put into the outbox, and opens
//! the new tenant's account from the same register baseline, all in one transaction, flushed.
//!
//! Reconciliation: per meter, the highest serial applied and the sum and count of applied amounts (over
//! every tenancy, from the token records), so that the head-end can re-send what the gateway misses and
//! refund what can never be applied.

use concentrator_security::clock::{LocalTime, MAX_CLOCK_SKEW_S};
use concentrator_security::signed::SignedDocument;
use concentrator_security::tenancy::{SettlementDocument, TenancyError};
use serde::Serialize;

use crate::audit::AuditEvent;
use crate::charging::Reading;
use crate::ledger::{Ledger, NewAccount};
use crate::outbox::{OutboxKind, TopUpReceipt};
use crate::store::{Keyspace, Store};
use crate::topup::token_key;
use crate::LedgerError;

/// Type tag of a settlement body.
pub const SETTLEMENT_TAG: u8 = b'S';

/// The closing statement of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settlement {
    /// The meter.
    pub meter_id: String,
    /// The tenancy closed.
    pub account_no: u32,
    /// When, unix seconds.
    pub closed_at: u64,
    /// Final register reading, Wh.
    pub final_register_wh: u64,
    /// Credit to refund, minor units (≥ 0).
    pub remaining_credit_minor: i64,
    /// Debt to collect (arrears plus any negative balance), minor units (≥ 0).
    pub debt_minor: i64,
    /// The last token serial applied to the meter.
    pub last_serial: Option<u64>,
    /// This gateway.
    pub gateway_id: String,
}

impl Settlement {
    /// Canonical encoding (what is signed): tag 'S', version 1, meter id (u8 length), account number
    /// (u32), closed at, final register (u64), remaining credit, debt (i64), last serial (u64, 0 for
    /// none), gateway id (u8 length); big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![SETTLEMENT_TAG, 1, self.meter_id.len() as u8];
        v.extend_from_slice(self.meter_id.as_bytes());
        v.extend_from_slice(&self.account_no.to_be_bytes());
        v.extend_from_slice(&self.closed_at.to_be_bytes());
        v.extend_from_slice(&self.final_register_wh.to_be_bytes());
        v.extend_from_slice(&self.remaining_credit_minor.to_be_bytes());
        v.extend_from_slice(&self.debt_minor.to_be_bytes());
        v.extend_from_slice(&self.last_serial.unwrap_or(0).to_be_bytes());
        v.push(self.gateway_id.len() as u8);
        v.extend_from_slice(self.gateway_id.as_bytes());
        v
    }
}

/// A settlement with its signed wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSettlement {
    /// The settlement.
    pub settlement: Settlement,
    /// [`SignedDocument`] wire octets, signed by the gateway key.
    pub signed: Vec<u8>,
}

/// The new tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    /// The dwelling (usually unchanged).
    pub dwelling: String,
    /// Never cut off.
    pub protected: bool,
    /// Opening balance, minor units.
    pub opening_balance_minor: i64,
    /// Opening debt, minor units.
    pub opening_debt_minor: i64,
}

/// What the gateway reports per meter for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// The meter.
    pub meter_id: String,
    /// Highest serial applied.
    pub highest_serial: Option<u64>,
    /// Tokens applied (all tenancies).
    pub applied_count: u64,
    /// Sum of applied amounts, minor units (all tenancies).
    pub applied_sum_minor: i64,
}

/// The head-end's view of a meter, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadEndView {
    /// The highest serial it issued.
    pub highest_issued: u64,
}

/// What to do after comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileAction {
    /// Both sides agree.
    InStep,
    /// Ask the head-end for every token with a serial above this.
    RequestTokensAfter(u64),
}

impl<S: Store> Ledger<S> {
    /// Closes the meter's account at `final_reading` and opens the new tenant's from the same baseline.
    pub fn change_tenancy(
        &mut self,
        final_reading: &Reading,
        tenant: NewTenant,
        now: u64,
    ) -> Result<SignedSettlement, LedgerError> {
        // Charge up to the final reading first (committed in its own transaction, as any reading).
        self.on_readings(std::slice::from_ref(final_reading))?;
        let meter = final_reading.meter.as_str();
        let mut txn = self.begin();
        let old = self.staged_copy(&mut txn, meter)?;
        let settlement = Settlement {
            meter_id: meter.into(),
            account_no: old.account_no,
            closed_at: now,
            final_register_wh: old.register.wh,
            remaining_credit_minor: old.balance_minor().max(0),
            debt_minor: old.total_debt_minor(),
            last_serial: old.last_serial,
            gateway_id: self.config.gateway_id.clone(),
        };
        let signed = self
            .signer
            .sign(settlement.encode())
            .map_err(|e| LedgerError::Signing {
                what: "settlement",
                reason: e.to_string(),
            })?
            .encode()
            .ok_or_else(|| LedgerError::Signing {
                what: "settlement",
                reason: "a field is too long for the wire format".into(),
            })?;
        txn.audit(
            now,
            meter,
            AuditEvent::AccountClosed {
                account_no: old.account_no,
                final_wh: old.register.wh,
                balance_minor: old.balance_minor(),
                debt_minor: old.debt_minor,
            },
        );
        let closed = serde_json::to_vec(&old).map_err(|e| LedgerError::Output(e.to_string()))?;
        let mut closed_key = meter.as_bytes().to_vec();
        closed_key.push(0);
        closed_key.extend_from_slice(&old.account_no.to_be_bytes());
        txn.batch.put(Keyspace::Closed, closed_key, closed);
        txn.outbox(OutboxKind::Settlement, &signed);
        let spec = NewAccount {
            meter_id: meter.into(),
            dwelling: tenant.dwelling,
            model: old.model.clone(),
            protected: tenant.protected,
            opening_balance_minor: tenant.opening_balance_minor,
            opening_debt_minor: tenant.opening_debt_minor,
            register_wh: old.register.wh,
            meter_serial: old.register.meter_serial.clone(),
        };
        let mut fresh = self.new_account(&mut txn, spec, old.account_no + 1, old.last_serial, now);
        fresh.register.at = old.register.at;
        fresh.relay = old.relay;
        fresh.restored = old.restored.clone();
        txn.touched.insert(meter.into(), fresh);
        self.settle(&mut txn, meter, now)?;
        self.finish(txn, true)?;
        Ok(SignedSettlement { settlement, signed })
    }

    /// Per meter: the highest serial applied and the count and sum of applied amounts.
    pub fn reconciliation(&self) -> Result<Vec<Reconciliation>, LedgerError> {
        self.accounts
            .keys()
            .map(|m| reconciliation_of(&self.store, m))
            .collect()
    }

    /// Compares with the head-end's highest issued serial for a meter.
    pub fn reconcile_with(
        &self,
        meter: &str,
        head_end: HeadEndView,
    ) -> Result<ReconcileAction, LedgerError> {
        let ours = reconciliation_of(&self.store, meter)?;
        let have = ours.highest_serial.unwrap_or(0);
        Ok(if head_end.highest_issued > have {
            ReconcileAction::RequestTokensAfter(have)
        } else {
            ReconcileAction::InStep
        })
    }

    /// Puts a reconciliation report for every meter into the outbox (JSON). Flushed.
    pub fn queue_reconciliation(&mut self) -> Result<u64, LedgerError> {
        let report = self.reconciliation()?;
        let json = serde_json::to_vec(&report).map_err(|e| LedgerError::Output(e.to_string()))?;
        let mut txn = self.begin();
        let seq = txn.outbox(OutboxKind::Reconciliation, &json);
        self.finish(txn, true)?;
        Ok(seq)
    }

    /// The original receipt of an applied token, if any.
    pub fn receipt_of(
        &self,
        meter: &str,
        serial: u64,
    ) -> Result<Option<TopUpReceipt>, LedgerError> {
        applied_token(&self.store, meter, serial)
    }
}

/// The receipt stored for an applied token.
pub fn applied_token<S: Store + ?Sized>(
    store: &S,
    meter: &str,
    serial: u64,
) -> Result<Option<TopUpReceipt>, LedgerError> {
    let key = token_key(meter, serial);
    let Some(v) = store.get(Keyspace::Tokens, &key)? else {
        return Ok(None);
    };
    let signed = v.get(32..).map(<[u8]>::to_vec).unwrap_or_default();
    TopUpReceipt::from_signed(signed)
        .map(Some)
        .map_err(|reason| LedgerError::Corrupt {
            keyspace: Keyspace::Tokens.name(),
            key: format!("{meter}/{serial}"),
            reason,
        })
}

/// Every applied token of a meter: (serial, receipt), in serial order.
pub fn applied_tokens<S: Store + ?Sized>(
    store: &S,
    meter: &str,
) -> Result<Vec<(u64, TopUpReceipt)>, LedgerError> {
    let mut prefix = meter.as_bytes().to_vec();
    prefix.push(0);
    let mut out = Vec::new();
    let mut from = prefix.clone();
    loop {
        let page = store.range_from(Keyspace::Tokens, &from, 256)?;
        let full = page.len() == 256;
        let mut last = None;
        for (k, v) in page {
            if !k.starts_with(&prefix) {
                return Ok(out);
            }
            let serial = <[u8; 8]>::try_from(&k[prefix.len()..])
                .map(u64::from_be_bytes)
                .map_err(|_| LedgerError::Corrupt {
                    keyspace: Keyspace::Tokens.name(),
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "serial is not 8 octets".into(),
                })?;
            let receipt =
                TopUpReceipt::from_signed(v.get(32..).map(<[u8]>::to_vec).unwrap_or_default())
                    .map_err(|reason| LedgerError::Corrupt {
                        keyspace: Keyspace::Tokens.name(),
                        key: format!("{meter}/{serial}"),
                        reason,
                    })?;
            out.push((serial, receipt));
            last = Some(k);
        }
        match (full, last) {
            (true, Some(mut k)) => {
                k.push(0);
                from = k;
            }
            _ => return Ok(out),
        }
    }
}

/// The reconciliation figures of one meter, from the token records.
pub fn reconciliation_of<S: Store + ?Sized>(
    store: &S,
    meter: &str,
) -> Result<Reconciliation, LedgerError> {
    let tokens = applied_tokens(store, meter)?;
    Ok(Reconciliation {
        meter_id: meter.into(),
        highest_serial: tokens.last().map(|(s, _)| *s),
        applied_count: tokens.len() as u64,
        applied_sum_minor: tokens
            .iter()
            .map(|(_, r)| r.receipt.amount_minor as i64)
            .sum(),
    })
}

/// Verifies a settlement's signed form decodes to the same body (used by tests and the head-end stub).
pub fn settlement_body(signed: &[u8]) -> Option<Vec<u8>> {
    SignedDocument::decode(signed).ok().map(|d| d.body)
}

/// What the ledger keeps of a tenancy order it carried out (the `closed` keyspace, key meter id, 0,
/// `o`, order id): a resent order is answered with the same settlement, and tokens of the old customer
/// that arrive later are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OrderRecord {
    /// The order id.
    pub order_id: u64,
    /// The customer who left.
    pub old_customer: String,
    /// The customer who moved in.
    pub new_customer: String,
    /// Serials up to this were issued to the old customer (0: none).
    pub last_old_serial: u64,
    /// The tenancy number closed.
    pub closed_account: u32,
    /// When the order was carried out, unix seconds.
    pub at: u64,
    /// The signed settlement (`SignedDocument` octets), as first sent.
    #[serde(with = "hex_bytes")]
    pub settlement: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::audit::hex_string(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect()
    }
}

/// The key of an order record.
pub fn order_key(meter: &str, order_id: u64) -> Vec<u8> {
    let mut k = meter.as_bytes().to_vec();
    k.push(0);
    k.push(b'o');
    k.extend_from_slice(&order_id.to_be_bytes());
    k
}

/// Every order carried out on a meter, in order id order.
pub fn orders_of<S: Store + ?Sized>(
    store: &S,
    meter: &str,
) -> Result<Vec<OrderRecord>, LedgerError> {
    let mut prefix = meter.as_bytes().to_vec();
    prefix.push(0);
    prefix.push(b'o');
    let mut out = Vec::new();
    let mut from = prefix.clone();
    loop {
        let page = store.range_from(Keyspace::Closed, &from, 64)?;
        let full = page.len() == 64;
        let mut last = None;
        for (k, v) in page {
            if !k.starts_with(&prefix) {
                return Ok(out);
            }
            if k.len() == prefix.len() + 8 {
                let rec: OrderRecord =
                    serde_json::from_slice(&v).map_err(|e| LedgerError::Corrupt {
                        keyspace: Keyspace::Closed.name(),
                        key: String::from_utf8_lossy(&k).into_owned(),
                        reason: e.to_string(),
                    })?;
                out.push(rec);
            }
            last = Some(k);
        }
        match (full, last) {
            (true, Some(mut k)) => {
                k.push(0);
                from = k;
            }
            _ => return Ok(out),
        }
    }
}

/// The order whose old customer a not-yet-applied serial belongs to, if any.
pub(crate) fn previous_tenant_of<S: Store + ?Sized>(
    store: &S,
    meter: &str,
    serial: u64,
) -> Result<Option<OrderRecord>, LedgerError> {
    Ok(orders_of(store, meter)?
        .into_iter()
        .filter(|o| o.last_old_serial >= serial)
        .min_by_key(|o| o.last_old_serial))
}

/// How a tenancy order went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancyOutcome {
    /// The settlement.
    pub settlement: SettlementDocument,
    /// Its signed form, as put into the outbox.
    pub signed: Vec<u8>,
    /// The order was carried out before: nothing changed, the same settlement was queued again.
    pub already_done: bool,
}

/// Why a tenancy order was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenancyOrderError {
    /// The order does not verify (signature, chain, role, key id, meter) or does not parse: final.
    #[error("{0}; the head-end must sign a new order")]
    Refused(#[from] TenancyError),
    /// The order's currency is not the ledger's: final.
    #[error("tenancy order in {got}, but this gateway keeps credit in {expected}: the head-end must issue the order in {expected}")]
    Currency {
        /// In the order.
        got: String,
        /// Configured.
        expected: String,
    },
    /// The meter has no account here (yet): temporary.
    #[error("meter {meter:?} has no account on this gateway yet (no first reading, or being restored): send the order again later")]
    NoAccount {
        /// The meter.
        meter: String,
    },
    /// The order takes effect later: temporary.
    #[error("tenancy order {order_id} takes effect at {} (this gateway's clock says {}): send it again then", LocalTime::of(*.effective_at), LocalTime::of(*.now))]
    NotYet {
        /// The order.
        order_id: u64,
        /// Its effective time.
        effective_at: u64,
        /// The gateway's time.
        now: u64,
    },
    /// The store failed: nothing changed, temporary.
    #[error("the change of tenancy was not recorded: {0}; send the order again")]
    Ledger(#[from] LedgerError),
}

impl TenancyOrderError {
    /// Whether sending the same order again later may succeed.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            TenancyOrderError::NoAccount { .. }
                | TenancyOrderError::NotYet { .. }
                | TenancyOrderError::Ledger(_)
        )
    }
}

impl<S: Store> Ledger<S> {
    /// Carries out the head-end's signed change-of-tenancy order for `meter` (or for the meter it
    /// names, with `None`: an installer's order file). In one transaction, flushed before it returns:
    /// the account is closed at its last reading (charged up to it), its balance frozen into a settlement
    /// signed with the gateway key and put into the outbox, the closing entry in the audit log, and the
    /// new tenant's account opened from the same register with the order's opening credit; the supply
    /// then follows the prepayment rules. A resent order (same id) changes nothing and queues the same
    /// settlement again.
    pub fn apply_tenancy_order(
        &mut self,
        meter: Option<&str>,
        signed_order: &[u8],
        now: u64,
    ) -> Result<TenancyOutcome, TenancyOrderError> {
        let order = self.verifier.verify_order(signed_order, meter, now)?;
        let meter = order.meter_id.clone();
        if order.currency != self.config.currency.as_bytes() {
            return Err(TenancyOrderError::Currency {
                got: String::from_utf8_lossy(&order.currency).into_owned(),
                expected: self.config.currency.clone(),
            });
        }
        if let Some(v) = self
            .store
            .get(Keyspace::Closed, &order_key(&meter, order.order_id))
            .map_err(LedgerError::from)?
        {
            let rec: OrderRecord =
                serde_json::from_slice(&v).map_err(|e| LedgerError::Corrupt {
                    keyspace: Keyspace::Closed.name(),
                    key: format!("{meter}/order {}", order.order_id),
                    reason: e.to_string(),
                })?;
            let settlement = SignedDocument::decode(&rec.settlement)
                .ok()
                .and_then(|d| SettlementDocument::decode(&d.body).ok())
                .ok_or_else(|| LedgerError::Corrupt {
                    keyspace: Keyspace::Closed.name(),
                    key: format!("{meter}/order {}", order.order_id),
                    reason: "the stored settlement does not decode".into(),
                })?;
            let mut txn = self.begin();
            txn.outbox(OutboxKind::Settlement, &rec.settlement);
            self.finish(txn, true)?;
            return Ok(TenancyOutcome {
                settlement,
                signed: rec.settlement,
                already_done: true,
            });
        }
        if order.effective_at > now.saturating_add(MAX_CLOCK_SKEW_S) {
            return Err(TenancyOrderError::NotYet {
                order_id: order.order_id,
                effective_at: order.effective_at,
                now,
            });
        }
        if !self.accounts.contains_key(&meter) {
            return Err(TenancyOrderError::NoAccount { meter });
        }
        let mut txn = self.begin();
        let old = self.staged_copy(&mut txn, &meter)?;
        let balance = old.balance_minor();
        txn.audit(
            now,
            &meter,
            AuditEvent::AccountClosed {
                account_no: old.account_no,
                final_wh: old.register.wh,
                balance_minor: balance,
                debt_minor: old.debt_minor,
            },
        );
        let settlement = SettlementDocument {
            meter_id: meter.clone(),
            order_id: order.order_id,
            old_customer: order.old_customer.clone(),
            account_no: old.account_no,
            closed_at: now,
            closing_register_wh: old.register.wh,
            currency: order.currency,
            remaining_credit_minor: u64::try_from(balance.max(0)).unwrap_or(0),
            debt_minor: u64::try_from(old.total_debt_minor().max(0)).unwrap_or(0),
            last_serial: old.last_serial,
            audit_len: txn.head.next_seq,
            audit_head: txn.head.hash,
            gateway_id: self.config.gateway_id.clone(),
        };
        let signed = settlement
            .sign(&self.signer)
            .map_err(|e| LedgerError::Signing {
                what: "settlement",
                reason: e.to_string(),
            })?;
        let closed = serde_json::to_vec(&old).map_err(|e| LedgerError::Output(e.to_string()))?;
        let mut closed_key = meter.as_bytes().to_vec();
        closed_key.push(0);
        closed_key.extend_from_slice(&old.account_no.to_be_bytes());
        txn.batch.put(Keyspace::Closed, closed_key, closed);
        let record = OrderRecord {
            order_id: order.order_id,
            old_customer: order.old_customer.clone(),
            new_customer: order.new_customer.clone(),
            last_old_serial: order.last_old_serial,
            closed_account: old.account_no,
            at: now,
            settlement: signed.clone(),
        };
        let record = serde_json::to_vec(&record).map_err(|e| LedgerError::Output(e.to_string()))?;
        txn.batch
            .put(Keyspace::Closed, order_key(&meter, order.order_id), record);
        txn.outbox(OutboxKind::Settlement, &signed);
        let spec = NewAccount {
            meter_id: meter.clone(),
            dwelling: old.dwelling.clone(),
            model: old.model.clone(),
            protected: old.protected,
            opening_balance_minor: order.opening_credit_minor as i64,
            opening_debt_minor: 0,
            register_wh: old.register.wh,
            meter_serial: old.register.meter_serial.clone(),
        };
        let mut fresh = self.new_account(&mut txn, spec, old.account_no + 1, old.last_serial, now);
        fresh.register.at = old.register.at;
        fresh.relay = old.relay;
        fresh.restored = old.restored.clone();
        fresh.hold = old.hold.clone();
        txn.touched.insert(meter.clone(), fresh);
        self.settle(&mut txn, &meter, now)?;
        self.finish(txn, true)?;
        Ok(TenancyOutcome {
            settlement,
            signed,
            already_done: false,
        })
    }
}
