//! Which serials were applied, where the audit chain stands, and restoring a lost account from the
//! head-end's signed account statement.
//!
//! A gateway whose store was lost (SD card, re-image, meter moved) must not reopen a meter's account at
//! the opening balance with no applied serials: the customer's credit would be gone and every token of
//! the last weeks would apply again. The daemon asks the head-end instead (`RestoreRequest`) and neither
//! charges the meter nor accepts tokens for it until the answer, a statement signed with the head-end's
//! token key ([`concentrator_security::restore`]). [`Ledger::restore_account`] verifies it as a credit
//! token is verified and, in one transaction with an audit entry and a flush, creates the account from
//! it: the statement's balance is the opening balance, its register the baseline (the consumption since
//! the head-end's last summary is charged at the next reading), and its serials are remembered so that
//! replays of those tokens are refused ([`crate::TopUpError::AppliedBeforeRestore`]).

use std::collections::{BTreeMap, BTreeSet};

use concentrator_security::restore::SerialSpan;

use crate::account::Account;
use crate::audit::{AuditEvent, AuditHead};
use crate::ledger::{Ledger, NewAccount};
use crate::store::{for_each, Store};
use crate::{LedgerError, RestoreAccountError};

/// Meter and serial of a token record's key (meter id, 0, serial big-endian).
pub(crate) fn split_token_key(key: &[u8]) -> Option<(String, u64)> {
    let cut = key.len().checked_sub(9)?;
    if key[cut] != 0 {
        return None;
    }
    let serial = u64::from_be_bytes(key[cut + 1..].try_into().ok()?);
    Some((String::from_utf8_lossy(&key[..cut]).into_owned(), serial))
}

/// The serials of every token record, per meter.
pub(crate) fn load_applied<S: Store + ?Sized>(
    store: &S,
) -> Result<BTreeMap<String, BTreeSet<u64>>, LedgerError> {
    let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for_each(store, crate::store::Keyspace::Tokens, |k, _| {
        let (meter, serial) = split_token_key(k).ok_or_else(|| LedgerError::Corrupt {
            keyspace: crate::store::Keyspace::Tokens.name(),
            key: String::from_utf8_lossy(k).into_owned(),
            reason: "not a meter id, a zero octet and an 8-octet serial".into(),
        })?;
        out.entry(meter).or_default().insert(serial);
        Ok(())
    })?;
    Ok(out)
}

impl<S: Store> Ledger<S> {
    /// Every serial applied to `meter` (token records of every tenancy, and the serials its restore
    /// statement listed), as increasing inclusive ranges.
    pub fn applied_serials(&self, meter: &str) -> Vec<SerialSpan> {
        let recorded = self
            .applied
            .get(meter)
            .map(|s| SerialSpan::cover(s.iter().copied()))
            .unwrap_or_default();
        match self.accounts.get(meter) {
            Some(a) if !a.restored.is_empty() => SerialSpan::union(&recorded, &a.restored),
            _ => recorded,
        }
    }

    /// Where the audit chain stood at the last flush (its length and last hash): the anchor the head-end
    /// records. Not the head of what is only committed: a crash can lose that, and an anchor ahead of
    /// the chain that survives would make a healthy log look cut. [`Ledger::flush`] advances it.
    pub fn audit_head(&self) -> AuditHead {
        self.durable_head
    }

    /// Creates the account of `spec.meter_id` from the head-end's signed statement (`SignedDocument`
    /// wire octets), in one transaction with its audit entry, flushed before it returns.
    ///
    /// From `spec` only the dwelling, model, protected flag and meter serial are used, and its register
    /// when the statement has none (a new account: the first reading is the baseline). The statement must
    /// verify for that meter (as a token does), be in the ledger's currency, and the meter must have no
    /// account here.
    pub fn restore_account(
        &mut self,
        spec: NewAccount,
        signed_statement: &[u8],
        now: u64,
    ) -> Result<Account, RestoreAccountError> {
        let meter = spec.meter_id.clone();
        let st = self
            .verifier
            .verify_statement(signed_statement, &meter, now)?;
        if self.accounts.contains_key(&meter) {
            return Err(RestoreAccountError::AccountExists { meter });
        }
        if st.currency != self.config.currency.as_bytes() {
            return Err(RestoreAccountError::Currency {
                got: String::from_utf8_lossy(&st.currency).into_owned(),
                expected: self.config.currency.clone(),
            });
        }
        let debt = i64::try_from(st.debt_minor).map_err(|_| {
            RestoreAccountError::Statement(concentrator_security::restore::RestoreError::Invalid {
                field: "debt_minor",
                reason: "beyond what the ledger can hold",
            })
        })?;
        let recorded_last = self.applied.get(&meter).and_then(|s| s.last().copied());
        let last_serial = st.last_serial.max(recorded_last);
        let register_wh = st.register_wh.unwrap_or(spec.register_wh);
        // A new account (the head-end never had a summary of it) opens at this gateway's configured
        // opening balance plus the credit of the tokens the head-end holds receipts for.
        let opening = if st.new_account {
            spec.opening_balance_minor.saturating_add(st.balance_minor)
        } else {
            st.balance_minor
        };
        let mut txn = self.begin();
        txn.audit(
            now,
            &meter,
            AuditEvent::AccountRestored {
                account_no: 1,
                dwelling: spec.dwelling.clone(),
                opening_balance_minor: opening,
                debt_minor: debt,
                register_wh,
                last_serial,
                restored: st.applied.clone(),
                statement_at: st.at,
            },
        );
        let mut a = self.account_from(spec, 1, last_serial, now);
        a.opening_balance_minor = opening;
        a.debt_minor = debt;
        a.register.wh = register_wh;
        a.restored = st.applied;
        if st.register_wh.is_some() {
            // The balance and register are as of the head-end's last summary: charging and standing
            // charges go on from there (that summary's day was charged when it was made).
            let since = st.summary_at.min(now);
            let day = self.calendar.local(since).date.0;
            a.register.at = since;
            a.standing_day = day;
            a.recovery_day = day;
        }
        txn.touched.insert(meter.clone(), a);
        self.settle(&mut txn, &meter, now)?;
        self.finish(txn, true)?;
        self.accounts
            .get(&meter)
            .cloned()
            .ok_or(RestoreAccountError::Ledger(LedgerError::UnknownMeter {
                meter,
            }))
    }
}
