//! A vendor's driver plugin, end to end: the example plugin is built as a cdylib with the same
//! toolchain, signed with a vendor key, put in the plugin directory, and loaded by the daemon, which
//! reads its meter on a bus. The meter is the example's simulated meter, served on a pseudo-terminal,
//! and the daemon reaches it through the Linux serial backend as it would a USB-RS485 adapter.

#[path = "../../plugins/host/tests/common/fixtures.rs"]
mod fixtures;

use std::process::{Command, Stdio};
use std::time::Duration;

use concentrator_example_meter::sim::SimExampleMeter;
use concentrator_hal::sim::{PtyServer, SimBus, SimClock};
use concentrator_hal::LineSettings;
use concentrator_plugin_host::Algorithm;

fn run_daemon(config: &str, dir: &std::path::Path, seconds: u64) -> String {
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_concentratord"))
        .arg("--config")
        .arg(&path)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(seconds));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the daemon failed: {:?}\n{log}",
        out.status
    );
    log
}

fn config(
    dir: &std::path::Path,
    plugins: &std::path::Path,
    key: &std::path::Path,
    pty: &std::path::Path,
) -> String {
    // Tests run as root in CI; as an ordinary user the files cannot be root-owned.
    // SAFETY: geteuid has no preconditions.
    let owner_check = unsafe { libc::geteuid() } == 0;
    format!(
        r#"
[gateway]
id = "vendor-test"
store = "{store}"
plugin_dir = "{plugins}"
trusted_keys = ["{key}"]
plugin_owner_check = {owner_check}

[[bus]]
name = "vendor-bus"
backend = "linux"
path = "{pty}"
baud = 9600
format = "8N1"
poll_interval_s = 1

[[meter]]
bus = "vendor-bus"
address = "7"
driver = "example-meter"
model = "em-1"
dwelling = "C-301"
"#,
        store = dir.join("store").display(),
        plugins = plugins.display(),
        key = key.display(),
        pty = pty.display(),
    )
}

#[test]
fn a_signed_vendor_plugin_is_loaded_and_its_readings_reach_the_log() {
    let dir = fixtures::scratch_dir("vendor-daemon");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (private, public) = fixtures::key_pair(&dir, "acme", Algorithm::Ed25519);
    fixtures::install(
        "concentrator-example-meter",
        &plugins,
        "libacme_meter.so",
        Some(&private),
    );

    let settings = LineSettings::modbus_default();
    let mut sim = SimBus::new("vendor-sim", settings, SimClock::new_virtual());
    sim.attach(SimExampleMeter::new(7));
    let server = PtyServer::start(sim.handle(), settings).unwrap();

    let log = run_daemon(&config(&dir, &plugins, &public, server.path()), &dir, 4);
    assert!(log.contains("loaded plugin `example-meter`"), "{log}");
    assert!(log.contains("libacme_meter.so"), "{log}");
    assert!(
        log.contains("bus vendor-bus meter 7 (C-301): energy-import-total ="),
        "{log}"
    );
    // The plugin's own log records reach the daemon's log under its name.
    assert!(log.contains("plugin::example-meter"), "{log}");
}

#[test]
fn a_plugin_whose_bytes_changed_after_signing_is_refused_and_the_daemon_runs_on() {
    let dir = fixtures::scratch_dir("vendor-tampered");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (private, public) = fixtures::key_pair(&dir, "acme", Algorithm::Ed25519);
    let file = fixtures::install(
        "concentrator-example-meter",
        &plugins,
        "libacme_meter.so",
        Some(&private),
    );
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&file, bytes).unwrap();

    let settings = LineSettings::modbus_default();
    let mut sim = SimBus::new("vendor-sim", settings, SimClock::new_virtual());
    sim.attach(SimExampleMeter::new(7));
    let server = PtyServer::start(sim.handle(), settings).unwrap();

    let log = run_daemon(&config(&dir, &plugins, &public, server.path()), &dir, 2);
    assert!(log.contains("plugin refused"), "{log}");
    assert!(log.contains("libacme_meter.so"), "{log}");
    assert!(
        log.contains("meter 7 (C-301) cannot be driven: no driver named `example-meter` is loaded"),
        "{log}"
    );
    assert!(log.contains("concentratord running"), "{log}");
}

/// A vendor plugin that segfaults, configured to run in its own process: the daemon stays up, the
/// other bus keeps reading, and the status names the culprit and why, on the driver and on its meter.
#[test]
fn an_isolated_plugin_that_segfaults_is_quarantined_and_named_while_the_daemon_runs_on() {
    let dir = fixtures::scratch_dir("vendor-isolated");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (private, public) = fixtures::key_pair(&dir, "acme", Algorithm::Ed25519);
    fixtures::install(
        "concentrator-fixture-crash-segv",
        &plugins,
        "libcrash_segv.so",
        Some(&private),
    );
    // SAFETY: geteuid has no preconditions.
    let owner_check = unsafe { libc::geteuid() } == 0;
    let store = dir.join("store");
    let config = format!(
        r#"
[gateway]
id = "isolated-test"
store = "{store}"
plugin_dir = "{plugins}"
trusted_keys = ["{key}"]
plugin_owner_check = {owner_check}

[[plugin]]
name = "crash-segv"
isolation = "process"
crash_limit = 2
call_timeout_ms = 500

[[bus]]
name = "good-bus"
backend = "sim"
baud = 2400
poll_interval_s = 1

[[meter]]
bus = "good-bus"
address = "000000000001"
driver = "dlt645"
dwelling = "A-101"

[[bus]]
name = "bad-bus"
backend = "sim"
baud = 9600
poll_interval_s = 1

[[meter]]
bus = "bad-bus"
address = "7"
driver = "crash-segv"
dwelling = "B-202"
"#,
        store = store.display(),
        plugins = plugins.display(),
        key = public.display(),
    );
    let log = run_daemon(&config, &dir, 5);
    assert!(log.contains("in a child process"), "{log}");
    assert!(
        log.contains("bus good-bus meter 000000000001 (A-101): energy-import-total ="),
        "{log}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("status.json")).unwrap()).unwrap();
    let drivers = status["drivers"].to_string();
    assert!(
        drivers.contains("crash-segv 0.1.0 (process; quarantined: until")
            && drivers.contains("crashed with signal 11 (SIGSEGV)"),
        "{drivers}"
    );
    let meter = &status["buses"]["bad-bus"]["meters"][0];
    assert_eq!(meter["state"], "failed", "{meter}");
    assert!(
        meter["error"]
            .as_str()
            .unwrap()
            .starts_with("driver plugin `crash-segv` quarantined: until"),
        "{meter}"
    );
    let good = &status["buses"]["good-bus"]["meters"][0];
    assert_eq!(good["state"], "online", "{good}");
    // `concentrator status` names the culprit, on the driver and on its meter.
    let out = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["status", "--file"])
        .arg(store.join("status.json"))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("crash-segv 0.1.0 (process; quarantined: until")
            && shown.contains(
                "meter 7 (B-202) on bus bad-bus is not read because its driver plugin `crash-segv` is quarantined (until"
            ),
        "{shown}"
    );
}
