//! Zigbee in the daemon, with the real `concentratord` binary (here, outside appliance/, because the
//! daemon's crate must not depend on any coordinator's driver, not even for its tests): our coordinator emulator holds the master
//! side of a pseudo-terminal in the test process, and the daemon opens the slave side as its coordinator's
//! serial port (`backend = "linux"`), so the test sees the emulated meters' state while the daemon runs.
//!
//! Cold start and pairing through `concentrator zigbee`, readings in `concentrator status`, meters
//! leaving; an already formed network, a coordinator reset, garbage on the line, and a daemon restart
//! that keeps the device table; with `[ledger]`, a cut-off and a restore delivered to the meter; and
//! the daemon's memory with 64 emulated meters.

// The appliance's test helpers (a throwaway PKI, ledger rules, token drops), shared rather than copied.
#[path = "../../appliance/tests/common/setup.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use concentrator_appliance::status::{MeterStatus, Status};
use concentrator_driver_znp::sim::{EmulatedMeter, EmulatorThread, SerialLink, ZnpEmulator};
use concentrator_driver_znp::IeeeAddress;
use concentrator_hal::linux::SerialStreamPort;
use concentrator_hal::pty::PtyPair;

/// The daemon and the CLI built beside this test (`cargo test --workspace` builds them; alone:
/// `cargo build -p concentrator-appliance --bins`).
fn binary(name: &str) -> PathBuf {
    concentrator_system::sibling_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Short driver timeouts, and meters that report every second.
const OPTIONS: &str = "{ srsp_timeout_ms = 500, reset_timeout_ms = 500, retry_backoff_ms = 300, zcl_timeout_ms = 3000, report_min_s = 1, report_max_s = 1 }";

fn ieee(n: u64) -> IeeeAddress {
    IeeeAddress(0x0012_4B00_00AB_0000 | n)
}

/// The emulator on the master side of a fresh pty; the daemon opens the returned slave path.
fn emulator_on_pty(emulator: ZnpEmulator) -> (PtyPair, EmulatorThread) {
    let pty = PtyPair::open().unwrap();
    let link = SerialLink(SerialStreamPort::attach_pty("emulator", &pty).unwrap());
    let thread = EmulatorThread::spawn(emulator, link);
    (pty, thread)
}

fn coordinator_toml(path: &Path) -> String {
    format!(
        "\n[[zigbee]]\nname = \"zb-1\"\nbackend = \"linux\"\npath = \"{}\"\noptions = {OPTIONS}\n",
        path.display()
    )
}

fn meter_toml(ieee: IeeeAddress, dwelling: &str, extra: &str) -> String {
    format!("\n[[meter]]\nzigbee = \"zb-1\"\nieee = \"{ieee}\"\ndwelling = \"{dwelling}\"\n{extra}")
}

/// A running daemon with its store, log file and control socket.
struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn spawn(dir: &Path, config: &str) -> Daemon {
        let path = dir.join("concentrator.toml");
        std::fs::write(&path, config).unwrap();
        let runs = std::fs::read_dir(dir).map_or(0, |d| d.count());
        let log = dir.join(format!("daemon-{runs}.log"));
        let child = Command::new(binary("concentratord"))
            .args(["--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env_remove("NOTIFY_SOCKET")
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            dir: dir.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("store/control.sock")
    }

    fn status(&self) -> Option<Status> {
        let text = std::fs::read_to_string(self.dir.join("store/status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Waits until the status satisfies `ok`, failing with the status and the log after `secs`.
    fn until(&self, secs: u64, what: &str, mut ok: impl FnMut(&Status) -> bool) -> Status {
        let start = Instant::now();
        loop {
            if let Some(status) = self.status() {
                if ok(&status) {
                    return status;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{what}: not within {secs} s; status: {:#?}\nlog:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let socket = self.socket();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--socket", socket.to_str().unwrap()]);
        Command::new(binary("concentrator"))
            .args(&all)
            .output()
            .unwrap()
    }

    fn stop(&mut self) -> String {
        let child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let out = wait(child, Duration::from_secs(15));
        let log = self.log();
        assert!(out.status.success(), "exit {:?}; log:\n{log}", out.status);
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the daemon did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn meter(status: &Status, ieee: IeeeAddress) -> Option<&MeterStatus> {
    status
        .buses
        .get("zb-1")?
        .meters
        .iter()
        .find(|m| m.address == ieee.to_string())
}

fn meter_state(status: &Status, ieee: IeeeAddress) -> String {
    meter(status, ieee).map_or("absent".into(), |m| m.state.clone())
}

fn energy(status: &Status, ieee: IeeeAddress) -> Option<String> {
    meter(status, ieee)?
        .readings
        .iter()
        .find(|r| r.starts_with("energy-import-total"))
        .cloned()
}

fn link(status: &Status) -> (bool, u32, u32, usize) {
    let z = &status.zigbee["zb-1"];
    (z.link_up, z.link_ups, z.link_downs, z.devices)
}

fn sent(emulator: &EmulatorThread, name: &str) -> usize {
    emulator.with(|e| {
        e.received
            .iter()
            .filter(|f| {
                concentrator_driver_znp::mt::command_name(f.kind, f.subsystem, f.id) == Some(name)
            })
            .count()
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cold_start_pairing_readings_and_meters_leaving() {
    let dir = common::temp_dir("zigbee-cold");
    let (a, b) = (ieee(1), ieee(2));
    let mut emulator = ZnpEmulator::new(false);
    for (n, m) in [(1u16, a), (2, b)] {
        let mut meter = EmulatedMeter::new(m, 0x2000 + n);
        meter.load_w = 3600;
        emulator.add_meter(meter); // waits for permit-join
    }
    let (pty, emulator) = emulator_on_pty(emulator);
    let config = format!(
        "[gateway]\nid = \"gw-zb\"\nstore = \"{}/store\"\n{}{}{}",
        dir.display(),
        coordinator_toml(pty.slave_path()),
        meter_toml(a, "Z-1", ""),
        meter_toml(b, "Z-2", "")
    );
    let mut daemon = Daemon::spawn(&dir, &config);

    // From cold: the coordinator forms its network; the meters are not joined yet.
    let status = daemon.until(15, "coordinator up", |s| {
        s.zigbee
            .get("zb-1")
            .is_some_and(|z| z.link_up && z.firmware.is_some())
    });
    assert_eq!(meter_state(&status, a), "not-joined");
    assert_eq!(sent(&emulator, "ZDO_STARTUP_FROM_APP"), 1);
    assert!(emulator.with(|e| e.formed));

    // The installer opens the network; both meters join, are interviewed and report.
    let out = daemon.cli(&["zigbee", "permit-join", "--seconds", "30"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("joining permitted for 30 s"),
        "{}",
        text(&out)
    );
    let status = daemon.until(20, "both meters online with a reading", |s| {
        [a, b]
            .iter()
            .all(|m| meter_state(s, *m) == "online" && energy(s, *m).is_some())
    });
    assert_eq!(link(&status).3, 2);
    assert!(status.zigbee["zb-1"].permit_join_until_unix.is_some());
    let out = daemon.cli(&["zigbee", "devices"]);
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains("coordinator zb-1: link up, 2 devices"),
        "{table}"
    );
    assert!(table.contains(&format!("{a} 0x2001")), "{table}");
    assert!(table.contains("0x0000,0x0702,0x0705"), "{table}");
    assert!(table.contains("Z-1"), "{table}");
    // `concentrator status` shows them among the meters, online with their energy.
    let out = Command::new(binary("concentrator"))
        .args(["status", "--file"])
        .arg(dir.join("store/status.json"))
        .output()
        .unwrap();
    let shown = text(&out);
    assert!(shown.contains(&format!("{a} Z-1")), "{shown}");
    assert!(shown.contains("energy-import-total"), "{shown}");

    // Meter a leaves by itself; b is removed by the installer.
    emulator.with(|e| e.remove_meter(a));
    daemon.until(10, "meter a offline", |s| meter_state(s, a) == "offline");
    let out = daemon.cli(&["zigbee", "remove", &b.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let status = daemon.until(10, "both gone from the table", |s| link(s).3 == 0);
    assert_eq!(meter_state(&status, b), "offline");
    assert!(meter(&status, b)
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("left the network"));
    assert!(emulator.with(|e| e.meters.is_empty()));
    let out = daemon.cli(&["zigbee", "devices", "--json"]);
    let devices: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(devices[0]["devices"], serde_json::json!([]), "{devices}");

    // Mistakes are named: a device not in the table, a bad address, an open-ended permit-join.
    let out = daemon.cli(&["zigbee", "remove", &b.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is not in coordinator `zb-1`'s table"),
        "{}",
        text(&out)
    );
    let out = daemon.cli(&["zigbee", "remove", "00124b"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("is not an IEEE address"),
        "{}",
        text(&out)
    );
    let out = daemon.cli(&["zigbee", "permit-join", "--seconds", "255"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("1 to 254"), "{}", text(&out));

    let log = daemon.stop();
    assert!(log.contains("stopped cleanly"), "{log}");
    // The socket is gone with the daemon, and the CLI says so.
    let out = daemon.cli(&["zigbee", "devices"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is concentratord running"),
        "{}",
        text(&out)
    );
    drop(emulator);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn formed_network_reset_garbage_and_a_restart_keep_the_devices() {
    let dir = common::temp_dir("zigbee-formed");
    let a = ieee(0x11);
    let mut emulator = ZnpEmulator::new(true);
    let mut m = EmulatedMeter::new(a, 0x3011);
    m.load_w = 36_000; // 10 Wh a second
    emulator.add_paired_meter(m);
    emulator.announce_on_register = true;
    let (pty, emulator) = emulator_on_pty(emulator);
    let base = format!(
        "[gateway]\nid = \"gw-zb\"\nstore = \"{}/store\"\n",
        dir.display()
    );
    let config = |path: &Path| {
        format!(
            "{base}{}{}",
            coordinator_toml(path),
            meter_toml(a, "F-1", "")
        )
    };
    let mut daemon = Daemon::spawn(&dir, &config(pty.slave_path()));

    let status = daemon.until(15, "the paired meter online", |s| {
        meter_state(s, a) == "online" && energy(s, a).is_some()
    });
    // An already formed network is not formed again.
    assert_eq!(sent(&emulator, "ZDO_STARTUP_FROM_APP"), 0);
    assert_eq!(link(&status).1, 1);

    // The coordinator resets by itself: the link goes down and up; the device stays known and reports.
    emulator.with(|e| e.reset(2));
    let status = daemon.until(15, "link down and up again", |s| {
        let (up, ups, downs, _) = link(s);
        up && ups >= 2 && downs >= 1
    });
    assert_eq!(link(&status).3, 1);
    let before = energy(&status, a);
    daemon.until(10, "readings after the reset", |s| energy(s, a) != before);

    // Garbage on the line (noise, a bad FCS, a truncated frame) does not stop the readings.
    emulator.with(|e| {
        e.send_raw(&[
            0x00, 0x55, 0xFE, 0x03, 0x61, 0x01, 0x00, 0xFE, 0xFF, 0xAA, 0xFE, 0x05,
        ])
    });
    let before = energy(&daemon.status().unwrap(), a);
    let status = daemon.until(10, "readings after garbage", |s| energy(s, a) != before);
    assert!(status.zigbee["zb-1"].link_up);
    daemon.stop();

    // A restart on a new port: the stored table makes the meter usable without joining or
    // announcing again (the emulator's network and meter carry on).
    let mut emulator = emulator.into_inner();
    emulator.received.clear();
    assert!(!emulator.announce_on_register);
    let (pty2, emulator) = emulator_on_pty(emulator);
    // The old daemon's status file must not answer for the new one.
    std::fs::remove_file(dir.join("store/status.json")).unwrap();
    let mut daemon = Daemon::spawn(&dir, &config(pty2.slave_path()));
    let status = daemon.until(15, "the meter online after the restart", |s| {
        meter_state(s, a) == "online" && energy(s, a).is_some()
    });
    assert_eq!(link(&status).3, 1);
    assert_eq!(sent(&emulator, "ZDO_MGMT_PERMIT_JOIN_REQ"), 0);
    assert!(
        daemon.log().contains("1 devices in the stored table"),
        "{}",
        daemon.log()
    );
    daemon.stop();
    drop((pty, emulator));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_ledger_cuts_and_restores_a_zigbee_meter() {
    let dir = common::temp_dir("zigbee-ledger");
    // 360 kW at 25 c/kWh: 2.5 cents a second; an opening balance of 5 cents lasts two seconds.
    let (config, pki) = common::write_setup(&dir, &[], 25_000, 1, None);
    let a = ieee(0x21);
    let mut emulator = ZnpEmulator::new(true);
    let mut m = EmulatedMeter::new(a, 0x4021);
    m.load_w = 360_000;
    emulator.add_paired_meter(m);
    emulator.announce_on_register = true;
    let (pty, emulator) = emulator_on_pty(emulator);
    let text_config = format!(
        "{}{}{}",
        std::fs::read_to_string(&config).unwrap(),
        coordinator_toml(pty.slave_path()),
        meter_toml(
            a,
            "L-1",
            "meter_id = \"ZB-LEDGER-1\"\nopening_balance_minor = 5\n"
        )
    );
    let mut daemon = Daemon::spawn(&dir, &text_config);

    let status = daemon.until(30, "the cut-off read back open", |s| {
        s.accounts.get("ZB-LEDGER-1").is_some_and(|acc| {
            acc.state == "disconnected" && acc.relay_read_back.as_deref() == Some("open")
        })
    });
    assert!(status.accounts["ZB-LEDGER-1"].balance_minor <= 0);
    // The meter got the cut-off command: its cut-off is above any credit, the supply is off.
    let (cut_off, on) = emulator.with(|e| {
        let m = e.meter_mut(a).unwrap();
        (m.cut_off, m.supply_on())
    });
    assert_eq!(cut_off, i32::MAX);
    assert!(!on);

    // A token through the inbox: the ledger tops up and the meter is restored.
    let now = common::unix_now();
    let token = pki
        .token("ZB-LEDGER-1", 1, 1_000, now - 60, now + 3_600)
        .unwrap();
    common::drop_token(&dir.join("inbox"), "ZB-LEDGER-1-000001", &token);
    daemon.until(30, "the reconnection read back closed", |s| {
        s.accounts.get("ZB-LEDGER-1").is_some_and(|acc| {
            acc.last_serial == Some(1) && acc.relay_read_back.as_deref() == Some("closed")
        })
    });
    let (cut_off, on) = emulator.with(|e| {
        let m = e.meter_mut(a).unwrap();
        (m.cut_off, m.supply_on())
    });
    assert_eq!(cut_off, -i32::MAX);
    assert!(on);
    assert!(sent(&emulator, "AF_DATA_REQUEST") >= 4);
    assert!(dir.join("inbox/done/ZB-LEDGER-1-000001.receipt").exists());
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prints the daemon's resident memory with 64 emulated Zigbee meters (the in-daemon emulator) all
/// reporting, and holds it to a bound a Raspberry Pi can afford.
#[test]
fn daemon_memory_with_64_emulated_zigbee_meters() {
    let dir = common::temp_dir("zigbee-rss");
    let mut config = format!(
        "[gateway]\nid = \"gw-zb\"\nstore = \"{}/store\"\n\n[[zigbee]]\nname = \"zb-1\"\nbackend = \"sim\"\nsim_meters = 64\nsim_formed = true\nsim_paired = true\noptions = {{ report_min_s = 1, report_max_s = 2 }}\n",
        dir.display()
    );
    let first = concentrator_appliance::config::zigbee::sim_meter_ieee(1);
    for n in 0..64u64 {
        config.push_str(&meter_toml(IeeeAddress(first + n), &format!("R-{n}"), ""));
    }
    let mut daemon = Daemon::spawn(&dir, &config);
    let start = Instant::now();
    daemon.until(60, "64 meters online", |s| {
        s.buses
            .get("zb-1")
            .is_some_and(|b| b.meters.iter().filter(|m| m.state == "online").count() == 64)
    });
    let all_online = start.elapsed();
    // Let it run a few report rounds, then read the resident set.
    std::thread::sleep(Duration::from_secs(6));
    let pid = daemon.child.as_ref().unwrap().id();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let readings = daemon.status().unwrap().zigbee["zb-1"].readings;
    println!(
        "zigbee: 64 emulated meters online after {:.1} s; daemon RSS {:.1} MiB; {readings} readings passed on",
        all_online.as_secs_f64(),
        rss_kib as f64 / 1024.0
    );
    assert!(rss_kib < 64 * 1024, "RSS {rss_kib} KiB");
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_stick_is_retried_and_named_while_the_buses_run() {
    let dir = common::temp_dir("zigbee-missing");
    let config = format!(
        "[gateway]\nid = \"gw-zb\"\nstore = \"{}/store\"\n\n[[bus]]\nname = \"sim-ok\"\nbackend = \"sim\"\n{}{}",
        dir.display(),
        coordinator_toml(Path::new("/dev/ttyUSB-zigbee-unplugged")),
        meter_toml(ieee(0x31), "M-1", "")
    );
    let mut daemon = Daemon::spawn(&dir, &config);
    let status = daemon.until(10, "the coordinator retrying", |s| {
        s.buses.get("zb-1").is_some_and(|b| b.state == "retrying")
            && s.buses.get("sim-ok").is_some_and(|b| b.state == "running")
    });
    let error = status.zigbee["zb-1"].last_error.clone().unwrap();
    assert!(error.contains("/dev/ttyUSB-zigbee-unplugged"), "{error}");
    assert!(error.contains("check the coordinator's `path`"), "{error}");
    // Installer commands say why they cannot be carried out, and `devices` still answers.
    let out = daemon.cli(&["zigbee", "permit-join"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is not open"), "{}", text(&out));
    let out = daemon.cli(&["zigbee", "devices"]);
    assert!(
        text(&out).contains("coordinator zb-1: link down, 0 devices"),
        "{}",
        text(&out)
    );
    let log = daemon.stop();
    assert!(
        log.contains("zigbee zb-1: /dev/ttyUSB-zigbee-unplugged"),
        "{log}"
    );
    assert!(log.contains("reopening"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
