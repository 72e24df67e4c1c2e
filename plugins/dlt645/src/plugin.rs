//! The DL/T 645 driver plugin: this crate's codec behind the SDK's [`MeterDriver`] trait.
//!
//! One [`Dlt645Driver`] per meter. It turns the host's tasks into requests built by [`crate::request`],
//! says when a reply is whole with [`crate::stream::scan`] (garbage and a late reply before the frame
//! are skipped), and reads replies with [`crate::reply`]:
//!
//! | task | exchange |
//! |---|---|
//! | `Read(quantity)` | read data (0x11) of the quantity's data identifier, then follow-up reads (0x12) while the meter says more follows |
//! | `Read(MeterDateTime)` | the date (`04000101`), then the time (`04000102`) |
//! | `Read(RelayState)` | running status word 3 (`04000503`): bit 4 open, bit 6 the last command |
//! | `Read(Vendor(di))` | any single-value data identifier whose format the codec knows (`Vendor(0x02800002)`: grid frequency) |
//! | `Relay(command)` | relay control (0x1C) with the configured password and operator code |
//! | `SetClock(unix)` | broadcast time sync (0x08) to `999999999999`; no meter replies |
//! | `DiscoverAddress` | read address (0x13) to `AAAAAAAAAAAA`: the one meter on the line answers |
//! | `ReadHistory(n)` | hourly freeze `n` (1 = the newest, up to 254): its time (`050400nn`, `mm hh DD MM YY`), then its import energy (`050401nn`); answered as `MeterDateTime` and `EnergyImportTotal` |
//!
//! The address the meter reports (read address, `Read(DeviceAddress)` or `Read(Vendor(0x04000401))`) is
//! returned as the reading [`ADDRESS_QUANTITY`] with an address value (API 1.2): the six BCD bytes most
//! significant first, which print as the twelve digits of the meter's config (`201800001234`).
//!
//! Meter replies are checked against the request (address, function, data identifier); an abnormal
//! reply is an [`Outcome::DeviceException`] carrying the error byte as its code; anything else that
//! is wrong is an [`Outcome::ProtocolError`] naming what was expected and what came. A silent meter
//! is a protocol error on [`Reply::Timeout`], which the host reports as "no reply".

mod config;

use concentrator_plugin_sdk::{
    Decimal, DeviceException, MeterDriver, Now, Outcome, Phase, Quantity, Reading, Rejection,
    RelayCommand, RelayState, Reply, Request, Task, Timing, Unit, Value,
};

pub use config::{ConfigError, Settings, KNOWN_KEYS};

use crate::data_id::{self, DataFormat, DataId};
use crate::frame::Frame;
use crate::reply::{self, ReadSession, ReadStep};
use crate::stream::{scan, Scan};
use crate::value::{self as codec_value, MeterDate, MeterDateTime};
use crate::{request, status, Dlt645Address, Dlt645Exception};

/// The plugin's name: what a meter's `driver = "…"` names.
pub const PLUGIN_NAME: &str = "dlt645";

/// The quantity a meter's address is returned as (read with the data identifier of the communication
/// address, `04000401`).
pub const ADDRESS_QUANTITY: Quantity = Quantity::DeviceAddress;

/// Follow-up reads allowed for one data identifier (the host allows 32 exchanges per task).
const MAX_FOLLOW_UPS: u8 = 24;

/// What is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A quantity with a data identifier of its own.
    Plain(Quantity),
    /// The date, first half of [`Quantity::MeterDateTime`].
    Date,
    /// The time, second half, with the date read before it.
    Time(MeterDate),
    /// When hourly freeze `n` was taken, first half of [`Task::ReadHistory`].
    FrozenTime(u8),
    /// Its import energy, second half, with its time (Unix seconds) read before it.
    FrozenEnergy(i64),
}

/// The exchange in flight.
#[derive(Debug, Clone)]
enum Pending {
    Idle,
    Read {
        target: Target,
        session: ReadSession,
        follow_ups: u8,
    },
    Relay(Frame),
    TimeSync,
    Discover,
}

/// One DL/T 645-2007 meter.
#[derive(Debug)]
pub struct Dlt645Driver {
    address: Dlt645Address,
    settings: Settings,
    pending: Pending,
}

/// The data identifier of a quantity, or why the driver cannot read it.
fn data_id_of(quantity: Quantity) -> Result<DataId, String> {
    let phase = |phase: Phase| match phase {
        Phase::A => Some(data_id::Phase::A),
        Phase::B => Some(data_id::Phase::B),
        Phase::C => Some(data_id::Phase::C),
        Phase::Total => None,
    };
    let no_total = || format!("DL/T 645 has no total for {quantity}; read phases A, B and C");
    Ok(match quantity {
        Quantity::EnergyImportTotal => DataId::IMPORT_ACTIVE_ENERGY,
        Quantity::EnergyImportTariff(t @ 1..=4) => DataId::import_active_energy(t),
        Quantity::EnergyExportTotal => DataId::EXPORT_ACTIVE_ENERGY,
        Quantity::Voltage(p) => DataId::voltage(phase(p).ok_or_else(no_total)?),
        Quantity::Current(p) => DataId::current(phase(p).ok_or_else(no_total)?),
        Quantity::ActivePower(Phase::Total) => DataId::ACTIVE_POWER,
        Quantity::ActivePower(p) => DataId::active_power(phase(p).ok_or_else(no_total)?),
        Quantity::MeterDateTime => DataId::DATE,
        Quantity::RelayState => DataId::RUNNING_STATUS_3,
        Quantity::PrepaidRemainingMoney => DataId::REMAINING_MONEY,
        Quantity::PrepaidRemainingEnergy => DataId::REMAINING_ENERGY,
        Quantity::DeviceAddress => DataId::ADDRESS,
        Quantity::Vendor(n) => {
            let di = DataId(n);
            match di.format() {
                Some(DataFormat::Number { .. } | DataFormat::Address) if !di.is_block() => di,
                _ => {
                    return Err(format!(
                        "Vendor({n:#010x}): data identifier {di} is not a single number the driver knows the format of"
                    ))
                }
            }
        }
        Quantity::EnergyImportTariff(t) => {
            return Err(format!("tariff {t} is not one of the tariffs 1 to 4"))
        }
    })
}

/// The API's unit and exponent shift for a codec unit.
fn api_unit(unit: codec_value::Unit) -> (Unit, i8) {
    match unit {
        codec_value::Unit::KilowattHour => (Unit::WattHour, 3),
        codec_value::Unit::Kilowatt => (Unit::Watt, 3),
        codec_value::Unit::Volt => (Unit::Volt, 0),
        codec_value::Unit::Ampere => (Unit::Ampere, 0),
        codec_value::Unit::Hertz => (Unit::Hertz, 0),
        codec_value::Unit::Currency => (Unit::Currency, 0),
    }
}

/// A codec reading as the API's exact decimal (kWh become Wh by the exponent, digits unchanged).
pub fn to_decimal(reading: codec_value::Reading) -> Decimal {
    let (unit, shift) = api_unit(reading.unit);
    Decimal::new(
        reading.mantissa,
        reading.exponent.saturating_add(shift),
        unit,
    )
}

/// A meter address as the reading [`ADDRESS_QUANTITY`].
pub fn address_reading(address: Dlt645Address) -> Result<Reading, String> {
    if crate::bcd::decode_unsigned(&address.to_wire()).is_err() {
        return Err(format!(
            "the meter's address {address} is not twelve digits"
        ));
    }
    // On the wire least significant first; written (and in the config) most significant first.
    let mut written = address.to_wire();
    written.reverse();
    let value = concentrator_plugin_sdk::api::coordinator::DeviceAddress::new(&written)
        .ok_or_else(|| format!("the meter's address {address} is empty"))?;
    Ok(Reading::new(ADDRESS_QUANTITY, Value::Address(value)))
}

/// The relay position from running status word 3: open with a "close" command is armed for closing
/// (the customer's button closes it).
fn relay_state(status: status::RunningStatus3) -> RelayState {
    match (status.relay, status.relay_command) {
        (status::RelayState::Closed, _) => RelayState::Closed,
        (status::RelayState::Open, status::RelayState::Closed) => RelayState::ArmedForClose,
        (status::RelayState::Open, status::RelayState::Open) => RelayState::Open,
    }
}

fn device_exception(exception: &Dlt645Exception) -> Outcome {
    Outcome::DeviceException(DeviceException {
        code: u32::from(exception.error_byte),
        text: exception.to_string(),
    })
}

impl Dlt645Driver {
    /// The meter's address in wire order.
    pub fn address(&self) -> Dlt645Address {
        self.address
    }

    fn request(&self, frame: &Frame) -> Result<Request, String> {
        let bytes = frame
            .encode()
            .map_err(|e| format!("cannot encode the request: {e}"))?;
        Ok(Request::new(bytes).with_timing(self.settings.timing))
    }

    fn start_read(&mut self, target: Target, di: DataId) -> Result<Request, String> {
        let session = ReadSession::new(self.address, di);
        let request = self.request(session.request())?;
        self.pending = Pending::Read {
            target,
            session,
            follow_ups: 0,
        };
        Ok(request)
    }

    fn meter_time(&self, unix: i64) -> Result<MeterDateTime, String> {
        let local = unix.saturating_add(self.settings.utc_offset_s);
        u64::try_from(local)
            .ok()
            .and_then(|s| MeterDateTime::from_unix(s).ok())
            .ok_or_else(|| {
                format!("Unix time {unix} is outside the years 2000 to 2099 a DL/T 645 clock holds")
            })
    }

    fn relay_request(&mut self, command: RelayCommand, now: Now) -> Result<Request, Rejection> {
        let password = self.settings.password.ok_or(
            "relay control needs the meter's password: set `password = \"02xxxxxx\"` in the meter's config",
        )?;
        let command = match command {
            RelayCommand::Trip => request::RelayCommand::Trip,
            RelayCommand::CloseAllowed => request::RelayCommand::CloseAllowed,
            RelayCommand::CloseDirect => request::RelayCommand::DirectClose,
            RelayCommand::Alarm => request::RelayCommand::Alarm,
            RelayCommand::GuaranteePower => request::RelayCommand::GuaranteePower,
        };
        let until = self.meter_time(
            now.unix_seconds()
                .saturating_add(self.settings.relay_valid_s),
        )?;
        let frame = request::relay_control(
            self.address,
            command,
            &password,
            self.settings.operator,
            &until,
        );
        let request = self.request(&frame)?;
        self.pending = Pending::Relay(frame);
        Ok(request)
    }

    /// Takes the reply to a read; a whole value ends the read, a follow-up flag asks for more.
    fn on_read(
        &mut self,
        target: Target,
        mut session: ReadSession,
        follow_ups: u8,
        frame: &Frame,
    ) -> Outcome {
        let data = match session.on_reply(frame) {
            Err(e) => return Outcome::ProtocolError(format!("meter {}: {e}", self.address)),
            Ok(Err(exception)) => return device_exception(&exception),
            Ok(Ok(ReadStep::FollowUp(next))) => {
                if follow_ups >= MAX_FOLLOW_UPS {
                    return Outcome::ProtocolError(format!(
                        "meter {} still had follow-up data for {} after {MAX_FOLLOW_UPS} follow-up reads",
                        self.address,
                        session.data_id()
                    ));
                }
                let next = match self.request(&next) {
                    Ok(next) => next,
                    Err(e) => return Outcome::ProtocolError(e),
                };
                self.pending = Pending::Read {
                    target,
                    session,
                    follow_ups: follow_ups + 1,
                };
                return Outcome::NeedAnotherExchange {
                    readings: Vec::new(),
                    next,
                };
            }
            Ok(Ok(ReadStep::Done(data))) => data,
        };
        let di = session.data_id();
        let value = match data_id::decode_value(di, &data) {
            Ok(value) => value,
            Err(e) => return Outcome::ProtocolError(format!("meter {}: {e}", self.address)),
        };
        match (target, value) {
            (Target::Date, data_id::Value::Date(date)) => {
                match self.start_read(Target::Time(date), DataId::TIME) {
                    Ok(next) => Outcome::NeedAnotherExchange {
                        readings: Vec::new(),
                        next,
                    },
                    Err(e) => Outcome::ProtocolError(e),
                }
            }
            (Target::Time(date), data_id::Value::Time(time)) => {
                match MeterDateTime::new(
                    date.year,
                    date.month,
                    date.day,
                    time.hour,
                    time.minute,
                    time.second,
                ) {
                    Ok(clock) => {
                        let unix = i64::try_from(clock.to_unix())
                            .unwrap_or(i64::MAX)
                            .saturating_sub(self.settings.utc_offset_s);
                        Outcome::Done(vec![Reading::new(
                            Quantity::MeterDateTime,
                            Value::Timestamp(unix),
                        )])
                    }
                    Err(e) => Outcome::ProtocolError(format!(
                        "meter {}: its clock reads an impossible date-time: {e}",
                        self.address
                    )),
                }
            }
            (Target::FrozenTime(n), data_id::Value::FrozenTime(at)) => {
                let unix = i64::try_from(at.to_unix())
                    .unwrap_or(i64::MAX)
                    .saturating_sub(self.settings.utc_offset_s);
                match self.start_read(
                    Target::FrozenEnergy(unix),
                    DataId::hourly_frozen_import_energy(n),
                ) {
                    Ok(next) => Outcome::NeedAnotherExchange {
                        readings: Vec::new(),
                        next,
                    },
                    Err(e) => Outcome::ProtocolError(e),
                }
            }
            (Target::FrozenEnergy(unix), data_id::Value::Reading(reading)) => Outcome::Done(vec![
                Reading::new(Quantity::MeterDateTime, Value::Timestamp(unix)),
                Reading::new(
                    Quantity::EnergyImportTotal,
                    Value::Decimal(to_decimal(reading)),
                ),
            ]),
            (Target::Plain(quantity), data_id::Value::Reading(reading)) => {
                Outcome::Done(vec![Reading::new(
                    quantity,
                    Value::Decimal(to_decimal(reading)),
                )])
            }
            (Target::Plain(quantity), data_id::Value::RunningStatus3(status)) => Outcome::Done(
                vec![Reading::new(quantity, Value::Relay(relay_state(status)))],
            ),
            (Target::Plain(_), data_id::Value::Address(address)) => {
                match address_reading(address) {
                    Ok(reading) => Outcome::Done(vec![reading]),
                    Err(e) => Outcome::ProtocolError(e),
                }
            }
            (_, other) => Outcome::ProtocolError(format!(
                "meter {}: data identifier {di} decoded to an unexpected value {other:?}",
                self.address
            )),
        }
    }
}

impl MeterDriver for Dlt645Driver {
    fn open(address: &[u8], config: &str) -> Result<Self, Rejection> {
        let address = config::address(address)?;
        let settings = config::settings(config)?;
        Ok(Dlt645Driver {
            address,
            settings,
            pending: Pending::Idle,
        })
    }

    fn begin(&mut self, task: &Task, now: Now) -> Result<Request, Rejection> {
        self.pending = Pending::Idle;
        match *task {
            Task::Read(quantity) => {
                let di = data_id_of(quantity)?;
                let target = if quantity == Quantity::MeterDateTime {
                    Target::Date
                } else {
                    Target::Plain(quantity)
                };
                Ok(self.start_read(target, di)?)
            }
            Task::Relay(command) => self.relay_request(command, now),
            Task::SetClock(unix) => {
                let time = self.meter_time(unix)?;
                let bytes = request::broadcast_time_sync(&time)
                    .encode()
                    .map_err(|e| format!("cannot encode the time sync: {e}"))?;
                self.pending = Pending::TimeSync;
                Ok(Request::broadcast(bytes).with_timing(Timing {
                    reply_timeout: None,
                    ..self.settings.timing
                }))
            }
            Task::DiscoverAddress => {
                let request = self.request(&request::read_address())?;
                self.pending = Pending::Discover;
                Ok(request)
            }
            Task::ReadHistory(n) => {
                let n = u8::try_from(n)
                    .ok()
                    .filter(|n| (1..=DataId::HOURLY_FREEZES).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "a DL/T 645 meter keeps its last {} hourly freezes: record {n} is not one (ask for 1 to {})",
                            DataId::HOURLY_FREEZES,
                            DataId::HOURLY_FREEZES
                        )
                    })?;
                Ok(self.start_read(Target::FrozenTime(n), DataId::hourly_frozen_time(n))?)
            }
        }
    }

    fn is_complete(&mut self, reply: &[u8]) -> bool {
        matches!(scan(reply), Scan::Found { .. })
    }

    fn finish(&mut self, reply: Reply<'_>, _now: Now) -> Outcome {
        let pending = std::mem::replace(&mut self.pending, Pending::Idle);
        let bytes = match (reply, &pending) {
            (Reply::Sent, Pending::TimeSync) => return Outcome::Done(Vec::new()),
            (Reply::Sent, _) => {
                return Outcome::ProtocolError(String::from(
                    "the host broadcast a request that expects a reply",
                ))
            }
            (Reply::Timeout, _) => {
                return Outcome::ProtocolError(format!(
                    "no reply from meter {} within the reply window",
                    self.address
                ))
            }
            (Reply::Complete(bytes) | Reply::Silence(bytes), _) => bytes,
        };
        let frame = match reply::decode_reply(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                return Outcome::ProtocolError(format!(
                    "meter {}: {e} (received {} bytes: {bytes:02X?})",
                    self.address,
                    bytes.len()
                ))
            }
        };
        let outcome = match pending {
            Pending::Idle | Pending::TimeSync => {
                Outcome::ProtocolError(String::from("a reply arrived but no exchange was started"))
            }
            Pending::Read {
                target,
                session,
                follow_ups,
            } => self.on_read(target, session, follow_ups, &frame),
            Pending::Relay(request) => match reply::ack_reply(&request, &frame) {
                Ok(Ok(())) => Outcome::Done(Vec::new()),
                Ok(Err(exception)) => device_exception(&exception),
                Err(e) => Outcome::ProtocolError(format!("meter {}: {e}", self.address)),
            },
            Pending::Discover => match reply::address_reply(&frame) {
                Ok(Ok(address)) => match address_reading(address) {
                    Ok(reading) => Outcome::Done(vec![reading]),
                    Err(e) => Outcome::ProtocolError(e),
                },
                Ok(Err(exception)) => device_exception(&exception),
                Err(e) => Outcome::ProtocolError(format!("read address: {e}")),
            },
        };
        if let Outcome::Done(readings) = &outcome {
            for reading in readings {
                log::debug!("meter {}: {reading}", self.address);
            }
        }
        outcome
    }
}

concentrator_plugin_sdk::declare_meter_driver!(
    Dlt645Driver,
    name = PLUGIN_NAME,
    version = env!("CARGO_PKG_VERSION")
);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::control::{ControlCode, Function};

    const NOW: Now = Now {
        unix_millis: 1_767_225_600_000,
        monotonic: Duration::ZERO,
    };
    const ONE: [u8; 6] = [0, 0, 0, 0, 0, 1];

    fn reply(driver: &Dlt645Driver, control: u8, data: Vec<u8>) -> Vec<u8> {
        Frame::new(driver.address, ControlCode(control), data)
            .encode_with_preamble(4)
            .unwrap()
    }

    #[test]
    fn reads_energy_from_recorded_frames_split_anywhere() {
        let mut driver = Dlt645Driver::open(&ONE, "").unwrap();
        let request = driver
            .begin(&Task::Read(Quantity::EnergyImportTotal), NOW)
            .unwrap();
        assert_eq!(
            request.frame,
            request::read_data(driver.address, DataId::IMPORT_ACTIVE_ENERGY)
                .encode()
                .unwrap()
        );
        assert_eq!(request.timing.preamble, Some((0xFE, 4)));
        let bytes = reply(&driver, 0x91, vec![0, 0, 1, 0, 0x67, 0x45, 0x23, 0x01]);
        let mut noisy = vec![0x00, 0x68, 0x13];
        noisy.extend_from_slice(&bytes);
        for end in 0..noisy.len() {
            assert!(!driver.is_complete(&noisy[..end]), "complete at {end}");
        }
        assert!(driver.is_complete(&noisy));
        let expected = Reading::new(
            Quantity::EnergyImportTotal,
            Value::Decimal(Decimal::new(1_234_567, 1, Unit::WattHour)),
        );
        assert_eq!(
            driver.finish(Reply::Complete(&noisy), NOW),
            Outcome::Done(vec![expected])
        );
    }

    #[test]
    fn abnormal_replies_and_garbage_are_typed() {
        let mut driver = Dlt645Driver::open(&ONE, "").unwrap();
        driver
            .begin(&Task::Read(Quantity::PrepaidRemainingMoney), NOW)
            .unwrap();
        let refused = reply(
            &driver,
            ControlCode::abnormal(Function::ReadData).0,
            vec![0x02],
        );
        let Outcome::DeviceException(e) = driver.finish(Reply::Complete(&refused), NOW) else {
            panic!("expected an exception")
        };
        assert_eq!(e.code, 2);
        assert!(e.text.contains("no requested data"), "{}", e.text);
        driver
            .begin(&Task::Read(Quantity::EnergyImportTotal), NOW)
            .unwrap();
        assert!(matches!(
            driver.finish(Reply::Silence(&[0x68, 0x01, 0x02]), NOW),
            Outcome::ProtocolError(_)
        ));
        driver.begin(&Task::DiscoverAddress, NOW).unwrap();
        assert!(matches!(
            driver.finish(Reply::Timeout, NOW),
            Outcome::ProtocolError(_)
        ));
    }

    #[test]
    fn tasks_it_cannot_do_are_refused_with_reasons() {
        let mut driver = Dlt645Driver::open(&ONE, "").unwrap();
        let err = driver
            .begin(&Task::Relay(RelayCommand::Trip), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("password"), "{err}");
        let err = driver
            .begin(&Task::Read(Quantity::Voltage(Phase::Total)), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no total"), "{err}");
        assert!(driver.begin(&Task::SetClock(0), NOW).is_err());
        assert!(driver
            .begin(&Task::Read(Quantity::Vendor(0x0330_0201)), NOW)
            .is_err());
    }

    #[test]
    fn relay_state_comes_from_status_word_3() {
        let status = |word| relay_state(status::RunningStatus3::from_word(word));
        assert_eq!(status(0x0000), RelayState::Closed);
        assert_eq!(status(0x0050), RelayState::Open);
        assert_eq!(status(0x0010), RelayState::ArmedForClose);
    }
}
