//! The configuration's tables. Every table refuses unknown keys, and every value that a later check
//! may complain about keeps its position (`Spanned`).

use std::path::PathBuf;

use concentrator_hal::{HalError, LineSettings};
use serde::Deserialize;
use toml::Spanned;

pub use super::meter::{MeterConfig, SimMeterConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This gateway.
    pub gateway: GatewayConfig,
    /// RS485 buses, `[[bus]]` tables.
    #[serde(default, rename = "bus")]
    pub buses: Vec<BusConfig>,
    /// Meters, `[[meter]]` tables.
    #[serde(default, rename = "meter")]
    pub meters: Vec<MeterConfig>,
    /// Zigbee coordinators, `[[zigbee]]` tables.
    #[serde(default)]
    pub zigbee: Vec<super::zigbee::ZigbeeConfig>,
    /// The link to the head-end; absent: the gateway runs offline (credit is still enforced locally).
    pub uplink: Option<UplinkConfig>,
    /// Prepayment; absent: the daemon only meters (reads and logs), no credit is kept.
    pub ledger: Option<LedgerSection>,
    /// The 3G modem the uplink goes through, supervised by the daemon; absent: not the daemon's to watch.
    pub modem: Option<Spanned<super::modem::ModemSection>>,
    /// The power-fail input (UPS HAT, supercapacitor): the last gasp; absent: none.
    pub power: Option<Spanned<super::power::PowerSection>>,
    /// Signed A/B updates: where a trial boot shows and where its verdict goes (defaults: the image's).
    #[serde(default)]
    pub update: super::update::UpdateSection,
    /// Driver plugins' isolation and downgrade settings, `[[plugin]]` tables.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<super::plugins::PluginEntry>,
    /// The installer web UI (docs/install.md, *Commissioning with the web UI*); absent: no UI.
    pub web: Option<super::web::WebSection>,
    /// The meters' time authority (docs/install.md, *Meter clocks*); absent: its defaults.
    pub time: Option<super::time::TimeSection>,
    /// The block balance of feeder meters against their dwellings (docs/install.md, *Block balance*);
    /// absent: its defaults, used when a meter has `role = "feeder"`.
    pub balance: Option<super::balance::BalanceSection>,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Normal operation (the default).
    #[default]
    Info,
    /// Every exchange.
    Debug,
    /// Every byte.
    Trace,
}

impl Config {
    /// Rewrites the Zigbee meters (`config::zigbee` holds the rules and reads only its tables).
    pub(super) fn normalise_zigbee(&mut self) -> Vec<super::diagnostic::Diagnostic> {
        super::zigbee::normalise(&self.zigbee, &mut self.meters)
    }

    /// The mistakes in the `[[zigbee]]` tables and the Zigbee meters.
    pub(super) fn check_zigbee(&self) -> Vec<super::diagnostic::Diagnostic> {
        let buses: Vec<&str> = self
            .buses
            .iter()
            .map(|b| b.name.get_ref().as_str())
            .collect();
        super::zigbee::check(
            &self.zigbee,
            &self.meters,
            &buses,
            self.gateway.plugin_dir.is_some(),
        )
    }
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `[gateway]`: who this gateway is and where it keeps its state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The gateway's id at the head-end (letters, digits, `-`, `_`; it appears in MQTT topics).
    pub id: Spanned<String>,
    /// The directory of the local store (credit ledger, outbox, device table).
    pub store: PathBuf,
    /// Where driver plugins are loaded from (root-owned); absent: only the built-in drivers.
    pub plugin_dir: Option<Spanned<PathBuf>>,
    /// Vendors' public keys (PEM, Ed25519 or ECDSA P-256); a plugin loads only with a signature by one.
    #[serde(default)]
    pub trusted_keys: Vec<Spanned<PathBuf>>,
    /// Panics or broken rules after which a plugin is quarantined (its meters reported as failed).
    #[serde(default = "default_max_faults")]
    pub plugin_max_faults: u32,
    /// Refuse plugin files and directories not owned by root or writable by others (keep this on in
    /// production; tests running as an ordinary user turn it off).
    #[serde(default = "default_true")]
    pub plugin_owner_check: bool,
    /// Where the daemon writes its status (buses, meters, statistics) for `concentrator status`;
    /// default: `status.json` in the store directory.
    pub status_file: Option<PathBuf>,
    /// Log verbosity.
    #[serde(default)]
    pub log_level: LogLevel,
}

/// Which backend a bus uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A simulated bus with emulated meters (no hardware).
    Sim,
    /// A serial port on any Linux machine (USB-RS485 adapter, UART).
    Linux,
    /// The Raspberry Pi's UART with a GPIO direction line, through rppal.
    Rpi,
}

/// Kernel RS485 mode setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionMode {
    /// The kernel's RS485 mode when the UART has it, else `direction_gpio`, else the adapter's own.
    #[default]
    Auto,
    /// Require the kernel's RS485 mode.
    Kernel,
    /// Drive `direction_gpio` (required then).
    Gpio,
    /// The adapter switches by itself (USB-RS485 adapters).
    Adapter,
}

/// `[[bus]]`: one RS485 bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// The bus's name; meters refer to it.
    pub name: Spanned<String>,
    /// The backend.
    pub backend: Spanned<Backend>,
    /// The device path (linux and rpi backends), e.g. `/dev/rs485-1` from our udev rules.
    pub path: Option<Spanned<PathBuf>>,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: Spanned<u32>,
    /// Data bits, parity and stop bits, like `8E1`.
    #[serde(default = "default_format")]
    pub format: Spanned<String>,
    /// How the transceiver's direction is switched (linux and rpi backends).
    #[serde(default)]
    pub direction: DirectionMode,
    /// The direction GPIO line: `gpiochip0:17` (linux) or a BCM number like `17` (rpi).
    pub direction_gpio: Option<Spanned<String>>,
    /// Driver-disable delay after a frame, in milliseconds.
    #[serde(default)]
    pub turnaround_ms: u32,
    /// The transceiver echoes what we send.
    #[serde(default)]
    pub echo: bool,
    /// How often each meter on the bus is read, in seconds.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_s: Spanned<u32>,
}

impl BusConfig {
    /// The line settings it names (validated configs always have usable ones).
    pub fn line_settings(&self) -> Result<LineSettings, HalError> {
        LineSettings::with_format(*self.baud.get_ref(), self.format.get_ref()).map_err(|e| {
            HalError::new(
                concentrator_hal::ErrorKind::InvalidSettings,
                self.name.get_ref().clone(),
                e.to_string(),
            )
        })
    }
}

fn default_baud() -> Spanned<u32> {
    Spanned::new(0..0, 2400)
}

fn default_format() -> Spanned<String> {
    Spanned::new(0..0, "8E1".to_string())
}

fn default_poll_interval() -> Spanned<u32> {
    Spanned::new(0..0, 60)
}

fn default_max_faults() -> u32 {
    3
}

fn default_true() -> bool {
    true
}

/// `[uplink]`: MQTT to the head-end (docs/uplink.md, *In the daemon*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The broker, `mqtts://HOST:8883` (TLS; the port defaults to 8883). `mqtt://HOST:PORT` (no TLS) is
    /// accepted only for a loopback host (`127.0.0.1`, `::1`, `localhost`), for tests on one machine.
    pub broker: Spanned<String>,
    /// The utility CA certificate(s) (PEM) that the broker's certificate must chain to (`mqtts://`).
    pub ca: Option<Spanned<PathBuf>>,
    /// This gateway's client certificate (PEM, CN = `[gateway] id`), then any intermediates (`mqtts://`).
    pub cert: Option<Spanned<PathBuf>>,
    /// This gateway's private key (PEM: PKCS#8, PKCS#1 or SEC1) (`mqtts://`).
    pub key: Option<Spanned<PathBuf>>,
    /// The provisioned security contexts (TOML): the gateway's and each meter's TID, CK and IK, until
    /// the gateway runs AKA with the head-end (docs/install.md, *Uplink keys*). Either this or `aka`.
    pub keys: Option<Spanned<PathBuf>>,
    /// The subscriber credentials (TOML) the gateway runs AKA with, for itself and its meters
    /// (docs/install.md, *AKA credentials*). Either this or `keys`.
    pub aka: Option<Spanned<PathBuf>>,
    /// Largest outbox, in MiB, before routine readings are dropped (never receipts or money events).
    #[serde(default = "default_outbox")]
    pub outbox_mib: Spanned<u32>,
    /// With `[ledger]`: how often each meter's account summary (balance, supply, last token) is sent
    /// while its balance changes, seconds; a cut, a reconnection or a top-up is sent at once.
    #[serde(default = "default_account_every")]
    pub account_every_s: Spanned<u64>,
}

fn default_outbox() -> Spanned<u32> {
    Spanned::new(0..0, 64)
}

fn default_account_every() -> Spanned<u64> {
    Spanned::new(0..0, 900)
}

/// `[ledger]`: prepayment. The daemon keeps a credit account per meter, charges the consumption read
/// from each meter's register, cuts and reconnects relays, and applies credit tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// The ledger's own TOML file: currency, tariff, standing charge, emergency and friendly credit,
    /// debt recovery, relay policy, register plausibility (the `LedgerConfig` of concentrator-ledger;
    /// `gateway_id` may be left out: `[gateway] id` is used).
    pub config: Spanned<PathBuf>,
    /// PEM file with the utility CA certificate(s) that head-end certificates (token signers) chain to.
    pub utility_ca: Spanned<PathBuf>,
    /// PEM file with this gateway's private key, which signs top-up receipts.
    pub gateway_key: Spanned<PathBuf>,
    /// PEM file with this gateway's certificate first, then any intermediates (not the CA).
    pub gateway_cert_chain: Spanned<PathBuf>,
    /// How often each meter's register is committed as a charge checkpoint, in seconds (default 3600).
    /// Charges derive from the meter's own cumulative register, so any interval charges the same energy;
    /// a longer one writes less (store growth). A meter whose balance is below the highest low-credit
    /// level (and that could be cut) is charged at every poll instead, so cut-offs are not late.
    #[serde(default = "default_checkpoint")]
    pub checkpoint_s: Spanned<u32>,
    /// A directory the daemon watches for credit tokens (`*.token`, raw or hex): each is applied, and
    /// only after the store has flushed it, its signed receipt is written to `done/NAME.receipt` and the
    /// token moved to `done/`; refused tokens go to `failed/` with the reason. Absent: no local inbox.
    pub token_inbox: Option<Spanned<PathBuf>>,
    /// Where a meter's account comes from when the store has none (a lost or new store, a meter moved
    /// here): `"headend"` asks the head-end for its signed account statement and neither charges the
    /// meter nor accepts tokens for it until then; `"none"` opens it at `opening_balance_minor` at the
    /// first reading. Default: `"headend"` with `[uplink]`, else `"none"`.
    pub restore: Option<Spanned<String>>,
    /// Days of the audit log kept in the store (default 30; 0 keeps only what the head-end has not yet
    /// confirmed). Older entries below an anchor the head-end confirmed it recorded (0x8D) are archived
    /// out of the store (docs/ledger.md, *Archiving the audit log*), so the store stops growing.
    #[serde(default = "default_audit_online_days")]
    pub audit_online_days: u32,
    /// Where archived audit entries are written, one file per archiving (default
    /// `audit-archive/` in `[gateway] store`).
    pub audit_archive_dir: Option<Spanned<PathBuf>>,
    /// The archive directory's budget in MiB: its oldest files are deleted beyond it (default 64; 0
    /// writes no archive files: the head-end's anchor is then the archived entries' only proof).
    #[serde(default = "default_audit_archive_mib")]
    pub audit_archive_mib: u32,
}

fn default_audit_online_days() -> u32 {
    30
}

fn default_audit_archive_mib() -> u32 {
    64
}

fn default_checkpoint() -> Spanned<u32> {
    Spanned::new(0..0, 3600)
}
