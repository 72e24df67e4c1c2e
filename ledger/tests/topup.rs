//! Token application: receipts, the outbox, group commit, debt recovery, and every refusal leaving the
//! ledger unchanged.

mod common;

use common::*;
use concentrator_ledger::check::check_store;
use concentrator_ledger::config::DebtRecovery;
use concentrator_ledger::{OutboxKind, TopUpError};
use concentrator_security::receipt::ReceiptVerifier;
use concentrator_security::signed::SignedDocument;
use concentrator_security::TokenError;

#[test]
fn a_token_is_applied_once_with_a_signed_receipt_in_the_outbox() {
    let (mut l, store, pki) = ledger_with(config(), 0);
    let now = local(0, 12, 5);
    let t = token(&pki, "M1", 5, 2_000);
    let r = l.apply_token(&t, now).unwrap();
    assert_eq!(r.receipt.serial, 5);
    assert_eq!(r.receipt.balance_after_minor, 2_000);
    assert_eq!(r.receipt.gateway_id, "gw-test");
    // The receipt verifies as the head-end would check it.
    let doc = SignedDocument::decode(&r.signed).unwrap();
    let verified = ReceiptVerifier::new(vec![pki.ca.clone()])
        .verify(&doc, now)
        .unwrap();
    assert_eq!(verified, r.receipt);
    // It waits in the outbox; acknowledging deletes it.
    let outbox = l.outbox().list(0, 10).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].kind, OutboxKind::Receipt);
    assert_eq!(outbox[0].payload, r.signed);
    l.outbox().ack(&[outbox[0].seq]).unwrap();
    assert!(l.outbox().list(0, 10).unwrap().is_empty());
    let a = l.account("M1").unwrap();
    assert_eq!((a.tokens_applied, a.last_serial), (1, Some(5)));
    check_store(&store).unwrap();
}

fn refused_without_change(
    l: &mut concentrator_ledger::Ledger<concentrator_ledger::MemStore>,
    store: &concentrator_ledger::MemStore,
    apply: impl FnOnce(
        &mut concentrator_ledger::Ledger<concentrator_ledger::MemStore>,
    ) -> Result<concentrator_ledger::TopUpReceipt, TopUpError>,
) -> TopUpError {
    let before = store.snapshot();
    let balance = l.account("M1").unwrap().balance_minor();
    let err = apply(l).unwrap_err();
    assert_eq!(store.snapshot(), before, "the store changed on {err}");
    assert_eq!(l.account("M1").unwrap().balance_minor(), balance);
    err
}

#[test]
fn replay_other_meter_expired_forged_and_untrusted_are_each_refused_and_change_nothing() {
    let (mut l, store, pki) = ledger_with(config(), 0);
    l.open_account(account("M2", 0, 0), local(0, 12, 0))
        .unwrap();
    let now = local(0, 12, 5);
    let first = token(&pki, "M1", 1, 1_000);
    let original = l.apply_token(&first, now).unwrap();

    // 1. The same token again: refused as a replay, with the original receipt.
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&first, now + 60));
    match e {
        TopUpError::Replayed {
            serial: 1,
            original: o,
            ..
        } => assert_eq!(*o, original),
        other => panic!("expected a replay, got {other}"),
    }

    // 2. A token for another meter, delivered to M1.
    let for_m2 = token(&pki, "M2", 1, 1_000);
    let e = refused_without_change(&mut l, &store, |l| l.apply_token_for("M1", &for_m2, now));
    assert!(
        matches!(e, TopUpError::Token(TokenError::WrongMeter { .. })),
        "{e}"
    );

    // 3. An expired token.
    let expired = pki.token("M1", 2, 1_000, now - 7_200, now - 3_600).unwrap();
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&expired, now));
    assert!(
        matches!(e, TopUpError::Token(TokenError::Expired { .. })),
        "{e}"
    );

    // 4. A forged signature: a valid token with its amount raised after signing.
    let signed = concentrator_security::SignedToken::decode(&token(&pki, "M1", 3, 1_000)).unwrap();
    let mut doc = signed.0;
    let amount_at = doc.body.len() - (8 + 8 + 8 + 3 + 8);
    doc.body[amount_at] = 0x7f;
    let forged = doc.encode().unwrap();
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&forged, now));
    assert!(
        matches!(e, TopUpError::Token(TokenError::BadSignature)),
        "{e}"
    );

    // 5. A token from an untrusted CA's head-end.
    let rogue = pki
        .rogue_token("M1", 4, 1_000, now - 60, now + 3_600)
        .unwrap();
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&rogue, now));
    assert!(
        matches!(e, TopUpError::Token(TokenError::UntrustedChain { .. })),
        "{e}"
    );

    // And the ledger's own refusals.
    let unknown = token(&pki, "M9", 1, 1_000);
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&unknown, now));
    assert!(matches!(e, TopUpError::UnknownMeter { .. }), "{e}");
    let not_yet = pki.token("M1", 5, 1_000, now + 3_600, now + 7_200).unwrap();
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&not_yet, now));
    assert!(
        matches!(e, TopUpError::Token(TokenError::NotYetValid { .. })),
        "{e}"
    );
    let garbage = [1u8, 0, 3, 1, 2];
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&garbage, now));
    assert!(
        matches!(e, TopUpError::Token(TokenError::Malformed { .. })),
        "{e}"
    );
    l.apply_token(&token(&pki, "M1", 10, 100), now).unwrap();
    // A different token with a serial already used (head-end fault).
    let conflict = token(&pki, "M1", 10, 999);
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&conflict, now));
    assert!(
        matches!(e, TopUpError::SerialConflict { serial: 10, .. }),
        "{e}"
    );
    check_store(&store).unwrap();
}

/// Serials arrive out of order (the head-end sends N+1 while N waits for a retry, the local inbox, a
/// retry): a lower serial than the highest applied still applies, once. Failed before the set of applied
/// serials replaced the high-water mark (serial 1 after 2 was refused as not fresh).
#[test]
fn a_late_serial_applies_once_and_replays_of_either_are_refused() {
    let (mut l, store, pki) = ledger_with(config(), 0);
    let now = local(0, 12, 5);
    let two = token(&pki, "M1", 2, 2_000);
    let one = token(&pki, "M1", 1, 500);
    let r2 = l.apply_token(&two, now).unwrap();
    assert_eq!(r2.receipt.balance_after_minor, 2_000);
    let r1 = l.apply_token(&one, now + 60).unwrap();
    assert_eq!(r1.receipt.balance_after_minor, 2_500);
    let a = l.account("M1").unwrap();
    assert_eq!(
        (a.balance_minor(), a.tokens_applied, a.last_serial),
        (2_500, 2, Some(2))
    );
    // Replays of each are refused with their original receipts, and change nothing.
    for (t, original) in [(&one, &r1), (&two, &r2)] {
        match refused_without_change(&mut l, &store, |l| l.apply_token(t, now + 120)) {
            TopUpError::Replayed { original: o, .. } => assert_eq!(*o, *original),
            other => panic!("expected a replay, got {other}"),
        }
    }
    // A different token with the late serial is a head-end fault.
    let conflict = token(&pki, "M1", 1, 999);
    let e = refused_without_change(&mut l, &store, |l| l.apply_token(&conflict, now + 120));
    assert!(
        matches!(e, TopUpError::SerialConflict { serial: 1, .. }),
        "{e}"
    );
    // The applied set is reported as ranges, both serials in one.
    let applied = l.applied_serials("M1");
    assert_eq!(
        applied,
        vec![concentrator_security::restore::SerialSpan { first: 1, last: 2 }]
    );
    check_store(&store).unwrap();
}

#[test]
fn group_commit_applies_a_batch_with_one_flush_and_sees_duplicates_inside_it() {
    let (mut l, store, pki) = ledger_with(config(), 0);
    let now = local(0, 12, 5);
    let a = token(&pki, "M1", 1, 100);
    let b = token(&pki, "M1", 2, 200);
    let results = l.apply_tokens(&[&a, &b, &a], now);
    assert_eq!(
        results[0].as_ref().unwrap().receipt.balance_after_minor,
        100
    );
    assert_eq!(
        results[1].as_ref().unwrap().receipt.balance_after_minor,
        300
    );
    assert!(matches!(
        results[2],
        Err(TopUpError::Replayed { serial: 1, .. })
    ));
    assert_eq!(l.account("M1").unwrap().balance_minor(), 300);
    // Durable: a crash right after keeps both.
    let reopened = open(store.crash(), config(), &pki);
    assert_eq!(reopened.account("M1").unwrap().balance_minor(), 300);
    check_store(&store).unwrap();
}

#[test]
fn group_commit_for_addressed_meters_refuses_a_token_sent_for_another_meter_and_applies_the_rest() {
    let (mut l, store, pki) = ledger_with(config(), 0);
    l.open_account(account("M2", 0, 0), local(0, 12, 0))
        .unwrap();
    let now = local(0, 12, 5);
    let m1 = token(&pki, "M1", 1, 100);
    let m2 = token(&pki, "M2", 1, 200);
    let results = l.apply_tokens_for(&[("M1", &m1), ("M1", &m2), ("M2", &m2), ("M2", &m2)], now);
    assert_eq!(
        results[0].as_ref().unwrap().receipt.balance_after_minor,
        100
    );
    assert!(matches!(
        results[1],
        Err(TopUpError::Token(TokenError::WrongMeter { .. }))
    ));
    assert_eq!(
        results[2].as_ref().unwrap().receipt.balance_after_minor,
        200
    );
    assert!(matches!(
        results[3],
        Err(TopUpError::Replayed { serial: 1, .. })
    ));
    // One commit for both, durable: a crash right after keeps both.
    let reopened = open(store.crash(), config(), &pki);
    assert_eq!(reopened.account("M1").unwrap().balance_minor(), 100);
    assert_eq!(reopened.account("M2").unwrap().balance_minor(), 200);
    assert_eq!(l.outbox().list(0, 10).unwrap().len(), 2);
    check_store(&store).unwrap();
}

#[test]
fn debt_is_recovered_as_a_share_of_each_top_up() {
    // 25 % of each top-up until the 30.00 debt is paid: a 50.00 top-up recovers 12.50 (credit 37.50);
    // a 100.00 top-up recovers the remaining 17.50 (credit 82.50), not 25.00.
    let mut c = config();
    c.debt_recovery = DebtRecovery::PercentOfTopUp {
        basis_points: 2_500,
    };
    let pki = pki();
    let store = concentrator_ledger::MemStore::new();
    let mut l = open(store.clone(), c, &pki);
    let mut spec = account("M1", 0, 0);
    spec.opening_debt_minor = 3_000;
    l.open_account(spec, local(0, 12, 0)).unwrap();
    let r1 = l
        .apply_token(&token(&pki, "M1", 1, 5_000), local(0, 13, 0))
        .unwrap();
    assert_eq!(r1.receipt.balance_after_minor, 3_750);
    assert_eq!(l.account("M1").unwrap().debt_minor, 1_750);
    let r2 = l
        .apply_token(&token(&pki, "M1", 2, 10_000), local(0, 14, 0))
        .unwrap();
    assert_eq!(r2.receipt.balance_after_minor, 3_750 + 8_250);
    assert_eq!(l.account("M1").unwrap().debt_minor, 0);
    check_store(&store).unwrap();
}
