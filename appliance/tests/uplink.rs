//! `concentratord` as a process on simulated buses with its uplink to a real Mosquitto (TLS, client
//! certificates, the per-gateway ACL; started by the test with the uplink crate's testkit) and a fake
//! head-end that opens every message with the provisioned contexts and acknowledges by message id.
//!
//! - the broker is down for the whole first part: the daemon polls at the same rate as with the broker
//!   up; once the broker starts, every reading queued arrives, per meter in order, none lost (arrived +
//!   still queued at the stop = polls logged), and the outbox drains on the head-end's acknowledgements;
//! - a top-up token sent as a downlink command is applied once, its command result and receipt come up;
//!   the same envelope replayed is refused, and the same command sealed again is answered "already done".

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{temp_dir, unix_now, uplink_section, write_setup, Daemon, TestMeter};
use concentrator_appliance::status::Status;
use concentrator_protocol::*;
use concentrator_uplink::mqtt::{Limits, Outbox, SledOutbox};
use concentrator_uplink::testkit::broker::{skip_without_mosquitto, Broker};
use concentrator_uplink::testkit::headend::HeadEnd;
use concentrator_uplink::testkit::tid;

const GW: &str = "gw-test";

impl Daemon {
    /// Polls logged per meter address (each successful poll queues one readings message), in a window.
    fn polls(&self, from: Instant, to: Instant) -> HashMap<String, usize> {
        let mut n = HashMap::new();
        for (at, line) in self.lines.lock().unwrap().iter() {
            if *at < from || *at >= to {
                continue;
            }
            if let Some(address) = poll_line(line) {
                *n.entry(address).or_default() += 1;
            }
        }
        n
    }
}

/// `bus a meter ADDRESS (DWELLING): READINGS` → the address.
fn poll_line(line: &str) -> Option<String> {
    let rest = &line[line.find("bus a meter ")? + "bus a meter ".len()..];
    let (address, after) = rest.split_once(' ')?;
    after.contains("): ").then(|| address.to_string())
}

fn status(dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(dir.join("store/status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn wait(secs: u64, what: &str, daemon: &Daemon, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two simulated DL/T 645 meters on bus `a`, polled every second, no ledger.
fn metering_config(dir: &Path, broker: &Broker) -> PathBuf {
    let d = dir.display();
    let mut text = format!(
        "[gateway]\nid = \"{GW}\"\nstore = \"{d}/store\"\n\n[[bus]]\nname = \"a\"\nbackend = \"sim\"\nbaud = 9600\nformat = \"8E1\"\npoll_interval_s = 1\n"
    );
    for n in 1..=2 {
        text.push_str(&format!(
            "\n[[meter]]\nbus = \"a\"\naddress = \"00000000010{n}\"\ndriver = \"dlt645\"\ndwelling = \"flat-{n}\"\nsim = {{ load_w = 360000, start_kwh = 100.0 }}\n"
        ));
    }
    text.push_str(&uplink_section(
        dir,
        broker,
        GW,
        &["000000000101", "000000000102"],
    ));
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn energy(f: &Frame) -> i64 {
    match &f.body {
        Body::Readings(r) => r.readings[0].value,
        other => panic!("not readings: {other:?}"),
    }
}

#[test]
fn polling_keeps_its_rate_while_the_broker_is_down_and_every_reading_arrives_in_order() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("uplink-down");
    let mut broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-down");
    std::thread::sleep(Duration::from_millis(500)); // its persistent subscription exists
    broker.pause();
    let config = metering_config(&dir, &broker);

    let mut daemon = Daemon::start(&config);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(9));
    let down = daemon.polls(
        started + Duration::from_secs(2),
        started + Duration::from_secs(9),
    );
    let s = status(&dir).expect("status file");
    let u = s.uplink.expect("uplink status");
    assert!(!u.connected && u.outbox > 0 && u.acked == 0, "{u:?}");

    broker.resume();
    // The reconnect backoff (full jitter, its ceiling doubling per failure up to 120 s) may have grown
    // while the broker was down: the next attempt can be up to that ceiling away.
    wait(130, "the uplink to connect", &daemon, || {
        status(&dir)
            .and_then(|s| s.uplink)
            .is_some_and(|u| u.connected)
    });
    let connected = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let up = daemon.polls(
        connected + Duration::from_secs(1),
        connected + Duration::from_secs(8),
    );
    // The same cycle rate with and without the broker: polls per second per meter.
    for address in ["000000000101", "000000000102"] {
        let (d, u) = (
            down.get(address).copied().unwrap_or(0),
            up.get(address).copied().unwrap_or(0),
        );
        let (rd, ru) = (d as f64 / 7.0, u as f64 / 7.0);
        assert!(
            // 1 poll/s configured; a bus that waited on the network would fall far below this.
            rd >= 0.7 && ru >= 0.7,
            "{address}: {rd:.2}/s down, {ru:.2}/s up"
        );
        assert!(
            (rd - ru).abs() <= 0.3 * ru,
            "{address}: {rd:.2}/s with the broker down, {ru:.2}/s with it up"
        );
    }
    wait(20, "the outbox to drain", &daemon, || {
        status(&dir)
            .and_then(|s| s.uplink)
            .is_some_and(|u| u.outbox <= 4 && u.acked > 0 && u.last_ack_unix.is_some())
    });
    daemon.stop();

    // No loss: every poll logged arrived at the head-end or is still queued; per meter in order.
    let logged = daemon.polls(started, Instant::now());
    let db = concentrator_ledger::open_sled(&sled::Config::new().path(dir.join("store/uplink")))
        .unwrap();
    let queued = SledOutbox::open(&db, Limits::default())
        .unwrap()
        .list(100_000)
        .unwrap();
    let arrived = head.unique(Kind::Readings);
    let mut ids = HashSet::new();
    let mut per_meter: HashMap<Tid, Vec<i64>> = HashMap::new();
    for f in arrived.iter().chain(queued.iter().map(|p| &p.frame)) {
        if ids.insert(f.header.id) {
            per_meter
                .entry(f.header.tid.unwrap())
                .or_default()
                .push(energy(f));
        }
    }
    for (i, address) in ["000000000101", "000000000102"].iter().enumerate() {
        let values = per_meter
            .remove(&tid(u8::try_from(i + 1).unwrap()))
            .unwrap_or_default();
        assert_eq!(
            values.len(),
            logged[*address],
            "{address}: readings arrived + queued vs polls logged"
        );
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "{address} out of order: {values:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_top_up_command_is_applied_once_and_its_receipt_comes_back() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("uplink-topup");
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-topup");
    let meters = [TestMeter {
        bus: "a",
        address: "000000000301".into(),
        meter_id: "M-1".into(),
        load_w: 100,
        start_kwh: 10.0,
        opening_minor: 1_000,
    }];
    let (path, pki) = write_setup(&dir, &meters, 25_000, 3600, None);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&uplink_section(&dir, &broker, GW, &["M-1"]));
    std::fs::write(&path, text).unwrap();

    let mut daemon = Daemon::start(&path);
    wait(20, "the account and the uplink", &daemon, || {
        status(&dir).is_some_and(|s| {
            s.accounts
                .get("M-1")
                .is_some_and(|a| a.state == "in-credit")
                && s.uplink.is_some_and(|u| u.connected)
        })
    });
    let gw = GatewayId::new(GW).unwrap();
    let scope = Scope::Meter(tid(1));
    let now = unix_now();
    let token = pki.token("M-1", 1, 500, now - 10, now + 3600).unwrap();
    let command = Frame::new(
        MessageId::new(*b"headend0", 1),
        Some(tid(1)),
        now,
        Body::TopUp(TopUp { token }),
    );
    let topic = Topic::for_message(&gw, scope, Kind::TopUp).to_string();
    let sealed = head.seal(scope, &command);
    head.publish(&topic, sealed.clone());
    let result_of = |code: u16| {
        move |log: &concentrator_uplink::testkit::headend::Log| {
            log.up.iter().any(|r| {
                matches!(&r.frame.body, Body::CommandResult(c) if c.command == command.header.id && c.code == code)
            })
        }
    };
    head.wait_for(20, "the command result", result_of(result_code::DONE));
    head.wait_for(20, "the receipt", |log| {
        log.up
            .iter()
            .any(|r| r.frame.kind() == Kind::Receipt && r.frame.header.tid == Some(tid(1)))
    });
    wait(10, "the top-up on the account", &daemon, || {
        status(&dir).is_some_and(|s| s.accounts["M-1"].last_serial == Some(1))
    });
    let balance = status(&dir).unwrap().accounts["M-1"].balance_minor;
    assert!(balance > 1_000, "{balance}");

    // The same envelope again: refused by COUNT (replay), reported as event 40, never acted on.
    head.publish(&topic, sealed);
    head.wait_for(20, "the verification-failed event", |log| {
        log.up.iter().any(|r| matches!(&r.frame.body, Body::Event(e) if e.code == event_code::VERIFICATION_FAILED))
    });
    // The same command sealed again (new COUNT, same id): answered "already done", not executed.
    head.publish(&topic, head.seal(scope, &command));
    head.wait_for(
        20,
        "the already-done result",
        result_of(result_code::ALREADY_DONE),
    );
    std::thread::sleep(Duration::from_secs(2));
    let s = status(&dir).unwrap();
    assert!(
        s.accounts["M-1"].balance_minor <= balance,
        "applied twice: {:?}",
        s.accounts
    );
    assert_eq!(head.unique(Kind::Receipt).len(), 1);
    let u = s.uplink.unwrap();
    assert!(u.executed >= 1 && u.repeats >= 1 && u.refused >= 1, "{u:?}");
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #14, defect 5: the head-end's relay commands went straight to the bus, around the ledger, so
/// after a remote open a top-up never reconnected (the ledger thought the supply was on) and after a
/// remote close a meter without credit was never cut again. Now the ledger is the relay authority: an
/// open is held (a top-up adds credit, the supply stays off) until a close, each answered with the
/// read-back; and a token the head-end sends again under a new command id is answered "already done"
/// with its original receipt sent again (the head-end books a token applied only on a receipt).
#[test]
fn relay_commands_go_through_the_ledger_and_a_resent_token_brings_its_receipt_again() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("uplink-relay");
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-relay");
    let meters = [TestMeter {
        bus: "a",
        address: "000000000401".into(),
        meter_id: "M-1".into(),
        load_w: 100,
        start_kwh: 10.0,
        opening_minor: 1_000,
    }];
    let (path, pki) = write_setup(&dir, &meters, 25_000, 3600, None);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&uplink_section(&dir, &broker, GW, &["M-1"]));
    std::fs::write(&path, text).unwrap();
    let mut daemon = Daemon::start(&path);
    wait(20, "the account and the uplink", &daemon, || {
        status(&dir).is_some_and(|s| {
            s.accounts
                .get("M-1")
                .is_some_and(|a| a.state == "in-credit")
                && s.uplink.is_some_and(|u| u.connected)
        })
    });
    let gw = GatewayId::new(GW).unwrap();
    let scope = Scope::Meter(tid(1));
    let result = |id: MessageId| {
        move |log: &concentrator_uplink::testkit::headend::Log| {
            log.up.iter().find_map(|r| match &r.frame.body {
                Body::CommandResult(c) if c.command == id => Some(c.clone()),
                _ => None,
            })
        }
    };
    let relay = |n: u64, action: RelayAction| {
        let id = MessageId::new(*b"headend0", n);
        let f = Frame::new(
            id,
            Some(tid(1)),
            unix_now(),
            Body::RelayCommand(RelayCommand {
                action,
                reason: Some("test".into()),
            }),
        );
        head.publish(
            &Topic::for_message(&gw, scope, Kind::RelayCommand).to_string(),
            head.seal(scope, &f),
        );
        answer(&head, 40, "the relay command's result", result(id))
    };
    let r = relay(1, RelayAction::Open);
    assert_eq!(r.code, result_code::DONE, "{r:?}");
    assert!(r.reason.as_deref().unwrap_or("").contains("open"), "{r:?}");
    wait(10, "the hold in the status", &daemon, || {
        status(&dir).is_some_and(|s| {
            let a = &s.accounts["M-1"];
            a.held_by.as_deref() == Some("head-end") && a.state == "disconnected"
        })
    });

    // A top-up while held: applied, the supply stays off.
    let now = unix_now();
    let token = pki.token("M-1", 1, 500, now - 10, now + 3600).unwrap();
    let top_up = |n: u64| {
        let id = MessageId::new(*b"headend0", n);
        let f = Frame::new(
            id,
            Some(tid(1)),
            unix_now(),
            Body::TopUp(TopUp {
                token: token.clone(),
            }),
        );
        head.publish(
            &Topic::for_message(&gw, scope, Kind::TopUp).to_string(),
            head.seal(scope, &f),
        );
        answer(&head, 20, "the top-up's result", result(id))
    };
    assert_eq!(top_up(2).code, result_code::DONE);
    wait(10, "the top-up on the account", &daemon, || {
        status(&dir).is_some_and(|s| s.accounts["M-1"].last_serial == Some(1))
    });
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&dir).unwrap();
    assert_eq!(s.accounts["M-1"].state, "disconnected", "{:?}", s.accounts);
    assert_eq!(s.accounts["M-1"].relay_read_back.as_deref(), Some("open"));

    // The close order releases the hold: with credit the supply comes back, read back closed.
    let r = relay(3, RelayAction::Close);
    assert_eq!(r.code, result_code::DONE, "{r:?}");
    assert!(
        r.reason.as_deref().unwrap_or("").contains("closed"),
        "{r:?}"
    );
    wait(10, "the supply back on", &daemon, || {
        status(&dir).is_some_and(|s| {
            let a = &s.accounts["M-1"];
            a.held_by.is_none() && a.state == "in-credit"
        })
    });

    // The same token under a new command id (the head-end lost its receipt): "already done", and the
    // original receipt comes up a second time; the balance does not change.
    let balance = status(&dir).unwrap().accounts["M-1"].balance_minor;
    head.wait_for(20, "the first receipt", |l| {
        l.up.iter()
            .filter(|r| r.frame.kind() == Kind::Receipt)
            .count()
            == 1
    });
    let r = top_up(4);
    assert_eq!(r.code, result_code::ALREADY_DONE, "{r:?}");
    head.wait_for(20, "the receipt sent again", |l| {
        l.up.iter()
            .filter(|r| r.frame.kind() == Kind::Receipt)
            .count()
            >= 2
    });
    let s = status(&dir).unwrap();
    assert!(
        s.accounts["M-1"].balance_minor <= balance,
        "{:?}",
        s.accounts
    );
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for the head-end's log to hold what `find` looks for, and returns it.
fn answer<T>(
    head: &HeadEnd,
    secs: u64,
    what: &str,
    find: impl Fn(&concentrator_uplink::testkit::headend::Log) -> Option<T>,
) -> T {
    let got = std::sync::Mutex::new(None);
    head.wait_for(secs, what, |l| {
        let found = find(l);
        let done = found.is_some();
        *got.lock().unwrap() = found;
        done
    });
    got.into_inner().unwrap().expect("found")
}
