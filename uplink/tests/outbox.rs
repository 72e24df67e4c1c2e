//! The durable outboxes without a broker: drain order, acknowledgement by id, the full-outbox policy,
//! restarts, and the executed-command set (the daemon tests its ledger adapter).

mod support;

use std::time::{Duration, Instant};

use concentrator_protocol::*;
use concentrator_uplink::mqtt::*;
use support::broker::TempDir;
use support::{reading, tid, value, Store};

fn alarm() -> Body {
    Body::Event(Event {
        at: 1,
        code: event_code::TAMPER,
        severity: Severity::Alarm,
        detail: None,
        values: vec![],
    })
}

fn low_credit() -> Body {
    Body::Event(Event {
        at: 1,
        code: event_code::LOW_CREDIT,
        severity: Severity::Info,
        detail: None,
        values: vec![100],
    })
}

#[test]
fn drains_by_priority_then_in_order_per_meter() {
    let dir = TempDir::new("order");
    let s = Store::open(dir.path(), Limits::default());
    let (m1, m2) = (Scope::Meter(tid(1)), Scope::Meter(tid(2)));
    let r1 = s.outbox.append(m1, 1, reading(1)).unwrap().id;
    s.outbox.append(m2, 1, reading(2)).unwrap();
    let info = s.outbox.append(m1, 1, low_credit()).unwrap().id;
    s.outbox.append(m1, 1, reading(3)).unwrap();
    let tamper = s.outbox.append(m2, 1, alarm()).unwrap().id;
    let list = s.outbox.list(100).unwrap();
    let ids: Vec<_> = list.iter().map(Pending::id).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[0], tamper, "alarms first");
    assert_eq!(ids[1], info, "then normal events");
    assert_eq!(ids[2], r1, "then readings, oldest first");
    let m1_values: Vec<_> = list
        .iter()
        .filter(|p| p.scope() == m1 && p.frame.kind() == Kind::Readings)
        .map(|p| value(&p.frame))
        .collect();
    assert_eq!(m1_values, [1, 3]);
    // Ids are unique and carry the outbox's source.
    assert!(ids.iter().all(|i| i.source() == s.outbox.source()));
    assert_eq!(s.outbox.len().unwrap(), 5);
    // Acknowledgement by id deletes exactly those; unknown and foreign ids are ignored.
    let foreign = MessageId::new(*b"someone!", r1.seq());
    assert_eq!(s.outbox.ack(&[r1, tamper, foreign]).unwrap(), 2);
    assert_eq!(s.outbox.ack(&[r1]).unwrap(), 0);
    assert_eq!(s.outbox.len().unwrap(), 3);
    assert_eq!(s.outbox.list(1).unwrap()[0].id(), info);
}

#[test]
fn survives_restart_with_the_same_ids_and_source() {
    let dir = TempDir::new("restart");
    let (source, before) = {
        let s = Store::open(dir.path(), Limits::default());
        for n in 0..50 {
            s.outbox
                .append(Scope::Meter(tid(1)), n, reading(n))
                .unwrap();
        }
        s.outbox.append(Scope::Gateway, 1, alarm()).unwrap();
        s.outbox.flush().unwrap();
        (s.outbox.source(), s.outbox.list(1000).unwrap())
    };
    let s = Store::open(dir.path(), Limits::default());
    assert_eq!(s.outbox.source(), source);
    assert_eq!(s.outbox.len().unwrap(), 51);
    assert_eq!(s.outbox.list(1000).unwrap(), before);
    // New ids never reuse old ones.
    let new = s.outbox.append(Scope::Gateway, 2, alarm()).unwrap().id;
    assert!(before.iter().all(|p| p.id() != new));
    assert!(new.seq() > before.iter().map(|p| p.id().seq()).max().unwrap());
}

#[test]
fn full_outbox_drops_oldest_readings_never_events() {
    let dir = TempDir::new("full");
    let limits = Limits {
        max_entries: 10,
        max_bytes: 1 << 20,
    };
    let s = Store::open(dir.path(), limits);
    let m = Scope::Meter(tid(1));
    for n in 0..10 {
        s.outbox.append(m, 1, reading(n)).unwrap();
    }
    // Two more readings push out the two oldest.
    assert_eq!(s.outbox.append(m, 1, reading(10)).unwrap().dropped, 1);
    assert_eq!(s.outbox.append(m, 1, reading(11)).unwrap().dropped, 1);
    // The first drop was reported at once (event 51, gateway scope); the second waits for the next report.
    let list = s.outbox.list(100).unwrap();
    let reports: Vec<_> = list
        .iter()
        .filter_map(|p| match &p.frame.body {
            Body::Event(e) if e.code == event_code::READINGS_DROPPED => Some(e.values.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reports, [vec![1]]);
    // Events are never dropped: fill with alarms beyond the limit.
    for _ in 0..15 {
        s.outbox.append(m, 1, alarm()).unwrap();
    }
    let list = s.outbox.list(100).unwrap();
    let alarms = list
        .iter()
        .filter(|p| matches!(&p.frame.body, Body::Event(e) if e.code == event_code::TAMPER))
        .count();
    assert_eq!(alarms, 15);
    assert!(list.iter().all(|p| p.frame.kind() != Kind::Readings));
    // Now a reading cannot get room: refused, counted.
    assert!(matches!(
        s.outbox.append(m, 1, reading(99)),
        Err(OutboxError::Full { .. })
    ));
    // Readings still queued are the newest ones, in order (none left here); report the pending drops.
    let id = s.outbox.report_drops().unwrap().expect("a drop report");
    let report = s
        .outbox
        .list(100)
        .unwrap()
        .into_iter()
        .find(|p| p.id() == id)
        .unwrap();
    assert!(
        matches!(&report.frame.body, Body::Event(e) if e.values.iter().sum::<i64>() >= 11),
        "{report:?}"
    );
    assert_eq!(s.outbox.report_drops().unwrap(), None);
}

#[test]
fn byte_limit_drops_too_and_keeps_newest_readings_in_order() {
    let dir = TempDir::new("bytes");
    let s = Store::open(
        dir.path(),
        Limits {
            max_entries: 1_000_000,
            max_bytes: 4_000,
        },
    );
    let m = Scope::Meter(tid(1));
    for n in 0..500 {
        s.outbox.append(m, 1, reading(n)).unwrap();
    }
    assert!(s.outbox.bytes() <= 4_000 + 200);
    let values: Vec<_> = s
        .outbox
        .list(10_000)
        .unwrap()
        .iter()
        .filter(|p| p.frame.kind() == Kind::Readings)
        .map(|p| value(&p.frame))
        .collect();
    assert!(values.len() > 10 && values.len() < 500);
    assert_eq!(*values.last().unwrap(), 499);
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn append_is_fast_and_never_waits_for_a_network() {
    let dir = TempDir::new("fast");
    let s = Store::open(dir.path(), Limits::default());
    let t = Instant::now();
    for n in 0..2_000 {
        s.outbox
            .append(Scope::Meter(tid(1)), n, reading(n))
            .unwrap();
    }
    let per = t.elapsed() / 2_000;
    eprintln!("append: {per:?} per reading");
    assert!(per < Duration::from_millis(5), "{per:?}");
}

#[test]
fn executed_set_is_durable_and_bounded() {
    let dir = TempDir::new("executed");
    let id = |n: u64| MessageId::new(*b"headend0", n);
    {
        let db = concentrator_durable::open_sled(&sled::Config::new().path(dir.path())).unwrap();
        let ex = Executed::open(&db, 100).unwrap();
        for n in 0..250 {
            ex.record(&id(n), result_code::DONE).unwrap();
        }
        ex.record(&id(1000), result_code::TOKEN_REFUSED).unwrap();
        assert_eq!(ex.len(), 100);
    }
    let db = concentrator_durable::open_sled(&sled::Config::new().path(dir.path())).unwrap();
    let ex = Executed::open(&db, 100).unwrap();
    assert_eq!(ex.len(), 100);
    assert_eq!(
        ex.result_of(&id(1000)).unwrap(),
        Some(result_code::TOKEN_REFUSED)
    );
    assert_eq!(ex.result_of(&id(249)).unwrap(), Some(result_code::DONE));
    assert_eq!(ex.result_of(&id(10)).unwrap(), None, "oldest forgotten");
    ex.record(&id(2000), 0).unwrap();
    assert_eq!(ex.len(), 100);
    assert_eq!(ex.result_of(&id(150)).unwrap(), None);
}
