//! Example vendor driver plugin: a small Modbus-RTU-like energy meter ("EM-1").
//!
//! Who uses it: meter vendors, as the complete example that `docs/plugins.md` walks through; the plugin
//! host's tests, which load it both statically (as an rlib) and through `dlopen` (as the cdylib); and
//! the sim demo. It is built as both crate types from one source.
//!
//! The meter speaks three Modbus functions — read holding registers (0x03), write single register
//! (0x06), write multiple registers (0x10) — with this register map:
//!
//! | registers | content | scale |
//! |---|---|---|
//! | 0x0000–0x0001 | active energy import, total (u32) | 10 Wh |
//! | 0x0002–0x0003 | active energy export, total (u32) | 10 Wh |
//! | 0x0004–0x000B | active energy import, tariffs 1–4 (u32 each) | 10 Wh |
//! | 0x0010–0x0012 | voltage, phases A–C (u16) | 0.1 V |
//! | 0x0020–0x0022 | current, phases A–C (u16) | 0.01 A |
//! | 0x0030–0x0031 | active power, total (i32) | 1 W |
//! | 0x0040 | relay state (0 open, 1 closed, 2 armed) | |
//! | 0x0041 | relay command (write: 1 trip … 5 guarantee power) | |
//! | 0x0050–0x0051 | meter clock (u32 Unix seconds) | |
//! | 0x0060–0x0061 | prepaid credit left (i32) | 0.01 currency |
//! | 0x0062–0x0063 | prepaid energy left (u32) | 10 Wh |
//!
//! A meter's config (a TOML fragment) may set `model = "em-1"` (the only model) and
//! `reply_timeout_ms` (default 200). Setting the clock writes it and reads it back, in two exchanges.
//!
//! With feature `sim`, [`sim::SimExampleMeter`] emulates the meter on the HAL's sim bus.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::time::Duration;

use concentrator_plugin_sdk::{
    Decimal, DeviceException, MeterDriver, Now, Outcome, Phase, Quantity, Reading, Rejection,
    RelayCommand, RelayState, Reply, Request, Task, Timing, Unit, Value,
};

pub mod frame;
#[cfg(feature = "sim")]
pub mod sim;

/// The plugin's name, as the host reports it.
pub const PLUGIN_NAME: &str = "example-meter";

/// How a register block is decoded into a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Unsigned 32-bit, big-endian word order, as a decimal.
    U32(i8, Unit),
    /// Signed 32-bit.
    I32(i8, Unit),
    /// Unsigned 16-bit.
    U16(i8, Unit),
    /// Relay state code.
    Relay,
    /// Unix seconds.
    Clock,
}

/// Register and decoding of a quantity in the EM-1's map.
fn register_of(quantity: Quantity) -> Option<(u16, Decode)> {
    let energy = Decode::U32(1, Unit::WattHour);
    let phase = |p: Phase| match p {
        Phase::A => Some(0),
        Phase::B => Some(1),
        Phase::C => Some(2),
        Phase::Total => None,
    };
    Some(match quantity {
        Quantity::EnergyImportTotal => (0x0000, energy),
        Quantity::EnergyExportTotal => (0x0002, energy),
        Quantity::EnergyImportTariff(t @ 1..=4) => (0x0004 + 2 * u16::from(t - 1), energy),
        Quantity::Voltage(p) => (0x0010 + phase(p)?, Decode::U16(-1, Unit::Volt)),
        Quantity::Current(p) => (0x0020 + phase(p)?, Decode::U16(-2, Unit::Ampere)),
        Quantity::ActivePower(Phase::Total) => (0x0030, Decode::I32(0, Unit::Watt)),
        Quantity::RelayState => (0x0040, Decode::Relay),
        Quantity::MeterDateTime => (0x0050, Decode::Clock),
        Quantity::PrepaidRemainingMoney => (0x0060, Decode::I32(-2, Unit::Currency)),
        Quantity::PrepaidRemainingEnergy => (0x0062, energy),
        _ => return None,
    })
}

fn word_count(decode: Decode) -> u16 {
    match decode {
        Decode::U16(..) | Decode::Relay => 1,
        Decode::U32(..) | Decode::I32(..) | Decode::Clock => 2,
    }
}

/// The exchange in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Idle,
    Read {
        quantity: Quantity,
        decode: Decode,
    },
    Relay,
    /// Clock written; the read-back follows.
    ClockWritten,
}

/// One EM-1 meter.
#[derive(Debug)]
pub struct ExampleMeter {
    address: u8,
    reply_timeout: Duration,
    pending: Pending,
}

impl ExampleMeter {
    fn timing(&self) -> Timing {
        Timing {
            reply_timeout: Some(self.reply_timeout),
            inter_byte_timeout: Some(Duration::from_millis(20)),
            min_idle_before: Some(Duration::from_millis(4)),
            ..Timing::default()
        }
    }

    fn read(&mut self, quantity: Quantity) -> Result<Request, Rejection> {
        let (register, decode) = register_of(quantity).ok_or_else(|| {
            format!(
                "the EM-1 does not measure {quantity}; see the register map in the driver's docs"
            )
        })?;
        self.pending = Pending::Read { quantity, decode };
        Ok(Request::new(frame::read_request(
            self.address,
            register,
            word_count(decode),
        ))
        .with_timing(self.timing()))
    }

    /// Checks address, CRC and function of a reply; returns the payload after the function code.
    fn check<'a>(&self, bytes: &'a [u8], function: u8) -> Result<&'a [u8], Box<Outcome>> {
        let protocol = |text: String| Err(Box::new(Outcome::ProtocolError(text)));
        if !frame::crc_ok(bytes) {
            return protocol(format!("bad CRC in a {}-byte reply", bytes.len()));
        }
        if bytes.len() < 5 {
            return protocol(format!(
                "a {}-byte reply is too short to be a frame",
                bytes.len()
            ));
        }
        if bytes[0] != self.address {
            return protocol(format!(
                "reply from address {} to a request for {}",
                bytes[0], self.address
            ));
        }
        let body = &bytes[2..bytes.len() - 2];
        if bytes[1] == function | frame::EXCEPTION_BIT {
            let code = body.first().copied().unwrap_or(0);
            let text = match code {
                1 => "illegal function",
                2 => "illegal data address (the meter does not have this register)",
                3 => "illegal data value",
                4 => "device failure",
                _ => "unknown exception",
            };
            let exception = DeviceException {
                code: u32::from(code),
                text: text.to_owned(),
            };
            return Err(Box::new(Outcome::DeviceException(exception)));
        }
        if bytes[1] != function {
            return protocol(format!(
                "reply with function {:#04x} to function {function:#04x}",
                bytes[1]
            ));
        }
        Ok(body)
    }

    fn decode_read(&self, quantity: Quantity, decode: Decode, bytes: &[u8]) -> Outcome {
        let body = match self.check(bytes, frame::READ_HOLDING) {
            Ok(body) => body,
            Err(outcome) => return *outcome,
        };
        let words = usize::from(word_count(decode));
        let Some(data) = body
            .get(1..)
            .filter(|d| body[0] as usize == 2 * words && d.len() == 2 * words)
        else {
            return Outcome::ProtocolError(format!(
                "expected {words} registers, got a {}-byte payload",
                body.len()
            ));
        };
        let raw32 = || {
            data.get(..4)
                .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
                .unwrap_or(0)
        };
        let raw16 = u16::from_be_bytes([data[0], data[1]]);
        let value = match decode {
            Decode::U32(exp, unit) => Value::Decimal(Decimal::new(i64::from(raw32()), exp, unit)),
            Decode::I32(exp, unit) => {
                Value::Decimal(Decimal::new(i64::from(raw32() as i32), exp, unit))
            }
            Decode::U16(exp, unit) => Value::Decimal(Decimal::new(i64::from(raw16), exp, unit)),
            Decode::Clock => Value::Timestamp(i64::from(raw32())),
            Decode::Relay => match raw16 {
                0 => Value::Relay(RelayState::Open),
                1 => Value::Relay(RelayState::Closed),
                2 => Value::Relay(RelayState::ArmedForClose),
                other => {
                    return Outcome::ProtocolError(format!(
                        "relay state register holds {other}, not 0, 1 or 2"
                    ))
                }
            },
        };
        Outcome::Done(vec![Reading::new(quantity, value)])
    }
}

impl MeterDriver for ExampleMeter {
    fn open(address: &[u8], config: &str) -> Result<Self, Rejection> {
        let address = match address {
            [a @ 1..=247] => *a,
            _ => {
                return Err(format!(
                    "an EM-1 address is one byte from 1 to 247, not {address:02x?}"
                )
                .into())
            }
        };
        let table: toml::Table = config
            .parse()
            .map_err(|e| format!("the meter's config is not TOML: {e}"))?;
        let mut reply_timeout = Duration::from_millis(200);
        for (key, value) in &table {
            match (key.as_str(), value) {
                ("model", toml::Value::String(model)) if model == "em-1" => {}
                ("model", other) => return Err(format!("model {other} is not known; the only model is \"em-1\"").into()),
                ("reply_timeout_ms", toml::Value::Integer(ms @ 1..=5000)) => {
                    reply_timeout = Duration::from_millis(*ms as u64);
                }
                // API 1.2: the host passes the bus's line settings; this meter's timing needs none,
                // but a setting that does not parse is the host's mistake worth naming.
                ("line", toml::Value::String(line)) => {
                    line.parse::<concentrator_plugin_sdk::api::line::Line>()?;
                }
                ("reply_timeout_ms", other) => {
                    return Err(format!("reply_timeout_ms = {other} is not a number of milliseconds from 1 to 5000").into())
                }
                (other, _) => {
                    return Err(format!("unknown key `{other}` in the meter's config; known keys: model, reply_timeout_ms, line").into())
                }
            }
        }
        Ok(ExampleMeter {
            address,
            reply_timeout,
            pending: Pending::Idle,
        })
    }

    fn begin(&mut self, task: &Task, _now: Now) -> Result<Request, Rejection> {
        match *task {
            Task::Read(quantity) => self.read(quantity),
            Task::Relay(command) => {
                let code = match command {
                    RelayCommand::Trip => 1,
                    RelayCommand::CloseAllowed => 2,
                    RelayCommand::CloseDirect => 3,
                    RelayCommand::Alarm => 4,
                    RelayCommand::GuaranteePower => 5,
                };
                self.pending = Pending::Relay;
                Ok(
                    Request::new(frame::write_single_request(self.address, 0x0041, code))
                        .with_timing(self.timing()),
                )
            }
            Task::SetClock(unix) => {
                let seconds = u32::try_from(unix)
                    .map_err(|_| format!("the EM-1 clock cannot hold Unix time {unix}"))?;
                self.pending = Pending::ClockWritten;
                let words = [(seconds >> 16) as u16, seconds as u16];
                Ok(
                    Request::new(frame::write_multiple_request(self.address, 0x0050, &words))
                        .with_timing(self.timing()),
                )
            }
            Task::DiscoverAddress => {
                Err("the EM-1 has no broadcast read; set its address in the config".into())
            }
            Task::ReadHistory(_) => Err("the EM-1 keeps no reading history".into()),
        }
    }

    fn is_complete(&mut self, reply: &[u8]) -> bool {
        frame::expected_reply_len(reply).is_some_and(|len| reply.len() >= len)
    }

    fn finish(&mut self, reply: Reply<'_>, _now: Now) -> Outcome {
        let pending = std::mem::replace(&mut self.pending, Pending::Idle);
        let bytes = match reply {
            Reply::Complete(bytes) => bytes,
            Reply::Silence(bytes) => {
                return Outcome::ProtocolError(format!(
                    "incomplete reply of {} bytes: {bytes:02x?}",
                    bytes.len()
                ))
            }
            Reply::Timeout => return Outcome::ProtocolError(String::from("no reply")),
            Reply::Sent => return Outcome::Done(Vec::new()),
        };
        match pending {
            Pending::Idle => {
                Outcome::ProtocolError(String::from("a reply arrived but no task was started"))
            }
            Pending::Read { quantity, decode } => {
                let outcome = self.decode_read(quantity, decode, bytes);
                if let Outcome::Done(readings) = &outcome {
                    for reading in readings {
                        log::info!("meter {}: {reading}", self.address);
                    }
                }
                outcome
            }
            Pending::Relay => match self.check(bytes, frame::WRITE_SINGLE) {
                Ok(_) => Outcome::Done(Vec::new()),
                Err(outcome) => *outcome,
            },
            Pending::ClockWritten => match self.check(bytes, frame::WRITE_MULTIPLE) {
                Ok(_) => match self.read(Quantity::MeterDateTime) {
                    Ok(next) => Outcome::NeedAnotherExchange {
                        readings: Vec::new(),
                        next,
                    },
                    Err(e) => Outcome::ProtocolError(e.to_string()),
                },
                Err(outcome) => *outcome,
            },
        }
    }
}

concentrator_plugin_sdk::declare_meter_driver!(
    ExampleMeter,
    name = PLUGIN_NAME,
    version = env!("CARGO_PKG_VERSION")
);

#[cfg(feature = "export")]
concentrator_plugin_sdk::export_plugin!();

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Now = Now {
        unix_millis: 0,
        monotonic: Duration::ZERO,
    };

    #[test]
    fn reads_a_register_from_recorded_frames() {
        let mut meter = ExampleMeter::open(&[7], "model = \"em-1\"").unwrap();
        let request = meter
            .begin(&Task::Read(Quantity::Voltage(Phase::A)), NOW)
            .unwrap();
        assert_eq!(request.frame, frame::read_request(7, 0x0010, 1));
        let reply = frame::seal(vec![7, 0x03, 2, 0x09, 0x0A]);
        // Fed one byte at a time, the reply is complete exactly at its last byte.
        for end in 1..reply.len() {
            assert!(
                !meter.is_complete(&reply[..end]),
                "complete after {end} bytes"
            );
        }
        assert!(meter.is_complete(&reply));
        let expected = Reading::new(
            Quantity::Voltage(Phase::A),
            Value::Decimal(Decimal::new(0x090A, -1, Unit::Volt)),
        );
        assert_eq!(
            meter.finish(Reply::Complete(&reply), NOW),
            Outcome::Done(vec![expected])
        );
    }

    #[test]
    fn exceptions_and_garbage_are_typed() {
        let mut meter = ExampleMeter::open(&[7], "").unwrap();
        meter
            .begin(&Task::Read(Quantity::PrepaidRemainingEnergy), NOW)
            .unwrap();
        let exception = frame::seal(vec![7, 0x83, 2]);
        assert!(
            matches!(meter.finish(Reply::Complete(&exception), NOW), Outcome::DeviceException(e) if e.code == 2)
        );
        meter
            .begin(&Task::Read(Quantity::EnergyImportTotal), NOW)
            .unwrap();
        assert!(matches!(
            meter.finish(Reply::Complete(&[7, 3, 4, 0, 0]), NOW),
            Outcome::ProtocolError(_)
        ));
    }

    #[test]
    fn config_errors_say_what_to_fix() {
        let err = ExampleMeter::open(&[7], "colour = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `colour`"), "{err}");
        let err = ExampleMeter::open(&[0], "").unwrap_err().to_string();
        assert!(err.contains("1 to 247"), "{err}");
    }
}
