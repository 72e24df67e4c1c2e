//! The `dlt645` driver plugin against the `dlt645` package from PyPI: its own RTU server and meter
//! service answer on a pseudo-terminal, so every reply on the wire is framed by their implementation;
//! read through the plugin host's bridge and the HAL's serial bus. Needs `tests/peers/setup.sh` (run by
//! the test when missing; `CONCENTRATOR_ALLOW_SKIP=1` turns a failed install into a counted skip).
//!
//! The package deviates from DL/T 645-2007 in places (listed in `tests/peers/python/dlt645_meter.py`):
//! it answers frames for other addresses, parses broadcast time sync in the wrong byte order, and has
//! no relay control, follow-up reads or prepaid balances. The tests use it for what it does as the
//! standard says, and check that the driver reports the rest as device exceptions, not as garbage.

use concentrator_hal::linux::SerialBusConfig;
use concentrator_hal::pty::PtyPair;
use concentrator_hal::{LineSettings, SystemClock};
use concentrator_peer_tests::{python_or_skip, Peer};
use concentrator_plugin_host::{
    Decimal, Phase, PluginLoader, PluginPolicy, Quantity, RelayCommand, RelayState, StaticDriver,
    Task, TrustedKeys, Unit, Value,
};

const NAMEPLATE: &str = "201800001234";
/// The host packs the nameplate's 12 digits most significant first.
const PACKED: [u8; 6] = [0x20, 0x18, 0x00, 0x00, 0x12, 0x34];

fn decimal(mantissa: i64, exponent: i8, unit: Unit) -> Value {
    Value::Decimal(Decimal::new(mantissa, exponent, unit))
}

#[test]
fn a_meter_from_the_dlt645_package_reads_through_the_dlt645_driver() {
    let Some(python) = python_or_skip(&["dlt645", "serial"]) else {
        return;
    };
    let pty = PtyPair::open().unwrap();
    let given = [
        ("00010000", "12345.67"),
        ("00010100", "1000.01"),
        ("00020000", "42.5"),
        ("02010100", "231.5"),
        ("02020100", "5.125"),
        ("02030000", "1.1865"),
        // 2026-05-01 (a Friday, 05) 12:34:56.
        ("04000101", "26050105"),
        ("04000102", "123456"),
        // Status word 3: bit 4 relay open, bit 6 last command trip.
        ("04000503", "0050"),
    ];
    let mut args = vec![
        pty.slave_path().display().to_string(),
        NAMEPLATE.to_string(),
    ];
    args.extend(given.iter().map(|(di, value)| format!("{di}={value}")));
    let peer = Peer::start(&python, "dlt645_meter.py", &args).unwrap_or_else(|e| panic!("{e}"));
    let mut bus =
        SerialBusConfig::attach_pty("dlt645-peer", &pty, LineSettings::dlt645_default()).unwrap();
    let clock = SystemClock::new();
    let policy = PluginPolicy {
        max_faults: 3,
        require_root_owned: false,
        ..PluginPolicy::default()
    };
    let plugin = PluginLoader::new("/nonexistent", TrustedKeys::none(), policy)
        .register_static(StaticDriver::new(
            concentrator_driver_dlt645::plugin_declaration(),
        ))
        .unwrap();
    let mut meter = plugin
        .open_meter(&PACKED, "password = \"02000000\"")
        .unwrap();

    let expected = [
        (
            Quantity::EnergyImportTotal,
            decimal(1_234_567, 1, Unit::WattHour),
        ),
        (
            Quantity::EnergyImportTariff(1),
            decimal(100_001, 1, Unit::WattHour),
        ),
        (
            Quantity::EnergyExportTotal,
            decimal(4_250, 1, Unit::WattHour),
        ),
        (Quantity::Voltage(Phase::A), decimal(2_315, -1, Unit::Volt)),
        (
            Quantity::Current(Phase::A),
            decimal(5_125, -3, Unit::Ampere),
        ),
        (
            Quantity::ActivePower(Phase::Total),
            decimal(11_865, -1, Unit::Watt),
        ),
        // 2026-05-01T12:34:56, the meter's clock taken as UTC (no utc_offset_minutes).
        (Quantity::MeterDateTime, Value::Timestamp(1_777_638_896)),
        (Quantity::RelayState, Value::Relay(RelayState::Open)),
    ];
    for (quantity, value) in expected {
        let readings = meter
            .run(&mut bus, &clock, Task::Read(quantity))
            .unwrap_or_else(|e| panic!("{quantity}: {e}\n{}", peer.log()))
            .unwrap_or_else(|e| panic!("{quantity}: {e}"));
        assert_eq!(readings.len(), 1, "{quantity}: {readings:?}");
        assert_eq!((readings[0].quantity, readings[0].value), (quantity, value));
    }

    // Read address (0x13) to the wildcard: the package's meter answers with its own address.
    let readings = meter
        .run(&mut bus, &clock, Task::DiscoverAddress)
        .unwrap()
        .unwrap();
    assert_eq!(readings[0].value.to_string(), "address 201800001234");

    // Data it does not have: "no requested data" (error bit 1), a device exception.
    let exception = meter
        .run(
            &mut bus,
            &clock,
            Task::Read(Quantity::PrepaidRemainingMoney),
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(exception.code, 2, "{exception}");

    // It has no relay control: an abnormal reply ("other error"), which the driver reports as such.
    let exception = meter
        .run(&mut bus, &clock, Task::Relay(RelayCommand::Trip))
        .unwrap()
        .unwrap_err();
    assert_eq!(exception.code, 1, "{exception}");
}
