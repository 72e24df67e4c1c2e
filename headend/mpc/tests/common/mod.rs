//! Test fixtures: an in-memory payment server (`MemBackend`), a throwaway PKI (utility CA, the server's
//! TLS certificate for localhost, a head-end token signer) and a running `serve`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use concentrator_mpc::backend::*;
use concentrator_mpc::client::Client;
use concentrator_mpc::feed::{feed, NoticeFeed, NoticeSender, DEFAULT_CAPACITY};
use concentrator_mpc::server::{serve_with, ServerConfig};
use concentrator_mpc::tls;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::sqn::SqnGenerator;
use concentrator_security::token::{CreditToken, TokenSigner};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A CA the server's certificate does not chain to.
    pub other_ca: PathBuf,
    pub signer: TokenSigner,
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn cert(
    cn: &str,
    ou: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    san: bool,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    name.append_entry_by_text("OU", ou).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    // Backdated as provisioning does (docs/security.md, "Clocks").
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let not_before = concentrator_security::clock::not_before(now).asn1();
    b.set_not_before(&Asn1Time::from_str(&not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
        }
        Some((ca, _)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
        }
    }
    if san {
        let ext = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None))
            .unwrap();
        b.append_extension(ext).unwrap();
    }
    let signing_key = issuer.map_or(key, |(_, k)| k);
    b.sign(signing_key, MessageDigest::sha256()).unwrap();
    b.build()
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mpc-tests-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = key();
        let ca = cert("Utility CA", "ca", &ca_key, None, false);
        let server_key = key();
        let server = cert(
            "localhost",
            "payment-server",
            &server_key,
            Some((&ca, &ca_key)),
            true,
        );
        let other_key = key();
        let other = cert("Other CA", "ca", &other_key, None, false);
        let he_key = key();
        let he = cert("head-end", "head-end", &he_key, Some((&ca, &ca_key)), false);
        let signer = TokenSigner::new(DocumentSigner::new(he_key, &[he]).unwrap());
        let write = |name: &str, pem: Vec<u8>| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca.to_pem().unwrap()),
            server_cert: write("server.pem", server.to_pem().unwrap()),
            server_key: write("server.key", server_key.private_key_to_pem_pkcs8().unwrap()),
            other_ca: write("other-ca.pem", other.to_pem().unwrap()),
            signer,
            dir,
        }
    })
}

pub const CODE_1: &str = "AUTH-1111";
pub const CODE_2: &str = "AUTH-2222";
pub const IMSI_1: &str = "001010000000001";
pub const PASSWORD: &str = "correct horse battery";

#[derive(Debug, Clone)]
struct Bought {
    customer: String,
    request_id: [u8; 16],
    purchase: Purchase,
}

#[derive(Debug, Default)]
struct State {
    customers: Vec<Customer>,
    codes: HashMap<String, String>,
    meters: Vec<(String, MeterView)>,
    bought: Vec<Bought>,
    history: Vec<(String, HistoryEntry)>,
    serials: HashMap<String, u64>,
    subscribers: Vec<(String, NoticeSender)>,
    saves: usize,
}

/// The payment server in memory, with what tests need to drive it.
#[derive(Debug, Default)]
pub struct MemBackend {
    state: Mutex<State>,
}

fn customer(id: &str, imsi: &str, meters: &[&str]) -> Customer {
    Customer {
        id: id.into(),
        user: None,
        msisdn: "+10000000000".into(),
        imsi: imsi.into(),
        k: None,
        opc: None,
        sqn: SqnGenerator::new(),
        password_hash: None,
        meters: meters.iter().map(|m| m.to_string()).collect(),
    }
}

fn view(meter: &str, balance: i64) -> MeterView {
    MeterView {
        meter: meter.into(),
        dwelling: format!("Flat of {meter}"),
        currency: "EUR".into(),
        balance_minor: Some(balance),
        balance_at: Some(1_767_225_600),
        supply_on: Some(true),
        last_reading_wh: Some(1_234_567),
        last_reading_at: Some(1_767_225_600),
        pending_tokens: 0,
    }
}

impl MemBackend {
    /// Customer C-0001 (code AUTH-1111, meters MTR-1 and MTR-2) and C-0002 (code AUTH-2222, MTR-3).
    pub fn new() -> Arc<MemBackend> {
        let b = MemBackend::default();
        {
            let mut s = b.state.lock().unwrap();
            s.customers
                .push(customer("C-0001", IMSI_1, &["MTR-1", "MTR-2"]));
            s.customers
                .push(customer("C-0002", "001010000000002", &["MTR-3"]));
            s.codes.insert(CODE_1.into(), "C-0001".into());
            s.codes.insert(CODE_2.into(), "C-0002".into());
            s.meters.push(("C-0001".into(), view("MTR-1", 500)));
            s.meters.push(("C-0001".into(), view("MTR-2", 0)));
            s.meters.push(("C-0002".into(), view("MTR-3", 100)));
        }
        Arc::new(b)
    }

    pub fn customer(&self, id: &str) -> Customer {
        let s = self.state.lock().unwrap();
        s.customers.iter().find(|c| c.id == id).unwrap().clone()
    }

    pub fn replace_customer(&self, c: Customer) {
        let mut s = self.state.lock().unwrap();
        let slot = s.customers.iter_mut().find(|x| x.id == c.id).unwrap();
        *slot = c;
    }

    pub fn purchase_count(&self) -> usize {
        self.state.lock().unwrap().bought.len()
    }

    pub fn saves(&self) -> usize {
        self.state.lock().unwrap().saves
    }

    pub fn subscribers(&self) -> usize {
        self.state.lock().unwrap().subscribers.len()
    }

    /// Sends a notice to the owner's subscribers, as the ingestion of a gateway message would.
    pub fn notify(&self, meter: &str, n: Notice) {
        let mut s = self.state.lock().unwrap();
        let owner = s
            .meters
            .iter()
            .find(|(_, m)| m.meter == meter)
            .unwrap()
            .0
            .clone();
        s.subscribers
            .retain(|(c, tx)| *c != owner || tx.send(n.clone()).is_ok());
    }

    /// The gateway's receipt for a token: the purchase applied, the balance moved, the notice pushed.
    pub fn apply(&self, meter: &str, serial: u64) -> i64 {
        let (owner, amount, balance) = {
            let mut s = self.state.lock().unwrap();
            let b = s
                .bought
                .iter_mut()
                .find(|b| b.purchase.meter == meter && b.purchase.serial == serial)
                .unwrap();
            b.purchase.delivery = Delivery::Applied;
            let (owner, amount) = (b.customer.clone(), b.purchase.amount_minor);
            let m = s.meters.iter_mut().find(|(_, m)| m.meter == meter).unwrap();
            let balance = m.1.balance_minor.unwrap_or(0) + amount as i64;
            m.1.balance_minor = Some(balance);
            m.1.pending_tokens -= 1;
            s.history.push((
                owner.clone(),
                HistoryEntry {
                    at: 1_767_230_000,
                    meter: meter.into(),
                    what: HistoryKind::Applied,
                    serial: Some(serial),
                    amount_minor: Some(amount),
                    balance_after_minor: Some(balance),
                    detail: None,
                },
            ));
            (owner, amount, balance)
        };
        let _ = owner;
        self.notify(
            meter,
            Notice::Applied {
                meter: meter.into(),
                serial,
                amount_minor: amount,
                balance_after_minor: balance,
                at: 1_767_230_000,
            },
        );
        balance
    }
}

impl Backend for MemBackend {
    fn customer_by_auth_code(&self, code: &str) -> Result<Option<Customer>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.codes
            .get(code)
            .and_then(|id| s.customers.iter().find(|c| c.id == *id))
            .cloned())
    }

    fn customer_by_user(&self, user: &str) -> Result<Option<Customer>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.customers
            .iter()
            .find(|c| c.user.as_deref() == Some(user))
            .cloned())
    }

    fn customer_by_imsi(&self, imsi: &str) -> Result<Option<Customer>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.customers.iter().find(|c| c.imsi == imsi).cloned())
    }

    fn save_customer(&self, c: &Customer, consume_code: Option<&str>) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        if let Some(code) = consume_code {
            if s.codes.remove(code).is_none() {
                return Err(BackendError::Refused(format!("code {code} already used")));
            }
        }
        let slot = s
            .customers
            .iter_mut()
            .find(|x| x.id == c.id)
            .ok_or_else(|| BackendError::NotFound(c.id.clone()))?;
        *slot = c.clone();
        s.saves += 1;
        Ok(())
    }

    fn meters(&self, customer_id: &str) -> Result<Vec<MeterView>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.meters
            .iter()
            .filter(|(c, _)| c == customer_id)
            .map(|(_, m)| m.clone())
            .collect())
    }

    fn top_up(
        &self,
        customer_id: &str,
        meter: &str,
        amount_minor: u64,
        request_id: [u8; 16],
    ) -> Result<Purchase, BackendError> {
        let mut s = self.state.lock().unwrap();
        if let Some(b) = s
            .bought
            .iter()
            .find(|b| b.customer == customer_id && b.request_id == request_id)
        {
            return Ok(b.purchase.clone());
        }
        if !s
            .meters
            .iter()
            .any(|(c, m)| c == customer_id && m.meter == meter)
        {
            return Err(BackendError::NotFound(format!(
                "meter {meter} is not one of your meters"
            )));
        }
        if amount_minor > 100_000 {
            return Err(BackendError::Refused(format!(
                "{amount_minor} is above the 1000.00 limit per purchase"
            )));
        }
        let serial = {
            let n = s.serials.entry(meter.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let token = CreditToken {
            meter_id: meter.into(),
            serial,
            amount_minor,
            currency: *b"EUR",
            issued_at: 1_767_225_600,
            expires_at: 1_767_225_600 + 30 * 86_400,
            key_id: pki().signer.key_id(),
        };
        let signed = pki().signer.sign(&token).unwrap().encode().unwrap();
        let purchase = Purchase {
            record: s.bought.len() as u64 + 1,
            meter: meter.into(),
            serial,
            amount_minor,
            currency: "EUR".into(),
            issued_at: token.issued_at,
            expires_at: token.expires_at,
            token: signed,
            delivery: Delivery::Pending,
        };
        s.bought.push(Bought {
            customer: customer_id.into(),
            request_id,
            purchase: purchase.clone(),
        });
        if let Some((_, m)) = s.meters.iter_mut().find(|(_, m)| m.meter == meter) {
            m.pending_tokens += 1;
        }
        s.history.push((
            customer_id.into(),
            HistoryEntry {
                at: 1_767_225_600,
                meter: meter.into(),
                what: HistoryKind::Purchased,
                serial: Some(serial),
                amount_minor: Some(amount_minor),
                balance_after_minor: None,
                detail: None,
            },
        ));
        Ok(purchase)
    }

    fn history(
        &self,
        customer_id: &str,
        meter: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.history
            .iter()
            .rev()
            .filter(|(c, h)| c == customer_id && meter.is_none_or(|m| h.meter == m))
            .take(limit)
            .map(|(_, h)| h.clone())
            .collect())
    }

    fn purchases(&self, customer_id: &str, limit: usize) -> Result<Vec<Purchase>, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(s.bought
            .iter()
            .rev()
            .filter(|b| b.customer == customer_id)
            .take(limit)
            .map(|b| b.purchase.clone())
            .collect())
    }

    fn subscribe(&self, customer_id: &str) -> NoticeFeed {
        let (tx, rx) = feed(DEFAULT_CAPACITY);
        self.state
            .lock()
            .unwrap()
            .subscribers
            .push((customer_id.into(), tx));
        rx
    }
}

/// A running server; stopped and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Arc<MemBackend>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

pub fn test_config() -> ServerConfig {
    ServerConfig {
        failure_delay: Duration::ZERO,
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(test_config())
    }

    pub fn start_with(config: ServerConfig) -> TestServer {
        let backend = MemBackend::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls::acceptor(&pki().server_cert, &pki().server_key).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = serve_with(listener, acceptor, backend.clone(), stop.clone(), config).unwrap();
        TestServer {
            addr,
            backend,
            stop,
            handle: Some(handle),
        }
    }

    /// `localhost:PORT`, as a phone would write it (the certificate names localhost).
    pub fn host_port(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.host_port(), &pki().ca).unwrap()
    }

    /// Stops the server and waits for its threads; returns how long that took.
    pub fn stop(&mut self) -> Duration {
        let t = std::time::Instant::now();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mpc-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn ca_path() -> &'static Path {
    &pki().ca
}
