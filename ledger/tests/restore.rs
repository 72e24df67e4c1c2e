//! Restoring a lost account from the head-end's signed statement: balance, register baseline and the
//! serials applied before; a replay of a restored serial refused; a statement for another meter, badly
//! signed or from an untrusted head-end refused without a change.

mod common;

use common::*;
use concentrator_ledger::check::check_store;
use concentrator_ledger::{Ledger, MemStore, RestoreAccountError, TopUpError};
use concentrator_security::restore::{AccountStatement, RestoreError, SerialSpan};
use concentrator_security::signed::SignedDocument;
use concentrator_security::TokenError;

fn statement(meter: &str, at: u64) -> AccountStatement {
    AccountStatement {
        meter_id: meter.into(),
        at,
        currency: *b"EUR",
        balance_minor: 1_234,
        summary_at: at - 3_600,
        register_wh: Some(50_000),
        debt_minor: 0,
        applied: SerialSpan::cover([1, 2, 3, 5]),
        last_serial: Some(5),
        new_account: false,
        key_id: [0; 8],
    }
}

fn empty_ledger() -> (
    Ledger<MemStore>,
    MemStore,
    concentrator_ledger::testkit::TestPki,
) {
    let pki = pki();
    let store = MemStore::new();
    let l = open(store.clone(), config(), &pki);
    (l, store, pki)
}

#[test]
fn a_verified_statement_restores_balance_register_and_serials_and_replays_are_refused() {
    let (mut l, store, pki) = empty_ledger();
    let now = local(0, 12, 0);
    let signed = pki.statement(&statement("M1", now - 60), false).unwrap();
    // The register read now is ignored: the statement's register is the baseline.
    let a = l
        .restore_account(account("M1", 0, 51_000), &signed, now)
        .unwrap();
    assert_eq!(a.balance_minor(), 1_234);
    assert_eq!(a.register.wh, 50_000);
    assert_eq!(a.last_serial, Some(5));
    assert_eq!(l.applied_serials("M1"), SerialSpan::cover([1, 2, 3, 5]));

    // The consumption since the head-end's summary is charged at the next reading: 1 kWh at 25 c.
    l.on_register("M1", "SN-M1", 51_000, now + 60).unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 1_209);

    // Tokens applied before the restore are refused; the gap (4) and new serials apply once.
    for serial in [1, 3, 5] {
        let t = token(&pki, "M1", serial, 1_000);
        let e = l.apply_token(&t, now + 120).unwrap_err();
        assert!(
            matches!(e, TopUpError::AppliedBeforeRestore { serial: s, .. } if s == serial),
            "{e}"
        );
    }
    let four = token(&pki, "M1", 4, 1_000);
    assert_eq!(
        l.apply_token(&four, now + 180)
            .unwrap()
            .receipt
            .balance_after_minor,
        2_209
    );
    assert!(matches!(
        l.apply_token(&four, now + 240),
        Err(TopUpError::Replayed { .. })
    ));
    assert_eq!(l.applied_serials("M1"), SerialSpan::cover([1, 2, 3, 4, 5]));
    assert_eq!(l.account("M1").unwrap().last_serial, Some(5));
    check_store(&store).unwrap();

    // Everything survives a restart.
    drop(l);
    let mut l = open(store.clone(), config(), &pki);
    assert_eq!(l.account("M1").unwrap().balance_minor(), 2_209);
    let two = token(&pki, "M1", 2, 1_000);
    assert!(matches!(
        l.apply_token(&two, now + 300),
        Err(TopUpError::AppliedBeforeRestore { serial: 2, .. })
    ));
    // A second statement does not overwrite the account.
    let again = pki.statement(&statement("M1", now), false).unwrap();
    assert!(matches!(
        l.restore_account(account("M1", 0, 0), &again, now + 300),
        Err(RestoreAccountError::AccountExists { .. })
    ));
}

#[test]
fn a_new_account_statement_takes_the_first_reading_as_baseline() {
    let (mut l, store, pki) = empty_ledger();
    let now = local(0, 12, 0);
    let fresh = AccountStatement {
        balance_minor: 500,
        summary_at: now,
        register_wh: None,
        applied: Vec::new(),
        last_serial: None,
        new_account: true,
        ..statement("M1", now)
    };
    let signed = pki.statement(&fresh, false).unwrap();
    let a = l
        .restore_account(account("M1", 0, 7_000), &signed, now)
        .unwrap();
    assert_eq!((a.balance_minor(), a.register.wh), (500, 7_000));
    assert_eq!(a.last_serial, None);
    l.apply_token(&token(&pki, "M1", 1, 100), now + 60).unwrap();
    check_store(&store).unwrap();
}

#[test]
fn statements_for_another_meter_badly_signed_untrusted_or_stale_are_refused_without_change() {
    let (mut l, store, pki) = empty_ledger();
    let now = local(0, 12, 0);
    let before = store.snapshot();
    let refused = |l: &mut Ledger<MemStore>, signed: &[u8]| {
        let e = l
            .restore_account(account("M1", 0, 0), signed, now)
            .unwrap_err();
        assert!(l.account("M1").is_none(), "{e}");
        e
    };

    let other = pki.statement(&statement("M2", now), false).unwrap();
    let e = refused(&mut l, &other);
    assert!(
        matches!(
            e,
            RestoreAccountError::Statement(RestoreError::WrongMeter { .. })
        ),
        "{e}"
    );

    let good = pki.statement(&statement("M1", now), false).unwrap();
    let mut doc = SignedDocument::decode(&good).unwrap();
    // Raise the balance after signing (it follows the tag, version, meter id, time and currency).
    doc.body[2 + 3 + 8 + 3] ^= 0x40;
    let forged = doc.encode().unwrap();
    let e = refused(&mut l, &forged);
    assert!(
        matches!(
            e,
            RestoreAccountError::Statement(RestoreError::Token(TokenError::BadSignature))
        ),
        "{e}"
    );

    let rogue = pki.statement(&statement("M1", now), true).unwrap();
    let e = refused(&mut l, &rogue);
    assert!(
        matches!(
            e,
            RestoreAccountError::Statement(RestoreError::Token(TokenError::UntrustedChain { .. }))
        ),
        "{e}"
    );

    let stale = pki
        .statement(&statement("M1", now - 3 * 86_400), false)
        .unwrap();
    let e = refused(&mut l, &stale);
    assert!(
        matches!(
            e,
            RestoreAccountError::Statement(RestoreError::TooOld { .. })
        ),
        "{e}"
    );

    let e = refused(&mut l, b"garbage");
    assert!(matches!(e, RestoreAccountError::Statement(_)), "{e}");
    assert_eq!(store.snapshot(), before);
}

/// The audit head that goes up as the anchor is the flushed one: a crash that loses committed but
/// unflushed entries leaves a chain that still reaches it (an anchor of the committed head would make a
/// healthy log look cut).
#[test]
fn the_anchored_audit_head_is_the_durable_one() {
    use concentrator_ledger::anchor::{verify_anchored, AuditAnchor};
    use concentrator_ledger::audit::AuditHead;
    let (mut l, store, _pki) = ledger_with(config(), 1_000);
    let flushed = l.audit_head();
    assert_eq!(flushed, AuditHead::load(&store).unwrap());
    // A charge checkpoint is committed, not flushed.
    l.on_register("M1", "SN-M1", 11_000, local(0, 13, 0))
        .unwrap();
    let committed = AuditHead::load(&store).unwrap();
    assert!(l.unflushed() && committed.next_seq > flushed.next_seq);
    assert_eq!(l.audit_head(), flushed);
    let crashed = store.crash();
    verify_anchored(&crashed, &AuditAnchor::of(&flushed)).unwrap();
    assert!(verify_anchored(&crashed, &AuditAnchor::of(&committed)).is_err());

    let (mut l, _store, _pki) = ledger_with(config(), 1_000);
    l.on_register("M1", "SN-M1", 11_000, local(0, 13, 0))
        .unwrap();
    l.flush().unwrap();
    assert!(!l.unflushed());
    assert!(l.audit_head().next_seq > flushed.next_seq);
}
