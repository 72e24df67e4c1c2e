//! The protocol core without I/O: attach, AKA (RES right and wrong, AUTS resync, MAC failure), security
//! mode, TID assignment, sealed uplink with acknowledgements and deduplication, top-up delivery with
//! result and receipt, reconciliation, refusal. A scripted gateway side (tests/support) plays the
//! gateway with the security crate's calls.

mod support;

use concentrator_headend::audit;
use concentrator_headend::engine::{Engine, Phase};
use concentrator_headend::store::{SubscriberRef, TokenState};
use concentrator_mpc::backend::{Backend, Notice};
use concentrator_protocol::*;
use concentrator_security::envelope::Envelope;
use concentrator_security::receipt::Receipt;
use concentrator_security::token::{SignedToken, TokenVerifier};
use concentrator_security::SecurityMode;
use support::*;

/// Attach, AKA and security mode for the gateway's own scope.
fn attach_gateway(e: &mut Engine, g: &mut GatewaySide) {
    let challenge = one(
        feed(e, &g.attach("gw", Scope::Gateway)),
        "/down/gw/aka-challenge",
    );
    let smc = one(feed(e, &g.answer(&challenge)), "/down/gw/security-mode");
    let (complete, _) = g.complete(&smc);
    assert!(feed(e, &complete).is_empty());
    let acks = e.flush_acks(unix_now());
    let (_, f) = g.open(&one(acks, "/down/gw/ack"));
    assert!(matches!(f.body, Body::AckDown(ref a) if a.ids.len() == 1));
}

#[test]
fn gateway_and_meter_attach_then_sealed_uplink_is_acknowledged_once() {
    let p = Pilot::new("attach");
    let he = p.head_end();
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES, SecurityMode::KASUMI]);

    // The challenge is plain, the command sealed with the head-end's first pair (AES).
    let challenge = one(
        feed(&mut e, &g.attach("gw", Scope::Gateway)),
        "/aka-challenge",
    );
    let smc = one(feed(&mut e, &g.answer(&challenge)), "/security-mode");
    let env = Envelope::decode(&smc.payload).unwrap();
    assert_eq!((env.mode, env.count), (SecurityMode::AES, 0));
    let (complete, cmd) = g.complete(&smc);
    assert_eq!(cmd.allowed.len(), 2);
    assert_eq!(cmd.lifetime_s, p.config.aka.key_lifetime_s);
    assert!(feed(&mut e, &complete).is_empty());
    g.open(&one(e.flush_acks(unix_now()), "/down/gw/ack"));
    let set = he
        .store()
        .contexts(&SubscriberRef::Gateway("gw-1".into()))
        .unwrap();
    assert!(set
        .current
        .as_ref()
        .is_some_and(|c| c.confirmed && c.tid.is_none()));

    let tid = attach_meter(&mut e, &mut g, "MTR-1", 1);
    let scope = Scope::Meter(tid);
    let reading = Body::Readings(Readings {
        readings: vec![Reading {
            at: unix_now(),
            quantity: Quantity::EnergyImportWh,
            value: 12_345,
            exponent: 0,
        }],
    });
    let id = g.next_id();
    let msg = g.seal(scope, reading.clone(), Some(id));
    assert!(feed(&mut e, &msg).is_empty());
    let ack = one(
        e.flush_acks(unix_now()),
        &format!("/down/{}/ack", tid.to_hex()),
    );
    let (_, f) = g.open(&ack);
    assert_eq!(f.body, Body::AckDown(Ack { ids: vec![id] }));
    let m = he.store().meter("MTR-1").unwrap().unwrap();
    assert_eq!(m.view.last_reading_wh, Some(12_345));

    // Sent again (same id, new COUNT): acknowledged again, stored once.
    let again = g.seal(scope, reading, Some(id));
    feed(&mut e, &again);
    let (_, f) = g.open(&one(e.flush_acks(unix_now()), "/ack"));
    assert_eq!(f.body, Body::AckDown(Ack { ids: vec![id] }));
    assert_eq!(he.store().ingested("readings", "MTR-1").unwrap().len(), 1);

    // A replay of the same envelope octets is refused (COUNT), nothing acknowledged.
    feed(&mut e, &again);
    assert_eq!(e.pending_acks(), 0);
}

#[test]
fn kasumi_only_gateway_gets_its_pair() {
    let p = Pilot::new("kasumi");
    let he = p.head_end();
    let mut e = he.engine().unwrap();
    // It opens the command sealed with the head-end's first pair (AES), and chooses its own preference.
    let mut g = p.gateway("gw-1", vec![SecurityMode::KASUMI, SecurityMode::AES]);
    attach_gateway(&mut e, &mut g);
    let set = he
        .store()
        .contexts(&SubscriberRef::Gateway("gw-1".into()))
        .unwrap();
    assert_eq!(set.current.unwrap().integrity, 1);
}

#[test]
fn wrong_res_and_mac_failure_make_no_context() {
    let p = Pilot::new("wrongres");
    let he = p.head_end();
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    let h = handle(2);
    let challenge = one(feed(&mut e, &g.attach("MTR-1", h)), "/aka-challenge");
    let (_, f) = (
        0,
        protect::open(
            &Topic::parse(&challenge.topic).unwrap(),
            &challenge.payload,
            None,
            unix_now(),
        )
        .unwrap(),
    );
    let Body::AkaChallenge(c) = f.body else {
        panic!()
    };
    assert!(feed(
        &mut e,
        &g.aka_response(h, c.rand, AkaResult::Res(vec![0; 8]))
    )
    .is_empty());
    assert_eq!(e.run_phase("gw-1", h), None, "a wrong RES ends the run");

    let challenge = one(feed(&mut e, &g.attach("MTR-1", h)), "/aka-challenge");
    let f = protect::open(
        &Topic::parse(&challenge.topic).unwrap(),
        &challenge.payload,
        None,
        unix_now(),
    )
    .unwrap();
    let Body::AkaChallenge(c) = f.body else {
        panic!()
    };
    // A response to another RAND is ignored and keeps the run.
    assert!(feed(&mut e, &g.aka_response(h, [9; 16], AkaResult::MacFailure)).is_empty());
    assert_eq!(e.run_phase("gw-1", h), Some(Phase::AwaitResponse));
    assert!(feed(&mut e, &g.aka_response(h, c.rand, AkaResult::MacFailure)).is_empty());
    assert_eq!(e.run_phase("gw-1", h), None);
    let set = he
        .store()
        .contexts(&SubscriberRef::Meter("MTR-1".into()))
        .unwrap();
    assert!(set.current.is_none());
}

#[test]
fn auts_resynchronises_and_a_new_challenge_follows() {
    let p = Pilot::new("auts");
    let he = p.head_end();
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    attach_meter(&mut e, &mut g, "MTR-1", 1);
    // The head-end's SQN state goes back (restored from an old backup): its next SQN is stale.
    let mut m = he.store().meter("MTR-1").unwrap().unwrap();
    m.sqn = Default::default();
    let mut b = concentrator_headend::store::Batch::new();
    b.put(concentrator_headend::store::meter_key("MTR-1"), &m);
    he.store().commit(b).unwrap();

    let h = handle(3);
    let challenge = one(feed(&mut e, &g.attach("MTR-1", h)), "/aka-challenge");
    let resp = g.answer(&challenge);
    let f = Frame::decode(&resp.1).unwrap();
    assert!(
        matches!(f.body, Body::AkaResponse(ref r) if matches!(r.result, AkaResult::SyncFailure(_)))
    );
    let again = one(feed(&mut e, &resp), "/aka-challenge");
    assert_ne!(again.payload, challenge.payload);
    let smc = one(feed(&mut e, &g.answer(&again)), "/security-mode");
    let (complete, _) = g.complete(&smc);
    one(feed(&mut e, &complete), "/tid");
    assert!(he.store().meter("MTR-1").unwrap().unwrap().sqn.seq_he() > 1);
}

#[test]
fn attach_of_a_meter_enrolled_at_another_gateway_is_ignored() {
    let p = Pilot::new("foreign");
    let he = p.head_end();
    let mut e = he.engine().unwrap();
    // gw-2's bundle names MTR-2; gw-1 tries to attach it (it cannot know the IMSI, but suppose it did).
    let mut g2 = p.gateway("gw-2", vec![SecurityMode::AES]);
    let (topic, payload) = g2.attach("MTR-2", handle(4));
    let forged = topic.replace("/gw-2/", "/gw-1/");
    assert!(e.handle(&forged, &payload, unix_now()).is_empty());
    assert_eq!(e.run_phase("gw-1", handle(4)), None);
    // The gateway's own attach on a meter scope is refused too.
    let (topic, payload) = g2.attach("gw", handle(5));
    assert!(e.handle(&topic, &payload, unix_now()).is_empty());
    // And a topic of a gateway that is not enrolled.
    let (topic, payload) = g2.attach("MTR-2", handle(6));
    assert!(e
        .handle(&topic.replace("/gw-2/", "/gw-9/"), &payload, unix_now())
        .is_empty());
    // The right gateway gets its challenge.
    let (topic, payload) = g2.attach("MTR-2", handle(7));
    assert_eq!(e.handle(&topic, &payload, unix_now()).len(), 1);
}

#[test]
fn top_up_is_delivered_confirmed_by_receipt_and_recorded() {
    let p = Pilot::new("topup");
    let he = p.head_end();
    let backend = he.backend();
    let notices = backend.subscribe("C-1");
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    assert!(feed(&mut e, &birth(&mut g)).is_empty());
    let tid = attach_meter(&mut e, &mut g, "MTR-1", 1);

    let purchase = backend.top_up("C-1", "MTR-1", 1_000, [7; 16]).unwrap();
    assert_eq!(purchase.serial, 1);
    assert_eq!(
        backend.top_up("C-1", "MTR-1", 1_000, [7; 16]).unwrap(),
        purchase,
        "idempotent by request id"
    );
    assert!(
        backend.top_up("C-1", "MTR-2", 1_000, [8; 16]).is_err(),
        "not the customer's meter"
    );
    assert!(
        backend.top_up("C-1", "MTR-1", 10, [9; 16]).is_err(),
        "below the minimum"
    );

    let cmd = one(
        e.deliver(Some("MTR-1"), unix_now()),
        &format!("/down/{}/top-up", tid.to_hex()),
    );
    let (scope, f) = g.open(&cmd);
    let Body::TopUp(t) = &f.body else { panic!() };
    assert_eq!(t.token, purchase.token);
    let ca = openssl::x509::X509::from_pem(
        &std::fs::read(p.bundle("gw-1").join("utility-ca.pem")).unwrap(),
    )
    .unwrap();
    let token = TokenVerifier::new(vec![ca])
        .verify(&SignedToken::decode(&t.token).unwrap(), "MTR-1", unix_now())
        .unwrap();
    assert_eq!((token.serial, token.amount_minor), (1, 1_000));
    // Nothing is sent twice while the command waits for its result.
    assert!(e.deliver(None, unix_now()).is_empty());

    let result = g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: f.header.id,
            code: result_code::DONE,
            reason: None,
        }),
        None,
    );
    feed(&mut e, &result);
    let receipt = Receipt {
        meter_id: "MTR-1".into(),
        serial: 1,
        amount_minor: 1_000,
        currency: *b"EUR",
        applied_at: unix_now(),
        balance_after_minor: 1_500,
        gateway_id: "gw-1".into(),
    }
    .sign(&gateway_signer(&p))
    .unwrap();
    let msg = g.seal(
        scope,
        Body::Receipt(ReceiptBody {
            signed: receipt.encode().unwrap(),
        }),
        None,
    );
    feed(&mut e, &msg);
    let (_, ack) = g.open(&one(e.flush_acks(unix_now()), "/ack"));
    assert!(matches!(ack.body, Body::AckDown(ref a) if a.ids.len() == 2));

    let t = he.store().token("MTR-1", 1).unwrap().unwrap();
    assert_eq!(t.state, TokenState::Applied);
    assert_eq!(
        notices.try_recv().unwrap(),
        Notice::Applied {
            meter: "MTR-1".into(),
            serial: 1,
            amount_minor: 1_000,
            balance_after_minor: 1_500,
            at: t.applied_at.unwrap()
        }
    );
    let view = &backend.meters("C-1").unwrap()[0];
    assert_eq!((view.balance_minor, view.pending_tokens), (Some(1_500), 0));
    let kinds: Vec<_> = audit::entries(&he.store())
        .unwrap()
        .into_iter()
        .map(|e| e.what)
        .collect();
    assert_eq!(
        kinds,
        vec![
            audit::EntryKind::Purchase,
            audit::EntryKind::TokenIssued,
            audit::EntryKind::TokenApplied
        ]
    );
    assert_eq!(audit::verify(&he.store()).unwrap(), Ok(3));

    // A low-credit event reaches the customer as a notice, with the meter's identity.
    let ev = g.seal(
        scope,
        Body::Event(Event {
            at: unix_now(),
            code: event_code::LOW_CREDIT,
            severity: Severity::Warning,
            detail: None,
            values: vec![150],
        }),
        None,
    );
    feed(&mut e, &ev);
    assert!(matches!(
        notices.try_recv().unwrap(),
        Notice::LowCredit {
            balance_minor: 150,
            ..
        }
    ));
    assert_eq!(
        he.store().ingested("event", "MTR-1").unwrap()[0]
            .meter
            .as_deref(),
        Some("MTR-1")
    );
}

#[test]
fn reconciliation_resends_every_pending_token_receipts_book_them_refusals_are_recorded() {
    let p = Pilot::new("reconcile");
    let he = p.head_end();
    let backend = he.backend();
    let notices = backend.subscribe("C-1");
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    let tid = attach_meter(&mut e, &mut g, "MTR-1", 1);
    // Gateway offline: tokens wait.
    backend.top_up("C-1", "MTR-1", 500, [1; 16]).unwrap();
    backend.top_up("C-1", "MTR-1", 600, [2; 16]).unwrap();
    backend.top_up("C-1", "MTR-1", 700, [3; 16]).unwrap();
    assert!(
        e.deliver(None, unix_now()).is_empty(),
        "nothing is sent to an offline gateway"
    );

    // Birth: an account request for the meter with pending tokens, no top-up yet.
    let out = feed(&mut e, &birth(&mut g));
    let req = one(out, &format!("/down/{}/account-request", tid.to_hex()));
    let (scope, _) = g.open(&req);
    // Token 1 was applied through the local path meanwhile.
    let summary = g.seal(
        scope,
        Body::AccountSummary(AccountSummary {
            at: unix_now(),
            balance_minor: 900,
            currency: "EUR".into(),
            last_token_serial: Some(1),
            register_wh: 1,
            tariff_id: 1,
            charged_minor: 0,
            relay_closed: true,
            applied: None,
            audit: None,
        }),
        None,
    );
    let resent = feed(&mut e, &summary);
    assert_eq!(
        resent.len(),
        3,
        "every pending token is sent again: a summary books nothing"
    );
    assert_eq!(
        he.store().token("MTR-1", 1).unwrap().unwrap().state,
        TokenState::Pending
    );
    assert!(notices.try_recv().is_err());

    // Token 1: the gateway answers "already done" and sends its original receipt again, which books it.
    let (_, f1) = g.open(&resent[0]);
    let r1 = g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: f1.header.id,
            code: result_code::ALREADY_DONE,
            reason: None,
        }),
        None,
    );
    feed(&mut e, &r1);
    assert_eq!(
        he.store().token("MTR-1", 1).unwrap().unwrap().state,
        TokenState::Pending
    );
    let receipt = Receipt {
        meter_id: "MTR-1".into(),
        serial: 1,
        amount_minor: 500,
        currency: *b"EUR",
        applied_at: unix_now(),
        balance_after_minor: 900,
        gateway_id: "gw-1".into(),
    }
    .sign(&gateway_signer(&p))
    .unwrap();
    feed(
        &mut e,
        &g.seal(
            scope,
            Body::Receipt(ReceiptBody {
                signed: receipt.encode().unwrap(),
            }),
            None,
        ),
    );
    assert_eq!(
        he.store().token("MTR-1", 1).unwrap().unwrap().state,
        TokenState::Applied
    );
    assert!(matches!(
        notices.try_recv().unwrap(),
        Notice::Applied { serial: 1, .. }
    ));
    let resent = &resent[1..];

    // Token 2 refused, token 3 answered "meter failed": refused recorded, 3 sent again after the timeout.
    let (_, f2) = g.open(&resent[0]);
    let (_, f3) = g.open(&resent[1]);
    let r2 = g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: f2.header.id,
            code: result_code::TOKEN_REFUSED,
            reason: Some("expired".into()),
        }),
        None,
    );
    let r3 = g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: f3.header.id,
            code: result_code::METER_FAILED,
            reason: None,
        }),
        None,
    );
    feed(&mut e, &r2);
    feed(&mut e, &r3);
    assert_eq!(
        he.store().token("MTR-1", 2).unwrap().unwrap().state,
        TokenState::Refused
    );
    assert!(matches!(
        notices.try_recv().unwrap(),
        Notice::Refused { serial: 2, .. }
    ));
    assert!(e.deliver(None, unix_now()).is_empty());
    let later = unix_now() + p.config.reconcile.result_timeout_s + 1;
    let again = e.deliver(None, later);
    assert_eq!(again.len(), 1);
    let (_, f) = g.open_at(&again[0], later);
    assert!(matches!(f.body, Body::TopUp(_)));
    assert_eq!(f.header.id, f3.header.id, "a resend keeps the command's id");
    let t3 = he.store().token("MTR-1", 3).unwrap().unwrap();
    assert_eq!(t3.sends, 2);
    assert_eq!(
        audit::verify(&he.store()).unwrap().map(|n| n >= 8),
        Ok(true)
    );
}

#[test]
fn a_restarted_head_end_resumes_its_contexts_and_counts() {
    let p = Pilot::new("restart");
    let mut g;
    let tid;
    let last_count;
    {
        let he = concentrator_headend::HeadEnd::open(p.config.clone()).unwrap();
        p.provision(&he.store());
        g = p.gateway("gw-1", vec![SecurityMode::AES]);
        let mut e = he.engine().unwrap();
        tid = attach_meter(&mut e, &mut g, "MTR-1", 1);
        let msg = g.seal(
            Scope::Meter(tid),
            Body::Readings(Readings { readings: vec![] }),
            None,
        );
        feed(&mut e, &msg);
        let ack = one(e.flush_acks(unix_now()), "/ack");
        last_count = Envelope::decode(&ack.payload).unwrap().count;
        g.open(&ack);
    }
    // A new process over the same store: the TID still opens, the downlink COUNT is above any used.
    let he = concentrator_headend::HeadEnd::open(p.config.clone()).unwrap();
    let mut e = he.engine().unwrap();
    let id = g.next_id();
    let msg = g.seal(
        Scope::Meter(tid),
        Body::Readings(Readings { readings: vec![] }),
        Some(id),
    );
    feed(&mut e, &msg);
    let ack = one(e.flush_acks(unix_now()), "/ack");
    assert!(Envelope::decode(&ack.payload).unwrap().count > last_count);
    let (_, f) = g.open(&ack);
    assert_eq!(f.body, Body::AckDown(Ack { ids: vec![id] }));
    // A replay of the message from before the restart is refused (its COUNT is stored).
    feed(&mut e, &msg);
    assert_eq!(e.pending_acks(), 0);
}

/// Issue #19, item 4: a tariff update and configuration changes issued into the spool are taken into
/// the store once, sent in the gateway's scope, sent again with the same message id without an answer
/// or after a temporary failure, and finished by the gateway's answer (done with its words, or
/// refused), each state written for `concentrator-headend commands`.
#[test]
fn remote_commands_are_delivered_retried_and_finished_by_the_gateways_answer() {
    use concentrator_headend::remote::{self, RemoteBody, RemoteCommand, RemoteState};
    let p = Pilot::new("remote");
    let he = p.head_end();
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    let spool = remote::spool_dir(&p.config.base);
    let now = unix_now();
    let command = |id: &str, body: RemoteBody| RemoteCommand {
        id: id.into(),
        gateway: "gw-1".into(),
        what: format!("test {id}"),
        body,
        issued_at: now,
        state: RemoteState::Pending,
        command: None,
        sent_at: None,
        sends: 0,
        result: None,
        result_at: None,
        reason: None,
    };
    let tariff = RemoteBody::Tariff {
        tariff_id: 7,
        effective_from: now + 3_600,
        currency: "EUR".into(),
        standing_charge_minor_per_day: 30,
        rates: vec![(1, 40_000_000)],
        switches: vec![(0xff, 0, 1)],
        special_days: vec![],
        utc_offset_min: 60,
    };
    let (config, _) = remote::parse_settings(&["gateway.log_level=debug".into()]).unwrap();
    remote::issue(&spool, &command("1-tariff", tariff.clone())).unwrap();
    remote::issue(&spool, &command("2-config", config.clone())).unwrap();

    // Offline gateway: taken into the store, nothing sent.
    assert!(e.tick(now).is_empty());
    assert!(
        remote::waiting(&spool).is_empty(),
        "requests left in the spool"
    );
    assert_eq!(e.remote_commands().unwrap().len(), 2);
    // Taking the same request in again changes nothing.
    assert!(!e
        .record_remote(&command("1-tariff", tariff.clone()))
        .unwrap());

    assert!(feed(&mut e, &birth(&mut g)).is_empty());
    attach_gateway(&mut e, &mut g);
    let sent = e.tick(now);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (scope, t) = g.open(&sent[0]);
    assert_eq!(scope, Scope::Gateway);
    assert_eq!(t.body, tariff.to_wire());
    let (_, c) = g.open(&sent[1]);
    assert_eq!(c.body, config.to_wire());
    // Waiting for the answers: nothing again before the result timeout.
    assert!(e.tick(now + 1).is_empty());
    let timeout = p.config.reconcile.result_timeout_s;
    let again = e.tick(now + timeout + 1);
    assert_eq!(again.len(), 2);
    let (_, t2) = g.open_at(&again[0], now + timeout + 1);
    assert_eq!(t2.header.id, t.header.id, "a resend keeps the message id");
    let (_, c2) = g.open_at(&again[1], now + timeout + 1);

    // The tariff is done, with the gateway's words; the configuration change must wait (try later),
    // then it is refused.
    let answer = |g: &mut GatewaySide, id, code, reason: &str| {
        g.seal(
            Scope::Gateway,
            Body::CommandResult(CommandResult {
                command: id,
                code,
                reason: Some(reason.into()),
            }),
            None,
        )
    };
    let words = "tariff 7 in force from 2026-12-07 00:00 local time (UTC+01:00), replacing the configured tariff";
    feed(
        &mut e,
        &answer(&mut g, t.header.id, result_code::DONE, words),
    );
    feed(
        &mut e,
        &answer(&mut g, c2.header.id, result_code::TRY_LATER, "busy"),
    );
    let later = now + 2 * timeout + 2;
    let resent = e.tick(later);
    assert_eq!(resent.len(), 1, "only the configuration change again");
    let (_, c3) = g.open_at(&resent[0], later);
    assert_eq!(c3.header.id, c.header.id);
    feed(
        &mut e,
        &answer(
            &mut g,
            c3.header.id,
            result_code::REFUSED,
            "gateway.log_level cannot be changed",
        ),
    );
    assert!(
        e.tick(later + 3 * timeout).is_empty(),
        "finished commands are not sent again"
    );
    let all = e.remote_commands().unwrap();
    assert_eq!(
        all.iter().map(|c| (c.state, c.sends)).collect::<Vec<_>>(),
        vec![(RemoteState::Done, 2), (RemoteState::Refused, 3)]
    );
    assert_eq!(all[0].reason.as_deref(), Some(words));
    // What `concentrator-headend commands` shows.
    let shown = remote::statuses(&spool);
    assert_eq!(shown, all);
}
