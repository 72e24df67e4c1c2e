//! Checks across the whole configuration that the TOML types alone cannot express.

use std::collections::HashMap;

use concentrator_hal::{LineSettings, STANDARD_BAUD_RATES};

use super::diagnostic::{closest, Diagnostic};
use super::model::{Backend, BusConfig, Config, DirectionMode, MeterConfig};

/// Drivers built into the daemon.
pub const BUILT_IN_DRIVERS: &[&str] = &["dlt645", "modbus"];

/// Modbus register maps shipped with the daemon.
pub const BUILT_IN_MODBUS_MODELS: &[&str] = &["sdm120", "sdm630", "dds238"];

/// Every mistake in `config`, in file order.
pub fn check(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    check_gateway(config, &mut out);
    super::plugins::check(config, &[BUILT_IN_DRIVERS, &["znp"]].concat(), &mut out);
    let mut names: HashMap<&str, &BusConfig> = HashMap::new();
    for bus in &config.buses {
        check_bus(bus, &mut out);
        if let Some(first) = names.insert(bus.name.get_ref(), bus) {
            out.push(
                Diagnostic::at(
                    bus.name.span(),
                    format!("a second bus is named `{}`", bus.name.get_ref()),
                )
                .help(format!(
                    "bus names must be unique; rename this one or the `{}` above",
                    first.name.get_ref()
                )),
            );
        }
    }
    let mut addresses: HashMap<(&str, String), &MeterConfig> = HashMap::new();
    for meter in config
        .meters
        .iter()
        .filter(|m| !super::zigbee::is_zigbee(m))
    {
        if [&meter.bus, &meter.address, &meter.driver]
            .iter()
            .any(|v| v.get_ref().is_empty())
        {
            continue; // reported by zigbee::normalise
        }
        let Some(bus) = names.get(meter.bus.get_ref().as_str()) else {
            let known: Vec<&str> = names.keys().copied().collect();
            let help = match closest(meter.bus.get_ref(), &known) {
                Some(near) => format!(
                    "write `bus = \"{near}\"`, or add a [[bus]] named `{}`",
                    meter.bus.get_ref()
                ),
                None if known.is_empty() => {
                    format!("add a [[bus]] table named `{}`", meter.bus.get_ref())
                }
                None => format!("use one of the buses defined: {}", quoted(&known)),
            };
            out.push(
                Diagnostic::at(
                    meter.bus.span(),
                    format!("no bus is named `{}`", meter.bus.get_ref()),
                )
                .help(help),
            );
            continue;
        };
        check_meter(config, bus, meter, &mut out);
        let key = (meter.bus.get_ref().as_str(), normalise_address(meter));
        if let Some(first) = addresses.get(&key) {
            out.push(
                Diagnostic::at(
                    meter.address.span(),
                    format!("address {} is used twice on bus `{}`", meter.address.get_ref(), meter.bus.get_ref()),
                )
                .help(format!(
                    "each meter on a bus needs its own address; the other one is the meter of dwelling `{}`; `concentrator scan --bus {}` lists the addresses present",
                    first.dwelling.get_ref(),
                    meter.bus.get_ref()
                )),
            );
        } else {
            addresses.insert(key, meter);
        }
    }
    check_meter_ids(config, &mut out);
    out.extend(super::ledger::check(config));
    out.extend(super::uplink::check(config));
    out.extend(super::modem::check(config.modem.as_ref()));
    out.extend(super::power::check(config.power.as_ref()));
    out.extend(config.check_zigbee());
    out.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    out
}

/// Meter numbers (`meter_id`, else the address) are what tokens name: valid, and unique when the
/// ledger keeps accounts by them.
fn check_meter_ids(config: &Config, out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &MeterConfig> = HashMap::new();
    for meter in &config.meters {
        if let Some(id) = &meter.meter_id {
            let b = id.get_ref().as_bytes();
            if b.is_empty() || b.len() > 32 || !b.iter().all(u8::is_ascii_graphic) {
                out.push(
                    Diagnostic::at(id.span(), format!("`{}` cannot be a meter number", id.get_ref()))
                        .help("write the utility's meter number as tokens name it: 1 to 32 letters, digits or punctuation, no spaces"),
                );
            }
        }
        if config.ledger.is_none() {
            continue;
        }
        let id = meter.ledger_id();
        if let Some(first) = seen.insert(id, meter) {
            let span = meter
                .meter_id
                .as_ref()
                .map_or(meter.address.span(), |m| m.span());
            out.push(
                Diagnostic::at(span, format!("meter number `{id}` is used twice"))
                    .help(format!(
                        "each account needs its own meter number; the other meter supplies dwelling `{}`; add `meter_id = \"...\"` with the utility's meter number",
                        first.dwelling.get_ref()
                    )),
            );
        }
    }
}

fn quoted(names: &[&str]) -> String {
    let mut names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    names.sort();
    names.join(", ")
}

fn check_gateway(config: &Config, out: &mut Vec<Diagnostic>) {
    if let Some(dir) = &config.gateway.plugin_dir {
        if config.gateway.trusted_keys.is_empty() {
            out.push(
                Diagnostic::at(dir.span(), "plugins are enabled but no vendor key is trusted, so every plugin would be refused")
                    .help("add `trusted_keys = [\"/etc/concentrator/vendors/VENDOR.pub.pem\"]` with each vendor's public key"),
            );
        }
    }
    for key in &config.gateway.trusted_keys {
        if !key.get_ref().is_absolute() {
            out.push(
                Diagnostic::at(
                    key.span(),
                    format!("`{}` is a relative path", key.get_ref().display()),
                )
                .help(
                    "write the key's absolute path, e.g. `/etc/concentrator/vendors/acme.pub.pem`",
                ),
            );
        }
    }
    let id = &config.gateway.id;
    let valid = !id.get_ref().is_empty()
        && id.get_ref().len() <= 64
        && id
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        out.push(
            Diagnostic::at(
                id.span(),
                format!("`{}` cannot be a gateway id", id.get_ref()),
            )
            .help("use 1 to 64 letters, digits, `-` or `_` (it becomes part of MQTT topics)"),
        );
    }
}

fn check_bus(bus: &BusConfig, out: &mut Vec<Diagnostic>) {
    let baud = *bus.baud.get_ref();
    if !STANDARD_BAUD_RATES.contains(&baud) {
        let near = STANDARD_BAUD_RATES
            .iter()
            .min_by_key(|b| b.abs_diff(baud))
            .copied()
            .unwrap_or(2400);
        out.push(
            Diagnostic::at(
                bus.baud.span(),
                format!("{baud} is not a baud rate a serial port can use"),
            )
            .help(format!(
                "write `baud = {near}`; DL/T 645 meters default to 2400, Modbus meters to 9600"
            )),
        );
    }
    if let Err(e) = LineSettings::with_format(2400, bus.format.get_ref()) {
        out.push(Diagnostic::at(bus.format.span(), e.to_string()).help(
            "write `format = \"8E1\"` (DL/T 645) or `format = \"8N1\"` (most Modbus meters)",
        ));
    }
    if *bus.poll_interval_s.get_ref() == 0 {
        out.push(
            Diagnostic::at(
                bus.poll_interval_s.span(),
                "a poll interval of 0 s would flood the bus",
            )
            .help("write `poll_interval_s = 60` or more"),
        );
    }
    match (bus.backend.get_ref(), &bus.path) {
        (Backend::Sim, Some(path)) => out.push(
            Diagnostic::at(path.span(), "a sim bus has no device path")
                .help("remove `path`, or set `backend = \"linux\"` to use the device"),
        ),
        (Backend::Linux | Backend::Rpi, None) => out.push(
            Diagnostic::at(bus.backend.span(), format!("bus `{}` needs a device path", bus.name.get_ref()))
                .help("add `path = \"/dev/rs485-1\"` (our udev rules create it) or a /dev/serial/by-id/... path"),
        ),
        _ => {}
    }
    if let Some(gpio) = &bus.direction_gpio {
        match bus.backend.get_ref() {
            Backend::Rpi => {
                if !gpio.get_ref().parse::<u8>().is_ok_and(|n| n <= 27) {
                    out.push(
                        Diagnostic::at(
                            gpio.span(),
                            format!("`{}` is not a BCM pin number", gpio.get_ref()),
                        )
                        .help("write the BCM number 0–27, e.g. `direction_gpio = \"17\"`"),
                    );
                }
            }
            Backend::Linux => {
                if let Err(e) = gpio
                    .get_ref()
                    .parse::<concentrator_hal::linux::GpioLineSpec>()
                {
                    out.push(Diagnostic::at(gpio.span(), e));
                }
            }
            Backend::Sim => out.push(
                Diagnostic::at(gpio.span(), "a sim bus has no direction line")
                    .help("remove `direction_gpio`"),
            ),
        }
    } else if bus.direction == DirectionMode::Gpio || *bus.backend.get_ref() == Backend::Rpi {
        out.push(
            Diagnostic::at(bus.name.span(), format!("bus `{}` drives a direction line but names none", bus.name.get_ref()))
                .help("add `direction_gpio = \"gpiochip0:17\"` (linux) or `direction_gpio = \"17\"` (rpi, BCM number)"),
        );
    }
}

fn check_meter(config: &Config, bus: &BusConfig, meter: &MeterConfig, out: &mut Vec<Diagnostic>) {
    let driver = meter.driver.get_ref().as_str();
    let address = meter.address.get_ref();
    match driver {
        "dlt645" => {
            if address.len() != 12 || !address.chars().all(|c| c.is_ascii_digit()) {
                out.push(
                    Diagnostic::at(meter.address.span(), format!("`{address}` is not a DL/T 645 address"))
                        .help("write the 12 digits printed on the meter's nameplate, e.g. `address = \"000000000001\"`"),
                );
            } else if address == "999999999999" || address == "AAAAAAAAAAAA" {
                out.push(
                    Diagnostic::at(
                        meter.address.span(),
                        "that is the broadcast address, not a meter's",
                    )
                    .help("write the meter's own 12-digit address"),
                );
            }
        }
        "modbus" => {
            if !address
                .parse::<u8>()
                .is_ok_and(|id| (1..=247).contains(&id))
            {
                out.push(
                    Diagnostic::at(
                        meter.address.span(),
                        format!("`{address}` is not a Modbus slave id"),
                    )
                    .help("write the meter's slave id, 1 to 247, e.g. `address = \"1\"`"),
                );
            }
            match &meter.model {
                None => out.push(
                    Diagnostic::at(
                        meter.driver.span(),
                        "a Modbus meter needs its model, to know its registers",
                    )
                    .help(format!(
                        "add `model = \"sdm630\"`; built-in models: {}",
                        quoted(BUILT_IN_MODBUS_MODELS)
                    )),
                ),
                Some(model)
                    if !BUILT_IN_MODBUS_MODELS.contains(&model.get_ref().as_str())
                        && config.gateway.plugin_dir.is_none() =>
                {
                    let help = match closest(model.get_ref(), BUILT_IN_MODBUS_MODELS) {
                        Some(near) => format!("write `model = \"{near}\"`"),
                        None => format!(
                            "use one of {}, or add a register map (docs/install.md)",
                            quoted(BUILT_IN_MODBUS_MODELS)
                        ),
                    };
                    out.push(
                        Diagnostic::at(
                            model.span(),
                            format!("no register map for model `{}`", model.get_ref()),
                        )
                        .help(help),
                    );
                }
                Some(_) => {}
            }
        }
        other if config.gateway.plugin_dir.is_none() => {
            let help = match closest(other, BUILT_IN_DRIVERS) {
                Some(near) => format!("write `driver = \"{near}\"`"),
                None => format!("use a built-in driver ({}), or set [gateway] plugin_dir to load `{other}` as a plugin", quoted(BUILT_IN_DRIVERS)),
            };
            out.push(
                Diagnostic::at(meter.driver.span(), format!("no driver named `{other}`"))
                    .help(help),
            );
        }
        _ => {}
    }
    for name in meter.read.iter().flatten() {
        if let Err(e) = name.get_ref().parse::<concentrator_plugin_host::Quantity>() {
            out.push(
                Diagnostic::at(name.span(), e)
                    .help("write for example `read = [\"energy-import-total\", \"voltage-a\"]`"),
            );
        }
    }
    if meter.sim.is_some() && *bus.backend.get_ref() != Backend::Sim {
        out.push(
            Diagnostic::at(
                meter.bus.span(),
                format!(
                    "[meter.sim] is set but bus `{}` is not simulated",
                    bus.name.get_ref()
                ),
            )
            .help(
                "remove the [meter.sim] table, or put the meter on a bus with `backend = \"sim\"`",
            ),
        );
    }
    if meter.dwelling.get_ref().trim().is_empty() {
        out.push(
            Diagnostic::at(meter.dwelling.span(), "the dwelling is empty")
                .help("write the flat or house the meter supplies, e.g. `dwelling = \"A-101\"`"),
        );
    }
}

/// An address in a form where `"01"` and `"1"` (Modbus) compare equal.
fn normalise_address(meter: &MeterConfig) -> String {
    let address = meter.address.get_ref();
    match meter.driver.get_ref().as_str() {
        "modbus" => address
            .parse::<u32>()
            .map_or_else(|_| address.clone(), |n| n.to_string()),
        _ => address.clone(),
    }
}
