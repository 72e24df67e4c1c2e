//! The modem in the daemon: `concentratord` with `[modem] backend = "sim"` supervises the simulated
//! modem on its own thread; `concentrator status` shows it; a modem that stops answering goes through
//! the staged recovery while the buses keep polling; broken `[modem]` tables are refused with their
//! place and fix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DAEMON: &str = env!("CARGO_BIN_EXE_concentratord");
const CLI: &str = env!("CARGO_BIN_EXE_concentrator");

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("concentrator-modem-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with one sim bus polled every second, and `modem` as its `[modem]` table.
fn config(store: &Path, modem: &str) -> String {
    format!(
        r#"[gateway]
id = "gw-modem"
store = "{}"
plugin_owner_check = false

[[bus]]
name = "rs485-1"
backend = "sim"
baud = 9600
poll_interval_s = 1

[[meter]]
bus = "rs485-1"
address = "000000000001"
driver = "dlt645"
dwelling = "A-101"

[modem]
{modem}
"#,
        store.display()
    )
}

fn start(dir: &Path, modem: &str) -> Child {
    let path = dir.join("c.toml");
    std::fs::write(&path, config(dir, modem)).unwrap();
    Command::new(DAEMON)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .unwrap()
}

fn stop(child: Child) -> (Output, String) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut child = child;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, log)
}

fn status(dir: &Path) -> String {
    let out = Command::new(CLI)
        .args(["status", "--file"])
        .arg(dir.join("status.json"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_shows_the_registered_simulated_modem() {
    let dir = temp_dir("healthy");
    let child = start(
        &dir,
        "backend = \"sim\"\napn = \"internet\"\ncheck_interval_s = 1",
    );
    std::thread::sleep(Duration::from_millis(3500));
    let shown = status(&dir);
    let (out, log) = stop(child);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("modem supervisor on sim: APN internet"),
        "{log}"
    );
    assert!(
        shown.contains("modem sim: healthy, SIM ready, registration home, operator Example Net, signal -79 dBm"),
        "{shown}"
    );
    assert!(
        shown.contains("ICCID 89490200001234567890, link up"),
        "{shown}"
    );
    assert!(
        shown.contains("all buses and meters are working"),
        "{shown}"
    );
    assert!(log.contains("modem supervisor stopped"), "{log}");
}

#[test]
fn a_silent_modem_goes_through_staged_recovery_while_the_bus_polls() {
    let dir = temp_dir("silent");
    let child = start(
        &dir,
        "backend = \"sim\"\nsim_fault = \"silent\"\napn = \"internet\"\npower_key_gpio = \"gpiochip0:23\"\n\
         check_interval_s = 1\ncommand_timeout_ms = 200\nregister_timeout_s = 1\nboot_time_s = 0\nfailures_per_stage = 1",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut shown = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        shown = status(&dir);
        if shown.contains("needs-attention") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (out, log) = stop(child);
    assert!(out.status.success(), "{log}");
    let at = |s: &str| {
        log.find(s)
            .unwrap_or_else(|| panic!("no `{s}` in the log:\n{log}"))
    };
    let stages = [
        at("modem recovery: reconnect"),
        at("modem recovery: reset"),
        at("modem recovery: power-cycle"),
        at("modem recovery: needs attention"),
    ];
    assert!(stages.windows(2).all(|w| w[0] < w[1]), "{log}");
    // The bus polled every second all along: readings logged between the first recovery and the end.
    let polls = log[stages[0]..]
        .matches("bus rs485-1 meter 000000000001 (A-101): energy-import-total")
        .count();
    assert!(polls >= 3, "{polls} polls during the recovery:\n{log}");
    assert!(shown.contains("modem sim: needs-attention"), "{shown}");
    assert!(
        shown.contains("- the modem on sim needs attention: the modem does not answer AT"),
        "{shown}"
    );
}

/// Runs `validate` on a config with `modem` as its `[modem]` table; returns its stderr (it must fail).
fn refused(name: &str, modem: &str) -> String {
    let dir = temp_dir(name);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config(&dir, modem)).unwrap();
    let out = Command::new(DAEMON)
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "validate accepted {name}: {err}"
    );
    err
}

#[test]
fn bad_modem_tables_are_refused_at_their_place() {
    let err = refused("noapn", "port = \"/dev/modem-at\"");
    assert!(
        err.contains("noapn.toml:18:1: the [modem] table has no `apn`"),
        "{err}"
    );
    assert!(err.contains("add `apn = "), "{err}");

    let err = refused(
        "gpio",
        "port = \"/dev/modem-at\"\napn = \"internet\"\npower_key_gpio = \"23\"",
    );
    assert!(
        err.contains("gpio.toml:21:18: `23` is not a GPIO line"),
        "{err}"
    );
    assert!(err.contains("gpiochip0:23"), "{err}");

    let err = refused(
        "pin",
        "backend = \"sim\"\napn = \"internet\"\npin_file = \"/nonexistent/pin\"",
    );
    assert!(
        err.contains("pin.toml:21:12: cannot read the SIM PIN file /nonexistent/pin"),
        "{err}"
    );
    assert!(
        err.contains("remove `pin_file` if the SIM has no PIN"),
        "{err}"
    );

    let err = refused(
        "many",
        "backend = \"sim\"\nsim_fault = \"on-fire\"\napn = \"in ternet\"\ncheck_interval_s = 0",
    );
    assert!(
        err.contains("`on-fire` is not a simulated modem fault"),
        "{err}"
    );
    assert!(err.contains("APN \"in ternet\" is not valid"), "{err}");
    assert!(err.contains("`check_interval_s` cannot be 0"), "{err}");
}
