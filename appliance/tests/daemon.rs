//! The daemon as a process: it starts on the example configuration, logs the buses it opened, talks to
//! systemd, stops on SIGTERM with exit 0, and refuses a broken configuration without starting.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DAEMON: &str = env!("CARGO_BIN_EXE_concentratord");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sim.toml")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("concentrator-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sigterm(child: &Child) {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
}

/// Waits for the child to exit, up to `limit`; kills it and fails the test if it does not.
fn wait_exit(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the daemon did not exit within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(DAEMON);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

#[test]
fn starts_on_the_example_logs_its_buses_and_stops_on_sigterm() {
    let store = temp_dir("start");
    let config = std::fs::read_to_string(example())
        .unwrap()
        .replace("target/demo-store", store.to_str().unwrap());
    let path = store.join("sim.toml");
    std::fs::write(&path, config).unwrap();
    let child = spawn(&["--config", path.to_str().unwrap()], &[]);
    std::thread::sleep(Duration::from_millis(3000));
    // While it runs, the installer's status view shows every meter online with a reading.
    let status = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["status", "--file"])
        .arg(store.join("status.json"))
        .output()
        .unwrap();
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(10));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}; log:\n{log}", out.status);
    assert!(
        log.contains("opened bus rs485-1: sim, 2400 baud 8E1, 3 emulated meters"),
        "{log}"
    );
    assert!(
        log.contains("opened bus rs485-2: sim, 9600 baud 8N1, 2 emulated meters"),
        "{log}"
    );
    // Readings arrive from both protocols through the built-in drivers.
    let dlt = "bus rs485-1 meter 000000000001 (A-101): energy-import-total = 12345670 Wh";
    assert!(log.contains(dlt), "{log}");
    assert!(
        log.contains("bus rs485-2 meter 1 (B-201): energy-import-total = 53214"),
        "{log}"
    );
    assert!(log.contains("stopped cleanly"), "{log}");
    let status = String::from_utf8_lossy(&status.stdout);
    // Five RS485 meters and the two Zigbee meters behind the emulated coordinator.
    assert_eq!(status.matches(" online ").count(), 7, "{status}");
    assert!(
        log.contains("zigbee zb-1: coordinator 00124b002a3b4c5d"),
        "{log}"
    );
    assert!(
        status.contains("all buses and meters are working"),
        "{status}"
    );
}

#[test]
fn the_embedded_default_runs_with_no_arguments() {
    let dir = temp_dir("embedded");
    let mut child = Command::new(DAEMON)
        .current_dir(&dir)
        .stderr(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    sigterm(&child);
    let status = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("built-in example"), "{log}");
    assert!(log.contains("2 buses running"), "{log}");
}

#[test]
fn notifies_systemd_ready_and_feeds_the_watchdog() {
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let child = spawn(
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline
        && !(seen.iter().any(|m: &String| m.starts_with("READY=1"))
            && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2)
    {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(10));
    assert!(out.status.success());
    let ready = seen
        .iter()
        .find(|m| m.starts_with("READY=1"))
        .unwrap_or_else(|| panic!("no READY in {seen:?}"));
    assert!(ready.contains("STATUS=2 buses running"), "{ready}");
    assert!(
        seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{seen:?}"
    );
    while let Ok(n) = socket.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if seen.last().is_some_and(|m| m == "STOPPING=1") {
            break;
        }
    }
    assert!(seen.iter().any(|m| m == "STOPPING=1"), "{seen:?}");
}

#[test]
fn a_bus_that_cannot_open_does_not_stop_the_others() {
    let dir = temp_dir("badbus");
    let config = format!(
        r#"
[gateway]
id = "gw"
store = "{store}"

[[bus]]
name = "sim-ok"
backend = "sim"

[[bus]]
name = "usb-gone"
backend = "linux"
path = "/dev/ttyUSB-not-plugged-in"
"#,
        store = dir.display()
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let child = spawn(&["--config", path.to_str().unwrap()], &[]);
    std::thread::sleep(Duration::from_millis(1000));
    sigterm(&child);
    let out = wait_exit(child, Duration::from_secs(10));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("opened bus sim-ok"), "{log}");
    assert!(log.contains("cannot open bus usb-gone"), "{log}");
    assert!(log.contains("/dev/ttyUSB-not-plugged-in"), "{log}");
    assert!(
        log.contains("1 buses running; retrying bus usb-gone"),
        "{log}"
    );
}
