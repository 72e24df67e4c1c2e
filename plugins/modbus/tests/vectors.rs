//! Every Modbus RTU vector of `meters.json` (a copy of the shared vectors file), one test each: the
//! frame decodes in its direction, re-encodes byte for byte, and carries the fields the vector names.

use concentrator_driver_modbus::*;
use serde_json::Value as Json;

fn vectors() -> Vec<Json> {
    let root: Json = serde_json::from_str(include_str!("fixtures/meters.json")).unwrap();
    root["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["protocol"] == "ModbusRTU")
        .cloned()
        .collect()
}

fn vector(index: usize, description_start: &str) -> (Vec<u8>, Json) {
    let v = &vectors()[index];
    let description = v["description"].as_str().unwrap();
    assert!(
        description.starts_with(description_start),
        "vector {index} is `{description}`"
    );
    (
        hex::decode(v["hex"].as_str().unwrap().replace(' ', "")).unwrap(),
        v["decoded"].clone(),
    )
}

fn request(index: usize, description: &str) -> (RequestAdu, Json) {
    let (bytes, json) = vector(index, description);
    let Decoded::Request(adu) = decode_exact(&bytes, Direction::Request).unwrap() else {
        unreachable!()
    };
    assert_eq!(adu.encode(), bytes);
    assert_eq!(
        request_complete(&bytes),
        Completeness::Complete(bytes.len())
    );
    (adu, json)
}

fn response(index: usize, description: &str) -> (ResponseAdu, Json) {
    let (bytes, json) = vector(index, description);
    let Decoded::Response(adu) = decode_exact(&bytes, Direction::Response).unwrap() else {
        unreachable!()
    };
    assert_eq!(adu.encode(), bytes);
    assert_eq!(reply_complete(&bytes), Completeness::Complete(bytes.len()));
    for cut in 0..bytes.len() {
        assert_eq!(
            reply_complete(&bytes[..cut]),
            Completeness::NeedMore,
            "{description}: cut at {cut}"
        );
    }
    (adu, json)
}

fn float_of(adu: &ResponseAdu) -> f32 {
    let Response::ReadInputRegisters { values } = &adu.pdu else {
        panic!("not an FC04 reply: {adu:?}")
    };
    let Some(Raw::Float(f)) = DataType::F32be.decode(values) else {
        panic!()
    };
    f
}

#[test]
fn the_file_has_12_modbus_vectors() {
    assert_eq!(vectors().len(), 12);
}

#[test]
fn v00_read_sdm630_l1_voltage() {
    let (adu, json) = request(0, "FC04 read 2 input regs @0x0000");
    assert_eq!(json["slave"], 1);
    assert_eq!(adu, read_registers(1, RegisterKind::Input, 0, 2).unwrap());
    let registry = ModelRegistry::builtin().unwrap();
    let block = &registry
        .get("sdm630")
        .unwrap()
        .plan(Some(&["voltage_l1"]))
        .unwrap()[0];
    assert_eq!(block.request(1), adu);
}

#[test]
fn v01_reply_230_5_volts() {
    let (adu, json) = response(1, "FC04 reply: 230.5 V");
    assert_eq!(f64::from(float_of(&adu)), json["value"].as_f64().unwrap());
    let registry = ModelRegistry::builtin().unwrap();
    let map = registry.get("sdm630").unwrap();
    let block = &map.plan(Some(&["voltage_l1"])).unwrap()[0];
    let values = read_block_reply(map, block, 1, &adu).unwrap().unwrap();
    assert_eq!(values[0].reading.as_ref().unwrap().to_string(), "230.50 V");
}

#[test]
fn v02_read_sdm_total_kwh() {
    let (adu, _) = request(2, "FC04 read 2 input regs @0x0156");
    let registry = ModelRegistry::builtin().unwrap();
    assert_eq!(
        registry
            .get("sdm630")
            .unwrap()
            .plan(Some(&["total_active_energy"]))
            .unwrap()[0]
            .request(1),
        adu
    );
    assert_eq!(
        registry
            .get("sdm120")
            .unwrap()
            .plan(Some(&["total_active_energy"]))
            .unwrap()[0]
            .request(1),
        adu
    );
}

#[test]
fn v03_reply_12345_67_kwh() {
    let (adu, json) = response(3, "FC04 reply: 12345.67 kWh");
    assert!((f64::from(float_of(&adu)) - json["value"].as_f64().unwrap()).abs() < 1e-3);
    let reading = to_reading(Raw::Float(float_of(&adu)), 0, 2, "kWh").unwrap();
    assert_eq!((reading.mantissa, reading.exponent), (1_234_567, -2));
}

#[test]
fn v04_read_import_kwh() {
    let (adu, _) = request(4, "FC04 read @0x0048 import kWh");
    let registry = ModelRegistry::builtin().unwrap();
    assert_eq!(
        registry
            .get("sdm120")
            .unwrap()
            .plan(Some(&["import_active_energy"]))
            .unwrap()[0]
            .request(1),
        adu
    );
}

#[test]
fn v05_reply_import_1234_5() {
    let (adu, json) = response(5, "FC04 reply: import 1234.5 kWh");
    assert_eq!(f64::from(float_of(&adu)), json["value"].as_f64().unwrap());
}

#[test]
fn v06_read_three_voltages() {
    let (adu, json) = request(6, "FC04 read 6 regs @0x0000");
    assert_eq!(json["qty"], 6);
    let registry = ModelRegistry::builtin().unwrap();
    let blocks = registry
        .get("sdm630")
        .unwrap()
        .plan(Some(&["voltage_l1", "voltage_l2", "voltage_l3"]))
        .unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].request(1), adu);
}

#[test]
fn v07_read_holding_node_address() {
    let (adu, json) = request(7, "FC03 read 2 holding regs @0x0014");
    assert_eq!(json["fc"], 3);
    assert_eq!(
        adu,
        read_registers(1, RegisterKind::Holding, 0x0014, 2).unwrap()
    );
}

#[test]
fn v08_exception_illegal_data_address() {
    let (adu, json) = response(8, "exception reply: FC04|0x80 code 02");
    assert_eq!(json["exception"], 2);
    let request = read_registers(1, RegisterKind::Input, 0x0200, 2).unwrap();
    let exception = interpret(&request, &adu).unwrap().unwrap_err();
    assert_eq!(
        exception,
        ModbusException {
            function: 4,
            code: ExceptionCode::IllegalDataAddress
        }
    );
}

#[test]
fn v09_write_single_register() {
    let (adu, json) = request(9, "FC06 write single register");
    assert_eq!(
        (
            json["slave"].as_u64(),
            json["addr"].as_u64(),
            json["value"].as_u64()
        ),
        (Some(17), Some(1), Some(3))
    );
    assert_eq!(adu, write_register(17, 1, 3).unwrap());
    // The reply to a write-single is its echo: the same bytes decode as a response too.
    let (bytes, _) = vector(9, "FC06");
    let Decoded::Response(echo) = decode_exact(&bytes, Direction::Response).unwrap() else {
        unreachable!()
    };
    assert_eq!(interpret(&adu, &echo), Ok(Ok(vec![])));
}

#[test]
fn v10_write_multiple_reply() {
    let (adu, json) = response(10, "FC10 normal reply");
    assert_eq!(json["fc"], 16);
    let request = write_registers(1, 0x001C, &[0x4016, 0x0000]).unwrap();
    assert_eq!(interpret(&request, &adu), Ok(Ok(vec![])));
}

#[test]
fn v11_crc_worked_example() {
    let (bytes, json) = vector(11, "CRC worked example");
    assert_eq!(json["crc"], "0x1241");
    assert_eq!(crc16(&bytes[..2]), 0x1241);
    assert_eq!(&bytes[2..], &0x1241u16.to_le_bytes());
    assert_eq!(crc16(b"123456789"), 0x4B37);
}
