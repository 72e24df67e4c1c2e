//! `concentrator accounts`, `topup` and `audit` against a ledger store made by the ledger crate, run as the
//! built binary.

use std::path::Path;
use std::process::{Command, Output};

use concentrator_ledger::testkit::TestPki;
use concentrator_ledger::{Ledger, LedgerConfig, NewAccount, SledStore};

/// 2024-06-03 12:00 UTC.
const NOW: u64 = 1_717_416_000;

fn concentrator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(args)
        .output()
        .expect("run concentrator")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn setup(dir: &Path) -> TestPki {
    let pki = TestPki::generate().unwrap();
    pki.save(dir).unwrap();
    let store = SledStore::open(&dir.join("ledger")).unwrap();
    let mut ledger = Ledger::open(
        store,
        LedgerConfig::example("gw-cli"),
        pki.verifier(),
        pki.gateway_signer().unwrap(),
    )
    .unwrap();
    ledger
        .open_account(
            NewAccount {
                meter_id: "000000000001".into(),
                dwelling: "A-101".into(),
                model: None,
                protected: false,
                opening_balance_minor: 250,
                opening_debt_minor: 0,
                register_wh: 12_000,
                meter_serial: Some("SN1".into()),
            },
            NOW,
        )
        .unwrap();
    ledger
        .on_register("000000000001", "SN1", 13_000, NOW + 900)
        .unwrap();
    pki
}

#[test]
fn accounts_topup_and_audit_work_on_a_ledger_store() {
    let dir = std::env::temp_dir().join(format!("ledger-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = setup(&dir);
    let store = dir.join("ledger");
    let store_arg = store.to_str().unwrap();

    let out = concentrator(&["accounts", "--store", store_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("000000000001") && t.contains("A-101") && t.contains("2.25"),
        "{t}"
    );

    // A token file in hex, applied locally.
    let token = pki
        .token("000000000001", 1, 1_000, NOW - 60, NOW + 86_400)
        .unwrap();
    let token_file = dir.join("token.hex");
    std::fs::write(&token_file, hex::encode(&token)).unwrap();
    let pem = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let now = (NOW + 1_000).to_string();
    let topup = |extra: &[&str]| {
        let mut args = vec![
            "topup",
            "--store",
            store_arg,
            "--token",
            token_file.to_str().unwrap(),
            "--now",
            &now,
        ];
        let (ca, cert, key) = (pem("ca.pem"), pem("gateway.pem"), pem("gateway.key"));
        let owned = [
            "--ca".to_string(),
            ca,
            "--gateway-cert".into(),
            cert,
            "--gateway-key".into(),
            key,
        ];
        let mut all: Vec<String> = args.drain(..).map(String::from).collect();
        all.extend(owned);
        all.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        concentrator(&refs)
    };
    let out = topup(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("balance 12.25"), "{}", text(&out));

    // The same token again: refused (exit 2), nothing changed.
    let out = topup(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already applied"), "{}", text(&out));
    // For another meter: refused.
    let out = topup(&["--meter", "000000000002"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = concentrator(&["audit", "verify", "--store", store_arg]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit log OK"), "{}", text(&out));

    let out = concentrator(&["audit", "export", "--store", store_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["event"] == "token_applied" && l["serial"] == 1));

    // A missing store is a usage error.
    let out = concentrator(&["accounts", "--store", dir.join("nope").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
