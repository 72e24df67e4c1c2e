//! Three head-end workers (`concentrator-headend run --worker`, processes) on one PostgreSQL store
//! behind Mosquitto's shared subscriptions, one of them killed -9 in the middle of top-ups and
//! ingestion and started again under its name. A scripted gateway over MQTT attaches, sends readings
//! and applies tokens as the real gateway does (each serial once; a repeat is answered "already done"
//! with the original receipt); a phone-side head-end buys top-ups meanwhile. At the end: no purchase
//! lost, no token applied twice, no reading stored twice, every receipt recorded, the payment record
//! one intact chain, and `status` answered while the workers ran.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concentrator_headend::audit::{self, EntryKind};
use concentrator_headend::engine::Outgoing;
use concentrator_headend::store::TokenState;
use concentrator_headend::HeadEnd;
use concentrator_mpc::backend::Backend;
use concentrator_protocol::*;
use concentrator_security::receipt::Receipt;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::token::{SignedToken, TokenVerifier};
use concentrator_security::SecurityMode;
use concentrator_uplink::testkit::broker::{self, Broker};
use support::wire::Wire;
use support::*;

const PURCHASES: u8 = 24;
const READINGS: u64 = 120;

fn worker(conf: &Path, name: &str, logs: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_concentrator-headend"))
        .args([
            "--log-level",
            "info",
            "run",
            "--no-phone",
            "--worker",
            name,
            "--config",
        ])
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_connected(logs: &Path, name: &str, times: usize) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
        if text.matches("MQTT: connected").count() >= times {
            return;
        }
        assert!(
            Instant::now() < until,
            "worker {name} did not connect: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_workers_one_killed_lose_nothing_and_do_nothing_twice() {
    if broker::skip_without_mosquitto() {
        return;
    }
    let b = Broker::start();
    let Some(p) = Pilot::on_postgres("workers", Some(format!("mqtts://localhost:{}", b.port)))
    else {
        return;
    };
    let mut config = p.config_for_broker(&b);
    config.mqtt.shared_group = Some("headend".into());
    config.reconcile.result_timeout_s = 3;
    let conf = config.base.join("headend.toml");
    std::fs::write(&conf, toml::to_string(&config).unwrap()).unwrap();

    // The phone side: a head-end that only sells (not connected to the broker).
    let shop = HeadEnd::open(config.clone()).unwrap();
    p.provision(&shop.store());
    let backend = shop.backend();

    let logs = p.dir.0.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut workers: BTreeMap<&str, Child> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|n| (n, worker(&conf, n, &logs)))
        .collect();
    for n in ["w1", "w2", "w3"] {
        wait_connected(&logs, n, 1);
    }
    std::thread::sleep(Duration::from_millis(500));

    let mut g = p.gateway("gw-1", vec![SecurityMode::AES, SecurityMode::KASUMI]);
    let wire = Wire::connect(&b, "gw-1");
    std::thread::sleep(Duration::from_millis(300));
    wire.birth(&mut g, "t", false);

    // AKA for the meter: each step may reach another worker (the run is in the store).
    let h = handle(9);
    let attach = g.attach("MTR-1", h);
    wire.send(attach.clone());
    let challenge = wire.expect("/aka-challenge", Some(&attach));
    let answer = g.answer(&challenge);
    wire.send(answer.clone());
    let (complete, _) = g.complete(&wire.expect("/security-mode", Some(&answer)));
    wire.send(complete.clone());
    let tid_msg = wire.expect("/tid", Some(&complete));
    wire.send(g.take_tid(&tid_msg));
    let scope = g.meter_scope("MTR-1");

    // The gateway's signer and the token verifier.
    let dir = p.bundle("gw-1");
    let signer = DocumentSigner::new(
        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(dir.join("gateway.key")).unwrap())
            .unwrap(),
        &[
            openssl::x509::X509::from_pem(&std::fs::read(dir.join("gateway.pem")).unwrap())
                .unwrap(),
        ],
    )
    .unwrap();
    let ca =
        openssl::x509::X509::from_pem(&std::fs::read(dir.join("utility-ca.pem")).unwrap()).unwrap();
    let verifier = TokenVerifier::new(vec![ca]);

    // Purchases on their own thread, while the gateway reads and applies.
    let buyer = std::thread::spawn(move || {
        (0..PURCHASES)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(150));
                backend
                    .top_up("C-1", "MTR-1", 100 + u64::from(i), [i; 16])
                    .unwrap()
                    .serial
            })
            .collect::<Vec<u64>>()
    });

    // The gateway: readings every 25 ms, tokens applied once each, everything unacknowledged sent
    // again after 2 s; worker w2 killed -9 a third of the way, started again a second later.
    let mut unacked: HashMap<MessageId, (Body, Instant)> = HashMap::new();
    let mut applied: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut applications = 0u32;
    let mut repeats = 0u32;
    let mut dropped = 0u32;
    let mut reading_ids = BTreeSet::new();
    let mut sent_readings = 0u64;
    let mut balance = 500i64;
    let mut next_reading = Instant::now();
    let mut killed_at: Option<Instant> = None;
    let mut restarted = false;
    let mut status_ok = false;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let store = p.store();
    loop {
        assert!(
            Instant::now() < deadline,
            "not done in 120 s: {} applied, {} unacknowledged, {} readings sent",
            applied.len(),
            unacked.len(),
            sent_readings
        );
        if let Ok((topic, payload)) = wire.rx.recv_timeout(Duration::from_millis(5)) {
            match g.try_open(&Outgoing { topic, payload }) {
                Err(_) => dropped += 1,
                Ok((_, f)) => match f.body {
                    Body::AckDown(a) => {
                        for id in a.ids {
                            unacked.remove(&id);
                        }
                    }
                    Body::TopUp(t) => {
                        let token = verifier
                            .verify(&SignedToken::decode(&t.token).unwrap(), "MTR-1", unix_now())
                            .unwrap();
                        let (code, receipt) = match applied.get(&token.serial) {
                            Some(r) => {
                                repeats += 1;
                                (result_code::ALREADY_DONE, r.clone())
                            }
                            None => {
                                applications += 1;
                                balance += token.amount_minor as i64;
                                let r = Receipt {
                                    meter_id: "MTR-1".into(),
                                    serial: token.serial,
                                    amount_minor: token.amount_minor,
                                    currency: *b"EUR",
                                    applied_at: unix_now(),
                                    balance_after_minor: balance,
                                    gateway_id: "gw-1".into(),
                                }
                                .sign(&signer)
                                .unwrap()
                                .encode()
                                .unwrap();
                                applied.insert(token.serial, r.clone());
                                (result_code::DONE, r)
                            }
                        };
                        for body in [
                            Body::CommandResult(CommandResult {
                                command: f.header.id,
                                code,
                                reason: None,
                            }),
                            Body::Receipt(ReceiptBody { signed: receipt }),
                        ] {
                            let id = g.next_id();
                            wire.send(g.seal(scope, body.clone(), Some(id)));
                            unacked.insert(id, (body, Instant::now()));
                        }
                    }
                    _ => {}
                },
            }
        }
        if sent_readings < READINGS && Instant::now() >= next_reading {
            next_reading += Duration::from_millis(25);
            sent_readings += 1;
            let id = g.next_id();
            let body = Body::Readings(Readings {
                readings: vec![Reading {
                    at: unix_now(),
                    quantity: Quantity::EnergyImportWh,
                    value: 1_000 + sent_readings as i64,
                    exponent: 0,
                }],
            });
            reading_ids.insert(id);
            wire.send(g.seal(scope, body.clone(), Some(id)));
            unacked.insert(id, (body, Instant::now()));
        }
        let now = Instant::now();
        let due: Vec<MessageId> = unacked
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > Duration::from_secs(2))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let body = unacked[&id].0.clone();
            wire.send(g.seal(scope, body.clone(), Some(id)));
            unacked.insert(id, (body, now));
        }
        if killed_at.is_none() && sent_readings >= READINGS / 3 {
            let mut w2 = workers.remove("w2").unwrap();
            w2.kill().unwrap(); // SIGKILL
            w2.wait().unwrap();
            killed_at = Some(Instant::now());
            eprintln!("killed w2 -9 after {} readings", sent_readings);
        }
        if !restarted && killed_at.is_some_and(|k| k.elapsed() > Duration::from_secs(1)) {
            workers.insert("w2", worker(&conf, "w2", &logs));
            restarted = true;
        }
        if !status_ok && sent_readings >= READINGS / 2 {
            // The operator's view while the workers run.
            let out = Command::new(env!("CARGO_BIN_EXE_concentrator-headend"))
                .args(["status", "--config"])
                .arg(&conf)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("MTR-1"));
            status_ok = true;
        }
        let done = buyer.is_finished()
            && sent_readings == READINGS
            && unacked.is_empty()
            && applied.len() == usize::from(PURCHASES)
            && store
                .tokens("MTR-1")
                .unwrap()
                .iter()
                .all(|t| t.state == TokenState::Applied);
        if done {
            break;
        }
    }
    let serials = buyer.join().unwrap();
    for (_, mut w) in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    eprintln!(
        "three workers, w2 killed -9: {} purchases applied once each in {:?}; {} repeats answered \
         \"already done\", {} downlink messages dropped as out of order",
        applications,
        started.elapsed(),
        repeats,
        dropped
    );

    // No purchase lost: every purchase has its token, with its own serial.
    let mut sorted = serials.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=u64::from(PURCHASES)).collect::<Vec<_>>());
    let tokens = store.tokens("MTR-1").unwrap();
    assert_eq!(tokens.len(), usize::from(PURCHASES));
    // No token applied twice, every receipt recorded.
    assert_eq!(applications, u32::from(PURCHASES));
    assert!(tokens
        .iter()
        .all(|t| t.receipt.is_some() && t.state == TokenState::Applied));
    assert!(store.pending(Some("MTR-1")).unwrap().is_empty());
    let entries = audit::entries(&store).unwrap();
    let booked: Vec<u64> = entries
        .iter()
        .filter(|e| e.what == EntryKind::TokenApplied)
        .map(|e| e.serial)
        .collect();
    let once: BTreeSet<u64> = booked.iter().copied().collect();
    assert_eq!(booked.len(), once.len(), "a token booked applied twice");
    assert_eq!(once.len(), usize::from(PURCHASES));
    assert!(matches!(audit::verify(&store).unwrap(), Ok(n) if n as usize == entries.len()));
    // No reading stored twice.
    assert_eq!(
        store.ingested("readings", "MTR-1").unwrap().len(),
        reading_ids.len()
    );
    assert!(status_ok);
}
