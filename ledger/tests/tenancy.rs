//! Change of tenancy by the head-end's signed order: closing with credit and with debt, a resent order,
//! a late token of the old tenant, a restart in the middle, and refused orders.

mod common;

use common::*;
use concentrator_ledger::check::check_store;
use concentrator_ledger::testkit::TestPki;
use concentrator_ledger::{
    FaultPlan, FaultyStore, MemStore, OutboxKind, RelayAction, TenancyOrderError, TopUpError,
};
use concentrator_security::tenancy::{SettlementDocument, TenancyOrder};

fn order(id: u64, last_old_serial: u64, effective_at: u64) -> TenancyOrder {
    TenancyOrder {
        meter_id: "M1".into(),
        order_id: id,
        old_customer: "C-OLD".into(),
        new_customer: "C-NEW".into(),
        effective_at,
        issued_at: effective_at,
        last_old_serial,
        opening_credit_minor: 0,
        currency: *b"EUR",
        key_id: [0; 8],
    }
}

fn signed(pki: &TestPki, o: &TenancyOrder) -> Vec<u8> {
    pki.order(o, false).unwrap()
}

/// The settlements in the outbox, verified as the head-end verifies them.
fn settlements<S: concentrator_ledger::Store>(
    l: &concentrator_ledger::Ledger<S>,
    pki: &TestPki,
) -> Vec<(SettlementDocument, Vec<u8>)> {
    l.outbox()
        .list(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == OutboxKind::Settlement)
        .map(|e| {
            let (s, _) = pki
                .receipt_verifier()
                .verify_settlement(&e.payload, local(0, 12, 0))
                .unwrap();
            (s, e.payload)
        })
        .collect()
}

#[test]
fn closing_with_credit_settles_it_and_the_new_tenant_starts_at_zero_and_is_cut() {
    let (mut l, store, pki) = ledger_with(config(), 0);
    l.apply_token(&token(&pki, "M1", 1, 2_000), local(0, 12, 5))
        .unwrap();
    // 4 kWh at 25 c = 1.00: 19.00 left.
    l.on_register("M1", "SN-M1", 14_000, local(0, 12, 30))
        .unwrap();
    l.drain_outputs();
    let at = local(0, 13, 0);
    let out = l
        .apply_tenancy_order(Some("M1"), &signed(&pki, &order(41, 1, at)), at)
        .unwrap();
    assert!(!out.already_done);
    let s = &out.settlement;
    assert_eq!(
        (
            s.remaining_credit_minor,
            s.debt_minor,
            s.closing_register_wh,
            s.last_serial,
            s.account_no,
            s.order_id,
            s.old_customer.as_str()
        ),
        (1_900, 0, 14_000, Some(1), 1, 41, "C-OLD")
    );
    // The audit head in the settlement is the closing entry's.
    let head = l.audit_head();
    assert!(
        head.next_seq > s.audit_len,
        "the new account's entry follows"
    );
    // Exactly one settlement in the outbox, the one returned, and it verifies.
    let up = settlements(&l, &pki);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, out.signed);
    // The new tenant: account 2, nothing from the old one, same register; no credit on a Monday at
    // 13:00 (not friendly hours, no emergency credit selected): cut.
    let a = l.account("M1").unwrap();
    assert_eq!(
        (a.account_no, a.balance_minor(), a.debt_minor, a.register.wh),
        (2, 0, 0, 14_000)
    );
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    // The new tenant's top-up applies (a serial above the old customer's) and is theirs alone.
    let r = l
        .apply_token(&token(&pki, "M1", 2, 500), local(0, 13, 5))
        .unwrap();
    assert_eq!(r.receipt.balance_after_minor, 500);
    check_store(&store).unwrap();
}

#[test]
fn closing_with_debt_bills_it_and_friendly_hours_keep_the_new_tenant_on() {
    let mut c = config();
    c.emergency.auto_select = true;
    let (mut l, _store, pki) = ledger_with(c, 100);
    // 12 kWh = 3.00 against 1.00: −2.00 in (automatic) emergency credit.
    l.on_register("M1", "SN-M1", 22_000, local(0, 17, 0))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), -200);
    l.drain_outputs();
    // At 19:00 (friendly hours from 18:00) the close leaves the new tenant without credit but on.
    let at = local(0, 19, 0);
    let out = l
        .apply_tenancy_order(None, &signed(&pki, &order(42, 0, at)), at)
        .unwrap();
    assert_eq!(
        (
            out.settlement.remaining_credit_minor,
            out.settlement.debt_minor
        ),
        (0, 200)
    );
    assert_eq!(out.settlement.last_serial, None);
    let a = l.account("M1").unwrap();
    assert_eq!((a.account_no, a.balance_minor(), a.debt_minor), (2, 0, 0));
    assert!(
        !relay_actions(&l.drain_outputs()).contains(&RelayAction::Cut),
        "friendly hours keep the supply on"
    );
}

#[test]
fn a_resent_order_is_already_done_with_the_same_settlement_and_old_tokens_are_refused() {
    let (mut l, _store, pki) = ledger_with(config(), 0);
    let first_token = token(&pki, "M1", 1, 1_000);
    l.apply_token(&first_token, local(0, 12, 5)).unwrap();
    let at = local(0, 12, 30);
    let o = signed(&pki, &order(7, 3, at));
    let first = l.apply_tenancy_order(Some("M1"), &o, at).unwrap();
    // The same order again, a minute later: nothing changes, the same settlement goes up again.
    let again = l.apply_tenancy_order(Some("M1"), &o, at + 60).unwrap();
    assert!(again.already_done);
    assert_eq!(again.signed, first.signed);
    assert_eq!(l.account("M1").unwrap().account_no, 2);
    let up = settlements(&l, &pki);
    assert_eq!(up.len(), 2);
    assert!(up.iter().all(|(_, s)| *s == first.signed));
    // Serials 2 and 3 were bought by the old customer and never applied: refused, with who and why.
    let late = l.apply_token(&token(&pki, "M1", 3, 700), at + 120);
    match late {
        Err(e @ TopUpError::PreviousTenant { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("C-OLD") && text.contains("order 7") && text.contains("refunds"),
                "{text}"
            );
        }
        other => panic!("expected a refusal for the previous tenant, got {other:?}"),
    }
    assert_eq!(l.account("M1").unwrap().balance_minor(), 0);
    // Serial 1 (applied before) is still answered with its original receipt.
    assert!(matches!(
        l.apply_token(&first_token, at + 130),
        Err(TopUpError::Replayed { .. })
    ));
    // Serial 4 is the new tenant's.
    l.apply_token(&token(&pki, "M1", 4, 300), at + 140).unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 300);
}

#[test]
fn a_crash_before_the_flush_loses_the_whole_change_and_the_resent_order_does_it_once() {
    let pki = pki();
    let mem = MemStore::new();
    let faulty = FaultyStore::new(mem.clone());
    let mut l = open(faulty.clone(), config(), &pki);
    l.open_account(account("M1", 1_500, 10_000), local(0, 12, 0))
        .unwrap();
    let at = local(0, 12, 30);
    let o = signed(&pki, &order(9, 0, at));
    // The flush fails: the order is not acknowledged, and a crash loses what was committed.
    faulty.set_plan(FaultPlan {
        fail_flushes: true,
        ..FaultPlan::default()
    });
    let err = l.apply_tenancy_order(Some("M1"), &o, at).unwrap_err();
    assert!(err.retry_later(), "{err}");
    assert!(err.to_string().contains("send the order again"), "{err}");
    drop(l);
    let after_crash = mem.crash();
    let mut l = open(after_crash.clone(), config(), &pki);
    let a = l.account("M1").unwrap();
    assert_eq!((a.account_no, a.balance_minor()), (1, 1_500));
    assert!(settlements(&l, &pki).is_empty());
    // The head-end sends the order again: it is carried out once, and survives the next restart.
    let out = l.apply_tenancy_order(Some("M1"), &o, at + 60).unwrap();
    assert!(!out.already_done);
    assert_eq!(out.settlement.remaining_credit_minor, 1_500);
    drop(l);
    let mut l = open(after_crash.crash(), config(), &pki);
    assert_eq!(l.account("M1").unwrap().account_no, 2);
    let again = l.apply_tenancy_order(Some("M1"), &o, at + 120).unwrap();
    assert!(again.already_done);
    assert_eq!(again.signed, out.signed);
    check_store(&after_crash).unwrap();
}

#[test]
fn unsigned_altered_early_or_misdirected_orders_are_refused_with_a_reason() {
    let (mut l, _store, pki) = ledger_with(config(), 800);
    let at = local(0, 12, 30);
    // Signed by a head-end the utility CA did not certify.
    let rogue = pki.order(&order(1, 0, at), true).unwrap();
    let e = l.apply_tenancy_order(Some("M1"), &rogue, at).unwrap_err();
    assert!(!e.retry_later());
    assert!(e.to_string().contains("not trusted"), "{e}");
    // Altered after signing: one octet of the new customer's id.
    let mut altered = signed(&pki, &order(2, 0, at));
    let pos = altered.windows(5).position(|w| w == b"C-NEW").unwrap();
    altered[pos + 4] = b'X';
    let e = l.apply_tenancy_order(Some("M1"), &altered, at).unwrap_err();
    assert!(e.to_string().contains("altered"), "{e}");
    // For another meter than the one it was sent for.
    let e = l
        .apply_tenancy_order(Some("M2"), &signed(&pki, &order(3, 0, at)), at)
        .unwrap_err();
    assert!(matches!(e, TenancyOrderError::Refused(_)), "{e}");
    // Effective in an hour: not yet, and nothing changed.
    let e = l
        .apply_tenancy_order(Some("M1"), &signed(&pki, &order(4, 0, at + 3_600)), at)
        .unwrap_err();
    assert!(
        e.retry_later() && e.to_string().contains("send it again then"),
        "{e}"
    );
    // Garbage.
    assert!(l.apply_tenancy_order(None, b"\x01\x02", at).is_err());
    let a = l.account("M1").unwrap();
    assert_eq!((a.account_no, a.balance_minor()), (1, 800));
}
