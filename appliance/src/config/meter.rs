//! The `[[meter]]` tables: where a meter is and whose it is.

use serde::Deserialize;
use toml::Spanned;

/// `[[meter]]`: one meter, where it is and whose it is.
///
/// An RS485 meter has `bus`, `address` and `driver`; a Zigbee meter has `zigbee` and `ieee` instead,
/// and after loading its `bus` is the coordinator's name, its `address` the IEEE address and its
/// `driver` the coordinator's (see `config::zigbee`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// The bus it is on.
    #[serde(default = "unset")]
    pub bus: Spanned<String>,
    /// Its address on the bus: 12 decimal digits for DL/T 645, a slave id 1–247 for Modbus.
    #[serde(default = "unset")]
    pub address: Spanned<String>,
    /// The driver that speaks its protocol (`dlt645`, `modbus`, or a plugin's name).
    #[serde(default = "unset")]
    pub driver: Spanned<String>,
    /// The Zigbee coordinator it is behind (instead of `bus`).
    pub zigbee: Option<Spanned<String>>,
    /// Its IEEE address, 16 hex digits (instead of `address`).
    pub ieee: Option<Spanned<String>>,
    /// The meter model, for drivers that need one (Modbus register maps: `sdm120`, `sdm630`, `dds238`).
    pub model: Option<Spanned<String>>,
    /// The dwelling it supplies (shown to installers and the head-end).
    pub dwelling: Spanned<String>,
    /// The relay-control password, for drivers that need one (DL/T 645: 8 hex digits, level first).
    pub password: Option<Spanned<String>>,
    /// What to read at every poll (quantity names such as `energy-import-total`, `voltage-a`,
    /// `relay-state`); default: the imported energy.
    pub read: Option<Vec<Spanned<String>>>,
    /// Further settings passed to the driver as they are (vendor plugins document theirs).
    pub options: Option<toml::Table>,
    /// On a `sim` bus: how the emulated meter behaves.
    pub sim: Option<SimMeterConfig>,
    /// The utility's meter number, which credit tokens name (1 to 32 printable ASCII characters);
    /// default: the address as written. Only used with `[ledger]`.
    pub meter_id: Option<Spanned<String>>,
    /// The balance the account opens with, minor units (cents), when the ledger has no account for
    /// the meter yet; ignored afterwards. Only used with `[ledger]`.
    #[serde(default)]
    pub opening_balance_minor: i64,
    /// A protected dwelling (friendly credit at all hours: never cut off, the debt grows instead).
    /// Only used with `[ledger]`; a change is applied at the next start.
    #[serde(default)]
    pub protected: bool,
    /// `feeder`: the block's or staircase's master meter, whose energy the block balance compares with
    /// the sum of its group's dwellings (docs/install.md, *Block balance*); `dwelling` (the default).
    pub role: Option<Spanned<String>>,
    /// The block or staircase the meter belongs to (its feeder meter and its dwellings share the name).
    pub group: Option<Spanned<String>>,
}

impl MeterConfig {
    /// Whether this is its group's feeder (master) meter.
    pub fn is_feeder(&self) -> bool {
        self.role.as_ref().is_some_and(|r| r.get_ref() == "feeder")
    }

    /// The meter number the ledger keeps the account under: `meter_id`, else the address as written.
    pub fn ledger_id(&self) -> &str {
        self.meter_id
            .as_ref()
            .map_or(self.address.get_ref().as_str(), |m| m.get_ref().as_str())
    }
}

/// `[meter.sim]`: the emulated meter on a sim bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMeterConfig {
    /// Constant consumption in watts.
    #[serde(default = "default_load")]
    pub load_w: u32,
    /// The energy register at start, in kWh.
    #[serde(default)]
    pub start_kwh: f64,
    /// Unix time at which the register read `start_kwh`: the emulator then starts from the value a real
    /// meter drawing `load_w` since then would show, so the register survives restarts of the daemon
    /// (as a real meter's does; the kill -9 test relies on it). Absent: `start_kwh` at every start.
    pub running_since_unix: Option<u64>,
    /// A DL/T 645 emulator's clock minus the true time, seconds (a meter that runs fast or slow, to
    /// see the time authority at work); such meters take a broadcast time sync only within 5 minutes,
    /// as many real ones do.
    #[serde(default)]
    pub clock_offset_s: i64,
    /// A DL/T 645 emulator's freeze period, seconds, whole minutes (its "hourly" freeze, `0504xxxx`,
    /// which reading backfill reads back; a frozen time carries no seconds); with `running_since_unix` it starts with the freezes a meter drawing
    /// `load_w` since then would keep (the last 254).
    #[serde(default = "default_freeze_period")]
    pub freeze_period_s: u64,
}

fn default_freeze_period() -> u64 {
    3_600
}

fn unset() -> Spanned<String> {
    Spanned::new(0..0, String::new())
}

fn default_load() -> u32 {
    800
}
