//! What the whole-system tests share: the provisioning file of a test block (gateways with simulated
//! buses and meters, customers) and a fresh directory per test.
#![allow(dead_code)]

use std::path::PathBuf;

/// One meter of a test block.
pub struct M {
    pub number: &'static str,
    pub address: &'static str,
    pub load_w: u32,
    pub opening_minor: u64,
}

/// Friendly credit never.
pub const NO_FRIENDLY: &str = "{ hours = [], weekends = false, holidays = false }";

/// A `[[gateway]]` table: a flat tariff of 25 c/kWh (`rate = 25000` milli-cents), no standing charge,
/// no emergency credit, and simulated buses `(name, poll interval s)`.
pub fn gateway_table(gateway: &str, friendly: &str, buses: &[(&str, u32)]) -> String {
    let mut s = format!(
        r#"
[[gateway]]
id = "{gateway}"
ledger_options = {{ checkpoint_s = 5 }}
uplink_options = {{ account_every_s = 1 }}

[gateway.ledger]
currency = "EUR"
utc_offset_minutes = 0
holidays = []
standing_charge_minor_per_day = 0
low_credit_levels_minor = [300]
tariff = {{ kind = "flat", rate = 25000 }}
emergency = {{ amount_minor = 0, auto_select = false, offer_below_minor = 0 }}
debt_recovery = {{ kind = "percent_of_top_up", basis_points = 0 }}
friendly = {friendly}
relay = {{ reconnect_threshold_minor = 100, reconnect = "direct", verify_after_s = 30, max_attempts = 3 }}
plausibility = {{ max_power_w = 1000000, slack_wh = 1000, rebaseline_after = 3 }}
"#
    );
    for (bus, poll_s) in buses {
        s.push_str(&format!(
            r#"
[[gateway.bus]]
name = "{bus}"
backend = "sim"
baud = 9600
format = "8E1"
poll_interval_s = {poll_s}
"#
        ));
    }
    s
}

/// A `[[gateway.bus]]` table whose port never opens (`path` does not exist): its meters are off the
/// bus, unread, until they are moved to another bus.
pub fn unplugged_bus_table(name: &str, path: &std::path::Path) -> String {
    format!(
        r#"
[[gateway.bus]]
name = "{name}"
backend = "linux"
path = "{}"
baud = 9600
format = "8E1"
poll_interval_s = 1
"#,
        path.display()
    )
}

/// A `[[meter]]` table on `bus` of `gateway`. With `running_since` (unix s) the simulated register
/// counts from then, so it does not go back when the gateway restarts.
pub fn meter_table(gateway: &str, bus: &str, m: &M, running_since: Option<u64>) -> String {
    let since = running_since
        .map(|t| format!(", running_since_unix = {t}"))
        .unwrap_or_default();
    meter_without_sim(gateway, bus, m)
        + &format!(
            "sim = {{ load_w = {}, start_kwh = 100.0{since} }}\n",
            m.load_w
        )
}

/// The `[meter.sim]` table of [`meter_table`], for a meter moved back onto a simulated bus.
pub fn sim_table(m: &M, running_since: u64) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("load_w".into(), toml::Value::Integer(i64::from(m.load_w)));
    t.insert("start_kwh".into(), toml::Value::Float(100.0));
    t.insert(
        "running_since_unix".into(),
        toml::Value::Integer(i64::try_from(running_since).unwrap_or(i64::MAX)),
    );
    t
}

/// A `[[meter]]` table for a bus that is not simulated.
pub fn meter_without_sim(gateway: &str, bus: &str, m: &M) -> String {
    format!(
        r#"
[[meter]]
meter = "{}"
gateway = "{gateway}"
dwelling = "D-{}"
bus = "{bus}"
address = "{}"
driver = "dlt645"
password = "02123456"
opening_balance_minor = {}
"#,
        m.number, m.number, m.address, m.opening_minor
    )
}

/// A `[[customer]]` table; `n` makes the MSISDN unique.
pub fn customer_table(id: &str, n: u32, meters: &[&str]) -> String {
    let numbers: Vec<String> = meters.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "\n[[customer]]\nid = \"{id}\"\nname = \"Test Customer {n}\"\nmsisdn = \"4917000000{n:02}\"\nmeters = [{}]\n",
        numbers.join(", ")
    )
}

/// One gateway with its meters on one bus polled every second, all of them the customer C-1's.
pub fn block(gateway: &str, friendly: &str, meters: &[M]) -> String {
    let mut s = gateway_table(gateway, friendly, &[("rs485-1", 1)]);
    for m in meters {
        s.push_str(&meter_table(gateway, "rs485-1", m, None));
    }
    let numbers: Vec<&str> = meters.iter().map(|m| m.number).collect();
    s.push_str(&customer_table("C-1", 1, &numbers));
    s
}

/// A fresh directory for test `name` (`<tmp>/<kind>-<name>-<pid>`).
pub fn temp_dir(kind: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{kind}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
