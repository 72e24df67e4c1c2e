//! The installer's path for a change of tenancy: the head-end's signed order file applied through the
//! running daemon's `ledger.tenancy` operation (the web UI's *Change of tenancy* form posts to
//! `/api/tenancy`, which dispatches the same operation): a good order closes the account once, with the
//! signed settlement in the ledger's outbox; an unsigned, altered or foreign file is refused with the
//! reason and changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use concentrator_appliance::control::{request, socket_path};
use concentrator_ledger::testkit::TestPki;
use concentrator_ledger::{OutboxKind, SledStore};
use concentrator_security::tenancy::TenancyOrder;
use serde_json::json;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn setup(dir: &Path) -> PathBuf {
    let d = dir.display();
    let out = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["demo", "init", &format!("{d}/pki")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ledger = root().join("appliance/examples/prepaid-ledger.toml");
    let config = format!(
        r#"# written by appliance/tests/tenancy_order.rs
[gateway]
id = "tenancy-block-1"
store = "{d}/store"

[ledger]
config = "{ledger}"
utility_ca = "{d}/pki/ca.pem"
gateway_key = "{d}/pki/gateway.key"
gateway_cert_chain = "{d}/pki/gateway.pem"
checkpoint_s = 10

[[bus]]
name = "rs485-1"
backend = "sim"
baud = 9600
format = "8E1"
poll_interval_s = 1

[[meter]]
bus = "rs485-1"
address = "000000000101"
meter_id = "MTR-101"
driver = "dlt645"
dwelling = "A-101"
password = "02123456"
opening_balance_minor = 2000
sim = {{ load_w = 100, start_kwh = 12345.67 }}
"#,
        ledger = ledger.display()
    );
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn order(pki: &TestPki, id: u64, rogue: bool) -> String {
    let now = concentrator_protocol::unix_now();
    let o = TenancyOrder {
        meter_id: "MTR-101".into(),
        order_id: id,
        old_customer: "C-0001".into(),
        new_customer: "C-0002".into(),
        effective_at: now - 60,
        issued_at: now - 60,
        last_old_serial: 4,
        opening_credit_minor: 0,
        currency: *b"EUR",
        key_id: [0; 8],
    };
    hex::encode(pki.order(&o, rogue).unwrap())
}

#[test]
fn an_order_file_closes_the_account_once_and_bad_files_are_refused_with_the_reason() {
    let dir = root().join("target/tenancy-order-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = setup(&dir);
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_concentratord"))
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let socket = socket_path(&dir.join("store"));
    let pki = TestPki::load(&dir.join("pki")).unwrap();
    let ask = |order: &str| {
        request(
            &socket,
            "ledger.tenancy",
            json!({"order": order, "by": "installer alice"}),
            Duration::from_secs(30),
        )
    };
    // Wait for the daemon and the account (opened at the meter's first reading).
    let started = Instant::now();
    let good = order(&pki, 5, false);
    let first = loop {
        match ask(&good) {
            Ok(v) => break v,
            Err(e) => {
                let text = e.to_string();
                assert!(
                    started.elapsed() < Duration::from_secs(40),
                    "the daemon did not take the order: {text}\n{}",
                    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
                );
                assert!(!text.contains("refused"), "a good order refused: {text}");
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    };
    assert_eq!(first["outcome"], "done", "{first}");
    let text = first["text"].as_str().unwrap();
    assert!(
        text.contains("account 1 of C-0001 closed by order 5") && text.contains("EUR"),
        "{text}"
    );
    // The same file again: done before, nothing changed.
    let again = ask(&good).unwrap();
    assert_eq!(again["outcome"], "already_done", "{again}");
    // Signed by a head-end the utility CA did not certify.
    let e = ask(&order(&pki, 6, true)).unwrap_err().to_string();
    assert!(e.contains("refused") && e.contains("not trusted"), "{e}");
    // One octet changed after signing.
    let mut bytes = hex::decode(order(&pki, 7, false)).unwrap();
    let at = bytes.windows(6).position(|w| w == b"C-0002").unwrap();
    bytes[at + 5] = b'9';
    let e = ask(&hex::encode(bytes)).unwrap_err().to_string();
    assert!(e.contains("altered"), "{e}");
    // Not an order file at all.
    let e = ask("this is not hex").unwrap_err().to_string();
    assert!(e.contains("not a tenancy order file"), "{e}");
    drop(daemon);

    // One settlement in the ledger's outbox per carrying-out (the resend queues the same one again),
    // signed by the gateway; the account is number 2 now.
    let ledger = SledStore::open(&dir.join("store").join("ledger")).unwrap();
    let entries = concentrator_ledger::Outbox::new(&ledger)
        .list(0, 1000)
        .unwrap();
    let settlements: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == OutboxKind::Settlement)
        .collect();
    assert_eq!(settlements.len(), 2);
    assert_eq!(settlements[0].payload, settlements[1].payload);
    let now = concentrator_protocol::unix_now();
    let (s, _) = pki
        .receipt_verifier()
        .verify_settlement(&settlements[0].payload, now)
        .unwrap();
    assert_eq!(
        (
            s.order_id,
            s.old_customer.as_str(),
            s.account_no,
            s.debt_minor
        ),
        (5, "C-0001", 1, 0)
    );
    assert!(s.remaining_credit_minor > 0 && s.remaining_credit_minor <= 2_000);
    let accounts = concentrator_ledger::load_accounts(&ledger).unwrap();
    assert_eq!(accounts["MTR-101"].account_no, 2);
}
