//! Test support: a pilot made with `init` and `provision` in a temp dir, and a scripted gateway side
//! (the USIM side of AKA, the security mode, sealing and opening) written with the security crate's
//! calls, from the bundle's aka.toml, as the gateway engineer's code does it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod pg;
pub mod wire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use concentrator_headend::config::Config;
use concentrator_headend::engine::{Engine, Outgoing, Phase};
use concentrator_headend::provision::{self, BundlePaths, ProvisionOptions};
use concentrator_headend::spec::Spec;
use concentrator_headend::store::Store;
use concentrator_headend::{init, HeadEnd};
use concentrator_protocol::AkaResponse;
use concentrator_protocol::*;
use concentrator_security::aka::{self, AkaResponse as UsimAnswer};
use concentrator_security::envelope::{Channel, Envelope, Sender, SenderKind};
use concentrator_security::milenage::Milenage;
use concentrator_security::security_mode::negotiate;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::sqn::SqnWindow;
use concentrator_security::suci::{self, Profile};
use concentrator_security::{Direction, SecurityContext, SecurityMode};

pub use concentrator_protocol::unix_now;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "concentrator-headend-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const SPEC: &str = r#"
[[gateway]]
id = "gw-1"
ledger_file = "ledger.toml"
[[gateway.bus]]
name = "sim-1"
backend = "sim"

[[gateway]]
id = "gw-2"
ledger = { currency = "EUR" }

[[meter]]
meter = "MTR-1"
gateway = "gw-1"
dwelling = "A-1"
bus = "sim-1"
address = "000000000001"
driver = "dlt645"
opening_balance_minor = 500

[[meter]]
meter = "MTR-2"
gateway = "gw-2"
dwelling = "B-2"
bus = "sim-1"
address = "000000000002"
driver = "dlt645"

[[customer]]
id = "C-1"
name = "Ada"
msisdn = "491701234567"
meters = ["MTR-1"]
"#;

pub struct Pilot {
    pub dir: TempDir,
    pub config: Config,
    pub out: PathBuf,
}

impl Pilot {
    /// The pilot's configuration with the head-end's MQTT files (CA, certificate, key) issued by the
    /// test broker's own PKI and written under the pilot's directory.
    pub fn config_for_broker(&self, b: &concentrator_uplink::testkit::broker::Broker) -> Config {
        let mqtt = self.dir.0.join("mqtt");
        std::fs::create_dir_all(&mqtt).unwrap();
        let he_cert = b.pki.client("head-end");
        std::fs::write(mqtt.join("ca.pem"), b.pki.ca_pem()).unwrap();
        std::fs::write(mqtt.join("he.pem"), he_cert.cert_pem).unwrap();
        std::fs::write(mqtt.join("he.key"), he_cert.key_pem).unwrap();
        let mut config = self.config.clone();
        config.mqtt.ca = mqtt.join("ca.pem");
        config.mqtt.cert = mqtt.join("he.pem");
        config.mqtt.key = mqtt.join("he.key");
        config
    }

    /// `init` and `provision` (local bundle paths) into a temp dir; the store is the pilot's sled.
    pub fn new(tag: &str) -> Pilot {
        Self::with_broker(tag, None)
    }

    pub fn with_broker(tag: &str, broker: Option<String>) -> Pilot {
        Self::make(tag, broker, pg::selected())
    }

    /// A pilot on sled whatever the suite's store.
    pub fn on_sled(tag: &str) -> Pilot {
        Self::make(tag, None, false)
    }

    /// A pilot on PostgreSQL whatever the suite's store (`None` when PostgreSQL is missing and
    /// skipping is allowed).
    pub fn on_postgres(tag: &str, broker: Option<String>) -> Option<Pilot> {
        pg::PgServer::get()?;
        Some(Self::make(tag, broker, true))
    }

    fn make(tag: &str, broker: Option<String>, postgres: bool) -> Pilot {
        let dir = TempDir::new(tag);
        let conf = init::run(
            &dir.0.join("pilot"),
            &init::InitOptions {
                broker_url: broker,
                phone_listen: "127.0.0.1:0".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let mut config = Config::load(&conf).unwrap();
        if postgres {
            // The suite on PostgreSQL (CONCENTRATOR_HEADEND_STORE=postgres): a fresh database per
            // pilot, written into headend.toml so that the binary and HeadEnd::open use it too.
            if let Some(server) = pg::PgServer::get() {
                config.store.backend = concentrator_headend::config::StoreBackend::Postgres;
                config.store.url = Some(server.fresh_database());
                std::fs::write(&conf, toml::to_string(&config).unwrap()).unwrap();
                config = Config::load(&conf).unwrap();
            }
        }
        std::fs::write(dir.0.join("ledger.toml"), "currency = \"EUR\"\n").unwrap();
        std::fs::write(dir.0.join("spec.toml"), SPEC).unwrap();
        let out = dir.0.join("out");
        Pilot { dir, config, out }
    }

    pub fn spec(&self) -> Spec {
        Spec::load(&self.dir.0.join("spec.toml")).unwrap()
    }

    pub fn provision(&self, store: &Store) -> provision::ProvisionReport {
        provision::run(
            &self.config,
            store,
            &self.spec(),
            &ProvisionOptions {
                out: self.out.clone(),
                rekey: false,
                paths: BundlePaths::Local,
                validator: None,
            },
        )
        .unwrap()
    }

    /// The pilot's own store: its sled, or its PostgreSQL database when the suite runs there.
    pub fn store(&self) -> Store {
        Store::open_configured(&self.config).unwrap()
    }

    /// A head-end over an in-memory store (its PostgreSQL database when the suite runs there),
    /// provisioned.
    pub fn head_end(&self) -> HeadEnd {
        let on_pg =
            self.config.store.backend == concentrator_headend::config::StoreBackend::Postgres;
        let store = Arc::new(if on_pg { self.store() } else { Store::memory() });
        self.provision(&store);
        HeadEnd::with_store(self.config.clone(), store).unwrap()
    }

    pub fn bundle(&self, gw: &str) -> PathBuf {
        self.out.join(gw).join("concentrator")
    }

    pub fn gateway(&self, gw: &str, modes: Vec<SecurityMode>) -> GatewaySide {
        GatewaySide::load(&self.bundle(gw), gw, modes)
    }
}

struct Usim {
    imsi: String,
    milenage: Milenage,
    window: SqnWindow,
}

/// A scope's context on the gateway side.
pub struct Ctx {
    pub channel: Channel,
    pub sender: Sender,
}

/// The gateway's side of the protocol, scripted.
pub struct GatewaySide {
    pub id: GatewayId,
    profile: Profile,
    key_id: u8,
    hn_public: Vec<u8>,
    pub modes: Vec<SecurityMode>,
    usims: HashMap<String, Usim>, // "gw" or meter number
    /// Per scope: the AKA keys of the current run (CK, IK) and the subscriber.
    runs: HashMap<Scope, (String, [u8; 16], [u8; 16])>,
    /// Established contexts per scope.
    pub ctx: HashMap<Scope, Ctx>,
    /// Meter number → TID.
    pub tids: HashMap<String, Tid>,
    seq: u64,
}

fn hex16(v: &toml::Value) -> [u8; 16] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

impl GatewaySide {
    pub fn load(bundle: &Path, gw: &str, modes: Vec<SecurityMode>) -> GatewaySide {
        let t: toml::Table = std::fs::read_to_string(bundle.join("aka.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let profile = match t["profile"].as_str().unwrap() {
            "a" => Profile::A,
            _ => Profile::B,
        };
        let usim = |v: &toml::Value| Usim {
            imsi: v["imsi"].as_str().unwrap().to_string(),
            milenage: Milenage::with_opc(&hex16(&v["k"]), &hex16(&v["opc"])),
            window: SqnWindow::default(),
        };
        let mut usims = HashMap::new();
        usims.insert("gw".to_string(), usim(&t["gateway"]));
        for m in t
            .get("meter")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default()
        {
            usims.insert(m["meter"].as_str().unwrap().to_string(), usim(&m));
        }
        GatewaySide {
            id: GatewayId::new(gw).unwrap(),
            profile,
            key_id: t["home_network_key_id"].as_integer().unwrap() as u8,
            hn_public: hex::decode(t["home_network_public_key"].as_str().unwrap()).unwrap(),
            modes,
            usims,
            runs: HashMap::new(),
            ctx: HashMap::new(),
            tids: HashMap::new(),
            seq: 0,
        }
    }

    pub fn next_id(&mut self) -> MessageId {
        self.seq += 1;
        MessageId::new(*b"gwsource", self.seq)
    }

    pub fn topic(&self, scope: Scope, kind: Kind) -> String {
        Topic::for_message(&self.id, scope, kind).to_string()
    }

    /// Step 1 for `who` ("gw" or a meter number) on `scope`: (topic, payload).
    pub fn attach(&mut self, who: &str, scope: Scope) -> (String, Vec<u8>) {
        let imsi = self.usims[who].imsi.clone();
        let concealed = suci::conceal(
            self.profile,
            &self.hn_public,
            &suci::msin_to_bcd(&imsi).unwrap(),
        )
        .unwrap();
        self.runs.insert(scope, (who.to_string(), [0; 16], [0; 16]));
        let frame = Frame::new(
            self.next_id(),
            scope.tid(),
            unix_now(),
            Body::Attach(Attach {
                profile: if self.profile == Profile::A { 1 } else { 2 },
                key_id: self.key_id,
                concealed,
            }),
        );
        (self.topic(scope, Kind::Attach), frame.encode().unwrap())
    }

    /// Step 3: the USIM's answer to a challenge message (plain).
    pub fn answer(&mut self, out: &Outgoing) -> (String, Vec<u8>) {
        let t = Topic::parse(&out.topic).unwrap();
        let Topic::Data {
            scope,
            kind: Kind::AkaChallenge,
            ..
        } = t
        else {
            panic!("not a challenge: {}", out.topic)
        };
        let frame = protect::open(&t, &out.payload, None, unix_now()).unwrap();
        let Body::AkaChallenge(c) = frame.body else {
            panic!()
        };
        let who = self.runs[&scope].0.clone();
        let u = self.usims.get_mut(&who).unwrap();
        let result = match aka::respond(&u.milenage, &mut u.window, &c.rand, &c.autn) {
            Ok(UsimAnswer::Authenticated { res, ck, ik }) => {
                self.runs.insert(scope, (who, ck, ik));
                AkaResult::Res(res.to_vec())
            }
            Ok(UsimAnswer::SyncFailure { auts, .. }) => AkaResult::SyncFailure(auts.to_vec()),
            Err(_) => AkaResult::MacFailure,
        };
        self.aka_response(scope, c.rand, result)
    }

    pub fn aka_response(
        &mut self,
        scope: Scope,
        rand: [u8; 16],
        result: AkaResult,
    ) -> (String, Vec<u8>) {
        let frame = Frame::new(
            self.next_id(),
            scope.tid(),
            unix_now(),
            Body::AkaResponse(AkaResponse { rand, result }),
        );
        (
            self.topic(scope, Kind::AkaResponse),
            frame.encode().unwrap(),
        )
    }

    /// Steps 4–5: opens the security mode command with the pair of its envelope header, picks ours,
    /// answers sealed with the chosen pair. Returns the complete and the command's body.
    pub fn complete(&mut self, out: &Outgoing) -> ((String, Vec<u8>), SecurityModeCommand) {
        let t = Topic::parse(&out.topic).unwrap();
        let Topic::Data {
            scope,
            kind: Kind::SecurityModeCommand,
            ..
        } = t
        else {
            panic!("not a security mode command: {}", out.topic)
        };
        let (who, ck, ik) = self.runs[&scope].clone();
        let env = Envelope::decode(&out.payload).unwrap();
        assert!(
            self.modes.contains(&env.mode),
            "the gateway supports the command's pair"
        );
        let now = unix_now();
        let mut first = Channel::new(
            SecurityContext::new(env.mode, &ck, &ik, 0, now, 3600),
            Direction::Uplink,
            300,
        );
        let frame = protect::open(&t, &out.payload, Some(&mut first), now).unwrap();
        let Body::SecurityModeCommand(cmd) = frame.body else {
            panic!()
        };
        let theirs: Vec<SecurityMode> = cmd
            .allowed
            .iter()
            .map(|p| concentrator_headend::engine::mode_of(p.integrity, p.ciphering).unwrap())
            .collect();
        let chosen = negotiate(&self.modes, &theirs).unwrap();
        let ctx = SecurityContext::new(chosen, &ck, &ik, cmd.fresh, now, cmd.lifetime_s);
        let sender = match scope {
            Scope::Gateway => Sender {
                kind: SenderKind::Device,
                id: self.id.as_str().as_bytes().to_vec(),
            },
            Scope::Meter(t) => Sender {
                kind: SenderKind::Tid,
                id: t.0.to_vec(),
            },
        };
        // COUNT 1 onwards downlink (the command was COUNT 0), last received 0.
        let mut ch = Channel::resume(ctx, Direction::Uplink, 300, 0, Some(0));
        let frame = Frame::new(
            self.next_id(),
            scope.tid(),
            now,
            Body::SecurityModeComplete(SecurityModeComplete {
                chosen: ModePair {
                    integrity: chosen.integrity.id(),
                    ciphering: chosen.ciphering.id(),
                },
            }),
        );
        let payload = protect::payload(Some(&mut ch), &sender, now, &frame).unwrap();
        self.ctx.insert(
            scope,
            Ctx {
                channel: ch,
                sender,
            },
        );
        let _ = who;
        (
            (self.topic(scope, Kind::SecurityModeComplete), payload),
            cmd,
        )
    }

    /// Opens a sealed downlink message in the context of its scope.
    pub fn open(&mut self, out: &Outgoing) -> (Scope, Frame) {
        self.open_at(out, unix_now())
    }

    /// [`GatewaySide::open`] that reports what a gateway would drop (a replayed or out-of-order
    /// COUNT, an unknown scope) instead of failing the test.
    pub fn try_open(&mut self, out: &Outgoing) -> Result<(Scope, Frame), String> {
        let t = Topic::parse(&out.topic).map_err(|e| e.to_string())?;
        let Topic::Data { scope, .. } = t else {
            return Err(format!("{} is not a data topic", out.topic));
        };
        let ctx = self
            .ctx
            .get_mut(&scope)
            .ok_or_else(|| format!("no context for {}", out.topic))?;
        let frame = protect::open(&t, &out.payload, Some(&mut ctx.channel), unix_now())
            .map_err(|e| e.to_string())?;
        Ok((scope, frame))
    }

    /// [`GatewaySide::open`] at a given time.
    pub fn open_at(&mut self, out: &Outgoing, now: u64) -> (Scope, Frame) {
        let t = Topic::parse(&out.topic).unwrap();
        let Topic::Data { scope, .. } = t else {
            panic!()
        };
        let ctx = self
            .ctx
            .get_mut(&scope)
            .unwrap_or_else(|| panic!("no context for {}", out.topic));
        let frame = protect::open(&t, &out.payload, Some(&mut ctx.channel), now).unwrap();
        (scope, frame)
    }

    /// Step 6–7: takes the TID assignment, moves the context to the TID scope, acknowledges it.
    pub fn take_tid(&mut self, out: &Outgoing) -> (String, Vec<u8>) {
        let (handle, frame) = self.open(out);
        let Body::TidAssignment(a) = &frame.body else {
            panic!("not a TID assignment: {:?}", frame.body)
        };
        let who = self.runs[&handle].0.clone();
        let ack = self.seal(
            handle,
            Body::AckUp(Ack {
                ids: vec![frame.header.id],
            }),
            None,
        );
        let mut ctx = self.ctx.remove(&handle).unwrap();
        ctx.sender = Sender {
            kind: SenderKind::Tid,
            id: a.tid.0.to_vec(),
        };
        self.ctx.insert(Scope::Meter(a.tid), ctx);
        self.tids.insert(who, a.tid);
        ack
    }

    /// Seals an uplink message on `scope`.
    pub fn seal(&mut self, scope: Scope, body: Body, id: Option<MessageId>) -> (String, Vec<u8>) {
        let id = id.unwrap_or_else(|| self.next_id());
        let frame = Frame::new(id, scope.tid(), unix_now(), body);
        let kind = frame.kind();
        let ctx = self.ctx.get_mut(&scope).unwrap();
        let payload =
            protect::payload(Some(&mut ctx.channel), &ctx.sender, unix_now(), &frame).unwrap();
        (self.topic(scope, kind), payload)
    }

    pub fn meter_scope(&self, meter: &str) -> Scope {
        Scope::Meter(self.tids[meter])
    }
}

/// A fresh attach handle.
pub fn handle(n: u8) -> Scope {
    Scope::Meter(Tid([0xa7, 0x7a, 0xc4, n, 1, 2, 3, n]))
}

// ---- the engine driven by the scripted gateway ----

pub fn feed(e: &mut Engine, msg: &(String, Vec<u8>)) -> Vec<Outgoing> {
    e.handle(&msg.0, &msg.1, unix_now())
}

pub fn one(mut v: Vec<Outgoing>, kind: &str) -> Outgoing {
    assert_eq!(
        v.len(),
        1,
        "expected one {kind}, got {:?}",
        v.iter().map(|o| &o.topic).collect::<Vec<_>>()
    );
    let o = v.remove(0);
    assert!(o.topic.ends_with(kind), "{} is not {kind}", o.topic);
    o
}

/// The same for a meter on a fresh attach handle, through the TID assignment and its acknowledgement.
pub fn attach_meter(e: &mut Engine, g: &mut GatewaySide, meter: &str, n: u8) -> Tid {
    let h = handle(n);
    let challenge = one(feed(e, &g.attach(meter, h)), "/aka-challenge");
    let smc = one(feed(e, &g.answer(&challenge)), "/security-mode");
    let (complete, _) = g.complete(&smc);
    let tid_msg = one(feed(e, &complete), "/tid");
    assert_eq!(
        Envelope::decode(&tid_msg.payload).unwrap().count,
        1,
        "TID assignment is COUNT 1"
    );
    assert_eq!(e.run_phase(g.id.as_str(), h), Some(Phase::AwaitTidAck));
    // The complete is acknowledged on the attach handle, after the TID assignment (COUNT 2).
    let complete_ack = one(
        e.flush_acks(unix_now()),
        &format!("/down/{}/ack", h.tid().unwrap().to_hex()),
    );
    assert_eq!(Envelope::decode(&complete_ack.payload).unwrap().count, 2);
    let ack = g.take_tid(&tid_msg);
    feed(e, &ack);
    assert_eq!(
        e.run_phase(g.id.as_str(), h),
        None,
        "the run ends with the TID acknowledgement"
    );
    g.tids[meter]
}

/// A meter event with `code`, now, without detail or values.
pub fn event(code: u16, severity: Severity) -> Body {
    Body::Event(Event {
        at: unix_now(),
        code,
        severity,
        detail: None,
        values: vec![],
    })
}

pub fn birth(g: &mut GatewaySide) -> (String, Vec<u8>) {
    let f = Frame::new(
        g.next_id(),
        None,
        unix_now(),
        Body::Birth(Birth {
            software: "test".into(),
            started_at: unix_now(),
            session: 1,
            modem: ModemReport::default(),
            meters: vec![],
            outbox_len: 0,
        }),
    );
    (Topic::status(&g.id), f.encode().unwrap())
}

pub fn gateway_signer(p: &Pilot) -> DocumentSigner {
    let dir = p.bundle("gw-1");
    let key =
        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(dir.join("gateway.key")).unwrap())
            .unwrap();
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(dir.join("gateway.pem")).unwrap()).unwrap();
    DocumentSigner::new(key, &[cert]).unwrap()
}
