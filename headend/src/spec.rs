//! The provisioning file: the gateways, meters and customers of a pilot (TOML).
//!
//! ```toml
//! [[gateway]]
//! id = "blk-0451-a"
//! broker = "mqtts://headend.example.net:8883"   # default: the head-end's [mqtt] broker
//! ledger = { currency = "EUR", ... }            # the ledger's rules (docs/ledger.md), or:
//! # ledger_file = "prepaid-ledger.toml"          # relative to this file
//! ledger_options = { checkpoint_s = 900 }       # further keys of the bundle's [ledger]
//! uplink_options = { account_every_s = 900 }    # further keys of the bundle's [uplink]
//! web_listen = ["192.168.7.1:8443"]            # the installer web UI on these addresses (its password
//!                                               # is written beside the bundle, never inside it)
//! # [[gateway.zigbee]] tables go to the bundle's [[zigbee]] as they are; a Zigbee [[meter]] names
//! # `zigbee` and `ieee` instead of `bus`, `address` and `driver`.
//! [[gateway.bus]]                               # passed through to the bundle's [[bus]]
//! name = "rs485-1"
//! backend = "linux"
//! path = "/dev/rs485-1"
//!
//!
//! [[meter]]
//! meter = "MTR-103"                 # the meter number tokens name
//! gateway = "blk-0451-a"
//! dwelling = "A-103"
//! bus = "rs485-1"
//! address = "000000000103"
//! driver = "dlt645"
//! opening_balance_minor = 500        # any further key goes to the bundle's [[meter]] as it is
//!
//! [[customer]]
//! id = "C-0001"
//! name = "Ada Example"
//! msisdn = "491701234567"
//! meters = ["MTR-103"]
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{HeadEndError, Result};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Gateways.
    #[serde(default, rename = "gateway")]
    pub gateways: Vec<GatewaySpec>,
    /// Meters.
    #[serde(default, rename = "meter")]
    pub meters: Vec<MeterSpec>,
    /// Customers.
    #[serde(default, rename = "customer")]
    pub customers: Vec<CustomerSpec>,
    /// The file's directory (for `ledger_file`); not in the file.
    #[serde(skip)]
    pub base: PathBuf,
}

/// One gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    /// Gateway id: CN of its certificate, MQTT client id and user name.
    pub id: String,
    /// The broker address the gateway uses; default: the head-end's.
    pub broker: Option<String>,
    /// The gateway's store directory; default `/var/lib/concentrator` (or the local bundle's).
    pub store: Option<String>,
    /// The ledger's rules, inline.
    pub ledger: Option<toml::Table>,
    /// The ledger's rules, from a file relative to the provisioning file.
    pub ledger_file: Option<PathBuf>,
    /// `[[bus]]` tables for the bundle, as they are.
    #[serde(default)]
    pub bus: Vec<toml::Table>,
    /// A `[modem]` table for the bundle, as it is.
    pub modem: Option<toml::Table>,
    /// A `[balance]` table for the bundle, as it is (the block balance's interval and allowed losses;
    /// the feeder and the groups are the meters' `role` and `group` keys).
    pub balance: Option<toml::Table>,
    /// A `[power]` table for the bundle, as it is (the power-fail line of a UPS HAT: the last gasp).
    pub power: Option<toml::Table>,
    /// An `[update]` table for the bundle, as it is (the trial boot of a new version).
    pub update: Option<toml::Table>,
    /// `[[zigbee]]` coordinator tables for the bundle, as they are.
    #[serde(default)]
    pub zigbee: Vec<toml::Table>,
    /// Further keys of the bundle's `[ledger]` table (e.g. `checkpoint_s`, `token_inbox`).
    pub ledger_options: Option<toml::Table>,
    /// Further keys of the bundle's `[uplink]` table (e.g. `account_every_s`, `outbox_mib`).
    pub uplink_options: Option<toml::Table>,
    /// The installer web UI's addresses (`IP:PORT` on the installer port): the bundle gets a `[web]`
    /// table with the gateway's certificate and a users file with the hash of a generated installer
    /// password; the password itself goes to `BUNDLE.installer-password` beside the bundle.
    pub web_listen: Option<Vec<String>>,
}

/// One meter.
#[derive(Debug, Clone, Deserialize)]
pub struct MeterSpec {
    /// Meter number (contract id), 1–32 printable ASCII characters.
    pub meter: String,
    /// The gateway it is behind.
    pub gateway: String,
    /// Dwelling.
    pub dwelling: String,
    /// Bus name (RS485 meters; a Zigbee meter names `zigbee` and `ieee` instead, among the other keys).
    pub bus: Option<String>,
    /// Address on the bus.
    pub address: Option<String>,
    /// Driver.
    pub driver: Option<String>,
    /// MSISDN for the KID (1–15 digits); default: drawn at enrolment.
    pub msisdn: Option<String>,
    /// IMEI for the KID (14–16 digits); default: drawn at enrolment.
    pub imei: Option<String>,
    /// Every other key (ledger options such as `opening_balance_minor`, `protected`; `model`,
    /// `password`, `read`, `options`, `sim`): copied to the bundle's `[[meter]]`.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// One customer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerSpec {
    /// Stable id.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Phone number (digits, 1–15).
    pub msisdn: String,
    /// Meter numbers.
    #[serde(default)]
    pub meters: Vec<String>,
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

impl Spec {
    /// Reads and checks a provisioning file.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(HeadEndError::io(
            "provisioning file",
            path,
            "give the TOML file that lists the gateways, meters and customers",
        ))?;
        let mut s: Spec = toml::from_str(&text).map_err(|e| HeadEndError::Spec {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        s.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        s.check().map_err(|message| HeadEndError::Spec {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(s)
    }

    /// Consistency checks.
    pub fn check(&self) -> std::result::Result<(), String> {
        let mut gws = HashSet::new();
        for g in &self.gateways {
            concentrator_protocol::GatewayId::new(g.id.clone())
                .map_err(|e| format!("[[gateway]] id {:?}: {e}", g.id))?;
            if !gws.insert(g.id.as_str()) {
                return Err(format!(
                    "[[gateway]] id {:?} appears twice; each gateway once",
                    g.id
                ));
            }
            if g.ledger.is_some() && g.ledger_file.is_some() {
                return Err(format!(
                    "[[gateway]] {}: give either ledger (inline) or ledger_file, not both",
                    g.id
                ));
            }
            if g.ledger.is_none() && g.ledger_file.is_none() {
                return Err(format!(
                    "[[gateway]] {}: no ledger rules; add ledger_file = \"prepaid-ledger.toml\" (see appliance/examples/prepaid-ledger.toml) or an inline ledger table",
                    g.id
                ));
            }
            if let Some(b) = &g.broker {
                crate::config::parse_broker(b).map_err(|e| format!("[[gateway]] {}: {e}", g.id))?;
            }
        }
        let mut meters = HashSet::new();
        for m in &self.meters {
            if !printable(&m.meter, 32) {
                return Err(format!(
                    "[[meter]] meter {:?} is not 1 to 32 printable ASCII characters (no spaces)",
                    m.meter
                ));
            }
            if !meters.insert(m.meter.as_str()) {
                return Err(format!(
                    "[[meter]] {:?} appears twice; each meter number once",
                    m.meter
                ));
            }
            if !gws.contains(m.gateway.as_str()) {
                return Err(format!(
                    "[[meter]] {}: gateway {:?} is not among the file's [[gateway]] tables; add it",
                    m.meter, m.gateway
                ));
            }
            for (what, v, min, max) in [("msisdn", &m.msisdn, 1, 15), ("imei", &m.imei, 14, 16)] {
                if let Some(v) = v {
                    if v.len() < min || v.len() > max || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!(
                            "[[meter]] {}: {what} {v:?} is not {min} to {max} digits",
                            m.meter
                        ));
                    }
                }
            }
            for reserved in ["meter_id", "aka", "tid"] {
                if m.extra.contains_key(reserved) {
                    return Err(format!(
                        "[[meter]] {}: {reserved} is set by provisioning; remove it",
                        m.meter
                    ));
                }
            }
        }
        let mut customers = HashSet::new();
        for c in &self.customers {
            if !printable(&c.id, 64) {
                return Err(format!(
                    "[[customer]] id {:?} is not 1 to 64 printable ASCII characters",
                    c.id
                ));
            }
            if !customers.insert(c.id.as_str()) {
                return Err(format!("[[customer]] {:?} appears twice", c.id));
            }
            if c.msisdn.is_empty()
                || c.msisdn.len() > 15
                || !c.msisdn.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "[[customer]] {}: msisdn {:?} is not 1 to 15 digits",
                    c.id, c.msisdn
                ));
            }
            for m in &c.meters {
                if !meters.contains(m.as_str()) {
                    return Err(format!(
                        "[[customer]] {}: meter {m:?} is not among the file's [[meter]] tables",
                        c.id
                    ));
                }
            }
        }
        Ok(())
    }
}
