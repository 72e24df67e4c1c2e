//! A store that fails writes and flushes: the engine reports the error and acknowledges nothing it did
//! not persist.

mod common;

use common::*;
use concentrator_ledger::check::check_store;
use concentrator_ledger::{FaultPlan, FaultyStore, LedgerError, MemStore, StoreError, TopUpError};

fn faulty_ledger() -> (
    concentrator_ledger::Ledger<FaultyStore<MemStore>>,
    FaultyStore<MemStore>,
    concentrator_ledger::testkit::TestPki,
) {
    let pki = pki();
    let store = FaultyStore::new(MemStore::new());
    let mut l = open(store.clone(), config(), &pki);
    l.open_account(account("M1", 0, 10_000), local(0, 12, 0))
        .unwrap();
    (l, store, pki)
}

#[test]
fn a_failed_commit_applies_nothing_and_acknowledges_nothing() {
    let (mut l, store, pki) = faulty_ledger();
    let before = store.inner().snapshot();
    store.set_plan(FaultPlan {
        fail_commits: true,
        ..FaultPlan::default()
    });
    let t = token(&pki, "M1", 1, 1_000);
    let e = l.apply_token(&t, local(0, 12, 5)).unwrap_err();
    assert!(
        matches!(
            e,
            TopUpError::Ledger(LedgerError::Store(StoreError::Commit { .. }))
        ),
        "{e}"
    );
    assert_eq!(store.inner().snapshot(), before);
    assert_eq!(l.account("M1").unwrap().balance_minor(), 0);
    assert!(l.outbox().list(0, 10).unwrap().is_empty());
    // A reading fails the same way and leaves the checkpoint where it was.
    assert!(l
        .on_register("M1", "SN-M1", 11_000, local(0, 12, 15))
        .is_err());
    assert_eq!(l.account("M1").unwrap().register.wh, 10_000);
    assert!(l.drain_outputs().is_empty());
    // Healed: the same token applies.
    store.set_plan(FaultPlan::default());
    assert_eq!(
        l.apply_token(&t, local(0, 12, 20))
            .unwrap()
            .receipt
            .balance_after_minor,
        1_000
    );
    check_store(store.inner()).unwrap();
}

#[test]
fn a_failed_flush_is_not_acknowledged_and_a_crash_then_loses_only_the_unacknowledged() {
    let (mut l, store, pki) = faulty_ledger();
    let t1 = token(&pki, "M1", 1, 1_000);
    l.apply_token(&t1, local(0, 12, 5)).unwrap();
    store.set_plan(FaultPlan {
        fail_flushes: true,
        ..FaultPlan::default()
    });
    let t2 = token(&pki, "M1", 2, 500);
    let e = l.apply_token(&t2, local(0, 12, 6)).unwrap_err();
    assert!(
        matches!(
            e,
            TopUpError::Ledger(LedgerError::Store(StoreError::Flush { .. }))
        ),
        "{e}"
    );
    // Resending while the disk still fails: no receipt is handed out for what is not durable.
    let e = l.apply_token(&t2, local(0, 12, 7)).unwrap_err();
    assert!(
        matches!(
            e,
            TopUpError::Ledger(LedgerError::Store(StoreError::Flush { .. }))
        ),
        "{e}"
    );
    // Power cut now: the acknowledged token survives, the unacknowledged one is gone.
    let after_crash = store.inner().crash();
    let reopened = open(after_crash.clone(), config(), &pki);
    assert_eq!(reopened.account("M1").unwrap().balance_minor(), 1_000);
    assert_eq!(reopened.account("M1").unwrap().last_serial, Some(1));
    check_store(&after_crash).unwrap();
    // Or, without a crash, the disk recovers: the resent token gets its (original) receipt.
    store.set_plan(FaultPlan::default());
    match l.apply_token(&t2, local(0, 12, 8)) {
        Err(TopUpError::Replayed { original, .. }) => {
            assert_eq!(original.receipt.balance_after_minor, 1_500)
        }
        other => panic!("expected the original receipt, got {other:?}"),
    }
    check_store(store.inner()).unwrap();
}

#[test]
fn a_group_commit_that_fails_to_flush_fails_every_token_in_it() {
    let (mut l, store, pki) = faulty_ledger();
    store.set_plan(FaultPlan {
        fail_flushes: true,
        ..FaultPlan::default()
    });
    let a = token(&pki, "M1", 1, 100);
    let b = token(&pki, "M1", 2, 100);
    let results = l.apply_tokens(&[&a, &b], local(0, 12, 5));
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(TopUpError::Ledger(_)))));
}

/// Issue #14, defect 7: the same token twice in one group (two inbox files with one token) got
/// "replayed" with the receipt staged for the first, so when the commit failed the inbox wrote a receipt
/// file for a token that was never stored. Both copies now fail with the store's error.
#[test]
fn a_copy_of_a_token_in_a_failed_group_commit_gets_no_receipt() {
    let (mut l, store, pki) = faulty_ledger();
    store.set_plan(FaultPlan {
        fail_flushes: true,
        ..FaultPlan::default()
    });
    let a = token(&pki, "M1", 1, 100);
    let results = l.apply_tokens(&[&a, &a], local(0, 12, 5));
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(TopUpError::Ledger(_)))),
        "{results:?}"
    );
}

#[test]
fn commits_failing_part_way_leave_a_consistent_store() {
    let (mut l, store, pki) = faulty_ledger();
    store.set_plan(FaultPlan {
        commits_before_failure: Some(3),
        ..FaultPlan::default()
    });
    let mut acked = 0;
    for i in 1..=6u64 {
        let _ = l.on_register("M1", "SN-M1", 10_000 + i * 100, local(0, 12, i));
        if l.apply_token(&token(&pki, "M1", i, 10), local(0, 12, i))
            .is_ok()
        {
            acked += 1;
        }
    }
    let reopened = open(store.inner().crash(), config(), &pki);
    assert_eq!(reopened.account("M1").unwrap().tokens_applied, acked);
    check_store(store.inner()).unwrap();
}
