//! `concentrator audit verify --anchor`: a store rolled back to an older copy (its audit log cut off at
//! the end, every record consistent) passes the plain verification but not the anchored one.

use std::path::Path;
use std::process::{Command, Output};

use concentrator_ledger::testkit::TestPki;
use concentrator_ledger::{Ledger, LedgerConfig, NewAccount, SledStore};

/// 2024-06-03 12:00 UTC.
const NOW: u64 = 1_717_416_000;
const METER: &str = "000000000001";

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

fn open(dir: &Path, pki: &TestPki) -> Ledger<SledStore> {
    let store = SledStore::open(&dir.join("ledger")).unwrap();
    Ledger::open(
        store,
        LedgerConfig::example("gw-anchor"),
        pki.verifier(),
        pki.gateway_signer().unwrap(),
    )
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_rolled_back_store_passes_plain_verify_and_fails_against_its_anchor() {
    let dir = std::env::temp_dir().join(format!("audit-anchor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = TestPki::generate().unwrap();
    {
        let mut l = open(&dir, &pki);
        l.open_account(
            NewAccount {
                meter_id: METER.into(),
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
        l.flush().unwrap();
    }
    // The older copy of the store, then a top-up and a charge on the live one.
    copy_dir(&dir.join("ledger"), &dir.join("old"));
    let anchor = {
        let mut l = open(&dir, &pki);
        let token = pki.token(METER, 1, 1_000, NOW - 60, NOW + 86_400).unwrap();
        l.apply_token(&token, NOW + 60).unwrap();
        l.on_register(METER, "SN1", 13_000, NOW + 900).unwrap();
        l.flush().unwrap();
        let head = l.audit_head();
        concentrator_ledger::anchor::AuditAnchor::of(&head).to_string()
    };
    let store = dir.join("ledger");
    let store_arg = store.to_str().unwrap();
    let out = concentrator(&["audit", "verify", "--store", store_arg, "--anchor", &anchor]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reaches the anchor"), "{}", text(&out));

    // Roll the store back to the older copy: every record is consistent, the log only shorter.
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::rename(dir.join("old"), &store).unwrap();
    let out = concentrator(&["audit", "verify", "--store", store_arg]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no anchor given"), "{}", text(&out));
    let out = concentrator(&["audit", "verify", "--store", store_arg, "--anchor", &anchor]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("are missing (cut off the end of the log)"),
        "{}",
        text(&out)
    );
    // A malformed anchor is a usage error.
    let out = concentrator(&["audit", "verify", "--store", store_arg, "--anchor", "12"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
