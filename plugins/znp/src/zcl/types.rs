//! ZCL data types (ZCL 07-5123 §2.6.2): the type byte tells the length of the value that follows.

use serde::{Deserialize, Serialize};

use super::frame::ZclError;
use crate::wire::{FieldReader, PutLe};

/// Type ids used by this crate.
pub mod data_type {
    /// Boolean.
    pub const BOOL: u8 = 0x10;
    /// 8-bit bitmap.
    pub const BITMAP8: u8 = 0x18;
    /// 16-bit bitmap.
    pub const BITMAP16: u8 = 0x19;
    /// Unsigned 8-bit integer.
    pub const UINT8: u8 = 0x20;
    /// Unsigned 16-bit integer.
    pub const UINT16: u8 = 0x21;
    /// Unsigned 24-bit integer.
    pub const UINT24: u8 = 0x22;
    /// Unsigned 32-bit integer.
    pub const UINT32: u8 = 0x23;
    /// Unsigned 48-bit integer.
    pub const UINT48: u8 = 0x25;
    /// Signed 24-bit integer.
    pub const INT24: u8 = 0x2A;
    /// Signed 32-bit integer.
    pub const INT32: u8 = 0x2B;
    /// 8-bit enumeration.
    pub const ENUM8: u8 = 0x30;
    /// Octet string (one length byte).
    pub const OCTET_STRING: u8 = 0x41;
    /// Character string (one length byte).
    pub const CHAR_STRING: u8 = 0x42;
    /// UTC time (seconds since 2000-01-01).
    pub const UTC: u8 = 0xE2;
}

/// A typed attribute value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "kebab-case")]
pub enum ZclValue {
    /// Boolean (0x10).
    Bool(bool),
    /// General data or bitmap of 1–8 bytes (0x08–0x0F, 0x18–0x1F): type id and bits.
    Bits(u8, u64),
    /// Unsigned integer of 1–8 bytes (0x20–0x27), or a cluster/attribute id, or an IEEE address.
    Unsigned(u8, u64),
    /// Signed integer of 1–8 bytes (0x28–0x2F), sign-extended.
    Signed(u8, i64),
    /// Enumeration (0x30, 0x31).
    Enum(u8, u16),
    /// Float of 2, 4 or 8 bytes (0x38–0x3A), as its bits.
    Float(u8, u64),
    /// Time of day, date or UTC time (0xE0–0xE2), as its 32 bits.
    Time(u8, u32),
    /// Octet string (0x41) or long octet string (0x43).
    Octets(u8, Vec<u8>),
    /// Character string (0x42) or long character string (0x44), as bytes.
    Chars(u8, Vec<u8>),
    /// 128-bit security key (0xF1).
    Key(Vec<u8>),
}

/// How many bytes a fixed-length type takes, `None` for strings and unsupported types.
pub fn fixed_size(data_type: u8) -> Option<usize> {
    Some(match data_type {
        0x08..=0x0F => usize::from(data_type - 0x07),
        0x10 | 0x30 => 1,
        0x18..=0x1F => usize::from(data_type - 0x17),
        0x20..=0x27 => usize::from(data_type - 0x1F),
        0x28..=0x2F => usize::from(data_type - 0x27),
        0x31 | 0x38 | 0xE8 | 0xE9 => 2,
        0x39 | 0xE0..=0xE2 | 0xEA => 4,
        0x3A | 0xF0 => 8,
        0xF1 => 16,
        _ => return None,
    })
}

/// Whether a type is analog (its reporting configuration carries a reportable change).
pub fn is_analog(data_type: u8) -> bool {
    matches!(data_type, 0x20..=0x2F | 0x38..=0x3A | 0xE0..=0xE2)
}

impl ZclValue {
    /// The type id.
    pub fn data_type(&self) -> u8 {
        match self {
            ZclValue::Bool(_) => data_type::BOOL,
            ZclValue::Bits(t, _)
            | ZclValue::Unsigned(t, _)
            | ZclValue::Signed(t, _)
            | ZclValue::Enum(t, _)
            | ZclValue::Float(t, _)
            | ZclValue::Time(t, _)
            | ZclValue::Octets(t, _)
            | ZclValue::Chars(t, _) => *t,
            ZclValue::Key(_) => 0xF1,
        }
    }

    /// Reads a value of `data_type` (its type byte already read, at `type_offset`).
    pub fn decode(
        data_type: u8,
        type_offset: usize,
        r: &mut FieldReader<'_>,
    ) -> Result<ZclValue, ZclError> {
        let unsupported = ZclError::DataType {
            offset: type_offset,
            data_type,
        };
        Ok(match data_type {
            0x41..=0x44 => {
                let long = data_type >= 0x43;
                let len = if long {
                    r.u16("string length")?
                } else {
                    u16::from(r.u8("string length")?)
                };
                // 0xFF (0xFFFF) is the invalid string: no bytes follow.
                let invalid = (!long && len == 0xFF) || len == 0xFFFF;
                let bytes = if invalid {
                    Vec::new()
                } else {
                    r.take(usize::from(len), "string")?.to_vec()
                };
                if data_type == 0x41 || data_type == 0x43 {
                    ZclValue::Octets(data_type, bytes)
                } else {
                    ZclValue::Chars(data_type, bytes)
                }
            }
            _ => {
                let size = fixed_size(data_type).ok_or(unsupported)?;
                if data_type == 0xF1 {
                    return Ok(ZclValue::Key(r.take(16, "key")?.to_vec()));
                }
                let raw = r.uint(size, "attribute value")?;
                match data_type {
                    0x10 => ZclValue::Bool(raw != 0),
                    0x08..=0x0F | 0x18..=0x1F => ZclValue::Bits(data_type, raw),
                    0x20..=0x27 | 0xE8 | 0xE9 | 0xEA | 0xF0 => ZclValue::Unsigned(data_type, raw),
                    0x28..=0x2F => {
                        let shift = 64 - 8 * size as u32;
                        ZclValue::Signed(data_type, ((raw << shift) as i64) >> shift)
                    }
                    0x30 | 0x31 => ZclValue::Enum(data_type, raw as u16),
                    0x38..=0x3A => ZclValue::Float(data_type, raw),
                    _ => ZclValue::Time(data_type, raw as u32),
                }
            }
        })
    }

    /// Appends the value (without its type byte).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let size = fixed_size(self.data_type()).unwrap_or(0);
        match self {
            ZclValue::Bool(b) => out.push(u8::from(*b)),
            ZclValue::Bits(_, v) | ZclValue::Unsigned(_, v) | ZclValue::Float(_, v) => {
                out.put_uint(*v, size)
            }
            ZclValue::Signed(_, v) => out.put_uint(*v as u64, size),
            ZclValue::Enum(_, v) => out.put_uint(u64::from(*v), size),
            ZclValue::Time(_, v) => out.put_u32(*v),
            ZclValue::Octets(t, b) | ZclValue::Chars(t, b) => {
                if *t >= 0x43 {
                    out.put_u16(b.len().min(0xFFFE) as u16);
                } else {
                    out.push(b.len().min(0xFE) as u8);
                }
                out.extend_from_slice(b);
            }
            ZclValue::Key(k) => out.extend_from_slice(k),
        }
    }

    /// The value as an integer, for the numeric types.
    pub fn as_i128(&self) -> Option<i128> {
        match self {
            ZclValue::Bool(b) => Some(i128::from(*b)),
            ZclValue::Bits(_, v) | ZclValue::Unsigned(_, v) => Some(i128::from(*v)),
            ZclValue::Signed(_, v) => Some(i128::from(*v)),
            ZclValue::Enum(_, v) => Some(i128::from(*v)),
            ZclValue::Time(_, v) => Some(i128::from(*v)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for (ty, bytes) in [
            (0x25u8, vec![0x40, 0xE2, 0x01, 0, 0, 0]),
            (0x2A, vec![0xFE, 0xFF, 0xFF]),
            (0x2B, vec![0x10, 0x27, 0, 0]),
            (0x41, vec![3, 1, 2, 3]),
            (0x18, vec![0x05]),
            (0xE2, vec![1, 2, 3, 4]),
        ] {
            let mut r = FieldReader::new(&bytes, 0);
            let v = ZclValue::decode(ty, 0, &mut r).unwrap();
            assert!(r.is_empty());
            let mut out = Vec::new();
            v.encode_into(&mut out);
            assert_eq!(out, bytes, "{v:?}");
        }
        let mut r = FieldReader::new(&[0xFE, 0xFF, 0xFF], 0);
        assert_eq!(
            ZclValue::decode(0x2A, 0, &mut r).unwrap(),
            ZclValue::Signed(0x2A, -2)
        );
        let mut r = FieldReader::new(&[1], 0);
        assert!(matches!(
            ZclValue::decode(0x48, 7, &mut r),
            Err(ZclError::DataType { offset: 7, .. })
        ));
    }
}
