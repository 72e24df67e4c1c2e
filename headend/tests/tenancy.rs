//! Change of tenancy from the head-end's side (issue #19 item 5): the order is signed and sent until the
//! gateway's settlement arrives; the settlement books a refund of the credit left (or a bill for the
//! debt) and refunds of the old customer's tokens never applied, once; the meter moves to the new
//! customer; purchases wait while the order is open.

mod support;

use concentrator_headend::audit::{self, EntryKind};
use concentrator_headend::engine::{Engine, Outgoing};
use concentrator_headend::store::{TenancyState, TokenState};
use concentrator_headend::tenancy::OrderRequest;
use concentrator_headend::HeadEnd;
use concentrator_mpc::backend::Backend;
use concentrator_protocol::*;
use concentrator_security::receipt::Receipt;
use concentrator_security::tenancy::{SettlementDocument, TenancyOrder};
use concentrator_security::{SecurityMode, TokenVerifier};
use support::*;

/// A pilot whose spec has a second customer, C-2, without a meter (the new tenant).
fn pilot(tag: &str) -> Pilot {
    let p = Pilot::new(tag);
    let spec = format!(
        "{SPEC}\n[[customer]]\nid = \"C-2\"\nname = \"Grace\"\nmsisdn = \"491701234568\"\nmeters = []\n"
    );
    std::fs::write(p.dir.0.join("spec.toml"), spec).unwrap();
    p
}

fn online(p: &Pilot, he: &HeadEnd) -> (Engine, GatewaySide, Scope) {
    let mut e = he.engine().unwrap();
    let mut g = p.gateway("gw-1", vec![SecurityMode::AES]);
    feed(&mut e, &birth(&mut g));
    let tid = attach_meter(&mut e, &mut g, "MTR-1", 1);
    (e, g, Scope::Meter(tid))
}

fn result(g: &mut GatewaySide, scope: Scope, cmd: MessageId, code: u16) -> (String, Vec<u8>) {
    g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: cmd,
            code,
            reason: Some(format!("code {code}")),
        }),
        None,
    )
}

fn receipt(
    p: &Pilot,
    g: &mut GatewaySide,
    scope: Scope,
    serial: u64,
    amount: u64,
) -> (String, Vec<u8>) {
    let r = Receipt {
        meter_id: "MTR-1".into(),
        serial,
        amount_minor: amount,
        currency: *b"EUR",
        applied_at: unix_now(),
        balance_after_minor: 1_000,
        gateway_id: "gw-1".into(),
    }
    .sign(&gateway_signer(p))
    .unwrap();
    g.seal(
        scope,
        Body::Receipt(ReceiptBody {
            signed: r.encode().unwrap(),
        }),
        None,
    )
}

/// The message ids of the top-up commands among `out`, in serial order.
fn top_up_ids(g: &mut GatewaySide, out: &[Outgoing], now: u64) -> Vec<MessageId> {
    out.iter()
        .filter(|o| o.topic.ends_with("/top-up"))
        .map(|o| g.open_at(o, now).1.header.id)
        .collect()
}

/// The tenancy orders among `out`, opened and verified as the gateway verifies them.
fn orders(
    p: &Pilot,
    g: &mut GatewaySide,
    out: &[Outgoing],
    now: u64,
) -> Vec<(TenancyOrder, MessageId)> {
    let ca = openssl::x509::X509::from_pem(
        &std::fs::read(p.config.path(&p.config.pki.ca_cert)).unwrap(),
    )
    .unwrap();
    let verifier = TokenVerifier::new(vec![ca]);
    out.iter()
        .filter(|o| o.topic.ends_with("/tenancy"))
        .map(|o| {
            let (_, f) = g.open_at(o, now);
            let Body::TenancyChange(t) = f.body else {
                panic!("not a tenancy change")
            };
            let order = verifier.verify_order(&t.order, Some("MTR-1"), now).unwrap();
            (order, f.header.id)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn settlement(
    p: &Pilot,
    g: &mut GatewaySide,
    scope: Scope,
    order: &TenancyOrder,
    credit: u64,
    debt: u64,
) -> (String, Vec<u8>) {
    let s = SettlementDocument {
        meter_id: order.meter_id.clone(),
        order_id: order.order_id,
        old_customer: order.old_customer.clone(),
        account_no: 1,
        closed_at: unix_now(),
        closing_register_wh: 14_000,
        currency: *b"EUR",
        remaining_credit_minor: credit,
        debt_minor: debt,
        last_serial: Some(1),
        audit_len: 9,
        audit_head: [7; 32],
        gateway_id: "gw-1".into(),
    };
    let signed = s.sign(&gateway_signer(p)).unwrap();
    g.seal(scope, Body::Settlement(SettlementBody { signed }), None)
}

fn request(now: u64) -> OrderRequest {
    OrderRequest {
        meter: "MTR-1".into(),
        from: "C-1".into(),
        to: "C-2".into(),
        effective_at: now,
        opening_credit_minor: 0,
    }
}

#[test]
fn a_settlement_with_credit_refunds_it_and_the_unapplied_token_and_moves_the_meter() {
    let p = pilot("tenancy-credit");
    let he = p.head_end();
    let backend = he.backend();
    let (mut e, mut g, scope) = online(&p, &he);
    // C-1 buys 5.00 (applied, receipted), 7.00 (sent, never applied) and 3.00 (refused by the gateway
    // once the account is closed: the old customer's).
    backend.top_up("C-1", "MTR-1", 500, [1; 16]).unwrap();
    backend.top_up("C-1", "MTR-1", 700, [2; 16]).unwrap();
    backend.top_up("C-1", "MTR-1", 300, [9; 16]).unwrap();
    let now = unix_now();
    let sent = top_up_ids(&mut g, &e.deliver(Some("MTR-1"), now), now);
    assert_eq!(sent.len(), 3);
    feed(&mut e, &receipt(&p, &mut g, scope, 1, 500));

    // The order: serials up to 3 are C-1's.
    let rec = he.order_tenancy(&request(now), now).unwrap();
    assert_eq!((rec.order_id, rec.last_old_serial), (1, 3));
    // The gateway refuses token 3 (the account it was for is closed): refunded at once.
    let refused = g.seal(
        scope,
        Body::CommandResult(CommandResult {
            command: sent[2],
            code: result_code::TOKEN_REFUSED,
            reason: Some("token 3 for meter \"MTR-1\" was bought by \"C-1\", whose account was closed by change of tenancy order 1".into()),
        }),
        None,
    );
    feed(&mut e, &refused);
    let last = audit::entries(&he.store()).unwrap().pop().unwrap();
    assert_eq!(
        (
            last.what,
            last.serial,
            last.amount_minor,
            last.customer.as_deref()
        ),
        (EntryKind::Refund, 3, 300, Some("C-1"))
    );
    // Nobody buys credit for the meter while the order is open.
    let err = backend.top_up("C-1", "MTR-1", 300, [3; 16]).unwrap_err();
    assert!(
        err.to_string().contains("changing tenancy (order 1)"),
        "{err}"
    );
    // A second order for the same meter waits for the first.
    let err = he.order_tenancy(&request(now), now).unwrap_err();
    assert!(
        err.to_string().contains("waiting for its settlement"),
        "{err}"
    );

    // Sent at the next tick, signed with the token key; a temporary failure is sent again with the
    // same id after the result timeout; "done" without a settlement as a new command.
    let timeout = p.config.reconcile.result_timeout_s;
    let first = orders(&p, &mut g, &e.tick(now), now);
    assert_eq!(first.len(), 1);
    let (order, id) = first[0].clone();
    assert_eq!(
        (
            order.order_id,
            order.old_customer.as_str(),
            order.new_customer.as_str(),
            order.last_old_serial
        ),
        (1, "C-1", "C-2", 3)
    );
    assert!(
        orders(&p, &mut g, &e.tick(now + 1), now + 1).is_empty(),
        "not due yet"
    );
    feed(&mut e, &result(&mut g, scope, id, result_code::TRY_LATER));
    let later = now + timeout + 1;
    let again = orders(&p, &mut g, &e.tick(later), later);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, id, "a resend keeps the message id");
    feed(&mut e, &result(&mut g, scope, id, result_code::DONE));
    let later2 = unix_now().max(later) + timeout + 1;
    let fresh = orders(&p, &mut g, &e.tick(later2), later2);
    assert_eq!(fresh.len(), 1);
    assert_ne!(
        fresh[0].1, id,
        "after done without a settlement: a new command"
    );

    // The settlement: 12.34 left.
    let before = audit::entries(&he.store()).unwrap().len();
    feed(&mut e, &settlement(&p, &mut g, scope, &order, 1_234, 0));
    let t = he.store().tenancy(1).unwrap().unwrap();
    assert_eq!(t.state, TenancyState::Settled);
    let s = t.settlement.unwrap();
    assert_eq!(
        (s.remaining_credit_minor, s.refunded_tokens.clone()),
        (1_234, vec![(2, 700)])
    );
    let new: Vec<_> = audit::entries(&he.store()).unwrap().split_off(before);
    let got: Vec<_> = new
        .iter()
        .map(|x| {
            (
                x.what,
                x.customer.clone().unwrap_or_default(),
                x.serial,
                x.amount_minor,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (EntryKind::Refund, "C-1".into(), 0, 1_234),
            (EntryKind::Refund, "C-1".into(), 2, 700),
            (EntryKind::TenancyOpened, "C-2".into(), 1, 0),
        ]
    );
    assert!(audit::verify(&he.store()).unwrap().is_ok());
    assert_eq!(
        he.store().token("MTR-1", 2).unwrap().unwrap().state,
        TokenState::Refused
    );
    assert!(he.store().pending(Some("MTR-1")).unwrap().is_empty());
    // The meter moved: the old customer's app no longer lists it, the new one's does.
    assert!(backend.meters("C-1").unwrap().is_empty());
    // Their purchase history stays theirs: both tokens, the second refused (refunded).
    let history = backend.history("C-1", None, 50).unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.serial == Some(2)
                && h.detail.as_deref().is_some_and(|d| d.contains("refunded"))),
        "{history:?}"
    );
    let m = backend.meters("C-2").unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].meter, "MTR-1");
    // The same settlement again (the gateway resent the order's answer): nothing more is booked.
    feed(&mut e, &settlement(&p, &mut g, scope, &order, 1_234, 0));
    assert_eq!(audit::entries(&he.store()).unwrap().len(), before + 3);
    // No more order commands; the new tenant buys credit with the next serial.
    assert!(orders(
        &p,
        &mut g,
        &e.tick(later2 + 10 * timeout),
        later2 + 10 * timeout
    )
    .is_empty());
    let bought = backend.top_up("C-2", "MTR-1", 400, [4; 16]).unwrap();
    assert_eq!(bought.serial, 4);
    assert!(backend.top_up("C-1", "MTR-1", 400, [5; 16]).is_err());
}

#[test]
fn a_settlement_with_debt_bills_it_and_forged_or_misdirected_ones_are_rejected() {
    let p = pilot("tenancy-debt");
    let he = p.head_end();
    let (mut e, mut g, scope) = online(&p, &he);
    let now = unix_now();
    he.order_tenancy(&request(now), now).unwrap();
    let (order, _) = orders(&p, &mut g, &e.tick(now), now).remove(0);
    let report = concentrator_headend::status::report(&he.store(), "EUR").unwrap();
    assert!(
        report.contains("change-of-tenancy orders waiting for their settlement: 1")
            && report.contains("order 1 meter MTR-1: C-1 to C-2"),
        "{report}"
    );

    // Signed by something that is not gateway gw-1 (the head-end's own token key): rejected for good.
    let forged = SettlementDocument {
        meter_id: "MTR-1".into(),
        order_id: order.order_id,
        old_customer: "C-1".into(),
        account_no: 1,
        closed_at: now,
        closing_register_wh: 1,
        currency: *b"EUR",
        remaining_credit_minor: 99_999,
        debt_minor: 0,
        last_serial: None,
        audit_len: 1,
        audit_head: [0; 32],
        gateway_id: "gw-1".into(),
    };
    let ca_dir = &p.config;
    let he_signer = {
        let cert = openssl::x509::X509::from_pem(
            &std::fs::read(ca_dir.path(&ca_dir.pki.token_cert)).unwrap(),
        )
        .unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(
            &std::fs::read(ca_dir.path(&ca_dir.pki.token_key)).unwrap(),
        )
        .unwrap();
        concentrator_security::signed::DocumentSigner::new(key, &[cert]).unwrap()
    };
    let signed = forged.sign(&he_signer).unwrap();
    feed(
        &mut e,
        &g.seal(scope, Body::Settlement(SettlementBody { signed }), None),
    );
    assert_eq!(
        he.store().tenancy(1).unwrap().unwrap().state,
        TenancyState::Pending
    );
    // For another order than the ones made here.
    let mut other = order.clone();
    other.order_id = 77;
    feed(&mut e, &settlement(&p, &mut g, scope, &other, 0, 10));
    let rejected = concentrator_headend::status::report(&he.store(), "EUR").unwrap();
    assert!(rejected.contains("did not make"), "{rejected}");
    assert!(
        rejected.contains("settlement does not verify"),
        "{rejected}"
    );

    // The real one: 3.21 of debt, billed to C-1.
    feed(&mut e, &settlement(&p, &mut g, scope, &order, 0, 321));
    let last = audit::entries(&he.store()).unwrap();
    let bills: Vec<_> = last.iter().filter(|x| x.what == EntryKind::Bill).collect();
    assert_eq!(bills.len(), 1);
    assert_eq!(
        (bills[0].amount_minor, bills[0].customer.as_deref()),
        (321, Some("C-1"))
    );
    assert!(bills[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("billed to C-1"));
    assert!(!last.iter().any(|x| x.what == EntryKind::Refund));
    let list = concentrator_headend::status::tenancies(&he.store()).unwrap();
    assert!(list.contains("billed 3.21 EUR"), "{list}");
}

#[test]
fn orders_for_unknown_meters_or_customers_are_refused_with_the_fix() {
    let p = pilot("tenancy-refused");
    let he = p.head_end();
    let now = unix_now();
    let mut r = request(now);
    r.to = "C-9".into();
    let e = he.order_tenancy(&r, now).unwrap_err().to_string();
    assert!(
        e.contains("C-9") && e.contains("provision the new customer first"),
        "{e}"
    );
    let mut r = request(now);
    r.from = "C-2".into();
    r.to = "C-1".into();
    let e = he.order_tenancy(&r, now).unwrap_err().to_string();
    assert!(e.contains("not linked to customer C-2"), "{e}");
    let mut r = request(now);
    r.meter = "MTR-404".into();
    let e = he.order_tenancy(&r, now).unwrap_err().to_string();
    assert!(e.contains("MTR-404 is not enrolled"), "{e}");
}
