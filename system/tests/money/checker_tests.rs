//! The checker on made-up final states: it passes a run where every cent arrived once, and names the
//! meter and the token when one was lost, doubled, or reported applied without a receipt.

use std::collections::BTreeMap;
use std::path::PathBuf;

use concentrator_headend::store::{TokenRecord, TokenState};
use concentrator_mpc::backend::{HistoryEntry, HistoryKind};

use crate::checker::{check, Inputs, LedgerStore, MeterLedger, MeterSpec};

fn token(serial: u64, amount_minor: u64, state: TokenState) -> TokenRecord {
    TokenRecord {
        meter: "M1".into(),
        serial,
        amount_minor,
        currency: "EUR".into(),
        issued_at: 0,
        expires_at: 0,
        token: String::new(),
        customer: "C-1".into(),
        record: serial,
        state,
        command: None,
        sent_at: None,
        sends: 1,
        result: None,
        reason: None,
        receipt: None,
        balance_after_minor: None,
        applied_at: None,
        result_at: None,
    }
}

/// One meter opened at 50.00 EUR and register 1,000 Wh, read last at `register_wh`, with `applied`.
fn inputs(applied: &[(u64, i64)], balance: i64, register_wh: u64) -> Inputs {
    let ledger = MeterLedger {
        openings: vec![(5_000, 1_000)],
        applied: applied.to_vec(),
        balance,
        register_wh,
    };
    Inputs {
        meters: vec![MeterSpec {
            meter: "M1".into(),
            gateway: 0,
            opening_minor: 5_000,
        }],
        rate_milli_per_kwh: 25_000,
        tokens: BTreeMap::from([(
            "M1".to_string(),
            vec![
                token(1, 700, TokenState::Applied),
                token(2, 300, TokenState::Applied),
            ],
        )]),
        ops: Vec::new(),
        mpc_history: vec![HistoryEntry {
            at: 0,
            meter: "M1".into(),
            what: HistoryKind::Applied,
            serial: Some(2),
            amount_minor: Some(300),
            balance_after_minor: None,
            detail: None,
        }],
        ledgers: vec![vec![LedgerStore {
            path: PathBuf::from("store"),
            meters: BTreeMap::from([("M1".to_string(), ledger)]),
        }]],
        audits: vec![("ledger".into(), true, String::new())],
    }
}

#[test]
fn the_checker_passes_when_every_cent_arrived_once() {
    // 50.00 + 7.00 + 3.00 − 2,000 Wh at 25 c/kWh (0.50) = 59.50.
    let v = check(&inputs(&[(1, 700), (2, 300)], 5_950, 3_000));
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert_eq!(v.token_difference_minor, 0);
}

#[test]
fn the_checker_names_a_lost_token_and_the_history_that_claims_it() {
    let v = check(&inputs(&[(1, 700)], 5_650, 3_000));
    let found: Vec<(&str, &str)> = v
        .violations
        .iter()
        .map(|x| (x.check, x.meter.as_str()))
        .collect();
    assert!(
        found.contains(&("paid and never applied", "M1")),
        "{found:?}"
    );
    assert!(
        found.contains(&("mpc history says applied, no gateway ledger has it", "M1")),
        "{found:?}"
    );
    assert_eq!(v.token_difference_minor, 300);
}

#[test]
fn the_checker_names_a_doubled_token_and_the_balance_it_inflated() {
    let v = check(&inputs(&[(1, 700), (2, 300), (2, 300)], 6_250, 3_000));
    let checks: Vec<&str> = v.violations.iter().map(|x| x.check).collect();
    assert!(checks.contains(&"applied more than once"), "{checks:?}");
    assert!(
        checks.contains(&"balance is not opening + applied - charges"),
        "{checks:?}"
    );
    assert_eq!(v.balance_difference_minor, 300);
}

#[test]
fn the_checker_fails_a_chain_that_does_not_verify() {
    let mut i = inputs(&[(1, 700), (2, 300)], 5_950, 3_000);
    i.audits[0].1 = false;
    let v = check(&i);
    assert_eq!(v.violations.len(), 1);
    assert_eq!(v.violations[0].check, "audit chain does not verify");
}
