//! Account restores: a gateway whose store was lost asks for a meter's account (0x0C, in the meter's
//! scope) and gets the head-end's signed statement of it (0x8B) before it charges or accepts tokens
//! again. [`gather`] collects what the head-end knows into [`RestoreFacts`]; the statement is made from
//! those facts and signed with the head-end's token key.

use concentrator_protocol::{AccountRestore, Body, RestoreRequest, SerialRange};
use concentrator_security::restore::{AccountStatement, SerialSpan};
use concentrator_security::signed::DocumentSigner;

use super::{Engine, Fault, Outgoing};
use crate::audit::{Draft, EntryKind};
use crate::money::{money, money_u, time};
use crate::store::{Store, StoreError, TokenState};

/// What the head-end knows of a meter's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFacts {
    /// The meter.
    pub meter: String,
    /// ISO 4217.
    pub currency: String,
    /// When gathered, unix s.
    pub at: u64,
    /// The gateway never sent an account summary of this meter: the account is opened anew (at the
    /// gateway's configured opening balance, plus `credit_minor`).
    pub new_account: bool,
    /// The newest account summary's time, unix s (gateway clock).
    pub summary_at: Option<u64>,
    /// Its balance, minor units.
    pub summary_balance_minor: Option<i64>,
    /// Its import register, Wh: charging resumes from here.
    pub register_wh: Option<u64>,
    /// Tokens whose receipts show them applied after that summary (all applied tokens for a new
    /// account): (serial, amount in minor units), by serial.
    pub receipts_after: Vec<(u64, u64)>,
    /// The credit to restore: the summary's balance plus `receipts_after`; for a new account the sum
    /// of `receipts_after`, on top of the opening balance.
    pub credit_minor: i64,
    /// Every serial applied to the meter: those with receipts and those the summary listed. A token
    /// with one of them is refused as a replay.
    pub applied: Vec<SerialRange>,
    /// Outstanding debt, minor units, when the head-end knows it (it keeps no debt ledger: `None`).
    pub debt_minor: Option<u64>,
}

/// Gathers the facts of `meter` from the store.
pub fn gather(
    store: &Store,
    meter: &str,
    currency: &str,
    now: u64,
) -> Result<RestoreFacts, StoreError> {
    let summary = store.meter(meter)?.and_then(|m| m.summary);
    let summary_ranges: Option<Vec<SerialRange>> = summary.as_ref().and_then(|s| {
        s.applied.as_ref().map(|v| {
            v.iter()
                .map(|&(first, last)| SerialRange { first, last })
                .collect()
        })
    });
    let mut applied: Vec<u64> = Vec::new();
    let mut receipts_after = Vec::new();
    for t in store.tokens(meter)? {
        if t.state != TokenState::Applied {
            continue;
        }
        applied.push(t.serial);
        let after = match (&summary, &summary_ranges) {
            (None, _) => true,
            (Some(_), Some(r)) => !SerialRange::contains(r, t.serial),
            (Some(s), None) => t.applied_at.is_some_and(|at| at > s.at),
        };
        if after {
            receipts_after.push((t.serial, t.amount_minor));
        }
    }
    let mut ranges = SerialRange::cover(applied);
    if let Some(r) = &summary_ranges {
        let mut all: Vec<SerialRange> = ranges.into_iter().chain(r.iter().copied()).collect();
        all.sort_by_key(|r| r.first);
        ranges = merge(all);
    }
    let added: i64 = receipts_after
        .iter()
        .map(|&(_, a)| i64::try_from(a).unwrap_or(i64::MAX))
        .fold(0i64, i64::saturating_add);
    Ok(RestoreFacts {
        meter: meter.to_string(),
        currency: currency.to_string(),
        at: now,
        new_account: summary.is_none(),
        summary_at: summary.as_ref().map(|s| s.at),
        summary_balance_minor: summary.as_ref().map(|s| s.balance_minor),
        register_wh: summary.as_ref().map(|s| s.register_wh),
        receipts_after,
        credit_minor: summary
            .as_ref()
            .map_or(0, |s| s.balance_minor)
            .saturating_add(added),
        applied: ranges,
        debt_minor: None,
    })
}

/// Sorted ranges, overlapping or adjacent ones joined.
fn merge(sorted: Vec<SerialRange>) -> Vec<SerialRange> {
    let mut out: Vec<SerialRange> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(l) if r.first <= l.last.saturating_add(1) => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

/// The facts for people (the payment record, the log).
pub fn describe(f: &RestoreFacts) -> String {
    let ranges: Vec<String> = f
        .applied
        .iter()
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            }
        })
        .collect();
    let after: u64 = f.receipts_after.iter().map(|&(_, a)| a).sum();
    let base = match (f.summary_at, f.summary_balance_minor, f.register_wh) {
        (Some(at), Some(b), Some(wh)) => format!(
            "summary of {}: balance {}, register {wh} Wh",
            time(at),
            money(b, &f.currency)
        ),
        _ => "new account (no summary ever)".to_string(),
    };
    format!(
        "{base}; {} token(s) applied after it ({}); credit restored {}; applied serials {}",
        f.receipts_after.len(),
        money_u(after, &f.currency),
        money(f.credit_minor, &f.currency),
        if ranges.is_empty() {
            "none".to_string()
        } else {
            ranges.join(",")
        }
    )
}

impl Engine {
    /// 0x0C: answers with the signed statement of the meter's account (0x8B) and records it.
    pub(super) fn restore(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        r: RestoreRequest,
        now: u64,
    ) -> Result<Vec<Outgoing>, Fault> {
        let Some(m) = meter else {
            return Err(Fault::Reject(
                "a restore request in the gateway scope names no meter".into(),
            ));
        };
        let facts = gather(&self.store, m, &self.s.currency, now)?;
        let rec = self
            .store
            .meter(m)?
            .ok_or_else(|| Fault::Reject(format!("meter {m} is not enrolled here")))?;
        let Some((gwid, scope, sub, rand)) = self.meter_target(&rec, now) else {
            return Err(Fault::Retry(format!(
                "meter {m} has no confirmed security context to answer its restore request in"
            )));
        };
        let signed = self.restore_statement(&facts)?;
        let out = self
            .seal(
                &gwid,
                scope,
                &sub,
                &rand,
                Body::AccountRestore(AccountRestore { signed }),
                None,
                now,
            )
            .map_err(Fault::Retry)?;
        let detail = format!(
            "restored for gateway {gw} (its register then: {}): {}",
            r.register_wh
                .map_or_else(|| "not read".to_string(), |wh| format!("{wh} Wh")),
            describe(&facts)
        );
        let draft = Draft {
            at: now,
            what: EntryKind::AccountRestored,
            customer: None,
            meter: m.to_string(),
            serial: facts.applied.last().map_or(0, |r| r.last),
            amount_minor: u64::try_from(facts.credit_minor.max(0)).unwrap_or(0),
            currency: facts.currency.clone(),
            detail: Some(detail.clone()),
        };
        let mut b = crate::store::Batch::new();
        self.anchor_restarting(&mut b, gw, now)?;
        self.payments.append_with(&self.store, vec![draft], b)?;
        log::info!("account of meter {m} {detail}");
        Ok(vec![out])
    }

    /// Sets how account restore statements are made and signed (tests; the merge with
    /// `concentrator_security::restore` makes it the default).
    pub fn set_restore_statement(&mut self, f: StatementFn) {
        self.statement = Some(f);
    }

    /// The signed statement of `facts`, with the head-end's token key (`self.s.statements`).
    fn restore_statement(&self, facts: &RestoreFacts) -> Result<Vec<u8>, Fault> {
        if let Some(f) = self.statement {
            return f(facts, &self.s.statements).map_err(|e| {
                Fault::Retry(format!(
                    "meter {}: the account restore statement cannot be made: {e}",
                    facts.meter
                ))
            });
        }
        sign_statement(facts, &self.s.statements).map_err(|e| {
            Fault::Retry(format!(
                "meter {}: the account restore statement cannot be made: {e}",
                facts.meter
            ))
        })
    }
}

/// The default [`StatementFn`]: the facts as a `concentrator_security::restore::AccountStatement`,
/// signed with the head-end's token key.
pub fn sign_statement(facts: &RestoreFacts, signer: &DocumentSigner) -> Result<Vec<u8>, String> {
    let currency: [u8; 3] = facts
        .currency
        .as_bytes()
        .try_into()
        .map_err(|_| format!("currency {:?} is not a 3-letter code", facts.currency))?;
    let applied: Vec<SerialSpan> = facts
        .applied
        .iter()
        .map(|r| SerialSpan {
            first: r.first,
            last: r.last,
        })
        .collect();
    let statement = AccountStatement {
        meter_id: facts.meter.clone(),
        at: facts.at,
        currency,
        balance_minor: facts.credit_minor,
        // The summary's time is the gateway's clock, which may run ahead of ours by up to the clock
        // tolerance: the statement cannot be about a later moment than its own.
        summary_at: facts.summary_at.unwrap_or(facts.at).min(facts.at),
        register_wh: if facts.new_account {
            None
        } else {
            facts.register_wh
        },
        debt_minor: facts.debt_minor.unwrap_or(0),
        last_serial: applied.last().map(|r| r.last),
        applied,
        new_account: facts.new_account,
        key_id: [0; 8],
    };
    statement.sign_with(signer).map_err(|e| e.to_string())
}

/// Makes and signs an account restore statement from the facts: its wire octets.
pub type StatementFn = fn(&RestoreFacts, &DocumentSigner) -> Result<Vec<u8>, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{meter_key, token_key, AccountView, Batch, MeterRecord, SummaryView};
    use crate::store::{TokenRecord, TokenState};

    fn meter(summary: Option<SummaryView>) -> MeterRecord {
        MeterRecord {
            meter: "MTR-1".into(),
            gateway: "gw-1".into(),
            dwelling: "A-1".into(),
            imsi: "001010000000001".into(),
            msisdn: "1".into(),
            imei: "1".into(),
            kid: "00".into(),
            k: [0; 16],
            opc: [0; 16],
            sqn: Default::default(),
            last_applied_serial: None,
            view: AccountView::default(),
            summary,
        }
    }

    fn token(serial: u64, amount: u64, state: TokenState, applied_at: Option<u64>) -> TokenRecord {
        TokenRecord {
            meter: "MTR-1".into(),
            serial,
            amount_minor: amount,
            currency: "EUR".into(),
            issued_at: 100,
            expires_at: 10_000,
            token: String::new(),
            customer: "C-1".into(),
            record: 0,
            state,
            command: None,
            sent_at: None,
            sends: 0,
            result: None,
            result_at: None,
            reason: None,
            receipt: Some("00".into()),
            balance_after_minor: None,
            applied_at,
        }
    }

    fn store(summary: Option<SummaryView>, tokens: &[TokenRecord]) -> Store {
        let s = Store::memory();
        let mut b = Batch::new();
        b.put(meter_key("MTR-1"), &meter(summary));
        for t in tokens {
            b.put(token_key("MTR-1", t.serial), t);
        }
        s.commit(b).unwrap();
        s
    }

    #[test]
    fn summary_plus_later_receipts_with_the_union_of_applied_serials() {
        let summary = SummaryView {
            at: 1_000,
            balance_minor: 1_250,
            register_wh: 4_321,
            applied: Some(vec![(1, 2)]),
            last_token_serial: Some(2),
            ..Default::default()
        };
        let s = store(
            Some(summary),
            &[
                token(1, 500, TokenState::Applied, Some(900)),
                token(2, 500, TokenState::Applied, Some(950)),
                token(3, 700, TokenState::Pending, None),
                token(4, 1_000, TokenState::Applied, Some(1_100)),
                token(5, 300, TokenState::Refused, None),
            ],
        );
        let f = gather(&s, "MTR-1", "EUR", 2_000).unwrap();
        assert!(!f.new_account);
        assert_eq!(f.register_wh, Some(4_321));
        assert_eq!(f.receipts_after, vec![(4, 1_000)]);
        assert_eq!(f.credit_minor, 2_250);
        assert_eq!(
            f.applied,
            vec![
                SerialRange { first: 1, last: 2 },
                SerialRange { first: 4, last: 4 }
            ]
        );
        let d = describe(&f);
        assert!(d.contains("credit restored 22.50 EUR"), "{d}");
        assert!(d.contains("applied serials 1-2,4"), "{d}");
    }

    #[test]
    fn a_meter_that_never_reported_is_a_new_account_with_its_applied_tokens() {
        let s = store(None, &[token(1, 500, TokenState::Applied, Some(900))]);
        let f = gather(&s, "MTR-1", "EUR", 2_000).unwrap();
        assert!(f.new_account);
        assert_eq!((f.credit_minor, f.register_wh), (500, None));
        assert_eq!(f.applied, vec![SerialRange { first: 1, last: 1 }]);
        let empty = store(None, &[]);
        let f = gather(&empty, "MTR-1", "EUR", 2_000).unwrap();
        assert!(f.new_account && f.applied.is_empty() && f.credit_minor == 0);
    }

    #[test]
    fn without_applied_ranges_the_receipt_time_decides() {
        let summary = SummaryView {
            at: 1_000,
            balance_minor: 100,
            applied: None,
            ..Default::default()
        };
        let s = store(
            Some(summary),
            &[
                token(1, 500, TokenState::Applied, Some(900)),
                token(2, 200, TokenState::Applied, Some(1_001)),
            ],
        );
        let f = gather(&s, "MTR-1", "EUR", 2_000).unwrap();
        assert_eq!((f.credit_minor, f.receipts_after.len()), (300, 1));
    }
}
