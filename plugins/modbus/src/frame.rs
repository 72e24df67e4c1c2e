//! RTU frames (ADUs): slave address, function code, data, CRC. Requests and responses of function
//! codes 03, 04, 06 and 16, and exception responses.
//!
//! RTU frames carry no length; a request's length follows from its function code (and byte count for
//! 16), a response's from its function code and byte count (03, 04), or is fixed (06, 16, and 5 bytes
//! for an exception). Errors name the byte offset, what was expected and what came.

use crate::crc::{carried, crc16, with_crc};
use crate::exception::{ExceptionCode, ModbusException};

/// Function code 03: read holding registers.
pub const READ_HOLDING_REGISTERS: u8 = 0x03;
/// Function code 04: read input registers.
pub const READ_INPUT_REGISTERS: u8 = 0x04;
/// Function code 06: write single register.
pub const WRITE_SINGLE_REGISTER: u8 = 0x06;
/// Function code 16: write multiple registers.
pub const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;
/// Most registers one read may ask for.
pub const MAX_READ: u16 = 125;
/// Most registers one write-multiple may carry.
pub const MAX_WRITE: u16 = 123;
/// Slave address 0 is broadcast (writes only, no reply).
pub const BROADCAST: u8 = 0;

/// A request PDU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "pdu", rename_all = "snake_case")]
pub enum Request {
    /// 03: `count` holding registers from `address`.
    ReadHoldingRegisters {
        /// First register (0-based protocol address).
        address: u16,
        /// How many, 1..=125.
        count: u16,
    },
    /// 04: `count` input registers from `address`.
    ReadInputRegisters {
        /// First register.
        address: u16,
        /// How many, 1..=125.
        count: u16,
    },
    /// 06: write one register.
    WriteSingleRegister {
        /// The register.
        address: u16,
        /// The value.
        value: u16,
    },
    /// 16: write consecutive registers.
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// The values, 1..=123.
        values: Vec<u16>,
    },
}

/// A response PDU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "pdu", rename_all = "snake_case")]
pub enum Response {
    /// 03: register values.
    ReadHoldingRegisters {
        /// The values, in order.
        values: Vec<u16>,
    },
    /// 04: register values.
    ReadInputRegisters {
        /// The values, in order.
        values: Vec<u16>,
    },
    /// 06: the echo of the write.
    WriteSingleRegister {
        /// The register.
        address: u16,
        /// The value written.
        value: u16,
    },
    /// 16: the range written.
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// How many.
        count: u16,
    },
    /// An exception reply.
    Exception(ModbusException),
}

/// A frame: a slave address and a PDU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adu<P> {
    /// The slave (1..=247; 0 is broadcast).
    pub slave: u8,
    /// The PDU.
    #[serde(flatten)]
    pub pdu: P,
}

/// A request frame.
pub type RequestAdu = Adu<Request>;
/// A response frame.
pub type ResponseAdu = Adu<Response>;

/// What is wrong with bytes that should be a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the frame needs.
    #[error("the frame is cut short: it needs {needed} bytes{because}, only {have} came")]
    Truncated {
        /// Bytes needed (when known; at least this many).
        needed: usize,
        /// Bytes given.
        have: usize,
        /// Why (" (byte count at byte 2 says 4 data bytes)").
        because: String,
    },
    /// A function code this codec does not handle.
    #[error("byte 1 is function code 0x{0:02X}; only 03, 04, 06, 16 (0x10) and their exceptions are supported")]
    Function(u8),
    /// The CRC does not match.
    #[error("CRC is 0x{computed:04X} (sent {computed_lo:02X} {computed_hi:02X}), the frame says 0x{found:04X} (bytes {offset}-{offset_hi})", computed_lo = *computed as u8, computed_hi = (*computed >> 8) as u8, offset_hi = *offset + 1)]
    Crc {
        /// Offset of the CRC's first byte.
        offset: usize,
        /// The CRC computed over the frame.
        computed: u16,
        /// The CRC the frame carries.
        found: u16,
    },
    /// A field is out of range.
    #[error("byte {offset}: {field} is {found}, expected {expected}")]
    Field {
        /// Offset of the field.
        offset: usize,
        /// The field's name.
        field: &'static str,
        /// What was expected.
        expected: String,
        /// What came.
        found: u32,
    },
    /// Bytes after the end of the frame.
    #[error("{count} byte(s) follow the end of the frame at byte {offset}")]
    Trailing {
        /// Offset of the first extra byte.
        offset: usize,
        /// How many.
        count: usize,
    },
}

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Master to slave.
    Request,
    /// Slave to master.
    Response,
}

fn word(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([
        bytes.get(at).copied().unwrap_or(0),
        bytes.get(at + 1).copied().unwrap_or(0),
    ])
}

fn words(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect()
}

/// The length of the frame at the start of `bytes` in `direction`, as far as the bytes so far tell:
/// `Ok(Some(len))` when known, `Ok(None)` when more bytes are needed to know it.
pub fn frame_len(bytes: &[u8], direction: Direction) -> Result<Option<usize>, FrameError> {
    let Some(&function) = bytes.get(1) else {
        return Ok(None);
    };
    if direction == Direction::Response && function & 0x80 != 0 {
        return match function & 0x7F {
            READ_HOLDING_REGISTERS
            | READ_INPUT_REGISTERS
            | WRITE_SINGLE_REGISTER
            | WRITE_MULTIPLE_REGISTERS => Ok(Some(5)),
            _ => Err(FrameError::Function(function)),
        };
    }
    // A byte count must be even and within the PDU limits; rejecting it early lets a scan skip garbage
    // that happens to start with a plausible address and function.
    let counted = |at: usize, base: usize, max: u8| match bytes.get(at) {
        None => Ok(None),
        Some(&count) if count >= 2 && count % 2 == 0 && count <= max => {
            Ok(Some(base + usize::from(count) + 2))
        }
        Some(&count) => Err(field(
            at,
            "the byte count",
            format!("an even number 2..={max}"),
            count,
        )),
    };
    match (direction, function) {
        (
            Direction::Request,
            READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS | WRITE_SINGLE_REGISTER,
        ) => Ok(Some(8)),
        (Direction::Request, WRITE_MULTIPLE_REGISTERS) => counted(6, 7, 246),
        (Direction::Response, READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS) => counted(2, 3, 250),
        (Direction::Response, WRITE_SINGLE_REGISTER | WRITE_MULTIPLE_REGISTERS) => Ok(Some(8)),
        _ => Err(FrameError::Function(function)),
    }
}

/// Checks length and CRC of the frame at the start of `bytes`; returns its length.
fn checked(bytes: &[u8], direction: Direction) -> Result<usize, FrameError> {
    let len = match frame_len(bytes, direction)? {
        Some(len) => len,
        None => {
            let (needed, because) = match (bytes.len(), direction) {
                (0 | 1, _) => (4, " (address, function, CRC at least)".to_string()),
                (_, Direction::Request) => (7, " to reach the byte count at byte 6".to_string()),
                (_, Direction::Response) => (3, " to reach the byte count at byte 2".to_string()),
            };
            return Err(FrameError::Truncated {
                needed,
                have: bytes.len(),
                because,
            });
        }
    };
    if bytes.len() < len {
        let because = match (direction, bytes.get(1)) {
            (Direction::Response, Some(&(READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS))) => {
                format!(" (the byte count at byte 2 says {} data bytes)", len - 5)
            }
            (Direction::Request, Some(&WRITE_MULTIPLE_REGISTERS)) => {
                format!(" (the byte count at byte 6 says {} data bytes)", len - 9)
            }
            _ => format!(
                " (function 0x{:02X} {})",
                bytes[1],
                if direction == Direction::Request {
                    "request"
                } else {
                    "response"
                }
            ),
        };
        return Err(FrameError::Truncated {
            needed: len,
            have: bytes.len(),
            because,
        });
    }
    let computed = crc16(&bytes[..len - 2]);
    let found = carried(&bytes[..len]).unwrap_or(0);
    if computed != found {
        return Err(FrameError::Crc {
            offset: len - 2,
            computed,
            found,
        });
    }
    Ok(len)
}

fn field(
    offset: usize,
    field: &'static str,
    expected: impl Into<String>,
    found: impl Into<u32>,
) -> FrameError {
    FrameError::Field {
        offset,
        field,
        expected: expected.into(),
        found: found.into(),
    }
}

fn check_count(offset: usize, count: u16, max: u16) -> Result<(), FrameError> {
    if (1..=max).contains(&count) {
        Ok(())
    } else {
        Err(field(
            offset,
            "the register count",
            format!("1..={max}"),
            count,
        ))
    }
}

impl RequestAdu {
    /// The frame on the wire, CRC included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.slave];
        match &self.pdu {
            Request::ReadHoldingRegisters { address, count }
            | Request::ReadInputRegisters { address, count } => {
                out.push(
                    if matches!(self.pdu, Request::ReadHoldingRegisters { .. }) {
                        3
                    } else {
                        4
                    },
                );
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            Request::WriteSingleRegister { address, value } => {
                out.push(WRITE_SINGLE_REGISTER);
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Request::WriteMultipleRegisters { address, values } => {
                out.push(WRITE_MULTIPLE_REGISTERS);
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&(values.len() as u16).to_be_bytes());
                out.push((values.len() * 2) as u8);
                values
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
            }
        }
        with_crc(out)
    }

    /// Decodes the request at the start of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(RequestAdu, usize), FrameError> {
        let len = checked(bytes, Direction::Request)?;
        let (slave, function) = (bytes[0], bytes[1]);
        let (address, second) = (word(bytes, 2), word(bytes, 4));
        let pdu = match function {
            READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
                check_count(4, second, MAX_READ)?;
                if function == READ_HOLDING_REGISTERS {
                    Request::ReadHoldingRegisters {
                        address,
                        count: second,
                    }
                } else {
                    Request::ReadInputRegisters {
                        address,
                        count: second,
                    }
                }
            }
            WRITE_SINGLE_REGISTER => Request::WriteSingleRegister {
                address,
                value: second,
            },
            _ => {
                check_count(4, second, MAX_WRITE)?;
                let byte_count = bytes[6];
                if usize::from(byte_count) != usize::from(second) * 2 {
                    return Err(field(
                        6,
                        "the byte count",
                        format!("{} (2 × {second} registers)", second * 2),
                        byte_count,
                    ));
                }
                Request::WriteMultipleRegisters {
                    address,
                    values: words(&bytes[7..len - 2]),
                }
            }
        };
        Ok((Adu { slave, pdu }, len))
    }
}

impl ResponseAdu {
    /// The frame on the wire, CRC included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.slave];
        match &self.pdu {
            Response::ReadHoldingRegisters { values } | Response::ReadInputRegisters { values } => {
                out.push(
                    if matches!(self.pdu, Response::ReadHoldingRegisters { .. }) {
                        3
                    } else {
                        4
                    },
                );
                out.push((values.len() * 2).min(250) as u8);
                values
                    .iter()
                    .take(125)
                    .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
            }
            Response::WriteSingleRegister { address, value } => {
                out.push(WRITE_SINGLE_REGISTER);
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
            Response::WriteMultipleRegisters { address, count } => {
                out.push(WRITE_MULTIPLE_REGISTERS);
                out.extend_from_slice(&address.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            Response::Exception(exception) => {
                out.push(exception.function | 0x80);
                out.push(exception.code.code());
            }
        }
        with_crc(out)
    }

    /// Decodes the response at the start of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(ResponseAdu, usize), FrameError> {
        let len = checked(bytes, Direction::Response)?;
        let (slave, function) = (bytes[0], bytes[1]);
        let pdu = match function {
            f if f & 0x80 != 0 => Response::Exception(ModbusException {
                function: f & 0x7F,
                code: ExceptionCode::from_code(bytes[2]),
            }),
            READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
                let values = words(&bytes[3..len - 2]);
                if function == READ_HOLDING_REGISTERS {
                    Response::ReadHoldingRegisters { values }
                } else {
                    Response::ReadInputRegisters { values }
                }
            }
            WRITE_SINGLE_REGISTER => Response::WriteSingleRegister {
                address: word(bytes, 2),
                value: word(bytes, 4),
            },
            _ => {
                let count = word(bytes, 4);
                check_count(4, count, MAX_WRITE)?;
                Response::WriteMultipleRegisters {
                    address: word(bytes, 2),
                    count,
                }
            }
        };
        Ok((Adu { slave, pdu }, len))
    }
}

/// Decodes `bytes` as exactly one frame in `direction`; trailing bytes are an error.
pub fn decode_exact(bytes: &[u8], direction: Direction) -> Result<Decoded, FrameError> {
    let (decoded, len) = match direction {
        Direction::Request => RequestAdu::decode(bytes).map(|(a, l)| (Decoded::Request(a), l))?,
        Direction::Response => {
            ResponseAdu::decode(bytes).map(|(a, l)| (Decoded::Response(a), l))?
        }
    };
    if len < bytes.len() {
        return Err(FrameError::Trailing {
            offset: len,
            count: bytes.len() - len,
        });
    }
    Ok(decoded)
}

/// A frame of either direction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "direction", rename_all = "snake_case")]
pub enum Decoded {
    /// A request.
    Request(RequestAdu),
    /// A response.
    Response(ResponseAdu),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_request_and_reply() {
        let request = Adu {
            slave: 1,
            pdu: Request::ReadInputRegisters {
                address: 0,
                count: 2,
            },
        };
        assert_eq!(
            request.encode(),
            vec![0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB]
        );
        let reply = [0x01, 0x04, 0x04, 0x43, 0x66, 0x80, 0x00, 0x6F, 0xDF];
        let (decoded, len) = ResponseAdu::decode(&reply).unwrap();
        assert_eq!(len, 9);
        assert_eq!(
            decoded.pdu,
            Response::ReadInputRegisters {
                values: vec![0x4366, 0x8000]
            }
        );
    }

    #[test]
    fn errors_name_the_bytes() {
        let mut reply = vec![0x01, 0x04, 0x04, 0x43, 0x66, 0x80, 0x00, 0x6F, 0xDE];
        assert_eq!(
            ResponseAdu::decode(&reply).unwrap_err().to_string(),
            "CRC is 0xDF6F (sent 6F DF), the frame says 0xDE6F (bytes 7-8)"
        );
        reply.truncate(6);
        assert_eq!(
            ResponseAdu::decode(&reply).unwrap_err().to_string(),
            "the frame is cut short: it needs 9 bytes (the byte count at byte 2 says 4 data bytes), only 6 came"
        );
        assert_eq!(
            ResponseAdu::decode(&[0x01, 0x05]).unwrap_err(),
            FrameError::Function(0x05)
        );
        let bad_count = RequestAdu {
            slave: 1,
            pdu: Request::ReadInputRegisters {
                address: 0,
                count: 126,
            },
        }
        .encode();
        assert_eq!(
            RequestAdu::decode(&bad_count).unwrap_err().to_string(),
            "byte 4: the register count is 126, expected 1..=125"
        );
    }

    #[test]
    fn write_multiple_round_trip() {
        let request = Adu {
            slave: 1,
            pdu: Request::WriteMultipleRegisters {
                address: 0x1C,
                values: vec![1, 2],
            },
        };
        let wire = request.encode();
        assert_eq!(RequestAdu::decode(&wire).unwrap(), (request, wire.len()));
        let exception = Adu {
            slave: 1,
            pdu: Response::Exception(ModbusException {
                function: 4,
                code: ExceptionCode::IllegalDataAddress,
            }),
        };
        assert_eq!(exception.encode(), vec![0x01, 0x84, 0x02, 0xC2, 0xC1]);
    }
}
