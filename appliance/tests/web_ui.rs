//! The installer web UI in a real browser: concentratord on simulated hardware with `[web]`, driven by
//! tests/browser/test_ui.py (Playwright for Python 1.64.1 and Debian's chromium, installed by
//! tests/browser/setup.sh). Screenshots at 360 and 1280 px go to target/ui-screenshots/.
//!
//! Without chromium or Playwright the test fails with the install command, unless
//! CONCENTRATOR_ALLOW_SKIP=1 (then it says SKIPPED and appends to target/skipped-tests.txt).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig};
use concentrator_hal::sim::{PtyServer, SimBus, SimClock};
use concentrator_hal::LineSettings;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv's python when Playwright and chromium are there; else the reason.
fn browser() -> Result<PathBuf, String> {
    let venv = std::env::var_os("CONCENTRATOR_BROWSER_VENV")
        .map_or_else(|| root().join("target/browser-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    if !Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing".into());
    }
    let ok = Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(python)
    } else {
        Err(format!(
            "Playwright for Python is not installed in {}",
            venv.display()
        ))
    }
}

/// Fails with the install command, or skips (and counts the skip) with CONCENTRATOR_ALLOW_SKIP=1.
#[track_caller]
fn skip_or_fail(why: &str) {
    use concentrator_uplink::testkit::prerequisite::{skip, Missing};
    skip(Some(Missing::new(
        why,
        "run `bash tests/browser/setup.sh` (as root it also runs `apt-get install -y chromium`)",
    )));
}

fn cli(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "concentrator {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A change-of-tenancy order file for MTR-102 signed with the demo PKI's head-end key (hex text, as
/// `concentrator-headend tenancy change --order-file` writes it), and a copy altered after signing.
fn order_files(dir: &Path) -> (PathBuf, PathBuf) {
    let pki = concentrator_ledger::testkit::TestPki::load(&dir.join("pki")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let order = concentrator_security::tenancy::TenancyOrder {
        meter_id: "MTR-102".into(),
        order_id: 1,
        old_customer: "C-0001".into(),
        new_customer: "C-0002".into(),
        effective_at: now - 60,
        issued_at: now - 60,
        last_old_serial: 0,
        opening_credit_minor: 0,
        currency: *b"EUR",
        key_id: [0; 8],
    };
    let signed = pki.order(&order, false).unwrap();
    let mut altered = signed.clone();
    let at = altered.windows(6).position(|w| w == b"C-0002").unwrap();
    altered[at + 5] = b'7';
    let (good, bad) = (dir.join("MTR-102.order"), dir.join("altered.order"));
    std::fs::write(&good, format!("{}\n", hex::encode(signed))).unwrap();
    std::fs::write(&bad, format!("{}\n", hex::encode(altered))).unwrap();
    (good, bad)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the PKI, the users, and a configuration with a sim bus of two prepaid meters, a bus whose
/// adapter is missing, a Zigbee coordinator whose meter joins at permit-join, and `[web]`.
fn write_setup(dir: &Path, port: u16, pty: Option<&Path>) -> PathBuf {
    let d = dir.display();
    cli(&["demo", "init", &format!("{d}/pki")], None);
    let alice = cli(&["web", "hash-password"], Some("alice-password-1\n"));
    let bob = cli(&["web", "hash-password"], Some("bob-password-22\n"));
    std::fs::write(
        dir.join("users.toml"),
        format!("[[user]]\nname = \"alice\"\nrole = \"installer\"\npassword = \"{}\"\n\n[[user]]\nname = \"bob\"\nrole = \"read-only\"\npassword = \"{}\"\n", alice.trim(), bob.trim()),
    )
    .unwrap();
    let ledger = root().join("appliance/examples/prepaid-ledger.toml");
    let config = format!(
        r#"# written by appliance/tests/web_ui.rs
[gateway]
id = "ui-block-1"
store = "{d}/store"

[ledger]
config = "{ledger}"
utility_ca = "{d}/pki/ca.pem"
gateway_key = "{d}/pki/gateway.key"
gateway_cert_chain = "{d}/pki/gateway.pem"
checkpoint_s = 10

[web]
listen = ["127.0.0.1:{port}"]
cert = "{d}/pki/gateway.pem"
key = "{d}/pki/gateway.key"
users = "{d}/users.toml"

# Short intervals, so that the tap on block-A is an alarm while the browser test runs.
[balance]
interval_s = 20
loss_wh = 20
intervals = 1

# NTP as the gateway's time source: the flag systemd-timesyncd keeps, here a file the test writes.
[time]
ntp_flag = "{d}/timesync-synchronized"

[[bus]]
name = "rs485-1"
backend = "sim"
baud = 9600
format = "8E1"
poll_interval_s = 2

# Its USB adapter is not plugged in.
[[bus]]
name = "rs485-9"
backend = "linux"
path = "{d}/no-such-adapter"
baud = 9600

[[meter]]
bus = "rs485-1"
address = "000000000101"
meter_id = "MTR-101"
driver = "dlt645"
dwelling = "A-101"
password = "02123456"
opening_balance_minor = 2000
sim = {{ load_w = 850, start_kwh = 12345.67 }}
group = "block-A"

[[meter]]
bus = "rs485-1"
address = "000000000102"
meter_id = "MTR-102"
driver = "dlt645"
dwelling = "A-102"
password = "02123456"
opening_balance_minor = 5000
sim = {{ load_w = 300, start_kwh = 802.5 }}
group = "block-A"

# The block's master meter, on a bus of its own: the two flats' load and a tap before their meters
# (the block balance).
[[bus]]
name = "rs485-3"
backend = "sim"
baud = 9600
format = "8E1"
poll_interval_s = 2

[[meter]]
bus = "rs485-3"
address = "000000000100"
meter_id = "MTR-100"
driver = "dlt645"
dwelling = "block A main"
password = "02123456"
opening_balance_minor = 1000000
protected = true
role = "feeder"
group = "block-A"
sim = {{ load_w = 20000, start_kwh = 5000.0 }}

[[meter]]
bus = "rs485-9"
address = "000000000901"
driver = "dlt645"
dwelling = "D-901"
password = "02123456"

[[zigbee]]
name = "zb-1"
backend = "sim"
sim_meters = 1
sim_formed = true
sim_paired = false
options = {{ report_min_s = 1, report_max_s = 5 }}

[[meter]]
zigbee = "zb-1"
ieee = "00124b0000000001"
dwelling = "C-301"
sim = {{ load_w = 450, start_kwh = 1520.25 }}
"#,
        ledger = ledger.display()
    );
    // A real port (a pseudo-terminal with emulated meters behind it), held by the daemon: the UI's
    // scan must borrow it from the daemon's scheduler, not open it a second time.
    let config = match pty {
        None => config,
        Some(pty) => format!(
            r#"{config}
[[bus]]
name = "rs485-2"
backend = "linux"
path = "{}"
baud = 2400
format = "8E1"
poll_interval_s = 2

[[meter]]
bus = "rs485-2"
address = "000000000301"
meter_id = "MTR-301"
driver = "dlt645"
dwelling = "B-301"
password = "02123456"
opening_balance_minor = 5000
"#,
            pty.display()
        ),
    };
    std::fs::write(dir.join("timesync-synchronized"), "").unwrap();
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn installer_ui_in_a_real_browser() {
    let python = match browser() {
        Ok(p) => p,
        Err(why) => return skip_or_fail(&why),
    };
    let dir = root().join("target/web-ui-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    // Two DL/T 645 meters on a real (pty) port: B-301 configured, the other one new.
    let mut wire = SimBus::new(
        "rs485-2",
        LineSettings::dlt645_default(),
        SimClock::new_virtual(),
    );
    for a in ["000000000301", "000000000302"] {
        wire.attach(Dlt645Meter::new(MeterConfig::new(a.parse().unwrap())));
    }
    let pty = PtyServer::start(wire.handle(), LineSettings::dlt645_default()).unwrap();
    let written = write_setup(&dir, port, Some(pty.path()));
    // As on the appliance: the file is in the store's writable config directory and the usual path
    // links to it (image/files/firstboot); commissioning writes the real file, beside it.
    let real = dir.join("store-config/concentrator.toml");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::rename(&written, &real).unwrap();
    std::os::unix::fs::symlink(&real, &written).unwrap();
    let config = written;
    let token_file = dir.join("MTR-101-1.token");
    cli(
        &[
            "demo",
            "token",
            "--pki",
            &dir.join("pki").display().to_string(),
            "--meter",
            "MTR-101",
            "--serial",
            "1",
            "--amount-minor",
            "1500",
            "--out",
            &token_file.display().to_string(),
        ],
        None,
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let (order, bad_order) = order_files(&dir);
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_concentratord"))
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the UI did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shots = root().join("target/ui-screenshots");
    let out = Command::new(python)
        .arg(root().join("tests/browser/test_ui.py"))
        .env("UI_URL", format!("https://127.0.0.1:{port}"))
        .env("UI_INSTALLER", "alice")
        .env("UI_INSTALLER_PASSWORD", "alice-password-1")
        .env("UI_READONLY", "bob")
        .env("UI_READONLY_PASSWORD", "bob-password-22")
        .env("UI_TOKEN", token.trim())
        .env("UI_ORDER", &order)
        .env("UI_BAD_ORDER", &bad_order)
        .env("UI_CONFIG", &config)
        .env("UI_CONCENTRATORD", env!("CARGO_BIN_EXE_concentratord"))
        .env("UI_SCREENSHOTS", &shots)
        .output()
        .unwrap();
    drop(daemon);
    drop(pty);
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{}\n--- daemon log (tail) ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("daemon.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        std::fs::symlink_metadata(&config)
            .unwrap()
            .file_type()
            .is_symlink(),
        "commissioning replaced the link {} instead of writing the file it links to",
        config.display()
    );
    assert!(std::fs::read_to_string(&real)
        .unwrap()
        .contains("dwelling = \"A-102 (ground floor)\""));
    assert!(dir.join("store-config/concentrator.toml.bak").exists());
    for page in [
        "commission-scan-real-port",
        "overview",
        "token-applied",
        "tenancy-applied",
        "relay-open",
        "zigbee",
        "commission-written",
    ] {
        for width in [360, 1280] {
            assert!(
                shots.join(format!("{page}-{width}.png")).exists(),
                "no screenshot {page}-{width}.png"
            );
        }
    }
}

/// Issue #15: `accounts` with the daemon running failed with sled's raw lock error, `accounts --store`
/// on the daemon's store directory (not its `ledger/`) created an empty database there, and last
/// top-ups were shown as raw Unix times. `relay` orders go through the ledger with a read-back.
#[test]
fn accounts_and_relay_go_through_the_running_daemon() {
    let dir = root().join("target/web-ui-cli-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_setup(&dir, free_port(), None);
    let token_file = dir.join("inbox-token");
    cli(
        &[
            "demo",
            "token",
            "--pki",
            &dir.join("pki").display().to_string(),
            "--meter",
            "MTR-102",
            "--serial",
            "1",
            "--amount-minor",
            "700",
            "--out",
            &token_file.display().to_string(),
        ],
        None,
    );
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
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_concentrator"))
            .args(args)
            .output()
            .unwrap()
    };
    let store = dir.join("store");
    // The daemon's store directory given by mistake: refused, nothing created.
    let started = Instant::now();
    while !store.join("ledger/db").exists() || !store.join("control.sock").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Wait for the accounts to open (first readings).
    let relay = loop {
        let out = run(&[
            "relay",
            "MTR-102",
            "open",
            "--by",
            "carol",
            "-c",
            config.to_str().unwrap(),
        ]);
        if out.status.success() || started.elapsed() > Duration::from_secs(30) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let said = String::from_utf8_lossy(&relay.stdout);
    assert!(
        relay.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&relay.stderr)
    );
    assert!(
        said.contains("relay ordered open by installer carol; read back from the meter: open"),
        "{said}"
    );
    let out = run(&[
        "accounts",
        "--store",
        store.join("ledger").to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("(from the running daemon)"), "{table}");
    assert!(table.contains("held off by installer carol"), "{table}");
    assert!(
        table.contains("50.00 EUR") || table.contains("49."),
        "{table}"
    );
    let status = run(&["status", "-c", config.to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("dwelling A-102 (meter MTR-102) is cut off"),
        "{shown}"
    );
    assert!(
        shown.contains("dwelling D-901 (meter 000000000901 on bus rs485-9) is not read"),
        "{shown}"
    );
    let close = run(&[
        "relay",
        "MTR-102",
        "close",
        "--by",
        "carol",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert!(
        close.status.success(),
        "{}",
        String::from_utf8_lossy(&close.stderr)
    );
    drop(daemon);
    let before: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let out = run(&["accounts", "--store", store.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("holds no ledger") && e.contains("write --store"),
        "{e}"
    );
    let after: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "nothing created in {}",
        store.display()
    );
    // With the daemon stopped, from the store itself: the top-up's time in local time, not Unix seconds.
    let ledger = store.join("ledger");
    let pki = |f: &str| dir.join("pki").join(f).display().to_string();
    let (ca, cert, key) = (pki("ca.pem"), pki("gateway.pem"), pki("gateway.key"));
    let topup = run(&[
        "topup",
        "--store",
        ledger.to_str().unwrap(),
        "--token",
        token_file.to_str().unwrap(),
        "--ca",
        &ca,
        "--gateway-cert",
        &cert,
        "--gateway-key",
        &key,
    ]);
    assert!(
        topup.status.success(),
        "{}",
        String::from_utf8_lossy(&topup.stderr)
    );
    let out = run(&["accounts", "--store", ledger.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("MTR-102"))
        .unwrap_or_default();
    assert!(row.contains("#1 7.00 on 20"), "{table}");
    assert!(
        !row.split_whitespace()
            .any(|w| w.len() >= 10 && w.chars().all(|c| c.is_ascii_digit())),
        "a raw Unix time: {row}"
    );
}
