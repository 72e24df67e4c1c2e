//! A DL/T 645-2007 meter emulator for simulated buses ([`concentrator_hal::sim::SimBus`]).
//!
//! The meter answers read data (energy per tariff, voltage, current, power, frequency, date, time,
//! address, status word 3, prepaid balances, and any data a test adds), follow-up reads for data longer
//! than one frame, read address to the wildcard, write data and relay control with its password,
//! freeze, and broadcast time sync. Unknown data identifiers get the abnormal reply "no requested data".
//! Its registers advance with the simulated wall time at the configured power, so a poll cycle sees
//! realistic, deterministic readings.
//!
//! ```
//! use std::time::Duration;
//! use concentrator_driver_dlt645::sim::{Dlt645Meter, MeterConfig};
//! use concentrator_driver_dlt645::{exchange_timing, read_data, read_value, reply_complete, decode_reply, DataId, Dlt645Address, Value};
//! use concentrator_hal::sim::{SimBus, SimClock};
//! use concentrator_hal::{LineSettings, Rs485Bus};
//!
//! let address = Dlt645Address::from_number(1);
//! let mut bus = SimBus::new("rs485-1", LineSettings::dlt645_default(), SimClock::new_virtual());
//! let meter = Dlt645Meter::new(MeterConfig { import_centi_kwh: 1_234_567, ..MeterConfig::new(address) });
//! bus.attach(meter);
//! let request = read_data(address, DataId::IMPORT_ACTIVE_ENERGY);
//! let mut reply = Vec::new();
//! let timing = exchange_timing(&bus.settings());
//! bus.transact(&request.encode().unwrap(), &timing, &mut reply, &mut |r| reply_complete(r).is_done()).unwrap();
//! let value = read_value(&request, DataId::IMPORT_ACTIVE_ENERGY, &decode_reply(&reply).unwrap()).unwrap().unwrap();
//! let Value::Reading(reading) = value else { panic!() };
//! assert_eq!(reading.to_string(), "12345.67 kWh");
//! ```

mod state;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use concentrator_hal::sim::{SimDevice, SimReply};
use concentrator_hal::LineSettings;

pub use state::{tariff_at, whole_minutes, Freeze, MeterState, Prepaid};

use crate::control::{ControlCode, Function};
use crate::data_id::{encode_reading, DataFormat, DataId};
use crate::exception::ErrorBit;
use crate::frame::Frame;
use crate::request::{Password, RelayCommand};
use crate::status::RelayState;
use crate::stream::decode_first;
use crate::value::{MeterDate, MeterDateTime, MeterTime};
use crate::Dlt645Address;

/// How an emulated meter is set up.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// Its address.
    pub address: Dlt645Address,
    /// The power it draws while the relay is closed, in W (negative: it exports).
    pub power_w: i64,
    /// Import energy at start, in 0.01 kWh.
    pub import_centi_kwh: u64,
    /// Export energy at start, in 0.01 kWh.
    pub export_centi_kwh: u64,
    /// Phase voltage, in 0.1 V.
    pub voltage_decivolts: u32,
    /// 1 or 3 phases.
    pub phases: u8,
    /// The password that relay control and writes must carry.
    pub password: Password,
    /// Prepaid funding, if the meter is prepaid.
    pub prepaid: Option<Prepaid>,
    /// Refuse plaintext relay control as unauthorised (State-Grid meters that take only ESAM frames).
    pub esam_only: bool,
    /// Meter clock minus the bus's wall clock, in seconds.
    pub clock_offset_s: i64,
    /// A broadcast time sync that would move the clock further than this, seconds, is ignored (many
    /// DL/T 645-2007 meters take a broadcast correction only within 5 minutes); `None`: any is taken.
    pub broadcast_sync_limit_s: Option<u64>,
    /// Time from the end of a request to the first reply byte (20..=500 ms on real meters).
    pub latency: Duration,
    /// The meter's UART settings.
    pub line: LineSettings,
    /// The most data bytes one reply frame carries; longer data goes out in follow-up frames.
    pub max_reply_data: usize,
    /// The period of its "hourly" freeze (`0504xxxx`), seconds (rounded up to whole minutes).
    pub freeze_period_s: u64,
}

impl MeterConfig {
    /// A single-phase meter at `address` drawing 1 kW, 220.0 V, password level 02 code 000000, 40 ms
    /// latency, 2400 baud 8E1.
    pub fn new(address: Dlt645Address) -> Self {
        MeterConfig {
            address,
            power_w: 1000,
            import_centi_kwh: 0,
            export_centi_kwh: 0,
            voltage_decivolts: 2200,
            phases: 1,
            password: Password::new(2, 0),
            prepaid: None,
            esam_only: false,
            clock_offset_s: 0,
            broadcast_sync_limit_s: None,
            latency: Duration::from_millis(40),
            line: LineSettings::dlt645_default(),
            max_reply_data: 200,
            freeze_period_s: 3_600,
        }
    }
}

/// A handle to an emulated meter's state, kept by a test after the meter moved onto a bus.
#[derive(Debug, Clone)]
pub struct MeterHandle {
    state: Arc<Mutex<MeterState>>,
}

impl MeterHandle {
    /// Locks the state to read or change it (power, relay, clock, balances).
    pub fn lock(&self) -> MutexGuard<'_, MeterState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The customer presses the meter's button: closes the relay when closing is allowed.
    pub fn press_button(&self) {
        let mut state = self.lock();
        if state.relay_command == RelayState::Closed && state.remaining().is_none_or(|r| r > 0) {
            state.relay = RelayState::Closed;
        }
    }
}

/// An emulated DL/T 645-2007 meter.
#[derive(Debug)]
pub struct Dlt645Meter {
    config: MeterConfig,
    state: Arc<Mutex<MeterState>>,
    extra: BTreeMap<DataId, Vec<u8>>,
    follow_up: Option<(DataId, VecDeque<Vec<u8>>, u8)>,
}

enum Answer {
    Data(ControlCode, Vec<u8>),
    Refuse(Function, ErrorBit),
    Silent,
}

impl Dlt645Meter {
    /// A meter set up by `config`.
    pub fn new(config: MeterConfig) -> Self {
        let mut state = MeterState::new(
            config.power_w,
            config.import_centi_kwh,
            config.export_centi_kwh,
        );
        state.voltage_decivolts = config.voltage_decivolts;
        state.phases = config.phases;
        state.clock_offset_s = config.clock_offset_s;
        state.freeze_period_s = config.freeze_period_s;
        state.set_prepaid(config.prepaid);
        Dlt645Meter {
            config,
            state: Arc::new(Mutex::new(state)),
            extra: BTreeMap::new(),
            follow_up: None,
        }
    }

    /// Adds (or replaces) data the meter returns for `di`, in wire form without the DI. Longer than one
    /// frame, it goes out with follow-up frames.
    pub fn with_data(mut self, di: DataId, data: Vec<u8>) -> Self {
        self.extra.insert(di, data);
        self
    }

    /// A handle to the meter's state.
    pub fn handle(&self) -> MeterHandle {
        MeterHandle {
            state: Arc::clone(&self.state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MeterState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn answer(&mut self, frame: &Frame, wall: SystemTime) -> Answer {
        let Some(function) = frame.control.function() else {
            return Answer::Silent;
        };
        match function {
            Function::BroadcastTime => {
                if let Ok(time) = MeterDateTime::from_wire(&frame.data) {
                    let mut state = self.lock();
                    let now = i64::try_from(state.clock(wall).to_unix()).unwrap_or(0);
                    let step = (i64::try_from(time.to_unix()).unwrap_or(0) - now).unsigned_abs();
                    if self
                        .config
                        .broadcast_sync_limit_s
                        .is_none_or(|limit| step <= limit)
                    {
                        state.set_clock(wall, &time);
                    }
                }
                Answer::Silent
            }
            Function::ReadData => self.read(frame, wall),
            Function::ReadFollowUp => self.follow_up(frame),
            Function::ReadAddress => Answer::Data(
                ControlCode::reply(function),
                self.config.address.to_wire().to_vec(),
            ),
            Function::WriteData => self.write(frame, wall),
            Function::Freeze => {
                self.lock().freezes += 1;
                Answer::Data(ControlCode::reply(function), Vec::new())
            }
            Function::RelayControl => self.relay_control(frame, wall),
            _ => Answer::Refuse(function, ErrorBit::Other),
        }
    }

    fn read(&mut self, frame: &Frame, wall: SystemTime) -> Answer {
        let Some(di) = frame
            .data
            .get(..4)
            .map(|b| DataId::from_wire([b[0], b[1], b[2], b[3]]))
        else {
            return Answer::Refuse(Function::ReadData, ErrorBit::Other);
        };
        let Some(data) = self
            .extra
            .get(&di)
            .cloned()
            .or_else(|| self.register(di, wall))
        else {
            return Answer::Refuse(Function::ReadData, ErrorBit::NoRequestedData);
        };
        let chunk = self.config.max_reply_data.saturating_sub(4).max(1);
        let mut chunks: VecDeque<Vec<u8>> = data.chunks(chunk).map(<[u8]>::to_vec).collect();
        let first = chunks.pop_front().unwrap_or_default();
        let more = !chunks.is_empty();
        self.follow_up = more.then_some((di, chunks, 0));
        let mut reply = di.to_wire().to_vec();
        reply.extend(first);
        let control = ControlCode::reply(Function::ReadData).0
            | if more { ControlCode::FOLLOW_UP } else { 0 };
        Answer::Data(ControlCode(control), reply)
    }

    fn follow_up(&mut self, frame: &Frame) -> Answer {
        let (Some(di_bytes), Some(&sequence)) = (frame.data.get(..4), frame.data.get(4)) else {
            return Answer::Refuse(Function::ReadFollowUp, ErrorBit::Other);
        };
        let di = DataId::from_wire([di_bytes[0], di_bytes[1], di_bytes[2], di_bytes[3]]);
        let Some((pending, chunks, sent)) = self.follow_up.as_mut() else {
            return Answer::Refuse(Function::ReadFollowUp, ErrorBit::NoRequestedData);
        };
        if *pending != di || sequence != sent.wrapping_add(1) {
            return Answer::Refuse(Function::ReadFollowUp, ErrorBit::NoRequestedData);
        }
        *sent = sequence;
        let chunk = chunks.pop_front().unwrap_or_default();
        let more = !chunks.is_empty();
        if !more {
            self.follow_up = None;
        }
        let mut reply = di.to_wire().to_vec();
        reply.extend(chunk);
        reply.push(sequence);
        let control = ControlCode::reply(Function::ReadFollowUp).0
            | if more { ControlCode::FOLLOW_UP } else { 0 };
        Answer::Data(ControlCode(control), reply)
    }

    /// The wire data of a built-in register.
    fn register(&self, di: DataId, wall: SystemTime) -> Option<Vec<u8>> {
        let state = self.lock();
        let format = di.format()?;
        let (di2, di1) = ((di.0 >> 16) as u8, (di.0 >> 8) as u8);
        let items: Vec<u8> = if di.is_block() {
            match (di.0 >> 24, di2) {
                (0, _) => (0..=4).collect(),
                (_, 0x03) => (0..=state.phases).collect(),
                _ => (1..=state.phases).collect(),
            }
        } else {
            vec![di1]
        };
        let mut out = Vec::new();
        for item in items {
            let one = DataId((di.0 & 0xFFFF_00FF) | u32::from(item) << 8);
            let bytes = match format {
                DataFormat::Number { .. } => {
                    let mantissa = self.number(&state, one)?;
                    encode_reading(one, mantissa)?
                }
                DataFormat::Date => {
                    let now = state.clock(wall);
                    MeterDate {
                        year: now.year,
                        month: now.month,
                        day: now.day,
                        weekday: now.weekday(),
                    }
                    .to_wire()
                    .to_vec()
                }
                DataFormat::Time => {
                    let now = state.clock(wall);
                    MeterTime {
                        hour: now.hour,
                        minute: now.minute,
                        second: now.second,
                    }
                    .to_wire()
                    .to_vec()
                }
                DataFormat::RunningStatus3 => state.status_word_3().to_le_bytes().to_vec(),
                DataFormat::Address => self.config.address.to_wire().to_vec(),
                DataFormat::FrozenTime => {
                    let f = state.freeze(di.0 as u8)?;
                    let t = MeterDateTime::from_unix(f.at).ok()?.to_wire();
                    t[1..].to_vec()
                }
            };
            out.extend(bytes);
        }
        Some(out)
    }

    fn number(&self, state: &MeterState, di: DataId) -> Option<i64> {
        let (di3, di2, di1, di0) = (
            (di.0 >> 24) as u8,
            (di.0 >> 16) as u8,
            (di.0 >> 8) as u8,
            di.0 as u8,
        );
        let tariff = usize::from(di1);
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let phase_exists = di1 == 0 || di1 <= state.phases;
        Some(match (di3, di2) {
            (0x00, 0x00) if tariff <= 4 => {
                to_i64(state.import_centi_kwh(tariff)) + to_i64(state.export_centi_kwh(tariff))
            }
            (0x00, 0x01) if tariff <= 4 => to_i64(state.import_centi_kwh(tariff)),
            (0x00, 0x02) if tariff <= 4 => to_i64(state.export_centi_kwh(tariff)),
            (0x00, 0x90) => match (state.prepaid?, di1, di0) {
                (Prepaid::Energy { .. }, 1, 0) | (Prepaid::Money { .. }, 2, 0) => {
                    state.remaining()?.max(0)
                }
                (Prepaid::Energy { .. }, 1, 1) | (Prepaid::Money { .. }, 2, 1) => {
                    (-state.remaining()?).max(0)
                }
                _ => return None,
            },
            (0x02, 0x01) if phase_exists => i64::from(state.voltage_decivolts),
            (0x02, 0x02) if phase_exists => state.current_milliamps(),
            // kW with 4 decimals: W × 10.
            (0x02, 0x03) if phase_exists => {
                let phases = if di1 == 0 {
                    1
                } else {
                    i64::from(state.phases.max(1))
                };
                state.present_power_w() * 10 / phases
            }
            (0x02, 0x80) => i64::from(state.frequency_centihertz),
            (0x05, 0x04) => {
                let f = state.freeze(di0)?;
                to_i64(match di1 {
                    1 => f.import_centi_kwh,
                    _ => f.export_centi_kwh,
                })
            }
            _ => return None,
        })
    }

    fn authorised(&self, frame: &Frame, at: usize) -> bool {
        frame
            .data
            .get(at..at + 4)
            .is_some_and(|p| Password::from_wire([p[0], p[1], p[2], p[3]]) == self.config.password)
    }

    fn write(&mut self, frame: &Frame, wall: SystemTime) -> Answer {
        const F: Function = Function::WriteData;
        if frame.data.len() < 12 {
            return Answer::Refuse(F, ErrorBit::Other);
        }
        if !self.authorised(frame, 4) {
            return Answer::Refuse(F, ErrorBit::Unauthorised);
        }
        let di = DataId::from_wire([frame.data[0], frame.data[1], frame.data[2], frame.data[3]]);
        let value = &frame.data[12..];
        let mut state = self.lock();
        let now = state.clock(wall);
        let set = match di {
            DataId::DATE => MeterDate::from_wire(value).ok().and_then(|d| {
                MeterDateTime::new(d.year, d.month, d.day, now.hour, now.minute, now.second).ok()
            }),
            DataId::TIME => MeterTime::from_wire(value).ok().and_then(|t| {
                MeterDateTime::new(now.year, now.month, now.day, t.hour, t.minute, t.second).ok()
            }),
            _ => {
                drop(state);
                self.extra.insert(di, value.to_vec());
                return Answer::Data(ControlCode::reply(F), Vec::new());
            }
        };
        match set {
            Some(time) => {
                state.set_clock(wall, &time);
                Answer::Data(ControlCode::reply(F), Vec::new())
            }
            None => Answer::Refuse(F, ErrorBit::Other),
        }
    }

    fn relay_control(&mut self, frame: &Frame, wall: SystemTime) -> Answer {
        const F: Function = Function::RelayControl;
        if self.config.esam_only || !self.authorised(frame, 0) {
            return Answer::Refuse(F, ErrorBit::Unauthorised);
        }
        let (Some(&code), Some(valid)) = (frame.data.get(8), frame.data.get(10..16)) else {
            return Answer::Refuse(F, ErrorBit::Other);
        };
        let mut state = self.lock();
        let expired =
            MeterDateTime::from_wire(valid).map_or(true, |until| until < state.clock(wall));
        let Some(command) = RelayCommand::from_code(code).filter(|_| !expired) else {
            return Answer::Refuse(F, ErrorBit::Other);
        };
        match command {
            RelayCommand::Trip if state.guarantee_power => {
                return Answer::Refuse(F, ErrorBit::Other)
            }
            RelayCommand::Trip => {
                state.relay_command = RelayState::Open;
                state.relay = RelayState::Open;
            }
            RelayCommand::CloseAllowed => state.relay_command = RelayState::Closed,
            RelayCommand::DirectClose => {
                state.relay_command = RelayState::Closed;
                state.relay = RelayState::Closed;
            }
            RelayCommand::Alarm => state.alarm = true,
            RelayCommand::AlarmRelease => state.alarm = false,
            RelayCommand::GuaranteePower => state.guarantee_power = true,
            RelayCommand::GuaranteePowerRelease => state.guarantee_power = false,
        }
        Answer::Data(ControlCode::reply(F), Vec::new())
    }
}

impl SimDevice for Dlt645Meter {
    fn name(&self) -> String {
        format!("dlt645-meter-{}", self.config.address)
    }

    fn line_settings(&self) -> Option<LineSettings> {
        Some(self.config.line)
    }

    fn on_frame(&mut self, bytes: &[u8], wall: SystemTime) -> Option<SimReply> {
        let (_, decoded) = decode_first(bytes).ok()?;
        let frame = decoded.frame;
        if frame.control.is_reply() {
            return None;
        }
        self.lock().advance(wall);
        let broadcast = frame.address.is_broadcast();
        if !broadcast && !frame.address.addresses(&self.config.address) {
            return None;
        }
        let answer = self.answer(&frame, wall);
        if broadcast {
            return None;
        }
        let (control, data) = match answer {
            Answer::Data(control, data) => (control, data),
            Answer::Refuse(function, bit) => (ControlCode::abnormal(function), vec![bit.mask()]),
            Answer::Silent => return None,
        };
        let bytes = Frame::new(self.config.address, control, data)
            .encode_with_preamble(4)
            .ok()?;
        Some(SimReply {
            bytes,
            latency: self.config.latency,
        })
    }
}
