//! Change of tenancy and reconciliation with the head-end.
//!
//! A change of tenancy charges the final reading, closes the account with a signed [`Settlement`]
//! (remaining credit to refund, debt to collect, the last serial applied) put into the outbox, and opens
//! the new tenant's account from the same register baseline, all in one transaction, flushed.
//!
//! Reconciliation: per meter, the highest serial applied and the sum and count of applied amounts (over
//! every tenancy, from the token records), so that the head-end can re-send what the gateway misses and
//! refund what can never be applied.

use concentrator_security::signed::SignedDocument;
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
