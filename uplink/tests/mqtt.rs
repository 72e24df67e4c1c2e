//! The uplink against a real Mosquitto (TLS, client certificates, per-gateway ACL) and a fake head-end
//! that acknowledges by message id. Each test starts and stops its own broker in a temp dir.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_protocol::*;
use concentrator_uplink::mqtt::*;
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use support::broker::{skip_without_mosquitto, Broker, TempDir};
use support::headend::{self, HeadEnd};
use support::*;

/// The uplink's status is published after each step of its session, a moment after the store has
/// changed: a test that has seen the store change waits for the status to follow.
fn wait_status(
    uplink: &Uplink,
    secs: u64,
    what: &str,
    mut pred: impl FnMut(&UplinkStatus) -> bool,
) -> UplinkStatus {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = uplink.status();
        if pred(&st) {
            return st;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait(secs: u64, what: &str, mut pred: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// First arrivals per meter are in queue order, and every value in `expected` arrived exactly once
/// after dedup by message id.
fn assert_in_order_no_loss(head: &HeadEnd, expected: usize) {
    assert_no_loss(head, expected);
    let frames = head.unique(Kind::Readings);
    let mut per_meter: HashMap<Option<Tid>, Vec<i64>> = HashMap::new();
    for f in &frames {
        per_meter.entry(f.header.tid).or_default().push(value(f));
    }
    for (m, vals) in &per_meter {
        assert!(
            vals.windows(2).all(|w| w[0] < w[1]),
            "meter {m:?} out of order: {vals:?}"
        );
    }
}

/// Every reading once (after removing redeliveries by message id), whatever the order.
fn assert_no_loss(head: &HeadEnd, expected: usize) {
    let frames = head.unique(Kind::Readings);
    let values: HashSet<i64> = frames.iter().map(value).collect();
    assert_eq!(values.len(), expected, "lost or duplicated readings");
    assert_eq!(frames.len(), expected);
}

/// Readings that arrived after a later reading of the same meter.
fn late_arrivals(head: &HeadEnd) -> usize {
    let mut newest: HashMap<Option<Tid>, i64> = HashMap::new();
    let mut late = 0;
    for f in head.unique(Kind::Readings) {
        let v = value(&f);
        let n = newest.entry(f.header.tid).or_insert(i64::MIN);
        if v < *n {
            late += 1;
        } else {
            *n = v;
        }
    }
    late
}

#[test]
fn readings_queued_while_the_broker_is_down_arrive_after_it_returns() {
    if skip_without_mosquitto() {
        return;
    }
    let mut broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    std::thread::sleep(Duration::from_millis(500)); // its persistent subscription exists
    broker.pause();

    let dir = TempDir::new("down");
    let store = Store::open(dir.path(), Limits::default());
    let cfg = config(&broker, "gw-down");
    let gw = cfg.gateway.clone();
    let uplink = Uplink::start(cfg, store.parts(&gw, ignore_commands())).unwrap();
    // Metering never waits: appends while the broker is down are local writes.
    let mut slowest = Duration::ZERO;
    for n in 0..300u64 {
        let t = Instant::now();
        let meter = Scope::Meter(tid(1 + (n % 3) as u8));
        store.outbox.append(meter, unix_now(), reading(n)).unwrap();
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest append while the broker was down: {slowest:?}");
    // An append that waited on the network would take the connect timeout (5 s) or hang.
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!uplink.status().connected);
    assert!(uplink.status().failures >= 1);
    assert_eq!(head.unique(Kind::Readings).len(), 0);

    broker.resume();
    head.wait_for(30, "300 readings", |l| {
        l.up.iter()
            .filter(|r| r.frame.kind() == Kind::Readings)
            .map(|r| r.frame.header.id)
            .collect::<HashSet<_>>()
            .len()
            == 300
    });
    assert_in_order_no_loss(&head, 300);
    wait(20, "the outbox to empty on acknowledgements", || {
        store.outbox.is_empty().unwrap()
    });
    wait_status(&uplink, 10, "300 acknowledgements counted", |st| {
        st.connected && st.acked >= 300
    });
    head.wait_for(10, "the birth message", |l| {
        l.status
            .iter()
            .any(|(f, _)| matches!(&f.body, Body::Birth(b) if b.session >= 1))
    });

    // Stop: the death message replaces the birth as the retained status.
    uplink.stop().unwrap();
    let late = HeadEnd::connect(&broker, "head-end-late");
    late.wait_for(10, "the retained death message", |l| {
        l.status
            .iter()
            .any(|(f, retained)| *retained && f.kind() == Kind::Death)
    });
}

#[test]
fn a_broker_restart_in_the_middle_of_a_burst_loses_nothing() {
    if skip_without_mosquitto() {
        return;
    }
    let mut broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    let dir = TempDir::new("restart");
    let store = Store::open(dir.path(), Limits::default());
    let cfg = config(&broker, "gw-burst");
    let gw = cfg.gateway.clone();
    let uplink = Uplink::start(cfg, store.parts(&gw, ignore_commands())).unwrap();
    wait(10, "connection", || uplink.status().connected);
    let total = 3_000u64;
    for n in 0..total {
        let meter = Scope::Meter(tid(1 + (n % 4) as u8));
        store.outbox.append(meter, unix_now(), reading(n)).unwrap();
    }
    head.wait_for(30, "the burst to start arriving", |l| l.up.len() >= 300);
    broker.pause();
    let arrived = head.unique(Kind::Readings).len();
    eprintln!("broker stopped after {arrived} of {total} readings arrived");
    std::thread::sleep(Duration::from_millis(700));
    broker.resume();
    // Readings only: other uplink messages (an event 40 for a downlink acknowledgement that the broker
    // delivered again after its restart, refused as a replay) must not end the wait early.
    head.wait_for(60, "every reading", |l| {
        l.up.iter()
            .filter(|r| r.frame.kind() == Kind::Readings)
            .map(|r| r.frame.header.id)
            .collect::<HashSet<_>>()
            .len()
            >= total as usize
    });
    // Across a broker restart, order is not kept: messages sent before the restart can arrive after
    // later ones (docs/uplink.md, *Order*). The head-end does not rely on it (ids remove repeats;
    // readings, summaries and receipts carry their own times).
    assert_no_loss(&head, total as usize);
    wait(30, "the outbox to empty", || {
        store.outbox.is_empty().unwrap()
    });
    let dups = head.log.lock().unwrap().up.len() - total as usize;
    eprintln!(
        "duplicates delivered (removed by message id): {dups}; late after a later reading of their meter: {}; connections: {}",
        late_arrivals(&head),
        uplink.status().connections
    );
    assert!(uplink.status().connections >= 2);
}

#[test]
fn unacknowledged_messages_survive_an_uplink_restart_with_the_same_ids() {
    if skip_without_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    head.ack.store(false, Ordering::Relaxed);
    let dir = TempDir::new("unacked");
    let first_ids: HashSet<MessageId> = {
        let store = Store::open(dir.path(), Limits::default());
        let cfg = config(&broker, "gw-unacked");
        let gw = cfg.gateway.clone();
        let uplink = Uplink::start(cfg, store.parts(&gw, ignore_commands())).unwrap();
        for n in 0..20 {
            store
                .outbox
                .append(Scope::Meter(tid(1)), unix_now(), reading(n))
                .unwrap();
        }
        head.wait_for(20, "20 readings", |l| l.up.len() >= 20);
        uplink.stop().unwrap();
        assert_eq!(
            store.outbox.len().unwrap(),
            20,
            "nothing deleted without an ack"
        );
        head.unique(Kind::Readings)
            .iter()
            .map(|f| f.header.id)
            .collect()
    };
    head.log.lock().unwrap().up.clear();
    head.ack.store(true, Ordering::Relaxed);
    let store = Store::open(dir.path(), Limits::default());
    assert_eq!(store.outbox.len().unwrap(), 20);
    let cfg = config(&broker, "gw-unacked");
    let gw = cfg.gateway.clone();
    let _uplink = Uplink::start(cfg, store.parts(&gw, ignore_commands())).unwrap();
    wait(20, "the outbox to empty", || {
        store.outbox.is_empty().unwrap()
    });
    let again: HashSet<MessageId> = head
        .unique(Kind::Readings)
        .iter()
        .map(|f| f.header.id)
        .collect();
    assert_eq!(again, first_ids, "resent with the same message ids");
}

#[test]
fn a_gateway_cannot_publish_under_another_gateways_topics() {
    if skip_without_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    std::thread::sleep(Duration::from_millis(500));
    let issued = broker.pki.client("gw-a");
    let tls = TlsIdentity {
        ca_pem: broker.pki.ca_pem(),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    };
    let connector = tls.connector().unwrap();
    let forged = "c/v1/gw-b/up/gw/event";
    let own = "c/v1/gw-a/up/gw/event";
    // Publishes `payload` on `topic` as gw-a over a fresh connection; returns (PUBACK seen, connection
    // dropped) within 3 s.
    let attempt = |topic: &str, payload: &[u8]| {
        let mut o = MqttOptions::new("gw-a", "localhost", broker.port);
        o.set_transport(Transport::tls_with_config(
            TlsConfiguration::NativeConnector(connector.clone()),
        ));
        let (client, mut conn) = Client::new(o, 10);
        let (mut puback, mut dropped) = (false, None);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && !puback && dropped.is_none() {
            match conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
                    .unwrap(),
                Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => puback = true,
                Ok(Err(e)) => dropped = Some(format!("{e:?}")),
                _ => {}
            }
        }
        let _ = client.try_disconnect();
        (puback, dropped)
    };
    let (puback, dropped) = attempt(forged, b"forged");
    eprintln!(
        "mosquitto on an ACL-denied QoS 1 publish (MQTT 3.1.1): PUBACK seen: {puback}, connection dropped: {dropped:?}"
    );
    // Observed with Mosquitto 2.0.11: it logs "Denied PUBLISH", drops the message and answers a PUBACK
    // (reason code 135 in its log, invisible to a 3.1.1 client); in some runs the connection ends right
    // after. What is asserted is what matters: the message never reaches a subscriber.
    assert!(puback || dropped.is_some(), "neither PUBACK nor disconnect");
    // The gateway's own topic works (the head-end refuses the payload, which is not a frame).
    attempt(own, b"own");
    head.wait_for(10, "the gateway's own message", |l| {
        l.refused.iter().any(|r| r.starts_with(own))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(broker.log().contains("Denied PUBLISH from gw-a"));
    let log = head.log.lock().unwrap();
    assert!(
        !log.refused.iter().any(|r| r.contains("gw-b")) && log.up.is_empty(),
        "the forged message reached the head-end: {:?}",
        log.refused
    );
}

#[test]
fn commands_are_verified_and_executed_at_most_once() {
    if skip_without_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    let dir = TempDir::new("commands");
    let store = Store::open(dir.path(), Limits::default());
    let cfg = config(&broker, "gw-cmd");
    let gw = cfg.gateway.clone();
    let executed = Arc::new(Mutex::new(Vec::<MessageId>::new()));
    let ex = executed.clone();
    let handler = Box::new(move |_: Scope, f: &Frame| {
        ex.lock().unwrap().push(f.header.id);
        Outcome::done()
    });
    let uplink = Uplink::start(cfg, store.parts(&gw, handler)).unwrap();
    wait(10, "connection", || uplink.status().connected);
    std::thread::sleep(Duration::from_millis(300)); // its subscription exists

    let meter = Scope::Meter(tid(1));
    let topic = Topic::for_message(&gw, meter, Kind::RelayCommand).to_string();
    let cmd_id = MessageId::new(*b"headend0", 1);
    let cmd = Frame::new(
        cmd_id,
        meter.tid(),
        unix_now(),
        Body::RelayCommand(RelayCommand {
            action: RelayAction::Open,
            reason: Some("test".into()),
        }),
    );
    let sealed = head.seal(meter, &cmd);
    head.publish(&topic, sealed.clone());
    let results = |code: u16| {
        move |l: &headend::Log| {
            l.up.iter()
                .filter(|r| {
                    matches!(&r.frame.body, Body::CommandResult(c) if c.command == cmd_id && c.code == code)
                })
                .count()
        }
    };
    head.wait_for(10, "the command result", |l| {
        results(result_code::DONE)(l) == 1
    });
    assert_eq!(*executed.lock().unwrap(), [cmd_id]);

    // Replayed octets: refused by the envelope (COUNT), never executed, reported with event 40.
    head.publish(&topic, sealed.clone());
    // Tampered: refused (MAC).
    let mut tampered = head.seal(meter, &cmd);
    let n = tampered.len();
    tampered[n - 7] ^= 0x01;
    head.publish(&topic, tampered);
    head.wait_for(10, "two verification-failed events", |l| {
        l.up.iter()
            .filter(|r| matches!(&r.frame.body, Body::Event(e) if e.code == event_code::VERIFICATION_FAILED))
            .count()
            == 2
    });
    // The same command sealed again (a resend by the head-end): answered "already done", not executed.
    head.publish(&topic, head.seal(meter, &cmd));
    head.wait_for(10, "the already-done answer", |l| {
        results(result_code::ALREADY_DONE)(l) == 1
    });
    // A non-command is acknowledged (0x09).
    let time_id = MessageId::new(*b"headend0", 2);
    let request = Frame::new(
        time_id,
        meter.tid(),
        unix_now(),
        Body::AccountRequest(AccountRequest {}),
    );
    head.publish(
        &Topic::for_message(&gw, meter, Kind::AccountRequest).to_string(),
        head.seal(meter, &request),
    );
    head.wait_for(10, "the acknowledgement", |l| {
        l.up.iter()
            .any(|r| matches!(&r.frame.body, Body::AckUp(a) if a.ids == [time_id]))
    });
    // A command sealed with the wrong meter's keys on this meter's topic: refused.
    let other = Scope::Meter(tid(2));
    let mut wrong = cmd.clone();
    wrong.header.id = MessageId::new(*b"headend0", 3);
    head.publish(&topic, head.seal(other, &wrong));
    head.wait_for(10, "a third refusal", |l| {
        l.up.iter()
            .filter(|r| matches!(&r.frame.body, Body::Event(e) if e.code == event_code::VERIFICATION_FAILED))
            .count()
            == 3
    });
    assert_eq!(*executed.lock().unwrap(), [cmd_id, time_id]);
    wait_status(&uplink, 10, "3 refused, 1 repeat, 2 executed", |st| {
        (st.refused, st.repeats, st.executed) == (3, 1, 2)
    });
    assert_eq!(
        store.executed.result_of(&cmd_id).unwrap(),
        Some(result_code::DONE)
    );
}

/// Issue #14, defect 1: a command that fails temporarily (no account yet, ledger busy) used to be
/// recorded as executed, so the head-end's resend with the same id was answered "already done" and the
/// top-up was never applied. A temporary outcome is now answered and forgotten; the resend runs.
#[test]
fn a_temporarily_failed_command_runs_again_when_sent_again() {
    if skip_without_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    let dir = TempDir::new("temporary");
    let store = Store::open(dir.path(), Limits::default());
    let cfg = config(&broker, "gw-tmp");
    let gw = cfg.gateway.clone();
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    let handler = Box::new(move |_: Scope, _: &Frame| {
        let mut n = c.lock().unwrap();
        *n += 1;
        if *n == 1 {
            Outcome::failed(result_code::TRY_LATER, "no account until its first reading")
        } else {
            Outcome::done()
        }
    });
    let uplink = Uplink::start(cfg, store.parts(&gw, handler)).unwrap();
    wait(10, "connection", || uplink.status().connected);
    std::thread::sleep(Duration::from_millis(300)); // its subscription exists

    let meter = Scope::Meter(tid(1));
    let topic = Topic::for_message(&gw, meter, Kind::TopUp).to_string();
    let cmd_id = MessageId::new(*b"headend0", 7);
    let cmd = Frame::new(
        cmd_id,
        meter.tid(),
        unix_now(),
        Body::TopUp(TopUp {
            token: vec![1, 2, 3],
        }),
    );
    let results = |code: u16| {
        move |l: &headend::Log| {
            l.up.iter()
                .filter(|r| {
                    matches!(&r.frame.body, Body::CommandResult(c) if c.command == cmd_id && c.code == code)
                })
                .count()
        }
    };
    head.publish(&topic, head.seal(meter, &cmd));
    head.wait_for(10, "the try-later answer", |l| {
        results(result_code::TRY_LATER)(l) == 1
    });
    assert_eq!(store.executed.result_of(&cmd_id).unwrap(), None);
    // The head-end sends the same command again: it runs, and only now is it remembered.
    head.publish(&topic, head.seal(meter, &cmd));
    head.wait_for(10, "the done answer", |l| {
        results(result_code::DONE)(l) == 1
    });
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        store.executed.result_of(&cmd_id).unwrap(),
        Some(result_code::DONE)
    );
    // A third send is a repeat: answered, not run.
    head.publish(&topic, head.seal(meter, &cmd));
    head.wait_for(10, "the already-done answer", |l| {
        results(result_code::ALREADY_DONE)(l) == 1
    });
    assert_eq!(*calls.lock().unwrap(), 2);
    wait_status(&uplink, 10, "1 temporary failure and 1 repeat", |st| {
        (st.temporary, st.repeats) == (1, 1)
    });
}

/// Issue #14, defect 6: a message the head-end never acknowledges was sent again every resend interval
/// forever, and enough of them held the whole window. Each unacknowledged send now doubles the wait
/// before the next, the status counts such messages, and other messages keep flowing.
#[test]
fn a_message_the_head_end_never_acknowledges_is_resent_with_a_growing_wait() {
    if skip_without_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    std::thread::sleep(Duration::from_millis(500)); // its persistent subscription exists
    head.ack.store(false, Ordering::Relaxed);
    let dir = TempDir::new("backoff");
    let store = Store::open(dir.path(), Limits::default());
    let mut cfg = config(&broker, "gw-backoff");
    cfg.resend_after = Duration::from_secs(1);
    let gw = cfg.gateway.clone();
    let uplink = Uplink::start(cfg, store.parts(&gw, ignore_commands())).unwrap();
    let meter = Scope::Meter(tid(1));
    store.outbox.append(meter, unix_now(), reading(1)).unwrap();
    let start = Instant::now();
    head.wait_for(10, "the first send", |l| {
        l.up.iter().any(|r| r.frame.kind() == Kind::Readings)
    });
    std::thread::sleep(Duration::from_secs(11).saturating_sub(start.elapsed()));
    let sends = head
        .log
        .lock()
        .unwrap()
        .up
        .iter()
        .filter(|r| r.frame.kind() == Kind::Readings)
        .count();
    // Every second for 11 s would be 11 sends; waits of 1, 2, 4 and 8 s leave at most 5.
    assert!((3..=5).contains(&sends), "{sends} sends in 11 s");
    assert!(
        uplink.status().unacknowledged_resends >= 1,
        "{:?}",
        uplink.status()
    );
    // Others are not held back: a new message goes at once.
    store.outbox.append(meter, unix_now(), reading(2)).unwrap();
    head.wait_for(5, "the second message", |l| {
        l.up.iter()
            .any(|r| matches!(&r.frame.body, Body::Readings(_)) && value(&r.frame) == 2)
    });
    head.ack.store(true, Ordering::Relaxed);
    wait(30, "the outbox to empty once acknowledged", || {
        store.outbox.is_empty().unwrap()
    });
}

/// Issue #21 (the non-blocking downlink): a command that waits on another thread (a top-up on the
/// ledger, a relay on its bus) used to block the uplink loop for up to 20 s. It now hands back a ticket:
/// while it runs, readings go up and are acknowledged, a repeat of it is not run twice, and its answer
/// and the broker's acknowledgement follow when it completes.
#[test]
fn a_command_under_way_does_not_hold_up_the_uplink() {
    if skip_without_mosquitto() {
        return;
    }
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    let dir = TempDir::new("ticket");
    let store = Store::open(dir.path(), Limits::default());
    let cfg = config(&broker, "gw-ticket");
    let gw = cfg.gateway.clone();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let starts = Arc::new(Mutex::new(0u32));
    struct Slow {
        released: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
        starts: Arc<Mutex<u32>>,
    }
    impl Downlink for Slow {
        fn handle(&mut self, _: Scope, _: &Frame) -> Outcome {
            unreachable!("the session starts commands")
        }
        fn start(&mut self, _: Scope, _: &Frame) -> Handled {
            *self.starts.lock().unwrap() += 1;
            let rx = self.released.clone();
            Handled::Later(Ticket::new(
                Duration::from_secs(30),
                Outcome::failed(result_code::METER_FAILED, "timeout"),
                move || rx.lock().unwrap().try_recv().ok().map(|()| Outcome::done()),
            ))
        }
    }
    let handler = Box::new(Slow {
        released,
        starts: starts.clone(),
    });
    let uplink = Uplink::start(cfg, store.parts(&gw, handler)).unwrap();
    wait(10, "connection", || uplink.status().connected);
    std::thread::sleep(Duration::from_millis(300)); // its subscription exists
    let meter = Scope::Meter(tid(1));
    let cmd_id = MessageId::new(*b"headend0", 9);
    let cmd = Frame::new(
        cmd_id,
        meter.tid(),
        unix_now(),
        Body::TopUp(TopUp { token: vec![9] }),
    );
    let topic = Topic::for_message(&gw, meter, Kind::TopUp).to_string();
    head.publish(&topic, head.seal(meter, &cmd));
    wait(10, "the command to start", || *starts.lock().unwrap() == 1);
    // While it runs: a reading goes up and is acknowledged; the same command again is not started.
    store.outbox.append(meter, unix_now(), reading(1)).unwrap();
    head.publish(&topic, head.seal(meter, &cmd));
    wait(10, "the reading acknowledged", || {
        store.outbox.is_empty().unwrap()
    });
    assert_eq!(*starts.lock().unwrap(), 1);
    wait_status(&uplink, 10, "one command under way", |st| st.running == 1);
    let done = |l: &headend::Log| {
        l.up.iter()
            .any(|r| matches!(&r.frame.body, Body::CommandResult(c) if c.command == cmd_id))
    };
    assert!(
        !done(&head.log.lock().unwrap()),
        "answered before it was done"
    );
    release.send(()).unwrap();
    head.wait_for(10, "the command's result", done);
    assert_eq!(
        store.executed.result_of(&cmd_id).unwrap(),
        Some(result_code::DONE)
    );
    wait(5, "nothing under way", || uplink.status().running == 0);
}

/// After an outage the reconnect backoff can have grown to its cap (120 s): the modem's supervisor
/// says when the network is back, and the uplink connects at once instead of waiting the rest out.
#[test]
fn a_link_back_signal_ends_the_reconnect_backoff() {
    if skip_without_mosquitto() {
        return;
    }
    let mut broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-1");
    let dir = TempDir::new("link-back");
    let store = Store::open(dir.path(), Limits::default());
    let mut cfg = config(&broker, "gw-link-back");
    // Every wait between attempts at least 60 s, as after a long outage.
    cfg.backoff = Backoff::new(
        Duration::from_secs(90),
        Duration::from_secs(120),
        Duration::from_secs(60),
    );
    let gw = cfg.gateway.clone();
    let uplink = Uplink::start(cfg, store.parts(&gw, ignore_commands())).unwrap();
    wait(10, "connection", || uplink.status().connected);
    broker.pause();
    wait(10, "the uplink to see the broker gone", || {
        !uplink.status().connected
    });
    std::thread::sleep(Duration::from_secs(1)); // the uplink is in its backoff now
    broker.resume();
    store
        .outbox
        .append(Scope::Meter(tid(1)), unix_now(), reading(7))
        .unwrap();
    let back = Instant::now();
    uplink.waker().link_is_back();
    wait(20, "a connection right after the link came back", || {
        uplink.status().connected
    });
    eprintln!(
        "connected {:.1} s after the link came back (backoff at least 60 s)",
        back.elapsed().as_secs_f64()
    );
    head.wait_for(20, "the reading queued during the outage", |l| {
        l.up.iter()
            .any(|r| matches!(&r.frame.body, Body::Readings(_)) && value(&r.frame) == 7)
    });
}
