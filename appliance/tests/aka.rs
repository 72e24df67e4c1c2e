//! `concentratord` with `[uplink] aka`: the gateway runs AKA with a test-only network side (below, built
//! on `concentrator_security::{aka, suci, milenage, sqn}` directly) through a real Mosquitto (TLS, ACL).
//!
//! - the gateway and two meters attach, authenticate and get TIDs; readings queued while the network side
//!   was not answering arrive afterwards under the TIDs, opened with the AKA keys; a meter whose SQN
//!   the network side has far ahead answers AUTS and its run completes after the resynchronisation;
//! - a meter whose K differs at the network side: MAC failure, event 40, no context, nothing of it sealed;
//! - an account request is answered with a summary whose last token serial is the token applied before;
//! - a restart resumes the contexts: no new attach, no COUNT repeated (the network side refuses replays);
//! - keys with a 20 s lifetime are renewed before they expire: new TIDs, and every reading polled
//!   arrives or is still queued, none lost.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{drop_token, temp_dir, unix_now, write_setup, Daemon, TestMeter};
use concentrator_appliance::status::Status;
use concentrator_protocol::*;
use concentrator_security::aka;
use concentrator_security::envelope::{Channel, Sender, SenderKind};
use concentrator_security::sqn::SqnGenerator;
use concentrator_security::suci::{self, Profile};
use concentrator_security::{Direction, Milenage, SecurityContext, SecurityMode};
use concentrator_uplink::mqtt::{Limits, Outbox, SledOutbox};
use concentrator_uplink::testkit::broker::{skip_without_mosquitto, Broker};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;
use rumqttc::{Client, Event as MqttEvent, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

const GW: &str = "gw-test";
const OPC: [u8; 16] = [0xcd; 16];

fn k_of(imsi: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    for (i, b) in imsi.bytes().rev().take(16).enumerate() {
        k[i] = b;
    }
    k
}

// ---------------------------------------------------------------------------------------------------
// The network side.

struct Sub {
    milenage: Milenage,
    sqns: SqnGenerator,
    vector: Option<(Scope, aka::AuthVector)>,
    /// Answer the first RES by sending the same challenge again, as a network side whose SQN state is
    /// behind (a stale vector): the gateway must refuse it as a replay and resynchronise.
    stale_once: bool,
    /// Context index of the current context.
    current: Option<usize>,
}

#[derive(Default)]
struct NetLog {
    /// Sealed uplink messages opened: (wire scope, IMSI, frame).
    up: Vec<(Scope, String, Frame)>,
    attaches: HashMap<String, usize>,
    resyncs: HashMap<String, usize>,
    mac_failures: HashMap<String, usize>,
    /// TIDs assigned per IMSI, in order.
    tids: HashMap<String, Vec<Tid>>,
    /// When each subscriber's first context was established.
    established: HashMap<String, u64>,
    refused: Vec<String>,
}

struct Net {
    hn_private: Vec<u8>,
    lifetime: u64,
    subs: HashMap<String, Sub>,
    /// Downlink channels (contexts), and what they belong to.
    ctxs: Vec<(String, Channel)>,
    /// Wire scope → context (an old TID keeps resolving to its old context).
    scopes: HashMap<Scope, usize>,
    /// Attach handle → IMSI of the run on it.
    handles: HashMap<Scope, String>,
    log: NetLog,
}

fn head_end() -> Sender {
    Sender {
        kind: SenderKind::Device,
        id: b"head-end".to_vec(),
    }
}

struct NetSide {
    client: Client,
    net: Arc<Mutex<Net>>,
    answering: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl NetSide {
    /// `subs`: IMSI → (K the network side holds, whether it replays a stale challenge once).
    fn start(
        broker: &Broker,
        hn_private: Vec<u8>,
        lifetime: u64,
        subs: Vec<(String, [u8; 16], bool)>,
    ) -> NetSide {
        let net = Arc::new(Mutex::new(Net {
            hn_private,
            lifetime,
            subs: subs
                .into_iter()
                .map(|(imsi, k, stale_once)| {
                    let sqns = SqnGenerator::new();
                    (
                        imsi,
                        Sub {
                            milenage: Milenage::with_opc(&k, &OPC),
                            sqns,
                            vector: None,
                            stale_once,
                            current: None,
                        },
                    )
                })
                .collect(),
            ctxs: Vec::new(),
            scopes: HashMap::new(),
            handles: HashMap::new(),
            log: NetLog::default(),
        }));
        let issued = broker.pki.client("head-end");
        let tls = concentrator_uplink::mqtt::TlsIdentity {
            ca_pem: broker.pki.ca_pem(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        let mut o = MqttOptions::new("aka-net", "localhost", broker.port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_transport(Transport::tls_with_config(
                TlsConfiguration::NativeConnector(tls.connector().unwrap()),
            ));
        let (client, mut conn) = Client::new(o, 1024);
        let (tx, rx) = mpsc::channel::<(String, Vec<u8>)>();
        let sub_client = client.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub_client.try_subscribe("c/v1/+/up/#", QoS::AtLeastOnce);
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let answering = Arc::new(AtomicBool::new(true));
        let (n, a, c, st) = (net.clone(), answering.clone(), client.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(m) => held.push(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if a.load(Ordering::Relaxed) {
                    for (topic, payload) in held.drain(..) {
                        let out = n.lock().unwrap().receive(&topic, &payload);
                        for (t, p) in out {
                            let _ = c.publish(t, QoS::AtLeastOnce, false, p);
                        }
                    }
                }
            }
        });
        NetSide {
            client,
            net,
            answering,
            stop,
        }
    }

    fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&NetLog) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            {
                let net = self.net.lock().unwrap();
                if pred(&net.log) {
                    return;
                }
                assert!(
                    Instant::now() < until,
                    "timed out waiting for {what}; refused: {:?}; tids {:?}; attaches {:?}",
                    net.log.refused,
                    net.log.tids,
                    net.log.attaches
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Seals `body` for the subscriber's current context on its current TID and publishes it.
    fn send(&self, imsi: &str, body: Body) -> MessageId {
        let (topic, payload, id) = {
            let mut net = self.net.lock().unwrap();
            let tid = *net.log.tids[imsi].last().unwrap();
            let ctx = net.subs[imsi].current.unwrap();
            let id = MessageId::new(*b"aka-net0", rand::random());
            let frame = Frame::new(id, Some(tid), unix_now(), body);
            let payload =
                protect::payload(Some(&mut net.ctxs[ctx].1), &head_end(), unix_now(), &frame)
                    .unwrap();
            let topic = Topic::for_message(
                &GatewayId::new(GW).unwrap(),
                Scope::Meter(tid),
                frame.kind(),
            );
            (topic.to_string(), payload, id)
        };
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
        id
    }
}

impl Drop for NetSide {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect();
    }
}

impl Net {
    fn down(&self, gw: &GatewayId, scope: Scope, kind: Kind) -> String {
        Topic::for_message(gw, scope, kind).to_string()
    }

    fn receive(&mut self, topic: &str, payload: &[u8]) -> Vec<(String, Vec<u8>)> {
        let Ok(t @ Topic::Data { .. }) = Topic::parse(topic) else {
            return vec![];
        };
        let Topic::Data {
            gateway,
            scope,
            kind,
            ..
        } = &t
        else {
            return vec![];
        };
        let (gw, scope, kind) = (gateway.clone(), *scope, *kind);
        let now = unix_now();
        let mut out = Vec::new();
        if kind.protection() == Protection::Plain {
            let Ok(frame) = protect::open(&t, payload, None, now) else {
                self.log
                    .refused
                    .push(format!("{topic}: plain frame does not decode"));
                return out;
            };
            match frame.body {
                Body::Attach(a) => {
                    let bcd = suci::reveal(Profile::B, &self.hn_private, &a.concealed).unwrap();
                    let imsi = suci::bcd_to_msin(&bcd).unwrap();
                    *self.log.attaches.entry(imsi.clone()).or_default() += 1;
                    self.handles.insert(scope, imsi.clone());
                    out.extend(self.challenge(&gw, scope, &imsi));
                }
                Body::AkaResponse(r) => {
                    let Some(imsi) = self.handles.get(&scope).cloned() else {
                        return out;
                    };
                    let sub = self.subs.get_mut(&imsi).unwrap();
                    let Some((_, v)) = sub.vector.clone() else {
                        return out;
                    };
                    match r.result {
                        AkaResult::Res(res) => {
                            if aka::check_res(&v, &res).is_err() {
                                self.log.refused.push(format!("{imsi}: RES mismatch"));
                                return out;
                            }
                            if sub.stale_once {
                                sub.stale_once = false;
                                let frame = Frame::new(
                                    MessageId::new(*b"aka-net0", rand::random()),
                                    scope.tid(),
                                    now,
                                    Body::AkaChallenge(AkaChallenge {
                                        rand: v.rand,
                                        autn: v.autn,
                                    }),
                                );
                                out.push((
                                    self.down(&gw, scope, Kind::AkaChallenge),
                                    frame.encode().unwrap(),
                                ));
                                return out;
                            }
                            // Security mode command: sealed with the first pair, FRESH 0.
                            let fresh: u32 = rand::random();
                            let cmd_ctx =
                                SecurityContext::new(SecurityMode::AES, &v.ck, &v.ik, 0, now, 600);
                            let mut cmd_ch = Channel::new(cmd_ctx, Direction::Downlink, 300);
                            let frame = Frame::new(
                                MessageId::new(*b"aka-net0", rand::random()),
                                scope.tid(),
                                now,
                                Body::SecurityModeCommand(SecurityModeCommand {
                                    allowed: vec![
                                        ModePair {
                                            integrity: 2,
                                            ciphering: 2,
                                        },
                                        ModePair {
                                            integrity: 1,
                                            ciphering: 1,
                                        },
                                    ],
                                    fresh,
                                    lifetime_s: self.lifetime,
                                }),
                            );
                            let p = protect::payload(Some(&mut cmd_ch), &head_end(), now, &frame)
                                .unwrap();
                            out.push((self.down(&gw, scope, Kind::SecurityModeCommand), p));
                            let ctx = SecurityContext::new(
                                SecurityMode::AES,
                                &v.ck,
                                &v.ik,
                                fresh,
                                now,
                                self.lifetime,
                            );
                            self.ctxs.push((
                                imsi.clone(),
                                Channel::resume(ctx, Direction::Downlink, 300, 1, None),
                            ));
                            self.scopes.insert(scope, self.ctxs.len() - 1);
                        }
                        AkaResult::SyncFailure(auts) => {
                            let auts: [u8; 14] = auts.try_into().unwrap();
                            aka::resynchronise(&sub.milenage, &mut sub.sqns, &v.rand, &auts)
                                .unwrap();
                            *self.log.resyncs.entry(imsi.clone()).or_default() += 1;
                            out.extend(self.challenge(&gw, scope, &imsi));
                        }
                        AkaResult::MacFailure => {
                            *self.log.mac_failures.entry(imsi.clone()).or_default() += 1;
                        }
                    }
                }
                _ => {}
            }
            return out;
        }
        let Some(&ci) = self.scopes.get(&scope) else {
            self.log.refused.push(format!("{topic}: no context"));
            return out;
        };
        let frame = match protect::open(&t, payload, Some(&mut self.ctxs[ci].1), now) {
            Ok(f) => f,
            Err(e) => {
                self.log.refused.push(format!("{topic}: {e}"));
                return out;
            }
        };
        let imsi = self.ctxs[ci].0.clone();
        if let Body::SecurityModeComplete(_) = &frame.body {
            self.subs.get_mut(&imsi).unwrap().current = Some(ci);
            self.log.established.entry(imsi.clone()).or_insert(now);
            if scope.tid().is_some() {
                let tid = Tid(rand::random());
                self.scopes.insert(Scope::Meter(tid), ci);
                self.log.tids.entry(imsi.clone()).or_default().push(tid);
                let f = Frame::new(
                    MessageId::new(*b"aka-net0", rand::random()),
                    scope.tid(),
                    now,
                    Body::TidAssignment(TidAssignment {
                        tid,
                        expires_at: now + self.lifetime,
                    }),
                );
                let p = protect::payload(Some(&mut self.ctxs[ci].1), &head_end(), now, &f).unwrap();
                out.push((self.down(&gw, scope, Kind::TidAssignment), p));
            }
        }
        if kind != Kind::AckUp {
            let f = Frame::new(
                MessageId::new(*b"aka-net0", rand::random()),
                scope.tid(),
                now,
                Body::AckDown(Ack {
                    ids: vec![frame.header.id],
                }),
            );
            let p = protect::payload(Some(&mut self.ctxs[ci].1), &head_end(), now, &f).unwrap();
            out.push((self.down(&gw, scope, Kind::AckDown), p));
        }
        self.log.up.push((scope, imsi, frame));
        out
    }

    fn challenge(&mut self, gw: &GatewayId, scope: Scope, imsi: &str) -> Vec<(String, Vec<u8>)> {
        let sub = self.subs.get_mut(imsi).unwrap();
        let v =
            aka::generate_vector(&sub.milenage, &mut sub.sqns, rand::random(), [0x80, 0]).unwrap();
        sub.vector = Some((scope, v.clone()));
        let frame = Frame::new(
            MessageId::new(*b"aka-net0", rand::random()),
            scope.tid(),
            unix_now(),
            Body::AkaChallenge(AkaChallenge {
                rand: v.rand,
                autn: v.autn,
            }),
        );
        vec![(
            self.down(gw, scope, Kind::AkaChallenge),
            frame.encode().unwrap(),
        )]
    }
}

// ---------------------------------------------------------------------------------------------------
// The daemon.

impl Daemon {
    fn polls(&self, address: &str) -> usize {
        let needle = format!("meter {address} (");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(&needle) && l.contains("): "))
            .count()
    }
}

fn status(dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(dir.join("store/status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// A P-256 home-network key pair: (private scalar, compressed public key).
fn hn_keys() -> (Vec<u8>, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group).unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let public = key
        .public_key()
        .to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)
        .unwrap();
    (key.private_key().to_vec_padded(32).unwrap(), public)
}

const GW_IMSI: &str = "001010000000001";

fn imsi(n: usize) -> String {
    format!("0010100000001{n:02}")
}

/// Meters M-1.. with a ledger, the [uplink] table with an `aka` file for the gateway and the meters.
fn setup(
    dir: &Path,
    broker: &Broker,
    n: usize,
    hn_public: &[u8],
) -> (PathBuf, concentrator_ledger::testkit::TestPki) {
    let meters: Vec<TestMeter> = (1..=n)
        .map(|i| TestMeter {
            bus: "a",
            address: format!("00000000040{i}"),
            meter_id: format!("M-{i}"),
            load_w: 360_000,
            start_kwh: 10.0,
            opening_minor: 100_000,
        })
        .collect();
    let (path, pki) = write_setup(dir, &meters, 1, 3600, None);
    let issued = broker.pki.client(GW);
    let d = dir.join("uplink");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ca.pem"), broker.pki.ca_pem()).unwrap();
    std::fs::write(d.join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(d.join("key.pem"), &issued.key_pem).unwrap();
    let mut aka = format!(
        "home_network_key_id = 1\nprofile = \"b\"\nhome_network_public_key = \"{}\"\n[gateway]\nimsi = \"{GW_IMSI}\"\nk = \"{}\"\nopc = \"{}\"\n",
        hex::encode(hn_public),
        hex::encode(k_of(GW_IMSI)),
        hex::encode(OPC)
    );
    for i in 1..=n {
        aka.push_str(&format!(
            "[[meter]]\nmeter = \"M-{i}\"\nimsi = \"{}\"\nk = \"{}\"\nopc = \"{}\"\n",
            imsi(i),
            hex::encode(k_of(&imsi(i))),
            hex::encode(OPC)
        ));
    }
    std::fs::write(d.join("aka.toml"), aka).unwrap();
    let p = d.display();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[uplink]\nbroker = \"mqtts://localhost:{}\"\nca = \"{p}/ca.pem\"\ncert = \"{p}/cert.pem\"\nkey = \"{p}/key.pem\"\naka = \"{p}/aka.toml\"\n",
        broker.port
    ));
    std::fs::write(&path, text).unwrap();
    (path, pki)
}

fn readings_of(log: &NetLog, imsi: &str) -> Vec<(Scope, Frame)> {
    log.up
        .iter()
        .filter(|(_, i, f)| i == imsi && f.kind() == Kind::Readings)
        .map(|(s, _, f)| (*s, f.clone()))
        .collect()
}

#[test]
fn meters_attach_resync_refuse_a_forged_challenge_answer_accounts_and_resume_after_a_restart() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("aka-basic");
    let broker = Broker::start();
    let (hn_private, hn_public) = hn_keys();
    let (config, pki) = setup(&dir, &broker, 3, &hn_public);
    // M-1 plain; M-2's network side replays a stale challenge (resync); M-3's K differs there.
    let net = NetSide::start(
        &broker,
        hn_private,
        3600,
        vec![
            (GW_IMSI.into(), k_of(GW_IMSI), false),
            (imsi(1), k_of(&imsi(1)), false),
            (imsi(2), k_of(&imsi(2)), true),
            (imsi(3), [0x55; 16], false),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    // A token applied locally before; the account request must report its serial.
    let now = unix_now();
    let token = pki.token("M-1", 7, 500, now - 10, now + 3600).unwrap();
    drop_token(&dir.join("inbox"), "t7", &token);
    // The network side holds everything for the first seconds: readings queue before AKA completes.
    net.answering.store(false, Ordering::Relaxed);
    let mut daemon = Daemon::start(&config);
    std::thread::sleep(Duration::from_secs(4));
    net.answering.store(true, Ordering::Relaxed);

    net.wait_for(
        30,
        "the gateway and two meters established with TIDs",
        |l| {
            l.established.contains_key(GW_IMSI)
                && l.tids.get(&imsi(1)).is_some_and(|t| !t.is_empty())
                && l.tids.get(&imsi(2)).is_some_and(|t| !t.is_empty())
        },
    );
    net.wait_for(20, "readings of M-1 and M-2 under their TIDs", |l| {
        readings_of(l, &imsi(1)).len() >= 3 && readings_of(l, &imsi(2)).len() >= 3
    });
    net.wait_for(10, "the MAC failure of M-3", |l| {
        l.mac_failures.contains_key(&imsi(3))
    });
    {
        let net = net.net.lock().unwrap();
        let l = &net.log;
        assert!(
            l.resyncs.get(&imsi(2)).copied().unwrap_or(0) >= 1,
            "no resync for M-2"
        );
        assert_eq!(l.resyncs.get(&imsi(1)), None);
        for i in [1, 2] {
            let tid = l.tids[&imsi(i)][0];
            let r = readings_of(l, &imsi(i));
            assert!(r
                .iter()
                .all(|(s, f)| *s == Scope::Meter(tid) && f.header.tid == Some(tid)));
            // Readings made before the context existed arrived (sealed at send time).
            let first = r.iter().map(|(_, f)| f.header.created_at).min().unwrap();
            assert!(
                first < l.established[&imsi(i)],
                "M-{i}: no reading queued before AKA completed"
            );
        }
        assert!(!l.established.contains_key(&imsi(3)), "M-3 got a context");
        assert!(
            l.up.iter().all(|(_, i, _)| *i != imsi(3)),
            "something of M-3 was sealed"
        );
        // Event 40 in the gateway scope names the MAC failure.
        assert!(
            l.up.iter().any(|(s, _, f)| *s == Scope::Gateway
                && matches!(&f.body, Body::Event(e) if e.code == event_code::VERIFICATION_FAILED
                    && e.detail.as_deref().is_some_and(|d| d.contains("MAC failure") && d.contains("M-3")))),
            "no event 40 for M-3"
        );
        assert!(l.refused.is_empty(), "{:?}", l.refused);
    }
    // Status: established scopes with TIDs, and the problem of M-3.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(&dir).and_then(|s| s.uplink);
        if let Some(u) = &s {
            let m1 = u.aka.iter().find(|a| a.scope == "M-1");
            let m3 = u.aka.iter().find(|a| a.scope == "M-3");
            if m1.is_some_and(|a| a.state == "established" && a.tid.is_some())
                && m3.is_some_and(|a| {
                    a.problem
                        .as_deref()
                        .is_some_and(|p| p.contains("MAC failure"))
                })
            {
                break;
            }
        }
        assert!(Instant::now() < until, "status: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let cli = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["status", "--file"])
        .arg(dir.join("store/status.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(text.contains("AKA M-1: established"), "{text}");
    assert!(text.contains("AKA of M-3: MAC failure"), "{text}");

    // Account request → summary with the last applied serial.
    let request = net.send(&imsi(1), Body::AccountRequest(AccountRequest {}));
    net.wait_for(20, "the account summary", |l| {
        l.up.iter().any(|(_, i, f)| *i == imsi(1) && matches!(&f.body, Body::AccountSummary(a) if a.last_token_serial == Some(7) && a.currency == "EUR"))
    });
    let _ = request;

    // Restart: contexts resume, no new attach, COUNTs go on (a repeated COUNT would be refused).
    daemon.stop();
    let attaches = net.net.lock().unwrap().log.attaches.clone();
    let before = net.net.lock().unwrap().log.up.len();
    let mut daemon = Daemon::start(&config);
    net.wait_for(20, "readings after the restart", |l| {
        l.up[before..]
            .iter()
            .filter(|(_, _, f)| f.kind() == Kind::Readings)
            .count()
            >= 4
    });
    {
        let net = net.net.lock().unwrap();
        assert!(net.log.refused.is_empty(), "{:?}", net.log.refused);
        for i in [GW_IMSI.to_string(), imsi(1), imsi(2)] {
            assert_eq!(
                net.log.attaches.get(&i),
                attaches.get(&i),
                "{i} attached again after the restart"
            );
        }
    }
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn short_lived_keys_are_renewed_with_new_tids_and_no_reading_is_lost() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("aka-expiry");
    let broker = Broker::start();
    let (hn_private, hn_public) = hn_keys();
    let (config, _pki) = setup(&dir, &broker, 1, &hn_public);
    let net = NetSide::start(
        &broker,
        hn_private,
        20,
        vec![
            (GW_IMSI.into(), k_of(GW_IMSI), false),
            (imsi(1), k_of(&imsi(1)), false),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut daemon = Daemon::start(&config);
    net.wait_for(60, "a third TID for M-1 (two renewals)", |l| {
        l.tids.get(&imsi(1)).is_some_and(|t| t.len() >= 3)
    });
    std::thread::sleep(Duration::from_secs(3));
    daemon.stop();
    let net_log = net.net.lock().unwrap();
    assert!(net_log.log.refused.is_empty(), "{:?}", net_log.log.refused);
    assert!(
        net_log.log.attaches[GW_IMSI] >= 2,
        "the gateway's keys were not renewed"
    );
    let r = readings_of(&net_log.log, &imsi(1));
    let scopes: HashSet<Scope> = r.iter().map(|(s, _)| *s).collect();
    assert!(scopes.len() >= 2, "readings under one TID only: {scopes:?}");
    // Arrived + still queued = polls logged: nothing lost across the switches.
    let db = concentrator_ledger::open_sled(&sled::Config::new().path(dir.join("store/ledger")))
        .unwrap();
    let queued = SledOutbox::open(&db, Limits::default())
        .unwrap()
        .list(100_000)
        .unwrap();
    let mut ids: HashSet<MessageId> = r.iter().map(|(_, f)| f.header.id).collect();
    for p in queued {
        if p.frame.kind() == Kind::Readings {
            ids.insert(p.frame.header.id);
        }
    }
    assert_eq!(
        ids.len(),
        daemon.polls("000000000401"),
        "readings arrived + queued vs polls logged"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_locates_mistakes_in_the_aka_file_and_refuses_keys_with_aka() {
    let dir = temp_dir("aka-validate");
    let (_, public) = hn_keys();
    let aka = format!(
        "home_network_key_id = 1\nprofile = \"b\"\nhome_network_public_key = \"{}\"\n[gateway]\nimsi = \"{GW_IMSI}\"\nk = \"zz\"\nopc = \"{}\"\n[[meter]]\nmeter = \"M-9\"\nimsi = \"{GW_IMSI}\"\nk = \"{}\"\nopc = \"{}\"\n",
        hex::encode(&public),
        hex::encode(OPC),
        hex::encode(OPC),
        hex::encode(OPC)
    );
    std::fs::write(dir.join("aka.toml"), aka).unwrap();
    let d = dir.display();
    let base = format!(
        "[gateway]\nid = \"{GW}\"\nstore = \"{d}/store\"\n\n[[bus]]\nname = \"a\"\nbackend = \"sim\"\nbaud = 9600\nformat = \"8E1\"\n\n[[meter]]\nbus = \"a\"\naddress = \"000000000401\"\nmeter_id = \"M-1\"\ndriver = \"dlt645\"\ndwelling = \"flat-1\"\n\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\naka = \"{d}/aka.toml\"\n"
    );
    let run = |text: &str| {
        let path = dir.join("concentrator.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_concentratord"))
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "validate accepted:\n{text}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&base);
    let file = format!("{d}/aka.toml");
    assert!(
        err.contains(&format!("{file}:6:5: `k` is not hex")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:9:9: meter `M-9` is not configured")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:10:8: imsi {GW_IMSI} is also given to [gateway]"
        )),
        "{err}"
    );
    assert!(err.contains("help:"), "{err}");
    let err = run(&format!("{base}keys = \"{d}/keys.toml\"\n"));
    assert!(err.contains("both `keys` and `aka` are given"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
