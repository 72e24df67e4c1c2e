//! The `modbus` driver plugin against pymodbus: a Modbus RTU server from PyPI answering like an SDM630
//! (float32 input registers, high word first) on a pseudo-terminal, read through the plugin host's
//! bridge and the HAL's serial bus. Needs `tests/peers/setup.sh` (run by the test when missing;
//! `CONCENTRATOR_ALLOW_SKIP=1` turns a failed install into a counted skip).

use concentrator_hal::linux::{SerialBusConfig, SerialRs485Bus};
use concentrator_hal::pty::PtyPair;
use concentrator_hal::{LineSettings, SystemClock};
use concentrator_peer_tests::{python_or_skip, Peer};
use concentrator_plugin_host::{
    Decimal, MeterSession, Phase, PluginLoader, PluginPolicy, Quantity, StaticDriver, Task,
    TaskError, TrustedKeys, Unit, Value,
};

const SLAVE: u8 = 7;

/// What the server is given, by SDM630 map name, and what the driver must read back.
const GIVEN: [(&str, &str, Quantity, Decimal); 9] = [
    (
        "voltage_l1",
        "231.5",
        Quantity::Voltage(Phase::A),
        Decimal {
            mantissa: 23_150,
            exponent: -2,
            unit: Unit::Volt,
        },
    ),
    (
        "voltage_l2",
        "229.75",
        Quantity::Voltage(Phase::B),
        Decimal {
            mantissa: 22_975,
            exponent: -2,
            unit: Unit::Volt,
        },
    ),
    (
        "voltage_l3",
        "230.25",
        Quantity::Voltage(Phase::C),
        Decimal {
            mantissa: 23_025,
            exponent: -2,
            unit: Unit::Volt,
        },
    ),
    (
        "current_l1",
        "5.125",
        Quantity::Current(Phase::A),
        Decimal {
            mantissa: 5_125,
            exponent: -3,
            unit: Unit::Ampere,
        },
    ),
    (
        "active_power_l1",
        "1186.5",
        Quantity::ActivePower(Phase::A),
        Decimal {
            mantissa: 11_865,
            exponent: -1,
            unit: Unit::Watt,
        },
    ),
    (
        "active_power_total",
        "3456.5",
        Quantity::ActivePower(Phase::Total),
        Decimal {
            mantissa: 34_565,
            exponent: -1,
            unit: Unit::Watt,
        },
    ),
    (
        "frequency",
        "49.95",
        Quantity::Vendor(2),
        Decimal {
            mantissa: 4_995,
            exponent: -2,
            unit: Unit::Hertz,
        },
    ),
    // kWh with 3 decimals in the map: Wh with exponent 0.
    (
        "import_active_energy",
        "12345.67",
        Quantity::EnergyImportTotal,
        Decimal {
            mantissa: 12_345_670,
            exponent: 0,
            unit: Unit::WattHour,
        },
    ),
    (
        "export_active_energy",
        "89.125",
        Quantity::EnergyExportTotal,
        Decimal {
            mantissa: 89_125,
            exponent: 0,
            unit: Unit::WattHour,
        },
    ),
];

/// A user map with a register past the end of the server's table: the server answers exception 02.
const BEYOND: &str = r#"
model = "beyond"
function = 4
type = "f32be"

[[register]]
quantity = "voltage_l1"
address = 0x0300
unit = "V"
"#;

fn meter(slave: u8, config: &str) -> MeterSession {
    let policy = PluginPolicy {
        max_faults: 3,
        require_root_owned: false,
        ..PluginPolicy::default()
    };
    PluginLoader::new("/nonexistent", TrustedKeys::none(), policy)
        .register_static(StaticDriver::new(
            concentrator_driver_modbus::plugin_declaration(),
        ))
        .unwrap()
        .open_meter(&[slave], config)
        .unwrap()
}

fn start() -> Option<(PtyPair, Peer, SerialRs485Bus)> {
    let python = python_or_skip(&["pymodbus", "serial"])?;
    let pty = PtyPair::open().unwrap();
    let mut args = vec![pty.slave_path().display().to_string(), SLAVE.to_string()];
    args.extend(
        GIVEN
            .iter()
            .map(|(name, value, ..)| format!("{name}={value}")),
    );
    let peer = Peer::start(&python, "sdm630_server.py", &args).unwrap_or_else(|e| panic!("{e}"));
    let bus =
        SerialBusConfig::attach_pty("pymodbus", &pty, LineSettings::modbus_default()).unwrap();
    Some((pty, peer, bus))
}

#[test]
fn sdm630_values_served_by_pymodbus_read_through_the_modbus_driver() {
    let Some((_pty, peer, mut bus)) = start() else {
        return;
    };
    let clock = SystemClock::new();
    let mut meter = meter(SLAVE, "model = \"sdm630\"");
    for (name, _, quantity, expected) in GIVEN {
        let readings = meter
            .run(&mut bus, &clock, Task::Read(quantity))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", peer.log()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(readings.len(), 1, "{name}: {readings:?}");
        assert_eq!(
            (readings[0].quantity, readings[0].value),
            (quantity, Value::Decimal(expected)),
            "{name}"
        );
    }
    // A register the server was not given reads 0.
    let readings = meter
        .run(&mut bus, &clock, Task::Read(Quantity::Current(Phase::C)))
        .unwrap()
        .unwrap();
    assert_eq!(
        readings[0].value,
        Value::Decimal(Decimal::new(0, -3, Unit::Ampere))
    );
}

#[test]
fn pymodbus_exceptions_and_silence_for_another_slave() {
    let Some((_pty, _peer, mut bus)) = start() else {
        return;
    };
    let clock = SystemClock::new();
    let dir = std::env::temp_dir().join(format!("concentrator-peer-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("beyond.toml"), BEYOND).unwrap();
    let config = format!("model = \"beyond\"\nmodels_dir = \"{}\"", dir.display());
    let exception = meter(SLAVE, &config)
        .run(&mut bus, &clock, Task::Read(Quantity::Voltage(Phase::A)))
        .unwrap()
        .unwrap_err();
    assert_eq!(exception.code, 2, "{exception}");
    let _ = std::fs::remove_dir_all(&dir);
    // No device 8 on the line: the server stays silent, the host reports no reply.
    let error = meter(8, "model = \"sdm630\"")
        .run(&mut bus, &clock, Task::Read(Quantity::Voltage(Phase::A)))
        .unwrap_err();
    assert!(matches!(error, TaskError::NoReply { .. }), "{error}");
    // And the bus is clean for the next exchange.
    let readings = meter(SLAVE, "model = \"sdm630\"")
        .run(&mut bus, &clock, Task::Read(Quantity::Voltage(Phase::A)))
        .unwrap()
        .unwrap();
    assert_eq!(
        readings[0].value,
        Value::Decimal(Decimal::new(23_150, -2, Unit::Volt))
    );
}
