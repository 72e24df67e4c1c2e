//! Shared by the prepayment tests: a throwaway PKI and ledger rules written at test time, and a daemon
//! configuration with simulated DL/T 645 meters that consume fast.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use concentrator_ledger::testkit::TestPki;

/// Ledger rules for tests: no friendly credit and no emergency credit (a cut follows as soon as credit
/// runs out), a price of `rate` milli-cents per kWh, plausible power up to 2 MW (the meters are fast),
/// relay read-backs expected within 2 s.
pub fn ledger_toml(rate: u64) -> String {
    format!(
        r#"currency = "EUR"
utc_offset_minutes = 0
standing_charge_minor_per_day = 30
low_credit_levels_minor = [200]
tariff = {{ kind = "flat", rate = {rate} }}
emergency = {{ amount_minor = 0, auto_select = false, offer_below_minor = 0 }}
debt_recovery = {{ kind = "percent_of_top_up", basis_points = 2500 }}
friendly = {{ hours = [], weekends = false, holidays = false }}
relay = {{ reconnect_threshold_minor = 100, reconnect = "direct", verify_after_s = 2, max_attempts = 3 }}
plausibility = {{ max_power_w = 2000000, slack_wh = 1000, rebaseline_after = 3 }}
"#
    )
}

/// A simulated meter of the test configuration.
#[derive(Debug, Clone)]
pub struct TestMeter {
    pub bus: &'static str,
    pub address: String,
    pub meter_id: String,
    pub load_w: u32,
    pub start_kwh: f64,
    pub opening_minor: i64,
}

/// Writes the PKI (`pki/`), the ledger rules (`ledger.toml`) and the daemon's configuration
/// (`concentrator.toml`) into `dir`; returns the configuration's path and the PKI.
pub fn write_setup(
    dir: &Path,
    meters: &[TestMeter],
    rate: u64,
    checkpoint_s: u32,
    running_since: Option<u64>,
) -> (PathBuf, TestPki) {
    let pki = TestPki::generate().unwrap();
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    pki.save(&dir.join("pki")).unwrap();
    std::fs::write(dir.join("ledger.toml"), ledger_toml(rate)).unwrap();
    let d = dir.display();
    let mut config = format!(
        r#"[gateway]
id = "gw-test"
store = "{d}/store"
log_level = "info"

[ledger]
config = "{d}/ledger.toml"
utility_ca = "{d}/pki/ca.pem"
gateway_key = "{d}/pki/gateway.key"
gateway_cert_chain = "{d}/pki/gateway.pem"
checkpoint_s = {checkpoint_s}
token_inbox = "{d}/inbox"
# Accounts open at the first reading; the restore tests ask for "headend".
restore = "none"
"#
    );
    let mut buses: Vec<&str> = meters.iter().map(|m| m.bus).collect();
    buses.dedup();
    for bus in buses {
        config.push_str(&format!(
            "\n[[bus]]\nname = \"{bus}\"\nbackend = \"sim\"\nbaud = 9600\nformat = \"8E1\"\npoll_interval_s = 1\n"
        ));
    }
    for m in meters {
        let since = running_since.map_or(String::new(), |s| format!(", running_since_unix = {s}"));
        config.push_str(&format!(
            "\n[[meter]]\nbus = \"{}\"\naddress = \"{}\"\nmeter_id = \"{}\"\ndriver = \"dlt645\"\ndwelling = \"flat-{}\"\npassword = \"02123456\"\nopening_balance_minor = {}\nsim = {{ load_w = {}, start_kwh = {:.2}{since} }}\n",
            m.bus, m.address, m.meter_id, m.meter_id, m.opening_minor, m.load_w, m.start_kwh
        ));
    }
    let path = dir.join("concentrator.toml");
    std::fs::write(&path, config).unwrap();
    (path, pki)
}

/// Drops a token into the inbox as hex, under a temporary name first (as a careful writer does).
pub fn drop_token(inbox: &Path, name: &str, token: &[u8]) {
    std::fs::create_dir_all(inbox).unwrap();
    let tmp = inbox.join(format!("{name}.partial"));
    std::fs::write(&tmp, hex::encode(token)).unwrap();
    std::fs::rename(&tmp, inbox.join(format!("{name}.token"))).unwrap();
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("concentrator-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub use concentrator_protocol::unix_now;

/// `concentratord` as a child process with `--config`, its stderr lines collected as they come, each
/// with when it was read.
pub struct Daemon {
    child: std::process::Child,
    pub lines: Lines,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The daemon's stderr lines with their arrival times.
pub type Lines = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_concentratord"))
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Lines = Default::default();
        let stderr = child.stderr.take().unwrap();
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push((std::time::Instant::now(), line));
            }
        });
        Daemon {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, then waits for the exit and the last log lines; the exit must be a success.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        assert!(status.success(), "daemon exit {status}: {}", self.log());
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

/// The `[uplink]` table for gateway `gw` with the broker's TLS files and a keys file for `meters` (TIDs
/// `tid(1..)`), keys from the uplink testkit (what its fake head-end uses).
pub fn uplink_section(
    dir: &Path,
    broker: &concentrator_uplink::testkit::broker::Broker,
    gw: &str,
    meters: &[&str],
) -> String {
    use concentrator_protocol::Scope;
    use concentrator_uplink::testkit::{keys, tid};
    let issued = broker.pki.client(gw);
    let d = dir.join("uplink");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ca.pem"), broker.pki.ca_pem()).unwrap();
    std::fs::write(d.join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(d.join("key.pem"), &issued.key_pem).unwrap();
    let (ck, ik) = keys(Scope::Gateway);
    let mut k = format!(
        "mode = \"aes\"\n[gateway]\nck = \"{}\"\nik = \"{}\"\n",
        hex::encode(ck),
        hex::encode(ik)
    );
    for (i, m) in meters.iter().enumerate() {
        let t = tid(u8::try_from(i + 1).unwrap());
        let (ck, ik) = keys(Scope::Meter(t));
        k.push_str(&format!(
            "[[meter]]\nmeter = \"{m}\"\ntid = \"{}\"\nck = \"{}\"\nik = \"{}\"\n",
            hex::encode(t.0),
            hex::encode(ck),
            hex::encode(ik)
        ));
    }
    std::fs::write(d.join("keys.toml"), k).unwrap();
    let p = d.display();
    format!(
        "\n[uplink]\nbroker = \"mqtts://localhost:{}\"\nca = \"{p}/ca.pem\"\ncert = \"{p}/cert.pem\"\nkey = \"{p}/key.pem\"\nkeys = \"{p}/keys.toml\"\n",
        broker.port
    )
}
