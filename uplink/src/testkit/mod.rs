//! Test helpers (feature `testkit`), shared by this crate's MQTT tests and benchmark and by the daemon's
//! end-to-end tests: certificates made with openssl, a real Mosquitto in a temp dir, a fake head-end, and
//! the gateway's side set up as the daemon would. Test code: it panics on any failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod broker;
pub mod headend;
pub mod netns;
pub mod pki;

/// What a test does when this machine lacks something (fail with the fix, or a counted skip with
/// `CONCENTRATOR_ALLOW_SKIP=1`), for the crates that reach it through this testkit.
pub use concentrator_test_prerequisite as prerequisite;

use std::sync::Arc;
use std::time::Duration;

use crate::mqtt::*;
use concentrator_protocol::*;
use concentrator_security::envelope::{Channel, Sender, SenderKind};
use concentrator_security::{Direction, SecurityContext, SecurityMode};

use broker::Broker;

pub use concentrator_protocol::unix_now;

/// The test keys (CK, IK) of a scope (both ends derive them alike; a real pair comes from AKA).
pub fn keys(scope: Scope) -> ([u8; 16], [u8; 16]) {
    let mut ck = [0x11u8; 16];
    let mut ik = [0x22u8; 16];
    if let Scope::Meter(t) = scope {
        ck[..8].copy_from_slice(&t.0);
        ik[8..].copy_from_slice(&t.0);
    }
    (ck, ik)
}

/// The test security context of a scope, from [`keys`], AES.
pub fn context(scope: Scope) -> SecurityContext {
    let (ck, ik) = keys(scope);
    SecurityContext::new(SecurityMode::AES, &ck, &ik, 0, unix_now() - 10, 86_400)
}

/// The provisioned keys file (`[uplink] keys`, mode AES) a gateway needs to talk to the testkit's fake
/// head-end: the gateway's own keys and, for each of `meters` (the meter names the daemon's
/// configuration uses), TID `tid(1..)` with its [`keys`].
pub fn keys_toml(meters: &[&str]) -> String {
    let (ck, ik) = keys(Scope::Gateway);
    let mut k = format!(
        "mode = \"aes\"\n[gateway]\nck = \"{}\"\nik = \"{}\"\n",
        hex::encode(ck),
        hex::encode(ik)
    );
    for (i, m) in meters.iter().enumerate() {
        let t = tid(u8::try_from(i + 1).unwrap_or(u8::MAX));
        let (ck, ik) = keys(Scope::Meter(t));
        k.push_str(&format!(
            "[[meter]]\nmeter = \"{m}\"\ntid = \"{}\"\nck = \"{}\"\nik = \"{}\"\n",
            hex::encode(t.0),
            hex::encode(ck),
            hex::encode(ik)
        ));
    }
    k
}

pub fn tid(n: u8) -> Tid {
    Tid([0x3c, 0x91, 0, 0, 0, 0, 0, n])
}

/// The gateway's channels for its own scope and meters 1..=meters.
pub fn gateway_channels(gw: &GatewayId, meters: u8) -> ChannelTable {
    let mut t = ChannelTable::new();
    t.insert(
        Scope::Gateway,
        Channel::new(context(Scope::Gateway), Direction::Uplink, 300),
        Sender {
            kind: SenderKind::Device,
            id: gw.as_str().as_bytes().to_vec(),
        },
    );
    for n in 1..=meters {
        let s = Scope::Meter(tid(n));
        t.insert(
            s,
            Channel::new(context(s), Direction::Uplink, 300),
            Sender {
                kind: SenderKind::Tid,
                id: tid(n).0.to_vec(),
            },
        );
    }
    t
}

pub fn config(broker: &Broker, gw: &str) -> UplinkConfig {
    let issued = broker.pki.client(gw);
    let tls = TlsIdentity {
        ca_pem: broker.pki.ca_pem(),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    };
    let mut c = UplinkConfig::new(
        GatewayId::new(gw).unwrap(),
        broker.host.clone(),
        broker.port,
        tls,
    );
    c.backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(500),
        Duration::from_millis(50),
    );
    c.keep_alive = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(5);
    c.resend_after = Duration::from_secs(5);
    c.started_at = unix_now();
    c
}

/// The gateway's store side: a sled database with the uplink's outbox and executed set.
#[derive(Debug)]
pub struct Store {
    pub db: sled::Db,
    pub outbox: Arc<SledOutbox>,
    pub executed: Arc<Executed>,
}

impl Store {
    pub fn open(dir: &std::path::Path, limits: Limits) -> Store {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(500))
            .open()
            .unwrap();
        let outbox = Arc::new(SledOutbox::open(&db, limits).unwrap());
        let executed = Arc::new(Executed::open(&db, DEFAULT_CAPACITY).unwrap());
        Store {
            db,
            outbox,
            executed,
        }
    }

    pub fn parts(&self, gw: &GatewayId, downlink: Box<dyn Downlink>) -> UplinkParts {
        UplinkParts {
            outbox: self.outbox.clone(),
            others: vec![],
            executed: self.executed.clone(),
            channels: Box::new(gateway_channels(gw, 4)),
            downlink,
            inventory: Box::new(|| (ModemReport::default(), vec![])),
        }
    }
}

pub fn reading(n: u64) -> Body {
    Body::Readings(Readings {
        readings: vec![Reading {
            at: unix_now(),
            quantity: Quantity::EnergyImportWh,
            value: n as i64,
            exponent: 0,
        }],
    })
}

/// The value of the single reading in a readings frame.
pub fn value(f: &Frame) -> i64 {
    match &f.body {
        Body::Readings(r) => r.readings[0].value,
        other => panic!("not readings: {other:?}"),
    }
}

pub fn ignore_commands() -> Box<dyn Downlink> {
    Box::new(|_: Scope, _: &Frame| Outcome::done())
}
