//! The phone-facing server and the client library against each other over TLS on loopback, with the
//! in-memory payment server of `common`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use concentrator_mpc::backend::{Delivery, HistoryKind, Notice};
use concentrator_mpc::client::{Client, ClientError, Keys};
use concentrator_mpc::message::{ErrorCode, Message, Plain, Sealed};
use concentrator_mpc::server::ServerConfig;
use concentrator_mpc::tls;
use concentrator_mpc::wire::{Conn, WireError, MAX_MESSAGE_LEN};
use concentrator_security::sqn::SqnGenerator;
use concentrator_security::SecurityMode;

fn registered(server: &TestServer) -> Keys {
    server.client().register(CODE_1, "alice", PASSWORD).unwrap()
}

fn logged_in(server: &TestServer) -> (Client, Keys) {
    let mut keys = registered(server);
    let mut c = server.client();
    c.login(&mut keys, PASSWORD, &mut |_| Ok(())).unwrap();
    (c, keys)
}

fn code_of(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("expected a server error, got {e}")),
        Ok(v) => panic!("expected a server error, got {v:?}"),
    }
}

#[test]
fn register_good_then_reused_unknown_and_taken() {
    let server = TestServer::start();
    let keys = registered(&server);
    assert_eq!(keys.customer, "C-0001");
    assert_eq!(keys.imsi, IMSI_1);
    let stored = server.backend.customer("C-0001");
    assert_eq!(stored.user.as_deref(), Some("alice"));
    assert_eq!(stored.k, Some(keys.k));
    assert_eq!(stored.opc, Some(keys.opc));
    assert_ne!(keys.k, keys.opc);
    let hash = stored.password_hash.unwrap();
    assert!(hash.starts_with("scrypt$14$8$1$"), "{hash}");
    assert!(concentrator_mpc::password::verify(PASSWORD, &hash).unwrap());

    let mut c = server.client();
    let reused = c.register(CODE_1, "bob", PASSWORD);
    let unknown = c.register("AUTH-9999", "bob", PASSWORD);
    assert_eq!(code_of(reused), ErrorCode::CodeRefused);
    let e = unknown.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::CodeRefused));
    assert!(e.to_string().contains("unknown or already used"), "{e}");
    assert_eq!(
        code_of(c.register(CODE_2, "alice", PASSWORD)),
        ErrorCode::UserTaken
    );
    assert_eq!(
        code_of(c.register(CODE_2, "bob", "short")),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code_of(c.register(CODE_2, "bad name", PASSWORD)),
        ErrorCode::BadRequest
    );
    // The refusals used nothing up: the second customer can still register.
    let bob = c.register(CODE_2, "bob", PASSWORD).unwrap();
    assert_eq!(bob.customer, "C-0002");
}

#[test]
fn login_then_every_request() {
    let server = TestServer::start();
    let mut keys = registered(&server);
    let mut c = server.client();
    let mut saved = Vec::new();
    let info = c
        .login(&mut keys, PASSWORD, &mut |k| {
            saved.push(k.sqn.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(info.customer, "C-0001");
    assert_eq!(info.mode, SecurityMode::AES);
    assert_eq!(saved.len(), 1, "the SQN window is saved before RES leaves");
    assert_eq!(saved[0], keys.sqn);
    assert_eq!(server.backend.customer("C-0001").sqn.seq_he(), 1);

    let meters = c.meters().unwrap();
    assert_eq!(
        meters.iter().map(|m| m.meter.as_str()).collect::<Vec<_>>(),
        ["MTR-1", "MTR-2"]
    );
    assert_eq!(meters[0].balance_minor, Some(500));
    assert_eq!(c.balance(Some("MTR-2")).unwrap()[0].meter, "MTR-2");
    assert_eq!(code_of(c.balance(Some("MTR-3"))), ErrorCode::NotFound);

    let p = c.top_up("MTR-1", 2000).unwrap();
    assert_eq!(
        (p.meter.as_str(), p.serial, p.amount_minor),
        ("MTR-1", 1, 2000)
    );
    assert_eq!(p.delivery, Delivery::Pending);
    assert!(!p.token.is_empty());
    assert_eq!(code_of(c.top_up("MTR-3", 100)), ErrorCode::NotFound);
    assert_eq!(code_of(c.top_up("MTR-1", 0)), ErrorCode::BadRequest);
    let e = c.top_up("MTR-1", 1_000_000).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Refused));
    assert!(e.to_string().contains("limit per purchase"), "{e}");

    let history = c.history(Some("MTR-1"), 10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].what, HistoryKind::Purchased);
    let purchases = c.purchases(10).unwrap();
    assert_eq!(purchases, vec![p]);

    // A second login on the same connection replaces the session.
    c.login(&mut keys, PASSWORD, &mut |_| Ok(())).unwrap();
    assert_eq!(c.meters().unwrap().len(), 2);
    c.logout().unwrap();
    assert!(matches!(c.meters(), Err(ClientError::NotLoggedIn)));
}

#[test]
fn wrong_password_is_refused_and_repeated_failures_lock_the_user_out() {
    let server = TestServer::start_with(ServerConfig {
        lockout_after: 3,
        max_failures_per_connection: 100,
        ..test_config()
    });
    let mut keys = registered(&server);
    let mut c = server.client();
    let e = c
        .login(&mut keys, "not the password", &mut |_| Ok(()))
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LoginFailed));
    assert!(
        e.to_string()
            .contains("the user name, the password or the phone's key is wrong"),
        "{e}"
    );
    for _ in 0..2 {
        assert_eq!(
            code_of(c.login(&mut keys, "wrong", &mut |_| Ok(()))),
            ErrorCode::LoginFailed
        );
    }
    // Three failures: now even the right password must wait.
    let e = c.login(&mut keys, PASSWORD, &mut |_| Ok(())).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooManyAttempts), "{e}");
    assert!(e.to_string().contains("try again in"), "{e}");
    std::thread::sleep(Duration::from_millis(1100));
    c.login(&mut keys, PASSWORD, &mut |_| Ok(())).unwrap();
}

/// The first login step on a raw connection: `Ok((RAND, AUTN))` or the error's code.
fn raw_login(raw: &mut RawConn, identity: &str) -> Result<([u8; 16], [u8; 16]), u16> {
    let modes = vec![SecurityMode::AES.into()];
    let m = Message::new(
        1,
        Plain::Login {
            identity: identity.into(),
            modes,
        },
    );
    raw.send(&m.encode().unwrap()).unwrap();
    let octets = raw.receive().unwrap().expect("an answer within 5 s");
    match Message::decode(&octets).unwrap().body {
        Plain::Challenge { rand, autn } => Ok((rand, autn)),
        Plain::Error { code, .. } => Err(code),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// An answer to a challenge with a RES the sender made up; the error code.
fn raw_response(raw: &mut RawConn, rand: [u8; 16], pass: &str) -> u16 {
    let m = Message::new(
        2,
        Plain::Response {
            rand,
            res: vec![0; 8],
            password: pass.into(),
        },
    );
    raw.send(&m.encode().unwrap()).unwrap();
    read_error(raw).0
}

#[test]
fn an_unknown_user_gets_a_challenge_like_a_known_one_and_the_same_refusal() {
    // Failed before: an unknown user name was refused at once, without a challenge.
    let server = TestServer::start();
    let _keys = registered(&server);
    let mut raw = raw_conn(&server);
    let (rand_a, autn_a) = raw_login(&mut raw, "alice").expect("a challenge for alice");
    let (rand_g, autn_g) = raw_login(&mut raw, "mallory").expect("a challenge for nobody");
    assert_ne!(rand_g, rand_a);
    assert_eq!(autn_a[6..8], autn_g[6..8], "the same AMF in both AUTNs");
    let (rand_g2, autn_g2) = raw_login(&mut raw, "mallory").unwrap();
    assert_ne!(
        (rand_g2, autn_g2),
        (rand_g, autn_g),
        "a fresh RAND each time, as for a real user"
    );
    assert_eq!(
        raw_response(&mut raw, rand_g2, PASSWORD),
        ErrorCode::LoginFailed as u16
    );
    let (rand_a, _) = raw_login(&mut raw, "alice").unwrap();
    assert_eq!(
        raw_response(&mut raw, rand_a, PASSWORD),
        ErrorCode::LoginFailed as u16,
        "a wrong RES gets the same answer"
    );
    // The phone of someone the server does not know cannot verify the decoy: nothing is sent.
    let mut ghost = registered_keys_for("mallory");
    let e = server
        .client()
        .login(&mut ghost, PASSWORD, &mut |_| Ok(()))
        .unwrap_err();
    assert!(matches!(e, ClientError::NotTheUtility), "{e}");
}

/// Keys a phone would hold for `user` if the server had registered it (it has not).
fn registered_keys_for(user: &str) -> Keys {
    Keys {
        customer: "C-9999".into(),
        user: user.into(),
        imsi: "001019999999999".into(),
        k: [7; 16],
        opc: [9; 16],
        sqn: Default::default(),
    }
}

#[test]
fn failed_logins_count_across_connections_and_by_source_address() {
    // Failed before: the count was per customer only for known users, and unknown names were never
    // counted; a new connection gave fresh per-connection guesses.
    let server = TestServer::start_with(ServerConfig {
        lockout_after: 2,
        source_lockout_after: 4,
        max_failures_per_connection: 100,
        ..test_config()
    });
    let _keys = registered(&server);
    for _ in 0..2 {
        let mut raw = raw_conn(&server);
        let (rand, _) = raw_login(&mut raw, "nobody-1").unwrap();
        assert_eq!(
            raw_response(&mut raw, rand, "x"),
            ErrorCode::LoginFailed as u16
        );
    }
    // A third connection for the same unknown name: it must wait, as a known user would.
    let mut raw = raw_conn(&server);
    assert_eq!(
        raw_login(&mut raw, "nobody-1"),
        Err(ErrorCode::TooManyAttempts as u16)
    );
    // Other names from the same address: two more failures reach the address's limit.
    for name in ["nobody-2", "nobody-3"] {
        let mut raw = raw_conn(&server);
        let (rand, _) = raw_login(&mut raw, name).unwrap();
        assert_eq!(
            raw_response(&mut raw, rand, "x"),
            ErrorCode::LoginFailed as u16
        );
    }
    let mut raw = raw_conn(&server);
    assert_eq!(
        raw_login(&mut raw, "alice"),
        Err(ErrorCode::TooManyAttempts as u16),
        "the address waits, whatever name it tries next"
    );
}

#[test]
fn authorization_code_guesses_are_limited_across_connections() {
    // Failed before: only a connection's own count (5, then closed) limited code guesses.
    let server = TestServer::start_with(ServerConfig {
        lockout_after: 2,
        source_lockout_after: 3,
        ..test_config()
    });
    for guess in ["000-001", "000-002"] {
        let mut c = server.client();
        assert_eq!(
            code_of(c.register(guess, "eve", PASSWORD)),
            ErrorCode::CodeRefused
        );
    }
    // The same user name on a new connection: wait.
    let e = server
        .client()
        .register("000-003", "eve", PASSWORD)
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooManyAttempts), "{e}");
    assert!(e.to_string().contains("try again in"), "{e}");
    // Another name from the same address: its third failure, then the address waits, even with the
    // right code.
    assert_eq!(
        code_of(server.client().register("000-004", "mallet", PASSWORD)),
        ErrorCode::CodeRefused
    );
    let e = server
        .client()
        .register(CODE_1, "alice", PASSWORD)
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooManyAttempts), "{e}");
}

#[test]
fn a_connection_is_closed_after_too_many_failures() {
    let server = TestServer::start_with(ServerConfig {
        max_failures_per_connection: 2,
        ..test_config()
    });
    let mut c = server.client();
    assert_eq!(
        code_of(c.register("nope-1", "bob", PASSWORD)),
        ErrorCode::CodeRefused
    );
    assert_eq!(
        code_of(c.register("nope-2", "bob", PASSWORD)),
        ErrorCode::CodeRefused
    );
    assert!(matches!(
        c.register(CODE_1, "bob", PASSWORD),
        Err(ClientError::Wire(WireError::Closed | WireError::Io(_)))
    ));
}

#[test]
fn a_server_with_another_key_is_refused_by_the_client() {
    let server = TestServer::start();
    let mut keys = registered(&server);
    let mut impostor = server.backend.customer("C-0001");
    impostor.k = Some([0x42; 16]);
    server.backend.replace_customer(impostor);
    let before = keys.sqn.clone();
    let mut c = server.client();
    let e = c.login(&mut keys, PASSWORD, &mut |_| Ok(())).unwrap_err();
    assert!(matches!(e, ClientError::NotTheUtility), "{e}");
    assert!(
        e.to_string().contains("the server is not the utility's"),
        "{e}"
    );
    assert_eq!(keys.sqn, before, "a forged challenge changes nothing");
    assert!(!c.logged_in());
}

#[test]
fn a_stale_sqn_is_resynchronised_and_the_login_succeeds() {
    let server = TestServer::start();
    let mut keys = registered(&server);
    for _ in 0..3 {
        server
            .client()
            .login(&mut keys, PASSWORD, &mut |_| Ok(()))
            .unwrap();
    }
    // The server lost its SQN state (restored from an old backup).
    let mut c0 = server.backend.customer("C-0001");
    c0.sqn = SqnGenerator::new();
    server.backend.replace_customer(c0);
    let mut saves = 0;
    let mut c = server.client();
    c.login(&mut keys, PASSWORD, &mut |_| {
        saves += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(saves, 2, "AUTS, then RES");
    assert!(server.backend.customer("C-0001").sqn.seq_he() > 3);
    assert_eq!(c.meters().unwrap().len(), 2);
}

#[test]
fn a_failed_save_stops_the_login_before_the_answer_leaves() {
    let server = TestServer::start();
    let mut keys = registered(&server);
    let mut c = server.client();
    let e = c
        .login(&mut keys, PASSWORD, &mut |_| {
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
    assert!(matches!(e, ClientError::Save(_)), "{e}");
    assert!(!c.logged_in());
}

#[test]
fn top_up_is_idempotent_by_request_id() {
    let server = TestServer::start();
    let (mut c, _) = logged_in(&server);
    let id = [7u8; 16];
    let first = c.top_up_with_id("MTR-1", 1500, id).unwrap();
    let again = c.top_up_with_id("MTR-1", 1500, id).unwrap();
    assert_eq!(first, again);
    assert_eq!(server.backend.purchase_count(), 1);
    let other = c.top_up_with_id("MTR-1", 1500, [8u8; 16]).unwrap();
    assert_eq!(other.serial, first.serial + 1);
    assert_eq!(server.backend.purchase_count(), 2);
}

fn assert_closed(c: &mut Client) {
    assert!(!c.logged_in());
    let e = c.register(CODE_2, "bob", PASSWORD).unwrap_err();
    assert!(
        matches!(e, ClientError::Wire(WireError::Closed | WireError::Io(_))),
        "expected a closed connection, got {e}"
    );
}

#[test]
fn a_replayed_sealed_request_is_refused() {
    let server = TestServer::start();
    let (mut c, _) = logged_in(&server);
    let (id, octets) = c
        .seal_request(Sealed::TopUp {
            meter: "MTR-1".into(),
            amount_minor: 1000,
            request_id: [1; 16],
        })
        .unwrap();
    c.send_octets(&octets).unwrap();
    assert!(matches!(
        c.read_answer(id).unwrap(),
        Sealed::Purchased { .. }
    ));
    c.send_octets(&octets).unwrap();
    let e = c.read_answer(id).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Protection), "{e}");
    assert!(e.to_string().contains("replayed"), "{e}");
    assert_eq!(server.backend.purchase_count(), 1);
    assert_closed(&mut c);
}

#[test]
fn a_tampered_sealed_request_is_refused() {
    let server = TestServer::start();
    let (mut c, _) = logged_in(&server);
    let (id, mut octets) = c
        .seal_request(Sealed::TopUp {
            meter: "MTR-1".into(),
            amount_minor: 1000,
            request_id: [1; 16],
        })
        .unwrap();
    // 30 octets from the end is inside the ciphertext (the meter number), before MAC-I.
    let at = octets.len() - 30;
    octets[at] ^= 0x01;
    c.send_octets(&octets).unwrap();
    let e = c.read_answer(id).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Protection), "{e}");
    assert!(e.to_string().contains("MAC"), "{e}");
    assert_eq!(server.backend.purchase_count(), 0);
    assert_closed(&mut c);
}

#[test]
fn a_sealed_request_before_login_is_refused() {
    let server = TestServer::start();
    let mut c = server.client();
    assert!(matches!(c.meters(), Err(ClientError::NotLoggedIn)));
    // Forged on the wire: the server refuses it too.
    let mut raw = raw_conn(&server);
    raw.send(
        &Message::new(
            3,
            Plain::Sealed {
                envelope: vec![1, 2, 3],
            },
        )
        .encode()
        .unwrap(),
    )
    .unwrap();
    let (code, _) = read_error(&mut raw);
    assert_eq!(code, ErrorCode::UnexpectedMessage as u16);
}

#[test]
fn notices_are_pushed_to_watch_and_wait_applied() {
    let server = TestServer::start();
    let (mut c, _) = logged_in(&server);
    c.watch().unwrap();
    assert_eq!(server.backend.subscribers(), 1);
    let t0 = Instant::now();
    server.backend.notify(
        "MTR-2",
        Notice::LowCredit {
            meter: "MTR-2".into(),
            balance_minor: 42,
            at: 5,
        },
    );
    let n = c.next_notice(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        n,
        Some(Notice::LowCredit {
            meter: "MTR-2".into(),
            balance_minor: 42,
            at: 5
        })
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "pushed, not polled late"
    );
    assert_eq!(
        c.next_notice(Some(Duration::from_millis(100))).unwrap(),
        None
    );

    // A receipt that comes while the phone waits.
    let p = c.top_up("MTR-1", 2000).unwrap();
    let backend = server.backend.clone();
    let applier = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        backend.apply("MTR-1", p.serial)
    });
    let got = c
        .wait_applied("MTR-1", p.serial, Duration::from_secs(5))
        .unwrap();
    let balance = applier.join().unwrap();
    assert_eq!(
        got,
        Some(Notice::Applied {
            meter: "MTR-1".into(),
            serial: p.serial,
            amount_minor: 2000,
            balance_after_minor: balance,
            at: 1_767_230_000
        })
    );
    assert_eq!(balance, 2500);

    // Nothing comes: None after the timeout.
    let q = c.top_up("MTR-1", 100).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        c.wait_applied("MTR-1", q.serial, Duration::from_millis(300))
            .unwrap(),
        None
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // Other notices that came meanwhile are still there for the watcher.
    server.backend.notify(
        "MTR-1",
        Notice::SupplyCut {
            meter: "MTR-1".into(),
            at: 9,
        },
    );
    let mut notices = c.notices();
    assert!(matches!(
        notices.next(),
        Some(Ok(Notice::SupplyCut { at: 9, .. }))
    ));
}

#[test]
fn wait_applied_finds_a_receipt_that_came_before_the_subscription() {
    let server = TestServer::start();
    let (mut c, _) = logged_in(&server);
    let p = c.top_up("MTR-1", 700).unwrap();
    server.backend.apply("MTR-1", p.serial);
    let got = c
        .wait_applied("MTR-1", p.serial, Duration::from_secs(2))
        .unwrap();
    assert!(
        matches!(
            got,
            Some(Notice::Applied {
                balance_after_minor: 1200,
                ..
            })
        ),
        "{got:?}"
    );
}

#[test]
fn an_expired_session_must_log_in_again() {
    let server = TestServer::start_with(ServerConfig {
        session_lifetime_s: 1,
        ..test_config()
    });
    let (mut c, mut keys) = logged_in(&server);
    std::thread::sleep(Duration::from_millis(2100));
    let e = c.meters().unwrap_err();
    // Either end may notice first: the client's own context refuses to seal, or the server says so.
    assert!(e.session_expired(), "{e}");
    c.login(&mut keys, PASSWORD, &mut |_| Ok(())).unwrap();
    assert_eq!(c.meters().unwrap().len(), 2);
}

#[test]
fn the_client_trusts_only_the_ca_it_is_given() {
    let server = TestServer::start();
    let e = Client::connect(&server.host_port(), &pki().other_ca).unwrap_err();
    assert!(matches!(e, ClientError::Handshake { .. }), "{e}");
    let e = Client::connect(
        &server.host_port(),
        std::path::Path::new("/nonexistent/ca.pem"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

type RawConn = Conn<openssl::ssl::SslStream<TcpStream>>;

fn raw_conn(server: &TestServer) -> RawConn {
    let tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tls = tls::connector(&pki().ca)
        .unwrap()
        .connect("localhost", tcp)
        .unwrap();
    Conn::new(tls)
}

fn read_error(raw: &mut RawConn) -> (u16, String) {
    let octets = raw.receive().unwrap().expect("an answer within 5 s");
    match Message::decode(&octets).unwrap().body {
        Plain::Error { code, message } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn assert_raw_closed(raw: &mut RawConn) {
    match raw.receive() {
        Err(WireError::Closed | WireError::Io(_)) => {}
        other => panic!("expected the server to close, got {other:?}"),
    }
}

#[test]
fn malformed_frames_get_an_error_and_the_connection_closes() {
    let server = TestServer::start();

    // Garbage that is framed correctly but is not CBOR of a message.
    let mut raw = raw_conn(&server);
    raw.send(b"\xff\x00garbage").unwrap();
    let (code, message) = read_error(&mut raw);
    assert_eq!(code, ErrorCode::Malformed as u16);
    assert!(message.contains("malformed message"), "{message}");
    assert_raw_closed(&mut raw);

    // A length prefix above the limit: refused before any payload is read.
    let mut raw = raw_conn(&server);
    raw.send_framed(&((MAX_MESSAGE_LEN as u32) + 1).to_be_bytes())
        .unwrap();
    let (code, message) = read_error(&mut raw);
    assert_eq!(code, ErrorCode::TooLong as u16);
    assert!(message.contains("limit"), "{message}");
    assert_raw_closed(&mut raw);

    // A version from the future.
    let mut raw = raw_conn(&server);
    let mut m = Message::new(1, Plain::Logout {});
    m.version = 9;
    raw.send(&m.encode().unwrap()).unwrap();
    let (code, _) = read_error(&mut raw);
    assert_eq!(code, ErrorCode::UnsupportedVersion as u16);

    // A message only the server sends.
    let mut raw = raw_conn(&server);
    raw.send(
        &Message::new(
            4,
            Plain::Challenge {
                rand: [0; 16],
                autn: [0; 16],
            },
        )
        .encode()
        .unwrap(),
    )
    .unwrap();
    let (code, _) = read_error(&mut raw);
    assert_eq!(code, ErrorCode::UnexpectedMessage as u16);
    assert_raw_closed(&mut raw);

    // Truncated: half a frame, then the phone closes its side.
    let mut raw = raw_conn(&server);
    raw.send_framed(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    raw.get_mut().shutdown().unwrap();
    match raw.receive() {
        Ok(Some(octets)) => match Message::decode(&octets).unwrap().body {
            Plain::Error { code, message } => {
                assert_eq!(code, ErrorCode::Malformed as u16);
                assert!(message.contains("was cut"), "{message}");
            }
            other => panic!("{other:?}"),
        },
        Err(WireError::Closed | WireError::Io(_)) => {}
        other => panic!("{other:?}"),
    }

    // Not TLS at all.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);

    // After all that the server still serves.
    let (mut c, _) = logged_in(&server);
    assert_eq!(c.meters().unwrap().len(), 2);
}

#[test]
fn stop_ends_the_server_and_its_connections() {
    let mut server = TestServer::start();
    let (mut c, _) = logged_in(&server);
    c.watch().unwrap();
    let took = server.stop();
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    let e = c.next_notice(Some(Duration::from_secs(2))).unwrap_err();
    assert!(
        e.code() == Some(ErrorCode::ShuttingDown)
            || matches!(e, ClientError::Wire(WireError::Closed | WireError::Io(_))),
        "{e}"
    );
}
