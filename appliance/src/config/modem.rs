//! The `[modem]` table: the 3G modem that carries the uplink, supervised by the daemon (docs/uplink.md,
//! *The modem in the daemon*). Every mistake is reported at the key that names it; the SIM PIN is read
//! from `pin_file` at validate time and never written in the configuration.

use std::path::PathBuf;
use std::time::Duration;

use concentrator_hal::linux::GpioLineSpec;
use concentrator_uplink::modem::sim::{Cure, ModemFault};
use concentrator_uplink::modem::ModemConfig;
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Diagnostic;

/// Where the modem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModemBackend {
    /// A real modem's AT port (`port`).
    #[default]
    Linux,
    /// A simulated modem in the daemon's process, for demos and tests.
    Sim,
}

/// `[modem]`: the modem and how it is supervised.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemSection {
    /// `linux` (default: the AT port at `port`) or `sim`.
    #[serde(default = "default_backend")]
    pub backend: Spanned<ModemBackend>,
    /// The modem's AT port, e.g. `/dev/modem-at` from our udev rules (linux backend).
    pub port: Option<Spanned<PathBuf>>,
    /// The AT port's speed.
    #[serde(default = "default_baud")]
    pub baud: Spanned<u32>,
    /// The operator's APN.
    pub apn: Option<Spanned<String>>,
    /// A file holding the SIM PIN (4 to 8 digits); absent: the SIM has no PIN.
    pub pin_file: Option<Spanned<PathBuf>>,
    /// The power-key line, `gpiochip0:23`; with the sim backend, a simulated line the sim modem watches.
    pub power_key_gpio: Option<Spanned<String>>,
    /// The modem's PPP (data) port: pppd keeps the data link up on it; absent: the data link is not
    /// the daemon's to manage.
    pub ppp_port: Option<Spanned<PathBuf>>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub check_interval_s: Spanned<u32>,
    /// Timeout of ordinary AT commands, ms.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: Spanned<u32>,
    /// Timeout of a network search (`AT+COPS=0`), seconds.
    #[serde(default = "default_register_timeout")]
    pub register_timeout_s: Spanned<u32>,
    /// How long the modem takes to boot after a reset or power cycle, seconds.
    #[serde(default = "default_boot_time")]
    pub boot_time_s: Spanned<u32>,
    /// Failed checks at each recovery stage before the next.
    #[serde(default = "default_failures")]
    pub failures_per_stage: Spanned<u32>,
    /// With the sim backend: start the simulated modem with this fault.
    pub sim_fault: Option<Spanned<String>>,
    /// The head-end's SMS number (`+4930...`): urgent events go there by SMS while the data link is
    /// down; absent: no event goes by SMS.
    pub sms_number: Option<Spanned<String>>,
    /// How long the uplink must have been disconnected before urgent events go by SMS, seconds.
    #[serde(default = "default_sms_after")]
    pub sms_after_s: Spanned<u32>,
    /// SMS the gateway may send per calendar month (events and BAL answers).
    #[serde(default = "default_sms_per_month")]
    pub sms_per_month: Spanned<u32>,
    /// Mobile data the uplink may use per calendar month, MiB; absent: no limit.
    pub data_mib_per_month: Option<Spanned<u32>>,
    /// A TOML file of `"<dwelling>" = "<scrypt hash of its PIN>"` lines: tenants of these dwellings can
    /// text `BAL <dwelling> <PIN>` to the gateway's SIM; absent: BAL is not answered.
    pub bal_pins_file: Option<Spanned<PathBuf>>,
}

fn default_backend() -> Spanned<ModemBackend> {
    Spanned::new(0..0, ModemBackend::Linux)
}
fn default_baud() -> Spanned<u32> {
    Spanned::new(0..0, 115_200)
}
fn default_interval() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}
fn default_command_timeout() -> Spanned<u32> {
    Spanned::new(0..0, 2000)
}
fn default_register_timeout() -> Spanned<u32> {
    Spanned::new(0..0, 180)
}
fn default_boot_time() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn default_sms_after() -> Spanned<u32> {
    Spanned::new(0..0, 300)
}
fn default_sms_per_month() -> Spanned<u32> {
    Spanned::new(0..0, 100)
}
fn default_failures() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}

/// The simulated modem's faults by name, and what cures each.
pub const SIM_FAULTS: &[(&str, Cure)] = &[
    ("no-sim", Cure::Never),
    ("pin-required", Cure::Never),
    ("not-registered", Cure::Reregister),
    ("denied", Cure::Never),
    ("weak-signal", Cure::Never),
    ("silent", Cure::Never),
    ("garbage", Cure::PowerCycle),
];

/// The PIN the simulated modem's `pin-required` fault wants.
pub const SIM_PIN: &str = "1234";

fn sim_fault(name: &str) -> Option<(ModemFault, Cure)> {
    let (_, cure) = SIM_FAULTS.iter().find(|(n, _)| *n == name)?;
    let fault = match name {
        "no-sim" => ModemFault::NoSim,
        "pin-required" => ModemFault::PinRequired(SIM_PIN.into()),
        "not-registered" => ModemFault::NotRegistered,
        "denied" => ModemFault::Denied,
        "weak-signal" => ModemFault::WeakSignal,
        "silent" => ModemFault::Silent,
        _ => ModemFault::Garbage,
    };
    Some((fault, *cure))
}

/// Where the supervisor talks to the modem.
#[derive(Debug, Clone)]
pub enum ModemDevice {
    /// A real AT port.
    Port {
        /// Its path.
        path: PathBuf,
        /// Its speed.
        baud: u32,
    },
    /// The simulated modem, started with an optional fault.
    Sim {
        /// The fault and its cure.
        fault: Option<(ModemFault, Cure)>,
    },
}

/// Everything the daemon needs to supervise the modem, loaded and checked.
#[derive(Debug, Clone)]
pub struct ModemSetup {
    /// The AT port.
    pub device: ModemDevice,
    /// The supervisor's settings (APN, PIN, timeouts).
    pub supervisor: ModemConfig,
    /// The power-key line (a simulated one with the sim backend).
    pub power_key: Option<GpioLineSpec>,
    /// The PPP port, when pppd keeps the data link up.
    pub ppp_port: Option<String>,
    /// Time between checks.
    pub check_interval: Duration,
    /// The SMS path.
    pub sms: SmsConfig,
}

/// The SMS path's settings (docs/install.md, *The SMS path*).
#[derive(Clone, Default)]
pub struct SmsConfig {
    /// The head-end's number for urgent events; `None`: no event goes by SMS.
    pub number: Option<String>,
    /// How long the uplink must be down before events go by SMS.
    pub after: Duration,
    /// SMS per calendar month.
    pub per_month: u32,
    /// Data bytes per calendar month; `None`: no limit.
    pub data_bytes_per_month: Option<u64>,
    /// The scrypt hash of each dwelling's BAL PIN.
    pub pins: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("number", &self.number)
            .field("after", &self.after)
            .field("per_month", &self.per_month)
            .field("data_bytes_per_month", &self.data_bytes_per_month)
            .field("pins", &self.pins.len())
            .finish()
    }
}

/// The `[modem]` table cannot be used (its files changed after validation).
#[derive(Debug, thiserror::Error)]
#[error("the [modem] table cannot be used: {}; fix it and run `concentratord validate`", .problems.join("; "))]
pub struct ModemSetupError {
    /// Each problem, with the fix.
    pub problems: Vec<String>,
}

impl ModemSetup {
    /// Loads the `[modem]` table of a (validated) configuration; `Ok(None)` without one.
    pub fn load(
        section: Option<&Spanned<ModemSection>>,
    ) -> Result<Option<ModemSetup>, ModemSetupError> {
        let Some(section) = section else {
            return Ok(None);
        };
        load_section(section)
            .map(Some)
            .map_err(|d| ModemSetupError {
                problems: d.iter().map(Diagnostic::summary).collect(),
            })
    }
}

/// The diagnostics of the `[modem]` table (empty when it is usable or absent).
pub(super) fn check(section: Option<&Spanned<ModemSection>>) -> Vec<Diagnostic> {
    match section {
        Some(section) => load_section(section).err().unwrap_or_default(),
        None => Vec::new(),
    }
}

fn positive(v: &Spanned<u32>, key: &str, fix: &str, out: &mut Vec<Diagnostic>) {
    if *v.get_ref() == 0 {
        out.push(Diagnostic::at(v.span(), format!("`{key}` cannot be 0")).help(fix.to_string()));
    }
}

fn read_pin(file: &Spanned<PathBuf>) -> Result<String, Diagnostic> {
    let path = file.get_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::at(file.span(), format!("cannot read the SIM PIN file {}: {e}", path.display()))
            .help("write the path of a file holding the SIM's PIN (owned by the daemon's user, `chmod 600`), or remove `pin_file` if the SIM has no PIN")
    })?;
    let pin = text.trim();
    if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Diagnostic::at(
            file.span(),
            format!("{} does not hold a SIM PIN", path.display()),
        )
        .help("the file must hold the PIN alone: 4 to 8 digits"));
    }
    Ok(pin.to_string())
}

fn read_pins(
    file: &Spanned<PathBuf>,
) -> Result<std::collections::BTreeMap<String, String>, Diagnostic> {
    let path = file.get_ref();
    let fix = "write one line per dwelling, `\"A-101\" = \"scrypt$...\"`, the hash from `concentrator web hash-pin` (the file owned by the daemon's user, `chmod 600`)";
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::at(
            file.span(),
            format!("cannot read the BAL PIN file {}: {e}", path.display()),
        )
        .help(fix)
    })?;
    let pins: std::collections::BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
        Diagnostic::at(
            file.span(),
            format!("{} is not a BAL PIN file: {}", path.display(), e.message()),
        )
        .help(fix)
    })?;
    for (dwelling, hash) in &pins {
        // The form only (scrypt per dwelling here would make validation slow).
        let fields: Vec<&str> = hash.split('$').collect();
        let looks = fields.len() == 6
            && fields[0] == "scrypt"
            && fields[4..]
                .iter()
                .all(|f| !f.is_empty() && hex::decode(f).is_ok());
        if !looks {
            return Err(Diagnostic::at(
                file.span(),
                format!(
                    "{}: the PIN of dwelling {dwelling} is not a PIN hash (never the PIN itself)",
                    path.display()
                ),
            )
            .help(fix));
        }
    }
    Ok(pins)
}

fn load_section(table: &Spanned<ModemSection>) -> Result<ModemSetup, Vec<Diagnostic>> {
    let s = table.get_ref();
    let mut out = Vec::new();
    let sim = *s.backend.get_ref() == ModemBackend::Sim;
    let device = match (sim, &s.port) {
        (false, Some(port)) => Some(ModemDevice::Port {
            path: port.get_ref().clone(),
            baud: *s.baud.get_ref(),
        }),
        (false, None) => {
            out.push(Diagnostic::at(table.span(), "the [modem] table names no AT port")
                .help("add `port = \"/dev/modem-at\"` (the modem's AT port from our udev rules), or `backend = \"sim\"` for a simulated modem"));
            None
        }
        (true, Some(port)) => {
            out.push(
                Diagnostic::at(port.span(), "a simulated modem has no port")
                    .help("remove `port`, or remove `backend = \"sim\"` to use the real modem"),
            );
            None
        }
        (true, None) => {
            let fault = match &s.sim_fault {
                None => Some(None),
                Some(name) => match sim_fault(name.get_ref()) {
                    Some(f) => Some(Some(f)),
                    None => {
                        let names: Vec<&str> = SIM_FAULTS.iter().map(|(n, _)| *n).collect();
                        out.push(
                            Diagnostic::at(
                                name.span(),
                                format!("`{}` is not a simulated modem fault", name.get_ref()),
                            )
                            .help(format!("write one of {}", names.join(", "))),
                        );
                        None
                    }
                },
            };
            fault.map(|fault| ModemDevice::Sim { fault })
        }
    };
    if let (false, Some(name)) = (sim, &s.sim_fault) {
        out.push(
            Diagnostic::at(name.span(), "`sim_fault` is only for the simulated modem")
                .help("remove `sim_fault`, or add `backend = \"sim\"`"),
        );
    }
    if !sim && !concentrator_hal::STANDARD_BAUD_RATES.contains(s.baud.get_ref()) {
        out.push(
            Diagnostic::at(
                s.baud.span(),
                format!("{} is not a standard baud rate", s.baud.get_ref()),
            )
            .help(
                "write `baud = 115200` (USB modems ignore the rate; UART modules document theirs)",
            ),
        );
    }
    let apn = match &s.apn {
        Some(apn) => match concentrator_uplink::link::chat_script(apn.get_ref()) {
            Ok(_) => Some(apn.get_ref().clone()),
            Err(e) => {
                out.push(Diagnostic::at(apn.span(), e.to_string())
                    .help("write the APN the operator gives for the SIM's data plan, e.g. `apn = \"internet\"`"));
                None
            }
        },
        None => {
            out.push(
                Diagnostic::at(table.span(), "the [modem] table has no `apn`").help(
                    "add `apn = \"...\"`, the APN the operator gives for the SIM's data plan",
                ),
            );
            None
        }
    };
    let pin = s
        .pin_file
        .as_ref()
        .and_then(|f| read_pin(f).map_err(|d| out.push(d)).ok());
    let power_key = s.power_key_gpio.as_ref().and_then(|g| {
        g.get_ref()
            .parse::<GpioLineSpec>()
            .map_err(|e| {
                out.push(Diagnostic::at(g.span(), e).help(
                    "write the modem's power-key line as chip and offset, e.g. `power_key_gpio = \"gpiochip0:23\"`",
                ))
            })
            .ok()
    });
    if let (true, Some(p)) = (sim, &s.ppp_port) {
        out.push(
            Diagnostic::at(p.span(), "a simulated modem has no PPP port").help("remove `ppp_port`"),
        );
    }
    positive(
        &s.check_interval_s,
        "check_interval_s",
        "write `check_interval_s = 30` (the default)",
        &mut out,
    );
    positive(
        &s.command_timeout_ms,
        "command_timeout_ms",
        "write `command_timeout_ms = 2000` (the default)",
        &mut out,
    );
    positive(
        &s.register_timeout_s,
        "register_timeout_s",
        "write `register_timeout_s = 180` (the default: a network search takes long)",
        &mut out,
    );
    positive(
        &s.failures_per_stage,
        "failures_per_stage",
        "write `failures_per_stage = 3` (the default)",
        &mut out,
    );
    if let Some(n) = &s.sms_number {
        let digits = n.get_ref().strip_prefix('+').unwrap_or(n.get_ref());
        if !(3..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            out.push(
                Diagnostic::at(n.span(), format!("`{}` is not a phone number", n.get_ref()))
                    .help("write the head-end's SMS number in international form, e.g. `sms_number = \"+4930123456\"`"),
            );
        }
    }
    positive(
        &s.sms_after_s,
        "sms_after_s",
        "write `sms_after_s = 300` (the default: five minutes without the data link)",
        &mut out,
    );
    if let Some(d) = &s.data_mib_per_month {
        positive(
            d,
            "data_mib_per_month",
            "write the SIM plan's monthly data in MiB, or remove `data_mib_per_month` for no limit",
            &mut out,
        );
    }
    let pins = match &s.bal_pins_file {
        Some(f) => read_pins(f).map_err(|d| out.push(d)).unwrap_or_default(),
        None => Default::default(),
    };
    let sms = SmsConfig {
        number: s.sms_number.as_ref().map(|n| n.get_ref().clone()),
        after: Duration::from_secs(u64::from(*s.sms_after_s.get_ref())),
        per_month: *s.sms_per_month.get_ref(),
        data_bytes_per_month: s
            .data_mib_per_month
            .as_ref()
            .map(|d| u64::from(*d.get_ref()) * 1024 * 1024),
        pins,
    };
    match (device, apn) {
        (Some(device), Some(apn)) if out.is_empty() => Ok(ModemSetup {
            sms,
            device,
            supervisor: ModemConfig {
                pin,
                apn,
                command_timeout: Duration::from_millis(u64::from(*s.command_timeout_ms.get_ref())),
                register_timeout: Duration::from_secs(u64::from(*s.register_timeout_s.get_ref())),
                boot_time: Duration::from_secs(u64::from(*s.boot_time_s.get_ref())),
                failures_per_stage: *s.failures_per_stage.get_ref(),
                ..ModemConfig::default()
            },
            power_key,
            ppp_port: s
                .ppp_port
                .as_ref()
                .map(|p| p.get_ref().display().to_string()),
            check_interval: Duration::from_secs(u64::from(*s.check_interval_s.get_ref())),
        }),
        _ => Err(out),
    }
}
