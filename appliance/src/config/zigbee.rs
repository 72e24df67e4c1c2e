//! `[[zigbee]]`: Zigbee coordinators (a TI Z-Stack ZNP on a UART, or our emulator) and the meters behind
//! them (`[[meter]] zigbee = "zb-1"` with `ieee = "00124b0001a2b3c4"` instead of `bus` and `address`).
//!
//! A Zigbee meter is rewritten at load time so that the rest of the daemon sees it like any other: its
//! `bus` is the coordinator's name, its `address` the IEEE address (16 lowercase hex digits) and its
//! `driver` the coordinator's driver. The ledger, the uplink and the status then need no Zigbee case.

use std::collections::HashMap;
use std::path::PathBuf;

use concentrator_hal::STANDARD_BAUD_RATES;
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::{closest, Diagnostic};
use super::meter::MeterConfig;

/// The stream drivers built into the daemon.
pub const BUILT_IN_STREAM_DRIVERS: &[&str] = &["znp"];

/// How many emulated meters a sim coordinator may carry.
pub const MAX_SIM_METERS: u32 = 250;

/// Where a coordinator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZigbeeBackend {
    /// Our coordinator emulator, in the daemon, with `sim_meters` emulated meters behind it.
    Sim,
    /// A serial port (a CC2652 stick on USB, or the Pi's UART).
    Linux,
}

/// `[[zigbee]]`: one Zigbee coordinator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZigbeeConfig {
    /// The coordinator's name; meters refer to it with `zigbee = "NAME"`.
    pub name: Spanned<String>,
    /// The backend.
    pub backend: Spanned<ZigbeeBackend>,
    /// The serial device (linux backend), e.g. `/dev/serial/by-id/usb-Texas_Instruments_...`.
    pub path: Option<Spanned<PathBuf>>,
    /// Baud rate of the UART (Z-Stack's default is 115200).
    #[serde(default = "default_baud")]
    pub baud: Spanned<u32>,
    /// The stream driver that speaks to the coordinator (`znp`, or a vendor plugin's name).
    #[serde(default = "default_driver")]
    pub driver: Spanned<String>,
    /// Settings passed to the driver as they are (docs/plugins.md §4.3 lists the `znp` keys).
    pub options: Option<Spanned<toml::Table>>,
    /// Sim backend: how many emulated meters the emulator has (IEEE `00124b00000000NN`, NN from 01).
    pub sim_meters: Option<Spanned<u32>>,
    /// Sim backend: the coordinator has formed its network before (a restart, not a first start).
    #[serde(default)]
    pub sim_formed: bool,
    /// Sim backend: the emulated meters are paired already and announce themselves when the
    /// coordinator comes up; otherwise they join at the next `concentrator zigbee permit-join`.
    #[serde(default)]
    pub sim_paired: bool,
}

fn default_baud() -> Spanned<u32> {
    Spanned::new(0..0, 115_200)
}

fn default_driver() -> Spanned<String> {
    Spanned::new(0..0, "znp".to_string())
}

impl ZigbeeConfig {
    /// The driver's config: the `options` table and the line as `line`, as TOML.
    pub fn driver_config(&self) -> String {
        let mut table = self
            .options
            .as_ref()
            .map(|o| o.get_ref().clone())
            .unwrap_or_default();
        table.insert(
            "line".into(),
            toml::Value::String(format!("{} 8N1", self.baud.get_ref())),
        );
        toml::to_string(&table).unwrap_or_default()
    }
}

/// The IEEE address of the `n`th emulated meter of a sim coordinator (from 1).
pub fn sim_meter_ieee(n: u32) -> u64 {
    0x0012_4B00_0000_0000 | u64::from(n)
}

/// Normalises an IEEE address as written (`00:12:4B:...`, `0x...`) to 16 lowercase hex digits.
pub fn normalise_ieee(text: &str) -> Result<String, String> {
    match text.parse::<concentrator_plugin_host::DeviceAddress>() {
        Ok(a) if a.as_bytes().len() == 8 => Ok(a.to_string()),
        _ => Err(format!(
            "`{text}` is not an IEEE address: write 16 hex digits, most significant first (00124b0001a2b3c4)"
        )),
    }
}

fn is_set(value: &Spanned<String>) -> bool {
    !value.get_ref().is_empty()
}

/// Rewrites Zigbee meters as described in the module docs, and reports meters that are neither on a
/// bus nor behind a coordinator, or mix the two. Runs before the other checks.
pub(super) fn normalise(zigbee: &[ZigbeeConfig], meters: &mut [MeterConfig]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let drivers: HashMap<String, String> = zigbee
        .iter()
        .map(|z| (z.name.get_ref().clone(), z.driver.get_ref().clone()))
        .collect();
    for meter in meters.iter_mut() {
        let dwelling = meter.dwelling.span();
        match (&meter.zigbee, &meter.ieee) {
            (Some(zigbee), ieee) => {
                let zigbee = zigbee.clone();
                if is_set(&meter.bus) {
                    out.push(
                        Diagnostic::at(meter.bus.span(), "a meter is either on an RS485 bus or behind a Zigbee coordinator, not both")
                            .help(format!("remove `bus` (the meter is behind `{}`), or remove `zigbee` and `ieee`", zigbee.get_ref())),
                    );
                }
                if is_set(&meter.address) {
                    out.push(
                        Diagnostic::at(meter.address.span(), "a Zigbee meter is found by its IEEE address, not `address`")
                            .help("remove `address` and write `ieee = \"00124b0001a2b3c4\"` (16 hex digits from the meter's label)"),
                    );
                }
                if is_set(&meter.driver) {
                    out.push(
                        Diagnostic::at(
                            meter.driver.span(),
                            "a Zigbee meter is driven by its coordinator's driver",
                        )
                        .help(format!(
                            "remove `driver`; set `driver` on the [[zigbee]] named `{}` instead",
                            zigbee.get_ref()
                        )),
                    );
                }
                let Some(ieee) = ieee.clone() else {
                    out.push(
                        Diagnostic::at(zigbee.span(), "a Zigbee meter needs its IEEE address")
                            .help("add `ieee = \"00124b0001a2b3c4\"` (16 hex digits from the meter's label, or `concentrator zigbee devices`)"),
                    );
                    continue;
                };
                let address = match normalise_ieee(ieee.get_ref()) {
                    Ok(a) => a,
                    Err(e) => {
                        out.push(Diagnostic::at(ieee.span(), e).help(
                            "copy the address from the meter's label or from `concentrator zigbee devices`",
                        ));
                        ieee.get_ref().clone()
                    }
                };
                meter.bus = zigbee.clone();
                meter.address = Spanned::new(ieee.span(), address);
                let driver = drivers
                    .get(zigbee.get_ref())
                    .cloned()
                    .unwrap_or_else(|| "znp".to_string());
                meter.driver = Spanned::new(zigbee.span(), driver);
            }
            (None, Some(ieee)) => out.push(
                Diagnostic::at(
                    ieee.span(),
                    "`ieee` is set but the meter names no Zigbee coordinator",
                )
                .help(
                    "add `zigbee = \"zb-1\"` with the name of a [[zigbee]] table, or remove `ieee`",
                ),
            ),
            (None, None) => {
                if !is_set(&meter.bus) {
                    out.push(
                        Diagnostic::at(dwelling.clone(), format!("the meter of dwelling `{}` is on no bus and behind no coordinator", meter.dwelling.get_ref()))
                            .help("add `bus = \"rs485-1\"` and `address = ...` (RS485), or `zigbee = \"zb-1\"` and `ieee = ...` (Zigbee)"),
                    );
                } else {
                    if !is_set(&meter.address) {
                        out.push(
                            Diagnostic::at(meter.bus.span(), "an RS485 meter needs its address")
                                .help("add `address = \"000000000001\"` (DL/T 645: 12 digits) or `address = \"1\"` (Modbus slave id)"),
                        );
                    }
                    if !is_set(&meter.driver) {
                        out.push(
                            Diagnostic::at(meter.bus.span(), "an RS485 meter needs its driver")
                                .help("add `driver = \"dlt645\"` or `driver = \"modbus\"` (or a plugin's name)"),
                        );
                    }
                }
            }
        }
    }
    out
}

/// Whether `meter` is behind a Zigbee coordinator.
pub fn is_zigbee(meter: &MeterConfig) -> bool {
    meter.zigbee.is_some()
}

/// Every mistake in the `[[zigbee]]` tables and the Zigbee meters; `buses` are the bus names,
/// `plugin_dir` whether `[gateway] plugin_dir` is set.
pub(super) fn check(
    zigbee: &[ZigbeeConfig],
    meters: &[MeterConfig],
    buses: &[&str],
    plugin_dir: bool,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, &ZigbeeConfig> = HashMap::new();
    for z in zigbee {
        check_coordinator(plugin_dir, z, &mut out);
        if let Some(first) = names.insert(z.name.get_ref(), z) {
            out.push(
                Diagnostic::at(
                    z.name.span(),
                    format!(
                        "a second Zigbee coordinator is named `{}`",
                        z.name.get_ref()
                    ),
                )
                .help(format!(
                    "names must be unique; rename this one or the `{}` above",
                    first.name.get_ref()
                )),
            );
        }
        if buses.contains(&z.name.get_ref().as_str()) {
            out.push(
                Diagnostic::at(z.name.span(), format!("`{}` is the name of a bus already", z.name.get_ref()))
                    .help("a coordinator and a bus need different names (meters refer to either by name); write e.g. `name = \"zb-1\"`"),
            );
        }
    }
    let mut seen: HashMap<(&str, &str), &MeterConfig> = HashMap::new();
    for meter in meters.iter().filter(|m| is_zigbee(m)) {
        let Some(zigbee) = &meter.zigbee else {
            continue;
        };
        let Some(coordinator) = names.get(zigbee.get_ref().as_str()) else {
            let known: Vec<&str> = names.keys().copied().collect();
            let help = match closest(zigbee.get_ref(), &known) {
                Some(near) => format!("write `zigbee = \"{near}\"`, or add a [[zigbee]] named `{}`", zigbee.get_ref()),
                None if known.is_empty() => format!(
                    "add a [[zigbee]] table named `{}` (`backend = \"linux\"` with the stick's `path`)",
                    zigbee.get_ref()
                ),
                None => format!("use one of the coordinators defined: {}", known.join(", ")),
            };
            out.push(
                Diagnostic::at(
                    zigbee.span(),
                    format!("no Zigbee coordinator is named `{}`", zigbee.get_ref()),
                )
                .help(help),
            );
            continue;
        };
        let key = (zigbee.get_ref().as_str(), meter.address.get_ref().as_str());
        if let Some(first) = seen.insert(key, meter) {
            out.push(
                Diagnostic::at(
                    meter.address.span(),
                    format!(
                        "IEEE address {} is used twice behind `{}`",
                        meter.address.get_ref(),
                        zigbee.get_ref()
                    ),
                )
                .help(format!(
                    "each meter has its own address; the other one supplies dwelling `{}`",
                    first.dwelling.get_ref()
                )),
            );
        }
        if *coordinator.backend.get_ref() == ZigbeeBackend::Sim {
            let count = coordinator.sim_meters.as_ref().map_or(0, |n| *n.get_ref());
            let emulated = (1..=count.min(MAX_SIM_METERS))
                .any(|n| format!("{:016x}", sim_meter_ieee(n)) == *meter.address.get_ref());
            if !emulated {
                let help = if count == 0 {
                    format!(
                        "add `sim_meters = 1` to the [[zigbee]] named `{}`",
                        zigbee.get_ref()
                    )
                } else {
                    format!(
                        "the emulated meters are {:016x} to {:016x}",
                        sim_meter_ieee(1),
                        sim_meter_ieee(count.min(MAX_SIM_METERS))
                    )
                };
                out.push(
                    Diagnostic::at(
                        meter.address.span(),
                        format!(
                            "coordinator `{}` emulates no meter {}",
                            zigbee.get_ref(),
                            meter.address.get_ref()
                        ),
                    )
                    .help(help),
                );
            }
        }
        if meter.sim.is_some() && *coordinator.backend.get_ref() != ZigbeeBackend::Sim {
            out.push(
                Diagnostic::at(
                    zigbee.span(),
                    format!(
                        "[meter.sim] is set but coordinator `{}` is not emulated",
                        zigbee.get_ref()
                    ),
                )
                .help(
                    "remove the [meter.sim] table, or use a coordinator with `backend = \"sim\"`",
                ),
            );
        }
        if let Some(read) = meter.read.as_ref().and_then(|r| r.first()) {
            out.push(
                Diagnostic::at(read.span(), "a Zigbee meter reports by itself; `read` is for RS485 meters")
                    .help("remove `read`; set the reporting intervals with `report_min_s`/`report_max_s` in the coordinator's `options`"),
            );
        }
        if meter.dwelling.get_ref().trim().is_empty() {
            out.push(
                Diagnostic::at(meter.dwelling.span(), "the dwelling is empty").help(
                    "write the flat or house the meter supplies, e.g. `dwelling = \"A-101\"`",
                ),
            );
        }
    }
    out
}

fn check_coordinator(plugin_dir: bool, z: &ZigbeeConfig, out: &mut Vec<Diagnostic>) {
    let name = z.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        out.push(
            Diagnostic::at(
                z.name.span(),
                format!("`{name}` cannot be a coordinator's name"),
            )
            .help("use letters, digits, `-` or `_`, e.g. `name = \"zb-1\"`"),
        );
    }
    let baud = *z.baud.get_ref();
    if !STANDARD_BAUD_RATES.contains(&baud) {
        out.push(
            Diagnostic::at(
                z.baud.span(),
                format!("{baud} is not a baud rate a serial port can use"),
            )
            .help("write `baud = 115200` (Z-Stack's default)"),
        );
    }
    match (z.backend.get_ref(), &z.path) {
        (ZigbeeBackend::Sim, Some(path)) => out.push(
            Diagnostic::at(path.span(), "a sim coordinator has no device path")
                .help("remove `path`, or set `backend = \"linux\"` to use the device"),
        ),
        (ZigbeeBackend::Linux, None) => out.push(
            Diagnostic::at(z.backend.span(), format!("coordinator `{name}` needs a device path"))
                .help("add `path = \"/dev/serial/by-id/usb-Texas_Instruments_...\"` (or `/dev/ttyAMA0` for a module on the Pi's UART)"),
        ),
        _ => {}
    }
    if *z.backend.get_ref() != ZigbeeBackend::Sim {
        let sim_key = if z.sim_meters.is_some() {
            Some("sim_meters")
        } else if z.sim_formed {
            Some("sim_formed")
        } else if z.sim_paired {
            Some("sim_paired")
        } else {
            None
        };
        if let Some(key) = sim_key {
            out.push(
                Diagnostic::at(
                    z.backend.span(),
                    format!("`{key}` is set but coordinator `{name}` is not emulated"),
                )
                .help(format!("remove `{key}`, or set `backend = \"sim\"`")),
            );
        }
    }
    if let Some(n) = &z.sim_meters {
        if *n.get_ref() > MAX_SIM_METERS {
            out.push(
                Diagnostic::at(
                    n.span(),
                    format!(
                        "{} emulated meters is more than a coordinator carries here",
                        n.get_ref()
                    ),
                )
                .help(format!("write at most `sim_meters = {MAX_SIM_METERS}`")),
            );
        }
    }
    let driver = z.driver.get_ref();
    if let Some(checked) = crate::drivers::check_built_in_stream_config(driver, &z.driver_config())
    {
        if let Err(e) = checked {
            let span = z.options.as_ref().map_or(z.name.span(), |o| o.span());
            out.push(
                Diagnostic::at(span, e).help("fix the key in `options` (docs/plugins.md §4.3)"),
            );
        }
    } else if !plugin_dir {
        let help = match closest(driver, BUILT_IN_STREAM_DRIVERS) {
            Some(near) => format!("write `driver = \"{near}\"`"),
            None => format!("use the built-in `znp`, or set [gateway] plugin_dir to load `{driver}` as a plugin"),
        };
        out.push(
            Diagnostic::at(
                z.driver.span(),
                format!("no Zigbee driver named `{driver}`"),
            )
            .help(help),
        );
    }
}
