//! `concentrator plugins sign|verify|list`, run as the built binary against the example vendor plugin
//! and a bad fixture, built by cargo at test time.

#[path = "../../plugins/host/tests/common/fixtures.rs"]
mod fixtures;

use std::path::Path;
use std::process::{Command, Output};

use concentrator_plugin_host::Algorithm;

const EXAMPLE: &str = "concentrator-example-meter";

fn plugins(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .arg("plugins")
        .args(args)
        .output()
        .expect("run concentrator")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn sign_then_verify_says_ok_and_names_the_plugin() {
    let dir = fixtures::scratch_dir("cli-sign");
    let (private, public) = fixtures::key_pair(&dir, "vendor", Algorithm::Ed25519);
    let file = fixtures::install(EXAMPLE, &dir, "libexample_meter.so", None);

    let out = plugins(&["sign", "--key", p(&private), p(&file)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("wrote {}.sig", file.display())),
        "{}",
        text(&out.stdout)
    );

    let out = plugins(&["verify", "--trusted", p(&public), p(&file)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("OK: ")
            && stdout.contains("plugin `example-meter` 0.1.0 (rs485-meter driver"),
        "{stdout}"
    );
}

#[test]
fn verify_says_exactly_what_is_wrong() {
    let dir = fixtures::scratch_dir("cli-verify");
    let (private, public) = fixtures::key_pair(&dir, "vendor", Algorithm::EcdsaP256);
    let unsigned = fixtures::install(EXAMPLE, &dir, "libunsigned.so", None);
    let out = plugins(&["verify", "--trusted", p(&public), p(&unsigned)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}.sig", unsigned.display())) && stderr.contains("plugins sign"),
        "{stderr}"
    );

    let changed = fixtures::install(EXAMPLE, &dir, "libchanged.so", Some(&private));
    let mut bytes = std::fs::read(&changed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&changed, bytes).unwrap();
    let out = plugins(&["verify", "--trusted", p(&public), p(&changed)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(p(&changed)) && stderr.contains("changed after signing"),
        "{stderr}"
    );

    let wrong_abi = fixtures::install(
        "concentrator-fixture-wrong-abi",
        &dir,
        "libwrong.so",
        Some(&private),
    );
    let out = plugins(&["verify", "--trusted", p(&public), p(&wrong_abi)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("ABI 999"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn list_shows_versions_and_refusals() {
    let dir = fixtures::scratch_dir("cli-list");
    let (private, public) = fixtures::key_pair(&dir, "vendor", Algorithm::Ed25519);
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir(&plugin_dir).unwrap();
    fixtures::install(EXAMPLE, &plugin_dir, "libexample_meter.so", Some(&private));
    fixtures::install(
        "concentrator-fixture-wrong-target",
        &plugin_dir,
        "libwrong_target.so",
        Some(&private),
    );
    let out = plugins(&["list", "--dir", p(&plugin_dir), "--trusted", p(&public)]);
    let stdout = text(&out.stdout);
    if out.status.code() == Some(2) && text(&out.stderr).contains("not root") {
        // Not running as root: the ownership rule refuses the scratch directory, which is itself right.
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("example-meter") && l.contains("0.1.0") && l.contains("active")),
        "{stdout}"
    );
    assert!(
        stdout.contains("refused:") && stdout.contains("sparc64-unknown-openbsd"),
        "{stdout}"
    );
    assert!(stdout.contains("1 would load, 1 refused"), "{stdout}");
}

#[test]
fn a_bad_key_file_is_a_usage_error() {
    let dir = fixtures::scratch_dir("cli-badkey");
    let key = dir.join("not-a-key.pem");
    std::fs::write(&key, "hello").unwrap();
    let file = dir.join("lib.so");
    std::fs::write(&file, "x").unwrap();
    let out = plugins(&["sign", "--key", p(&key), p(&file)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not-a-key.pem"),
        "{}",
        text(&out.stderr)
    );
}
