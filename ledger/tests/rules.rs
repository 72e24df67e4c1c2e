//! Worked numbers for the charging, emergency, friendly-credit, debt, relay and tenancy rules.

mod common;

use common::*;
use concentrator_ledger::audit::RebaselineReason;
use concentrator_ledger::check::check_store;
use concentrator_ledger::config::DebtRecovery;
use concentrator_ledger::tenancy::{HeadEndView, ReconcileAction};
use concentrator_ledger::{
    AccountState, LedgerEvent, NewTenant, Output, Reading, ReconnectMode, RelayAction, RelayState,
    RelayTarget,
};

fn events(outputs: &[Output]) -> Vec<LedgerEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            Output::Relay(_) => None,
        })
        .collect()
}

#[test]
fn charges_carry_their_rounding_and_warn_at_each_level() {
    // Flat 25 c/kWh from 6.00 with warnings below 5.00 and 2.00.
    let (mut l, store, _) = ledger_with(config(), 600);
    // 333 Wh → 8.325 cents → 8 (carry +0.325); 333 Wh again → 8.65 → 9 (carry −0.35); 3 × 333 Wh = 24.975 c.
    l.on_register("M1", "SN-M1", 10_333, local(0, 12, 15))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 592);
    l.on_register("M1", "SN-M1", 10_666, local(0, 12, 30))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 583);
    l.on_register("M1", "SN-M1", 10_999, local(0, 12, 45))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 575); // 25 cents for 24.975 exact
    assert_eq!(l.account("M1").unwrap().carry_micro, -25_000);
    l.drain_outputs();
    // 1.5 kWh more → −37.5 → 37 (half to even, with the carry −0.025 → 37.475 → 37). Balance 5.38.
    l.on_register("M1", "SN-M1", 12_499, local(0, 13, 0))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 538);
    // 2 kWh → 50 c → 4.88: below 5.00 (one warning).
    l.on_register("M1", "SN-M1", 14_499, local(0, 13, 15))
        .unwrap();
    let ev = events(&l.drain_outputs());
    assert!(
        matches!(
            ev.as_slice(),
            [LedgerEvent::LowCredit {
                level_minor: 500,
                balance_minor: 488,
                ..
            }]
        ),
        "{ev:?}"
    );
    // 12 kWh at once (within 25 kW × 15 min + 1 kWh? no: a 12 kWh jump in 15 min is implausible) …
    l.on_register("M1", "SN-M1", 26_499, local(0, 13, 30))
        .unwrap();
    assert!(matches!(
        events(&l.drain_outputs()).as_slice(),
        [LedgerEvent::RegisterAnomaly { .. }]
    ));
    // … but over 2 hours it is fine: 12 kWh → 3.00 → 1.88: below 2.00.
    l.on_register("M1", "SN-M1", 26_499, local(0, 15, 30))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 188);
    let ev = events(&l.drain_outputs());
    assert!(
        ev.iter().any(|e| matches!(
            e,
            LedgerEvent::LowCredit {
                level_minor: 200,
                ..
            }
        )),
        "{ev:?}"
    );
    check_store(&store).unwrap();
}

#[test]
fn register_backwards_jump_and_meter_exchange_are_events_never_negative_charges() {
    let (mut l, store, _) = ledger_with(config(), 10_000);
    l.on_register("M1", "SN-M1", 11_000, local(0, 12, 15))
        .unwrap(); // 1 kWh = 25 c
    assert_eq!(l.account("M1").unwrap().balance_minor(), 9_975);
    // A misread below the checkpoint, then the register continues: the misread charges nothing, the
    // next good reading charges only from the held checkpoint.
    l.on_register("M1", "SN-M1", 500, local(0, 12, 30)).unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 9_975);
    l.on_register("M1", "SN-M1", 11_400, local(0, 12, 45))
        .unwrap(); // 0.4 kWh = 10 c
    assert_eq!(l.account("M1").unwrap().balance_minor(), 9_965);
    // A register reset: three readings in a row below the checkpoint → new baseline, no charge.
    for (i, wh) in [3u64, 5, 8].iter().enumerate() {
        l.on_register("M1", "SN-M1", *wh, local(0, 13, i as u64 * 5))
            .unwrap();
    }
    let ev = events(&l.drain_outputs());
    assert!(
        ev.iter().any(|e| matches!(
            e,
            LedgerEvent::Rebaselined {
                reason: RebaselineReason::Backwards,
                from_wh: 11_400,
                to_wh: 8,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(l.account("M1").unwrap().register.wh, 8);
    assert_eq!(l.account("M1").unwrap().balance_minor(), 9_965);
    // A new meter (new serial) with its own register: new baseline at once.
    l.on_register("M1", "SN-NEW", 77_000, local(0, 14, 0))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().register.wh, 77_000);
    assert_eq!(l.account("M1").unwrap().balance_minor(), 9_965);
    l.on_register("M1", "SN-NEW", 78_000, local(0, 14, 15))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 9_940);
    check_store(&store).unwrap();
}

#[test]
fn emergency_credit_is_offered_near_zero_and_repaid_by_the_next_top_up() {
    // 5.00 emergency credit, offered at or below 1.00. Opening 1.50 at 12:00 on a Monday (not friendly).
    let (mut l, store, pki) = ledger_with(config(), 150);
    assert!(l.select_emergency_credit("M1", local(0, 12, 1)).is_err()); // 1.50 > 1.00
    l.on_register("M1", "SN-M1", 11_000, local(0, 12, 15))
        .unwrap(); // −0.25 → 1.25
    l.on_register("M1", "SN-M1", 11_400, local(0, 12, 30))
        .unwrap(); // −0.10 → 1.15
    l.on_register("M1", "SN-M1", 12_000, local(0, 12, 45))
        .unwrap(); // −0.15 → 1.00
    l.select_emergency_credit("M1", local(0, 12, 46)).unwrap();
    assert!(l.select_emergency_credit("M1", local(0, 12, 47)).is_err()); // already selected
                                                                         // 8 kWh (2.00) → balance −1.00, in emergency credit with 4.00 left: still on.
    l.on_register("M1", "SN-M1", 20_000, local(0, 13, 45))
        .unwrap();
    let a = l.account("M1").unwrap();
    assert_eq!(
        (a.balance_minor(), a.state(500)),
        (-100, AccountState::InEmergencyCredit)
    );
    // 16 kWh (4.00) more → −5.00: emergency credit used up, outside friendly hours → cut.
    l.drain_outputs();
    l.on_register("M1", "SN-M1", 36_000, local(0, 15, 45))
        .unwrap();
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    assert_eq!(
        l.account("M1").unwrap().state(500),
        AccountState::Disconnected
    );
    // A 5.50 top-up repays the 5.00 used: balance 0.50, not above the 1.00 reconnect threshold.
    l.apply_token(&token(&pki, "M1", 1, 550), local(0, 16, 0))
        .unwrap();
    assert!(relay_actions(&l.drain_outputs()).is_empty());
    assert!(!l.account("M1").unwrap().emergency_selected);
    // Another 1.00 → 1.50 > 1.00: reconnect.
    l.apply_token(&token(&pki, "M1", 2, 100), local(0, 16, 5))
        .unwrap();
    assert_eq!(
        relay_actions(&l.drain_outputs()),
        vec![RelayAction::Reconnect]
    );
    assert_eq!(l.account("M1").unwrap().state(500), AccountState::InCredit);
    check_store(&store).unwrap();
}

#[test]
fn automatic_emergency_credit_is_selected_when_credit_runs_out() {
    let mut c = config();
    c.emergency.auto_select = true;
    let (mut l, _, _) = ledger_with(c, 100);
    l.on_register("M1", "SN-M1", 14_000, local(0, 13, 0))
        .unwrap(); // 1.00 → 0.00
    let a = l.account("M1").unwrap();
    assert!(a.emergency_selected);
    assert_eq!(a.state(500), AccountState::InEmergencyCredit);
    assert!(relay_actions(&l.drain_outputs()).is_empty());
}

#[test]
fn friendly_hours_keep_the_supply_on_and_the_cut_comes_when_they_end() {
    // Friendly 18:00–08:00, weekends and holidays. Credit runs out at 19:00 on a Monday.
    let (mut l, store, _) = ledger_with(config(), 100);
    l.on_register("M1", "SN-M1", 14_000, local(0, 19, 0))
        .unwrap(); // −1.00 → 0.00
    let out = l.drain_outputs();
    assert!(relay_actions(&out).is_empty());
    assert!(events(&out)
        .iter()
        .any(|e| matches!(e, LedgerEvent::FriendlyCredit { .. })));
    // The night's 10 kWh (2.50) becomes debt: balance −2.50, supply still on.
    l.on_register("M1", "SN-M1", 24_000, local(1, 7, 0))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), -250);
    assert_eq!(l.account("M1").unwrap().total_debt_minor(), 250);
    l.tick(local(1, 7, 59)).unwrap();
    assert!(relay_actions(&l.drain_outputs()).is_empty());
    // 08:00 Tuesday: friendly credit ends → cut.
    l.tick(local(1, 8, 0)).unwrap();
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    check_store(&store).unwrap();
}

#[test]
fn weekends_and_protected_dwellings_are_never_cut() {
    // Saturday noon: weekend friendly credit.
    let (mut l, _, _) = ledger_with(config(), 100);
    l.on_register("M1", "SN-M1", 18_000, local(5, 12, 0))
        .unwrap();
    l.tick(local(5, 12, 1)).unwrap();
    assert!(relay_actions(&l.drain_outputs()).is_empty());
    // Monday noon: cut, unless protected.
    l.set_protected("M1", true, local(7, 12, 0)).unwrap();
    l.tick(local(7, 12, 0)).unwrap();
    assert!(relay_actions(&l.drain_outputs()).is_empty());
    l.set_protected("M1", false, local(7, 12, 1)).unwrap();
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
}

#[test]
fn relay_commands_are_read_back_retried_and_raise_an_alarm() {
    let (mut l, store, pki) = ledger_with(config(), 100);
    l.on_register("M1", "SN-M1", 14_000, local(0, 12, 30))
        .unwrap();
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Cut]);
    // The meter still reads closed: attempt 2, then 3, then an alarm.
    l.relay_observed("M1", RelayState::Closed, local(0, 12, 31))
        .unwrap();
    let out = l.drain_outputs();
    assert!(
        matches!(out.as_slice(), [Output::Relay(c)] if c.attempt == 2 && c.action == RelayAction::Cut)
    );
    // No read-back within 30 s: the tick sends attempt 3.
    l.tick(local(0, 12, 32)).unwrap();
    assert!(l
        .drain_outputs()
        .iter()
        .any(|o| matches!(o, Output::Relay(c) if c.attempt == 3)));
    l.relay_observed("M1", RelayState::Closed, local(0, 12, 33))
        .unwrap();
    let ev = events(&l.drain_outputs());
    assert!(
        matches!(
            ev.as_slice(),
            [LedgerEvent::RelayAlarm {
                attempts: 3,
                action: RelayAction::Cut,
                ..
            }]
        ),
        "{ev:?}"
    );
    // Later it obeys; a routine read shows open: nothing to do.
    l.relay_observed("M1", RelayState::Open, local(0, 13, 0))
        .unwrap();
    assert!(l.drain_outputs().is_empty());
    // A bypass (closed while it should be open) is a mismatch and the cut is sent again.
    l.relay_observed("M1", RelayState::Closed, local(0, 13, 15))
        .unwrap();
    let out = l.drain_outputs();
    assert!(events(&out).iter().any(|e| matches!(
        e,
        LedgerEvent::RelayMismatch {
            target: RelayTarget::Disconnected,
            ..
        }
    )));
    assert_eq!(relay_actions(&out), vec![RelayAction::Cut]);
    l.relay_observed("M1", RelayState::Open, local(0, 13, 16))
        .unwrap();
    // Top-up: reconnect, confirmed.
    l.apply_token(&token(&pki, "M1", 1, 1_000), local(0, 14, 0))
        .unwrap();
    assert_eq!(
        relay_actions(&l.drain_outputs()),
        vec![RelayAction::Reconnect]
    );
    l.relay_observed("M1", RelayState::Closed, local(0, 14, 1))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().relay, RelayTarget::Connected);
    check_store(&store).unwrap();
}

#[test]
fn meters_of_an_arming_model_are_armed_and_the_button_reconnects() {
    let mut c = config();
    c.relay
        .reconnect_by_model
        .insert("dds238".into(), ReconnectMode::Arm);
    let pki = pki();
    let mut l = open(concentrator_ledger::MemStore::new(), c, &pki);
    let mut spec = account("M1", 100, 10_000);
    spec.model = Some("dds238".into());
    l.open_account(spec, local(0, 12, 0)).unwrap();
    l.on_register("M1", "SN-M1", 14_000, local(0, 12, 30))
        .unwrap();
    l.relay_observed("M1", RelayState::Open, local(0, 12, 31))
        .unwrap();
    l.drain_outputs();
    l.apply_token(&token(&pki, "M1", 1, 1_000), local(0, 13, 0))
        .unwrap();
    assert_eq!(relay_actions(&l.drain_outputs()), vec![RelayAction::Arm]);
    assert_eq!(
        l.account("M1").unwrap().state(500),
        AccountState::ArmedForReconnect
    );
    l.relay_observed("M1", RelayState::Armed, local(0, 13, 1))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().relay, RelayTarget::Armed);
    // The customer presses the button.
    l.relay_observed("M1", RelayState::Closed, local(0, 13, 30))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().state(500), AccountState::InCredit);
}

#[test]
fn standing_charge_and_fixed_daily_debt_recovery_worked_numbers() {
    // 0.30 a day standing charge; 0.50 a day of a 1.20 debt. Opened Monday 12:00 with 10.00.
    let mut c = config();
    c.standing_charge_minor_per_day = 30;
    c.debt_recovery = DebtRecovery::FixedPerDay { amount_minor: 50 };
    let pki = pki();
    let store = concentrator_ledger::MemStore::new();
    let mut l = open(store.clone(), c, &pki);
    let mut spec = account("M1", 1_000, 0);
    spec.opening_debt_minor = 120;
    l.open_account(spec, local(0, 12, 0)).unwrap();
    l.tick(local(0, 12, 1)).unwrap(); // Monday: 0.30 + 0.50
    assert_eq!(l.account("M1").unwrap().balance_minor(), 920);
    l.tick(local(0, 23, 0)).unwrap(); // same day: nothing more
    assert_eq!(l.account("M1").unwrap().balance_minor(), 920);
    l.tick(local(3, 0, 1)).unwrap(); // Tue, Wed, Thu: 3 × 0.30 + 0.50 + the last 0.20 of debt
    let a = l.account("M1").unwrap();
    assert_eq!(a.balance_minor(), 920 - 90 - 70);
    assert_eq!(
        (a.debt_minor, a.standing_minor, a.recovered_minor),
        (0, 120, 120)
    );
    check_store(&store).unwrap();
}

#[test]
fn change_of_tenancy_settles_and_opens_from_the_same_baseline() {
    let (mut l, store, pki) = ledger_with(config(), 0);
    l.apply_token(&token(&pki, "M1", 7, 2_000), local(0, 12, 10))
        .unwrap();
    let final_reading = Reading {
        meter: "M1".into(),
        meter_serial: "SN-M1".into(),
        register_wh: 14_000, // 4 kWh = 1.00
        at: local(0, 18, 0),
    };
    let tenant = NewTenant {
        dwelling: "D-M1".into(),
        protected: false,
        opening_balance_minor: 500,
        opening_debt_minor: 0,
    };
    let s = l
        .change_tenancy(&final_reading, tenant, local(0, 18, 0))
        .unwrap();
    assert_eq!(s.settlement.remaining_credit_minor, 1_900);
    assert_eq!(s.settlement.debt_minor, 0);
    assert_eq!(s.settlement.last_serial, Some(7));
    assert_eq!(s.settlement.final_register_wh, 14_000);
    let a = l.account("M1").unwrap();
    assert_eq!(
        (a.account_no, a.balance_minor(), a.register.wh),
        (2, 500, 14_000)
    );
    // Serials keep growing across tenancies.
    let stale = token(&pki, "M1", 7, 100);
    assert!(l.apply_token(&stale, local(0, 18, 5)).is_err());
    l.apply_token(&token(&pki, "M1", 8, 100), local(0, 18, 5))
        .unwrap();
    // The new tenant pays only from the baseline on.
    l.on_register("M1", "SN-M1", 15_000, local(0, 18, 20))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 575);
    // Reconciliation covers both tenancies.
    let rec = l.reconciliation().unwrap();
    assert_eq!(
        (
            rec[0].highest_serial,
            rec[0].applied_count,
            rec[0].applied_sum_minor
        ),
        (Some(8), 2, 2_100)
    );
    assert_eq!(
        l.reconcile_with("M1", HeadEndView { highest_issued: 9 })
            .unwrap(),
        ReconcileAction::RequestTokensAfter(8)
    );
    assert_eq!(
        l.reconcile_with("M1", HeadEndView { highest_issued: 8 })
            .unwrap(),
        ReconcileAction::InStep
    );
    let kinds: Vec<_> = l
        .outbox()
        .list(0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            concentrator_ledger::OutboxKind::Receipt,
            concentrator_ledger::OutboxKind::Settlement,
            concentrator_ledger::OutboxKind::Receipt
        ]
    );
    l.queue_reconciliation().unwrap();
    check_store(&store).unwrap();
}
