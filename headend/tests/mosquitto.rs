//! The head-end against a real Mosquitto (TLS, client certificates, the ACL of docs/uplink.md), with a
//! scripted gateway side over MQTT: it attaches itself and a meter, authenticates, sends a reading that
//! is acknowledged, receives a top-up command, answers with a result and a signed receipt, and the
//! customer's subscription gets the notice.

mod support;

use std::time::{Duration, Instant};

use concentrator_headend::store::TokenState;
use concentrator_headend::{HeadEnd, StartOptions};
use concentrator_mpc::backend::{Backend, Notice};
use concentrator_protocol::*;
use concentrator_security::receipt::Receipt;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::token::{SignedToken, TokenVerifier};
use concentrator_security::SecurityMode;
use concentrator_uplink::testkit::broker::{self, Broker};
use concentrator_uplink::testkit::reading;
use support::wire::Wire;
use support::*;

#[test]
fn gateway_attaches_reads_and_receives_a_top_up_over_mosquitto() {
    if broker::skip_without_mosquitto() {
        return;
    }
    let started = Instant::now();
    let b = Broker::start();
    let p = Pilot::with_broker("mqtt", Some(format!("mqtts://localhost:{}", b.port)));
    // The broker's own test PKI: the head-end's MQTT files come from it.
    let config = p.config_for_broker(&b);
    let he = HeadEnd::open(config).unwrap();
    p.provision(&he.store());
    let phones = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let handle = he
        .start(StartOptions {
            phone_listener: Some(phones),
            serve_phones: true,
        })
        .unwrap();
    let backend = handle.backend();
    let notices = backend.subscribe("C-1");

    // The customer registers with the code from customers.txt and logs in with the phone client.
    let customers = std::fs::read_to_string(p.out.join("customers.txt")).unwrap();
    let code = customers
        .lines()
        .find(|l| l.starts_with("C-1\t"))
        .unwrap()
        .split('\t')
        .nth(2)
        .unwrap()
        .to_string();
    let phone_addr = handle.phone_addr().unwrap().to_string();
    let ca_pem = p.config.path(&p.config.pki.ca_cert);
    let mut phone = concentrator_mpc::client::Client::connect(&phone_addr, &ca_pem).unwrap();
    let mut keys = phone
        .register(&code, "ada", "correct horse battery")
        .unwrap();
    assert_eq!(keys.customer, "C-1");
    assert!(
        backend.customer_by_auth_code(&code).unwrap().is_none(),
        "the code is used up"
    );
    phone
        .login(&mut keys, "correct horse battery", &mut |_| Ok(()))
        .unwrap();

    let mut g = p.gateway("gw-1", vec![SecurityMode::AES, SecurityMode::KASUMI]);
    let wire = Wire::connect(&b, "gw-1");
    // Wait for the head-end's subscription, then a birth.
    wait_connected(&handle, &b);
    wire.birth(&mut g, "t", true);

    let scope = attach_over_the_wire(&wire, &mut g, "MTR-1");
    let tid = scope.tid().unwrap();

    // A reading, acknowledged on the TID's scope.
    let id = g.next_id();
    wire.send(g.seal(scope, reading(4_242), Some(id)));
    let ack = wire.expect(&format!("/down/{}/ack", tid.to_hex()), None);
    let (_, f) = g.open(&ack);
    assert_eq!(f.body, Body::AckDown(Ack { ids: vec![id] }));
    assert_eq!(
        handle
            .store()
            .meter("MTR-1")
            .unwrap()
            .unwrap()
            .view
            .last_reading_wh,
        Some(4_242)
    );

    // A top-up bought on the phone reaches the gateway at once.
    let purchase = phone.top_up("MTR-1", 2_000).unwrap();
    let cmd = wire.expect(&format!("/down/{}/top-up", tid.to_hex()), None);
    let (_, f) = g.open(&cmd);
    let Body::TopUp(t) = &f.body else {
        panic!("not a top-up")
    };
    let ca = openssl::x509::X509::from_pem(
        &std::fs::read(p.bundle("gw-1").join("utility-ca.pem")).unwrap(),
    )
    .unwrap();
    let token = TokenVerifier::new(vec![ca])
        .verify(&SignedToken::decode(&t.token).unwrap(), "MTR-1", unix_now())
        .unwrap();
    assert_eq!((token.serial, token.amount_minor), (purchase.serial, 2_000));
    wire.send(g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: f.header.id,
            code: result_code::DONE,
            reason: None,
        }),
        None,
    ));
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
    let receipt = Receipt {
        meter_id: "MTR-1".into(),
        serial: token.serial,
        amount_minor: 2_000,
        currency: *b"EUR",
        applied_at: unix_now(),
        balance_after_minor: 2_500,
        gateway_id: "gw-1".into(),
    }
    .sign(&signer)
    .unwrap();
    wire.send(g.seal(
        scope,
        Body::Receipt(ReceiptBody {
            signed: receipt.encode().unwrap(),
        }),
        None,
    ));
    let notice = notices
        .recv_timeout(Duration::from_secs(20))
        .expect("the Applied notice");
    assert!(
        matches!(
            notice,
            Notice::Applied {
                serial: 1,
                balance_after_minor: 2_500,
                ..
            }
        ),
        "{notice:?}"
    );
    assert_eq!(
        handle.store().token("MTR-1", 1).unwrap().unwrap().state,
        TokenState::Applied
    );
    handle.stop().unwrap();
    eprintln!("mosquitto round trip: {:?}", started.elapsed());
}

/// Waits until the head-end is connected and a moment more for its subscriptions to take.
fn wait_connected(handle: &concentrator_headend::HeadEndHandle, b: &Broker) {
    let until = Instant::now() + Duration::from_secs(20);
    while !handle.status().connected {
        assert!(
            Instant::now() < until,
            "the head-end did not connect: {}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// Connects as `client_id` with a persistent session, subscribes to `filter` and leaves (the broker
/// keeps the session and its subscription).
fn leave_a_session(b: &Broker, client_id: &str, filter: &str) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
    let issued = b.pki.client(client_id);
    let tls = concentrator_uplink::mqtt::TlsIdentity {
        ca_pem: b.pki.ca_pem(),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    };
    let mut o = MqttOptions::new(client_id, "localhost", b.port);
    o.set_clean_session(false)
        .set_transport(Transport::tls_with_config(
            TlsConfiguration::NativeConnector(tls.connector().unwrap()),
        ));
    let (client, mut conn) = Client::new(o, 10);
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("the old session: {e}"),
        }
    }
    client.disconnect().unwrap();
    for ev in conn.iter() {
        if ev.is_err() {
            break;
        }
    }
}

/// The gateway's own scope and then `meter` attach over MQTT; returns the meter's scope (its TID).
fn attach_over_the_wire(wire: &Wire, g: &mut GatewaySide, meter: &str) -> Scope {
    wire.send(g.attach("gw", Scope::Gateway));
    let challenge = wire.expect("/down/gw/aka-challenge", None);
    wire.send(g.answer(&challenge));
    let smc = wire.expect("/down/gw/security-mode", None);
    let (complete, _) = g.complete(&smc);
    wire.send(complete);
    let (_, ack) = g.open(&wire.expect("/down/gw/ack", None));
    assert!(matches!(ack.body, Body::AckDown(_)));
    // The meter, on an attach handle.
    wire.send(g.attach(meter, handle(9)));
    let challenge = wire.expect("/aka-challenge", None);
    wire.send(g.answer(&challenge));
    let (complete, _) = g.complete(&wire.expect("/security-mode", None));
    wire.send(complete);
    let tid_msg = wire.expect("/tid", None);
    wire.send(g.take_tid(&tid_msg));
    g.meter_scope(meter)
}

/// While the head-end is down, a gateway's readings pile up at the broker; then a meter's relay
/// opens. When the head-end comes back, the event (prompt lane) is worked on before the backlog of
/// readings (routine lane) is through, and every reading is still taken and acknowledged once.
#[test]
fn an_event_overtakes_a_backlog_of_readings_and_no_reading_is_lost() {
    if broker::skip_without_mosquitto() {
        return;
    }
    const BACKLOG: usize = 3_000;
    let b = Broker::start();
    let p = Pilot::with_broker("lanes", Some(format!("mqtts://localhost:{}", b.port)));
    let config = p.config_for_broker(&b);
    // The session a head-end of a version before the lanes left at the broker: its client id
    // subscribed to every uplink topic. The prompt lane drops it, or every reading would reach the
    // head-end twice (and be acknowledged twice).
    leave_a_session(&b, &config.mqtt.client_id, "c/v1/+/up/#");
    let he = HeadEnd::open(config.clone()).unwrap();
    p.provision(&he.store());
    let handle = he.start(StartOptions::default()).unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    let wire = Wire::connect(&b, "gw-1");
    wait_connected(&handle, &b);
    wire.birth(&mut g, "t", true);
    let meter = attach_over_the_wire(&wire, &mut g, "MTR-1");
    // A first event on the meter's TID confirms it (the head-end keeps the TID then).
    wire.send(g.seal(meter, event(event_code::RELAY_CLOSED, Severity::Info), None));
    wire.expect(
        &format!("/down/{}/ack", meter.tid().unwrap().to_hex()),
        None,
    );
    handle.stop().unwrap();

    // The backlog: readings of the gateway's own scope, then the meter's relay event.
    let mut ids = std::collections::HashSet::new();
    for n in 0..BACKLOG {
        let id = g.next_id();
        ids.insert(id);
        wire.send(g.seal(Scope::Gateway, reading(n as u64), Some(id)));
    }
    wire.send(g.seal(
        meter,
        event(event_code::RELAY_OPENED, Severity::Alarm),
        None,
    ));
    // Published: the broker holds them for the head-end's sessions.
    std::thread::sleep(Duration::from_secs(1));

    let he = HeadEnd::open(config).unwrap();
    let store = he.store();
    let handle = he.start(StartOptions::default()).unwrap();
    let stored = || {
        store
            .scan::<serde_json::Value>(concentrator_headend::store::key2(
                "in/readings/",
                "gw:gw-1",
                &[],
            ))
            .unwrap()
            .len()
    };
    let until = Instant::now() + Duration::from_secs(30);
    let before_event = loop {
        let cut = store.meter("MTR-1").unwrap().unwrap().view.supply_on == Some(false);
        if cut {
            break stored();
        }
        assert!(
            Instant::now() < until,
            "the relay event was not taken ({} readings stored, link {:?})",
            stored(),
            handle.status()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        before_event < BACKLOG / 2,
        "the event waited for {before_event} of the {BACKLOG} readings queued before it"
    );
    // Every reading is taken and acknowledged, none refused for coming after the event.
    let until = Instant::now() + Duration::from_secs(60);
    let mut acked = std::collections::HashMap::new();
    while !ids.is_empty() {
        assert!(
            Instant::now() < until,
            "{} readings not acknowledged ({} stored)",
            ids.len(),
            stored()
        );
        if let Ok((topic, payload)) = wire.rx.recv_timeout(Duration::from_secs(1)) {
            if !topic.ends_with("/down/gw/ack") {
                continue;
            }
            let (_, f) = g.open(&concentrator_headend::engine::Outgoing { topic, payload });
            if let Body::AckDown(a) = f.body {
                for id in a.ids {
                    *acked.entry(id).or_insert(0u32) += 1;
                    ids.remove(&id);
                }
            }
        }
    }
    assert_eq!(stored(), BACKLOG, "each reading stored once");
    // Acknowledgements of repeats would come within moments of the first ones.
    while let Ok((topic, payload)) = wire.rx.recv_timeout(Duration::from_secs(2)) {
        if topic.ends_with("/down/gw/ack") {
            let (_, f) = g.open(&concentrator_headend::engine::Outgoing { topic, payload });
            if let Body::AckDown(a) = f.body {
                for id in a.ids {
                    *acked.entry(id).or_insert(0u32) += 1;
                }
            }
        }
    }
    let twice = acked.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{twice} readings reached the head-end twice");
    eprintln!("the event was taken after {before_event} of {BACKLOG} queued readings");
    handle.stop().unwrap();
}
