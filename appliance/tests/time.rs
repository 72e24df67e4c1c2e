//! The gateway as its meters' time authority (issue #19, item 1): `concentratord` with DL/T 645 meters
//! on a pseudo-terminal (the driver's emulator, whose clocks the test sets and reads), its uplink to a
//! real Mosquitto and the uplink testkit's head-end.
//!
//! The daily sync hour is brought to the test instead of the test waiting for it: the daemon runs in a
//! time zone (`TZ`, a POSIX offset with seconds) whose next full hour is seconds away, so its clock stays
//! the true one (the envelopes' time window holds) while its local hour turns. The NTP source is the
//! systemd-timesyncd flag file, which the test creates or leaves out; an unsynchronised gateway is run
//! with its host clock behind (`CONCENTRATOR_CLOCK_OFFSET_S`, appliance/src/clock.rs).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{temp_dir, unix_now, uplink_section};
use concentrator_appliance::status::Status;
use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig, MeterHandle};
use concentrator_driver_dlt645::Dlt645Address;
use concentrator_hal::sim::{PtyServer, SimBus, SimClock};
use concentrator_hal::LineSettings;
use concentrator_protocol::*;
use concentrator_uplink::testkit::broker::{skip_without_mosquitto, Broker};
use concentrator_uplink::testkit::headend::{HeadEnd, Log};
use concentrator_uplink::testkit::tid;

const GW: &str = "gw-time";

/// A POSIX `TZ` whose local time is `lead_s` seconds before a full hour now, and that hour (0 to 23).
fn zone_with_hour_in(lead_s: u64) -> (String, u8) {
    let now = unix_now();
    let offset = (2 * 3600 - lead_s - now % 3600) % 3600;
    let hour = ((now + offset + lead_s) % 86_400 / 3600) as u8;
    // POSIX: `XXX-h:m:s` is h:m:s east of UTC.
    let tz = format!(
        "TST-{:02}:{:02}:{:02}",
        offset / 3600,
        offset % 3600 / 60,
        offset % 60
    );
    (tz, hour)
}

/// DL/T 645 meters 000000000101.. with these clock offsets from the true time, taking a broadcast
/// correction only within 5 minutes, served on a pseudo-terminal.
fn meters(offsets: &[i64]) -> (PtyServer, Vec<MeterHandle>) {
    let line = LineSettings::dlt645_default();
    let mut sim = SimBus::new("time-sim", line, SimClock::new_virtual());
    let mut handles = Vec::new();
    for (n, offset) in offsets.iter().enumerate() {
        let mut config = MeterConfig::new(Dlt645Address::from_number(101 + n as u64));
        config.clock_offset_s = *offset;
        config.broadcast_sync_limit_s = Some(300);
        config.line = line;
        let meter = Dlt645Meter::new(config);
        handles.push(meter.handle());
        sim.attach(meter);
    }
    (PtyServer::start(sim.handle(), line).unwrap(), handles)
}

fn config(dir: &Path, broker: &Broker, pty: &Path, count: usize, time: &str) -> PathBuf {
    let d = dir.display();
    let mut text = format!(
        "[gateway]\nid = \"{GW}\"\nstore = \"{d}/store\"\n\n[[bus]]\nname = \"pty\"\nbackend = \"linux\"\npath = \"{}\"\nbaud = 2400\nformat = \"8E1\"\npoll_interval_s = 1\n\n[time]\n{time}\n",
        pty.display()
    );
    let mut names = Vec::new();
    for n in 0..count {
        let address = format!("{:012}", 101 + n);
        text.push_str(&format!(
            "\n[[meter]]\nbus = \"pty\"\naddress = \"{address}\"\ndriver = \"dlt645\"\ndwelling = \"flat-{}\"\n",
            n + 1
        ));
        names.push(address);
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    text.push_str(&uplink_section(dir, broker, GW, &names));
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `concentratord` with extra environment, its log collected.
struct Daemon {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    fn start(config: &Path, env: &[(&str, String)]) -> Daemon {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_concentratord"));
        command
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = l.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(dir: &Path) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(dir.join("store/status.json")).ok()?).ok()
}

fn wait_status(
    secs: u64,
    what: &str,
    dir: &Path,
    daemon: &Daemon,
    ok: impl Fn(&Status) -> bool,
) -> Status {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = status(dir).filter(|s| ok(s)) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; status: {:?}\nlog:\n{}",
            status(dir).and_then(|s| s.time),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn clock<'a>(
    s: &'a Status,
    address: &str,
) -> Option<&'a concentrator_appliance::timekeeper::MeterClock> {
    s.time.as_ref()?.meters.get(&format!("pty/{address}"))
}

/// The meter's clock minus the true time, seconds.
fn meter_offset(handle: &MeterHandle) -> i64 {
    handle.lock().clock_offset_s
}

fn events(log: &Log, code: u16) -> Vec<(Scope, Event)> {
    log.up
        .iter()
        .filter_map(|r| match &r.frame.body {
            Body::Event(e) if e.code == code => Some((
                r.frame.header.tid.map_or(Scope::Gateway, Scope::Meter),
                e.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// With NTP synchronised: the meters' clocks are read at start, the two past the 60 s limit raise the
/// drift event (60) and show in status; at the configured hour one broadcast sets every meter that takes
/// it, and the meter 15 minutes off (beyond its 5-minute broadcast window) keeps its clock, raises the
/// refused event (61) and is a problem in `concentrator status`.
#[test]
fn the_daily_sync_sets_the_meters_at_its_hour_and_drift_and_refusal_are_reported() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("time-sync");
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-time");
    let (server, handles) = meters(&[3, 200, -900]);
    let flag = dir.join("timesync-synchronized");
    std::fs::write(&flag, "").unwrap();
    let (tz, hour) = zone_with_hour_in(14);
    let path = config(
        &dir,
        &broker,
        server.path(),
        3,
        &format!(
            "sync_hour = {hour}\ndrift_limit_s = 60\nread_every_min = 60\nntp_flag = \"{}\"\nheadend_step_max_s = 600",
            flag.display()
        ),
    );
    let started = unix_now();
    let daemon = Daemon::start(&path, &[("TZ", tz)]);

    // Before the hour: read, judged against the NTP clock, not set.
    let s = wait_status(10, "the first clock reads", &dir, &daemon, |s| {
        ["000000000101", "000000000102", "000000000103"]
            .iter()
            .all(|a| clock(s, a).is_some_and(|c| c.drift_s.is_some()))
    });
    let t = s.time.clone().unwrap();
    assert!(t.detail.contains("NTP"), "{t:?}");
    assert!(t.last_sync_unix.is_none(), "not before the hour: {t:?}");
    let near = clock(&s, "000000000101").unwrap();
    assert_eq!(near.state, "ok", "{near:?}");
    let ahead = clock(&s, "000000000102").unwrap();
    assert_eq!(ahead.state, "drifted", "{ahead:?}");
    assert!((ahead.drift_s.unwrap() - 200).abs() <= 2, "{ahead:?}");
    assert!(
        ahead
            .problem
            .as_deref()
            .unwrap()
            .contains("3 min 20 s ahead of the gateway")
            || ahead
                .problem
                .as_deref()
                .unwrap()
                .contains("3 min 19 s ahead of the gateway")
            || ahead
                .problem
                .as_deref()
                .unwrap()
                .contains("3 min 21 s ahead of the gateway"),
        "{ahead:?}"
    );
    assert!((meter_offset(&handles[1]) - 200).abs() <= 1, "not set yet");
    head.wait_for(15, "the drift events of meters 2 and 3", |l| {
        events(l, event_code::METER_CLOCK_DRIFT).len() >= 2
    });
    {
        let log = head.log.lock().unwrap();
        let drift = events(&log, event_code::METER_CLOCK_DRIFT);
        assert_eq!(
            drift.len(),
            2,
            "one event per meter past the limit: {drift:?}"
        );
        let of = |n: u8| {
            drift
                .iter()
                .find(|(scope, _)| *scope == Scope::Meter(tid(n)))
        };
        let (_, e2) = of(2).expect("meter 2's drift event in its own scope");
        assert!(
            (e2.values[0] - 200).abs() <= 2 && e2.values[1] == 60,
            "{e2:?}"
        );
        let (_, e3) = of(3).expect("meter 3's drift event in its own scope");
        assert!((e3.values[0] + 900).abs() <= 2, "{e3:?}");
    }

    // At the hour: the sync.
    let s = wait_status(25, "the daily sync", &dir, &daemon, |s| {
        s.time.as_ref().is_some_and(|t| t.last_sync_unix.is_some())
            && clock(s, "000000000103").is_some_and(|c| c.state == "refused")
    });
    let t = s.time.clone().unwrap();
    let synced = t.last_sync_unix.unwrap();
    assert!(
        synced >= started + 13,
        "the sync came at the hour ({} s after the start), not before",
        synced - started
    );
    for (n, a) in ["000000000101", "000000000102"].iter().enumerate() {
        let c = clock(&s, a).unwrap();
        assert_eq!(c.state, "ok", "{c:?}");
        assert!(c.drift_s.unwrap().abs() <= 2, "{c:?}");
        assert!(c.set_unix.is_some(), "{c:?}");
        assert!(
            meter_offset(&handles[n]).abs() <= 1,
            "meter {a} took the time"
        );
    }
    let refused = clock(&s, "000000000103").unwrap();
    assert!((refused.drift_s.unwrap() + 900).abs() <= 2, "{refused:?}");
    assert!(
        (meter_offset(&handles[2]) + 900).abs() <= 1,
        "meter 3 kept its clock"
    );
    head.wait_for(15, "the refused event of meter 3", |l| {
        !events(l, event_code::METER_CLOCK_REFUSED).is_empty()
    });
    {
        let log = head.log.lock().unwrap();
        let refused = events(&log, event_code::METER_CLOCK_REFUSED);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, Scope::Meter(tid(3)));
        assert!((refused[0].1.values[0] + 900).abs() <= 2, "{refused:?}");
    }

    // Kept in the store across restarts.
    let kept = std::fs::read_to_string(dir.join("store/meter-clocks.json")).unwrap();
    let kept: std::collections::BTreeMap<String, concentrator_appliance::timekeeper::MeterClock> =
        serde_json::from_str(&kept).unwrap();
    assert_eq!(kept["pty/000000000103"].state, "refused", "{kept:?}");

    // What the installer reads.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["status", "--file"])
        .arg(dir.join("store/status.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the gateway's clock is synchronised by NTP"),
        "{text}"
    );
    assert!(
        text.contains("15 min behind the gateway: did not take the gateway's time")
            || text.contains("14 min 59 s behind the gateway: did not take the gateway's time")
            || text.contains("15 min 1 s behind the gateway: did not take the gateway's time"),
        "{text}"
    );
    assert!(
        text.contains("meter pty/000000000103 (flat-3): it did not take the gateway's time"),
        "{text}"
    );
    assert!(!text.contains("unix"), "no raw Unix seconds: {text}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without NTP or network time the gateway's clock (two minutes behind) is not trustworthy: meter
/// clocks are read but not judged and the daily sync waits. The head-end's TimeSync steps it (within
/// `headend_step_max_s`) and says so in the result; the waiting sync then sets the meter. A second
/// TimeSync two hours off is refused, and once NTP has synchronised, the gateway keeps its own clock.
#[test]
fn the_head_ends_time_sync_steps_an_unsynchronised_gateway_within_its_limit() {
    if skip_without_mosquitto() {
        return;
    }
    let dir = temp_dir("time-headend");
    let broker = Broker::start();
    let head = HeadEnd::connect(&broker, "head-end-time2");
    let (server, handles) = meters(&[0]);
    let flag = dir.join("timesync-synchronized");
    // The gateway's local time (its clock two minutes behind) is ten seconds into the sync hour: the
    // sync is due from the start.
    let (tz, next) = zone_with_hour_in(3600 - 130);
    let hour = (next + 23) % 24;
    let path = config(
        &dir,
        &broker,
        server.path(),
        1,
        &format!(
            "sync_hour = {hour}\ndrift_limit_s = 60\nread_every_min = 60\nntp_flag = \"{}\"\nheadend_step_max_s = 600",
            flag.display()
        ),
    );
    let daemon = Daemon::start(
        &path,
        &[("TZ", tz), ("CONCENTRATOR_CLOCK_OFFSET_S", "-120".into())],
    );
    let s = wait_status(
        15,
        "the uplink and an unjudged clock read",
        &dir,
        &daemon,
        |s| {
            s.uplink.as_ref().is_some_and(|u| u.connected)
                && clock(s, "000000000101").is_some_and(|c| c.state == "not-judged")
        },
    );
    let t = s.time.clone().unwrap();
    assert!(t.source.is_none(), "{t:?}");
    assert!(t.detail.contains("not trustworthy"), "{t:?}");
    assert!(
        daemon.log().contains("the daily meter time sync waits"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        meter_offset(&handles[0]),
        0,
        "an untrusted gateway does not set meters"
    );

    let gw = GatewayId::new(GW).unwrap();
    let time_sync = |n: u64, head_end_ms: u64| {
        let id = MessageId::new(*b"headend0", n);
        let f = Frame::new(
            id,
            None,
            unix_now(),
            Body::TimeSync(TimeSync {
                unix_ms: head_end_ms,
            }),
        );
        head.publish(
            &Topic::for_message(&gw, Scope::Gateway, Kind::TimeSync).to_string(),
            head.seal(Scope::Gateway, &f),
        );
        let got = std::sync::Mutex::new(None);
        head.wait_for(20, &format!("the result of time sync {n}"), |l| {
            let found = l.up.iter().find_map(|r| match &r.frame.body {
                Body::CommandResult(c) if c.command == id => Some(c.clone()),
                _ => None,
            });
            let done = found.is_some();
            *got.lock().unwrap() = found;
            done
        });
        got.into_inner().unwrap().unwrap()
    };
    let now_ms = || unix_now() * 1000;
    let r = time_sync(1, now_ms());
    assert_eq!(r.code, result_code::DONE, "{r:?}");
    let reason = r.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("stepped the gateway's clock to the head-end's time"),
        "{r:?}"
    );
    assert!(
        reason.contains("2 min ahead")
            || reason.contains("1 min 59 s ahead")
            || reason.contains("2 min 1 s ahead"),
        "{r:?}"
    );
    let s = wait_status(20, "the sync after the step", &dir, &daemon, |s| {
        clock(s, "000000000101").is_some_and(|c| c.set_unix.is_some())
    });
    let t = s.time.clone().unwrap();
    assert_eq!(
        t.source,
        Some(concentrator_appliance::timekeeper::TimeSource::HeadEnd)
    );
    assert!((t.step_s - 120).abs() <= 1, "{t:?}");
    assert!(
        meter_offset(&handles[0]).abs() <= 2,
        "set to the stepped time"
    );

    let r = time_sync(2, now_ms() + 7_200_000);
    assert_eq!(r.code, result_code::REFUSED, "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("more than [time] headend_step_max_s = 600 s"),
        "{r:?}"
    );

    std::fs::write(&flag, "").unwrap();
    let r = time_sync(3, now_ms());
    assert_eq!(r.code, result_code::DONE, "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap_or("")
            .contains("kept the gateway's clock (set by NTP)"),
        "{r:?}"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without NTP, the simulated modem's network time (`AT+CCLK?`, in the network's zone) sets the
/// gateway's clock: with the host clock five minutes behind, the daemon steps it by five minutes and
/// judges its meter against the network's time; the meter, on time, shows no drift.
#[test]
fn the_modem_network_time_sets_an_unsynchronised_gateway() {
    let dir = temp_dir("time-modem");
    let (server, _handles) = meters(&[0]);
    let d = dir.display();
    let text = format!(
        "[gateway]\nid = \"{GW}\"\nstore = \"{d}/store\"\n\n[[bus]]\nname = \"pty\"\nbackend = \"linux\"\npath = \"{}\"\nbaud = 2400\nformat = \"8E1\"\npoll_interval_s = 1\n\n[[meter]]\nbus = \"pty\"\naddress = \"000000000101\"\ndriver = \"dlt645\"\ndwelling = \"flat-1\"\n\n[modem]\nbackend = \"sim\"\napn = \"internet\"\ncheck_interval_s = 1\n\n[time]\nntp_flag = \"{d}/no-such-flag\"\nmodem_time = true\nread_every_min = 1\n",
        server.path().display()
    );
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, text).unwrap();
    let daemon = Daemon::start(&path, &[("CONCENTRATOR_CLOCK_OFFSET_S", "-300".into())]);
    let s = wait_status(
        20,
        "the network time and a judged meter clock",
        &dir,
        &daemon,
        |s| {
            s.time.as_ref().is_some_and(|t| {
                t.source == Some(concentrator_appliance::timekeeper::TimeSource::Modem)
            }) && clock(s, "000000000101").is_some_and(|c| c.drift_s.is_some())
        },
    );
    let t = s.time.clone().unwrap();
    assert!((t.step_s - 300).abs() <= 1, "{t:?}");
    assert!(t.detail.contains("mobile network's time"), "{t:?}");
    let c = clock(&s, "000000000101").unwrap();
    assert!(c.drift_s.unwrap().abs() <= 2, "{c:?}");
    assert_eq!(c.state, "ok", "{c:?}");
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
