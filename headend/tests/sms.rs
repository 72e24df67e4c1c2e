//! Urgent events by SMS at the head-end: the form is verified with the gateway's own security context
//! and stored once, whether the SMS or the MQTT copy (same message id) comes first; forged, altered
//! and unknown-gateway texts are refused; `concentrator-headend sms ingest` does the same from the
//! command line.

mod support;

use std::process::Command;
use std::sync::Arc;

use concentrator_headend::engine::{spool_sms, Engine, SmsIngest, SmsIngestError};
use concentrator_headend::store::SubscriberRef;
use concentrator_headend::HeadEnd;
use concentrator_protocol::sms::SmsError;
use concentrator_protocol::*;
use concentrator_security::SecurityMode;
use support::*;

fn attach_gateway(e: &mut Engine, g: &mut GatewaySide) {
    let challenge = one(
        feed(e, &g.attach("gw", Scope::Gateway)),
        "/down/gw/aka-challenge",
    );
    let smc = one(feed(e, &g.answer(&challenge)), "/down/gw/security-mode");
    let (complete, _) = g.complete(&smc);
    assert!(feed(e, &complete).is_empty());
    g.open(&one(e.flush_acks(unix_now()), "/down/gw/ack"));
}

fn cut_off() -> Event {
    Event {
        at: unix_now(),
        code: event_code::RELAY_OPENED,
        severity: Severity::Alarm,
        detail: Some("credit exhausted".into()),
        values: vec![],
    }
}

#[test]
fn an_sms_event_is_verified_and_stored_once_with_its_mqtt_copy() {
    let p = Pilot::new("sms");
    let store = Arc::new(p.store());
    p.provision(&store);
    let he = HeadEnd::with_store(p.config.clone(), Arc::clone(&store)).unwrap();
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    let gw = GatewayId::new("gw-1").unwrap();
    let now = unix_now();

    // Before AKA: nothing to verify with.
    let early = sms::encode(&gw, &[1; 16], g.next_id(), None, &cut_off()).unwrap();
    assert!(matches!(
        e.ingest_sms(&early, "+4915100000", now),
        Err(SmsIngestError::NoContext(_))
    ));

    attach_gateway(&mut e, &mut g);
    let tid = attach_meter(&mut e, &mut g, "MTR-1", 1);
    let ik = store
        .contexts(&SubscriberRef::Gateway("gw-1".into()))
        .unwrap()
        .current
        .unwrap()
        .ik;

    let id = g.next_id();
    let text = sms::encode(&gw, &ik, id, Some(tid), &cut_off()).unwrap();

    // Forged (another key), another gateway's name, not a form at all.
    let forged = sms::encode(&gw, &[7; 16], id, Some(tid), &cut_off()).unwrap();
    let err = e.ingest_sms(&forged, "+4915100000", now).unwrap_err();
    assert!(
        matches!(err, SmsIngestError::Form(SmsError::Mac(_))),
        "{err}"
    );
    assert!(err.to_string().contains("does not verify"), "{err}");
    let stranger = text.replacen("gw-1", "gw-9", 1);
    let err = e.ingest_sms(&stranger, "+4915100000", now).unwrap_err();
    assert!(
        err.to_string()
            .contains("gateway gw-9, which this head-end does not know"),
        "{err}"
    );
    assert!(matches!(
        e.ingest_sms("BAL A-101 1234", "+4915100000", now),
        Err(SmsIngestError::Form(SmsError::NotAnEvent))
    ));
    assert!(store.ingested("event", "MTR-1").unwrap().is_empty());

    // The real one: stored for the meter, whose supply shows off.
    match e.ingest_sms(&text, "+4915100000", now).unwrap() {
        SmsIngest::Stored(f, meter) => {
            assert_eq!(meter.as_deref(), Some("MTR-1"));
            assert_eq!(f.id, id);
            assert_eq!(f.event.code, event_code::RELAY_OPENED);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.ingested("event", "MTR-1").unwrap().len(), 1);
    assert_eq!(
        store.meter("MTR-1").unwrap().unwrap().view.supply_on,
        Some(false)
    );

    // The MQTT copy (same id) when the link is back: acknowledged, not stored again.
    let copy = g.seal(Scope::Meter(tid), Body::Event(cut_off()), Some(id));
    assert!(feed(&mut e, &copy).is_empty());
    let (_, f) = g.open(&one(e.flush_acks(unix_now()), "/ack"));
    assert_eq!(f.body, Body::AckDown(Ack { ids: vec![id] }));
    assert_eq!(store.ingested("event", "MTR-1").unwrap().len(), 1);

    // The same SMS again (the operator's gateway delivered it twice): not stored again.
    assert!(matches!(
        e.ingest_sms(&text, "+4915100000", now).unwrap(),
        SmsIngest::AlreadyStored(..)
    ));
    assert_eq!(store.ingested("event", "MTR-1").unwrap().len(), 1);

    // An MQTT event first, then its SMS: stored once too.
    let id2 = g.next_id();
    let tamper = Event {
        code: event_code::TAMPER,
        ..cut_off()
    };
    feed(
        &mut e,
        &g.seal(Scope::Meter(tid), Body::Event(tamper.clone()), Some(id2)),
    );
    let late = sms::encode(&gw, &ik, id2, Some(tid), &tamper).unwrap();
    assert!(matches!(
        e.ingest_sms(&late, "+4915100000", now).unwrap(),
        SmsIngest::AlreadyStored(..)
    ));
    assert_eq!(store.ingested("event", "MTR-1").unwrap().len(), 2);

    // Through the spool, as the CLI leaves texts for a running head-end that holds the store.
    let spool = p.config.base.join("sms-test-spool");
    e.set_sms_spool(Some(spool.clone()));
    let id3 = g.next_id();
    let theft = Event {
        code: 70,
        values: vec![12_000, 9_500],
        ..cut_off()
    };
    let good = sms::encode(&gw, &ik, id3, None, &theft).unwrap();
    let req = spool_sms(&spool, "+4915100000", &good, "a").unwrap();
    let bad = spool_sms(&spool, "+4915100000", &forged, "b").unwrap();
    e.tick(unix_now());
    let done = std::fs::read_to_string(req.with_extension("done")).unwrap();
    assert!(
        done.starts_with("gateway gw-1: theft or loss (block balance) (event 70, alarm) at "),
        "{done}"
    );
    let refused = std::fs::read_to_string(bad.with_extension("refused")).unwrap();
    assert!(refused.contains("does not verify"), "{refused}");
    assert!(!req.exists() && !bad.exists(), "requests are taken");
    assert_eq!(store.ingested("event", "gw:gw-1").unwrap().len(), 1);

    // The command line, on the same store once this process lets go of it.
    let gasp = Event {
        code: event_code::LAST_GASP,
        values: vec![unix_now() as i64],
        ..cut_off()
    };
    let last = sms::encode(&gw, &ik, g.next_id(), None, &gasp).unwrap();
    drop(e);
    drop(he);
    drop(store);
    let conf = p.config.base.join("headend.toml");
    let cli = |text: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_concentrator-headend"))
            .args([
                "--log-level",
                "warn",
                "sms",
                "ingest",
                "--from",
                "+4915100000",
                "--config",
            ])
            .arg(&conf)
            .arg(text)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&last);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with(
            "gateway gw-1: last gasp (the gateway lost its supply) (event 54, alarm) at "
        ),
        "{out}"
    );
    let (code, out, err) = cli(&last);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("already stored before"), "{out}");
    let (code, _, err) = cli(&forged);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("does not verify with its security context"),
        "{err}"
    );
    assert_eq!(p.store().ingested("event", "gw:gw-1").unwrap().len(), 2);
}
