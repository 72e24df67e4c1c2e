//! A real meter on a real RS485 bus, through the same HAL and drivers the daemon uses.
//!
//! Environment (a test whose variables are not set FAILS naming them, unless `CONCENTRATOR_ALLOW_SKIP=1`:
//! then it says it did not run, and the skip is counted in `target/skipped-tests.txt`):
//! - `CONCENTRATOR_HIL_RS485`: the bus's device, e.g. `/dev/rs485-1` or `/dev/ttyUSB0`;
//! - `CONCENTRATOR_HIL_DLT645`: a DL/T 645 meter's 12-digit address on that bus;
//! - `CONCENTRATOR_HIL_MODBUS`: a Modbus meter as `SLAVE:MODEL`, e.g. `1:sdm120`;
//! - `CONCENTRATOR_HIL_LINE`: line settings when not the protocol's default (`2400 8E1` for DL/T 645,
//!   `9600 8N1` for Modbus), e.g. `9600 8N1`;
//! - `CONCENTRATOR_HIL_DIRECTION_GPIO`: the transceiver's driver-enable line (`gpiochip0:17`) for a HAT
//!   without kernel RS485 mode; USB-RS485 adapters switch by themselves.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use concentrator_hal::linux::{GpioLineSpec, KernelRs485, SerialBusConfig, SerialRs485Bus};
use concentrator_hal::{LineSettings, SystemClock};
use concentrator_plugin_host::{
    PluginLoader, PluginPolicy, Quantity, StaticDriver, Task, TrustedKeys, Value,
};
use concentrator_test_prerequisite::{skip, variable};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The value of a variable the test needs; `None` (the test does not run) only where skipping is
/// allowed, else the test fails naming the variable.
#[track_caller]
fn required(name: &str, meaning: &str) -> Option<String> {
    match variable(name, meaning) {
        Ok(value) => Some(value),
        Err(missing) => {
            assert!(skip(Some(missing)));
            None
        }
    }
}

fn open_bus(default_line: LineSettings) -> Option<SerialRs485Bus> {
    let path = required(
        "CONCENTRATOR_HIL_RS485",
        "the RS485 bus's device, e.g. /dev/ttyUSB0 (tests/hil/README.md)",
    )?;
    let settings = match var("CONCENTRATOR_HIL_LINE") {
        Some(text) => text
            .parse::<LineSettings>()
            .unwrap_or_else(|e| panic!("CONCENTRATOR_HIL_LINE={text}: {e}")),
        None => default_line,
    };
    let direction_gpio = var("CONCENTRATOR_HIL_DIRECTION_GPIO").map(|spec| {
        spec.parse::<GpioLineSpec>()
            .unwrap_or_else(|e| panic!("CONCENTRATOR_HIL_DIRECTION_GPIO={spec}: {e}"))
    });
    let config = SerialBusConfig {
        name: "hil".to_string(),
        path: PathBuf::from(&path),
        settings,
        kernel_rs485: KernelRs485::IfSupported,
        direction_gpio,
        turnaround: Duration::ZERO,
        echo: false,
    };
    Some(
        config
            .open()
            .unwrap_or_else(|e| panic!("opening {path}: {e} (is the user in dialout?)")),
    )
}

fn policy() -> PluginPolicy {
    PluginPolicy {
        max_faults: 3,
        require_root_owned: false,
        ..PluginPolicy::default()
    }
}

/// Packs a nameplate's 12 digits most significant first, as the host hands them to the driver.
fn packed(nameplate: &str) -> Vec<u8> {
    assert!(
        nameplate.len() == 12 && nameplate.bytes().all(|b| b.is_ascii_digit()),
        "CONCENTRATOR_HIL_DLT645 must be 12 digits, not {nameplate}"
    );
    nameplate
        .as_bytes()
        .chunks(2)
        .map(|pair| (pair[0] - b'0') << 4 | (pair[1] - b'0'))
        .collect()
}

#[test]
fn a_dlt645_meter_answers_with_its_energy_register() {
    let Some(address) = required(
        "CONCENTRATOR_HIL_DLT645",
        "the DL/T 645 meter's 12-digit address (tests/hil/README.md)",
    ) else {
        return;
    };
    let Some(mut bus) = open_bus(LineSettings::dlt645_default()) else {
        return;
    };
    let plugin = PluginLoader::new("/nonexistent", TrustedKeys::none(), policy())
        .register_static(StaticDriver::new(
            concentrator_driver_dlt645::plugin_declaration(),
        ))
        .unwrap();
    let mut meter = plugin.open_meter(&packed(&address), "").unwrap();
    let clock = SystemClock::new();
    let started = Instant::now();
    let readings = meter
        .run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal))
        .unwrap_or_else(|e| {
            panic!("meter {address} did not answer: {e} (wiring A/B, baud, address)")
        })
        .unwrap_or_else(|e| panic!("meter {address} refused the read: {e}"));
    println!(
        "meter {address}: {} in {} ms",
        readings[0],
        started.elapsed().as_millis()
    );
    assert_eq!(readings[0].quantity, Quantity::EnergyImportTotal);
    assert!(
        matches!(readings[0].value, Value::Decimal(_)),
        "{readings:?}"
    );
}

#[test]
fn a_modbus_meter_answers_with_its_energy_register() {
    let Some(spec) = required(
        "CONCENTRATOR_HIL_MODBUS",
        "the Modbus meter as SLAVE:MODEL, e.g. 1:sdm120 (tests/hil/README.md)",
    ) else {
        return;
    };
    let (slave, model) = spec
        .split_once(':')
        .unwrap_or_else(|| panic!("CONCENTRATOR_HIL_MODBUS={spec}: write SLAVE:MODEL"));
    let slave: u8 = slave
        .parse()
        .unwrap_or_else(|e| panic!("CONCENTRATOR_HIL_MODBUS={spec}: slave id: {e}"));
    let Some(mut bus) = open_bus(LineSettings::modbus_default()) else {
        return;
    };
    let plugin = PluginLoader::new("/nonexistent", TrustedKeys::none(), policy())
        .register_static(StaticDriver::new(
            concentrator_driver_modbus::plugin_declaration(),
        ))
        .unwrap();
    let mut meter = plugin
        .open_meter(&[slave], &format!("model = \"{model}\""))
        .unwrap();
    let clock = SystemClock::new();
    let quantity = Quantity::EnergyImportTotal;
    let readings = meter
        .run(&mut bus, &clock, Task::Read(quantity))
        .unwrap_or_else(|e| panic!("slave {slave} did not answer: {e} (wiring, baud, id)"))
        .unwrap_or_else(|e| panic!("slave {slave} refused {quantity}: {e}"));
    println!("slave {slave} ({model}): {}", readings[0]);
    assert_eq!(readings[0].quantity, quantity);
}
