//! Little-endian field reading and writing shared by the MT and ZCL codecs, with errors that name the
//! byte offset and the field that was expected there.

use std::fmt;

/// A field that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The bytes end before the field.
    #[error(
        "byte {offset}: expected {field} ({needed} byte(s)), but only {left} byte(s) are left"
    )]
    Short {
        /// Offset of the field.
        offset: usize,
        /// The field's name.
        field: &'static str,
        /// Bytes the field takes.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// A field with a value the codec cannot take.
    #[error("byte {offset}: {field} is {value:#x}; {expected}")]
    Value {
        /// Offset of the field.
        offset: usize,
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What was expected.
        expected: &'static str,
    },
}

/// Reads fields from a byte slice; `base` is the slice's offset in the whole frame, for messages.
#[derive(Debug, Clone)]
pub struct FieldReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> FieldReader<'a> {
    /// A reader over `bytes`, which start at offset `base` of the frame.
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        FieldReader {
            bytes,
            pos: 0,
            base,
        }
    }

    /// The frame offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining().is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FieldError> {
        let left = self.remaining();
        let out = left.get(..n).ok_or(FieldError::Short {
            offset: self.offset(),
            field,
            needed: n,
            left: left.len(),
        })?;
        self.pos += n;
        Ok(out)
    }

    /// An unsigned little-endian integer of `n` bytes (1..=8).
    pub fn uint(&mut self, n: usize, field: &'static str) -> Result<u64, FieldError> {
        let bytes = self.take(n, field)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, FieldError> {
        Ok(self.uint(1, field)? as u8)
    }

    /// A little-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, FieldError> {
        Ok(self.uint(2, field)? as u16)
    }

    /// A little-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, FieldError> {
        Ok(self.uint(4, field)? as u32)
    }

    /// A little-endian IEEE address.
    pub fn ieee(&mut self, field: &'static str) -> Result<IeeeAddress, FieldError> {
        Ok(IeeeAddress(self.uint(8, field)?))
    }

    /// A count byte followed by that many little-endian u16s.
    pub fn u16_list(&mut self, field: &'static str) -> Result<Vec<u16>, FieldError> {
        let count = self.u8(field)?;
        (0..count).map(|_| self.u16(field)).collect()
    }
}

/// Appends little-endian fields.
pub(crate) trait PutLe {
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_uint(&mut self, v: u64, n: usize);
}

impl PutLe for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_uint(&mut self, v: u64, n: usize) {
        self.extend_from_slice(v.to_le_bytes().get(..n.min(8)).unwrap_or_default());
    }
}

/// A device's IEEE (EUI-64) address. Written and shown most significant byte first, as on labels
/// (`00124b0001a2b3c4`); little-endian on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IeeeAddress(pub u64);

impl IeeeAddress {
    /// The 8 bytes most significant first (the address in stream events).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// From 8 bytes most significant first.
    pub fn try_from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 8] = bytes.try_into().ok()?;
        Some(IeeeAddress(u64::from_be_bytes(array)))
    }
}

impl fmt::Display for IeeeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for IeeeAddress {
    type Err = String;

    /// 16 hex digits, optionally with `:` or `-` between bytes or a `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: String = s
            .trim_start_matches("0x")
            .chars()
            .filter(|c| *c != ':' && *c != '-')
            .collect();
        if digits.len() != 16 {
            return Err(format!(
                "`{s}` is not an IEEE address: write 16 hex digits, most significant first (00124b0001a2b3c4)"
            ));
        }
        u64::from_str_radix(&digits, 16)
            .map(IeeeAddress)
            .map_err(|_| format!("`{s}` is not an IEEE address: only hex digits are allowed"))
    }
}

impl serde::Serialize for IeeeAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IeeeAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_offsets() {
        let mut r = FieldReader::new(&[0x34, 0x12, 0x01], 4);
        assert_eq!(r.u16("DstAddr").unwrap(), 0x1234);
        assert_eq!(
            r.u16("ClusterId").unwrap_err().to_string(),
            "byte 6: expected ClusterId (2 byte(s)), but only 1 byte(s) are left"
        );
    }

    #[test]
    fn ieee_text_round_trips() {
        let a: IeeeAddress = "00:12:4b:00:01:a2:b3:c4".parse().unwrap();
        assert_eq!(a.to_string(), "00124b0001a2b3c4");
        assert_eq!(IeeeAddress::try_from_bytes(&a.to_bytes()), Some(a));
        assert!("0012".parse::<IeeeAddress>().is_err());
        assert!("zz124b0001a2b3c4".parse::<IeeeAddress>().is_err());
    }
}
