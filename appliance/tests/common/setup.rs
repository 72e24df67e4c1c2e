//! The setup the prepayment tests share: a throwaway PKI and ledger rules written at test time, and a
//! daemon configuration with simulated DL/T 645 meters that consume fast. Free of this crate's binaries,
//! so tests outside appliance/ (system/tests/zigbee.rs) include it too.

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
