//! Exception replies: the slave understood the request and refuses it (Modbus Application Protocol
//! v1.1b3 §7). A device exception, not a transport failure.

use std::fmt;

/// An exception code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionCode {
    /// 01: the function code is not supported.
    IllegalFunction,
    /// 02: the register address (or range) does not exist.
    IllegalDataAddress,
    /// 03: a value in the request is not allowed.
    IllegalDataValue,
    /// 04: the slave failed while doing the action.
    ServerDeviceFailure,
    /// 05: accepted, the action takes long; poll later.
    Acknowledge,
    /// 06: busy with a long action; retry later.
    ServerDeviceBusy,
    /// 07: the program function cannot be performed.
    NegativeAcknowledge,
    /// 08: parity error in extended memory.
    MemoryParityError,
    /// 10: a gateway has no path to the target.
    GatewayPathUnavailable,
    /// 11: the target behind a gateway did not answer.
    GatewayTargetFailedToRespond,
    /// Any other code.
    Other(u8),
}

impl ExceptionCode {
    /// The code byte.
    pub const fn code(self) -> u8 {
        match self {
            ExceptionCode::IllegalFunction => 1,
            ExceptionCode::IllegalDataAddress => 2,
            ExceptionCode::IllegalDataValue => 3,
            ExceptionCode::ServerDeviceFailure => 4,
            ExceptionCode::Acknowledge => 5,
            ExceptionCode::ServerDeviceBusy => 6,
            ExceptionCode::NegativeAcknowledge => 7,
            ExceptionCode::MemoryParityError => 8,
            ExceptionCode::GatewayPathUnavailable => 10,
            ExceptionCode::GatewayTargetFailedToRespond => 11,
            ExceptionCode::Other(code) => code,
        }
    }

    /// The exception with this code byte.
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => ExceptionCode::IllegalFunction,
            2 => ExceptionCode::IllegalDataAddress,
            3 => ExceptionCode::IllegalDataValue,
            4 => ExceptionCode::ServerDeviceFailure,
            5 => ExceptionCode::Acknowledge,
            6 => ExceptionCode::ServerDeviceBusy,
            7 => ExceptionCode::NegativeAcknowledge,
            8 => ExceptionCode::MemoryParityError,
            10 => ExceptionCode::GatewayPathUnavailable,
            11 => ExceptionCode::GatewayTargetFailedToRespond,
            other => ExceptionCode::Other(other),
        }
    }

    /// The name the specification gives it.
    pub const fn name(self) -> &'static str {
        match self {
            ExceptionCode::IllegalFunction => "illegal function",
            ExceptionCode::IllegalDataAddress => "illegal data address",
            ExceptionCode::IllegalDataValue => "illegal data value",
            ExceptionCode::ServerDeviceFailure => "server device failure",
            ExceptionCode::Acknowledge => "acknowledge",
            ExceptionCode::ServerDeviceBusy => "server device busy",
            ExceptionCode::NegativeAcknowledge => "negative acknowledge",
            ExceptionCode::MemoryParityError => "memory parity error",
            ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
            ExceptionCode::GatewayTargetFailedToRespond => {
                "gateway target device failed to respond"
            }
            ExceptionCode::Other(_) => "undefined exception code",
        }
    }

    /// Whether asking again later may succeed (acknowledge, busy, gateway target silent).
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ExceptionCode::Acknowledge
                | ExceptionCode::ServerDeviceBusy
                | ExceptionCode::GatewayTargetFailedToRespond
        )
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02} {}", self.code(), self.name())
    }
}

impl serde::Serialize for ExceptionCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An exception reply from a slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ModbusException {
    /// The function code refused (without the 0x80 bit).
    pub function: u8,
    /// Why.
    pub code: ExceptionCode,
}

impl fmt::Display for ModbusException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the slave refused function {:02}: exception {}",
            self.function, self.code
        )
    }
}

impl std::error::Error for ModbusException {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(ExceptionCode::from_code(code).code(), code);
        }
        assert_eq!(
            ExceptionCode::from_code(2).to_string(),
            "02 illegal data address"
        );
        assert_eq!(ExceptionCode::from_code(9), ExceptionCode::Other(9));
        let e = ModbusException {
            function: 4,
            code: ExceptionCode::IllegalDataAddress,
        };
        assert_eq!(
            e.to_string(),
            "the slave refused function 04: exception 02 illegal data address"
        );
    }
}
