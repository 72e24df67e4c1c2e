//! Requests for tasks and the interpretation of their replies, sans IO.
//!
//! Every interpretation returns `Result<Result<T, ModbusException>, ReplyError>`: the outer error means
//! the exchange failed (wrong slave, garbled or mismatched reply); the inner one means the slave
//! answered with an exception.

use crate::exception::ModbusException;
use crate::frame::Direction;
use crate::frame::{
    Adu, FrameError, Request, RequestAdu, Response, ResponseAdu, MAX_READ, MAX_WRITE,
};
use crate::model::{RegisterKind, RegisterMap};
use crate::plan::{QuantityValue, ReadBlock};
use crate::stream::{scan, Scan};

/// The outcome of an exchange: the slave's answer or its exception.
pub type Outcome<T> = Result<Result<T, ModbusException>, ReplyError>;

/// A request that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Slave address outside 1..=247 (0 is broadcast: writes only).
    #[error("slave address {0} is not usable here; use 1..=247 (0 is broadcast, for writes only)")]
    Slave(u8),
    /// Too few or too many registers.
    #[error("{count} registers: one request carries 1..={max}")]
    Count {
        /// Registers asked for.
        count: usize,
        /// The limit.
        max: u16,
    },
    /// The range runs past register 0xFFFF.
    #[error("registers 0x{address:04X} + {count} run past 0xFFFF")]
    Range {
        /// First register.
        address: u16,
        /// How many.
        count: usize,
    },
}

/// A reply that does not answer the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The bytes hold no valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Another slave answered.
    #[error("the reply comes from slave {found}, the request went to {expected}")]
    WrongSlave {
        /// The slave asked.
        expected: u8,
        /// The slave in the reply.
        found: u8,
    },
    /// A reply to another function.
    #[error("the reply is for function {found:02}, the request was function {expected:02}")]
    WrongFunction {
        /// Function requested.
        expected: u8,
        /// Function in the reply.
        found: u8,
    },
    /// The reply holds another number of registers, or echoes another write.
    #[error("the reply {what}")]
    Mismatch {
        /// What differs ("holds 2 registers, the request asked for 4").
        what: String,
    },
    /// A broadcast gets no reply.
    #[error("a broadcast (slave 0) gets no reply")]
    Broadcast,
}

fn check_slave(slave: u8, broadcast_ok: bool) -> Result<(), RequestError> {
    match slave {
        1..=247 => Ok(()),
        0 if broadcast_ok => Ok(()),
        other => Err(RequestError::Slave(other)),
    }
}

fn check_range(address: u16, count: usize, max: u16) -> Result<u16, RequestError> {
    let count16 = u16::try_from(count)
        .ok()
        .filter(|c| (1..=max).contains(c))
        .ok_or(RequestError::Count { count, max })?;
    if u32::from(address) + u32::from(count16) > 0x1_0000 {
        return Err(RequestError::Range { address, count });
    }
    Ok(count16)
}

/// Read `count` registers of `kind` from `address` (function 03 or 04).
pub fn read_registers(
    slave: u8,
    kind: RegisterKind,
    address: u16,
    count: u16,
) -> Result<RequestAdu, RequestError> {
    check_slave(slave, false)?;
    let count = check_range(address, usize::from(count), MAX_READ)?;
    Ok(ReadBlock {
        kind,
        address,
        count,
        registers: Vec::new(),
    }
    .request(slave))
}

/// Write one register (function 06). Slave 0 broadcasts.
pub fn write_register(slave: u8, address: u16, value: u16) -> Result<RequestAdu, RequestError> {
    check_slave(slave, true)?;
    Ok(Adu {
        slave,
        pdu: Request::WriteSingleRegister { address, value },
    })
}

/// Write consecutive registers (function 16). Slave 0 broadcasts.
pub fn write_registers(
    slave: u8,
    address: u16,
    values: &[u16],
) -> Result<RequestAdu, RequestError> {
    check_slave(slave, true)?;
    check_range(address, values.len(), MAX_WRITE)?;
    Ok(Adu {
        slave,
        pdu: Request::WriteMultipleRegisters {
            address,
            values: values.to_vec(),
        },
    })
}

/// Decodes the first valid reply from `slave` in `bytes`, skipping garbage before it.
pub fn decode_reply(bytes: &[u8], slave: u8) -> Result<ResponseAdu, ReplyError> {
    match scan(bytes, Direction::Response, Some(slave)) {
        Scan::Found { start, .. } => Ok(ResponseAdu::decode(&bytes[start..])?.0),
        // Nothing valid: report what is wrong with the bytes as they start.
        Scan::NeedMore { .. } => match ResponseAdu::decode(bytes) {
            Ok((reply, _)) => Err(ReplyError::WrongSlave {
                expected: slave,
                found: reply.slave,
            }),
            Err(err) => Err(err.into()),
        },
    }
}

fn function_of(request: &Request) -> u8 {
    match request {
        Request::ReadHoldingRegisters { .. } => crate::frame::READ_HOLDING_REGISTERS,
        Request::ReadInputRegisters { .. } => crate::frame::READ_INPUT_REGISTERS,
        Request::WriteSingleRegister { .. } => crate::frame::WRITE_SINGLE_REGISTER,
        Request::WriteMultipleRegisters { .. } => crate::frame::WRITE_MULTIPLE_REGISTERS,
    }
}

fn response_function(response: &Response) -> u8 {
    match response {
        Response::ReadHoldingRegisters { .. } => crate::frame::READ_HOLDING_REGISTERS,
        Response::ReadInputRegisters { .. } => crate::frame::READ_INPUT_REGISTERS,
        Response::WriteSingleRegister { .. } => crate::frame::WRITE_SINGLE_REGISTER,
        Response::WriteMultipleRegisters { .. } => crate::frame::WRITE_MULTIPLE_REGISTERS,
        Response::Exception(e) => e.function,
    }
}

/// Checks `reply` against `request`: the register values of a read, or `vec![]` for a confirmed write.
pub fn interpret(request: &RequestAdu, reply: &ResponseAdu) -> Outcome<Vec<u16>> {
    if request.slave == 0 {
        return Err(ReplyError::Broadcast);
    }
    if reply.slave != request.slave {
        return Err(ReplyError::WrongSlave {
            expected: request.slave,
            found: reply.slave,
        });
    }
    let expected = function_of(&request.pdu);
    let found = response_function(&reply.pdu);
    if expected != found {
        return Err(ReplyError::WrongFunction { expected, found });
    }
    let mismatch = |what: String| Err(ReplyError::Mismatch { what });
    match (&request.pdu, &reply.pdu) {
        (_, Response::Exception(exception)) => Ok(Err(*exception)),
        (
            Request::ReadHoldingRegisters { count, .. } | Request::ReadInputRegisters { count, .. },
            Response::ReadHoldingRegisters { values } | Response::ReadInputRegisters { values },
        ) => {
            if values.len() != usize::from(*count) {
                return mismatch(format!(
                    "holds {} registers, the request asked for {count}",
                    values.len()
                ));
            }
            Ok(Ok(values.clone()))
        }
        (
            Request::WriteSingleRegister { address, value },
            Response::WriteSingleRegister {
                address: a,
                value: v,
            },
        ) => {
            if (address, value) != (a, v) {
                return mismatch(format!("echoes 0x{v:04X} at 0x{a:04X}, the request wrote 0x{value:04X} at 0x{address:04X}"));
            }
            Ok(Ok(Vec::new()))
        }
        (
            Request::WriteMultipleRegisters { address, values },
            Response::WriteMultipleRegisters { address: a, count },
        ) => {
            if *address != *a || values.len() != usize::from(*count) {
                return mismatch(format!(
                    "confirms {count} registers at 0x{a:04X}, the request wrote {} at 0x{address:04X}",
                    values.len()
                ));
            }
            Ok(Ok(Vec::new()))
        }
        _ => Err(ReplyError::WrongFunction { expected, found }),
    }
}

/// Interprets the reply to a planned block read into the block's quantities.
pub fn read_block_reply(
    map: &RegisterMap,
    block: &ReadBlock,
    slave: u8,
    reply: &ResponseAdu,
) -> Outcome<Vec<QuantityValue>> {
    match interpret(&block.request(slave), reply)? {
        Ok(values) => Ok(Ok(map.decode_block(block, &values))),
        Err(exception) => Ok(Err(exception)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exception::ExceptionCode;

    #[test]
    fn builders_check_limits() {
        assert_eq!(
            read_registers(0, RegisterKind::Input, 0, 2),
            Err(RequestError::Slave(0))
        );
        assert_eq!(
            read_registers(1, RegisterKind::Input, 0, 126),
            Err(RequestError::Count {
                count: 126,
                max: 125
            })
        );
        assert_eq!(
            read_registers(1, RegisterKind::Input, 0xFFFF, 2),
            Err(RequestError::Range {
                address: 0xFFFF,
                count: 2
            })
        );
        assert!(write_registers(0, 0, &[1]).is_ok());
        assert_eq!(
            read_registers(1, RegisterKind::Input, 0, 2)
                .unwrap()
                .encode(),
            [1, 4, 0, 0, 0, 2, 0x71, 0xCB]
        );
    }

    #[test]
    fn exception_is_inside_ok() {
        let request = read_registers(1, RegisterKind::Input, 0x0200, 2).unwrap();
        let reply = decode_reply(&[0x01, 0x84, 0x02, 0xC2, 0xC1], 1).unwrap();
        let exception = interpret(&request, &reply).unwrap().unwrap_err();
        assert_eq!(exception.code, ExceptionCode::IllegalDataAddress);
    }

    #[test]
    fn mismatches_are_errors() {
        let request = read_registers(1, RegisterKind::Input, 0, 4).unwrap();
        let reply =
            decode_reply(&[0x01, 0x04, 0x04, 0x43, 0x66, 0x80, 0x00, 0x6F, 0xDF], 1).unwrap();
        assert_eq!(
            interpret(&request, &reply).unwrap_err().to_string(),
            "the reply holds 2 registers, the request asked for 4"
        );
        let request = read_registers(2, RegisterKind::Input, 0, 2).unwrap();
        assert!(matches!(
            decode_reply(&reply.encode(), 2),
            Err(ReplyError::WrongSlave {
                expected: 2,
                found: 1
            })
        ));
        assert!(matches!(
            interpret(&request, &reply),
            Err(ReplyError::WrongSlave { .. })
        ));
        let request = read_registers(1, RegisterKind::Holding, 0, 2).unwrap();
        assert_eq!(
            interpret(&request, &reply),
            Err(ReplyError::WrongFunction {
                expected: 3,
                found: 4
            })
        );
    }
}
