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

/// Where a scan is: probes done of the phase's total, what is probed now, and every meter found so
/// far (a meter is reported at the probe that finds it, not at the end).
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Probes done in this phase.
    pub done: usize,
    /// Probes in this phase (for DL/T 645: in the address range being searched).
    pub total: usize,
    /// What is probed now (an address pattern, a slave id and line setting).
    pub what: &'a str,
    /// Every meter found so far, in all phases.
    pub found: &'a [Found],
}

/// Progress reports, one per probe.
pub type Progress<'a> = &'a mut dyn FnMut(&Step<'_>);

/// Longest a probe can take: the request on the wire, the reply window, and a reply of `reply_bytes`.
pub fn probe_time(
    line: LineSettings,
    timeout: Duration,
    request_bytes: usize,
    reply_bytes: usize,
) -> Duration {
    line.wire_time(request_bytes) + timeout + line.wire_time(reply_bytes)
}

/// The most a Modbus scan of `ids` at each of `lines` takes: on an empty bus every probe waits out its
/// reply window (two probes per id: holding, then input registers). With devices present it is
/// shorter, and [`TimeLeft`] narrows it from the probes' measured pace.
pub fn modbus_worst_case(
    lines: &[LineSettings],
    ids: &std::ops::RangeInclusive<u8>,
    timeout: Duration,
) -> Duration {
    let per_line = ids.clone().count() as u32 * 2;
    lines
        .iter()
        .map(|&line| probe_time(line, timeout, 8, 0) * per_line)
        .sum()
}

/// An estimate of the time a scan phase has left: the worst case per probe until a few probes have
/// run, then their measured pace (never more than the worst case), plus any phases still to come.
#[derive(Debug, Clone)]
pub struct TimeLeft {
    started: std::time::Instant,
    worst_per_probe: Duration,
    later: Duration,
}

impl TimeLeft {
    /// A phase whose probes take at most `worst_per_probe`, followed by phases taking at most `later`.
    pub fn new(worst_per_probe: Duration, later: Duration) -> Self {
        TimeLeft {
            started: std::time::Instant::now(),
            worst_per_probe,
            later,
        }
    }

    /// The time left when `done` of `total` probes have run.
    pub fn left(&self, done: usize, total: usize) -> Duration {
        let remaining = total.saturating_sub(done) as u32;
        let worst = self.worst_per_probe * remaining;
        let this = if done >= 5 {
            let pace = self.started.elapsed() / done as u32;
            (pace * remaining).min(worst)
        } else {
            worst
        };
        this + self.later
    }
}

/// A duration as people read it: `45 s`, `3 min 20 s`, `1 h 5 min`.
pub fn human_duration(d: Duration) -> String {
    crate::timekeeper::duration_words(d.as_secs())
}

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

/// Finds every DL/T 645 meter on the bus at its current line settings and adds each to `found` as it
/// is found, so that what was found stays there when a probe fails (an unplugged adapter) and the scan
/// stops with the error. `timeout` is the reply window for each probe (the standard allows 500 ms;
/// meters usually answer within 100 ms).
pub fn scan_dlt645(
    bus: &mut dyn Rs485Bus,
    timeout: Duration,
    found: &mut Vec<Found>,
    progress: Progress<'_>,
) -> Result<(), HalError> {
    let line = bus.settings();
    progress(&Step {
        done: 0,
        total: 1,
        what: "AAAAAAAAAAAA",
        found,
    });
    match probe_dlt645(bus, Dlt645Address::WILDCARD, timeout)? {
        Heard::Nothing => {}
        Heard::Clean(address) => push_dlt645(found, address, line),
        Heard::Garbled => search(bus, [0xAA; 6], 0, timeout, line, found, progress)?,
    }
    progress(&Step {
        done: 1,
        total: 1,
        what: "done",
        found,
    });
    Ok(())
}

fn push_dlt645(found: &mut Vec<Found>, address: Dlt645Address, line: LineSettings) {
    found.push(Found {
        address: address.to_string(),
        driver: "dlt645",
        line,
        model: None,
    });
}

/// Narrows the wire byte `level` (0: the two lowest digits) of `pattern` over its 100 BCD values.
fn search(
    bus: &mut dyn Rs485Bus,
    pattern: [u8; 6],
    level: usize,
    timeout: Duration,
    line: LineSettings,
    found: &mut Vec<Found>,
    progress: Progress<'_>,
) -> Result<(), HalError> {
    for value in 0..100u8 {
        let mut probe = pattern;
        probe[level] = ((value / 10) << 4) | (value % 10);
        let address = Dlt645Address(probe);
        let what = address.to_string();
        progress(&Step {
            done: usize::from(value),
            total: 100,
            what: &what,
            found,
        });
        match probe_dlt645(bus, address, timeout)? {
            Heard::Nothing => {}
            Heard::Clean(address) => push_dlt645(found, address, line),
            Heard::Garbled if level < 5 => {
                search(bus, probe, level + 1, timeout, line, found, progress)?
            }
            // Two meters with the same address: report it once; the installer must re-address one.
            Heard::Garbled => {
                log::warn!(
                    "more than one meter answers as {address}: two meters share this address"
                );
                push_dlt645(found, address, line);
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

/// Finds Modbus devices with ids in `ids` at each of `lines` and adds each to `found` as it is found
/// (kept there when a probe fails and the scan stops with the error). The bus is left at its original
/// settings, on an error too when it can be.
pub fn scan_modbus(
    bus: &mut dyn Rs485Bus,
    lines: &[LineSettings],
    ids: std::ops::RangeInclusive<u8>,
    timeout: Duration,
    found: &mut Vec<Found>,
    progress: Progress<'_>,
) -> Result<(), HalError> {
    let original = bus.settings();
    let result = modbus_lines(bus, lines, ids, timeout, found, progress);
    let restored = bus.set_settings(original);
    result.and(restored)
}

fn modbus_lines(
    bus: &mut dyn Rs485Bus,
    lines: &[LineSettings],
    ids: std::ops::RangeInclusive<u8>,
    timeout: Duration,
    found: &mut Vec<Found>,
    progress: Progress<'_>,
) -> Result<(), HalError> {
    let total = lines.len() * ids.clone().count();
    let mut done = 0;
    for &line in lines {
        bus.set_settings(line)?;
        for slave in ids.clone() {
            let what = format!("id {slave} at {line}");
            progress(&Step {
                done,
                total,
                what: &what,
                found,
            });
            done += 1;
            let address = slave.to_string();
            if found
                .iter()
                .any(|f| f.driver == "modbus" && f.address == address)
            {
                continue;
            }
            let heard = probe_modbus(bus, slave, RegisterKind::Holding, 0, 1, timeout)?.or(
                probe_modbus(bus, slave, RegisterKind::Input, 0, 1, timeout)?,
            );
            if heard.is_some() {
                let model = guess_model(bus, slave, timeout)?;
                found.push(Found {
                    address,
                    driver: "modbus",
                    line,
                    model,
                });
            }
        }
    }
    progress(&Step {
        done: total,
        total,
        what: "done",
        found,
    });
    Ok(())
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
