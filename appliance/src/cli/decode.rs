//! `concentrator decode dlt645|modbus HEX`: a captured frame, decoded as JSON.
//!
//! A frame that decodes prints as one JSON object on stdout (exit 0). A frame that does not is a usage
//! error (exit 2) whose message names the byte and what is wrong with it, e.g. `checksum is 0xB2, the
//! frame says 0xB3 (byte 18)`.

use std::io::Write;
use std::path::PathBuf;

use concentrator_driver_dlt645 as dlt645;
use concentrator_driver_modbus as modbus;
use serde_json::{json, Map, Value};

use super::CliError;

/// `concentrator decode ...`
#[derive(Debug, clap::Subcommand)]
pub enum DecodeCommand {
    /// A DL/T 645-2007 frame (any number of leading FE bytes).
    Dlt645 {
        /// The frame in hex; spaces, `:` and `-` between bytes are ignored (several arguments are joined).
        #[arg(required = true, num_args = 1..)]
        hex: Vec<String>,
    },
    /// A Modbus RTU frame (slave address to CRC).
    Modbus {
        /// The frame in hex; spaces, `:` and `-` between bytes are ignored (several arguments are joined).
        #[arg(required = true, num_args = 1..)]
        hex: Vec<String>,
        /// Which way the frame went; `detect` tries both.
        #[arg(long, value_enum, default_value = "detect")]
        direction: DirectionArg,
        /// Name the registers with this model's map (sdm120, sdm630, dds238, or one from --models-dir).
        #[arg(long)]
        model: Option<String>,
        /// A directory of user register maps (*.toml) to add to the built-in ones.
        #[arg(long, value_name = "DIR")]
        models_dir: Option<PathBuf>,
        /// The first register a reply's values start at (a reply does not carry it); needed with --model
        /// for a reply.
        #[arg(long, value_parser = parse_register)]
        address: Option<u16>,
    },
    /// A TI Z-Stack MT (ZNP) frame from a Zigbee coordinator's UART, with the ZCL frame inside it.
    Znp {
        /// The frame in hex, from the FE start byte to the FCS; spaces, `:` and `-` are ignored.
        #[arg(required = true, num_args = 1..)]
        hex: Vec<String>,
    },
}

/// The direction of a Modbus frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectionArg {
    /// Master to slave.
    Request,
    /// Slave to master.
    Response,
    /// Try both.
    Detect,
}

fn parse_register(text: &str) -> Result<u16, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("`{text}` is not a register address; write 0x0048 or 72"))
}

/// Runs the subcommand, writing JSON to `out`.
pub fn run(command: DecodeCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let json = match command {
        DecodeCommand::Dlt645 { hex } => decode_dlt645(&parse_hex(&hex.join(" "))?)?,
        DecodeCommand::Modbus {
            hex,
            direction,
            model,
            models_dir,
            address,
        } => {
            let map = match model {
                Some(model) => Some(load_model(&model, models_dir.as_deref())?),
                None => None,
            };
            decode_modbus(
                &parse_hex(&hex.join(" "))?,
                direction,
                map.as_ref(),
                address,
            )?
        }
        DecodeCommand::Znp { hex } => {
            concentrator_builtin_drivers::decode_znp(&parse_hex(&hex.join(" "))?)
                .map_err(|e| CliError::usage(format!("not a valid MT frame: {e}")))?
        }
    };
    let text = serde_json::to_string_pretty(&json).map_err(|e| CliError::Failed(e.into()))?;
    writeln!(out, "{text}").map_err(|e| CliError::Failed(e.into()))
}

/// Hex digits to bytes; separators (whitespace, `:`, `-`, `,`) and `0x` prefixes are ignored.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, CliError> {
    let cleaned = text.replace("0x", " ").replace("0X", " ");
    let mut digits = Vec::new();
    for (position, c) in cleaned.chars().enumerate() {
        match c {
            c if c.is_ascii_hexdigit() => digits.push(c),
            c if c.is_whitespace() || matches!(c, ':' | '-' | ',') => {}
            other => {
                return Err(CliError::usage(format!(
                    "`{other}` (character {}) is not a hex digit; give the frame as hex bytes like `68 01 00 ...`",
                    position + 1
                )))
            }
        }
    }
    if digits.is_empty() {
        return Err(CliError::usage(
            "no bytes given; give the frame as hex bytes like `68 01 00 ...`",
        ));
    }
    if digits.len() % 2 != 0 {
        return Err(CliError::usage(format!(
            "{} hex digits is an odd number: every byte takes two (a digit is missing or extra)",
            digits.len()
        )));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| {
            let byte: String = pair.iter().collect();
            u8::from_str_radix(&byte, 16).unwrap_or(0)
        })
        .collect())
}

fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

// ---- DL/T 645 --------------------------------------------------------------------------------------

fn decode_dlt645(bytes: &[u8]) -> Result<Value, CliError> {
    let decoded = dlt645::Frame::decode_exact(bytes)
        .map_err(|e| CliError::usage(format!("not a valid DL/T 645 frame: {e}")))?;
    let frame = &decoded.frame;
    let control = frame.control;
    let mut object = Map::new();
    object.insert("protocol".into(), json!("dlt645-2007"));
    object.insert("preamble".into(), json!(decoded.preamble));
    object.insert("address".into(), json!(frame.address.to_string()));
    let address_kind = if frame.address.is_broadcast() {
        "broadcast"
    } else if frame.address.has_wildcard() {
        "wildcard"
    } else {
        "meter"
    };
    object.insert("address_kind".into(), json!(address_kind));
    object.insert(
        "control".into(),
        json!({
            "code": format!("0x{:02X}", control.0),
            "function": control.function().map(|f| to_json(&f)),
            "function_code": format!("0x{:02X}", control.function_code()),
            "direction": if control.is_reply() { "reply" } else { "request" },
            "abnormal": control.is_abnormal(),
            "follow_up": control.has_follow_up(),
            "text": control.to_string(),
        }),
    );
    object.insert("length".into(), json!(frame.data.len()));
    object.insert("data".into(), json!(spaced(&frame.data)));
    let checksum_at = decoded.len - 2;
    object.insert(
        "checksum".into(),
        json!(format!("0x{:02X}", bytes[checksum_at])),
    );
    object.insert("fields".into(), dlt645_fields(frame));
    Ok(Value::Object(object))
}

fn data_id_json(data: &[u8]) -> Option<(dlt645::DataId, Value)> {
    let di = dlt645::DataId::from_wire(data.get(..4)?.try_into().ok()?);
    Some((di, json!({ "data_id": di.to_string(), "name": di.name() })))
}

fn insert(value: &mut Value, key: &str, item: Value) {
    if let Value::Object(map) = value {
        map.insert(key.to_string(), item);
    }
}

fn dlt645_fields(frame: &dlt645::Frame) -> Value {
    use dlt645::Function as F;
    let control = frame.control;
    let data = frame.data.as_slice();
    if control.is_reply() && control.is_abnormal() {
        let exception = dlt645::Dlt645Exception {
            function: control.function(),
            error_byte: data.first().copied().unwrap_or(0),
        };
        return json!({
            "error_byte": format!("0x{:02X}", exception.error_byte),
            "errors": to_json(&exception.bits()),
            "message": exception.to_string(),
        });
    }
    let Some(function) = control.function() else {
        return json!({});
    };
    let password = |at: usize| {
        data.get(at..at + 4)
            .map(|p| json!({ "level": format!("{:02X}", p[0]), "code": "******" }))
    };
    let operator = |at: usize| {
        data.get(at..at + 4).map(|c| {
            c.iter()
                .rev()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        })
    };
    match (function, control.is_reply()) {
        (F::ReadData | F::ReadFollowUp, false) => {
            let Some((_, mut fields)) = data_id_json(data) else {
                return json!({ "problem": "no data identifier" });
            };
            if function == F::ReadFollowUp {
                insert(&mut fields, "sequence", json!(data.get(4)));
            }
            fields
        }
        (F::ReadData | F::ReadFollowUp, true) => {
            let Some((di, mut fields)) = data_id_json(data) else {
                return json!({ "problem": "no data identifier" });
            };
            let (values, sequence) = if function == F::ReadFollowUp && data.len() > 4 {
                (&data[4..data.len() - 1], data.last().copied())
            } else {
                (&data[4..], None)
            };
            insert(&mut fields, "value_bytes", json!(spaced(values)));
            if let Some(sequence) = sequence {
                insert(&mut fields, "sequence", json!(sequence));
            }
            if control.has_follow_up() {
                insert(
                    &mut fields,
                    "note",
                    json!("more data follows: read it with 0x12 (read follow-up)"),
                );
            } else if function == F::ReadData {
                match dlt645::decode_value(di, values) {
                    Ok(value) => {
                        let text = match &value {
                            dlt645::Value::Reading(r) => Some(r.to_string()),
                            _ => None,
                        };
                        insert(&mut fields, "value", to_json(&value));
                        if let Some(text) = text {
                            insert(&mut fields, "value_text", json!(text));
                        }
                    }
                    Err(e) => insert(&mut fields, "value_problem", json!(e.to_string())),
                }
            }
            fields
        }
        (F::ReadAddress, false) => json!({ "wildcard": frame.address.has_wildcard() }),
        (F::ReadAddress, true) => match data.get(..6) {
            Some(a) => {
                json!({ "meter_address": dlt645::Dlt645Address([a[0], a[1], a[2], a[3], a[4], a[5]]).to_string() })
            }
            None => json!({ "problem": "a read-address reply carries 6 address bytes" }),
        },
        (F::WriteData, false) => {
            let Some((_, mut fields)) = data_id_json(data) else {
                return json!({ "problem": "no data identifier" });
            };
            insert(&mut fields, "password", json!(password(4)));
            insert(&mut fields, "operator", json!(operator(8)));
            insert(
                &mut fields,
                "value_bytes",
                json!(spaced(data.get(12..).unwrap_or_default())),
            );
            fields
        }
        (F::BroadcastTime, false) => match dlt645::MeterDateTime::from_wire(data) {
            Ok(time) => json!({ "time": time.to_string() }),
            Err(e) => json!({ "problem": e.to_string() }),
        },
        (F::Freeze, false) => {
            let when = data
                .iter()
                .rev()
                .map(|b| format!("{b:02X}"))
                .collect::<String>();
            json!({ "mmhhDDMM": when, "instant": data == [0x99; 4] })
        }
        (F::RelayControl, false) => {
            let command = data
                .get(8)
                .map(|&n1| match dlt645::RelayCommand::from_code(n1) {
                    Some(c) => to_json(&c),
                    None => json!(format!("unknown N1 0x{n1:02X}")),
                });
            let valid_until = data
                .get(10..16)
                .map(|t| match dlt645::MeterDateTime::from_wire(t) {
                    Ok(time) => time.to_string(),
                    Err(e) => format!("invalid: {e}"),
                });
            json!({
                "password": password(0),
                "operator": operator(4),
                "command": command,
                "n1": data.get(8).map(|b| format!("0x{b:02X}")),
                "valid_until": valid_until,
            })
        }
        (F::ChangePassword, false) => {
            let Some((_, mut fields)) = data_id_json(data) else {
                return json!({ "problem": "no data identifier" });
            };
            insert(&mut fields, "old_password", json!(password(4)));
            insert(&mut fields, "new_password", json!(password(8)));
            fields
        }
        (F::ClearMaxDemand | F::ClearMeter | F::ClearEvents, false) => {
            let mut fields = json!({ "password": password(0), "operator": operator(4) });
            if let Some((_, di)) = data.get(8..).and_then(data_id_json) {
                insert(&mut fields, "events", di);
            }
            fields
        }
        _ => json!({}),
    }
}

// ---- Modbus ----------------------------------------------------------------------------------------

fn load_model(model: &str, dir: Option<&std::path::Path>) -> Result<modbus::RegisterMap, CliError> {
    let mut registry =
        modbus::ModelRegistry::builtin().map_err(|e| CliError::Failed(anyhow::anyhow!("{e}")))?;
    if let Some(dir) = dir {
        registry
            .load_dir(dir)
            .map_err(|e| CliError::usage(e.to_string()))?;
    }
    registry.get(model).cloned().ok_or_else(|| {
        let known: Vec<&str> = registry.models().collect();
        CliError::usage(format!(
            "no register map for model `{model}`; known models: {}",
            known.join(", ")
        ))
    })
}

fn decode_modbus(
    bytes: &[u8],
    direction: DirectionArg,
    map: Option<&modbus::RegisterMap>,
    address: Option<u16>,
) -> Result<Value, CliError> {
    use modbus::Direction as D;
    let attempt = |d: D| modbus::decode_exact(bytes, d);
    let (decoded, note) = match direction {
        DirectionArg::Request => (attempt(D::Request).map_err(|e| bad_modbus("request", &e))?, None),
        DirectionArg::Response => (attempt(D::Response).map_err(|e| bad_modbus("response", &e))?, None),
        DirectionArg::Detect => match (attempt(D::Request), attempt(D::Response)) {
            (Ok(request), Ok(_)) => {
                (request, Some("the same bytes are also a valid reply (a write-single reply echoes its request)"))
            }
            (Ok(request), Err(_)) => (request, None),
            (Err(_), Ok(response)) => (response, None),
            (Err(as_request), Err(as_response)) => {
                let exception_like = bytes.get(1).is_some_and(|f| f & 0x80 != 0);
                let message = if exception_like {
                    format!("not a valid Modbus RTU response: {as_response}")
                } else {
                    format!(
                        "not a valid Modbus RTU frame: as a request, {as_request}; as a response, {as_response} \
                         (use --direction to pick one)"
                    )
                };
                return Err(CliError::usage(message));
            }
        },
    };
    let crc = modbus::crc16(&bytes[..bytes.len() - 2]);
    let mut object = Map::new();
    object.insert("protocol".into(), json!("modbus-rtu"));
    match &decoded {
        modbus::Decoded::Request(adu) => {
            object.insert("direction".into(), json!("request"));
            object.insert("slave".into(), json!(adu.slave));
            request_fields(&mut object, &adu.pdu, map);
        }
        modbus::Decoded::Response(adu) => {
            object.insert("direction".into(), json!("response"));
            object.insert("slave".into(), json!(adu.slave));
            response_fields(&mut object, &adu.pdu, map, address)?;
        }
    }
    object.insert("crc".into(), json!(format!("0x{crc:04X}")));
    if let Some(note) = note {
        object.insert("note".into(), json!(note));
    }
    Ok(Value::Object(object))
}

fn bad_modbus(direction: &str, error: &modbus::FrameError) -> CliError {
    CliError::usage(format!("not a valid Modbus RTU {direction}: {error}"))
}

fn function_name(function: u8) -> &'static str {
    match function {
        3 => "read holding registers",
        4 => "read input registers",
        6 => "write single register",
        16 => "write multiple registers",
        _ => "unknown",
    }
}

fn kind_of(function: u8) -> modbus::RegisterKind {
    if function == 3 {
        modbus::RegisterKind::Holding
    } else {
        modbus::RegisterKind::Input
    }
}

/// The map's quantities wholly inside `address .. address + count` of `kind`.
fn covered(
    map: &modbus::RegisterMap,
    kind: modbus::RegisterKind,
    address: u16,
    count: u16,
) -> Vec<usize> {
    let end = u32::from(address) + u32::from(count);
    (0..map.registers.len())
        .filter(|&i| {
            let r = &map.registers[i];
            r.kind == kind && r.address >= address && r.end() <= end
        })
        .collect()
}

fn request_fields(
    object: &mut Map<String, Value>,
    pdu: &modbus::Request,
    map: Option<&modbus::RegisterMap>,
) {
    let (function, address) = match pdu {
        modbus::Request::ReadHoldingRegisters { address, count }
        | modbus::Request::ReadInputRegisters { address, count } => {
            let function = if matches!(pdu, modbus::Request::ReadHoldingRegisters { .. }) {
                3
            } else {
                4
            };
            object.insert("count".into(), json!(count));
            if let Some(map) = map {
                let names: Vec<Value> = covered(map, kind_of(function), *address, *count)
                    .into_iter()
                    .map(|i| {
                        let r = &map.registers[i];
                        json!({ "quantity": r.quantity, "address": format!("0x{:04X}", r.address), "type": r.data_type.name(), "unit": r.unit })
                    })
                    .collect();
                object.insert("model".into(), json!(map.model));
                object.insert("quantities".into(), Value::Array(names));
            }
            (function, *address)
        }
        modbus::Request::WriteSingleRegister { address, value } => {
            object.insert("value".into(), json!(value));
            (6, *address)
        }
        modbus::Request::WriteMultipleRegisters { address, values } => {
            object.insert("count".into(), json!(values.len()));
            object.insert("values".into(), json!(values));
            (16, *address)
        }
    };
    object.insert("function".into(), json!(function));
    object.insert("function_name".into(), json!(function_name(function)));
    object.insert("address".into(), json!(format!("0x{address:04X}")));
}

fn response_fields(
    object: &mut Map<String, Value>,
    pdu: &modbus::Response,
    map: Option<&modbus::RegisterMap>,
    start: Option<u16>,
) -> Result<(), CliError> {
    match pdu {
        modbus::Response::ReadHoldingRegisters { values }
        | modbus::Response::ReadInputRegisters { values } => {
            let function = if matches!(pdu, modbus::Response::ReadHoldingRegisters { .. }) {
                3
            } else {
                4
            };
            object.insert("function".into(), json!(function));
            object.insert("function_name".into(), json!(function_name(function)));
            object.insert("byte_count".into(), json!(values.len() * 2));
            object.insert(
                "registers".into(),
                json!(values
                    .iter()
                    .map(|v| format!("0x{v:04X}"))
                    .collect::<Vec<_>>()),
            );
            if values.len() == 2 {
                let float = f32::from_bits((u32::from(values[0]) << 16) | u32::from(values[1]));
                if float.is_finite() {
                    object.insert("as_f32be".into(), json!(float));
                }
                object.insert(
                    "as_u32be".into(),
                    json!((u32::from(values[0]) << 16) | u32::from(values[1])),
                );
            }
            if let Some(map) = map {
                let Some(address) = start else {
                    return Err(CliError::usage(
                        "a reply does not carry the register it starts at; give it with --address (e.g. --address 0x0048)",
                    ));
                };
                let count = u16::try_from(values.len()).unwrap_or(u16::MAX);
                let block = modbus::ReadBlock {
                    kind: kind_of(function),
                    address,
                    count,
                    registers: covered(map, kind_of(function), address, count),
                };
                object.insert("model".into(), json!(map.model));
                object.insert("address".into(), json!(format!("0x{address:04X}")));
                object.insert(
                    "quantities".into(),
                    to_json(&map.decode_block(&block, values)),
                );
            }
        }
        modbus::Response::WriteSingleRegister { address, value } => {
            object.insert("function".into(), json!(6));
            object.insert("function_name".into(), json!(function_name(6)));
            object.insert("address".into(), json!(format!("0x{address:04X}")));
            object.insert("value".into(), json!(value));
        }
        modbus::Response::WriteMultipleRegisters { address, count } => {
            object.insert("function".into(), json!(16));
            object.insert("function_name".into(), json!(function_name(16)));
            object.insert("address".into(), json!(format!("0x{address:04X}")));
            object.insert("count".into(), json!(count));
        }
        modbus::Response::Exception(exception) => {
            object.insert("function".into(), json!(exception.function | 0x80));
            object.insert(
                "function_name".into(),
                json!(format!(
                    "exception to {}",
                    function_name(exception.function)
                )),
            );
            object.insert("exception_code".into(), json!(exception.code.code()));
            object.insert("exception".into(), json!(exception.code.name()));
            object.insert("message".into(), json!(exception.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_to_json(command: DecodeCommand) -> Result<Value, String> {
        let mut out = Vec::new();
        run(command, &mut out).map_err(|e| e.to_string())?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    fn dlt(hex: &str) -> Result<Value, String> {
        run_to_json(DecodeCommand::Dlt645 {
            hex: vec![hex.to_string()],
        })
    }

    fn mb(hex: &str) -> Result<Value, String> {
        run_to_json(DecodeCommand::Modbus {
            hex: vec![hex.to_string()],
            direction: DirectionArg::Detect,
            model: None,
            models_dir: None,
            address: None,
        })
    }

    #[test]
    fn dlt645_read_reply() {
        let v =
            dlt("FE FE FE FE 68 01 00 00 00 00 00 68 91 08 33 33 34 33 9A 78 56 34 D3 16").unwrap();
        assert_eq!(v["address"], "000000000001");
        assert_eq!(v["fields"]["data_id"], "00010000");
        assert_eq!(v["fields"]["value_text"], "12345.67 kWh");
        assert_eq!(v["fields"]["value"]["value"]["mantissa"], 1_234_567);
    }

    #[test]
    fn dlt645_bad_checksum() {
        let err = dlt("FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B2 16").unwrap_err();
        assert_eq!(
            err,
            "not a valid DL/T 645 frame: checksum is 0xB3, the frame says 0xB2 (byte 18)"
        );
    }

    #[test]
    fn hex_errors() {
        assert!(parse_hex("68 0")
            .unwrap_err()
            .to_string()
            .contains("odd number"));
        assert!(parse_hex("68 0G")
            .unwrap_err()
            .to_string()
            .starts_with("`G` (character 5)"));
        assert_eq!(parse_hex("0x68:01-02").unwrap(), vec![0x68, 0x01, 0x02]);
    }

    #[test]
    fn modbus_detects_direction() {
        assert_eq!(
            mb("01 04 00 00 00 02 71 CB").unwrap()["direction"],
            "request"
        );
        let v = mb("01 04 04 43 66 80 00 6F DF").unwrap();
        assert_eq!(v["direction"], "response");
        assert_eq!(v["as_f32be"], 230.5);
        assert_eq!(
            mb("01 84 02 C2 C1").unwrap()["exception"],
            "illegal data address"
        );
        assert!(mb("11 06 00 01 00 03 9A 9B").unwrap()["note"].is_string());
    }
}
