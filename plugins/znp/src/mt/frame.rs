//! The MT frame on the UART: `FE len cmd0 cmd1 data… fcs`, where `cmd0` holds the command type in its
//! top three bits and the subsystem in the low five, and the FCS is the XOR of every byte from `len` to
//! the end of the data (TI SWRA198 §2).

use std::fmt;

/// The start-of-frame byte.
pub const SOF: u8 = 0xFE;
/// The largest data field a frame carries (the length byte's limit on Z-Stack 3.x UARTs).
pub const MAX_DATA: usize = 250;
/// Bytes around the data: SOF, length, two command bytes, FCS.
pub const OVERHEAD: usize = 5;

/// The command type, from the top three bits of `cmd0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// POLL (0): used on SPI only.
    Poll,
    /// SREQ (1): a synchronous request; the coordinator answers with an SRSP.
    Sreq,
    /// AREQ (2): an asynchronous request or indication.
    Areq,
    /// SRSP (3): the answer to an SREQ.
    Srsp,
}

impl CommandType {
    /// The three bits in `cmd0` (already shifted down).
    pub fn bits(self) -> u8 {
        match self {
            CommandType::Poll => 0,
            CommandType::Sreq => 1,
            CommandType::Areq => 2,
            CommandType::Srsp => 3,
        }
    }

    /// The type for the three bits, `None` for the reserved values 4–7.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(CommandType::Poll),
            1 => Some(CommandType::Sreq),
            2 => Some(CommandType::Areq),
            3 => Some(CommandType::Srsp),
            _ => None,
        }
    }

    /// The name SWRA198 uses.
    pub fn name(self) -> &'static str {
        match self {
            CommandType::Poll => "POLL",
            CommandType::Sreq => "SREQ",
            CommandType::Areq => "AREQ",
            CommandType::Srsp => "SRSP",
        }
    }
}

/// An MT subsystem (the low five bits of `cmd0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subsystem(pub u8);

impl Subsystem {
    /// RPC errors (an SRSP saying the SREQ was not understood).
    pub const RPC_ERROR: Subsystem = Subsystem(0x00);
    /// SYS: reset, ping, version.
    pub const SYS: Subsystem = Subsystem(0x01);
    /// AF: endpoints and application data.
    pub const AF: Subsystem = Subsystem(0x04);
    /// ZDO: network management and device discovery.
    pub const ZDO: Subsystem = Subsystem(0x05);
    /// UTIL: device information.
    pub const UTIL: Subsystem = Subsystem(0x07);
    /// APP_CNF: commissioning (BDB).
    pub const APP_CNF: Subsystem = Subsystem(0x0F);

    /// The subsystem's name, or `None` for one this crate does not name.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "RPC_ERROR",
            0x01 => "SYS",
            0x02 => "MAC",
            0x03 => "NWK",
            0x04 => "AF",
            0x05 => "ZDO",
            0x06 => "SAPI",
            0x07 => "UTIL",
            0x08 => "DEBUG",
            0x09 => "APP",
            0x0F => "APP_CNF",
            0x15 => "GREENPOWER",
            _ => return None,
        })
    }
}

impl fmt::Display for Subsystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "subsystem {:#04x}", self.0),
        }
    }
}

/// One MT frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MtFrame {
    /// SREQ, AREQ, SRSP or POLL.
    pub kind: CommandType,
    /// The subsystem.
    pub subsystem: Subsystem,
    /// The command id within the subsystem (`cmd1`).
    pub id: u8,
    /// The data field.
    pub data: Vec<u8>,
}

/// Why bytes are not an MT frame. Offsets count from the first byte given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes at all.
    #[error("no bytes: an MT frame starts with SOF 0xFE")]
    Empty,
    /// The first byte is not the start-of-frame byte.
    #[error("byte 0: expected SOF 0xFE, found {found:#04x}")]
    NoSof {
        /// The byte found.
        found: u8,
    },
    /// Fewer bytes than the length byte announces.
    #[error("the frame is cut short: the length byte (offset 1) announces {data_len} data bytes, so the frame is {needed} bytes, but only {got} were given")]
    Truncated {
        /// The data length announced.
        data_len: usize,
        /// The whole frame's length.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// A length byte above what a Z-Stack UART frame carries.
    #[error("byte 1: length {0} is above the {MAX_DATA}-byte limit of an MT frame")]
    TooLong(usize),
    /// The reserved command types 4–7.
    #[error("byte 2: cmd0 {0:#04x} has the reserved command type {bits} in its top three bits (expected 0 POLL, 1 SREQ, 2 AREQ or 3 SRSP)", bits = .0 >> 5)]
    CommandType(u8),
    /// The checksum does not match.
    #[error(
        "byte {offset}: FCS {found:#04x}, expected {expected:#04x} (XOR of bytes 1..{offset})"
    )]
    Fcs {
        /// Where the FCS is.
        offset: usize,
        /// The FCS found.
        found: u8,
        /// The XOR of length, command and data.
        expected: u8,
    },
    /// Bytes after the frame where an exact frame was asked for.
    #[error("{extra} byte(s) after the frame's FCS at offset {end}; give one frame")]
    Trailing {
        /// Where the frame ended.
        end: usize,
        /// How many more bytes.
        extra: usize,
    },
    /// A frame to encode has too much data.
    #[error("{0} data bytes do not fit in an MT frame (at most {MAX_DATA})")]
    DataTooLong(usize),
}

/// The XOR checksum over `bytes`.
pub fn fcs(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

impl MtFrame {
    /// A frame.
    pub fn new(kind: CommandType, subsystem: Subsystem, id: u8, data: Vec<u8>) -> Self {
        MtFrame {
            kind,
            subsystem,
            id,
            data,
        }
    }

    /// `cmd0`: type and subsystem.
    pub fn cmd0(&self) -> u8 {
        (self.kind.bits() << 5) | (self.subsystem.0 & 0x1F)
    }

    /// The bytes on the wire.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let len = u8::try_from(self.data.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_DATA)
            .ok_or(FrameError::DataTooLong(self.data.len()))?;
        let mut out = Vec::with_capacity(self.data.len() + OVERHEAD);
        out.extend_from_slice(&[SOF, len, self.cmd0(), self.id]);
        out.extend_from_slice(&self.data);
        let sum = fcs(out.get(1..).unwrap_or_default());
        out.push(sum);
        Ok(out)
    }

    /// Decodes the frame at the start of `bytes`; returns it and its length on the wire. Bytes after it
    /// are left alone.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(MtFrame, usize), FrameError> {
        let (&sof, rest) = bytes.split_first().ok_or(FrameError::Empty)?;
        if sof != SOF {
            return Err(FrameError::NoSof { found: sof });
        }
        let Some(&len) = rest.first() else {
            return Err(FrameError::Truncated {
                data_len: 0,
                needed: OVERHEAD,
                got: bytes.len(),
            });
        };
        let data_len = usize::from(len);
        if data_len > MAX_DATA {
            return Err(FrameError::TooLong(data_len));
        }
        let needed = data_len + OVERHEAD;
        let frame = bytes.get(..needed).ok_or(FrameError::Truncated {
            data_len,
            needed,
            got: bytes.len(),
        })?;
        let cmd0 = frame.get(2).copied().unwrap_or_default();
        let id = frame.get(3).copied().unwrap_or_default();
        let kind = CommandType::from_bits(cmd0 >> 5).ok_or(FrameError::CommandType(cmd0))?;
        let expected = fcs(frame.get(1..needed - 1).unwrap_or_default());
        let found = frame.get(needed - 1).copied().unwrap_or_default();
        if found != expected {
            return Err(FrameError::Fcs {
                offset: needed - 1,
                found,
                expected,
            });
        }
        let data = frame.get(4..needed - 1).unwrap_or_default().to_vec();
        Ok((MtFrame::new(kind, Subsystem(cmd0 & 0x1F), id, data), needed))
    }

    /// Decodes exactly one frame.
    pub fn decode(bytes: &[u8]) -> Result<MtFrame, FrameError> {
        let (frame, used) = Self::decode_prefix(bytes)?;
        if used < bytes.len() {
            return Err(FrameError::Trailing {
                end: used,
                extra: bytes.len() - used,
            });
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_round_trips() {
        let ping = MtFrame::new(CommandType::Sreq, Subsystem::SYS, 0x01, vec![]);
        assert_eq!(ping.encode().unwrap(), [0xFE, 0x00, 0x21, 0x01, 0x20]);
        assert_eq!(
            MtFrame::decode(&[0xFE, 0x00, 0x21, 0x01, 0x20]).unwrap(),
            ping
        );
    }

    #[test]
    fn errors_name_the_offset() {
        assert_eq!(
            MtFrame::decode(&[0xFE, 0x00, 0x21, 0x01, 0x21]),
            Err(FrameError::Fcs {
                offset: 4,
                found: 0x21,
                expected: 0x20
            })
        );
        assert!(matches!(
            MtFrame::decode(&[0xFE, 0x02, 0x61]),
            Err(FrameError::Truncated { needed: 7, .. })
        ));
        assert_eq!(
            MtFrame::decode(&[0x00]),
            Err(FrameError::NoSof { found: 0 })
        );
        assert_eq!(
            MtFrame::decode(&[0xFE, 0x00, 0x81, 0x01, 0x80]),
            Err(FrameError::CommandType(0x81))
        );
        assert!(MtFrame::decode(&[0xFE, 0xFB]).is_err());
        assert_eq!(
            MtFrame::decode(&[0xFE, 0x00, 0x21, 0x01, 0x20, 0x00]),
            Err(FrameError::Trailing { end: 5, extra: 1 })
        );
        let big = MtFrame::new(CommandType::Areq, Subsystem::AF, 0, vec![0; 251]);
        assert_eq!(big.encode(), Err(FrameError::DataTooLong(251)));
    }
}
