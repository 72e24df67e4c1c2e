//! The SMS path across the seam, with the real processes (issue 19 item 6): `concentratord` with the
//! simulated modem on a pseudo-terminal, the real Mosquitto and the head-end process. The broker goes
//! down; an installer opens a meter's relay; the cut-off goes by SMS in the signed form; the operator
//! feeds that text to the running head-end (`concentrator-headend sms ingest`), which verifies it with
//! the gateway's own security context from AKA and stores it; once the broker is back, the MQTT copy of
//! the same event arrives and is not stored a second time.

use std::process::Command;
use std::time::{Duration, Instant};

use concentrator_hal::pty::PtyPair;
use concentrator_system::{
    prereq, sibling_binary, BrokerChoice, GatewayRun, HeadEndRun, Options, System,
};
use concentrator_uplink::modem::sim::SimModem;

mod common;

use common::{customer_table, gateway_table, meter_table, temp_dir, M, NO_FRIENDLY};

const HEADEND_NUMBER: &str = "+4930123456";
const METER: &str = "SMS-1";

fn status(system: &System) -> serde_json::Value {
    let text =
        std::fs::read_to_string(system.gateway_store.join("status.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

fn wait(what: &str, secs: u64, system: &System, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            Instant::now() < until,
            "{what}: not within {secs} s\n{}",
            system.gateways[0].log_tail(80)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_cut_off_sent_by_sms_is_verified_and_stored_once_by_the_running_head_end() {
    if prereq::skip(prereq::mosquitto_missing()) {
        return;
    }
    let bin = |n: &str| sibling_binary(n).unwrap_or_else(|e| panic!("{e}"));
    let mut spec = gateway_table("gw-sms", NO_FRIENDLY, &[("rs485-1", 1)]);
    spec.push_str(&meter_table(
        "gw-sms",
        "rs485-1",
        &M {
            number: METER,
            address: "000000000801",
            load_w: 100,
            opening_minor: 5_000,
        },
        None,
    ));
    spec.push_str(&customer_table("C-1", 1, &[METER]));
    let dir = temp_dir("e2e", "sms");
    let mut system = System::start(&Options {
        dir: dir.clone(),
        broker: BrokerChoice::Mosquitto,
        gateway: GatewayRun::Child {
            bin: bin("concentratord"),
        },
        headend: HeadEndRun::Child {
            bin: bin("concentrator-headend"),
        },
        spec,
        register: vec![],
        key_lifetime_s: None,
        headend_settings: Vec::new(),
        extra_acl: None,
    })
    .unwrap_or_else(|e| panic!("starting the system in {}: {e:#}", dir.display()));
    // (The head-end is a child process holding its store: attachment shows as messages acknowledged.)
    wait(
        "the gateway to attach and be acknowledged",
        90,
        &system,
        || status(&system)["uplink"]["acked"].as_u64().unwrap_or(0) > 0,
    );

    // The gateway gets its modem: the simulated one on a pseudo-terminal.
    system.stop_gateway(false).unwrap();
    let pty = PtyPair::open().unwrap();
    let modem = SimModem::new();
    modem.serve_file(pty.master().unwrap()).unwrap();
    let mut text = std::fs::read_to_string(&system.gateway_config).unwrap();
    text.push_str(&format!(
        "\n[modem]\nport = \"{}\"\napn = \"internet\"\ncheck_interval_s = 1\nsms_number = \"{HEADEND_NUMBER}\"\nsms_after_s = 2\nsms_per_month = 20\n",
        pty.slave_path().display()
    ));
    std::fs::write(&system.gateway_config, text).unwrap();
    system.start_gateway().unwrap();
    wait("the uplink to connect again", 60, &system, || {
        status(&system)["uplink"]["connected"] == true
    });

    // The data link goes: the broker stops. An installer opens the meter's relay (a cut-off).
    system.broker.stop().unwrap();
    wait("the uplink to notice", 30, &system, || {
        status(&system)["uplink"]["connected"] == false
    });
    let out = Command::new(bin("concentrator"))
        .args([
            "relay",
            METER,
            "open",
            "--by",
            "installer-sms-test",
            "--config",
        ])
        .arg(&system.gateway_config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relay open: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait("the cut-off by SMS", 60, &system, || {
        modem.sent_sms().iter().any(|s| s.to == HEADEND_NUMBER)
    });
    let sms = modem
        .sent_sms()
        .into_iter()
        .find(|s| s.to == HEADEND_NUMBER)
        .unwrap();
    assert!(sms.text.starts_with("CG1 gw-sms "), "{}", sms.text);

    // The operator hands the text to the running head-end: verified with the gateway's AKA context.
    let ingest = |text: &str| {
        let out = Command::new(bin("concentrator-headend"))
            .args(["sms", "ingest", "--config"])
            .arg(&system.headend_config)
            .args(["--from", "+491700000000", text])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = ingest(&sms.text);
    assert!(ok, "{said}");
    assert!(
        said.contains("gateway gw-sms") && said.contains("supply cut off"),
        "{said}"
    );
    assert!(!said.contains("already stored"), "{said}");
    // Altered in transit: refused.
    let mut forged = sms.text.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (ok, said) = ingest(&forged);
    assert!(!ok, "an altered text was accepted: {said}");

    // The broker is back: the MQTT copy of the same event arrives and is not stored again.
    system.broker.start_again().unwrap();
    wait("the outbox to drain", 90, &system, || {
        let s = status(&system);
        s["uplink"]["connected"] == true && s["uplink"]["outbox"] == 0
    });
    let (ok, said) = ingest(&sms.text);
    assert!(ok && said.contains("already stored"), "{said}");
    let headend_config = system.headend_config.clone();
    system.stop_gateway(false).unwrap();
    system.stop().unwrap();
    let store = concentrator_system::headend_proc::open_store(&headend_config).unwrap();
    let cut_offs: Vec<_> = store
        .ingested("event", METER)
        .unwrap()
        .into_iter()
        .filter(|i| i.body["code"] == 1)
        .collect();
    assert_eq!(
        cut_offs.len(),
        1,
        "the cut-off stored once, by SMS and MQTT together: {cut_offs:?}"
    );
    drop(pty);
}
