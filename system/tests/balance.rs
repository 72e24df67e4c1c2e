//! Issue #19, item 3, end to end with the real parts: the block balance provisioned by the head-end
//! (the meters' `role`/`group` and the gateway's `[balance]` in the provisioning file, into the
//! gateway's bundle), `concentratord` on simulated meters over Mosquitto, and the head-end's engine.
//! Staircase A's feeder meter draws its dwellings' load plus a tap; its theft/loss event (70) is
//! stored at the head-end and `concentrator-headend status` shows it under the gateway, in words with
//! the figures. Staircase B is balanced: nothing about it.
//!
//! Where Mosquitto is not installed the test fails with the install command, unless
//! `CONCENTRATOR_ALLOW_SKIP=1`.

use std::time::{Duration, Instant};

use concentrator_system::{
    prereq, sibling_binary, BrokerChoice, GatewayRun, HeadEndRun, Options, System,
};

mod common;

use common::{customer_table, gateway_table, meter_table, temp_dir, M, NO_FRIENDLY};

const GW: &str = "gw-balance";

fn spec() -> String {
    let mut s = gateway_table(GW, NO_FRIENDLY, &[("feeders", 1), ("flats", 1)]);
    s.push_str(
        "\n[gateway.balance]\ninterval_s = 20\nloss_percent = 5.0\nloss_wh = 50\nintervals = 2\n",
    );
    let meters = [
        ("FA", "000000000601", "feeders", 45_000, "feeder", "stair-A"),
        ("A1", "000000000602", "flats", 10_000, "dwelling", "stair-A"),
        ("A2", "000000000603", "flats", 10_000, "dwelling", "stair-A"),
        ("FB", "000000000604", "feeders", 20_000, "feeder", "stair-B"),
        ("B1", "000000000605", "flats", 10_000, "dwelling", "stair-B"),
        ("B2", "000000000606", "flats", 10_000, "dwelling", "stair-B"),
    ];
    for (number, address, bus, load_w, role, group) in meters {
        let m = M {
            number,
            address,
            load_w,
            opening_minor: 1_000_000,
        };
        s.push_str(&meter_table(GW, bus, &m, None));
        s.push_str(&format!("role = \"{role}\"\ngroup = \"{group}\"\n"));
    }
    let numbers: Vec<&str> = meters.iter().map(|m| m.0).collect();
    s.push_str(&customer_table("C-1", 1, &numbers));
    s
}

#[test]
fn a_tap_on_a_staircase_reaches_the_head_end_and_its_status_in_words() {
    if prereq::skip(prereq::mosquitto_missing()) {
        return;
    }
    let bin = sibling_binary("concentratord").unwrap_or_else(|e| panic!("{e}"));
    let dir = temp_dir("e2e", "balance");
    let mut system = System::start(&Options {
        dir: dir.clone(),
        broker: BrokerChoice::Mosquitto,
        gateway: GatewayRun::Child { bin },
        headend: HeadEndRun::InProcess,
        spec: spec(),
        register: vec![],
        key_lifetime_s: None,
        headend_settings: Vec::new(),
        extra_acl: None,
    })
    .unwrap_or_else(|e| panic!("starting the system in {}: {e:#}", dir.display()));
    if let Err(e) = system.wait_attached(Duration::from_secs(60)) {
        panic!("{e:#}\n{}", system.gateways[0].log_tail(60));
    }
    let bundle = std::fs::read_to_string(&system.gateway_config).unwrap();
    assert!(
        bundle.contains("[balance]") && bundle.contains("role = \"feeder\""),
        "{bundle}"
    );

    // Two 20 s intervals over the allowance after the first whole one begins, plus the grace.
    let until = Instant::now() + Duration::from_secs(150);
    let report = loop {
        let store = system.store().unwrap();
        let report = concentrator_headend::status::report(&store, "EUR").unwrap();
        if report.contains("block stair-A: THEFT/LOSS ALARM since") {
            break report;
        }
        assert!(
            Instant::now() < until,
            "no imbalance event at the head-end; status:\n{report}\ngateway log:\n{}",
            system.gateways[0].log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let line = report
        .lines()
        .find(|l| l.contains("block stair-A"))
        .unwrap();
    let gateway_line = report
        .lines()
        .position(|l| l.starts_with(&format!("gateway {GW}:")))
        .unwrap();
    let block_line = report
        .lines()
        .position(|l| l.contains("block stair-A"))
        .unwrap();
    assert_eq!(block_line, gateway_line + 1, "under its gateway:\n{report}");
    for part in [
        "(event 70): from ",
        "the feeder measured 0.2",
        "kWh, the dwellings 0.",
        "% of the feeder's)",
        "allowed; inspect the wiring between the feeder meter and the dwellings' meters",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    assert!(
        !report.contains("block stair-B"),
        "stair-B is balanced:\n{report}"
    );

    // The event as stored: the gateway's scope, the six figures.
    let store = system.store().unwrap();
    let events = store.ingested("event", &format!("gw:{GW}")).unwrap();
    let imbalance: Vec<_> = events.iter().filter(|e| e.body["code"] == 70).collect();
    assert_eq!(imbalance.len(), 1, "{imbalance:?}");
    let values = imbalance[0].body["values"].as_array().unwrap();
    assert_eq!(values.len(), 6, "{values:?}");
    let v = |i: usize| values[i].as_i64().unwrap();
    assert_eq!(v(1) - v(0), 20);
    assert_eq!(v(4), v(2) - v(3));
    assert!(v(4) > v(5), "{values:?}");
    system.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
