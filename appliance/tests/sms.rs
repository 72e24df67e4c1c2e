//! The SMS path end to end (issue 19 item 6): `concentratord` with its modem on a pseudo-terminal served
//! by the simulated modem, its broker down. The meter's credit runs out, the supply is cut, and after
//! `sms_after_s` without the data link the cut-off event goes to the head-end's number in the signed
//! SMS form, which the head-end's decoder verifies with the gateway's key; a tenant's BAL query is
//! answered with the balance, a wrong PIN refused; the month's counters show in `concentrator status`
//! and, once the SMS budget is used up, BAL is no longer answered and event 80 is queued once.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{temp_dir, write_setup, Daemon, TestMeter};
use concentrator_hal::pty::PtyPair;
use concentrator_protocol::{event_code, MessageId, Scope};
use concentrator_uplink::modem::sim::{SentSms, SimModem};
use concentrator_uplink::testkit::{keys, tid};

const HEADEND: &str = "+4930123456";
const TENANT: &str = "+491511111111";
const STRANGER: &str = "+491522222222";

fn wait_sent(modem: &SimModem, daemon: &Daemon, to: &str, n: usize) -> Vec<SentSms> {
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let sent: Vec<SentSms> = modem
            .sent_sms()
            .into_iter()
            .filter(|s| s.to == to)
            .collect();
        if sent.len() >= n {
            return sent;
        }
        assert!(
            Instant::now() < until,
            "no SMS #{n} to {to} (sent: {:?}); log:\n{}",
            modem.sent_sms(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["status", "--file"])
        .arg(dir.join("store/status.json"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A gateway with one fast-consuming meter (`opening_minor` of credit), its uplink's broker a closed
/// port, and the simulated modem on a pseudo-terminal as its `[modem]` with `modem` added; the tenant
/// of flat-M-1 has PIN 4711. Returns the configuration, the modem, the pty (keep it) and the
/// gateway's IK.
fn setup(
    dir: &Path,
    opening_minor: i64,
    modem_keys: &str,
) -> (std::path::PathBuf, SimModem, PtyPair, [u8; 16]) {
    // 2.5 cents a second: a small credit is gone within seconds.
    let meters = [TestMeter {
        bus: "a",
        address: "000000000501".into(),
        meter_id: "M-1".into(),
        load_w: 360_000,
        start_kwh: 10.0,
        opening_minor,
    }];
    let (path, _pki) = write_setup(dir, &meters, 25_000, 1, None);

    // The uplink's keys; its broker is a closed port, so the data link stays down.
    let (ck, ik) = keys(Scope::Gateway);
    let (mck, mik) = keys(Scope::Meter(tid(1)));
    std::fs::write(
        dir.join("keys.toml"),
        format!(
            "mode = \"aes\"\n[gateway]\nck = \"{}\"\nik = \"{}\"\n[[meter]]\nmeter = \"M-1\"\ntid = \"{}\"\nck = \"{}\"\nik = \"{}\"\n",
            hex::encode(ck),
            hex::encode(ik),
            hex::encode(tid(1).0),
            hex::encode(mck),
            hex::encode(mik)
        ),
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);

    // The tenant's PIN, stored hashed.
    let hash = concentrator_mpc::password::hash("4711").unwrap();
    std::fs::write(
        dir.join("pins.toml"),
        format!("\"flat-M-1\" = \"{hash}\"\n"),
    )
    .unwrap();

    // The modem: the simulated one on a pseudo-terminal; the daemon opens the slave side.
    let pty = PtyPair::open().unwrap();
    let modem = SimModem::new();
    modem.serve_file(pty.master().unwrap()).unwrap();

    let d = dir.display();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[uplink]\nbroker = \"mqtt://127.0.0.1:{port}\"\nkeys = \"{d}/keys.toml\"\n\n[modem]\nport = \"{}\"\napn = \"internet\"\ncheck_interval_s = 1\nsms_number = \"{HEADEND}\"\nbal_pins_file = \"{d}/pins.toml\"\n{modem_keys}\n",
        pty.slave_path().display()
    ));
    std::fs::write(&path, text).unwrap();
    (path, modem, pty, ik)
}

#[test]
fn urgent_events_and_bal_go_by_sms_while_the_data_link_is_down() {
    let dir = temp_dir("sms-path");
    let (path, modem, _pty, ik) = setup(
        &dir,
        10,
        "sms_after_s = 2\nsms_per_month = 3\ndata_mib_per_month = 50",
    );
    let mut daemon = Daemon::start(&path);

    // The cut-off goes up by SMS, in the signed form the head-end verifies with the gateway's IK.
    let sent = wait_sent(&modem, &daemon, HEADEND, 1);
    let form = &sent[0].text;
    assert!(form.starts_with("CG1 gw-test "), "{form}");
    assert!(form.len() <= 160, "{form}");
    let event = concentrator_protocol::sms::decode(form, &[ik]).unwrap();
    assert_eq!(event.event.code, event_code::RELAY_OPENED);
    assert_eq!(event.tid, Some(tid(1)));
    assert!(event.event.at <= common::unix_now());
    assert!(
        concentrator_protocol::sms::decode(form, &[[0; 16]]).is_err(),
        "another key does not verify it"
    );

    // BAL with the right PIN: the balance in words and currency.
    modem.deliver_sms(TENANT, "BAL flat-M-1 4711");
    let answer = wait_sent(&modem, &daemon, TENANT, 1);
    let answer = &answer[0].text;
    assert!(answer.starts_with("Flat flat-M-1: "), "{answer}");
    assert!(answer.contains(" EUR "), "{answer}");
    assert!(answer.ends_with("supply off"), "{answer}");

    // A wrong PIN: refused, with nothing about the account.
    modem.deliver_sms(STRANGER, "BAL flat-M-1 0000");
    let refusal = wait_sent(&modem, &daemon, STRANGER, 1);
    assert_eq!(refusal[0].text, concentrator_appliance::sms::REFUSAL);

    // The budget (3) is used up: the next query gets no answer.
    std::thread::sleep(Duration::from_millis(2500));
    modem.deliver_sms(TENANT, "BAL flat-M-1 4711");
    std::thread::sleep(Duration::from_millis(3000));
    let shown = status(&dir);
    daemon.stop();
    let log = daemon.log();

    // Each event went by SMS once, however many checks passed.
    let to_headend = modem.sent_sms().iter().filter(|s| s.to == HEADEND).count();
    assert_eq!(to_headend, 1, "{:?}", modem.sent_sms());
    assert_eq!(
        modem.sent_sms().iter().filter(|s| s.to == TENANT).count(),
        1,
        "no answer over the budget"
    );
    assert!(
        log.contains("the month's SMS budget (3) is used up"),
        "{log}"
    );
    assert_eq!(
        log.matches("the month's SMS budget (3) is used up").count(),
        1,
        "event 80 once: {log}"
    );
    assert!(
        shown.contains("SMS ")
            && shown.contains(": 3 of 3 sent (1 events, 1 BAL answered, 1 refused)"),
        "{shown}"
    );
    assert!(shown.contains("of 50.0 MiB"), "{shown}");
    assert!(
        shown.contains("the data link is down: urgent events go by SMS"),
        "{shown}"
    );
    // Remembered durably as sent by SMS.
    let budget = std::fs::read_to_string(dir.join("store/sms-budget.json")).unwrap();
    assert!(budget.contains(&hex::encode(event.id.0)), "{budget}");
    assert_eq!(modem.stored_sms(), 0, "every message read was deleted");

    // After a restart with budget to spare, the event (still in the outbox: the broker is down) does
    // not go by SMS again, nor does the cut-off the restarted ledger queues when it reads the relay
    // back (the same code for the same meter within six hours), and the month's count goes on.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("sms_per_month = 3", "sms_per_month = 10");
    std::fs::write(&path, text).unwrap();
    let mut daemon = Daemon::start(&path);
    let until = Instant::now() + Duration::from_secs(30);
    let mut shown = status(&dir);
    while !shown.contains("of 10 sent") || !shown.contains("urgent events go by SMS") {
        assert!(Instant::now() < until, "{shown}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
        shown = status(&dir);
    }
    std::thread::sleep(Duration::from_millis(2000));
    daemon.stop();
    let ids: Vec<MessageId> = modem
        .sent_sms()
        .iter()
        .filter(|s| s.to == HEADEND)
        .map(|s| {
            concentrator_protocol::sms::decode(&s.text, &[ik])
                .unwrap()
                .id
        })
        .collect();
    assert_eq!(
        ids.iter().filter(|i| **i == event.id).count(),
        1,
        "{:?}\n{}",
        modem.sent_sms(),
        daemon.log()
    );
    assert_eq!(ids.len(), 1, "{:?}", modem.sent_sms());
    // The month's count went on from 3 (it was not reset by the restart).
    let sent: u32 = shown
        .split(" of 10 sent")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(sent, 3, "{shown}");
}

#[test]
fn a_used_up_data_budget_stops_readings_and_is_reported_once() {
    let dir = temp_dir("sms-data");
    let (path, _modem, _pty, _ik) = setup(&dir, 1_000_000, "data_mib_per_month = 1");
    // This month's counters say the data is used up (as a restart in the month would find them).
    let month: String = concentrator_mpc::human::local_time(common::unix_now())
        .chars()
        .take(7)
        .collect();
    std::fs::create_dir_all(dir.join("store")).unwrap();
    std::fs::write(
        dir.join("store/sms-budget.json"),
        format!("{{\"month\": \"{month}\", \"sms_sent\": 0, \"events_sent\": 0, \"bal_answered\": 0, \"bal_refused\": 0, \"data_bytes\": 1048576, \"sms_budget_reported\": false, \"data_budget_reported\": false, \"sent_ids\": []}}"),
    )
    .unwrap();
    let mut daemon = Daemon::start(&path);
    let outbox = || -> Option<u64> {
        let text = std::fs::read_to_string(dir.join("store/status.json")).ok()?;
        let s: concentrator_appliance::status::Status = serde_json::from_str(&text).ok()?;
        s.modem.as_ref()?.sms.as_ref()?;
        Some(s.uplink?.outbox)
    };
    let until = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(n) = outbox() {
            break n;
        }
        assert!(Instant::now() < until, "no status; log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    // The bus polls every second; no reading is queued.
    std::thread::sleep(Duration::from_millis(4000));
    let later = outbox().unwrap();
    let shown = status(&dir);
    daemon.stop();
    let log = daemon.log();
    assert!(
        log.contains("bus a meter 000000000501 (flat-M-1): energy-import-total"),
        "the bus polled: {log}"
    );
    assert_eq!(
        log.matches("the month's data budget (1 MiB) is used up")
            .count(),
        1,
        "{log}"
    );
    assert!(
        later <= first + 1,
        "outbox grew from {first} to {later}: {log}"
    );
    assert!(shown.contains("data 1.0 MiB of 1.0 MiB"), "{shown}");
}

#[test]
fn bad_sms_settings_are_refused_at_their_place() {
    let dir = temp_dir("sms-bad");
    std::fs::write(dir.join("clear.toml"), "\"flat-M-1\" = \"4711\"\n").unwrap();
    let (path, _modem, _pty, _ik) = setup(&dir, 10, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(HEADEND, "call me")
        .replace("pins.toml", "clear.toml")
        + "sms_after_s = 0\n";
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concentratord"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`call me` is not a phone number"), "{err}");
    assert!(
        err.contains("the PIN of dwelling flat-M-1 is not a PIN hash (never the PIN itself)"),
        "{err}"
    );
    assert!(err.contains("concentrator web hash-pin"), "{err}");
    assert!(err.contains("`sms_after_s` cannot be 0"), "{err}");
}

/// Figures for the closing note, not a check: the uplink bytes one meter costs per day, as the
/// data budget counts them (each queued frame and an allowance for envelope, topic, MQTT and TLS),
/// measured on the running daemon, then what a monthly data budget allows. Run with
/// `cargo test -p concentrator-appliance --test sms -- --ignored --nocapture`.
#[test]
#[ignore = "prints figures; run by hand"]
fn figures_uplink_bytes_per_meter_per_day() {
    let dir = temp_dir("sms-figures");
    let (path, _modem, _pty, _ik) = setup(&dir, 1_000_000, "");
    let mut daemon = Daemon::start(&path);
    std::thread::sleep(Duration::from_secs(20));
    let text = std::fs::read_to_string(dir.join("store/status.json")).unwrap();
    daemon.stop();
    let s: concentrator_appliance::status::Status = serde_json::from_str(&text).unwrap();
    let bytes = s.modem.unwrap().sms.unwrap().data_bytes;
    let messages = s.uplink.unwrap().outbox.max(1);
    let per_message = bytes as f64 / messages as f64;
    println!(
        "measured: {bytes} bytes in {messages} queued messages of one meter (readings, account summaries, events): {per_message:.0} bytes a message"
    );
    let month_days = 30.44;
    for (poll_s, label) in [(60u64, "1 min"), (900, "15 min"), (3600, "1 h")] {
        let per_day = per_message * (86_400 / poll_s) as f64;
        print!(
            "poll every {label}: {:.1} KiB per meter per day without limits",
            per_day / 1024.0
        );
        for (mib, meters) in [(10u64, 32u64), (50, 32)] {
            let cap = (mib * 1024 * 1024) as f64 / month_days / meters as f64;
            print!(
                "; with data_mib_per_month = {mib} for {meters} meters: {:.1} KiB{}",
                per_day.min(cap) / 1024.0,
                if per_day > cap {
                    " (readings dropped late in the month)"
                } else {
                    ""
                }
            );
        }
        println!();
    }
    println!(
        "SMS path: one urgent event is one SMS of at most 160 characters; sms_per_month bounds them per gateway"
    );
}
