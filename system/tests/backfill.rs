//! Issue #19, item 2, end to end with the real parts: Mosquitto, the head-end as its own process
//! (`concentrator-headend run`), `concentratord` on a simulated DL/T 645 meter that freezes its
//! register every minute. The gateway is down for 130 s: its readings of that time are never
//! taken, and the head-end sees the gap in the readings it holds, asks the gateway for it (0x8E), and
//! the gateway reads the meter's stored freezes back and sends those inside the gap (0x0E). In the
//! head-end's store the gap is filled, each filled reading marked backfilled and equal to what the
//! meter drew, and no interval is held twice.
//!
//! Where Mosquitto is not installed the test fails with the install command, unless
//! `CONCENTRATOR_ALLOW_SKIP=1`.

use std::time::{Duration, Instant};

use concentrator_system::{
    headend_proc, prereq, sibling_binary, BrokerChoice, GatewayRun, HeadEndRun, Options, System,
};

mod common;

use common::{customer_table, gateway_table, meter_without_sim, temp_dir, M, NO_FRIENDLY};

fn unix_now() -> u64 {
    concentrator_protocol::unix_now()
}

const LOAD_W: u32 = 36_000;
const FREEZE_S: u64 = 60;

/// One gateway polling meter B1 every 2 s; B1 draws 36 kW (10 Wh a second) since `since`, from
/// 100 kWh, and freezes its register every minute.
fn spec(since: u64) -> String {
    let m = M {
        number: "B1",
        address: "000000000601",
        load_w: LOAD_W,
        opening_minor: 1_000_000,
    };
    let mut s = gateway_table("gw-backfill", NO_FRIENDLY, &[("rs485-1", 2)]);
    s.push_str(&meter_without_sim("gw-backfill", "rs485-1", &m));
    s.push_str(&format!(
        "sim = {{ load_w = {LOAD_W}, start_kwh = 100.0, running_since_unix = {since}, freeze_period_s = {FREEZE_S} }}\n"
    ));
    s.push_str(&customer_table("C-1", 1, &["B1"]));
    s
}

/// The backfilled readings the head-end's log says it stored for B1 so far.
fn stored_in_log(log: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split("meter B1: ").nth(1))
        .filter_map(|rest| rest.split(" backfilled readings stored").next())
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

/// Whether the head-end's log shows an answer after its last backfill request for B1.
fn last_request_answered(log: &std::path::Path) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let Some(last) = lines
        .iter()
        .rposition(|l| l.contains("backfill request for meter B1 "))
    else {
        return false;
    };
    lines[last..].iter().any(|l| {
        l.contains("backfill of meter B1 under way")
            || l.contains("backfill of meter B1 not carried out")
    })
}

#[test]
fn a_gap_left_while_the_gateway_was_down_is_filled_from_the_meters_history_once() {
    if prereq::skip(prereq::mosquitto_missing()) {
        return;
    }
    let bin = |n: &str| sibling_binary(n).unwrap_or_else(|e| panic!("{e}"));
    let dir = temp_dir("e2e", "backfill");
    let since = unix_now();
    let mut system = System::start(&Options {
        dir: dir.clone(),
        broker: BrokerChoice::Mosquitto,
        gateway: GatewayRun::Child {
            bin: bin("concentratord"),
        },
        headend: HeadEndRun::Child {
            bin: bin("concentrator-headend"),
        },
        spec: spec(since),
        register: vec![],
        key_lifetime_s: None,
        headend_settings: vec![
            ("reconcile".into(), "interval_s".into(), 3),
            ("reconcile".into(), "result_timeout_s".into(), 10),
        ],
        extra_acl: None,
    })
    .unwrap_or_else(|e| panic!("starting the system in {}: {e:#}", dir.display()));
    let config = system.headend_config.clone();
    let log = system.headend.log.clone();

    // Live readings for a while, then the gateway is down for 130 s (two freezes at least): nothing
    // is read meanwhile.
    std::thread::sleep(Duration::from_secs(20));
    system.stop_gateway(false).unwrap();
    let down_from = unix_now();
    std::thread::sleep(Duration::from_secs(130));
    let down_to = unix_now();
    system.start_gateway().unwrap();

    // The head-end finds the gap once readings come again and asks for it; the freezes inside it
    // come back.
    let until = Instant::now() + Duration::from_secs(120);
    while stored_in_log(&log) < 2 {
        assert!(
            Instant::now() < until,
            "no backfill within 2 minutes; the head-end's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A little longer: live readings go on, and any second request or resend would show as a
    // duplicate below.
    std::thread::sleep(Duration::from_secs(8));
    // The last request sent (a second gap may be asked for on a loaded machine) has its answer.
    let until = Instant::now() + Duration::from_secs(60);
    while !last_request_answered(&log) {
        assert!(
            Instant::now() < until,
            "the last backfill request has no answer; the head-end's log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    system.stop().unwrap();

    let store = headend_proc::open_store(&config).unwrap();
    let mut all: Vec<(u64, i64, bool)> = store
        .ingested("readings", "B1")
        .unwrap()
        .iter()
        .flat_map(|i| i.body.as_array().cloned().unwrap_or_default())
        .filter(|r| {
            r["quantity"].as_u64()
                == Some(u64::from(
                    concentrator_protocol::Quantity::EnergyImportWh.code(),
                ))
        })
        .map(|r| {
            (
                r["at"].as_u64().unwrap(),
                r["value"].as_i64().unwrap()
                    * 10i64.pow(r["exponent"].as_i64().unwrap_or(0).max(0) as u32),
                r["backfilled"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    all.sort_unstable();
    let filled: Vec<&(u64, i64, bool)> = all.iter().filter(|r| r.2).collect();
    assert!(filled.len() >= 2, "{all:?}");
    for (at, wh, _) in &filled {
        // Inside the time the gateway was down (give or take a poll), on the meter's minute grid, and
        // what 36 kW since the start makes of 100 kWh (the register's 10 Wh resolution).
        assert!(
            *at + 4 >= down_from && *at <= down_to + 4,
            "backfilled reading at {at} outside the gap {down_from}..{down_to}: {all:?}"
        );
        assert_eq!(at % FREEZE_S, 0, "{at}");
        let expected = 100_000 + (u64::from(LOAD_W) * (at - since) / 3_600) as i64;
        assert!(
            (wh - expected).abs() <= 10,
            "at {at}: {wh} Wh, expected {expected}"
        );
    }
    // No interval held twice: no two readings less than half the 2 s poll apart, none twice.
    for w in all.windows(2) {
        assert!(w[1].0 > w[0].0, "two readings at {}: {all:?}", w[0].0);
        assert!(
            !(w[0].2 || w[1].2) || w[1].0 - w[0].0 >= 1,
            "a backfilled reading next to another at {} and {}",
            w[0].0,
            w[1].0
        );
    }
    let rec = store
        .backfill("B1")
        .unwrap()
        .expect("a backfill request for B1");
    assert_eq!(rec.result, Some(concentrator_protocol::result_code::DONE));
    let _ = std::fs::remove_dir_all(&dir);
}
