//! The Modbus RTU driver plugin: this crate's codec and register maps behind the SDK's [`MeterDriver`]
//! trait.
//!
//! One [`ModbusDriver`] per meter, with the register map its config's `model` names (the built-in
//! `sdm120`, `sdm630`, `dds238`, or a user map from `models_dir`). The map's quantity names become the
//! API's quantities:
//!
//! | map quantity | API quantity |
//! |---|---|
//! | `import_active_energy`, `import_active_energy_t1`..`t4`, `export_active_energy` | `EnergyImportTotal`, `EnergyImportTariff(1..=4)`, `EnergyExportTotal` |
//! | `voltage_l1`..`l3`, `current_l1`..`l3`, `current_total` | `Voltage(A..C)`, `Current(A..C)`, `Current(Total)` |
//! | `active_power_l1`..`l3`, `active_power_total` | `ActivePower(A..C)`, `ActivePower(Total)` (the sum of the phases when the map has no total) |
//! | `meter_date_time` (Unix seconds), `relay_state` (0 open, 1 closed, 2 armed) | `MeterDateTime`, `RelayState` |
//! | `prepaid_remaining_money`, `prepaid_remaining_energy` | `PrepaidRemainingMoney`, `PrepaidRemainingEnergy` |
//! | the others of [`VENDOR_QUANTITIES`] (`frequency`, power factors, reactive energy and power) | `Vendor(n)` |
//!
//! Units become the API's (`kWh` is Wh with the exponent raised by 3). A read plans its registers with
//! [`RegisterMap::plan`], so the phases summed for a total come in as few exchanges as the map allows.
//!
//! `Relay(command)` writes the command code (1 trip, 2 close allowed, 3 close directly, 4 alarm,
//! 5 guarantee power) with function 16 to a holding register the map names `relay_control`; a map
//! without one makes the task rejected. Modbus has no broadcast clock or address discovery, so
//! `SetClock` and `DiscoverAddress` are rejected.
//!
//! An exception reply is an [`Outcome::DeviceException`] with the exception code; anything else wrong
//! is an [`Outcome::ProtocolError`]; a silent meter is a protocol error on [`Reply::Timeout`], which the
//! host reports as "no reply".

mod config;
mod quantity;

use concentrator_plugin_sdk::{
    Decimal, DeviceException, MeterDriver, Now, Outcome, Phase, Quantity, Reading, Rejection,
    RelayCommand, RelayState, Reply, Request, Task, Value,
};

pub use config::{ConfigError, Settings, KNOWN_KEYS};
pub use quantity::{api_unit, from_map_name, map_name, VENDOR_QUANTITIES};

use crate::driver::{decode_reply, interpret, write_registers};
use crate::frame::{Direction, RequestAdu};
use crate::model::{RegisterKind, RegisterMap};
use crate::plan::{QuantityValue, ReadBlock};
use crate::stream::{scan, Scan};
use crate::ModbusException;

/// The plugin's name: what a meter's `driver = "…"` names.
pub const PLUGIN_NAME: &str = "modbus";

/// What a read returns once its blocks are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The one register of this quantity.
    One(Quantity),
    /// The sum of the phases' active power, as the total.
    PhaseSum,
}

/// The exchange in flight.
#[derive(Debug, Clone)]
enum Pending {
    Idle,
    Read {
        want: Want,
        /// The block asked for now.
        current: ReadBlock,
        /// Blocks still to read, last first.
        rest: Vec<ReadBlock>,
        /// Values of the blocks read so far.
        values: Vec<QuantityValue>,
    },
    Relay(RequestAdu),
}

/// One Modbus RTU meter.
#[derive(Debug)]
pub struct ModbusDriver {
    slave: u8,
    settings: Settings,
    pending: Pending,
}

fn device_exception(exception: &ModbusException) -> Outcome {
    Outcome::DeviceException(DeviceException {
        code: u32::from(exception.code.code()),
        text: exception.to_string(),
    })
}

/// A map reading as the API's value for `quantity`.
fn to_value(quantity: Quantity, value: &QuantityValue) -> Result<Value, String> {
    let reading = value
        .reading
        .as_ref()
        .map_err(|e| format!("register `{}`: {e}", value.quantity))?;
    match quantity {
        Quantity::RelayState | Quantity::MeterDateTime => {
            let whole = (reading.exponent >= 0)
                .then(|| 10i64.checked_pow(u32::from(reading.exponent.unsigned_abs())))
                .flatten()
                .and_then(|scale| reading.mantissa.checked_mul(scale))
                .ok_or_else(|| {
                    format!(
                        "register `{}` holds {reading}, not a whole number",
                        value.quantity
                    )
                })?;
            if quantity == Quantity::MeterDateTime {
                return Ok(Value::Timestamp(whole));
            }
            match whole {
                0 => Ok(Value::Relay(RelayState::Open)),
                1 => Ok(Value::Relay(RelayState::Closed)),
                2 => Ok(Value::Relay(RelayState::ArmedForClose)),
                other => Err(format!(
                    "register `{}` holds {other}, not a relay state (0 open, 1 closed, 2 armed)",
                    value.quantity
                )),
            }
        }
        _ => {
            let (unit, shift) = api_unit(&reading.unit).ok_or_else(|| {
                format!(
                    "register `{}` has the unit `{}`, which the plugin API cannot carry",
                    value.quantity, reading.unit
                )
            })?;
            let exponent = reading
                .exponent
                .checked_add(shift)
                .filter(|e| (-20..=20).contains(e))
                .ok_or_else(|| {
                    format!("register `{}`: {reading} is out of range", value.quantity)
                })?;
            Ok(Value::Decimal(Decimal::new(
                reading.mantissa,
                exponent,
                unit,
            )))
        }
    }
}

/// The sum of decimals of one unit, at the finest exponent.
fn sum(values: &[Decimal]) -> Option<Decimal> {
    let first = values.first()?;
    let exponent = values.iter().map(|d| d.exponent).min()?;
    let mut total: i64 = 0;
    for d in values {
        if d.unit != first.unit {
            return None;
        }
        let scale = 10i64.checked_pow(u32::try_from(d.exponent - exponent).ok()?)?;
        total = total.checked_add(d.mantissa.checked_mul(scale)?)?;
    }
    Some(Decimal::new(total, exponent, first.unit))
}

impl ModbusDriver {
    /// The meter's slave id.
    pub fn slave(&self) -> u8 {
        self.slave
    }

    /// The meter's register map.
    pub fn map(&self) -> &RegisterMap {
        &self.settings.map
    }

    /// The API quantities this meter's map can read.
    pub fn quantities(&self) -> Vec<Quantity> {
        let map = &self.settings.map;
        let mut out: Vec<Quantity> = map
            .registers
            .iter()
            .filter_map(|r| from_map_name(&r.quantity))
            .collect();
        if map.register("active_power_total").is_none() && map.register("active_power_l1").is_some()
        {
            out.push(Quantity::ActivePower(Phase::Total));
        }
        out
    }

    fn request(&self, adu: &RequestAdu) -> Request {
        Request::new(adu.encode()).with_timing(self.settings.timing)
    }

    /// The map names to read for a quantity, and what to make of them.
    fn names_for(&self, quantity: Quantity) -> Result<(Want, Vec<String>), String> {
        let map = &self.settings.map;
        let cannot = || {
            let can: Vec<String> = self.quantities().iter().map(ToString::to_string).collect();
            format!(
                "model `{}` has no register for {quantity}; it can read: {}",
                map.model,
                can.join(", ")
            )
        };
        if let Some(name) = map_name(quantity).filter(|n| map.register(n).is_some()) {
            return Ok((Want::One(quantity), vec![name]));
        }
        if quantity == Quantity::ActivePower(Phase::Total) {
            let phases: Vec<String> = (1..=3)
                .map(|n| format!("active_power_l{n}"))
                .filter(|n| map.register(n).is_some())
                .collect();
            if !phases.is_empty() {
                return Ok((Want::PhaseSum, phases));
            }
        }
        Err(cannot())
    }

    fn start_read(&mut self, quantity: Quantity) -> Result<Request, String> {
        let (want, names) = self.names_for(quantity)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut blocks = self
            .settings
            .map
            .plan(Some(&names))
            .map_err(|e| e.to_string())?;
        blocks.reverse();
        let current = blocks
            .pop()
            .ok_or_else(|| format!("the plan for {quantity} reads nothing"))?;
        let request = self.request(&current.request(self.slave));
        self.pending = Pending::Read {
            want,
            current,
            rest: blocks,
            values: Vec::new(),
        };
        Ok(request)
    }

    fn relay_request(&mut self, command: RelayCommand) -> Result<Request, String> {
        let map = &self.settings.map;
        let register = map
            .register(quantity::RELAY_CONTROL)
            .filter(|r| r.kind == RegisterKind::Holding && r.data_type.registers() == 1)
            .ok_or_else(|| {
                format!(
                    "model `{}` has no relay: its map defines no one-register holding register `{}`",
                    map.model,
                    quantity::RELAY_CONTROL
                )
            })?;
        let code = match command {
            RelayCommand::Trip => 1,
            RelayCommand::CloseAllowed => 2,
            RelayCommand::CloseDirect => 3,
            RelayCommand::Alarm => 4,
            RelayCommand::GuaranteePower => 5,
        };
        let adu =
            write_registers(self.slave, register.address, &[code]).map_err(|e| e.to_string())?;
        let request = self.request(&adu);
        self.pending = Pending::Relay(adu);
        Ok(request)
    }

    /// The readings once every block of a read is in.
    fn readings(&self, want: Want, values: &[QuantityValue]) -> Result<Vec<Reading>, String> {
        match want {
            Want::One(quantity) => {
                let value = values
                    .first()
                    .ok_or_else(|| format!("the reply holds no value for {quantity}"))?;
                Ok(vec![Reading::new(quantity, to_value(quantity, value)?)])
            }
            Want::PhaseSum => {
                let total = Quantity::ActivePower(Phase::Total);
                let phases = values
                    .iter()
                    .map(|v| match to_value(total, v)? {
                        Value::Decimal(d) => Ok(d),
                        other => Err(format!("register `{}` holds {other}", v.quantity)),
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let sum = sum(&phases).ok_or_else(|| {
                    String::from("the phases' active power does not add up in one unit")
                })?;
                Ok(vec![Reading::new(total, Value::Decimal(sum))])
            }
        }
    }

    fn on_read(
        &mut self,
        want: Want,
        current: ReadBlock,
        mut rest: Vec<ReadBlock>,
        mut values: Vec<QuantityValue>,
        reply: &crate::ResponseAdu,
    ) -> Outcome {
        match interpret(&current.request(self.slave), reply) {
            Err(e) => return Outcome::ProtocolError(format!("slave {}: {e}", self.slave)),
            Ok(Err(exception)) => return device_exception(&exception),
            Ok(Ok(words)) => values.extend(self.settings.map.decode_block(&current, &words)),
        }
        if let Some(next) = rest.pop() {
            let request = self.request(&next.request(self.slave));
            self.pending = Pending::Read {
                want,
                current: next,
                rest,
                values,
            };
            return Outcome::NeedAnotherExchange {
                readings: Vec::new(),
                next: request,
            };
        }
        match self.readings(want, &values) {
            Ok(readings) => Outcome::Done(readings),
            Err(e) => Outcome::ProtocolError(format!("slave {}: {e}", self.slave)),
        }
    }
}

impl MeterDriver for ModbusDriver {
    fn open(address: &[u8], config: &str) -> Result<Self, Rejection> {
        let slave = config::slave(address)?;
        let settings = config::settings(config)?;
        Ok(ModbusDriver {
            slave,
            settings,
            pending: Pending::Idle,
        })
    }

    fn begin(&mut self, task: &Task, _now: Now) -> Result<Request, Rejection> {
        self.pending = Pending::Idle;
        match *task {
            Task::Read(quantity) => Ok(self.start_read(quantity)?),
            Task::Relay(command) => Ok(self.relay_request(command)?),
            Task::SetClock(_) => Err(format!(
                "model `{}` (Modbus) has no clock the driver can set",
                self.settings.map.model
            )
            .into()),
            Task::DiscoverAddress => Err(
                "Modbus has no address discovery; set the slave id in the meter's config".into(),
            ),
            Task::ReadHistory(_) => Err(
                "this Modbus meter's register map keeps no reading history (only present values); its missed intervals cannot be backfilled".into(),
            ),
        }
    }

    fn is_complete(&mut self, reply: &[u8]) -> bool {
        matches!(
            scan(reply, Direction::Response, Some(self.slave)),
            Scan::Found { .. }
        )
    }

    fn finish(&mut self, reply: Reply<'_>, _now: Now) -> Outcome {
        let pending = std::mem::replace(&mut self.pending, Pending::Idle);
        let bytes = match reply {
            Reply::Complete(bytes) | Reply::Silence(bytes) => bytes,
            Reply::Timeout => {
                return Outcome::ProtocolError(format!(
                    "no reply from slave {} within the reply timeout",
                    self.slave
                ))
            }
            Reply::Sent => {
                return Outcome::ProtocolError(String::from(
                    "the host broadcast a request that expects a reply",
                ))
            }
        };
        let adu = match decode_reply(bytes, self.slave) {
            Ok(adu) => adu,
            Err(e) => {
                return Outcome::ProtocolError(format!(
                    "slave {}: {e} (received {} bytes: {bytes:02X?})",
                    self.slave,
                    bytes.len()
                ))
            }
        };
        let outcome = match pending {
            Pending::Idle => {
                Outcome::ProtocolError(String::from("a reply arrived but no exchange was started"))
            }
            Pending::Read {
                want,
                current,
                rest,
                values,
            } => self.on_read(want, current, rest, values, &adu),
            Pending::Relay(request) => match interpret(&request, &adu) {
                Ok(Ok(_)) => Outcome::Done(Vec::new()),
                Ok(Err(exception)) => device_exception(&exception),
                Err(e) => Outcome::ProtocolError(format!("slave {}: {e}", self.slave)),
            },
        };
        if let Outcome::Done(readings) = &outcome {
            for reading in readings {
                log::debug!("slave {}: {reading}", self.slave);
            }
        }
        outcome
    }
}

concentrator_plugin_sdk::declare_meter_driver!(
    ModbusDriver,
    name = PLUGIN_NAME,
    version = env!("CARGO_PKG_VERSION")
);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::frame::{Adu, Response};
    use crate::RegisterKind;

    const NOW: Now = Now {
        unix_millis: 0,
        monotonic: Duration::ZERO,
    };

    #[test]
    fn reads_a_float_from_recorded_frames_split_anywhere() {
        let mut driver = ModbusDriver::open(&[1], "model = \"sdm630\"").unwrap();
        let request = driver
            .begin(&Task::Read(Quantity::Voltage(Phase::A)), NOW)
            .unwrap();
        assert_eq!(
            request.frame,
            crate::read_registers(1, RegisterKind::Input, 0, 2)
                .unwrap()
                .encode()
        );
        let reply = Adu {
            slave: 1,
            pdu: Response::ReadInputRegisters {
                values: vec![0x4366, 0x8000],
            },
        }
        .encode();
        let mut noisy = vec![0x00, 0x01, 0x04];
        noisy.extend_from_slice(&reply);
        for end in 0..noisy.len() {
            assert!(!driver.is_complete(&noisy[..end]), "complete at {end}");
        }
        assert!(driver.is_complete(&noisy));
        assert_eq!(
            driver.finish(Reply::Complete(&noisy), NOW),
            Outcome::Done(vec![Reading::new(
                Quantity::Voltage(Phase::A),
                Value::Decimal(Decimal::new(23050, -2, concentrator_plugin_sdk::Unit::Volt))
            )])
        );
    }

    #[test]
    fn tasks_it_cannot_do_are_refused_with_reasons() {
        let mut driver = ModbusDriver::open(&[1], "model = \"sdm120\"").unwrap();
        let err = driver
            .begin(&Task::Relay(RelayCommand::Trip), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no relay"), "{err}");
        let err = driver
            .begin(&Task::Read(Quantity::Voltage(Phase::B)), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("it can read: voltage-a"), "{err}");
        assert!(driver.begin(&Task::DiscoverAddress, NOW).is_err());
        assert!(driver.begin(&Task::SetClock(0), NOW).is_err());
        let e = driver.begin(&Task::ReadHistory(1), NOW).unwrap_err();
        assert!(e.to_string().contains("keeps no reading history"), "{e}");
    }

    #[test]
    fn sums_are_exact() {
        let d = |m, e| Decimal::new(m, e, concentrator_plugin_sdk::Unit::Watt);
        assert_eq!(sum(&[d(15, -1), d(2, 0), d(1, 1)]), Some(d(135, -1)));
        assert_eq!(sum(&[]), None);
    }
}
