//! The control code: direction, abnormal-reply and follow-up bits, and the function.

use std::fmt;

/// The functions of DL/T 645-2007 (control code bits 0-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// 0x08: broadcast time sync (to `999999999999`, no reply).
    BroadcastTime,
    /// 0x11: read data.
    ReadData,
    /// 0x12: read follow-up data of a long reply.
    ReadFollowUp,
    /// 0x13: read the communication address (to the wildcard `AAAAAAAAAAAA`).
    ReadAddress,
    /// 0x14: write data.
    WriteData,
    /// 0x15: write the communication address.
    WriteAddress,
    /// 0x16: freeze.
    Freeze,
    /// 0x17: change the baud rate.
    ChangeBaud,
    /// 0x18: change a password.
    ChangePassword,
    /// 0x19: clear maximum demand.
    ClearMaxDemand,
    /// 0x1A: clear the meter.
    ClearMeter,
    /// 0x1B: clear events.
    ClearEvents,
    /// 0x1C: relay (remote) control: trip, allow close, alarm, guarantee power.
    RelayControl,
}

impl Function {
    /// Every function, for lookups.
    pub const ALL: [Function; 13] = [
        Function::BroadcastTime,
        Function::ReadData,
        Function::ReadFollowUp,
        Function::ReadAddress,
        Function::WriteData,
        Function::WriteAddress,
        Function::Freeze,
        Function::ChangeBaud,
        Function::ChangePassword,
        Function::ClearMaxDemand,
        Function::ClearMeter,
        Function::ClearEvents,
        Function::RelayControl,
    ];

    /// The 5-bit function code.
    pub const fn code(self) -> u8 {
        match self {
            Function::BroadcastTime => 0x08,
            Function::ReadData => 0x11,
            Function::ReadFollowUp => 0x12,
            Function::ReadAddress => 0x13,
            Function::WriteData => 0x14,
            Function::WriteAddress => 0x15,
            Function::Freeze => 0x16,
            Function::ChangeBaud => 0x17,
            Function::ChangePassword => 0x18,
            Function::ClearMaxDemand => 0x19,
            Function::ClearMeter => 0x1A,
            Function::ClearEvents => 0x1B,
            Function::RelayControl => 0x1C,
        }
    }

    /// The function with this 5-bit code, if DL/T 645-2007 defines one.
    pub fn from_code(code: u8) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.code() == code)
    }

    /// A short English name.
    pub const fn name(self) -> &'static str {
        match self {
            Function::BroadcastTime => "broadcast time sync",
            Function::ReadData => "read data",
            Function::ReadFollowUp => "read follow-up data",
            Function::ReadAddress => "read address",
            Function::WriteData => "write data",
            Function::WriteAddress => "write address",
            Function::Freeze => "freeze",
            Function::ChangeBaud => "change baud rate",
            Function::ChangePassword => "change password",
            Function::ClearMaxDemand => "clear maximum demand",
            Function::ClearMeter => "clear meter",
            Function::ClearEvents => "clear events",
            Function::RelayControl => "relay control",
        }
    }
}

/// A control code byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlCode(pub u8);

impl ControlCode {
    /// Bit 7: set in frames from the meter.
    pub const REPLY: u8 = 0x80;
    /// Bit 6: set in an abnormal reply (the data is an error byte).
    pub const ABNORMAL: u8 = 0x40;
    /// Bit 5: set in a reply when follow-up data exists (read it with 0x12).
    pub const FOLLOW_UP: u8 = 0x20;

    /// The control code of a request for `function`.
    pub const fn request(function: Function) -> Self {
        ControlCode(function.code())
    }

    /// The control code of a normal reply to `function`.
    pub const fn reply(function: Function) -> Self {
        ControlCode(function.code() | Self::REPLY)
    }

    /// The control code of an abnormal reply to `function`.
    pub const fn abnormal(function: Function) -> Self {
        ControlCode(function.code() | Self::REPLY | Self::ABNORMAL)
    }

    /// The 5-bit function code.
    pub const fn function_code(self) -> u8 {
        self.0 & 0x1F
    }

    /// The function, if the code is one DL/T 645-2007 defines.
    pub fn function(self) -> Option<Function> {
        Function::from_code(self.function_code())
    }

    /// True in frames sent by a meter.
    pub const fn is_reply(self) -> bool {
        self.0 & Self::REPLY != 0
    }

    /// True in an abnormal reply.
    pub const fn is_abnormal(self) -> bool {
        self.0 & Self::ABNORMAL != 0
    }

    /// True when the meter has follow-up data.
    pub const fn has_follow_up(self) -> bool {
        self.0 & Self::FOLLOW_UP != 0
    }
}

impl fmt::Display for ControlCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} ", self.0)?;
        match self.function() {
            Some(function) => f.write_str(function.name())?,
            None => write!(f, "unknown function 0x{:02X}", self.function_code())?,
        }
        if self.is_reply() {
            f.write_str(if self.is_abnormal() {
                " abnormal reply"
            } else {
                " reply"
            })?;
            if self.has_follow_up() {
                f.write_str(", follow-up data exists")?;
            }
        } else {
            f.write_str(" request")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let c = ControlCode(0xB1);
        assert!(c.is_reply() && !c.is_abnormal() && c.has_follow_up());
        assert_eq!(c.function(), Some(Function::ReadData));
        assert_eq!(
            ControlCode(0xD1).to_string(),
            "0xD1 read data abnormal reply"
        );
        assert_eq!(
            ControlCode::abnormal(Function::RelayControl),
            ControlCode(0xDC)
        );
        assert_eq!(ControlCode(0x1F).function(), None);
    }
}
