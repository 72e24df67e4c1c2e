//! Data identifiers (DI3 DI2 DI1 DI0) the concentrator reads, their data formats and decoding.
//!
//! Formats follow DL/T 645-2007 Appendix A: energy `XXXXXX.XX` kWh in 4 bytes, voltage `XXX.X` V in 2,
//! current `XXX.XXX` A in 3 (signed), active power `XX.XXXX` kW in 3 (signed), frequency `XX.XX` Hz in
//! 2, the date `YYMMDDWW` sent `WW` first, the time `hhmmss` sent `ss` first, prepaid remaining energy
//! and money `XXXXXX.XX` in 4. A DI whose DI1 is `FF` reads the whole block (total and every tariff, or
//! every phase) as consecutive items.

use std::fmt;
use std::str::FromStr;

use crate::bcd;
use crate::status::RunningStatus3;
use crate::value::{DateTimeError, MeterDate, MeterDateTime, MeterTime, Reading, Unit};
use crate::Dlt645Address;

/// A data identifier, written as eight hex digits `DI3 DI2 DI1 DI0` (`00010000` = import active
/// energy, total). On the wire DI0 goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataId(pub u32);

/// A phase of a three-phase supply (a single-phase meter has A only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Phase {
    /// Phase A (L1).
    A,
    /// Phase B (L2).
    B,
    /// Phase C (L3).
    C,
}

impl Phase {
    const fn index(self) -> u32 {
        match self {
            Phase::A => 1,
            Phase::B => 2,
            Phase::C => 3,
        }
    }
}

/// How a DI's data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// A BCD number of `bytes` bytes with `decimals` decimals; `signed` puts the sign in the top bit.
    Number {
        /// Bytes on the wire.
        bytes: usize,
        /// Decimal places.
        decimals: u8,
        /// Whether the top bit is a sign.
        signed: bool,
        /// The unit.
        unit: Unit,
    },
    /// `WW DD MM YY`.
    Date,
    /// `ss mm hh`.
    Time,
    /// Running status word 3, 2 bytes binary.
    RunningStatus3,
    /// A meter address, 6 bytes.
    Address,
    /// When a freeze was taken: `mm hh DD MM YY` (minute first), 5 bytes.
    FrozenTime,
}

impl DataFormat {
    /// Bytes one item takes.
    pub const fn item_len(&self) -> usize {
        match self {
            DataFormat::Number { bytes, .. } => *bytes,
            DataFormat::Date => 4,
            DataFormat::Time => 3,
            DataFormat::RunningStatus3 => 2,
            DataFormat::Address => 6,
            DataFormat::FrozenTime => 5,
        }
    }
}

const fn number(bytes: usize, decimals: u8, signed: bool, unit: Unit) -> DataFormat {
    DataFormat::Number {
        bytes,
        decimals,
        signed,
        unit,
    }
}

impl DataId {
    /// Combined active energy, total (`00000000`).
    pub const COMBINED_ACTIVE_ENERGY: DataId = DataId(0x0000_0000);
    /// Import (forward) active energy, total (`00010000`).
    pub const IMPORT_ACTIVE_ENERGY: DataId = DataId(0x0001_0000);
    /// Export (reverse) active energy, total (`00020000`).
    pub const EXPORT_ACTIVE_ENERGY: DataId = DataId(0x0002_0000);
    /// Import active energy, total and every tariff (`0001FF00`).
    pub const IMPORT_ACTIVE_ENERGY_BLOCK: DataId = DataId(0x0001_FF00);
    /// Export active energy, total and every tariff (`0002FF00`).
    pub const EXPORT_ACTIVE_ENERGY_BLOCK: DataId = DataId(0x0002_FF00);
    /// Voltage of every phase (`0201FF00`).
    pub const VOLTAGE_BLOCK: DataId = DataId(0x0201_FF00);
    /// Current of every phase (`0202FF00`).
    pub const CURRENT_BLOCK: DataId = DataId(0x0202_FF00);
    /// Active power, total (`02030000`).
    pub const ACTIVE_POWER: DataId = DataId(0x0203_0000);
    /// Active power, total and every phase (`0203FF00`).
    pub const ACTIVE_POWER_BLOCK: DataId = DataId(0x0203_FF00);
    /// Grid frequency (`02800002`).
    pub const FREQUENCY: DataId = DataId(0x0280_0002);
    /// Remaining energy of an energy-prepaid meter (`00900100`).
    pub const REMAINING_ENERGY: DataId = DataId(0x0090_0100);
    /// Remaining money of a money-prepaid meter (`00900200`).
    pub const REMAINING_MONEY: DataId = DataId(0x0090_0200);
    /// The meter's date (`04000101`).
    pub const DATE: DataId = DataId(0x0400_0101);
    /// The meter's time of day (`04000102`).
    pub const TIME: DataId = DataId(0x0400_0102);
    /// The communication address (`04000401`).
    pub const ADDRESS: DataId = DataId(0x0400_0401);
    /// Running status word 3, with the relay state (`04000503`).
    pub const RUNNING_STATUS_3: DataId = DataId(0x0400_0503);

    /// The most hourly freezes a meter keeps (`n` of [`DataId::hourly_frozen_time`] is 1..=254).
    pub const HOURLY_FREEZES: u8 = 254;

    /// When the `n`-th most recent hourly freeze was taken (`050400nn`, 1 = the newest).
    pub const fn hourly_frozen_time(n: u8) -> DataId {
        DataId(0x0504_0000 | n as u32)
    }

    /// Import active energy, total, at the `n`-th most recent hourly freeze (`050401nn`).
    pub const fn hourly_frozen_import_energy(n: u8) -> DataId {
        DataId(0x0504_0100 | n as u32)
    }

    /// Import active energy of a tariff (0 = total, 1..=63 the tariffs).
    pub const fn import_active_energy(tariff: u8) -> DataId {
        DataId(0x0001_0000 | (tariff as u32) << 8)
    }

    /// Export active energy of a tariff (0 = total).
    pub const fn export_active_energy(tariff: u8) -> DataId {
        DataId(0x0002_0000 | (tariff as u32) << 8)
    }

    /// Combined active energy of a tariff (0 = total).
    pub const fn combined_active_energy(tariff: u8) -> DataId {
        DataId((tariff as u32) << 8)
    }

    /// Voltage of a phase.
    pub const fn voltage(phase: Phase) -> DataId {
        DataId(0x0201_0000 | phase.index() << 8)
    }

    /// Current of a phase.
    pub const fn current(phase: Phase) -> DataId {
        DataId(0x0202_0000 | phase.index() << 8)
    }

    /// Active power of a phase.
    pub const fn active_power(phase: Phase) -> DataId {
        DataId(0x0203_0000 | phase.index() << 8)
    }

    /// The four bytes on the wire, DI0 first.
    pub const fn to_wire(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }

    /// From the four bytes on the wire.
    pub const fn from_wire(bytes: [u8; 4]) -> DataId {
        DataId(u32::from_le_bytes(bytes))
    }

    const fn byte(self, index: u32) -> u8 {
        (self.0 >> (8 * index)) as u8
    }

    /// True when DI1 is `FF`: a block of every tariff or phase.
    pub const fn is_block(self) -> bool {
        self.byte(1) == 0xFF
    }

    /// The format of one item of this DI, if the concentrator knows it.
    pub fn format(self) -> Option<DataFormat> {
        let (di3, di2, di1, di0) = (self.byte(3), self.byte(2), self.byte(1), self.byte(0));
        let phase = matches!(di1, 1..=3 | 0xFF);
        Some(match (di3, di2, di1, di0) {
            (0x00, 0x00, 0x00..=0x3F | 0xFF, 0x00) => number(4, 2, true, Unit::KilowattHour),
            (0x00, 0x01..=0x02, 0x00..=0x3F | 0xFF, 0x00) => {
                number(4, 2, false, Unit::KilowattHour)
            }
            (0x00, 0x90, 0x01 | 0x02, 0x00 | 0x01) => number(
                4,
                2,
                false,
                if di1 == 1 {
                    Unit::KilowattHour
                } else {
                    Unit::Currency
                },
            ),
            (0x02, 0x01, _, 0x00) if phase => number(2, 1, false, Unit::Volt),
            (0x02, 0x02, _, 0x00) if phase => number(3, 3, true, Unit::Ampere),
            (0x02, 0x03, 0x00..=0x03 | 0xFF, 0x00) => number(3, 4, true, Unit::Kilowatt),
            (0x02, 0x80, 0x00, 0x02) => number(2, 2, false, Unit::Hertz),
            (0x04, 0x00, 0x01, 0x01) => DataFormat::Date,
            (0x04, 0x00, 0x01, 0x02) => DataFormat::Time,
            (0x04, 0x00, 0x04, 0x01) => DataFormat::Address,
            (0x04, 0x00, 0x05, 0x03) => DataFormat::RunningStatus3,
            (0x05, 0x04, 0x00, 0x01..=0xFE) => DataFormat::FrozenTime,
            (0x05, 0x04, 0x01..=0x02, 0x01..=0xFE) => number(4, 2, false, Unit::KilowattHour),
            _ => return None,
        })
    }

    /// What the DI is, in words, if the concentrator knows it.
    pub fn name(self) -> Option<String> {
        let (di2, di1) = (self.byte(2), self.byte(1));
        let tariff = || match di1 {
            0 => "total".to_string(),
            0xFF => "total and every tariff".to_string(),
            n => format!("tariff {n}"),
        };
        let phase = || match di1 {
            0 => "total".to_string(),
            0xFF => "every phase".to_string(),
            n => format!(
                "phase {}",
                ['A', 'B', 'C']
                    .get(usize::from(n).wrapping_sub(1))
                    .unwrap_or(&'?')
            ),
        };
        self.format()?;
        Some(match (self.byte(3), di2) {
            (0x00, 0x00) => format!("combined active energy, {}", tariff()),
            (0x00, 0x01) => format!("import active energy, {}", tariff()),
            (0x00, 0x02) => format!("export active energy, {}", tariff()),
            (0x00, 0x90) => match (di1, self.byte(0)) {
                (1, 0) => "remaining energy (prepaid)".to_string(),
                (1, _) => "overdraft energy (prepaid)".to_string(),
                (_, 0) => "remaining money (prepaid)".to_string(),
                _ => "overdraft money (prepaid)".to_string(),
            },
            (0x02, 0x01) => format!("voltage, {}", phase()),
            (0x02, 0x02) => format!("current, {}", phase()),
            (0x02, 0x03) => format!("active power, {}", phase()),
            (0x02, 0x80) => "grid frequency".to_string(),
            (0x05, 0x04) => format!(
                "{} at hourly freeze {} (1 = the newest)",
                match di1 {
                    0 => "time",
                    1 => "import active energy, total",
                    _ => "export active energy, total",
                },
                self.byte(0)
            ),
            (0x04, _) => match self.0 {
                0x0400_0101 => "meter date".to_string(),
                0x0400_0102 => "meter time".to_string(),
                0x0400_0401 => "communication address".to_string(),
                _ => "running status word 3".to_string(),
            },
            _ => return None,
        })
    }
}

impl fmt::Display for DataId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl FromStr for DataId {
    type Err = String;

    /// Eight hex digits, `DI3` first (`00010000`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 8 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`{text}` is not a data identifier: write 8 hex digits DI3 DI2 DI1 DI0, like 00010000"));
        }
        u32::from_str_radix(text, 16)
            .map(DataId)
            .map_err(|e| e.to_string())
    }
}

impl serde::Serialize for DataId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A value read from a meter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// One number with its unit.
    Reading(Reading),
    /// A block: total then each tariff, or each phase.
    Readings(Vec<Reading>),
    /// The meter's date.
    Date(MeterDate),
    /// The meter's time of day.
    Time(MeterTime),
    /// Running status word 3.
    RunningStatus3(RunningStatus3),
    /// A meter address.
    Address(Dlt645Address),
    /// When a freeze was taken (the meter's local time, seconds 0).
    FrozenTime(MeterDateTime),
}

/// Why a DI's data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The concentrator does not know the DI's format.
    #[error("data identifier {0} is not one the concentrator knows the format of")]
    UnknownDataId(DataId),
    /// The data has the wrong length for the DI.
    #[error("{di} carries {expected} data byte(s), the reply has {found}")]
    Length {
        /// The DI.
        di: DataId,
        /// Bytes expected (for a block: a multiple of this).
        expected: String,
        /// Bytes found.
        found: usize,
    },
    /// A number is not BCD.
    #[error("{di}: data byte {offset} is 0x{byte:02X}, not BCD")]
    Bcd {
        /// The DI.
        di: DataId,
        /// Offset in the value data (after the DI).
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A date or time field is out of range.
    #[error("{di}: {source}")]
    DateTime {
        /// The DI.
        di: DataId,
        /// What is wrong.
        source: DateTimeError,
    },
}

/// Decodes the value bytes of a read reply (the data after the four DI bytes).
pub fn decode_value(di: DataId, data: &[u8]) -> Result<Value, ValueError> {
    let format = di.format().ok_or(ValueError::UnknownDataId(di))?;
    let item = format.item_len();
    if di.is_block() {
        if data.is_empty() || !data.len().is_multiple_of(item) {
            return Err(ValueError::Length {
                di,
                expected: format!("a multiple of {item}"),
                found: data.len(),
            });
        }
        let readings = data
            .chunks(item)
            .enumerate()
            .map(
                |(i, chunk)| match decode_item(di, format, chunk, i * item)? {
                    Value::Reading(r) => Ok(r),
                    _ => Err(ValueError::UnknownDataId(di)),
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::Readings(readings));
    }
    if data.len() != item {
        return Err(ValueError::Length {
            di,
            expected: item.to_string(),
            found: data.len(),
        });
    }
    decode_item(di, format, data, 0)
}

fn decode_item(
    di: DataId,
    format: DataFormat,
    data: &[u8],
    base: usize,
) -> Result<Value, ValueError> {
    let bcd_error = |e: bcd::BcdError| ValueError::Bcd {
        di,
        offset: base + e.offset,
        byte: e.byte,
    };
    let date_error = |source: DateTimeError| match source {
        DateTimeError::Bcd(e) => bcd_error(e),
        source => ValueError::DateTime { di, source },
    };
    Ok(match format {
        DataFormat::Number {
            decimals,
            signed,
            unit,
            ..
        } => {
            let mantissa = if signed {
                bcd::decode_signed(data).map_err(bcd_error)?
            } else {
                i64::try_from(bcd::decode_unsigned(data).map_err(bcd_error)?).unwrap_or(i64::MAX)
            };
            Value::Reading(Reading::new(mantissa, -(decimals as i8), unit))
        }
        DataFormat::Date => Value::Date(MeterDate::from_wire(data).map_err(date_error)?),
        DataFormat::Time => Value::Time(MeterTime::from_wire(data).map_err(date_error)?),
        DataFormat::RunningStatus3 => {
            let word = u16::from_le_bytes([
                data.first().copied().unwrap_or(0),
                data.get(1).copied().unwrap_or(0),
            ]);
            Value::RunningStatus3(RunningStatus3::from_word(word))
        }
        DataFormat::Address => {
            let mut bytes = [0u8; 6];
            bytes.iter_mut().zip(data).for_each(|(b, d)| *b = *d);
            Value::Address(Dlt645Address(bytes))
        }
        DataFormat::FrozenTime => {
            let mut wire = [0u8; 6];
            wire[1..].iter_mut().zip(data).for_each(|(b, d)| *b = *d);
            Value::FrozenTime(MeterDateTime::from_wire(&wire).map_err(date_error)?)
        }
    })
}

/// Encodes a reading in `di`'s format (the emulator's side, and tests).
pub fn encode_reading(di: DataId, mantissa: i64) -> Option<Vec<u8>> {
    match di.format()? {
        DataFormat::Number {
            bytes,
            signed: true,
            ..
        } => bcd::encode_signed(mantissa, bytes),
        DataFormat::Number { bytes, .. } => {
            bcd::encode_unsigned(u64::try_from(mantissa).ok()?, bytes)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_and_names() {
        assert_eq!(
            DataId::IMPORT_ACTIVE_ENERGY.to_wire(),
            [0x00, 0x00, 0x01, 0x00]
        );
        assert_eq!(DataId::voltage(Phase::A), DataId(0x0201_0100));
        assert_eq!(DataId::import_active_energy(2).to_string(), "00010200");
        assert_eq!(
            DataId::voltage(Phase::B).name().unwrap(),
            "voltage, phase B"
        );
        assert_eq!(
            "00900200".parse::<DataId>().unwrap(),
            DataId::REMAINING_MONEY
        );
        assert!(DataId(0x0330_0201).format().is_none());
    }

    #[test]
    fn decodes_numbers_and_blocks() {
        let v = decode_value(DataId::IMPORT_ACTIVE_ENERGY, &[0x67, 0x45, 0x23, 0x01]).unwrap();
        assert_eq!(
            v,
            Value::Reading(Reading::new(1_234_567, -2, Unit::KilowattHour))
        );
        let v = decode_value(DataId::current(Phase::A), &[0x00, 0x50, 0x80]).unwrap();
        assert_eq!(v, Value::Reading(Reading::new(-5_000, -3, Unit::Ampere)));
        let v = decode_value(DataId::VOLTAGE_BLOCK, &[0x01, 0x22, 0x02, 0x22, 0x03, 0x22]).unwrap();
        assert_eq!(
            v,
            Value::Readings(
                vec![2201, 2202, 2203]
                    .into_iter()
                    .map(|m| Reading::new(m, -1, Unit::Volt))
                    .collect()
            )
        );
    }

    #[test]
    fn decodes_hourly_freezes() {
        let t = DataId::hourly_frozen_time(3);
        assert_eq!(t.to_string(), "05040003");
        assert_eq!(
            t.name().unwrap(),
            "time at hourly freeze 3 (1 = the newest)"
        );
        // 2026-12-06 14:00, minute first.
        let v = decode_value(t, &[0x00, 0x14, 0x06, 0x12, 0x26]).unwrap();
        assert_eq!(
            v,
            Value::FrozenTime(MeterDateTime::new(2026, 12, 6, 14, 0, 0).unwrap())
        );
        let e = DataId::hourly_frozen_import_energy(3);
        assert_eq!(e.to_string(), "05040103");
        let v = decode_value(e, &[0x67, 0x45, 0x23, 0x01]).unwrap();
        assert_eq!(
            v,
            Value::Reading(Reading::new(1_234_567, -2, Unit::KilowattHour))
        );
        assert!(
            DataId(0x0504_0000).format().is_none(),
            "freeze 0 does not exist"
        );
        assert!(DataId(0x0504_00FF).format().is_none());
        assert!(
            decode_value(t, &[0x00, 0x25, 0x06, 0x12, 0x26]).is_err(),
            "hour 25"
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let err =
            decode_value(DataId::IMPORT_ACTIVE_ENERGY, &[0x67, 0x45, 0x2A, 0x01]).unwrap_err();
        assert_eq!(err.to_string(), "00010000: data byte 2 is 0x2A, not BCD");
        let err = decode_value(DataId::VOLTAGE_BLOCK, &[0x01, 0x22, 0x02]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0201FF00 carries a multiple of 2 data byte(s), the reply has 3"
        );
        assert_eq!(
            decode_value(DataId(0x0330_0201), &[]),
            Err(ValueError::UnknownDataId(DataId(0x0330_0201)))
        );
    }
}
