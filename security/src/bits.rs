//! Bit strings: messages whose length is a number of bits, stored most significant bit first in bytes.
//!
//! 3GPP ciphers and MACs take a LENGTH in bits. The bytes hold `ceil(LENGTH / 8)` octets; bits past LENGTH
//! in the last octet are ignored on input and set to zero on output.

use thiserror::Error;

/// A bit-string argument that does not fit the operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LengthError {
    /// The buffer is shorter than the bit length says.
    #[error("data has {bytes} bytes but {bits} bits were asked for: pass at least {needed} bytes or a smaller length")]
    TooShort {
        /// The requested length in bits.
        bits: usize,
        /// The bytes available.
        bytes: usize,
        /// The bytes needed for `bits`.
        needed: usize,
    },
    /// The bit length does not fit the algorithm's length field.
    #[error("{bits} bits is longer than the algorithm allows ({max} bits): split the message")]
    TooLong {
        /// The requested length in bits.
        bits: usize,
        /// The largest length the algorithm accepts.
        max: usize,
    },
    /// A BEARER identity is 5 bits.
    #[error("bearer {0} does not fit in 5 bits: use 0..=31")]
    Bearer(u8),
}

/// Octets needed for `bits` bits.
pub fn byte_len(bits: usize) -> usize {
    bits.div_ceil(8)
}

/// Checks that `bytes` holds at least `bits` bits.
pub fn check_len(bytes: usize, bits: usize) -> Result<(), LengthError> {
    let needed = byte_len(bits);
    if bytes < needed {
        return Err(LengthError::TooShort {
            bits,
            bytes,
            needed,
        });
    }
    Ok(())
}

/// Checks a 5-bit BEARER.
pub fn check_bearer(bearer: u8) -> Result<(), LengthError> {
    if bearer > 31 {
        return Err(LengthError::Bearer(bearer));
    }
    Ok(())
}

/// Sets the bits past `bits` to zero in the octet that holds the last bit; later octets are left alone.
pub fn clear_tail(buf: &mut [u8], bits: usize) {
    let rem = bits % 8;
    if rem != 0 {
        if let Some(last) = buf.get_mut(bits / 8) {
            *last &= 0xffu8 << (8 - rem);
        }
    }
}

/// Copies the first `bits` bits of `data` into a new vector of `ceil(bits/8)` octets, tail bits zero.
pub fn truncate(data: &[u8], bits: usize) -> Result<Vec<u8>, LengthError> {
    check_len(data.len(), bits)?;
    let mut out = data[..byte_len(bits)].to_vec();
    clear_tail(&mut out, bits);
    Ok(out)
}

/// The direction of a message: uplink (meter or gateway towards the head-end) is 0, downlink is 1, as the
/// DIRECTION bit of TS 33.102 / 33.401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// Meter side to server side; DIRECTION bit 0.
    Uplink,
    /// Server side to meter side; DIRECTION bit 1.
    Downlink,
}

impl Direction {
    /// The DIRECTION bit.
    pub fn bit(self) -> u8 {
        match self {
            Direction::Uplink => 0,
            Direction::Downlink => 1,
        }
    }

    /// The direction for a DIRECTION bit, `None` for anything but 0 or 1.
    pub fn from_bit(bit: u8) -> Option<Self> {
        match bit {
            0 => Some(Direction::Uplink),
            1 => Some(Direction::Downlink),
            _ => None,
        }
    }

    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Direction::Uplink => Direction::Downlink,
            Direction::Downlink => Direction::Uplink,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_cleared_only_in_the_last_octet() {
        let mut b = [0xff, 0xff, 0xff];
        clear_tail(&mut b, 11);
        assert_eq!(b, [0xff, 0xe0, 0xff]);
        let mut b = [0xff, 0xff];
        clear_tail(&mut b, 16);
        assert_eq!(b, [0xff, 0xff]);
    }

    #[test]
    fn short_buffers_are_reported() {
        assert_eq!(
            check_len(1, 9),
            Err(LengthError::TooShort {
                bits: 9,
                bytes: 1,
                needed: 2
            })
        );
        assert!(check_len(2, 9).is_ok());
        assert!(check_bearer(32).is_err());
    }
}
