//! The DL/T 645 frame: `FE.. 68 A0..A5 68 C L DATA CS 16`.
//!
//! The checksum is the sum modulo 256 of every byte from the first `68` to the last data byte (the `FE`
//! preamble is not part of it). Data bytes travel with `0x33` added; [`Frame::data`] holds them with the
//! offset removed.

use crate::address::Dlt645Address;
use crate::control::ControlCode;

/// The start delimiter (sent twice: before and after the address).
pub const START: u8 = 0x68;
/// The end delimiter.
pub const END: u8 = 0x16;
/// The wake-up preamble byte that may precede a frame any number of times.
pub const PREAMBLE: u8 = 0xFE;
/// Added to every data byte on the wire.
pub const DATA_OFFSET: u8 = 0x33;
/// Bytes of a frame around its data: `68`, six address bytes, `68`, C, L, CS, `16`.
pub const OVERHEAD: usize = 12;
/// The most data a frame can carry (one length byte).
pub const MAX_DATA: usize = 255;

/// A DL/T 645 frame with its data in plain form (the `+0x33` removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The meter's address (the destination of a request, the sender of a reply).
    pub address: Dlt645Address,
    /// The control code.
    pub control: ControlCode,
    /// The data field without the `0x33` offset.
    pub data: Vec<u8>,
}

/// What is wrong with bytes that should be a frame. Offsets count from the first byte given, preamble
/// included, so they match a hex dump of the capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes, or only `FE` preamble bytes.
    #[error("no frame: {preamble} preamble byte(s) (FE) and nothing after them")]
    Empty {
        /// How many `FE` bytes came.
        preamble: usize,
    },
    /// The bytes stop before the frame does.
    #[error("the frame is cut short: it needs {needed} bytes{because}, only {have} came")]
    Truncated {
        /// Bytes needed from the first given byte to the end delimiter (or to the length byte when it has
        /// not come yet).
        needed: usize,
        /// Bytes given.
        have: usize,
        /// Why that many are needed (" (the length byte at byte 13 says 8 data bytes)").
        because: String,
    },
    /// A delimiter byte is not where it must be.
    #[error("byte {offset} should be {expected_name} 0x{expected:02X}, it is 0x{found:02X}")]
    Delimiter {
        /// Offset of the byte.
        offset: usize,
        /// The delimiter expected.
        expected: u8,
        /// Its name ("the start", "the second start", "the end").
        expected_name: &'static str,
        /// The byte found.
        found: u8,
    },
    /// The checksum does not match.
    #[error("checksum is 0x{computed:02X}, the frame says 0x{found:02X} (byte {offset})")]
    Checksum {
        /// Offset of the checksum byte.
        offset: usize,
        /// The checksum computed over the frame.
        computed: u8,
        /// The checksum byte in the frame.
        found: u8,
    },
    /// Bytes follow the end delimiter (only reported by [`Frame::decode_exact`]).
    #[error("{count} byte(s) follow the end of the frame at byte {offset}")]
    Trailing {
        /// Offset of the first byte after the frame.
        offset: usize,
        /// How many bytes follow.
        count: usize,
    },
    /// A frame to encode carries more than 255 data bytes.
    #[error("a frame carries at most 255 data bytes, this one has {0}")]
    DataTooLong(usize),
}

/// A frame found in a byte buffer, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The frame.
    pub frame: Frame,
    /// `FE` bytes before it.
    pub preamble: usize,
    /// Bytes used from the start of the buffer, preamble included, up to and including the `16`.
    pub len: usize,
}

/// The checksum of `bytes`: their sum modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

impl Frame {
    /// A frame.
    pub fn new(address: Dlt645Address, control: ControlCode, data: Vec<u8>) -> Self {
        Frame {
            address,
            control,
            data,
        }
    }

    /// The frame on the wire, without preamble (the bus adds it: see [`crate::timing`]).
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let len =
            u8::try_from(self.data.len()).map_err(|_| FrameError::DataTooLong(self.data.len()))?;
        let mut out = Vec::with_capacity(OVERHEAD + self.data.len());
        out.push(START);
        out.extend_from_slice(&self.address.to_wire());
        out.push(START);
        out.push(self.control.0);
        out.push(len);
        out.extend(self.data.iter().map(|b| b.wrapping_add(DATA_OFFSET)));
        out.push(checksum(&out));
        out.push(END);
        Ok(out)
    }

    /// The frame on the wire after `preamble` bytes of `FE`.
    pub fn encode_with_preamble(&self, preamble: usize) -> Result<Vec<u8>, FrameError> {
        let mut out = vec![PREAMBLE; preamble];
        out.extend(self.encode()?);
        Ok(out)
    }

    /// Decodes the frame at the start of `bytes` (after any `FE` bytes); bytes after its end are left
    /// alone and not counted in [`Decoded::len`].
    pub fn decode(bytes: &[u8]) -> Result<Decoded, FrameError> {
        let preamble = bytes.iter().take_while(|&&b| b == PREAMBLE).count();
        let frame = &bytes[preamble..];
        if frame.is_empty() {
            return Err(FrameError::Empty { preamble });
        }
        let at = |i: usize| preamble + i;
        let delimiter = |i: usize, expected: u8, expected_name: &'static str| {
            let found = frame[i];
            (found != expected).then_some(FrameError::Delimiter {
                offset: at(i),
                expected,
                expected_name,
                found,
            })
        };
        if let Some(err) = delimiter(0, START, "the start") {
            return Err(err);
        }
        if frame.len() < 10 {
            return Err(FrameError::Truncated {
                needed: at(10),
                have: bytes.len(),
                because: " to reach the length byte".to_string(),
            });
        }
        if let Some(err) = delimiter(7, START, "the second start") {
            return Err(err);
        }
        let data_len = usize::from(frame[9]);
        let total = OVERHEAD + data_len;
        if frame.len() < total {
            return Err(FrameError::Truncated {
                needed: at(total),
                have: bytes.len(),
                because: format!(
                    " (the length byte at byte {} says {data_len} data bytes)",
                    at(9)
                ),
            });
        }
        let computed = checksum(&frame[..10 + data_len]);
        let found = frame[10 + data_len];
        if computed != found {
            return Err(FrameError::Checksum {
                offset: at(10 + data_len),
                computed,
                found,
            });
        }
        if let Some(err) = delimiter(total - 1, END, "the end") {
            return Err(err);
        }
        let mut address = [0u8; 6];
        address.copy_from_slice(&frame[1..7]);
        let data = frame[10..10 + data_len]
            .iter()
            .map(|b| b.wrapping_sub(DATA_OFFSET))
            .collect();
        Ok(Decoded {
            frame: Frame {
                address: Dlt645Address(address),
                control: ControlCode(frame[8]),
                data,
            },
            preamble,
            len: at(total),
        })
    }

    /// Decodes `bytes` as exactly one frame (with any preamble): trailing bytes are an error.
    pub fn decode_exact(bytes: &[u8]) -> Result<Decoded, FrameError> {
        let decoded = Frame::decode(bytes)?;
        if decoded.len < bytes.len() {
            return Err(FrameError::Trailing {
                offset: decoded.len,
                count: bytes.len() - decoded.len,
            });
        }
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn encodes_the_standard_read() {
        let frame = Frame::new(
            Dlt645Address::from_number(1),
            ControlCode(0x11),
            vec![0, 0, 1, 0],
        );
        assert_eq!(
            frame.encode_with_preamble(4).unwrap(),
            hex("FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16")
        );
    }

    #[test]
    fn reports_offsets_from_the_capture() {
        let mut bytes = hex("FE FE FE FE 68 01 00 00 00 00 00 68 11 04 33 33 34 33 B3 16");
        bytes[18] = 0xB2;
        let err = Frame::decode(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checksum is 0xB3, the frame says 0xB2 (byte 18)"
        );
        bytes[18] = 0xB3;
        bytes[19] = 0x17;
        assert_eq!(
            Frame::decode(&bytes).unwrap_err().to_string(),
            "byte 19 should be the end 0x16, it is 0x17"
        );
        assert_eq!(
            Frame::decode(&bytes[..15]).unwrap_err().to_string(),
            "the frame is cut short: it needs 20 bytes (the length byte at byte 13 says 4 data bytes), only 15 came"
        );
        assert_eq!(
            Frame::decode(&[0xFE, 0xFE]).unwrap_err(),
            FrameError::Empty { preamble: 2 }
        );
        assert!(matches!(
            Frame::decode(&[0xFE, 0x69]),
            Err(FrameError::Delimiter { offset: 1, .. })
        ));
    }

    #[test]
    fn too_long_data_is_refused() {
        let frame = Frame::new(
            Dlt645Address::from_number(1),
            ControlCode(0x14),
            vec![0; 256],
        );
        assert_eq!(frame.encode(), Err(FrameError::DataTooLong(256)));
    }
}
