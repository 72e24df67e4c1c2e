//! Tariff changes from the head-end: the interval that straddles the change is split at it, a pending
//! change survives a restart, a resend changes nothing, and mistakes are refused with the reason.

mod common;

use common::*;
use concentrator_ledger::audit::{self, AuditEvent};
use concentrator_ledger::check::check_store;
use concentrator_ledger::{MemStore, TariffChange, TariffOutcome};

/// A flat tariff at `cents` per kWh from `from`, with a standing charge.
fn flat(id: u32, from: u64, cents: u64, standing: u64) -> TariffChange {
    TariffChange {
        tariff_id: id,
        effective_from: from,
        currency: "EUR".into(),
        standing_charge_minor_per_day: standing,
        rates: vec![(1, cents * 1_000_000)],
        switches: vec![(0xff, 0, 1)],
        special_days: vec![],
        utc_offset_min: 60,
    }
}

fn scheduled(out: Result<TariffOutcome, concentrator_ledger::TariffRefused>) -> String {
    match out {
        Ok(TariffOutcome::Scheduled(words)) => words,
        other => panic!("expected the tariff to be scheduled, got {other:?}"),
    }
}

fn audit_events(store: &MemStore) -> Vec<AuditEvent> {
    let mut v = Vec::new();
    audit::walk(store, |e| {
        v.push(e.event.clone());
        Ok(())
    })
    .unwrap();
    v
}

#[test]
fn the_interval_that_straddles_the_change_is_charged_once_at_each_price() {
    // Flat 25 c/kWh configured; tariff 7 at 40 c/kWh from 13:00.
    let (mut l, store, _) = ledger_with(config(), 10_000);
    let words = scheduled(
        l.schedule_tariff(&flat(7, local(0, 13, 0), 40, 0), local(0, 12, 10))
            .unwrap(),
    );
    assert!(
        words.starts_with(
            "tariff 7 in force from 2024-06-03 13:00 local time (UTC+01:00), replacing the configured tariff"
        ),
        "{words}"
    );
    // 500 Wh 12:00–12:30 at 25 c = 12.5 c.
    l.on_register("M1", "SN-M1", 10_500, local(0, 12, 30))
        .unwrap();
    // 1 000 Wh 12:30–13:30: 500 Wh before 13:00 at 25 c + 500 Wh after at 40 c = 12.5 + 20 = 32.5 c.
    l.on_register("M1", "SN-M1", 11_500, local(0, 13, 30))
        .unwrap();
    // 1 000 Wh 13:30–14:00, all at 40 c.
    l.on_register("M1", "SN-M1", 12_500, local(0, 14, 0))
        .unwrap();
    assert_eq!(
        l.account("M1").unwrap().balance_minor(),
        10_000 - 13 - 32 - 40
    );
    let charges: Vec<i64> = audit_events(&store)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::Charge { micro, .. } => Some(micro),
            _ => None,
        })
        .collect();
    assert_eq!(charges, vec![12_500_000, 32_500_000, 40_000_000]);
    assert_eq!(l.tariff_id_at(local(0, 12, 59)), 0);
    assert_eq!(l.tariff_id_at(local(0, 13, 0)), 7);
    check_store(&store).unwrap();
}

#[test]
fn a_pending_tariff_survives_a_crash_and_a_resend_is_already_done() {
    let (mut l, store, pki) = ledger_with(config(), 10_000);
    let change = flat(8, local(1, 0, 0), 30, 0);
    scheduled(l.schedule_tariff(&change, local(0, 12, 5)).unwrap());
    drop(l);
    // The schedule was flushed before the answer: a crash right after keeps it.
    let mut l = open(store.crash(), config(), &pki);
    assert_eq!(l.tariff_schedule().len(), 1);
    // The same command again (the head-end did not get the answer): already done, nothing written.
    let entries = audit_events(&store).len();
    match l.schedule_tariff(&change, local(0, 12, 6)).unwrap() {
        Ok(TariffOutcome::AlreadyScheduled(words)) => {
            assert!(words.contains("2024-06-04 00:00"), "{words}")
        }
        other => panic!("expected already done, got {other:?}"),
    }
    assert_eq!(audit_events(&store).len(), entries);
    // Same id, other contents: refused.
    let refused = l
        .schedule_tariff(&flat(8, local(1, 0, 0), 31, 0), local(0, 12, 7))
        .unwrap()
        .unwrap_err();
    assert!(refused.reason.contains("new id"), "{refused}");
    // Across midnight 23:00–01:00, 2 000 Wh: 1 000 at 25 c + 1 000 at 30 c = 55 c, once.
    // (1 Wh by 23:00 moves the checkpoint there.)
    l.on_register("M1", "SN-M1", 10_001, local(0, 23, 0))
        .unwrap();
    l.on_register("M1", "SN-M1", 12_001, local(1, 1, 0))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 10_000 - 55);
    let scheduled_entries = audit_events(&store)
        .into_iter()
        .filter(|e| matches!(e, AuditEvent::TariffScheduled { tariff_id: 8, .. }))
        .count();
    assert_eq!(scheduled_entries, 1);
    check_store(&store).unwrap();
}

#[test]
fn time_of_use_calendar_weekdays_wrap_at_midnight_and_standing_charge_follows() {
    // The wire example: rate 1 = 28 c, rate 2 = 19 c; Monday–Friday from 07:00 rate 1, every day
    // (and special days) from 22:00 rate 2, so Saturday and Sunday are at 19 c all day.
    let (mut l, store, _) = ledger_with(config(), 10_000);
    l.tick(local(0, 12, 1)).unwrap();
    // 1 Wh 12:00–12:01 at the configured 25 c: the checkpoint is now 12:01.
    l.on_register("M1", "SN-M1", 10_001, local(0, 12, 1))
        .unwrap();
    let change = TariffChange {
        tariff_id: 4,
        effective_from: local(0, 12, 1),
        currency: "EUR".into(),
        standing_charge_minor_per_day: 25,
        rates: vec![(1, 28_000_000), (2, 19_000_000)],
        switches: vec![(0x1f, 420, 1), (0xff, 1_320, 2)],
        special_days: vec![20_240_605],
        utc_offset_min: 60,
    };
    scheduled(l.schedule_tariff(&change, local(0, 12, 1)).unwrap());
    // Monday 12:00 → Tuesday 08:00, 20 000 Wh over 20 h: 10 h at 28 c (12–22, 7–8 … ) —
    // 12:00–22:00 10 h at 28, 22:00–07:00 9 h at 19, 07:00–08:00 1 h at 28: 11 000 × 28 + 9 000 × 19.
    l.on_register("M1", "SN-M1", 30_001, local(1, 8, 0))
        .unwrap();
    let exact = 11_000 * 28 + 9_000 * 19; // thousandths of a cent
    assert_eq!(exact, 479_000);
    // Wednesday 2024-06-05 is a special day: 19 c from 00:00 to 24:00 (its only switch, 22:00, wraps).
    // (1 Wh over Tuesday 08:00 → Wednesday 12:00 moves the checkpoint, priced 0.019 c.)
    l.on_register("M1", "SN-M1", 30_002, local(2, 12, 0))
        .unwrap();
    l.on_register("M1", "SN-M1", 31_002, local(2, 13, 0))
        .unwrap();
    // Standing charge at 25 a day for Tuesday and Wednesday (Monday was charged at 0 before).
    // Energy: 0.025 + 479 + 0.019 + 19 = 498.044 c, charged as 498.
    l.tick(local(2, 13, 1)).unwrap();
    assert_eq!(
        l.account("M1").unwrap().balance_minor(),
        10_000 - 498 - 2 * 25
    );
    check_store(&store).unwrap();
}

#[test]
fn mistakes_are_refused_with_the_reason_and_nothing_is_stored() {
    let (mut l, store, _) = ledger_with(config(), 10_000);
    let now = local(0, 12, 30);
    let mut wrong_currency = flat(2, local(1, 0, 0), 30, 0);
    wrong_currency.currency = "USD".into();
    let mut unknown_rate = flat(2, local(1, 0, 0), 30, 0);
    unknown_rate.switches.push((0x20, 600, 9));
    let mut some_weekdays = flat(2, local(1, 0, 0), 30, 0);
    some_weekdays.switches.push((0x01, 600, 1));
    let mut too_fine = flat(2, local(1, 0, 0), 30, 0);
    too_fine.rates[0].1 += 1;
    let mut no_sunday = flat(2, local(1, 0, 0), 30, 0);
    no_sunday.switches = vec![(0x3f, 0, 1)];
    let mut other_offset = flat(2, local(1, 0, 0), 30, 0);
    other_offset.utc_offset_min = 120;
    let late = flat(2, now - 2 * 3_600, 30, 0);
    for (change, words) in [
        (wrong_currency, "in EUR"),
        (unknown_rate, "rate 9"),
        (some_weekdays, "Monday to Friday alike"),
        (too_fine, "multiple of 1000"),
        (no_sunday, "Sunday without a rate"),
        (other_offset, "UTC+02:00"),
        (late, "minutes past"),
    ] {
        let refused = l.schedule_tariff(&change, now).unwrap().unwrap_err();
        assert!(refused.reason.contains(words), "{words}: {refused}");
    }
    assert!(l.tariff_schedule().is_empty());
    // A little late (within the tolerance): in force from its arrival, never retroactively.
    let words = scheduled(l.schedule_tariff(&flat(3, now - 600, 30, 0), now).unwrap());
    assert!(words.contains("received later"), "{words}");
    assert_eq!(l.tariff_id_at(now - 1), 0);
    assert_eq!(l.tariff_id_at(now), 3);
    check_store(&store).unwrap();
}

#[test]
fn tariffs_follow_one_another_and_a_correction_takes_a_pending_ones_place() {
    let (mut l, store, _) = ledger_with(config(), 10_000);
    let now = local(0, 12, 5);
    scheduled(
        l.schedule_tariff(&flat(7, local(0, 14, 0), 40, 0), now)
            .unwrap(),
    );
    scheduled(
        l.schedule_tariff(&flat(8, local(0, 16, 0), 10, 0), now)
            .unwrap(),
    );
    // Tariff 9 for 14:00 corrects 7 (never in force); the answer says so and 8 still follows.
    let words = scheduled(
        l.schedule_tariff(&flat(9, local(0, 14, 0), 30, 0), now)
            .unwrap(),
    );
    assert!(words.contains("takes the place of tariff 7"), "{words}");
    assert_eq!(
        l.tariff_schedule()
            .iter()
            .map(|e| e.tariff_id)
            .collect::<Vec<_>>(),
        vec![9, 8]
    );
    // 12:00 → 18:00, 6 000 Wh over 6 h: 2 h at 25 c, 2 h at 30 c, 2 h at 10 c = 50 + 60 + 20 = 130 c.
    l.on_register("M1", "SN-M1", 16_000, local(0, 18, 0))
        .unwrap();
    assert_eq!(l.account("M1").unwrap().balance_minor(), 10_000 - 130);
    assert_eq!(l.tariff_id_at(local(0, 15, 0)), 9);
    assert_eq!(l.tariff_id_at(local(0, 17, 0)), 8);
    check_store(&store).unwrap();
}

#[test]
fn a_failed_flush_is_not_answered_done_and_the_resend_writes_nothing_twice() {
    use concentrator_ledger::{FaultPlan, FaultyStore};
    let pki = pki();
    let store = FaultyStore::new(MemStore::new());
    let mut l = open(store.clone(), config(), &pki);
    l.open_account(account("M1", 10_000, 10_000), local(0, 12, 0))
        .unwrap();
    let change = flat(5, local(1, 0, 0), 30, 0);
    store.set_plan(FaultPlan {
        fail_flushes: true,
        ..FaultPlan::default()
    });
    // Committed but not durable: an error (the gateway answers "try later"), never "done".
    assert!(l.schedule_tariff(&change, local(0, 12, 5)).is_err());
    store.set_plan(FaultPlan::default());
    // The resend finds it in the store, makes it durable and says so; one audit entry in all.
    match l.schedule_tariff(&change, local(0, 12, 6)).unwrap() {
        Ok(TariffOutcome::AlreadyScheduled(_)) => {}
        other => panic!("expected already done, got {other:?}"),
    }
    assert!(!l.unflushed());
    let mut entries = 0;
    audit::walk(l.store(), |e| {
        entries += usize::from(matches!(e.event, AuditEvent::TariffScheduled { .. }));
        Ok(())
    })
    .unwrap();
    assert_eq!(entries, 1);
    assert_eq!(l.tariff_id_at(local(1, 0, 0)), 5);
}
