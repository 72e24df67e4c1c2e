//! The checker: decides from the recorded history and the final states alone (the head-end's store,
//! every gateway ledger — the current stores and the ones a `store-wipe` moved away —, the customers'
//! `mpc history`, and the two audit verifications) whether every paid cent reached its meter once.
//!
//! For every meter: each purchase the head-end recorded is applied in the gateway ledgers exactly once
//! with its amount, and the head-end marks it applied (pending ones were to be delivered while the
//! system settled); nothing is applied that was not sold; every purchase a phone saw confirmed is in the
//! head-end's record; what `mpc history` says applied has its receipt in a ledger; the final balance is
//! the opening balance + the applied tokens − the energy charge of the registers' advance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Result};
use concentrator_headend::store::{TokenRecord, TokenState};
use concentrator_ledger::audit::{self, AuditEvent};
use concentrator_ledger::SledStore;
use concentrator_mpc::backend::{HistoryEntry, HistoryKind};

use crate::history::{eur, Op, OpKind, Outcome};

/// One meter of the block as provisioned.
#[derive(Debug, Clone)]
pub struct MeterSpec {
    pub meter: String,
    pub gateway: usize,
    pub opening_minor: i64,
}

/// What one gateway ledger store says about one meter.
#[derive(Debug, Clone, Default)]
pub struct MeterLedger {
    /// Accounts opened: (opening balance, register baseline Wh).
    pub openings: Vec<(i64, u64)>,
    /// Tokens applied: (serial, amount).
    pub applied: Vec<(u64, i64)>,
    /// The last balance and register checkpoint the log shows.
    pub balance: i64,
    pub register_wh: u64,
}

/// One gateway ledger store, read after the gateway stopped.
#[derive(Debug, Clone)]
pub struct LedgerStore {
    pub path: PathBuf,
    pub meters: BTreeMap<String, MeterLedger>,
}

/// Walks a stopped gateway's ledger (`<store>/ledger`).
pub fn read_ledger(store: &Path) -> Result<LedgerStore> {
    let path = store.join("ledger");
    let db = SledStore::open(&path).map_err(|e| anyhow!("opening {}: {e}", path.display()))?;
    let mut meters: BTreeMap<String, MeterLedger> = BTreeMap::new();
    audit::walk(&db, |e| {
        let m = meters.entry(e.meter.clone()).or_default();
        match &e.event {
            AuditEvent::AccountOpened {
                opening_balance_minor,
                register_wh,
                ..
            } => {
                m.openings.push((*opening_balance_minor, *register_wh));
                m.balance = *opening_balance_minor;
                m.register_wh = *register_wh;
            }
            AuditEvent::TokenApplied {
                serial,
                amount_minor,
                balance_after_minor,
                ..
            } => {
                m.applied.push((*serial, *amount_minor));
                m.balance = *balance_after_minor;
            }
            AuditEvent::Charge {
                to_wh,
                balance_after_minor,
                ..
            } => {
                m.register_wh = *to_wh;
                m.balance = *balance_after_minor;
            }
            AuditEvent::StandingCharge {
                balance_after_minor,
                ..
            }
            | AuditEvent::DebtRecovered {
                balance_after_minor,
                ..
            } => m.balance = *balance_after_minor,
            AuditEvent::Rebaselined { to_wh, .. } => m.register_wh = *to_wh,
            AuditEvent::AccountRestored {
                opening_balance_minor,
                register_wh,
                ..
            } => {
                // A restored account continues the one a lost store had: its opening counts only
                // where no earlier store opened the account (then no token was applied before).
                m.openings.push((*opening_balance_minor, *register_wh));
                m.balance = *opening_balance_minor;
                m.register_wh = *register_wh;
            }
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| anyhow!("walking the audit log of {}: {e}", path.display()))?;
    Ok(LedgerStore { path, meters })
}

/// Everything the checker decides from.
pub struct Inputs {
    pub meters: Vec<MeterSpec>,
    /// The tariff: milli-minor units per kWh.
    pub rate_milli_per_kwh: i64,
    /// The head-end's token records by meter.
    pub tokens: BTreeMap<String, Vec<TokenRecord>>,
    /// The clients' operations.
    pub ops: Vec<Op>,
    /// Every customer's `mpc history`.
    pub mpc_history: Vec<HistoryEntry>,
    /// Per gateway, its ledger stores oldest first (the current one last).
    pub ledgers: Vec<Vec<LedgerStore>>,
    /// Audit verifications: (what, passed, output).
    pub audits: Vec<(String, bool, String)>,
}

/// A broken promise, naming the meter and the operation.
#[derive(Debug, Clone)]
pub struct Violation {
    pub check: &'static str,
    pub meter: String,
    pub detail: String,
}

/// The verdict with its figures.
#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    pub purchases: usize,
    pub paid_minor: i64,
    pub applied_minor: i64,
    pub pending: usize,
    pub refused: usize,
    /// Σ |paid − applied once| over purchases: money lost or doubled.
    pub token_difference_minor: i64,
    /// Σ |final balance − expected| over meters.
    pub balance_difference_minor: i64,
    /// Serials applied in a store that was lost and again in a newer one (not a fault by itself: the
    /// balance rule decides).
    pub reapplied_after_store_loss: usize,
}

/// Decides.
pub fn check(i: &Inputs) -> Verdict {
    let mut v = Verdict::default();
    let mut fail = |check: &'static str, meter: &str, detail: String| {
        v.violations.push(Violation {
            check,
            meter: meter.to_string(),
            detail,
        })
    };
    let mut figures = Verdict::default();
    for spec in &i.meters {
        let m = spec.meter.as_str();
        let stores = &i.ledgers[spec.gateway];
        // Every application of a serial to this meter, in any store of its gateway.
        let mut applied: BTreeMap<u64, Vec<(i64, usize)>> = BTreeMap::new();
        for (n, store) in stores.iter().enumerate() {
            for (serial, amount) in store.meters.get(m).map_or(&[][..], |l| &l.applied) {
                applied.entry(*serial).or_default().push((*amount, n));
            }
        }
        let sold = i.tokens.get(m).map_or(&[][..], Vec::as_slice);
        for t in sold {
            figures.purchases += 1;
            figures.paid_minor += t.amount_minor as i64;
            let what = format!(
                "token {} of {} (payment record {})",
                t.serial,
                eur(t.amount_minor as i64),
                t.record
            );
            let got = applied.get(&t.serial).map_or(&[][..], Vec::as_slice);
            // Once per store at most; a serial applied again in a newer store after a store loss is
            // counted, and the balance rule decides whether the customer got it once.
            let twice_in_a_store = got
                .iter()
                .any(|a| got.iter().filter(|b| b.1 == a.1).count() > 1);
            let credited: i64 = if twice_in_a_store {
                got.iter().map(|a| a.0).sum()
            } else {
                got.first().map_or(0, |a| a.0)
            };
            figures.applied_minor += credited;
            figures.token_difference_minor += (credited - t.amount_minor as i64).abs();
            if got.is_empty() {
                fail("paid and never applied", m, format!("{what}: in no gateway ledger; the head-end has it {}, sent {} times, last result {}{}", state(t.state), t.sends, t.result.map_or("none".into(), |c| format!("code {c}")), t.reason.as_deref().map(|r| format!(", reason: {r}")).unwrap_or_default()));
            } else if let Some(a) = got.iter().find(|a| a.0 != t.amount_minor as i64) {
                fail(
                    "applied with another amount",
                    m,
                    format!(
                        "{what}: credited {} in {}",
                        eur(a.0),
                        stores[a.1].path.display()
                    ),
                );
            } else if twice_in_a_store {
                let places: Vec<String> = got
                    .iter()
                    .map(|a| stores[a.1].path.display().to_string())
                    .collect();
                fail(
                    "applied more than once",
                    m,
                    format!(
                        "{what}: applied {} times (in {}), credited {}",
                        got.len(),
                        places.join(", "),
                        eur(credited)
                    ),
                );
            } else if got.len() > 1 {
                figures.reapplied_after_store_loss += 1;
            }
            match t.state {
                TokenState::Applied => {}
                TokenState::Pending => {
                    figures.pending += 1;
                    fail("still pending after the system settled", m, what.clone());
                }
                TokenState::Refused => {
                    figures.refused += 1;
                    fail(
                        "paid and refused for good",
                        m,
                        format!("{what}: {}", t.reason.as_deref().unwrap_or("no reason")),
                    );
                }
            }
        }
        for (serial, got) in &applied {
            if !sold.iter().any(|t| t.serial == *serial) {
                fail(
                    "applied but never sold",
                    m,
                    format!(
                        "serial {serial} applied {} times, {} in all",
                        got.len(),
                        eur(got.iter().map(|a| a.0).sum())
                    ),
                );
            }
        }
        for op in i
            .ops
            .iter()
            .filter(|o| o.meter == m && o.kind == OpKind::Buy && o.outcome == Outcome::Ok)
        {
            let serial = op.serial.unwrap_or(0);
            if !sold
                .iter()
                .any(|t| t.serial == serial && t.amount_minor == op.amount_minor)
            {
                fail(
                    "a confirmed purchase is missing from the head-end",
                    m,
                    format!(
                        "{} at {} ms bought serial {serial} for {}",
                        op.client,
                        op.at_ms,
                        eur(op.amount_minor as i64)
                    ),
                );
            }
        }
        for h in i
            .mpc_history
            .iter()
            .filter(|h| h.meter == m && h.what == HistoryKind::Applied)
        {
            let serial = h.serial.unwrap_or(0);
            if !applied.contains_key(&serial) {
                fail(
                    "mpc history says applied, no gateway ledger has it",
                    m,
                    format!(
                        "serial {serial} ({})",
                        h.amount_minor.map_or("no amount".into(), |a| eur(a as i64))
                    ),
                );
            }
        }
        // Money: opening + every serial applied once − the charge for the registers' advance.
        let first = stores
            .iter()
            .find_map(|s| s.meters.get(m).and_then(|l| l.openings.first().copied()));
        let last = stores.last().and_then(|s| s.meters.get(m));
        match (first, last) {
            (Some((opening, from_wh)), Some(last)) => {
                let once: i64 = applied
                    .values()
                    .filter_map(|g| g.first().map(|a| a.0))
                    .sum();
                let energy = last.register_wh.saturating_sub(from_wh) as i64;
                let charge = energy * i.rate_milli_per_kwh / 1_000_000;
                let expected = opening + once - charge;
                let diff = last.balance - expected;
                // Rounding: one minor unit; and each store loss may leave the energy of the minutes
                // the gateway was down to a new register baseline (at most a cent here).
                let tolerance = 1 + stores.len() as i64 - 1;
                if diff.abs() > tolerance {
                    figures.balance_difference_minor += diff.abs();
                    fail("balance is not opening + applied - charges", m, format!(
                        "balance {} but opening {} + applied {} - {} Wh at the tariff ({}) = {}: off by {}",
                        eur(last.balance), eur(opening), eur(once), energy, eur(charge), eur(expected), eur(diff)));
                }
                if opening != spec.opening_minor {
                    fail(
                        "opening balance differs from provisioning",
                        m,
                        format!(
                            "{} opened, {} provisioned",
                            eur(opening),
                            eur(spec.opening_minor)
                        ),
                    );
                }
            }
            _ => fail(
                "no account in the gateway ledger",
                m,
                "the meter was never read, or its account is missing from the current store".into(),
            ),
        }
    }
    for (what, ok, out) in &i.audits {
        if !ok {
            fail("audit chain does not verify", what, out.clone());
        }
    }
    figures.violations = v.violations;
    figures
}

fn state(s: TokenState) -> &'static str {
    match s {
        TokenState::Pending => "pending",
        TokenState::Applied => "applied",
        TokenState::Refused => "refused",
    }
}

/// Runs `bin args…`; (passed, output).
pub fn run_verify(bin: &Path, args: &[&std::ffi::OsStr]) -> (bool, String) {
    match Command::new(bin).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .trim()
            .to_string(),
        ),
        Err(e) => (false, format!("cannot run {}: {e}", bin.display())),
    }
}
