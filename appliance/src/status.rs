//! The daemon's status for installers: every bus and meter with its state, last readings and
//! statistics, written as JSON to the status file for `concentrator status`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::scheduler::{BusScheduler, MeterStats};

/// One meter's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MeterStatus {
    /// The address as configured.
    pub address: String,
    /// The dwelling it supplies.
    pub dwelling: String,
    /// Its driver.
    pub driver: String,
    /// `online`, `offline`, `unknown` (not polled yet) or `failed` (cannot be driven: see `error`).
    pub state: String,
    /// Why it cannot be driven, when `failed`.
    pub error: Option<String>,
    /// Its last readings, as text.
    pub readings: Vec<String>,
    /// Statistics.
    pub stats: MeterStatsView,
}

/// Statistics as stored in the status file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MeterStatsView {
    /// Exchanges.
    pub requests: u64,
    /// Successful tasks.
    pub ok: u64,
    /// Exchanges without a reply.
    pub timeouts: u64,
    /// Unusable replies (checksum, truncation, collision).
    pub bad_replies: u64,
    /// Device exceptions.
    pub exceptions: u64,
    /// Driver panics and broken rules.
    pub driver_faults: u64,
    /// Latency histogram (buckets: <20, <50, <100, <200, <500, <1000, <2000, ≥2000 ms).
    pub latency_histogram: Vec<u64>,
    /// Last latency in ms.
    pub last_latency_ms: Option<f64>,
}

impl From<&MeterStats> for MeterStatsView {
    fn from(s: &MeterStats) -> Self {
        MeterStatsView {
            requests: s.requests,
            ok: s.ok,
            timeouts: s.timeouts,
            bad_replies: s.bad_replies,
            exceptions: s.exceptions,
            driver_faults: s.driver_faults,
            latency_histogram: s.latency_histogram.to_vec(),
            last_latency_ms: s.last_latency_ms,
        }
    }
}

/// One bus's status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BusStatus {
    /// `running`, `retrying` (cannot be opened) or `stopped`.
    pub state: String,
    /// Backend, device and settings, or why it cannot be opened.
    pub detail: String,
    /// Its meters.
    pub meters: Vec<MeterStatus>,
}

/// The whole status file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    /// The gateway's id.
    pub gateway: String,
    /// Unix time of the last update.
    pub updated_unix: u64,
    /// Buses by name.
    pub buses: BTreeMap<String, BusStatus>,
    /// Drivers: name, version and state.
    pub drivers: Vec<String>,
    /// Prepayment accounts by meter number (empty without `[ledger]`).
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountStatus>,
    /// The link to the head-end (absent without `[uplink]`).
    #[serde(default)]
    pub uplink: Option<UplinkView>,
    /// The modem (absent without `[modem]`).
    #[serde(default)]
    pub modem: Option<ModemView>,
    /// Zigbee coordinators by name (their meters are under `buses`, by the coordinator's name).
    #[serde(default)]
    pub zigbee: BTreeMap<String, ZigbeeView>,
    /// The gateway's clock and its meters' clocks (absent from daemons before the time authority).
    #[serde(default)]
    pub time: Option<crate::timekeeper::TimeView>,
    /// The block balance (absent without a feeder meter).
    #[serde(default)]
    pub balance: Option<crate::balance::BalanceView>,
}

/// A Zigbee coordinator's state, as the status file holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ZigbeeView {
    /// The port (or `sim`) and the driver.
    pub port: String,
    /// Whether the coordinator is up (network running, commands carried).
    pub link_up: bool,
    /// The coordinator's IEEE address, once it answered.
    pub coordinator_ieee: Option<String>,
    /// Its firmware.
    pub firmware: Option<String>,
    /// Devices in the table (joined, known).
    pub devices: usize,
    /// Times the link came up since the daemon started.
    pub link_ups: u32,
    /// Times it went down (a coordinator reset, a port error).
    pub link_downs: u32,
    /// Readings of mapped meters passed on.
    pub readings: u64,
    /// Until when joining is permitted, unix seconds.
    pub permit_join_until_unix: Option<u64>,
    /// The last problem (port error, driver fault).
    pub last_error: Option<String>,
}

/// The modem's state, as the status file holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ModemView {
    /// The AT port (or `sim`).
    pub port: String,
    /// `ready`, `pin-required`, `puk-required`, another lock, or absent when unknown (no answer, no SIM).
    pub sim: Option<String>,
    /// `home`, `roaming`, `searching`, `denied`, `not-registered`, `unknown`, or absent when unknown.
    pub registration: Option<String>,
    /// The operator.
    pub operator: Option<String>,
    /// Signal, dBm.
    pub rssi_dbm: Option<i16>,
    /// Access technology (`UTRAN`, `HSPA`, ...).
    pub technology: Option<String>,
    /// The SIM's ICCID.
    pub iccid: Option<String>,
    /// Whether the data link is up.
    pub link_up: bool,
    /// `healthy`, `reconnect`, `reset`, `power-cycle` or `needs-attention`.
    pub stage: String,
    /// Recovery actions since the daemon started.
    pub recoveries: u32,
    /// What the last failed check found (with its fix).
    pub last_problem: Option<String>,
    /// Unix time of the last check.
    pub checked_unix: Option<u64>,
    /// The SMS path and this month's budgets.
    #[serde(default)]
    pub sms: Option<SmsView>,
}

/// The SMS path's counters for the current calendar month (docs/install.md, *The SMS path*).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SmsView {
    /// The month counted, `2026-12` (local time).
    pub month: String,
    /// SMS sent this month (events and BAL answers).
    pub sms_sent: u32,
    /// SMS allowed per month.
    pub sms_budget: u32,
    /// Urgent events sent by SMS this month.
    pub events_sent: u32,
    /// BAL queries answered with a balance this month.
    pub bal_answered: u32,
    /// BAL queries refused this month (wrong dwelling or PIN, too many tries).
    pub bal_refused: u32,
    /// Mobile data used this month, bytes (what the uplink sent and received).
    pub data_bytes: u64,
    /// Data allowed per month, bytes; absent: no limit.
    pub data_budget_bytes: Option<u64>,
    /// Whether urgent events go by SMS now (the data link has been down long enough).
    pub sending_events: bool,
}

/// The uplink's state, as the status file holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct UplinkView {
    /// The broker's address.
    pub broker: String,
    /// Connected now.
    pub connected: bool,
    /// Connections made since the daemon started.
    pub connections: u32,
    /// Connection attempts that failed or connections lost.
    pub failures: u64,
    /// Messages waiting for the head-end's acknowledgement (the uplink's and the ledger's outboxes).
    pub outbox: u64,
    /// Messages published (resends included).
    pub sent: u64,
    /// Messages acknowledged by the head-end (and deleted from the outbox).
    pub acked: u64,
    /// Sent and not yet acknowledged.
    pub in_flight: usize,
    /// Downlink messages refused by a check.
    pub refused: u64,
    /// Downlink messages carried out.
    pub executed: u64,
    /// Downlink commands answered "already done".
    pub repeats: u64,
    /// When an acknowledgement last arrived, unix seconds.
    pub last_ack_unix: Option<u64>,
    /// The last connection error.
    pub last_error: Option<String>,
    /// With `[uplink] aka`: each scope's AKA state (the gateway first).
    #[serde(default)]
    pub aka: Vec<AkaScopeView>,
}

/// One scope's AKA state (docs/uplink.md, *In the daemon*).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct AkaScopeView {
    /// `gateway` or the meter number.
    pub scope: String,
    /// `established`, `running step N (…)`, `waiting to retry in N s`, `waiting for the connection`.
    pub state: String,
    /// The current TID (meters), 16 hex digits.
    pub tid: Option<String>,
    /// When the current keys expire, unix seconds.
    pub expires: Option<u64>,
    /// Why the last run failed, with what to check.
    pub problem: Option<String>,
}

/// One meter's prepayment account, as the ledger holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct AccountStatus {
    /// The bus the meter is on.
    pub bus: String,
    /// Its address as configured.
    pub address: String,
    /// The dwelling.
    pub dwelling: String,
    /// `in-credit`, `emergency`, `exhausted`, `disconnected`, `armed`, or `not-opened` (no reading yet).
    pub state: String,
    /// Balance, minor units (cents).
    pub balance_minor: i64,
    /// Debt shown to people (arrears plus any balance below zero), minor units.
    pub debt_minor: i64,
    /// The ledger's currency.
    pub currency: String,
    /// The relay state last read back after a command (`open`, `closed`, `armed`), if any yet.
    pub relay_read_back: Option<String>,
    /// The serial of the last token applied.
    pub last_serial: Option<u64>,
    /// Who holds the supply off by a relay order ("head-end", "installer alice"), whatever the credit.
    #[serde(default)]
    pub held_by: Option<String>,
    /// When the last top-up was applied, unix seconds (shown in local time).
    #[serde(default)]
    pub last_topup_unix: Option<u64>,
    /// The amount of the last top-up, minor units.
    #[serde(default)]
    pub last_topup_minor: Option<i64>,
}

/// The status, updated by the bus workers and written by the main loop.
#[derive(Debug, Default)]
pub struct StatusBoard {
    inner: Mutex<Status>,
}

impl StatusBoard {
    /// A board for gateway `id`.
    pub fn new(id: &str, drivers: Vec<String>) -> Self {
        StatusBoard {
            inner: Mutex::new(Status {
                gateway: id.to_string(),
                drivers,
                ..Status::default()
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a bus that cannot be opened.
    pub fn bus_failed(&self, bus: &str, why: &str) {
        self.with(|s| {
            let entry = s.buses.entry(bus.to_string()).or_default();
            entry.state = "retrying".into();
            entry.detail = why.to_string();
        });
    }

    /// Records a bus's state.
    pub fn bus_state(&self, bus: &str, state: &str, detail: Option<&str>) {
        self.with(|s| {
            let entry = s.buses.entry(bus.to_string()).or_default();
            entry.state = state.into();
            if let Some(detail) = detail {
                entry.detail = detail.to_string();
            }
        });
    }

    /// Copies a scheduler's meters into the board.
    pub fn update(&self, scheduler: &BusScheduler) {
        let meters = scheduler
            .meters()
            .iter()
            .map(|m| MeterStatus {
                address: m.address.clone(),
                dwelling: m.dwelling.clone(),
                driver: m.driver.clone(),
                state: match (m.failure(), m.online()) {
                    (Some(_), _) => "failed",
                    (None, Some(true)) => "online",
                    (None, Some(false)) => "offline",
                    (None, None) => "unknown",
                }
                .into(),
                error: m.failure(),
                readings: m.last_readings().iter().map(ToString::to_string).collect(),
                stats: m.stats().into(),
            })
            .collect();
        let plugins: Vec<String> = scheduler
            .meters()
            .iter()
            .filter_map(|m| m.plugin())
            .map(crate::drivers::status_line)
            .collect();
        self.with(|s| {
            for line in plugins {
                let name = line.split(' ').next().unwrap_or_default();
                if let Some(old) = s
                    .drivers
                    .iter_mut()
                    .find(|d| d.split(' ').next() == Some(name))
                {
                    *old = line;
                }
            }
            s.buses
                .entry(scheduler.name().to_string())
                .or_default()
                .meters = meters
        });
    }

    /// Replaces the prepayment accounts (from the ledger's thread).
    pub fn set_accounts(&self, accounts: BTreeMap<String, AccountStatus>) {
        self.with(|s| s.accounts = accounts);
    }

    /// Replaces the uplink's view (from the main loop).
    pub fn set_uplink(&self, view: UplinkView) {
        self.with(|s| s.uplink = Some(view));
    }

    /// Replaces the modem's view (from the modem worker).
    pub fn set_modem(&self, view: ModemView) {
        self.with(|s| s.modem = Some(view));
    }

    /// Replaces a Zigbee coordinator's view and its meters (from its worker).
    pub fn set_zigbee(&self, name: &str, view: ZigbeeView, meters: BusStatus) {
        self.with(|s| {
            s.zigbee.insert(name.to_string(), view);
            s.buses.insert(name.to_string(), meters);
        });
    }

    /// Replaces the clocks' view (from the main loop).
    pub fn set_time(&self, view: crate::timekeeper::TimeView) {
        self.with(|s| s.time = Some(view));
    }

    /// Replaces the block balance's view (from the main loop).
    pub fn set_balance(&self, view: crate::balance::BalanceView) {
        self.with(|s| s.balance = Some(view));
    }

    /// A snapshot.
    pub fn snapshot(&self) -> Status {
        self.with(|s| s.clone())
    }

    /// Writes the status to `path` atomically (a temporary file, then a rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut status = self.snapshot();
        status.updated_unix = concentrator_protocol::unix_now();
        let json = serde_json::to_vec_pretty(&status).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}
