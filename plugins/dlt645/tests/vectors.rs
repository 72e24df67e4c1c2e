//! Every DL/T 645-2007 vector of `meters.json` (a copy of the shared vectors file), one test each:
//! the frame decodes, re-encodes byte for byte, and carries the fields the vector names.

use concentrator_driver_dlt645::*;
use serde_json::Value as Json;

fn vectors() -> Vec<Json> {
    let text = include_str!("fixtures/meters.json");
    let root: Json = serde_json::from_str(text).unwrap();
    root["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["protocol"] == "DLT645-2007")
        .cloned()
        .collect()
}

/// The vector at `index` among the DL/T 645 ones: its bytes and its decoded frame, after the generic
/// checks every vector gets.
fn vector(index: usize, description_start: &str) -> (Vec<u8>, Frame, Json) {
    let v = &vectors()[index];
    let description = v["description"].as_str().unwrap();
    assert!(
        description.starts_with(description_start),
        "vector {index} is `{description}`"
    );
    let bytes = hex::decode(v["hex"].as_str().unwrap().replace(' ', "")).unwrap();
    let decoded = Frame::decode_exact(&bytes).unwrap_or_else(|e| panic!("{description}: {e}"));
    assert_eq!(decoded.preamble, 4);
    assert_eq!(
        decoded.frame.encode_with_preamble(4).unwrap(),
        bytes,
        "{description}: re-encoding"
    );
    assert_eq!(reply_complete(&bytes), Completeness::Complete(bytes.len()));
    for cut in 0..bytes.len() {
        assert_eq!(
            reply_complete(&bytes[..cut]),
            Completeness::NeedMore,
            "{description}: cut at {cut}"
        );
    }
    (bytes, decoded.frame, v["decoded"].clone())
}

fn meter_1() -> Dlt645Address {
    "000000000001".parse().unwrap()
}

fn far_future() -> MeterDateTime {
    MeterDateTime::new(2030, 12, 31, 23, 59, 59).unwrap()
}

#[test]
fn the_file_has_25_dlt645_vectors() {
    assert_eq!(vectors().len(), 25);
}

#[test]
fn v00_read_combined_total() {
    let (_, frame, json) = vector(0, "read request: DI 00000000");
    assert_eq!(json["addr"], "000000000001");
    assert_eq!(frame, read_data(meter_1(), DataId::COMBINED_ACTIVE_ENERGY));
    assert_eq!(frame.control.to_string(), "0x11 read data request");
}

#[test]
fn v01_read_reply_combined_total() {
    let (_, frame, _) = vector(1, "read reply: DI 00000000");
    let request = read_data(meter_1(), DataId::COMBINED_ACTIVE_ENERGY);
    let value = read_value(&request, DataId::COMBINED_ACTIVE_ENERGY, &frame)
        .unwrap()
        .unwrap();
    assert_eq!(
        value,
        Value::Reading(Reading::new(1_234_567, -2, Unit::KilowattHour))
    );
    assert_eq!(&frame.data[4..], &[0x67, 0x45, 0x23, 0x01]);
}

#[test]
fn v02_read_import_total() {
    let (_, frame, _) = vector(2, "read request: DI 00010000");
    assert_eq!(frame, read_data(meter_1(), DataId::IMPORT_ACTIVE_ENERGY));
}

#[test]
fn v03_read_reply_import_total() {
    let (_, frame, json) = vector(3, "read reply: DI 00010000");
    let request = read_data(meter_1(), DataId::IMPORT_ACTIVE_ENERGY);
    let Value::Reading(r) = read_value(&request, DataId::IMPORT_ACTIVE_ENERGY, &frame)
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (r.mantissa, r.exponent, r.unit),
        (1_234_567, -2, Unit::KilowattHour)
    );
    assert!((r.to_f64() - json["value_kWh"].as_f64().unwrap()).abs() < 1e-9);
}

#[test]
fn v04_read_voltage_a() {
    let (_, frame, _) = vector(4, "read request: DI 02010100");
    assert_eq!(frame, read_data(meter_1(), DataId::voltage(Phase::A)));
}

#[test]
fn v05_read_reply_voltage_a() {
    let (_, frame, json) = vector(5, "read reply: DI 02010100");
    let request = read_data(meter_1(), DataId::voltage(Phase::A));
    let Value::Reading(r) = read_value(&request, DataId::voltage(Phase::A), &frame)
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(r, Reading::new(2201, -1, Unit::Volt));
    assert!((r.to_f64() - json["value_V"].as_f64().unwrap()).abs() < 1e-9);
}

#[test]
fn v06_read_reply_date() {
    let (_, frame, json) = vector(6, "read reply: DI 04000101");
    let request = read_data(meter_1(), DataId::DATE);
    let Value::Date(d) = read_value(&request, DataId::DATE, &frame).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(u64::from(d.year - 2000), json["YY"].as_u64().unwrap());
    assert_eq!(u64::from(d.month), json["MM"].as_u64().unwrap());
    assert_eq!(u64::from(d.day), json["DD"].as_u64().unwrap());
    assert_eq!(u64::from(d.weekday), json["WW"].as_u64().unwrap());
}

#[test]
fn v07_abnormal_reply_no_requested_data() {
    let (_, frame, _) = vector(7, "abnormal reply to read");
    assert!(frame.control.is_reply() && frame.control.is_abnormal());
    let request = read_data(meter_1(), DataId::REMAINING_MONEY);
    let exception = read_reply(&request, DataId::REMAINING_MONEY, &frame)
        .unwrap()
        .unwrap_err();
    assert_eq!(exception.bits(), vec![ErrorBit::NoRequestedData]);
    assert_eq!(exception.error_byte, 0x02);
}

#[test]
fn v08_read_remaining_money() {
    let (_, frame, _) = vector(8, "read request: DI 00900200");
    assert_eq!(frame, read_data(meter_1(), DataId::REMAINING_MONEY));
    assert_eq!(
        DataId::REMAINING_MONEY.name().unwrap(),
        "remaining money (prepaid)"
    );
}

#[test]
fn v09_read_status_word_3() {
    let (_, frame, _) = vector(9, "read request: DI 04000503");
    assert_eq!(frame, read_data(meter_1(), DataId::RUNNING_STATUS_3));
}

#[test]
fn v10_read_address_wildcard() {
    let (_, frame, _) = vector(10, "read address request");
    assert_eq!(frame, read_address());
    assert!(frame.address.has_wildcard());
}

#[test]
fn v11_broadcast_time_sync() {
    let (_, frame, json) = vector(11, "broadcast time sync");
    let time = MeterDateTime::new(2026, 5, 1, 12, 34, 56).unwrap();
    assert_eq!(frame, broadcast_time_sync(&time));
    assert!(frame.address.is_broadcast());
    let parsed = MeterDateTime::from_wire(&frame.data).unwrap();
    assert_eq!(u64::from(parsed.second), json["ss"].as_u64().unwrap());
    assert_eq!(u64::from(parsed.hour), json["hh"].as_u64().unwrap());
}

fn relay_vector(index: usize, description: &str, command: RelayCommand, n1: &str) {
    let (_, frame, json) = vector(index, description);
    assert_eq!(json["N1"], n1);
    let built = relay_control(
        meter_1(),
        command,
        &"02000000".parse().unwrap(),
        OperatorCode::new(0),
        &far_future(),
    );
    assert_eq!(frame, built);
}

#[test]
fn v12_relay_trip() {
    relay_vector(
        12,
        "remote control C=0x1C N1=0x1A trip",
        RelayCommand::Trip,
        "1A",
    );
}

#[test]
fn v13_relay_close_allowed() {
    relay_vector(
        13,
        "remote control C=0x1C N1=0x1B",
        RelayCommand::CloseAllowed,
        "1B",
    );
}

#[test]
fn v14_relay_alarm() {
    relay_vector(
        14,
        "remote control C=0x1C N1=0x2A",
        RelayCommand::Alarm,
        "2A",
    );
}

#[test]
fn v15_relay_guarantee_power() {
    relay_vector(
        15,
        "remote control C=0x1C N1=0x3A",
        RelayCommand::GuaranteePower,
        "3A",
    );
}

#[test]
fn v16_relay_control_normal_reply() {
    let (_, frame, _) = vector(16, "remote control normal reply");
    let request = relay_control(
        meter_1(),
        RelayCommand::Trip,
        &Password::new(2, 0),
        OperatorCode::new(0),
        &far_future(),
    );
    assert_eq!(ack_reply(&request, &frame), Ok(Ok(())));
}

#[test]
fn v17_read_follow_up() {
    let (_, frame, json) = vector(17, "read follow-up C=0x12");
    assert_eq!(json["SEQ"], 1);
    assert_eq!(
        frame,
        read_follow_up(meter_1(), "03300201".parse().unwrap(), 1)
    );
}

#[test]
fn v18_write_normal_reply() {
    let (_, frame, _) = vector(18, "write data normal reply");
    let request = write_data(
        meter_1(),
        DataId::TIME,
        &Password::new(2, 0),
        OperatorCode::new(0),
        &[0, 0, 0],
    );
    assert_eq!(ack_reply(&request, &frame), Ok(Ok(())));
}

#[test]
fn v19_instant_freeze() {
    let (_, frame, _) = vector(19, "freeze C=0x16");
    assert_eq!(frame, freeze(meter_1(), FreezeTime::INSTANT));
}

#[test]
fn v20_change_baud_reply() {
    let (_, frame, _) = vector(20, "change baud reply");
    assert_eq!(frame.control, ControlCode::reply(Function::ChangeBaud));
    assert_eq!(frame.data, vec![0x20]);
}

#[test]
fn v21_change_password() {
    let (_, frame, json) = vector(21, "change password C=0x18");
    assert_eq!(json["DI"], "04000C03");
    assert_eq!(frame.control.function(), Some(Function::ChangePassword));
    assert_eq!(
        DataId::from_wire(frame.data[..4].try_into().unwrap()).to_string(),
        "04000C03"
    );
    assert_eq!(
        Password::from_wire(frame.data[4..8].try_into().unwrap()),
        Password::new(2, 0)
    );
    assert_eq!(
        Password::from_wire(frame.data[8..12].try_into().unwrap()),
        Password::new(2, 123_456)
    );
}

fn clear_vector(index: usize, description: &str, function: Function) -> Frame {
    let (_, frame, _) = vector(index, description);
    assert_eq!(frame.control.function(), Some(function));
    assert_eq!(
        Password::from_wire(frame.data[..4].try_into().unwrap()),
        Password::new(2, 0)
    );
    assert_eq!(frame.data[4..8], OperatorCode::new(0x1234_5678).0);
    frame
}

#[test]
fn v22_clear_max_demand() {
    clear_vector(22, "clear max demand C=0x19", Function::ClearMaxDemand);
}

#[test]
fn v23_clear_meter() {
    clear_vector(23, "clear meter C=0x1A", Function::ClearMeter);
}

#[test]
fn v24_clear_events() {
    let frame = clear_vector(24, "clear events C=0x1B", Function::ClearEvents);
    assert_eq!(
        DataId::from_wire(frame.data[8..12].try_into().unwrap()),
        DataId(0xFFFF_FFFF)
    );
}
