//! Finding the meters on a bus, for installers commissioning a block (`concentrator scan`).
//!
//! - DL/T 645: read-address (0x13) to the wildcard `AAAAAAAAAAAA`. One meter answers cleanly; several
//!   answer at once and garble each other, and then the search narrows the address: it fixes the
//!   lowest address byte (the first on the wire) to each of its 100 BCD values with the rest still
//!   wildcards, and so on byte by byte, until each probe is answered by one meter or none. A clean
//!   answer to a probe means exactly one meter in that range; a garbled one means several.
//! - Modbus RTU: every slave id (1–247, or a chosen range) at each candidate line setting, with a
//!   one-register read; any answer, an exception included, means a device. Its model is guessed from
//!   the registers it has (checked by the installer against the nameplate).
//!
//! The scanner talks to the bus directly through the codecs (not through the scheduler), so it is
//! used while the daemon is stopped; the port is opened exclusively.

use std::time::Duration;

use concentrator_driver_dlt645::{self as dlt645, Dlt645Address};
use concentrator_driver_modbus::{self as modbus, RegisterKind};
use concentrator_hal::{HalError, LineSettings, ReplyEnd, Rs485Bus};

/// A meter the scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The address to write in the config (12 digits, or a slave id).
    pub address: String,
    /// The driver that speaks its protocol.
    pub driver: &'static str,
    /// The line settings it answered at.
    pub line: LineSettings,
    /// The model, when it could be told from the device (Modbus).
    pub model: Option<&'static str>,
}

/// Progress reports: `(done, total, what is being probed)`.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// What one probe heard.
enum Heard {
    Nothing,
    Clean(Dlt645Address),
    Garbled,
}

fn probe_dlt645(
    bus: &mut dyn Rs485Bus,
    pattern: Dlt645Address,
    timeout: Duration,
) -> Result<Heard, HalError> {
    let frame = dlt645::Frame::new(
        pattern,
        dlt645::ControlCode::request(dlt645::Function::ReadAddress),
        Vec::new(),
    );
    let Ok(bytes) = frame.encode() else {
        return Ok(Heard::Nothing);
    };
    let mut timing = dlt645::exchange_timing(&bus.settings());
    timing.first_byte_timeout = timing.first_byte_timeout.min(timeout);
    let mut reply = Vec::new();
    let info = bus.transact(&bytes, &timing, &mut reply, &mut |r| {
        dlt645::reply_complete(r).is_done()
    })?;
    if info.end == ReplyEnd::NoReply {
        return Ok(Heard::Nothing);
    }
    let heard = dlt645::decode_reply(&reply)
        .ok()
        .and_then(|frame| dlt645::address_reply(&frame).ok())
        .and_then(Result::ok)
        .filter(|address| pattern.addresses(address));
    Ok(heard.map_or(Heard::Garbled, Heard::Clean))
}

/// Finds every DL/T 645 meter on the bus at its current line settings. `timeout` is the reply window
/// for each probe (the standard allows 500 ms; meters usually answer within 100 ms).
pub fn scan_dlt645(
    bus: &mut dyn Rs485Bus,
    timeout: Duration,
    progress: Progress<'_>,
) -> Result<Vec<Found>, HalError> {
    let line = bus.settings();
    let mut found = Vec::new();
    progress(0, 1, "AAAAAAAAAAAA");
    match probe_dlt645(bus, Dlt645Address::WILDCARD, timeout)? {
        Heard::Nothing => {}
        Heard::Clean(address) => found.push(address),
        Heard::Garbled => search(bus, [0xAA; 6], 0, timeout, &mut found, progress)?,
    }
    progress(1, 1, "done");
    Ok(found
        .into_iter()
        .map(|a| Found {
            address: a.to_string(),
            driver: "dlt645",
            line,
            model: None,
        })
        .collect())
}

/// Narrows the wire byte `level` (0: the two lowest digits) of `pattern` over its 100 BCD values.
fn search(
    bus: &mut dyn Rs485Bus,
    pattern: [u8; 6],
    level: usize,
    timeout: Duration,
    found: &mut Vec<Dlt645Address>,
    progress: Progress<'_>,
) -> Result<(), HalError> {
    for value in 0..100u8 {
        let mut probe = pattern;
        probe[level] = ((value / 10) << 4) | (value % 10);
        let address = Dlt645Address(probe);
        progress(usize::from(value), 100, &address.to_string());
        match probe_dlt645(bus, address, timeout)? {
            Heard::Nothing => {}
            Heard::Clean(address) => found.push(address),
            Heard::Garbled if level < 5 => search(bus, probe, level + 1, timeout, found, progress)?,
            // Two meters with the same address: report it once; the installer must re-address one.
            Heard::Garbled => {
                log::warn!(
                    "more than one meter answers as {address}: two meters share this address"
                );
                found.push(address);
            }
        }
    }
    Ok(())
}

fn probe_modbus(
    bus: &mut dyn Rs485Bus,
    slave: u8,
    kind: RegisterKind,
    register: u16,
    count: u16,
    timeout: Duration,
) -> Result<Option<Result<Vec<u16>, ()>>, HalError> {
    let Ok(request) = modbus::read_registers(slave, kind, register, count) else {
        return Ok(None);
    };
    let timing = modbus::exchange_timing(&bus.settings(), timeout);
    let mut reply = Vec::new();
    let info = bus.transact(&request.encode(), &timing, &mut reply, &mut |r| {
        modbus::reply_complete(r).is_done()
    })?;
    if info.end == ReplyEnd::NoReply {
        return Ok(None);
    }
    match modbus::decode_reply(&reply, slave) {
        Ok(response) => Ok(Some(
            modbus::interpret(&request, &response)
                .ok()
                .and_then(Result::ok)
                .ok_or(()),
        )),
        // Something answered, if garbled: a device is there (or two share the id).
        Err(_) => Ok(Some(Err(()))),
    }
}

/// Tells the model from the registers a device has: Eastron meters have float input registers from 0
/// (SDM630 with three phases), DDS238 has integer holding registers (voltage at 0x000C).
fn guess_model(
    bus: &mut dyn Rs485Bus,
    slave: u8,
    timeout: Duration,
) -> Result<Option<&'static str>, HalError> {
    if let Some(Ok(words)) = probe_modbus(bus, slave, RegisterKind::Input, 0x0000, 6, timeout)? {
        let l2 = f32::from_bits((u32::from(words[2]) << 16) | u32::from(words[3]));
        return Ok(Some(if l2 > 50.0 { "sdm630" } else { "sdm120" }));
    }
    if let Some(Ok(_)) = probe_modbus(bus, slave, RegisterKind::Input, 0x0000, 2, timeout)? {
        return Ok(Some("sdm120"));
    }
    if let Some(Ok(_)) = probe_modbus(bus, slave, RegisterKind::Holding, 0x000C, 1, timeout)? {
        return Ok(Some("dds238"));
    }
    Ok(None)
}

/// Finds Modbus devices with ids in `ids` at each of `lines` (the bus is left at its original settings).
pub fn scan_modbus(
    bus: &mut dyn Rs485Bus,
    lines: &[LineSettings],
    ids: std::ops::RangeInclusive<u8>,
    timeout: Duration,
    progress: Progress<'_>,
) -> Result<Vec<Found>, HalError> {
    let original = bus.settings();
    let total = lines.len() * ids.clone().count();
    let mut done = 0;
    let mut found: Vec<Found> = Vec::new();
    for &line in lines {
        bus.set_settings(line)?;
        for slave in ids.clone() {
            progress(done, total, &format!("id {slave} at {line}"));
            done += 1;
            if found.iter().any(|f| f.address == slave.to_string()) {
                continue;
            }
            let heard = probe_modbus(bus, slave, RegisterKind::Holding, 0, 1, timeout)?.or(
                probe_modbus(bus, slave, RegisterKind::Input, 0, 1, timeout)?,
            );
            if heard.is_some() {
                let model = guess_model(bus, slave, timeout)?;
                found.push(Found {
                    address: slave.to_string(),
                    driver: "modbus",
                    line,
                    model,
                });
            }
        }
    }
    bus.set_settings(original)?;
    progress(total, total, "done");
    Ok(found)
}

/// The `[[meter]]` tables for what was found on bus `bus` (at `bus_line`), ready to paste into the
/// configuration; the installer fills in each dwelling.
pub fn config_snippet(bus: &str, bus_line: LineSettings, found: &[Found]) -> String {
    let mut out = String::new();
    for (i, meter) in found.iter().enumerate() {
        out.push_str("[[meter]]\n");
        out.push_str(&format!("bus = \"{bus}\"\n"));
        out.push_str(&format!("address = \"{}\"\n", meter.address));
        out.push_str(&format!("driver = \"{}\"\n", meter.driver));
        if let Some(model) = meter.model {
            out.push_str(&format!(
                "model = \"{model}\"   # guessed from its registers: check the nameplate\n"
            ));
        } else if meter.driver == "modbus" {
            out.push_str(
                "model = \"sdm630\"   # not recognised: write its model (sdm120, sdm630, dds238)\n",
            );
        }
        out.push_str(&format!(
            "dwelling = \"unassigned-{}\"   # write the flat this meter supplies\n",
            i + 1
        ));
        if meter.line != bus_line {
            out.push_str(&format!(
                "# answered at {}: set the bus to that (or the meter to {bus_line}) before use\n",
                meter.line
            ));
        }
        out.push('\n');
    }
    out
}

/// The line settings a Modbus scan tries: the bus's own first, then the usual meter defaults.
pub fn modbus_candidates(bus_line: LineSettings) -> Vec<LineSettings> {
    let mut lines = vec![bus_line];
    for baud in [9600, 19200, 4800, 2400, 38400, 115200] {
        for format in ["8N1", "8E1"] {
            if let Ok(line) = LineSettings::with_format(baud, format) {
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
    }
    lines
}
