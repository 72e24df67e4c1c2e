//! The `modbus` driver plugin through the real host bridge: registered statically with the plugin host,
//! run by `MeterSession::run` on a simulated bus with the crate's register-map-driven meter emulator;
//! every task, device exceptions, grouped reads and every fault the sim bus injects. One test loads the
//! cdylib build through `dlopen`, signed, as the appliance loads a vendor plugin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use concentrator_driver_modbus::sim::{ModbusMeter, ModbusMeterConfig, ModbusMeterHandle};
use concentrator_driver_modbus::{ModelRegistry, RegisterKind, RegisterMap};
use concentrator_hal::sim::{DeviceId, Fault, SimBus, SimClock};
use concentrator_hal::LineSettings;
use concentrator_plugin_host::{
    Decimal, Phase, Plugin, PluginLoader, PluginPolicy, Quantity, Reading, RelayCommand,
    RelayState, StaticDriver, Task, TaskError, TrustedKeys, Unit, Value,
};

#[path = "../../dlt645/tests/common/cdylib.rs"]
mod cdylib;

fn plugin() -> Arc<Plugin> {
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
}

fn builtin(model: &str) -> RegisterMap {
    ModelRegistry::builtin()
        .unwrap()
        .get(model)
        .unwrap()
        .clone()
}

/// A user map: three phases whose power registers are not all contiguous, a relay, tariff energy.
const ACME3: &str = r#"
model = "acme3"
name = "ACME three-phase prepaid meter (test map)"
function = 3
type = "u16"
max_registers_per_read = 20

[[register]]
quantity = "voltage_l1"
address = 0x0000
scale = 0.1
unit = "V"

[[register]]
quantity = "voltage_l2"
address = 0x0001
scale = 0.1
unit = "V"

[[register]]
quantity = "voltage_l3"
address = 0x0002
scale = 0.1
unit = "V"

[[register]]
quantity = "active_power_l1"
address = 0x0010
type = "i32be"
unit = "W"

[[register]]
quantity = "active_power_l2"
address = 0x0012
type = "i32be"
unit = "W"

[[register]]
quantity = "active_power_l3"
address = 0x0020
type = "i32be"
unit = "W"

[[register]]
quantity = "import_active_energy_t1"
address = 0x0030
type = "u32be"
scale = 0.01
unit = "kWh"

[[register]]
quantity = "relay_state"
address = 0x0040

[[register]]
quantity = "relay_control"
address = 0x0041
"#;

/// A models directory holding the ACME map; returns the `models_dir` config line.
fn models_dir(test: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "concentrator-modbus-models-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("acme3.toml"), ACME3).unwrap();
    let config = format!("model = \"acme3\"\nmodels_dir = \"{}\"", dir.display());
    (dir, config)
}

struct Rig {
    bus: SimBus,
    clock: SimClock,
    ids: Vec<DeviceId>,
}

impl Rig {
    fn new(meters: Vec<ModbusMeter>) -> Self {
        let clock = SimClock::new_virtual();
        let mut bus = SimBus::new(
            "rs485-modbus",
            LineSettings::modbus_default(),
            clock.clone(),
        );
        let ids = meters.into_iter().map(|m| bus.attach(m)).collect();
        Rig { bus, clock, ids }
    }

    fn run(&mut self, slave: u8, config: &str, task: Task) -> Result<Vec<Reading>, String> {
        let mut meter = plugin()
            .open_meter(&[slave], config)
            .map_err(|e| e.to_string())?;
        match meter.run(&mut self.bus, &self.clock, task) {
            Ok(Ok(readings)) => Ok(readings),
            Ok(Err(exception)) => Err(format!("exception {}: {}", exception.code, exception.text)),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    fn read(&mut self, config: &str, quantity: Quantity) -> Value {
        let readings = self
            .run(1, config, Task::Read(quantity))
            .unwrap_or_else(|e| panic!("reading {quantity}: {e}"));
        assert_eq!(readings.len(), 1, "{readings:?}");
        assert_eq!(readings[0].quantity, quantity);
        readings[0].value
    }

    fn task_error(&mut self, config: &str, task: Task) -> TaskError {
        let mut meter = plugin().open_meter(&[1], config).unwrap();
        match meter.run(&mut self.bus, &self.clock, task) {
            Err(e) => e,
            Ok(other) => panic!("{task} should have failed, got {other:?}"),
        }
    }

    fn frames_sent(&self) -> u64 {
        self.bus.handle().stats().frames_sent
    }
}

fn meter(slave: u8, map: RegisterMap, power_w: i64) -> (ModbusMeter, ModbusMeterHandle) {
    let meter = ModbusMeter::new(ModbusMeterConfig {
        power_w,
        import_centi_kwh: 123_450,
        export_centi_kwh: 2_500,
        ..ModbusMeterConfig::new(slave, map)
    });
    let handle = meter.handle();
    (meter, handle)
}

fn decimal(mantissa: i64, exponent: i8, unit: Unit) -> Value {
    Value::Decimal(Decimal::new(mantissa, exponent, unit))
}

/// An energy reading within `slack` of `mantissa` (the emulator's registers advance with time).
fn assert_near(value: Value, mantissa: i64, exponent: i8, unit: Unit, slack: i64) {
    let Value::Decimal(d) = value else {
        panic!("{value} is not a decimal")
    };
    assert_eq!((d.exponent, d.unit), (exponent, unit), "{d}");
    assert!(
        (d.mantissa - mantissa).abs() <= slack,
        "{d}, expected about {mantissa}"
    );
}

#[test]
fn sdm630_floats_for_every_mapped_quantity() {
    let (m, _) = meter(1, builtin("sdm630"), 6900);
    let mut rig = Rig::new(vec![m]);
    let config = "model = \"sdm630\"";
    for phase in [Phase::A, Phase::B, Phase::C] {
        assert_eq!(
            rig.read(config, Quantity::Voltage(phase)),
            decimal(23_000, -2, Unit::Volt)
        );
        assert_eq!(
            rig.read(config, Quantity::Current(phase)),
            decimal(10_000, -3, Unit::Ampere)
        );
        assert_eq!(
            rig.read(config, Quantity::ActivePower(phase)),
            decimal(23_000, -1, Unit::Watt)
        );
    }
    assert_eq!(
        rig.read(config, Quantity::ActivePower(Phase::Total)),
        decimal(69_000, -1, Unit::Watt)
    );
    // kWh with 3 decimals are Wh with exponent 0.
    assert_near(
        rig.read(config, Quantity::EnergyImportTotal),
        1_234_500,
        0,
        Unit::WattHour,
        2,
    );
    assert_near(
        rig.read(config, Quantity::EnergyExportTotal),
        25_000,
        0,
        Unit::WattHour,
        2,
    );
    // Map quantities without an API name are vendor quantities.
    assert_eq!(
        rig.read(config, Quantity::Vendor(2)),
        decimal(5_000, -2, Unit::Hertz)
    );
    assert_near(
        rig.read(config, Quantity::Vendor(1)),
        1_259_500,
        0,
        Unit::WattHour,
        4,
    );
    assert_eq!(
        rig.read(config, Quantity::Vendor(3)),
        decimal(1_000, -3, Unit::None)
    );
    assert!(matches!(
        rig.read(config, Quantity::Vendor(7)),
        Value::Decimal(Decimal {
            unit: Unit::VarHour,
            ..
        })
    ));
}

#[test]
fn dds238_integers_and_a_total_summed_from_the_phase() {
    let (m, _) = meter(1, builtin("dds238"), 2300);
    let mut rig = Rig::new(vec![m]);
    let config = "model = \"dds238\"";
    assert_eq!(
        rig.read(config, Quantity::Voltage(Phase::A)),
        decimal(2300, -1, Unit::Volt)
    );
    assert_eq!(
        rig.read(config, Quantity::Current(Phase::A)),
        decimal(1000, -2, Unit::Ampere)
    );
    assert_eq!(
        rig.read(config, Quantity::EnergyImportTotal),
        decimal(123_450, 1, Unit::WattHour)
    );
    // No `active_power_total` register: the total is the sum of the phases (one here).
    assert_eq!(
        rig.read(config, Quantity::ActivePower(Phase::Total)),
        decimal(2300, 0, Unit::Watt)
    );
}

#[test]
fn a_user_map_groups_contiguous_registers_and_reads_the_relay() {
    let (dir, config) = models_dir("user-map");
    let (m, handle) = meter(1, RegisterMap::parse(ACME3, "acme3.toml").unwrap(), 3000);
    let mut rig = Rig::new(vec![m]);
    // L1 and L2 are contiguous, L3 is not: two exchanges for the total.
    let before = rig.frames_sent();
    assert_eq!(
        rig.read(&config, Quantity::ActivePower(Phase::Total)),
        decimal(3000, 0, Unit::Watt)
    );
    assert_eq!(rig.frames_sent() - before, 2);
    assert_eq!(
        rig.read(&config, Quantity::EnergyImportTariff(1)),
        decimal(0, 1, Unit::WattHour)
    );
    assert_eq!(
        rig.read(&config, Quantity::RelayState),
        Value::Relay(RelayState::Open)
    );
    assert_eq!(
        rig.run(1, &config, Task::Relay(RelayCommand::Trip)),
        Ok(vec![])
    );
    assert_eq!(
        handle.lock().written.get(&(RegisterKind::Holding, 0x0041)),
        Some(&1)
    );
    rig.run(1, &config, Task::Relay(RelayCommand::CloseDirect))
        .unwrap();
    assert_eq!(
        handle.lock().written.get(&(RegisterKind::Holding, 0x0041)),
        Some(&3)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tasks_a_model_cannot_do_are_rejected() {
    let (m, _) = meter(1, builtin("sdm630"), 1000);
    let mut rig = Rig::new(vec![m]);
    let config = "model = \"sdm630\"";
    for task in [
        Task::Relay(RelayCommand::Trip),
        Task::SetClock(1_767_225_600),
        Task::DiscoverAddress,
        Task::Read(Quantity::PrepaidRemainingMoney),
        Task::Read(Quantity::Vendor(99)),
    ] {
        let error = rig.task_error(config, task);
        assert!(matches!(error, TaskError::TaskRejected { .. }), "{error}");
    }
    assert_eq!(
        rig.frames_sent(),
        0,
        "nothing goes on the bus for a rejected task"
    );
}

#[test]
fn a_register_the_meter_lacks_is_a_device_exception() {
    // The config says SDM630, the meter on the line is an SDM120: no L2 voltage register.
    let (m, _) = meter(1, builtin("sdm120"), 1000);
    let mut rig = Rig::new(vec![m]);
    let refused = rig
        .run(
            1,
            "model = \"sdm630\"",
            Task::Read(Quantity::Voltage(Phase::B)),
        )
        .unwrap_err();
    assert_eq!(
        refused,
        "exception 2: the slave refused function 04: exception 02 illegal data address"
    );
    // The DDS238 takes no function 06; the driver writes with 16, and an unmapped write is refused.
    let (dir, config) = models_dir("exception");
    let (m, _) = meter(2, builtin("dds238"), 1000);
    let mut rig = Rig::new(vec![m]);
    let refused = rig
        .run(2, &config, Task::Relay(RelayCommand::Trip))
        .unwrap_err();
    assert!(
        refused.starts_with("exception 2: the slave refused function 16"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn config_and_address_errors_name_the_fix() {
    let plugin = plugin();
    let error = plugin
        .open_meter(&[0], "model = \"sdm630\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("slave id 1 to 247"), "{error}");
    let error = plugin.open_meter(&[1], "").unwrap_err().to_string();
    assert!(error.contains("has no `model`"), "{error}");
    let error = plugin
        .open_meter(&[1], "model = \"sdm630\"\nspeed = 9600")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown key `speed`"), "{error}");
    let error = plugin
        .open_meter(&[1], "model = \"acme3\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("model `acme3` is not known"), "{error}");
}

/// Reads the L1 voltage once the fault has been applied, and checks the meter reads cleanly afterwards.
fn after_fault(fault: Fault) -> TaskError {
    let (m, _) = meter(1, builtin("sdm630"), 1000);
    let mut rig = Rig::new(vec![m]);
    rig.bus.handle().inject(rig.ids[0], fault.clone(), Some(1));
    let config = "model = \"sdm630\"";
    let error = rig.task_error(config, Task::Read(Quantity::Voltage(Phase::A)));
    assert_eq!(
        rig.read(config, Quantity::Voltage(Phase::A)),
        decimal(23_000, -2, Unit::Volt),
        "the meter reads cleanly after {fault:?}"
    );
    assert!(
        !plugin().is_quarantined(),
        "a bad reply is not a plugin fault"
    );
    error
}

#[test]
fn a_silent_meter_is_no_reply() {
    let error = after_fault(Fault::Silence);
    assert!(matches!(error, TaskError::NoReply { .. }), "{error}");
}

#[test]
fn a_reply_after_the_timeout_is_no_reply_and_does_not_spoil_the_next() {
    let error = after_fault(Fault::Late {
        extra: Duration::from_millis(400),
    });
    assert!(matches!(error, TaskError::NoReply { .. }), "{error}");
    let (m, _) = meter(1, builtin("sdm630"), 1000);
    let mut rig = Rig::new(vec![m]);
    let late = Fault::Late {
        extra: Duration::from_millis(150),
    };
    rig.bus.handle().inject(rig.ids[0], late, Some(1));
    assert_eq!(
        rig.read("model = \"sdm630\"", Quantity::Voltage(Phase::A)),
        decimal(23_000, -2, Unit::Volt)
    );
}

#[test]
fn garbage_is_a_protocol_error() {
    let error = after_fault(Fault::Garbage { len: 24 });
    assert!(matches!(error, TaskError::Protocol { .. }), "{error}");
}

#[test]
fn a_corrupt_byte_is_caught_by_the_crc() {
    let error = after_fault(Fault::CorruptByte {
        index: 4,
        mask: 0x10,
    });
    assert!(
        matches!(&error, TaskError::Protocol { message, .. } if message.contains("CRC")),
        "{error}"
    );
}

#[test]
fn a_truncated_reply_is_a_protocol_error() {
    let error = after_fault(Fault::Truncate { keep: 5 });
    assert!(matches!(error, TaskError::Protocol { .. }), "{error}");
}

#[test]
fn two_meters_answering_at_once_is_a_protocol_error() {
    let (m1, _) = meter(1, builtin("sdm630"), 1000);
    let (m2, _) = meter(2, builtin("sdm630"), 1000);
    let mut rig = Rig::new(vec![m1, m2]);
    rig.bus
        .handle()
        .inject(rig.ids[1], Fault::AnswerAll, Some(1));
    let config = "model = \"sdm630\"";
    let error = rig.task_error(config, Task::Read(Quantity::Voltage(Phase::A)));
    assert!(matches!(error, TaskError::Protocol { .. }), "{error}");
    assert_eq!(rig.bus.handle().stats().collisions, 1);
    assert_eq!(
        rig.read(config, Quantity::Voltage(Phase::A)),
        decimal(23_000, -2, Unit::Volt)
    );
}

#[test]
fn the_cdylib_loads_through_dlopen_and_reads_a_meter() {
    let plugin = cdylib::load_signed("concentrator-driver-modbus-plugin", "modbus");
    assert_eq!(plugin.name(), "modbus");
    let (m, _) = meter(1, builtin("sdm630"), 1000);
    let mut rig = Rig::new(vec![m]);
    let mut session = plugin.open_meter(&[1], "model = \"sdm630\"").unwrap();
    let readings = session
        .run(
            &mut rig.bus,
            &rig.clock,
            Task::Read(Quantity::Voltage(Phase::A)),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        readings,
        vec![Reading::new(
            Quantity::Voltage(Phase::A),
            decimal(23_000, -2, Unit::Volt)
        )]
    );
}
