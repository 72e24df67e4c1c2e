//! End to end, with the real parts: Mosquitto (TLS, client certificates, the pilot's ACL), the
//! head-end, `concentratord` as a child process on simulated meters, and the phone client library
//! (`mpc`'s). Each test provisions its own block, as a utility would, and the gateway attaches every
//! meter with AKA before anything else happens.
//!
//! Where Mosquitto is not installed the tests fail with the install command, unless
//! `CONCENTRATOR_ALLOW_SKIP=1` (then they print `SKIPPED` and count in `target/skipped-tests.txt`).

use std::process::Command;
use std::time::{Duration, Instant};

use concentrator_ledger::testkit::{check_after_crash, Acknowledged};
use concentrator_ledger::SledStore;
use concentrator_mpc::backend::Notice;
use concentrator_mpc::client::{Client, Keys};
use concentrator_mpc::profile::Profile;
use concentrator_system::{
    prereq, sibling_binary, BrokerChoice, GatewayRun, HeadEndRun, Options, System,
};

mod common;

use common::{block, temp_dir, M, NO_FRIENDLY};

const ATTACH: Duration = Duration::from_secs(60);

/// Starts a block, or `None` (test skipped) without Mosquitto.
fn start(name: &str, spec: String, extra_acl: Option<String>) -> Option<System> {
    start_with(name, spec, extra_acl, None)
}

fn start_with(
    name: &str,
    spec: String,
    extra_acl: Option<String>,
    key_lifetime_s: Option<u64>,
) -> Option<System> {
    if prereq::skip(prereq::mosquitto_missing()) {
        return None;
    }
    let bin = sibling_binary("concentratord").unwrap_or_else(|e| panic!("{e}"));
    let mut system = System::start(&Options {
        dir: temp_dir("e2e", name),
        broker: BrokerChoice::Mosquitto,
        gateway: GatewayRun::Child { bin },
        headend: HeadEndRun::InProcess,
        spec,
        register: vec![("C-1".into(), "carol".into(), "s3cret-pass".into())],
        key_lifetime_s,
        headend_settings: Vec::new(),
        extra_acl,
    })
    .unwrap_or_else(|e| panic!("starting the system: {e:#}"));
    if let Err(e) = system.wait_attached(ATTACH) {
        panic!("{e:#}\n{}", gateway_log(&system));
    }
    Some(system)
}

fn gateway_log(system: &System) -> String {
    system.gateways[0].log_tail(60)
}

/// The customer's phone, logged in and watching.
fn phone(system: &System) -> (Client, Keys) {
    let path = &system.profiles["carol"];
    let profile = Profile::load(path).unwrap();
    let mut keys = profile.keys(path).unwrap();
    let mut client = Client::connect(&system.phone_addr.to_string(), &system.ca).unwrap();
    client
        .login(&mut keys, "s3cret-pass", &mut |_| Ok(()))
        .unwrap();
    client.watch().unwrap();
    (client, keys)
}

/// Waits for a pushed notice matching `pred`, skipping others.
fn wait_notice(
    client: &mut Client,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Notice) -> bool,
) -> Notice {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no notice: {what}");
        if let Some(n) = client.next_notice(Some(left)).unwrap() {
            if pred(&n) {
                return n;
            }
        }
    }
}

/// The gateway's own view (`status.json` in its store; null until it is written).
fn gateway_status(system: &System) -> serde_json::Value {
    let text =
        std::fs::read_to_string(system.gateway_store.join("status.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

fn gateway_account(system: &System, meter: &str) -> serde_json::Value {
    gateway_status(system)["accounts"][meter].clone()
}

fn wait_gateway(
    system: &System,
    meter: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + timeout;
    loop {
        let a = gateway_account(system, meter);
        if pred(&a) {
            return a;
        }
        assert!(
            Instant::now() < until,
            "gateway: {what}; last {a}\n{}",
            gateway_log(system)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// After the gateway stopped: the ledger's own crash checks (audit chain, balances recomputed from the
/// log, no serial twice) and the sum of tokens applied to `meter`.
fn ledger_tokens(system: &System, meter: &str, acked: &Acknowledged) -> i64 {
    let store = SledStore::open(&system.gateway_store.join("ledger")).unwrap();
    let report = check_after_crash(&store, acked).unwrap_or_else(|e| panic!("{e}"));
    report.meters[meter].tokens_minor
}

#[test]
fn a_top_up_from_the_phone_reconnects_the_meter_and_alerts_are_pushed() {
    let Some(mut system) = start(
        "topup",
        block(
            "gw-topup",
            NO_FRIENDLY,
            &[
                // 900 kW at 25 c/kWh: 6.25 cents a second; 4.00 falls below 3.00 in 16 s and is gone
                // in 64 s.
                M {
                    number: "FAST-1",
                    address: "000000000101",
                    load_w: 900_000,
                    opening_minor: 400,
                },
                M {
                    number: "SLOW-2",
                    address: "000000000102",
                    load_w: 1_000,
                    opening_minor: 5_000,
                },
            ],
        ),
        None,
    ) else {
        return;
    };
    let (mut client, _) = phone(&system);
    let views = client.meters().unwrap();
    assert_eq!(views.len(), 2, "{views:?}");

    // The low-credit alert is pushed when the gateway reports it, then the supply is cut.
    let low = wait_notice(
        &mut client,
        "low credit",
        Duration::from_secs(90),
        |n| matches!(n, Notice::LowCredit { meter, .. } if meter == "FAST-1"),
    );
    println!("pushed: {low:?}");
    wait_notice(
        &mut client,
        "supply cut",
        Duration::from_secs(90),
        |n| matches!(n, Notice::SupplyCut { meter, .. } if meter == "FAST-1"),
    );
    wait_gateway(&system, "FAST-1", "the cut", Duration::from_secs(30), |a| {
        a["relay_read_back"] == "open"
    });

    // Top up from the phone: the token reaches the gateway, the receipt comes back, the supply returns.
    let started = Instant::now();
    let purchase = client.top_up("FAST-1", 2_000).unwrap();
    let outcome = client
        .wait_applied("FAST-1", purchase.serial, Duration::from_secs(30))
        .unwrap();
    let Some(Notice::Applied {
        balance_after_minor,
        ..
    }) = outcome
    else {
        panic!("no receipt: {outcome:?}\n{}", gateway_log(&system));
    };
    println!("top-up to receipt: {:?}", started.elapsed());
    assert!(balance_after_minor > 1_000, "{balance_after_minor}");
    wait_notice(
        &mut client,
        "supply restored",
        Duration::from_secs(60),
        |n| matches!(n, Notice::SupplyRestored { meter, .. } if meter == "FAST-1"),
    );
    wait_gateway(
        &system,
        "FAST-1",
        "the reconnection",
        Duration::from_secs(30),
        |a| a["relay_read_back"] == "closed" && a["last_serial"] == 1,
    );
    let history = client.history(Some("FAST-1"), 50).unwrap();
    assert!(history.len() >= 4, "{history:?}");

    system.stop_gateway(false).unwrap();
    let mut acked = Acknowledged::new();
    acked.insert(("FAST-1".into(), 1), 2_000);
    assert_eq!(ledger_tokens(&system, "FAST-1", &acked), 2_000);
    system.stop().unwrap();
}

#[test]
fn inside_friendly_hours_credit_running_out_does_not_cut_the_supply() {
    // Friendly credit all day and all week: the account goes below zero, the supply stays on. (Outside
    // friendly hours the cut is the first test's.)
    let Some(mut system) = start(
        "friendly",
        block(
            "gw-friendly",
            r#"{ hours = [{ start = "00:00", end = "12:00" }, { start = "12:00", end = "00:00" }], weekends = true, holidays = true }"#,
            &[M {
                number: "KIND-1",
                address: "000000000201",
                load_w: 360_000,
                opening_minor: 50,
            }],
        ),
        None,
    ) else {
        return;
    };
    let a = wait_gateway(
        &system,
        "KIND-1",
        "credit below zero",
        Duration::from_secs(90),
        |a| a["balance_minor"].as_i64().is_some_and(|b| b < -100),
    );
    println!("friendly: {a}");
    std::thread::sleep(Duration::from_secs(5));
    let a = gateway_account(&system, "KIND-1");
    assert_ne!(
        a["relay_read_back"], "open",
        "cut inside friendly hours: {a}"
    );
    let view = system
        .store()
        .unwrap()
        .meter("KIND-1")
        .unwrap()
        .unwrap()
        .view;
    assert_eq!(view.supply_on, Some(true), "{view:?}");
    system.stop_gateway(false).unwrap();
    system.stop().unwrap();
}

#[test]
fn a_token_applied_locally_while_the_uplink_is_down_is_reconciled_without_double_credit() {
    let Some(mut system) = start(
        "offline",
        block(
            "gw-offline",
            NO_FRIENDLY,
            &[M {
                number: "OFF-1",
                address: "000000000301",
                load_w: 1_000,
                opening_minor: 1_000,
            }],
        ),
        None,
    ) else {
        return;
    };
    let (mut client, _) = phone(&system);

    // The broker goes away: the gateway is cut off from the head-end, the phone still reaches it.
    system.broker.stop().unwrap();
    let purchase = client.top_up("OFF-1", 700).unwrap();
    assert_eq!(
        client
            .wait_applied("OFF-1", purchase.serial, Duration::from_secs(3))
            .unwrap(),
        None,
        "applied with the broker down?"
    );
    // The customer hands the saved token to the gateway: `concentrator topup --config … --token FILE`.
    let token_file = system.dir.join("OFF-1-1.token");
    std::fs::write(&token_file, hex::encode(&purchase.token)).unwrap();
    let out = Command::new(sibling_binary("concentrator").unwrap())
        .arg("topup")
        .arg("--config")
        .arg(&system.gateway_config)
        .arg("--token")
        .arg(&token_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("applied token 1 to meter OFF-1: 7.00"),
        "{text}"
    );

    // The link returns: the receipt goes up, the head-end's pending delivery is answered "already done"
    // or made moot by the account summary, and the customer is told.
    system.broker.start_again().unwrap();
    let outcome = client
        .wait_applied("OFF-1", purchase.serial, Duration::from_secs(60))
        .unwrap();
    assert!(
        matches!(outcome, Some(Notice::Applied { .. })),
        "{outcome:?}"
    );
    // Give a re-sent command time to arrive and be refused as a repeat.
    std::thread::sleep(Duration::from_secs(5));
    let tokens = system.store().unwrap().tokens("OFF-1").unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    system.stop_gateway(false).unwrap();
    let mut acked = Acknowledged::new();
    acked.insert(("OFF-1".into(), 1), 700);
    assert_eq!(
        ledger_tokens(&system, "OFF-1", &acked),
        700,
        "credited more than once"
    );
    system.stop().unwrap();
}

#[test]
fn a_gateway_killed_in_the_middle_of_top_ups_applies_each_exactly_once() {
    let Some(mut system) = start(
        "restart",
        block(
            "gw-restart",
            NO_FRIENDLY,
            &[M {
                number: "KILL-1",
                address: "000000000401",
                load_w: 1_000,
                opening_minor: 1_000,
            }],
        ),
        None,
    ) else {
        return;
    };
    let (mut client, _) = phone(&system);
    let mut acked = Acknowledged::new();
    for round in 0..3u64 {
        let purchase = client.top_up("KILL-1", 100 + round).unwrap();
        acked.insert(("KILL-1".into(), purchase.serial), 100 + round);
        // The command is on its way (or applied, or its receipt queued): a power cut now.
        std::thread::sleep(Duration::from_millis(20 * round));
        system.stop_gateway(true).unwrap();
        system.start_gateway().unwrap();
        let outcome = client
            .wait_applied("KILL-1", purchase.serial, Duration::from_secs(90))
            .unwrap();
        assert!(
            matches!(outcome, Some(Notice::Applied { .. })),
            "round {round}: {outcome:?}\n{}",
            gateway_log(&system)
        );
    }
    system.stop_gateway(false).unwrap();
    let total: u64 = acked.values().sum();
    assert_eq!(
        ledger_tokens(&system, "KILL-1", &acked),
        i64::try_from(total).unwrap(),
        "each token must be applied exactly once"
    );
    system.stop().unwrap();
}

#[test]
fn a_replayed_top_up_command_is_refused() {
    // An eavesdropper with broker access (a compromised broker) records the sealed top-up on its way to
    // the gateway and publishes it again.
    let Some(mut system) = start(
        "replay",
        block(
            "gw-replay",
            NO_FRIENDLY,
            &[M {
                number: "REP-1",
                address: "000000000501",
                load_w: 1_000,
                opening_minor: 1_000,
            }],
        ),
        Some("user mallory\ntopic readwrite c/v1/#".into()),
    ) else {
        return;
    };
    let pilot = system.dir.join("headend");
    let ca =
        openssl::x509::X509::from_pem(&std::fs::read(pilot.join("pki/ca.pem")).unwrap()).unwrap();
    let ca_key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(pilot.join("pki/ca.key")).unwrap(),
    )
    .unwrap();
    let (cert, key) = concentrator_headend::pki::issue(
        &ca,
        &ca_key,
        &concentrator_headend::pki::CertSpec {
            cn: "mallory",
            ou: None,
            usage: concentrator_headend::pki::Usage::ClientAndSigning,
            names: &[],
            days: 1,
        },
    )
    .unwrap();
    let tls = concentrator_headend::mqtt::connector(
        &ca.to_pem().unwrap(),
        &cert.to_pem().unwrap(),
        &key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let port: u16 = system
        .broker
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut o = rumqttc::MqttOptions::new("mallory", "localhost", port);
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::NativeConnector(tls),
    ));
    let (mqtt, mut conn) = rumqttc::Client::new(o, 16);
    let topic = format!("c/v1/{}/down/+/top-up", system.gateway_id);
    mqtt.subscribe(&topic, rumqttc::QoS::AtLeastOnce).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    let (mut client, _) = phone(&system);
    let purchase = client.top_up("REP-1", 500).unwrap();
    let outcome = client
        .wait_applied("REP-1", purchase.serial, Duration::from_secs(30))
        .unwrap();
    assert!(
        matches!(outcome, Some(Notice::Applied { .. })),
        "{outcome:?}"
    );
    let (topic, payload) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("recorded the top-up");
    let refused_before = uplink_refused(&system);
    for _ in 0..3 {
        mqtt.publish(&topic, rumqttc::QoS::AtLeastOnce, false, payload.clone())
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(20);
    while uplink_refused(&system) < refused_before + 3 {
        assert!(
            Instant::now() < until,
            "the replays were not refused\n{}",
            gateway_log(&system)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = mqtt.disconnect();
    let _ = reader.join();
    system.stop_gateway(false).unwrap();
    let mut acked = Acknowledged::new();
    acked.insert(("REP-1".into(), 1), 500);
    assert_eq!(
        ledger_tokens(&system, "REP-1", &acked),
        500,
        "a replay was credited"
    );
    system.stop().unwrap();
}

#[test]
fn keys_that_expire_are_renewed_with_aka_and_the_meter_gets_a_new_tid() {
    let Some(system) = start_with(
        "rekey",
        block(
            "gw-rekey",
            NO_FRIENDLY,
            &[M {
                number: "REKEY-1",
                address: "000000000601",
                load_w: 1_000,
                opening_minor: 1_000,
            }],
        ),
        None,
        // The head-end's shortest: renewal starts with a tenth of it left, after 54 s.
        Some(60),
    ) else {
        return;
    };
    let store = system.store().unwrap();
    let sub = concentrator_headend::store::SubscriberRef::Meter("REKEY-1".into());
    let first = store.contexts(&sub).unwrap().current.unwrap();
    // Past the first context's lifetime: a new run has given a new TID, and readings still arrive.
    let until = Instant::now() + Duration::from_secs(120);
    let renewed = loop {
        let c = store.contexts(&sub).unwrap().current.unwrap();
        if c.tid != first.tid && c.confirmed {
            break c;
        }
        assert!(
            Instant::now() < until,
            "no renewal\n{}",
            gateway_log(&system)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(renewed.ck, first.ck, "a new AKA run derives new keys");
    let seen = store
        .meter("REKEY-1")
        .unwrap()
        .unwrap()
        .view
        .last_reading_at
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while store
        .meter("REKEY-1")
        .unwrap()
        .unwrap()
        .view
        .last_reading_at
        .unwrap()
        <= seen
    {
        assert!(Instant::now() < until, "readings stopped after the renewal");
        std::thread::sleep(Duration::from_millis(200));
    }
    system.stop().unwrap();
}

/// Downlink messages the gateway refused (status.json, `uplink.refused`).
fn uplink_refused(system: &System) -> u64 {
    gateway_status(system)["uplink"]["refused"]
        .as_u64()
        .unwrap_or(0)
}

/// The audit log stops growing: the head-end records the gateway's chain head from its summaries and
/// confirms it (0x8D); the gateway keeps the anchor and, with `audit_online_days = 0`, archives every
/// entry below it out of its store into `audit-archive/`. The chain still verifies against the head-end's
/// anchor, and the ledger's crash checks (balances recomputed from the base onwards) still hold.
#[test]
fn the_gateway_archives_its_audit_log_below_the_anchor_the_head_end_recorded() {
    let spec = block(
        "gw-archive",
        NO_FRIENDLY,
        &[M {
            number: "ARC-1",
            address: "000000000301",
            load_w: 3_600,
            opening_minor: 5_000,
        }],
    )
    .replace(
        "ledger_options = { checkpoint_s = 5 }",
        "ledger_options = { checkpoint_s = 1, audit_online_days = 0 }",
    );
    assert!(
        spec.contains("audit_online_days"),
        "the block's ledger options changed"
    );
    let Some(mut system) = start("archive", spec, None) else {
        return;
    };
    let until = Instant::now() + Duration::from_secs(90);
    while !system.gateways[0]
        .log_tail(400)
        .contains("entries archived out of the store")
    {
        assert!(
            Instant::now() < until,
            "no audit entries archived within 90 s\n{}",
            gateway_log(&system)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "archived {:.1} s after the meters attached",
        (Instant::now() + Duration::from_secs(90) - until).as_secs_f64()
    );
    let log = system.gateways[0].log_tail(400);
    assert!(log.contains("the head-end recorded audit anchor"), "{log}");
    let archive = system.gateway_store.join("audit-archive");
    let files: Vec<_> = std::fs::read_dir(&archive)
        .unwrap_or_else(|e| panic!("{}: {e}", archive.display()))
        .flatten()
        .collect();
    assert!(
        !files.is_empty(),
        "no archive file in {}",
        archive.display()
    );

    let recorded = system
        .store()
        .unwrap()
        .get::<concentrator_headend::store::AnchorRecord>(concentrator_headend::store::anchor_key(
            "gw-archive",
        ))
        .unwrap()
        .expect("the head-end recorded an anchor");
    system.stop_gateway(false).unwrap();
    let store = SledStore::open(&system.gateway_store.join("ledger")).unwrap();
    let base = concentrator_ledger::archive::AuditBase::load(&store)
        .unwrap()
        .expect("a base: entries were archived");
    assert!(
        base.len > 0 && base.len <= recorded.len,
        "{} / {}",
        base.len,
        recorded.len
    );
    let anchor = concentrator_ledger::anchor::AuditAnchor::parse(&format!(
        "{}:{}",
        recorded.len, recorded.head
    ))
    .unwrap();
    concentrator_ledger::anchor::verify_anchored(&store, &anchor)
        .unwrap_or_else(|e| panic!("the archived chain against the head-end's anchor: {e}"));
    concentrator_ledger::check::check_store(&store)
        .unwrap_or_else(|e| panic!("the ledger's checks after archiving: {e}"));
    drop(store);
    system.stop().unwrap();
}
