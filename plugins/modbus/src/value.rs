//! Register data types and the exact decimal readings they turn into.

use std::fmt;

/// How a value is laid out in registers. Modbus registers are big-endian words; 32-bit values take two
/// registers, high word first (`*be`) or, on some meters, low word first (`*ws`, word-swapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Unsigned 16 bits.
    U16,
    /// Signed 16 bits.
    I16,
    /// Unsigned 32 bits, high word first.
    U32be,
    /// Unsigned 32 bits, low word first.
    U32ws,
    /// Signed 32 bits, high word first.
    I32be,
    /// Signed 32 bits, low word first.
    I32ws,
    /// IEEE 754 single precision, high word first (Eastron SDM meters).
    F32be,
    /// IEEE 754 single precision, low word first.
    F32ws,
}

/// A raw register value before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw {
    /// An integer type.
    Integer(i64),
    /// A float type.
    Float(f32),
}

impl DataType {
    /// Registers the type takes.
    pub const fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            _ => 2,
        }
    }

    /// The name used in register maps.
    pub const fn name(self) -> &'static str {
        match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32be => "u32be",
            DataType::U32ws => "u32ws",
            DataType::I32be => "i32be",
            DataType::I32ws => "i32ws",
            DataType::F32be => "f32be",
            DataType::F32ws => "f32ws",
        }
    }

    /// Decodes the value from its registers; `None` if too few are given.
    pub fn decode(self, words: &[u16]) -> Option<Raw> {
        let first = *words.first()?;
        if self.registers() == 1 {
            return Some(Raw::Integer(if self == DataType::I16 {
                i64::from(first as i16)
            } else {
                i64::from(first)
            }));
        }
        let second = *words.get(1)?;
        let (high, low) = match self {
            DataType::U32ws | DataType::I32ws | DataType::F32ws => (second, first),
            _ => (first, second),
        };
        let bits = (u32::from(high) << 16) | u32::from(low);
        Some(match self {
            DataType::I32be | DataType::I32ws => Raw::Integer(i64::from(bits as i32)),
            DataType::F32be | DataType::F32ws => Raw::Float(f32::from_bits(bits)),
            _ => Raw::Integer(i64::from(bits)),
        })
    }

    /// The registers that hold `raw` (saturating integers to the type's range).
    pub fn encode(self, raw: Raw) -> Vec<u16> {
        let bits: u32 = match (self, raw) {
            (DataType::F32be | DataType::F32ws, Raw::Float(f)) => f.to_bits(),
            (DataType::F32be | DataType::F32ws, Raw::Integer(i)) => (i as f32).to_bits(),
            (DataType::U16, Raw::Integer(i)) => i.clamp(0, 0xFFFF) as u32,
            (DataType::I16, Raw::Integer(i)) => i.clamp(-0x8000, 0x7FFF) as i16 as u16 as u32,
            (DataType::U32be | DataType::U32ws, Raw::Integer(i)) => i.clamp(0, 0xFFFF_FFFF) as u32,
            (_, Raw::Integer(i)) => i.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32 as u32,
            (_, Raw::Float(f)) => return self.encode(Raw::Integer(f.round() as i64)),
        };
        let (high, low) = ((bits >> 16) as u16, bits as u16);
        match self {
            DataType::U16 | DataType::I16 => vec![low],
            DataType::U32ws | DataType::I32ws | DataType::F32ws => vec![low, high],
            _ => vec![high, low],
        }
    }
}

/// An exact decimal reading: `mantissa × 10^exponent unit`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Reading {
    /// The digits, with the sign.
    pub mantissa: i64,
    /// The power of ten.
    pub exponent: i8,
    /// The unit as the register map names it (`kWh`, `V`, `A`, `W`, `Hz`, or empty).
    pub unit: String,
}

impl Reading {
    /// The value as a float.
    pub fn to_f64(&self) -> f64 {
        self.mantissa as f64 * 10f64.powi(i32::from(self.exponent))
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        if self.exponent >= 0 {
            let zeros = "0".repeat(usize::from(self.exponent.unsigned_abs()));
            return write!(f, "{}{zeros}{unit}", self.mantissa);
        }
        let decimals = usize::from(self.exponent.unsigned_abs());
        let digits = format!(
            "{:0width$}",
            self.mantissa.unsigned_abs(),
            width = decimals + 1
        );
        let (int, frac) = digits.split_at(digits.len() - decimals);
        let sign = if self.mantissa < 0 { "-" } else { "" };
        write!(f, "{sign}{int}.{frac}{unit}")
    }
}

/// Why a raw value could not become a reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadingError {
    /// A float register holds NaN or infinity (meters do this for values they do not measure).
    #[error("the register holds {0}, not a number")]
    NotFinite(f32),
    /// The scaled value does not fit 64 bits.
    #[error("{0} does not fit an exact reading")]
    Overflow(f64),
    /// The reply did not hold the quantity's registers.
    #[error("the reply does not hold this quantity's registers")]
    Missing,
}

/// Turns a raw value into an exact reading: integers become `raw × 10^scale_exponent`; floats are
/// scaled and rounded to `decimals` places (a float register has no exact decimal value of its own).
pub fn to_reading(
    raw: Raw,
    scale_exponent: i8,
    decimals: u8,
    unit: &str,
) -> Result<Reading, ReadingError> {
    match raw {
        Raw::Integer(mantissa) => Ok(Reading {
            mantissa,
            exponent: scale_exponent,
            unit: unit.to_string(),
        }),
        Raw::Float(value) => {
            if !value.is_finite() {
                return Err(ReadingError::NotFinite(value));
            }
            // Go through the shortest decimal that round-trips the f32 (230.5 stays 230.5, 12345.67
            // stays 12345.67) instead of the binary value's long expansion.
            let shortest: f64 = value.to_string().parse().unwrap_or(f64::from(value));
            let exponent = i32::from(scale_exponent) - i32::from(decimals);
            let scaled = (shortest * 10f64.powi(i32::from(decimals))).round();
            if scaled.abs() >= 9.0e18 {
                return Err(ReadingError::Overflow(scaled));
            }
            let exponent = i8::try_from(exponent).map_err(|_| ReadingError::Overflow(scaled))?;
            Ok(Reading {
                mantissa: scaled as i64,
                exponent,
                unit: unit.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_decode_and_encode() {
        assert_eq!(
            DataType::F32be.decode(&[0x4366, 0x8000]),
            Some(Raw::Float(230.5))
        );
        assert_eq!(
            DataType::F32ws.decode(&[0x8000, 0x4366]),
            Some(Raw::Float(230.5))
        );
        assert_eq!(DataType::I16.decode(&[0xFFFE]), Some(Raw::Integer(-2)));
        assert_eq!(
            DataType::U32be.decode(&[0x0001, 0xE240]),
            Some(Raw::Integer(123_456))
        );
        assert_eq!(
            DataType::U32ws.decode(&[0xE240, 0x0001]),
            Some(Raw::Integer(123_456))
        );
        assert_eq!(
            DataType::I32be.decode(&[0xFFFF, 0xFFFF]),
            Some(Raw::Integer(-1))
        );
        assert_eq!(DataType::U32be.decode(&[1]), None);
        for t in [
            DataType::U16,
            DataType::I16,
            DataType::U32be,
            DataType::U32ws,
            DataType::I32be,
            DataType::I32ws,
        ] {
            assert_eq!(
                t.decode(&t.encode(Raw::Integer(1234))),
                Some(Raw::Integer(1234)),
                "{t:?}"
            );
        }
        assert_eq!(
            DataType::F32be.encode(Raw::Float(12345.67)),
            vec![0x4640, 0xE6AE]
        );
    }

    #[test]
    fn readings_are_exact() {
        let r = to_reading(Raw::Float(12345.67), 0, 2, "kWh").unwrap();
        assert_eq!((r.mantissa, r.exponent), (1_234_567, -2));
        assert_eq!(r.to_string(), "12345.67 kWh");
        let r = to_reading(Raw::Integer(2301), -1, 0, "V").unwrap();
        assert_eq!(r.to_string(), "230.1 V");
        let r = to_reading(Raw::Float(1.5), 3, 0, "W").unwrap();
        assert_eq!(r.to_string(), "2000 W"); // 1.5 rounded to 2, ×1000
        assert!(to_reading(Raw::Float(f32::NAN), 0, 2, "V").is_err());
    }
}
