//! A Modbus RTU meter emulator for simulated buses, driven by a register map: an SDM630-like meter
//! serves floats, a DDS238-like one integers, each in the types and scales its map gives. Unmapped
//! registers answer exception 02, unsupported functions exception 01. Energy advances with the bus's
//! simulated wall time at the configured power, so readings are realistic and deterministic.
//!
//! ```
//! use concentrator_driver_modbus::sim::{ModbusMeter, ModbusMeterConfig};
//! use concentrator_driver_modbus::{decode_reply, exchange_timing, read_block_reply, reply_complete, ModelRegistry, DEFAULT_REPLY_TIMEOUT};
//! use concentrator_hal::sim::{SimBus, SimClock};
//! use concentrator_hal::{LineSettings, Rs485Bus};
//!
//! let registry = ModelRegistry::builtin().unwrap();
//! let map = registry.get("sdm630").unwrap().clone();
//! let mut bus = SimBus::new("rs485-2", LineSettings::modbus_default(), SimClock::new_virtual());
//! bus.attach(ModbusMeter::new(ModbusMeterConfig { import_centi_kwh: 1_234_567, ..ModbusMeterConfig::new(1, map.clone()) }));
//! let block = &map.plan(Some(&["import_active_energy"])).unwrap()[0];
//! let mut reply = Vec::new();
//! let timing = exchange_timing(&bus.settings(), DEFAULT_REPLY_TIMEOUT);
//! bus.transact(&block.request(1).encode(), &timing, &mut reply, &mut |r| reply_complete(r).is_done()).unwrap();
//! let values = read_block_reply(&map, block, 1, &decode_reply(&reply, 1).unwrap()).unwrap().unwrap();
//! assert_eq!(values[0].reading.as_ref().unwrap().to_string(), "12345.670 kWh");
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use concentrator_hal::sim::{SimDevice, SimReply};
use concentrator_hal::LineSettings;

use crate::exception::{ExceptionCode, ModbusException};
use crate::frame::{Adu, Direction, Request, RequestAdu, Response};
use crate::model::{Register, RegisterKind, RegisterMap};
use crate::stream::{scan, Scan};
use crate::value::{DataType, Raw};

/// W·µs in one kWh.
const WUS_PER_KWH: f64 = 3.6e12;

/// How an emulated Modbus meter is set up.
#[derive(Debug, Clone)]
pub struct ModbusMeterConfig {
    /// Its slave address (1..=247).
    pub slave: u8,
    /// Its register map.
    pub map: RegisterMap,
    /// Power drawn, in W (negative: exporting).
    pub power_w: i64,
    /// Import energy at start, in 0.01 kWh.
    pub import_centi_kwh: u64,
    /// Export energy at start, in 0.01 kWh.
    pub export_centi_kwh: u64,
    /// Phase voltage in 0.1 V.
    pub voltage_decivolts: u32,
    /// Whether the meter takes function 06 (the DDS238 does not).
    pub accepts_write_single: bool,
    /// From the end of a request to the first reply byte.
    pub latency: Duration,
    /// The meter's UART settings.
    pub line: LineSettings,
}

impl ModbusMeterConfig {
    /// A meter at `slave` with `map`, drawing 1 kW at 230.0 V, 30 ms latency, 9600 8N1. The DDS238 map
    /// turns off function 06, as the real meter does.
    pub fn new(slave: u8, map: RegisterMap) -> Self {
        let accepts_write_single = map.model != "dds238";
        ModbusMeterConfig {
            slave,
            map,
            power_w: 1000,
            import_centi_kwh: 0,
            export_centi_kwh: 0,
            voltage_decivolts: 2300,
            accepts_write_single,
            latency: Duration::from_millis(30),
            line: LineSettings::modbus_default(),
        }
    }
}

/// The physical state of an emulated meter.
#[derive(Debug, Clone)]
pub struct ModbusMeterState {
    /// Power drawn, in W.
    pub power_w: i64,
    /// Phase voltage in 0.1 V.
    pub voltage_decivolts: u32,
    /// Frequency in 0.01 Hz.
    pub frequency_centihertz: u32,
    import_wus: f64,
    export_wus: f64,
    last_wall: Option<SystemTime>,
    /// Values written by the master, by (table, register).
    pub written: BTreeMap<(RegisterKind, u16), u16>,
}

impl ModbusMeterState {
    fn advance(&mut self, wall: SystemTime) {
        let Some(last) = self.last_wall.replace(wall) else {
            return;
        };
        let Ok(step) = wall.duration_since(last) else {
            self.last_wall = Some(last);
            return;
        };
        let energy = self.power_w.unsigned_abs() as f64 * step.as_micros() as f64;
        if self.power_w >= 0 {
            self.import_wus += energy;
        } else {
            self.export_wus += energy;
        }
    }

    /// Import energy in kWh.
    pub fn import_kwh(&self) -> f64 {
        self.import_wus / WUS_PER_KWH
    }

    /// Export energy in kWh.
    pub fn export_kwh(&self) -> f64 {
        self.export_wus / WUS_PER_KWH
    }
}

/// A handle to an emulated meter's state.
#[derive(Debug, Clone)]
pub struct ModbusMeterHandle {
    state: Arc<Mutex<ModbusMeterState>>,
}

impl ModbusMeterHandle {
    /// Locks the state to read or change it.
    pub fn lock(&self) -> MutexGuard<'_, ModbusMeterState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An emulated Modbus RTU meter.
#[derive(Debug)]
pub struct ModbusMeter {
    config: ModbusMeterConfig,
    phases: u8,
    state: Arc<Mutex<ModbusMeterState>>,
}

impl ModbusMeter {
    /// A meter set up by `config`.
    pub fn new(config: ModbusMeterConfig) -> Self {
        let phases = if config.map.register("voltage_l3").is_some() {
            3
        } else {
            1
        };
        let state = ModbusMeterState {
            power_w: config.power_w,
            voltage_decivolts: config.voltage_decivolts,
            frequency_centihertz: 5000,
            import_wus: config.import_centi_kwh as f64 * WUS_PER_KWH / 100.0,
            export_wus: config.export_centi_kwh as f64 * WUS_PER_KWH / 100.0,
            last_wall: None,
            written: BTreeMap::new(),
        };
        ModbusMeter {
            config,
            phases,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A handle to the state.
    pub fn handle(&self) -> ModbusMeterHandle {
        ModbusMeterHandle {
            state: Arc::clone(&self.state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ModbusMeterState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A quantity's value in V, A, W, kWh, Hz or as a plain number, then converted to the map's unit.
    fn physical(&self, state: &ModbusMeterState, register: &Register) -> f64 {
        let phases = f64::from(self.phases);
        let volts = f64::from(state.voltage_decivolts) / 10.0;
        let watts = state.power_w as f64;
        let name = register.quantity.as_str();
        let value = match name {
            _ if name.starts_with("voltage_") => volts,
            _ if name.starts_with("current_") => watts.abs() / phases / volts.max(1.0),
            "active_power_total" => watts,
            _ if name.starts_with("active_power_") => watts / phases,
            _ if name.starts_with("apparent_power_") => watts.abs() / phases,
            _ if name.starts_with("power_factor_") => 1.0,
            "frequency" => f64::from(state.frequency_centihertz) / 100.0,
            "import_active_energy" => state.import_kwh(),
            "export_active_energy" => state.export_kwh(),
            "total_active_energy" => state.import_kwh() + state.export_kwh(),
            _ => 0.0,
        };
        match register.unit.as_str() {
            "kW" | "kVA" | "kvar" => value / 1000.0,
            "Wh" | "varh" => value * 1000.0,
            _ => value,
        }
    }

    fn words(&self, state: &ModbusMeterState, register: &Register) -> Vec<u16> {
        let scaled =
            self.physical(state, register) / 10f64.powi(i32::from(register.scale_exponent));
        let raw = match register.data_type {
            DataType::F32be | DataType::F32ws => Raw::Float(scaled as f32),
            _ => Raw::Integer(scaled.round() as i64),
        };
        register.data_type.encode(raw)
    }

    /// Whether every register of the range is mapped, or inside a gap the meter tolerates.
    fn readable(&self, kind: RegisterKind, address: u16, count: u16) -> bool {
        let mut spans: Vec<(u32, u32)> = self
            .config
            .map
            .registers
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| (u32::from(r.address), r.end()))
            .collect();
        spans.sort_unstable();
        let mut covered: Vec<(u32, u32)> = Vec::new();
        for (start, end) in spans {
            match covered.last_mut() {
                Some(last) if start <= last.1 + u32::from(self.config.map.max_gap) => {
                    last.1 = last.1.max(end)
                }
                _ => covered.push((start, end)),
            }
        }
        let (start, end) = (u32::from(address), u32::from(address) + u32::from(count));
        covered.iter().any(|&(s, e)| s <= start && end <= e)
    }

    fn read(
        &self,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        if !self.readable(kind, address, count) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let state = self.lock();
        let mut image = vec![0u16; usize::from(count)];
        for register in self.config.map.registers.iter().filter(|r| r.kind == kind) {
            for (i, word) in self.words(&state, register).into_iter().enumerate() {
                let at = u32::from(register.address) + i as u32;
                if let Some(slot) = at
                    .checked_sub(u32::from(address))
                    .and_then(|o| image.get_mut(o as usize))
                {
                    *slot = word;
                }
            }
        }
        for (&(k, at), &value) in &state.written {
            if let Some(slot) = (k == kind)
                .then(|| at.checked_sub(address))
                .flatten()
                .and_then(|o| image.get_mut(usize::from(o)))
            {
                *slot = value;
            }
        }
        Ok(image)
    }

    fn write(&self, address: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        let count = u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
        if !self.readable(RegisterKind::Holding, address, count) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let mut state = self.lock();
        for (i, &value) in values.iter().enumerate() {
            state.written.insert(
                (RegisterKind::Holding, address.wrapping_add(i as u16)),
                value,
            );
        }
        Ok(())
    }

    fn answer(&self, request: &Request) -> Response {
        let (function, result) = match request {
            Request::ReadHoldingRegisters { address, count } => (
                3,
                self.read(RegisterKind::Holding, *address, *count)
                    .map(|values| Response::ReadHoldingRegisters { values }),
            ),
            Request::ReadInputRegisters { address, count } => (
                4,
                self.read(RegisterKind::Input, *address, *count)
                    .map(|values| Response::ReadInputRegisters { values }),
            ),
            Request::WriteSingleRegister { address, value } if self.config.accepts_write_single => {
                (
                    6,
                    self.write(*address, &[*value])
                        .map(|()| Response::WriteSingleRegister {
                            address: *address,
                            value: *value,
                        }),
                )
            }
            Request::WriteSingleRegister { .. } => (6, Err(ExceptionCode::IllegalFunction)),
            Request::WriteMultipleRegisters { address, values } => (
                16,
                self.write(*address, values)
                    .map(|()| Response::WriteMultipleRegisters {
                        address: *address,
                        count: values.len() as u16,
                    }),
            ),
        };
        result.unwrap_or_else(|code| Response::Exception(ModbusException { function, code }))
    }
}

impl SimDevice for ModbusMeter {
    fn name(&self) -> String {
        format!("modbus-{}-{}", self.config.map.model, self.config.slave)
    }

    fn line_settings(&self) -> Option<LineSettings> {
        Some(self.config.line)
    }

    fn on_frame(&mut self, bytes: &[u8], wall: SystemTime) -> Option<SimReply> {
        let Scan::Found { start, .. } = scan(bytes, Direction::Request, None) else {
            return None;
        };
        let (request, _) = RequestAdu::decode(&bytes[start..]).ok()?;
        self.lock().advance(wall);
        if request.slave != self.config.slave && request.slave != crate::frame::BROADCAST {
            return None;
        }
        let broadcast = request.slave == crate::frame::BROADCAST;
        if broadcast
            && matches!(
                request.pdu,
                Request::ReadHoldingRegisters { .. } | Request::ReadInputRegisters { .. }
            )
        {
            return None;
        }
        let response = self.answer(&request.pdu);
        if broadcast {
            return None;
        }
        let bytes = Adu {
            slave: self.config.slave,
            pdu: response,
        }
        .encode();
        Some(SimReply {
            bytes,
            latency: self.config.latency,
        })
    }
}
