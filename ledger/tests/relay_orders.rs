//! The ledger as the one relay authority (issue #14, defect 5): orders from the head-end or an installer
//! go through it, so a top-up never fights a held cut and a close never leaves a meter on without
//! credit; and a restart does not count re-asserted commands as failed attempts (defect 7).

mod common;

use common::*;
use concentrator_ledger::check::check_store;
use concentrator_ledger::{
    LedgerEvent, OrderOutcome, Output, RelayAction, RelayOrder, RelayState, RelayTarget,
};

#[test]
fn an_open_order_holds_the_supply_off_until_a_close_order_and_a_top_up_does_not_reconnect() {
    let (mut l, store, pki) = ledger_with(config(), 600);
    let t = local(0, 12, 0);
    assert_eq!(
        l.order_relay("M1", RelayOrder::Open, "head-end", t)
            .unwrap(),
        OrderOutcome::Commanded(RelayAction::Cut)
    );
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    l.relay_observed("M1", RelayState::Open, t + 1).unwrap();
    let a = l.account("M1").unwrap();
    assert_eq!(a.relay, RelayTarget::Disconnected);
    assert_eq!(a.hold.as_ref().map(|h| h.by.as_str()), Some("head-end"));
    // A top-up adds credit but the hold keeps the supply off.
    l.apply_token(&token(&pki, "M1", 1, 1_000), t + 60).unwrap();
    assert!(relay_actions(&l.drain_outputs()).is_empty());
    assert_eq!(l.account("M1").unwrap().relay, RelayTarget::Disconnected);
    // The close order releases it, and with credit the supply comes back.
    assert_eq!(
        l.order_relay("M1", RelayOrder::Close, "head-end", t + 120)
            .unwrap(),
        OrderOutcome::Commanded(RelayAction::Reconnect)
    );
    assert_eq!(
        relay_actions(&l.drain_outputs()),
        vec![RelayAction::Reconnect]
    );
    l.relay_observed("M1", RelayState::Closed, t + 121).unwrap();
    let a = l.account("M1").unwrap();
    assert_eq!((a.relay, a.hold.is_none()), (RelayTarget::Connected, true));
    check_store(&store).unwrap();
}

#[test]
fn a_close_order_without_credit_is_refused_and_the_meter_stays_cut() {
    // 1.00 of credit, then 14 kWh at the example tariff: credit runs out and the supply is cut.
    let (mut l, store, _) = ledger_with(config(), 100);
    l.on_register("M1", "SN-M1", 14_000, local(0, 12, 30))
        .unwrap();
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    l.relay_observed("M1", RelayState::Open, local(0, 12, 31))
        .unwrap();
    let out = l
        .order_relay("M1", RelayOrder::Close, "head-end", local(0, 12, 40))
        .unwrap();
    match out {
        OrderOutcome::Refused(why) => {
            assert!(why.contains("no credit") && why.contains("EUR"), "{why}")
        }
        other => panic!("a close without credit was carried out: {other:?}"),
    }
    assert!(relay_actions(&l.drain_outputs()).is_empty());
    assert_eq!(l.account("M1").unwrap().relay, RelayTarget::Disconnected);
    check_store(&store).unwrap();
}

#[test]
fn relay_orders_are_audited_with_who_gave_them() {
    let (mut l, store, _) = ledger_with(config(), 600);
    l.order_relay("M1", RelayOrder::Open, "installer alice", local(0, 12, 0))
        .unwrap();
    let mut entries = Vec::new();
    concentrator_ledger::audit::walk(&store, |e| {
        entries.push(e.clone());
        Ok(())
    })
    .unwrap();
    assert!(
        entries.iter().any(|e| matches!(
            &e.event,
            concentrator_ledger::audit::AuditEvent::RelayOrdered { by, held: true, action: RelayAction::Cut } if by == "installer alice"
        )),
        "{entries:?}"
    );
    assert!(l
        .order_relay("M9", RelayOrder::Open, "head-end", local(0, 12, 1))
        .is_err());
}

#[test]
fn a_restart_re_asserts_a_cut_without_counting_it_as_a_failed_attempt() {
    let (mut l, store, pki) = ledger_with(config(), 100);
    l.on_register("M1", "SN-M1", 14_000, local(0, 12, 30))
        .unwrap();
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    l.relay_observed("M1", RelayState::Open, local(0, 12, 31))
        .unwrap();
    l.drain_outputs();
    drop(l);
    let _ = &store;
    // The daemon starts again an hour later: the cut is re-asserted once.
    let mut l = open(store.clone(), config(), &pki);
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    let start = local(0, 13, 31);
    // The first ticks after the start (the buses are still opening) neither resend nor alarm.
    for s in 0..5 {
        l.tick(start + s).unwrap();
        let out = l.drain_outputs();
        assert!(
            !out.iter().any(|o| matches!(
                o,
                Output::Relay(_) | Output::Event(LedgerEvent::RelayAlarm { .. })
            )),
            "second {s} after the start: {out:?}"
        );
    }
    // Its read-back confirms it: nothing more.
    l.relay_observed("M1", RelayState::Open, start + 6).unwrap();
    l.tick(start + 120).unwrap();
    assert!(l.drain_outputs().is_empty());
}
