//! `concentrator decode` run as a process: every DL/T 645 and Modbus vector of the shared vectors file
//! decodes to JSON (exit 0); broken frames exit 2 with a message that names what is wrong.

use std::process::{Command, Output};

use serde_json::Value;

const VECTORS: &str = include_str!("../../plugins/dlt645/tests/fixtures/meters.json");

fn concentrator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn decode_ok(protocol: &str, args: &[&str]) -> Value {
    let mut all = vec!["decode", protocol];
    all.extend_from_slice(args);
    let output = concentrator(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "decode {protocol} {args:?} failed: {stderr}"
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

fn decode_err(protocol: &str, args: &[&str]) -> String {
    let mut all = vec!["decode", protocol];
    all.extend_from_slice(args);
    let output = concentrator(&all);
    assert_eq!(
        output.status.code(),
        Some(2),
        "decode {protocol} {args:?} should be a usage error"
    );
    assert!(output.stdout.is_empty());
    String::from_utf8(output.stderr).unwrap()
}

fn vectors(protocol: &str) -> Vec<(String, String)> {
    let root: Value = serde_json::from_str(VECTORS).unwrap();
    root["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["protocol"] == protocol)
        .map(|v| {
            (
                v["description"].as_str().unwrap().to_string(),
                v["hex"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_dlt645_vector_decodes() {
    let all = vectors("DLT645-2007");
    assert_eq!(all.len(), 25);
    for (description, hex) in all {
        let json = decode_ok("dlt645", &[&hex]);
        assert_eq!(json["protocol"], "dlt645-2007", "{description}");
        assert_eq!(json["preamble"], 4, "{description}");
    }
}

#[test]
fn every_modbus_vector_decodes() {
    let all = vectors("ModbusRTU");
    assert_eq!(all.len(), 12);
    for (description, hex) in all {
        // The CRC worked example is only address and function: not a whole frame of either direction.
        if description.starts_with("CRC worked example") {
            let message = decode_err("modbus", &[&hex]);
            assert!(message.contains("function code 0x07"), "{message}");
            continue;
        }
        let json = decode_ok("modbus", &[&hex]);
        assert_eq!(json["protocol"], "modbus-rtu", "{description}");
    }
}

#[test]
fn dlt645_values_are_typed() {
    let json = decode_ok(
        "dlt645",
        &["FE FE FE FE 68 01 00 00 00 00 00 68 91 08 33 33 33 33 9A 78 56 34 D2 16"],
    );
    assert_eq!(json["fields"]["value_text"], "12345.67 kWh");
    assert_eq!(json["fields"]["value"]["value"]["exponent"], -2);
    let json = decode_ok("dlt645", &["FEFEFEFE6801000000000068D10135D816"]);
    assert_eq!(json["fields"]["errors"][0], "no_requested_data");
    let json = decode_ok(
        "dlt645",
        &[
            "FE", "FE", "FE", "FE", "68", "99", "99", "99", "99", "99", "99", "68", "08", "06",
            "89", "67", "45", "34", "38", "59", "6E", "16",
        ],
    );
    assert_eq!(json["address_kind"], "broadcast");
    assert_eq!(json["fields"]["time"], "2026-05-01 12:34:56");
    let json = decode_ok("dlt645", &["FE FE FE FE 68 01 00 00 00 00 00 68 1C 10 35 33 33 33 33 33 33 33 4D 33 8C 8C 56 64 45 63 91 16"]);
    assert_eq!(json["fields"]["command"], "trip");
    assert_eq!(json["fields"]["password"]["code"], "******");
}

#[test]
fn dlt645_errors_name_the_byte() {
    let message = decode_err(
        "dlt645",
        &["FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B2 16"],
    );
    assert!(
        message.contains("checksum is 0xB3, the frame says 0xB2 (byte 18)"),
        "{message}"
    );
    let message = decode_err("dlt645", &["FE FE 68 01 00 00 00 00 00 68 11 04 33 33"]);
    assert!(
        message.contains(
            "needs 18 bytes (the length byte at byte 11 says 4 data bytes), only 14 came"
        ),
        "{message}"
    );
    let message = decode_err("dlt645", &["68 01 00 00 00 00 00 68 11 00 E2 17"]);
    assert!(
        message.contains("byte 11 should be the end 0x16, it is 0x17"),
        "{message}"
    );
    let message = decode_err("dlt645", &["68 01 00 00 00 00 00 68 11 00 E2 16 00"]);
    assert!(
        message.contains("1 byte(s) follow the end of the frame at byte 12"),
        "{message}"
    );
    let message = decode_err("dlt645", &["68 0"]);
    assert!(message.contains("odd number"), "{message}");
    let message = decode_err("dlt645", &["zz"]);
    assert!(message.contains("not a hex digit"), "{message}");
}

#[test]
fn modbus_with_a_model_names_registers() {
    let json = decode_ok("modbus", &["01 04 00 00 00 06 70 08", "--model", "sdm630"]);
    let names: Vec<&str> = json["quantities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["quantity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["voltage_l1", "voltage_l2", "voltage_l3"]);
    let json = decode_ok(
        "modbus",
        &[
            "01 04 04 44 9A 50 00 F3 5B",
            "--model",
            "sdm630",
            "--address",
            "0x0048",
        ],
    );
    assert_eq!(json["quantities"][0]["quantity"], "import_active_energy");
    assert_eq!(json["quantities"][0]["reading"]["mantissa"], 1_234_500);
    let message = decode_err(
        "modbus",
        &["01 04 04 44 9A 50 00 F3 5B", "--model", "sdm630"],
    );
    assert!(message.contains("--address"), "{message}");
    let message = decode_err("modbus", &["01 04 00 00 00 02 71 CB", "--model", "nosuch"]);
    assert!(
        message
            .contains("no register map for model `nosuch`; known models: dds238, sdm120, sdm630"),
        "{message}"
    );
}

#[test]
fn modbus_errors_name_the_bytes() {
    let message = decode_err(
        "modbus",
        &["01 04 04 43 66 80 00 6F DE", "--direction", "response"],
    );
    assert!(
        message.contains("CRC is 0xDF6F (sent 6F DF), the frame says 0xDE6F (bytes 7-8)"),
        "{message}"
    );
    let message = decode_err("modbus", &["01 84 02 C2"]);
    assert!(
        message.contains("not a valid Modbus RTU response: the frame is cut short"),
        "{message}"
    );
    let message = decode_err("modbus", &["01 04 00 00 00 02 71 CC"]);
    assert!(message.contains("as a request, CRC is 0xCB71"), "{message}");
    let json = decode_ok("modbus", &["01 84 02 C2 C1"]);
    assert_eq!(json["exception_code"], 2);
}

#[test]
fn a_znp_frame_and_its_zcl_payload_decode_and_a_bad_fcs_is_named() {
    // SYS_PING request (SREQ 0x21 0x01), FCS 0x20.
    let out = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["decode", "znp", "FE 00 21 01 20"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.to_lowercase().contains("ping"), "{text}");
    let bad = Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .args(["decode", "znp", "FE 00 21 01 21"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("FCS") && err.contains("byte 4"), "{err}");
}
