//! The block balance (issue #19, item 3) end to end: `concentratord` with two simulated RS485 buses —
//! the feeder (master) meters of two staircases on one, their dwellings' meters on the other, polled
//! at their own moments — its uplink to a real Mosquitto and the uplink testkit's head-end.
//!
//! Staircase A's feeder draws the dwellings' load plus a tap (a cable spliced in before the dwellings'
//! meters): after `[balance] intervals` intervals over the allowance the gateway raises event 70 with
//! the figures, the head-end receives it, and `concentrator status` names the group as a problem in
//! kWh and percent. Staircase B's feeder draws exactly its dwellings' load: judged, never an event.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{temp_dir, unix_now, uplink_section, Daemon};
use concentrator_appliance::status::Status;
use concentrator_protocol::*;
use concentrator_uplink::testkit::broker::{skip_without_mosquitto, Broker};
use concentrator_uplink::testkit::headend::{HeadEnd, Log};

const GW: &str = "gw-balance";
const INTERVAL_S: u64 = 20;

/// (address, bus, dwelling, load W, extra keys)
const METERS: [(&str, &str, &str, u32, &str); 6] = [
    (
        "000000000001",
        "feeders",
        "stair-A main",
        45_000,
        "role = \"feeder\"\ngroup = \"stair-A\"",
    ),
    (
        "000000000002",
        "flats",
        "A-1",
        10_000,
        "group = \"stair-A\"",
    ),
    (
        "000000000003",
        "flats",
        "A-2",
        10_000,
        "group = \"stair-A\"",
    ),
    (
        "000000000004",
        "feeders",
        "stair-B main",
        20_000,
        "role = \"feeder\"\ngroup = \"stair-B\"",
    ),
    (
        "000000000005",
        "flats",
        "B-1",
        10_000,
        "group = \"stair-B\"",
    ),
    (
        "000000000006",
        "flats",
        "B-2",
        10_000,
        "group = \"stair-B\"",
    ),
];

fn config(dir: &Path, broker: &Broker) -> PathBuf {
    let d = dir.display();
    let mut text = format!(
        "[gateway]\nid = \"{GW}\"\nstore = \"{d}/store\"\n\n[balance]\ninterval_s = {INTERVAL_S}\nloss_percent = 5.0\nloss_wh = 50\nintervals = 2\n"
    );
    for bus in ["feeders", "flats"] {
        text.push_str(&format!(
            "\n[[bus]]\nname = \"{bus}\"\nbackend = \"sim\"\nbaud = 9600\nformat = \"8E1\"\npoll_interval_s = 1\n"
        ));
    }
    for (address, bus, dwelling, load, extra) in METERS {
        text.push_str(&format!(
            "\n[[meter]]\nbus = \"{bus}\"\naddress = \"{address}\"\ndriver = \"dlt645\"\ndwelling = \"{dwelling}\"\nsim = {{ load_w = {load}, start_kwh = 100.0 }}\n{extra}\n"
        ));
    }
    let names: Vec<&str> = METERS.iter().map(|m| m.0).collect();
    text.push_str(&uplink_section(dir, broker, GW, &names));
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn status(dir: &Path) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(dir.join("store/status.json")).ok()?).ok()
}

/// Gateway-scope events with `code`.
fn events(log: &Log, code: u16) -> Vec<Event> {
    log.up
        .iter()
        .filter(|r| r.frame.header.tid.is_none())
        .filter_map(|r| match &r.frame.body {
            Body::Event(e) if e.code == code => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tap_before_the_dwellings_meters_raises_the_imbalance_event_at_the_head_end() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("balance");
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-balance");
    let path = config(&dir, &broker);
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_concentratord"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    let daemon = Daemon::start(&path);

    // The first whole interval starts within 20 s, two over the allowance, then the grace: ~80 s at most.
    head.wait_for(
        5 * INTERVAL_S + 20,
        "the imbalance event of staircase A",
        |l| !events(l, event_code::BLOCK_IMBALANCE).is_empty(),
    );
    let imbalance = {
        let log = head.log.lock().unwrap();
        events(&log, event_code::BLOCK_IMBALANCE)
    };
    assert_eq!(
        imbalance.len(),
        1,
        "one event, not one per interval: {imbalance:?}"
    );
    let e = &imbalance[0];
    assert_eq!(e.severity, Severity::Alarm);
    let detail = e.detail.as_deref().unwrap();
    assert!(
        detail.starts_with("group stair-A: over the allowance for 2 intervals"),
        "{detail}"
    );
    let [start, end, feeder, dwellings, difference, allowed] = e.values[..] else {
        panic!("six values: {e:?}")
    };
    assert_eq!(end - start, INTERVAL_S as i64, "{e:?}");
    assert!(
        e.at >= end as u64 && e.at <= unix_now(),
        "raised after the interval: {e:?}"
    );
    assert_eq!(start % INTERVAL_S as i64, 0, "aligned on the clock: {e:?}");
    // 45 kW for 20 s is 250 Wh; the dwellings 2 × 10 kW, 111 Wh. Registers count 10 Wh steps and each
    // boundary is interpolated, hence the margins.
    assert!((feeder - 250).abs() <= 30, "{e:?}");
    assert!((dwellings - 111).abs() <= 30, "{e:?}");
    assert_eq!(difference, feeder - dwellings, "{e:?}");
    assert!(difference > allowed, "{e:?}");
    assert_eq!(allowed, (feeder as f64 * 0.05).round() as i64 + 50, "{e:?}");

    // Staircase B is judged too, within its allowance: no event, and no 71 without a 70.
    let until = Instant::now() + Duration::from_secs(3 * INTERVAL_S);
    let s = loop {
        let s = status(&dir);
        if let Some(s) = s.filter(|s| {
            s.balance
                .as_ref()
                .and_then(|b| b.groups.get("stair-B"))
                .is_some_and(|g| g.state.judged >= 2)
        }) {
            break s;
        }
        assert!(
            Instant::now() < until,
            "stair-B judged twice\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let b = s.balance.as_ref().unwrap();
    let a = &b.groups["stair-A"];
    assert!(a.state.alarm && a.state.over >= 2, "{a:?}");
    assert_eq!(a.feeder, "feeders/000000000001");
    assert_eq!(a.dwellings, 2);
    let stair_b = &b.groups["stair-B"];
    assert_eq!(stair_b.state.over, 0, "{stair_b:?}");
    assert!(!stair_b.state.alarm, "{stair_b:?}");
    {
        let log = head.log.lock().unwrap();
        let all: Vec<Event> = events(&log, event_code::BLOCK_IMBALANCE)
            .into_iter()
            .chain(events(&log, event_code::BLOCK_BALANCED))
            .collect();
        assert!(
            all.iter()
                .all(|e| e.detail.as_deref().unwrap().starts_with("group stair-A")),
            "nothing about stair-B: {all:?}"
        );
    }

    // What the installer reads: the group in words, and a problem (exit code 1).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["status", "--file"])
        .arg(dir.join("store/status.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for part in [
        "block balance: every 20 s, 5 % plus 0.050 kWh allowed for losses, an alarm after 2 intervals over",
        "group stair-A: feeder feeders/000000000001 and 2 dwelling meters",
        "ALARM raised",
        "- group stair-A: from ",
        "possible theft or a fault between the feeder meter feeders/000000000001",
        "group stair-B: feeder feeders/000000000004",
        " kWh (",
        " %) unaccounted for",
    ] {
        assert!(text.contains(part), "{part}:\n{text}");
    }
    assert!(
        !text.contains("- group stair-B"),
        "stair-B is no problem:\n{text}"
    );

    // The counters and the alarm are kept in the store.
    let kept = std::fs::read_to_string(dir.join("store/balance.json")).unwrap();
    assert!(kept.contains("\"alarm\": true"), "{kept}");
    drop(daemon);
}
