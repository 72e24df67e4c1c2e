//! Money at the seam with the gateway, from the head-end's side (issue #14): nothing is booked applied
//! without the gateway's signed receipt; "done" without a receipt and temporary failures are sent
//! again; reconciliation compares applied sets; uplink messages refused for good are acknowledged and
//! recorded while the head-end's own store trouble is not acknowledged; the gateways' audit anchors
//! are kept and contradictions raised.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use concentrator_headend::engine::{Engine, Outgoing};
use concentrator_headend::store::{Batch, Entries, Kv, MemKv, Store, StoreError, TokenState};
use concentrator_headend::{status, HeadEnd};
use concentrator_mpc::backend::Backend;
use concentrator_protocol::*;
use concentrator_security::receipt::Receipt;
use concentrator_security::SecurityMode;
use support::*;

/// A head-end with MTR-1 attached behind gw-1, online.
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
            reason: None,
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
        balance_after_minor: 2_000,
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

fn summary(
    g: &mut GatewaySide,
    scope: Scope,
    last: Option<u64>,
    applied: Option<Vec<SerialRange>>,
    audit: Option<AuditAnchor>,
) -> (String, Vec<u8>) {
    g.seal(
        scope,
        Body::AccountSummary(AccountSummary {
            at: unix_now(),
            balance_minor: 1_000,
            currency: "EUR".into(),
            last_token_serial: last,
            register_wh: 10,
            tariff_id: 1,
            charged_minor: 0,
            relay_closed: true,
            applied,
            audit,
        }),
        None,
    )
}

/// The top-up commands among `out`, opened: their token serials and command ids.
fn top_ups(g: &mut GatewaySide, out: &[Outgoing], now: u64) -> Vec<(u64, MessageId)> {
    out.iter()
        .filter(|o| o.topic.ends_with("/top-up"))
        .map(|o| {
            let (_, f) = g.open_at(o, now);
            let Body::TopUp(t) = f.body else {
                panic!("not a top-up")
            };
            let doc = concentrator_security::token::SignedToken::decode(&t.token).unwrap();
            let tok = concentrator_security::token::CreditToken::decode(&doc.0.body).unwrap();
            (tok.serial, f.header.id)
        })
        .collect()
}

fn state(he: &HeadEnd, serial: u64) -> TokenState {
    he.store().token("MTR-1", serial).unwrap().unwrap().state
}

#[test]
fn a_summary_never_books_a_token_and_a_gap_below_the_last_serial_is_sent_again() {
    let p = Pilot::new("gap");
    let he = p.head_end();
    let backend = he.backend();
    let (mut e, mut g, scope) = online(&p, &he);
    backend.top_up("C-1", "MTR-1", 500, [1; 16]).unwrap();
    backend.top_up("C-1", "MTR-1", 700, [2; 16]).unwrap();
    let now = unix_now();
    let sent = top_ups(&mut g, &e.deliver(Some("MTR-1"), now), now);
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
    // Token 1 fails for now (no account yet); token 2 is applied and its receipt books it.
    feed(
        &mut e,
        &result(&mut g, scope, sent[0].1, result_code::TRY_LATER),
    );
    feed(&mut e, &result(&mut g, scope, sent[1].1, result_code::DONE));
    feed(&mut e, &receipt(&p, &mut g, scope, 2, 700));
    assert_eq!(state(&he, 2), TokenState::Applied);

    // A summary whose last serial is 2 but whose applied set is {2}: token 1 is not applied there.
    let later = now + 60;
    let msg = summary(
        &mut g,
        scope,
        Some(2),
        Some(vec![SerialRange { first: 2, last: 2 }]),
        None,
    );
    let out = e.handle(&msg.0, &msg.1, later);
    assert_eq!(
        state(&he, 1),
        TokenState::Pending,
        "never booked from a summary"
    );
    let again = top_ups(&mut g, &out, later);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, 1, "token 1 is sent again");

    // An old gateway that only says its last serial: still nothing booked, token 1 sent again.
    let later = later + 60;
    let msg = summary(&mut g, scope, Some(2), None, None);
    let out = e.handle(&msg.0, &msg.1, later);
    assert_eq!(state(&he, 1), TokenState::Pending);
    assert_eq!(top_ups(&mut g, &out, later)[0].0, 1);
    let history = backend.history("C-1", Some("MTR-1"), 50).unwrap();
    assert!(
        !history
            .iter()
            .any(|h| h.serial == Some(1)
                && h.what == concentrator_mpc::backend::HistoryKind::Applied),
        "the customer is not told token 1 was applied"
    );
}

#[test]
fn already_done_without_a_receipt_is_sent_again_after_the_timeout_and_the_receipt_books_it() {
    let p = Pilot::new("already");
    let he = p.head_end();
    let backend = he.backend();
    let (mut e, mut g, scope) = online(&p, &he);
    backend.top_up("C-1", "MTR-1", 1_734, [1; 16]).unwrap();
    let now = unix_now();
    let sent = top_ups(&mut g, &e.deliver(Some("MTR-1"), now), now);
    feed(
        &mut e,
        &result(&mut g, scope, sent[0].1, result_code::ALREADY_DONE),
    );
    assert_eq!(state(&he, 1), TokenState::Pending, "a result books nothing");
    assert!(e.deliver(None, now).is_empty(), "it waits for the receipt");
    let timeout = p.config.reconcile.result_timeout_s;
    let later = now + timeout + 2;
    let again = top_ups(&mut g, &e.deliver(None, later), later);
    assert_eq!(again.len(), 1, "no receipt within the timeout: sent again");
    assert_eq!(again[0].0, 1);
    assert_ne!(
        again[0].1, sent[0].1,
        "as a new command, so that the gateway's ledger answers it and sends the receipt again"
    );
    feed(&mut e, &receipt(&p, &mut g, scope, 1, 1_734));
    assert_eq!(state(&he, 1), TokenState::Applied);
    assert!(e.deliver(None, later + 10 * timeout).is_empty());
}

/// A key space whose reads of tokens fail while `broken` is set.
struct Flaky {
    inner: MemKv,
    broken: Arc<AtomicBool>,
}

impl Kv for Flaky {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if self.broken.load(Ordering::SeqCst) && key.starts_with(b"tok/") {
            return Err(StoreError::Db {
                path: "test".into(),
                reason: "injected read failure".into(),
            });
        }
        self.inner.get(key)
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner.apply(batch)
    }
    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.inner.scan(prefix)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.inner.compare_and_swap(key, old, new)
    }
}

#[test]
fn messages_wrong_for_good_are_acknowledged_and_recorded_store_trouble_is_not_acknowledged() {
    let p = Pilot::new("reject");
    let broken = Arc::new(AtomicBool::new(false));
    let store = Arc::new(Store::new(Box::new(Flaky {
        inner: MemKv::default(),
        broken: broken.clone(),
    })));
    p.provision(&store);
    let he = HeadEnd::with_store(p.config.clone(), store).unwrap();
    let (mut e, mut g, scope) = online(&p, &he);
    he.backend().top_up("C-1", "MTR-1", 500, [1; 16]).unwrap();
    e.flush_acks(unix_now());

    // A receipt for a token this head-end never issued, and one with the wrong amount.
    feed(&mut e, &receipt(&p, &mut g, scope, 99, 500));
    feed(&mut e, &receipt(&p, &mut g, scope, 1, 50_000));
    assert_eq!(
        e.pending_acks(),
        2,
        "both acknowledged: the gateway stops sending them"
    );
    let rejected = he.store().rejected().unwrap();
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected[0].reason.contains("did not issue"),
        "{}",
        rejected[0].reason
    );
    assert!(
        rejected[1].reason.contains("500.00 EUR"),
        "{}",
        rejected[1].reason
    );
    assert_eq!(state(&he, 1), TokenState::Pending);
    let report = status::report(&he.store(), "EUR").unwrap();
    assert!(
        report.contains("rejected uplink messages (acknowledged, not acted on): 2"),
        "{report}"
    );
    assert!(report.contains("did not issue"), "{report}");
    e.flush_acks(unix_now());

    // The head-end's own store fails: the right receipt is not acknowledged (the gateway sends it
    // again), and applied when it comes again.
    let id = g.next_id();
    let good = |g: &mut GatewaySide| {
        let r = Receipt {
            meter_id: "MTR-1".into(),
            serial: 1,
            amount_minor: 500,
            currency: *b"EUR",
            applied_at: unix_now(),
            balance_after_minor: 1_000,
            gateway_id: "gw-1".into(),
        }
        .sign(&gateway_signer(&p))
        .unwrap();
        g.seal(
            scope,
            Body::Receipt(ReceiptBody {
                signed: r.encode().unwrap(),
            }),
            Some(id),
        )
    };
    broken.store(true, Ordering::SeqCst);
    let msg = good(&mut g);
    feed(&mut e, &msg);
    assert_eq!(
        e.pending_acks(),
        0,
        "not acknowledged on the head-end's own trouble"
    );
    assert_eq!(
        he.store().rejected().unwrap().len(),
        2,
        "and not recorded as rejected"
    );
    broken.store(false, Ordering::SeqCst);
    let msg = good(&mut g);
    feed(&mut e, &msg);
    assert_eq!(e.pending_acks(), 1);
    assert_eq!(state(&he, 1), TokenState::Applied);
}

#[test]
fn the_gateways_audit_anchor_is_kept_and_a_shorter_or_different_chain_is_an_alarm() {
    let p = Pilot::new("anchor");
    let he = p.head_end();
    let (mut e, mut g, scope) = online(&p, &he);
    let anchor = |len, b| Some(AuditAnchor { len, head: [b; 32] });
    feed(
        &mut e,
        &summary(&mut g, scope, None, Some(vec![]), anchor(5, 0xaa)),
    );
    feed(
        &mut e,
        &summary(&mut g, scope, None, Some(vec![]), anchor(7, 0xbb)),
    );
    let text = status::anchors(&he.store()).unwrap();
    assert!(
        text.contains(&format!("gw-1 7:{}", "bb".repeat(32))),
        "{text}"
    );
    assert!(!text.contains("ALARM"), "{text}");
    // The chain comes back shorter, then different at the same length: two alarms; the anchor stays.
    feed(
        &mut e,
        &summary(&mut g, scope, None, Some(vec![]), anchor(3, 0xcc)),
    );
    feed(
        &mut e,
        &summary(&mut g, scope, None, Some(vec![]), anchor(7, 0xdd)),
    );
    let text = status::anchors(&he.store()).unwrap();
    assert!(
        text.contains(&format!("gw-1 7:{}", "bb".repeat(32))),
        "{text}"
    );
    assert_eq!(text.matches("ALARM").count(), 2, "{text}");
    assert!(
        text.contains("cut off") && text.contains("rewritten"),
        "{text}"
    );
    let report = status::report(&he.store(), "EUR").unwrap();
    assert!(report.contains("2 ALARM(S)"), "{report}");
    assert!(report.contains("balance 10.00 EUR"), "{report}");
}

#[test]
fn the_head_ends_own_record_is_anchored_beside_its_store_and_a_cut_is_found() {
    use concentrator_headend::audit;
    let p = Pilot::new("ownanchor");
    {
        let he = HeadEnd::open(p.config.clone()).unwrap();
        p.provision(&he.store());
        he.backend().top_up("C-1", "MTR-1", 500, [1; 16]).unwrap();
        he.backend().top_up("C-1", "MTR-1", 600, [2; 16]).unwrap();
    }
    let anchor = p.config.anchor_path();
    assert!(!anchor.starts_with(p.config.path(&p.config.store.path)));
    assert_eq!(audit::last_anchor(&anchor).unwrap().unwrap().len, 4);
    let store = Store::open_configured(&p.config).unwrap();
    assert_eq!(audit::verify_anchored(&store, &anchor).unwrap(), Ok(4));

    // The last entry cut off and the chain's head re-linked: the chain alone still verifies.
    let mut key = b"pay/".to_vec();
    key.extend_from_slice(&3u64.to_be_bytes());
    let mut prev = b"pay/".to_vec();
    prev.extend_from_slice(&2u64.to_be_bytes());
    let octets = store.get_raw(&prev).unwrap().unwrap();
    let hash =
        hex::encode(openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &octets).unwrap());
    let mut b = Batch::new();
    b.remove(key);
    b.put_raw(
        "paymeta",
        format!(r#"{{"next":3,"last_hash":"{hash}"}}"#).into_bytes(),
    );
    store.commit(b).unwrap();
    assert_eq!(audit::verify(&store).unwrap(), Ok(3));
    let broken = audit::verify_anchored(&store, &anchor)
        .unwrap()
        .unwrap_err();
    assert!(broken.reason.contains("cut off"), "{broken}");
}

#[test]
fn a_token_booked_refused_that_the_gateway_lists_applied_gets_its_receipt_asked_for() {
    let p = Pilot::new("refusedapplied");
    let he = p.head_end();
    let (mut e, mut g, scope) = online(&p, &he);
    he.backend().top_up("C-1", "MTR-1", 800, [1; 16]).unwrap();
    let now = unix_now();
    let sent = top_ups(&mut g, &e.deliver(Some("MTR-1"), now), now);
    feed(
        &mut e,
        &result(&mut g, scope, sent[0].1, result_code::TOKEN_REFUSED),
    );
    assert_eq!(state(&he, 1), TokenState::Refused);
    let later = now + 60;
    let msg = summary(
        &mut g,
        scope,
        Some(1),
        Some(vec![SerialRange { first: 1, last: 1 }]),
        None,
    );
    let out = e.handle(&msg.0, &msg.1, later);
    assert_eq!(
        top_ups(&mut g, &out, later).len(),
        1,
        "asked for its receipt"
    );
    feed(&mut e, &receipt(&p, &mut g, scope, 1, 800));
    assert_eq!(state(&he, 1), TokenState::Applied);
}

#[test]
fn a_restore_request_is_answered_in_the_meters_scope_and_recorded_with_its_figures() {
    use concentrator_headend::audit;
    use concentrator_headend::engine::restore::RestoreFacts;
    use concentrator_security::signed::DocumentSigner;
    let p = Pilot::new("restore");
    let he = p.head_end();
    let (mut e, mut g, scope) = online(&p, &he);
    // A statement of the figures (the real one comes from the security crate at the merge).
    fn statement(f: &RestoreFacts, s: &DocumentSigner) -> Result<Vec<u8>, String> {
        let body = format!("{} {} {:?}", f.meter, f.credit_minor, f.register_wh).into_bytes();
        s.sign(body)
            .map_err(|e| e.to_string())?
            .encode()
            .ok_or_else(|| "too long".to_string())
    }
    e.set_restore_statement(statement);
    he.backend().top_up("C-1", "MTR-1", 1_000, [1; 16]).unwrap();
    let now = unix_now();
    let sent = top_ups(&mut g, &e.deliver(Some("MTR-1"), now), now);
    feed(&mut e, &summary(&mut g, scope, None, Some(vec![]), None));
    feed(&mut e, &result(&mut g, scope, sent[0].1, result_code::DONE));
    feed(&mut e, &receipt(&p, &mut g, scope, 1, 1_000));
    e.flush_acks(unix_now());

    let req = g.seal(
        scope,
        Body::RestoreRequest(RestoreRequest {
            at: unix_now(),
            register_wh: Some(12),
        }),
        None,
    );
    let out = one(feed(&mut e, &req), "/restore");
    let (s, f) = g.open(&out);
    assert_eq!(s, scope);
    let Body::AccountRestore(r) = f.body else {
        panic!("not an account restore")
    };
    let doc = concentrator_security::signed::SignedDocument::decode(&r.signed).unwrap();
    // The summary said 10.00 EUR at register 10 Wh; the token of 10.00 EUR applied after it.
    assert_eq!(doc.body, b"MTR-1 2000 Some(10)".to_vec());
    assert_eq!(e.pending_acks(), 1, "the request is acknowledged");
    let last = audit::entries(&he.store()).unwrap().pop().unwrap();
    assert_eq!(last.what, audit::EntryKind::AccountRestored);
    let detail = last.detail.unwrap();
    assert!(detail.contains("credit restored 20.00 EUR"), "{detail}");
    assert!(detail.contains("register 10 Wh"), "{detail}");
}

#[test]
fn a_refused_repeat_of_a_serial_the_summary_lists_applied_is_not_booked_refused() {
    let p = Pilot::new("refusedrepeat");
    let he = p.head_end();
    let (mut e, mut g, scope) = online(&p, &he);
    he.backend().top_up("C-1", "MTR-1", 900, [1; 16]).unwrap();
    // Applied at the gateway (say through its local inbox), its receipt not here yet.
    let later = unix_now() + 60;
    let msg = summary(
        &mut g,
        scope,
        Some(1),
        Some(vec![SerialRange { first: 1, last: 1 }]),
        None,
    );
    let out = e.handle(&msg.0, &msg.1, later);
    let sent = top_ups(&mut g, &out, later);
    assert_eq!(sent.len(), 1);
    // A gateway that refuses the repeat instead of answering "already done".
    feed(
        &mut e,
        &result(&mut g, scope, sent[0].1, result_code::TOKEN_REFUSED),
    );
    assert_eq!(
        state(&he, 1),
        TokenState::Pending,
        "not refused: it was applied"
    );
    feed(&mut e, &receipt(&p, &mut g, scope, 1, 900));
    assert_eq!(state(&he, 1), TokenState::Applied);
}
