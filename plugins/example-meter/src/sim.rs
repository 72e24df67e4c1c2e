//! A simulated EM-1 meter for the HAL's sim bus: answers the driver's three functions from a register
//! table, with exceptions for registers it does not have.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use concentrator_hal::sim::{SimDevice, SimReply};

use crate::frame::{self, EXCEPTION_BIT, READ_HOLDING, WRITE_MULTIPLE, WRITE_SINGLE};

/// A simulated EM-1 at one address.
#[derive(Debug, Clone)]
pub struct SimExampleMeter {
    address: u8,
    registers: BTreeMap<u16, u16>,
    latency: Duration,
}

impl SimExampleMeter {
    /// A meter at `address` with plausible readings: 1234.50 kWh imported, 230.1/229.8/231.0 V,
    /// 5.00 A on phase A, 1150 W, relay closed, 12.34 of credit.
    pub fn new(address: u8) -> Self {
        let mut meter = SimExampleMeter {
            address,
            registers: BTreeMap::new(),
            latency: Duration::from_millis(15),
        };
        meter.set_u32(0x0000, 123_450);
        meter.set_u32(0x0002, 0);
        for (t, value) in [(0u16, 60_000u32), (1, 40_000), (2, 20_000), (3, 3_450)] {
            meter.set_u32(0x0004 + 2 * t, value);
        }
        meter.registers.insert(0x0010, 2301);
        meter.registers.insert(0x0011, 2298);
        meter.registers.insert(0x0012, 2310);
        meter.registers.insert(0x0020, 500);
        meter.registers.insert(0x0021, 0);
        meter.registers.insert(0x0022, 0);
        meter.set_u32(0x0030, 1150);
        meter.registers.insert(0x0040, 1);
        meter.registers.insert(0x0041, 0);
        meter.set_u32(0x0050, 1_767_225_600);
        meter.set_u32(0x0060, 1234);
        meter
    }

    /// Sets a 32-bit value over two registers (high word first).
    pub fn set_u32(&mut self, register: u16, value: u32) {
        self.registers.insert(register, (value >> 16) as u16);
        self.registers
            .insert(register.wrapping_add(1), value as u16);
    }

    /// A register's value, if the meter has it.
    pub fn register(&self, register: u16) -> Option<u16> {
        self.registers.get(&register).copied()
    }

    fn exception(&self, function: u8, code: u8) -> Vec<u8> {
        frame::seal(vec![self.address, function | EXCEPTION_BIT, code])
    }

    fn answer(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        // The line may carry a wake-up preamble or noise before the frame; find our address.
        let start = request.iter().position(|b| *b == self.address)?;
        let request = &request[start..];
        if !frame::crc_ok(request) || request.len() < 8 {
            return None;
        }
        let function = request[1];
        let register = u16::from_be_bytes([request[2], request[3]]);
        let word = u16::from_be_bytes([request[4], request[5]]);
        match function {
            READ_HOLDING => {
                let mut reply = vec![self.address, READ_HOLDING, (word * 2) as u8];
                for r in register..register.saturating_add(word) {
                    match self.registers.get(&r) {
                        Some(value) => reply.extend_from_slice(&value.to_be_bytes()),
                        None => return Some(self.exception(function, 2)),
                    }
                }
                Some(frame::seal(reply))
            }
            WRITE_SINGLE => {
                if register != 0x0041 {
                    return Some(self.exception(function, 2));
                }
                let state = match word {
                    1 => 0,
                    2 => 2,
                    3 | 5 => 1,
                    4 => self.registers.get(&0x0040).copied().unwrap_or(0),
                    _ => return Some(self.exception(function, 3)),
                };
                self.registers.insert(0x0040, state);
                self.registers.insert(0x0041, word);
                Some(request[..8].to_vec())
            }
            WRITE_MULTIPLE => {
                let count = usize::from(word);
                let data = request.get(7..7 + 2 * count)?;
                if register != 0x0050 || count != 2 {
                    return Some(self.exception(function, 2));
                }
                for (i, pair) in data.chunks_exact(2).enumerate() {
                    self.registers
                        .insert(register + i as u16, u16::from_be_bytes([pair[0], pair[1]]));
                }
                Some(frame::seal(request[..6].to_vec()))
            }
            _ => Some(self.exception(function, 1)),
        }
    }
}

impl SimDevice for SimExampleMeter {
    fn name(&self) -> String {
        format!("em-1@{}", self.address)
    }

    fn on_frame(&mut self, frame: &[u8], _wall: SystemTime) -> Option<SimReply> {
        self.answer(frame).map(|bytes| SimReply {
            bytes,
            latency: self.latency,
        })
    }
}
