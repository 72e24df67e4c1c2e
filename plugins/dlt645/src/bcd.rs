//! Packed BCD, low byte first, as every multi-byte DL/T 645 field is sent.

/// A byte that is not two decimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "byte {offset} of the field is 0x{byte:02X}, which is not two BCD digits (each nibble 0-9)"
)]
pub struct BcdError {
    /// Offset of the byte inside the field, in wire order (0 = first byte sent).
    pub offset: usize,
    /// The byte found.
    pub byte: u8,
}

/// The value of one BCD byte (0..=99), or `None` when a nibble is above 9.
pub fn byte_value(byte: u8) -> Option<u8> {
    let (high, low) = (byte >> 4, byte & 0x0F);
    (high <= 9 && low <= 9).then_some(high * 10 + low)
}

/// One BCD byte for `value % 100`.
pub fn to_byte(value: u8) -> u8 {
    let value = value % 100;
    ((value / 10) << 4) | (value % 10)
}

/// The unsigned value of a BCD field sent low byte first. At most 9 bytes (18 digits) fit a `u64`.
pub fn decode_unsigned(field: &[u8]) -> Result<u64, BcdError> {
    field
        .iter()
        .enumerate()
        .rev()
        .try_fold(0u64, |acc, (offset, &byte)| {
            let digits = byte_value(byte).ok_or(BcdError { offset, byte })?;
            Ok(acc.saturating_mul(100).saturating_add(u64::from(digits)))
        })
}

/// A signed BCD field: the top bit of the last byte (the most significant one) is the sign.
pub fn decode_signed(field: &[u8]) -> Result<i64, BcdError> {
    let Some((&last, rest)) = field.split_last() else {
        return Ok(0);
    };
    let negative = last & 0x80 != 0;
    let mut magnitude_field = rest.to_vec();
    magnitude_field.push(last & 0x7F);
    let magnitude = decode_unsigned(&magnitude_field).map_err(|e| BcdError {
        byte: field[e.offset],
        ..e
    })?;
    let magnitude = i64::try_from(magnitude).unwrap_or(i64::MAX);
    Ok(if negative { -magnitude } else { magnitude })
}

/// `value` as `len` BCD bytes, low byte first; `None` when it does not fit.
pub fn encode_unsigned(mut value: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        out.push(to_byte((value % 100) as u8));
        value /= 100;
    }
    (value == 0).then_some(out)
}

/// A signed value as `len` BCD bytes with the sign in the top bit of the last byte; `None` when the
/// magnitude does not fit in the 7 bits left in the last byte.
pub fn encode_signed(value: i64, len: usize) -> Option<Vec<u8>> {
    let mut out = encode_unsigned(value.unsigned_abs(), len)?;
    let last = out.last_mut()?;
    if *last & 0x80 != 0 {
        return None;
    }
    if value < 0 {
        *last |= 0x80;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(decode_unsigned(&[0x67, 0x45, 0x23, 0x01]), Ok(1_234_567));
        assert_eq!(
            encode_unsigned(1_234_567, 4),
            Some(vec![0x67, 0x45, 0x23, 0x01])
        );
        assert_eq!(encode_unsigned(100, 1), None);
        assert_eq!(decode_signed(&[0x00, 0x50, 0x81]), Ok(-15_000));
        assert_eq!(encode_signed(-15_000, 3), Some(vec![0x00, 0x50, 0x81]));
        assert_eq!(encode_signed(800_000, 3), None);
    }

    #[test]
    fn names_the_bad_byte() {
        assert_eq!(
            decode_unsigned(&[0x12, 0x3A]),
            Err(BcdError {
                offset: 1,
                byte: 0x3A
            })
        );
        assert_eq!(
            decode_signed(&[0x1F, 0x80]),
            Err(BcdError {
                offset: 0,
                byte: 0x1F
            })
        );
    }
}
