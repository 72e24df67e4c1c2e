//! Recomputing every account from the audit log, and checking the store against it.
//!
//! This is the proof obligation of the crash harness and of `concentrator audit verify`: walking the
//! hash chain, it rebuilds each meter's balance from the logged events (opening, tokens, charges,
//! standing charges, debt recovery), re-derives every energy charge's rounding from its exact micro-unit
//! value and the carried remainder, checks that the register checkpoints join up (no energy charged twice
//! or skipped), and that every token serial appears once. Then it compares the result with the stored
//! accounts and token records.

use std::collections::{BTreeMap, BTreeSet};

use concentrator_security::restore::SerialSpan;

use crate::audit::{self, AuditEvent};
use crate::ledger::load_accounts;
use crate::money::charge_with_carry;
use crate::store::{for_each, Keyspace, Store};
use crate::LedgerError;

/// One meter as recomputed from the audit log (current tenancy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recomputed {
    /// Tenancy number.
    pub account_no: u32,
    /// Balance.
    pub balance_minor: i64,
    /// Σ tokens of this tenancy.
    pub tokens_minor: i64,
    /// Σ energy, standing charges and recovery of this tenancy.
    pub charges_minor: i64,
    /// Arrears.
    pub debt_minor: i64,
    /// Register checkpoint.
    pub register_wh: u64,
    /// Rounding carry.
    pub carry_micro: i64,
    /// Serials applied to the meter (every tenancy).
    pub serials: BTreeSet<u64>,
    /// Serials applied before the account was restored from the head-end's statement, and the highest
    /// serial that statement gave.
    pub restored: Vec<SerialSpan>,
    /// The highest serial the restore statement gave.
    pub restored_last: Option<u64>,
}

impl Recomputed {
    /// The highest serial applied to the meter.
    pub fn last_serial(&self) -> Option<u64> {
        self.serials.last().copied().max(self.restored_last)
    }
}

/// A disagreement between the log, the accounts and the token records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger check failed at {place}: {problem}")]
pub struct CheckError {
    /// Where: an audit sequence number or a meter.
    pub place: String,
    /// What disagrees.
    pub problem: String,
}

/// The outcome of [`check_store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The chain.
    pub audit: audit::VerifyReport,
    /// Per meter.
    pub meters: BTreeMap<String, Recomputed>,
}

fn fail(place: impl Into<String>, problem: impl Into<String>) -> LedgerError {
    LedgerError::Output(
        CheckError {
            place: place.into(),
            problem: problem.into(),
        }
        .to_string(),
    )
}

/// Rebuilds every meter from the audit log (verifying the chain on the way), from the archive base's
/// meters when part of the log was archived.
pub fn recompute<S: Store + ?Sized>(
    store: &S,
) -> Result<(audit::VerifyReport, BTreeMap<String, Recomputed>), LedgerError> {
    replay(store, u64::MAX)
}

/// Every meter as the log had it after entry `end - 1` (the chain is still verified whole).
pub fn recompute_until<S: Store + ?Sized>(
    store: &S,
    end: u64,
) -> Result<BTreeMap<String, Recomputed>, LedgerError> {
    replay(store, end).map(|(_, meters)| meters)
}

fn replay<S: Store + ?Sized>(
    store: &S,
    end: u64,
) -> Result<(audit::VerifyReport, BTreeMap<String, Recomputed>), LedgerError> {
    let mut meters: BTreeMap<String, Recomputed> = crate::archive::AuditBase::load(store)?
        .map(|b| b.meters)
        .unwrap_or_default();
    let report = audit::walk(store, |e| {
        if e.seq >= end
            || matches!(
                e.event,
                AuditEvent::Archived { .. } | AuditEvent::TariffScheduled { .. }
            )
        {
            return Ok(());
        }
        let place = || format!("audit entry {} (meter {})", e.seq, e.meter);
        if let AuditEvent::AccountOpened {
            account_no,
            opening_balance_minor,
            debt_minor,
            register_wh,
            ..
        } = &e.event
        {
            let before = meters.remove(&e.meter).unwrap_or_default();
            meters.insert(
                e.meter.clone(),
                Recomputed {
                    account_no: *account_no,
                    balance_minor: *opening_balance_minor,
                    debt_minor: (*debt_minor).max(0),
                    register_wh: *register_wh,
                    serials: before.serials,
                    restored: before.restored,
                    restored_last: before.restored_last,
                    ..Recomputed::default()
                },
            );
            return Ok(());
        }
        if let AuditEvent::AccountRestored {
            account_no,
            opening_balance_minor,
            debt_minor,
            register_wh,
            last_serial,
            restored,
            ..
        } = &e.event
        {
            if meters.contains_key(&e.meter) {
                return Err(fail(place(), "account restored over an existing one"));
            }
            meters.insert(
                e.meter.clone(),
                Recomputed {
                    account_no: *account_no,
                    balance_minor: *opening_balance_minor,
                    debt_minor: (*debt_minor).max(0),
                    register_wh: *register_wh,
                    restored: restored.clone(),
                    restored_last: *last_serial,
                    ..Recomputed::default()
                },
            );
            return Ok(());
        }
        let m = meters
            .get_mut(&e.meter)
            .ok_or_else(|| fail(place(), "event before the account was opened"))?;
        let expect_balance = |m: &Recomputed, logged: i64| {
            if m.balance_minor == logged {
                Ok(())
            } else {
                Err(fail(
                    place(),
                    format!("balance recomputed {} but logged {logged}", m.balance_minor),
                ))
            }
        };
        match &e.event {
            AuditEvent::TokenApplied {
                serial,
                amount_minor,
                recovered_minor,
                balance_after_minor,
            } => {
                if !m.serials.insert(*serial) || SerialSpan::contains(&m.restored, *serial) {
                    return Err(fail(place(), format!("token {serial} applied twice")));
                }
                m.tokens_minor += amount_minor;
                m.charges_minor += recovered_minor;
                m.debt_minor -= recovered_minor;
                m.balance_minor += amount_minor - recovered_minor;
                expect_balance(m, *balance_after_minor)?;
            }
            AuditEvent::Charge {
                from_wh,
                to_wh,
                micro,
                amount_minor,
                balance_after_minor,
            } => {
                if *from_wh != m.register_wh || to_wh < from_wh {
                    return Err(fail(
                        place(),
                        format!(
                            "charge from {from_wh} Wh but the checkpoint was {} Wh",
                            m.register_wh
                        ),
                    ));
                }
                let (amount, carry) = charge_with_carry(m.carry_micro, i128::from(*micro));
                if amount != *amount_minor {
                    return Err(fail(
                        place(),
                        format!("charge rounds to {amount}, logged {amount_minor}"),
                    ));
                }
                m.carry_micro = carry;
                m.register_wh = *to_wh;
                m.charges_minor += amount;
                m.balance_minor -= amount;
                expect_balance(m, *balance_after_minor)?;
            }
            AuditEvent::StandingCharge {
                amount_minor,
                balance_after_minor,
                ..
            } => {
                m.charges_minor += amount_minor;
                m.balance_minor -= amount_minor;
                expect_balance(m, *balance_after_minor)?;
            }
            AuditEvent::DebtRecovered {
                amount_minor,
                debt_after_minor,
                balance_after_minor,
            } => {
                m.charges_minor += amount_minor;
                m.balance_minor -= amount_minor;
                m.debt_minor -= amount_minor;
                expect_balance(m, *balance_after_minor)?;
                if m.debt_minor != *debt_after_minor {
                    return Err(fail(place(), "debt after recovery disagrees"));
                }
            }
            AuditEvent::Rebaselined { from_wh, to_wh, .. } => {
                if *from_wh != m.register_wh {
                    return Err(fail(
                        place(),
                        "rebaseline from a value that was not the checkpoint",
                    ));
                }
                m.register_wh = *to_wh;
            }
            AuditEvent::AccountClosed { balance_minor, .. } => {
                expect_balance(m, *balance_minor)?;
            }
            AuditEvent::AccountOpened { .. }
            | AuditEvent::AccountRestored { .. }
            | AuditEvent::RegisterAnomaly { .. }
            | AuditEvent::EmergencySelected { .. }
            | AuditEvent::RelayCommand { .. }
            | AuditEvent::RelayResult { .. }
            | AuditEvent::RelayOrdered { .. }
            | AuditEvent::Archived { .. }
            | AuditEvent::TariffScheduled { .. } => {}
        }
        Ok(())
    })?;
    Ok((report, meters))
}

/// Recomputes from the log and checks the stored accounts and token records against it.
pub fn check_store<S: Store + ?Sized>(store: &S) -> Result<CheckReport, LedgerError> {
    let (audit, meters) = recompute(store)?;
    let accounts = load_accounts(store)?;
    for (meter, a) in &accounts {
        let r = meters
            .get(meter)
            .ok_or_else(|| fail(format!("meter {meter}"), "account without an opening entry"))?;
        let checks = [
            ("balance", a.balance_minor(), r.balance_minor),
            ("tokens", a.tokens_minor, r.tokens_minor),
            (
                "charges",
                a.energy_minor + a.standing_minor + a.recovered_minor,
                r.charges_minor,
            ),
            ("debt", a.debt_minor, r.debt_minor),
            ("carry", a.carry_micro, r.carry_micro),
        ];
        for (what, stored, recomputed) in checks {
            if stored != recomputed {
                return Err(fail(
                    format!("meter {meter}"),
                    format!("{what}: stored {stored}, recomputed from the audit log {recomputed}"),
                ));
            }
        }
        if a.restored != r.restored {
            return Err(fail(
                format!("meter {meter}"),
                "serials applied before the restore disagree with the log",
            ));
        }
        if a.register.wh != r.register_wh {
            return Err(fail(
                format!("meter {meter}"),
                format!(
                    "register checkpoint stored {} Wh, audit log {} Wh",
                    a.register.wh, r.register_wh
                ),
            ));
        }
        if a.last_serial != r.last_serial() {
            return Err(fail(
                format!("meter {meter}"),
                "last serial disagrees with the log",
            ));
        }
    }
    // Every token record has its audit entry and vice versa.
    let mut recorded: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for_each(store, Keyspace::Tokens, |k, _| {
        let cut = k.len().saturating_sub(9);
        let meter = String::from_utf8_lossy(&k[..cut]).into_owned();
        let serial = <[u8; 8]>::try_from(&k[cut + 1..])
            .map(u64::from_be_bytes)
            .map_err(|_| fail("tokens", "bad key"))?;
        recorded.entry(meter).or_default().insert(serial);
        Ok(())
    })?;
    for (meter, r) in &meters {
        let stored = recorded.remove(meter).unwrap_or_default();
        if stored != r.serials {
            return Err(fail(
                format!("meter {meter}"),
                format!(
                    "token records {:?} but the audit log applied {:?}",
                    stored, r.serials
                ),
            ));
        }
    }
    if let Some((meter, _)) = recorded.into_iter().next() {
        return Err(fail(
            format!("meter {meter}"),
            "token records without an account",
        ));
    }
    Ok(CheckReport { audit, meters })
}
