//! The emulated meters on a simulated bus, read through planned blocks as the driver plugin will.

use std::time::Duration;

use concentrator_driver_modbus::sim::{ModbusMeter, ModbusMeterConfig};
use concentrator_driver_modbus::*;
use concentrator_hal::sim::{SimBus, SimClock};
use concentrator_hal::{LineSettings, ReplyEnd, Rs485Bus};

fn rig(meters: Vec<ModbusMeter>) -> (SimBus, SimClock) {
    let clock = SimClock::new_virtual();
    let mut bus = SimBus::new(
        "rs485-modbus",
        LineSettings::modbus_default(),
        clock.clone(),
    );
    for meter in meters {
        bus.attach(meter);
    }
    (bus, clock)
}

fn exchange(bus: &mut SimBus, request: &RequestAdu) -> Option<ResponseAdu> {
    let mut reply = Vec::new();
    let timing = exchange_timing(&bus.settings(), DEFAULT_REPLY_TIMEOUT);
    let info = bus
        .transact(&request.encode(), &timing, &mut reply, &mut |r| {
            reply_complete(r).is_done()
        })
        .unwrap();
    (info.end != ReplyEnd::NoReply).then(|| decode_reply(&reply, request.slave).unwrap())
}

fn read_all(bus: &mut SimBus, map: &RegisterMap, slave: u8) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in map.plan(None).unwrap() {
        let reply = exchange(bus, &block.request(slave)).unwrap();
        for q in read_block_reply(map, &block, slave, &reply)
            .unwrap()
            .unwrap()
        {
            out.push((q.quantity, q.reading.unwrap().to_string()));
        }
    }
    out
}

fn get<'a>(values: &'a [(String, String)], quantity: &str) -> &'a str {
    &values.iter().find(|(q, _)| q == quantity).unwrap().1
}

#[test]
fn sdm630_floats_and_dds238_integers() {
    let registry = ModelRegistry::builtin().unwrap();
    let sdm = registry.get("sdm630").unwrap().clone();
    let dds = registry.get("dds238").unwrap().clone();
    let (mut bus, clock) = rig(vec![
        ModbusMeter::new(ModbusMeterConfig {
            power_w: 6900,
            import_centi_kwh: 123_450,
            ..ModbusMeterConfig::new(1, sdm.clone())
        }),
        ModbusMeter::new(ModbusMeterConfig {
            power_w: 2300,
            import_centi_kwh: 1_000,
            ..ModbusMeterConfig::new(2, dds.clone())
        }),
    ]);
    let sdm_values = read_all(&mut bus, &sdm, 1);
    assert_eq!(get(&sdm_values, "voltage_l2"), "230.00 V");
    assert_eq!(get(&sdm_values, "current_l3"), "10.000 A");
    assert_eq!(get(&sdm_values, "active_power_total"), "6900.0 W");
    // Energy keeps flowing during the exchanges themselves (6.9 kW for a few hundred ms of wire time).
    assert!(
        get(&sdm_values, "import_active_energy").starts_with("1234.50"),
        "{sdm_values:?}"
    );
    let dds_values = read_all(&mut bus, &dds, 2);
    assert_eq!(get(&dds_values, "voltage_l1"), "230.0 V");
    assert_eq!(get(&dds_values, "current_l1"), "10.00 A");
    assert_eq!(get(&dds_values, "active_power_l1"), "2300 W");
    assert_eq!(get(&dds_values, "frequency"), "50.00 Hz");
    clock.advance(Duration::from_secs(3600));
    let dds_values = read_all(&mut bus, &dds, 2);
    assert_eq!(get(&dds_values, "import_active_energy"), "12.30 kWh");
    assert_eq!(get(&dds_values, "total_active_energy"), "12.30 kWh");
}

#[test]
fn unmapped_registers_answer_exception_02() {
    let registry = ModelRegistry::builtin().unwrap();
    let (mut bus, _) = rig(vec![ModbusMeter::new(ModbusMeterConfig::new(
        1,
        registry.get("sdm630").unwrap().clone(),
    ))]);
    let request = read_registers(1, RegisterKind::Input, 0x0200, 2).unwrap();
    let reply = exchange(&mut bus, &request).unwrap();
    assert_eq!(reply.encode(), [0x01, 0x84, 0x02, 0xC2, 0xC1]);
    let exception = interpret(&request, &reply).unwrap().unwrap_err();
    assert_eq!(exception.code, ExceptionCode::IllegalDataAddress);
    // A gap SDM maps do not allow.
    let request = read_registers(1, RegisterKind::Input, 0x0010, 16).unwrap();
    assert!(interpret(&request, &exchange(&mut bus, &request).unwrap())
        .unwrap()
        .is_err());
    // Another slave: silence.
    assert!(exchange(
        &mut bus,
        &read_registers(9, RegisterKind::Input, 0, 2).unwrap()
    )
    .is_none());
}

#[test]
fn dds238_takes_writes_only_with_function_16() {
    let registry = ModelRegistry::builtin().unwrap();
    let dds = registry.get("dds238").unwrap().clone();
    let (mut bus, _) = rig(vec![ModbusMeter::new(ModbusMeterConfig::new(
        3,
        dds.clone(),
    ))]);
    let single = write_register(3, 0x0000, 0).unwrap();
    let reply = exchange(&mut bus, &single).unwrap();
    assert_eq!(
        interpret(&single, &reply).unwrap().unwrap_err().code,
        ExceptionCode::IllegalFunction
    );
    let multiple = write_registers(3, 0x0000, &[0, 0]).unwrap();
    let reply = exchange(&mut bus, &multiple).unwrap();
    assert_eq!(interpret(&multiple, &reply), Ok(Ok(vec![])));
    let values = read_all(&mut bus, &dds, 3);
    assert_eq!(get(&values, "total_active_energy"), "0.00 kWh");
}

#[test]
fn user_maps_load_from_a_directory() {
    let dir = std::env::temp_dir().join(format!("concentrator-modbus-maps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("acme.toml"),
        "model = \"acme-1\"\nfunction = 3\n\n[[register]]\nquantity = \"voltage_l1\"\naddress = 0x0100\ntype = \"u16\"\nscale = 0.1\nunit = \"V\"\n",
    )
    .unwrap();
    let mut registry = ModelRegistry::builtin().unwrap();
    assert_eq!(registry.load_dir(&dir).unwrap(), ["acme-1"]);
    let map = registry.get("acme-1").unwrap().clone();
    let (mut bus, _) = rig(vec![ModbusMeter::new(ModbusMeterConfig::new(
        5,
        map.clone(),
    ))]);
    assert_eq!(
        read_all(&mut bus, &map, 5),
        [("voltage_l1".to_string(), "230.0 V".to_string())]
    );

    std::fs::write(dir.join("broken.toml"), "model = \"b\"\n[[register]]\nquantity = \"x\"\naddress = 1\ntype = \"u16\"\nfunction = 5\n").unwrap();
    let err = registry.load_dir(&dir).unwrap_err().to_string();
    assert!(err.ends_with("broken.toml:2: register `x`: function 5 cannot read registers; use 3 (holding) or 4 (input)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
