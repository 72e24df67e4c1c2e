//! Building requests: one function per task the concentrator gives a meter.

use std::fmt;
use std::str::FromStr;

use crate::bcd;
use crate::control::{ControlCode, Function};
use crate::data_id::DataId;
use crate::frame::Frame;
use crate::value::MeterDateTime;
use crate::Dlt645Address;

/// A password with its level: `PA` (the level, `02` for the ordinary write level, `04` for the
/// settings level) and the six-digit code `P0 P1 P2`, sent low byte first.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Password {
    /// The level `PA`.
    pub level: u8,
    /// The code in wire order (`P0` first).
    pub code: [u8; 3],
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the code itself (logs end up in support bundles).
        write!(f, "Password {{ level: {:02X}, code: ****** }}", self.level)
    }
}

impl Password {
    /// The level and the code as six digits (`Password::new(2, 123456)`); digits above six are dropped.
    pub fn new(level: u8, code: u32) -> Self {
        let mut wire = [0u8; 3];
        let mut rest = code;
        for byte in &mut wire {
            *byte = bcd::to_byte((rest % 100) as u8);
            rest /= 100;
        }
        Password { level, code: wire }
    }

    /// The four bytes `PA P0 P1 P2`.
    pub fn to_wire(&self) -> [u8; 4] {
        [self.level, self.code[0], self.code[1], self.code[2]]
    }

    /// From the four bytes `PA P0 P1 P2`.
    pub fn from_wire(bytes: [u8; 4]) -> Self {
        Password {
            level: bytes[0],
            code: [bytes[1], bytes[2], bytes[3]],
        }
    }
}

impl FromStr for Password {
    type Err = String;

    /// Eight hex digits `PA` then the code most significant first: `02123456` is level 02, code 123456.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes: Option<Vec<u8>> = (text.len() == 8 && text.is_ascii())
            .then(|| {
                (0..4)
                    .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        match bytes.as_deref() {
            Some(&[level, p2, p1, p0]) => Ok(Password {
                level,
                code: [p0, p1, p2],
            }),
            _ => Err(
                "a password is 8 hex digits: the level then the 6-digit code, like 02000000"
                    .to_string(),
            ),
        }
    }
}

/// The operator code `C0..C3` recorded by the meter with a write or a control (eight digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OperatorCode(pub [u8; 4]);

impl OperatorCode {
    /// From eight hex digits' value (`OperatorCode::new(0x12345678)` is sent `78 56 34 12`).
    pub const fn new(code: u32) -> Self {
        OperatorCode(code.to_le_bytes())
    }
}

/// A relay-control command (`N1` of the 0x1C data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayCommand {
    /// `1A`: trip (open the relay).
    Trip,
    /// `1B`: allow closing (the customer closes it with the button).
    CloseAllowed,
    /// `1C`: close directly.
    DirectClose,
    /// `2A`: alarm.
    Alarm,
    /// `2B`: end the alarm.
    AlarmRelease,
    /// `3A`: guarantee power (the meter will not trip).
    GuaranteePower,
    /// `3B`: end guarantee power.
    GuaranteePowerRelease,
}

impl RelayCommand {
    /// Every command.
    pub const ALL: [RelayCommand; 7] = [
        RelayCommand::Trip,
        RelayCommand::CloseAllowed,
        RelayCommand::DirectClose,
        RelayCommand::Alarm,
        RelayCommand::AlarmRelease,
        RelayCommand::GuaranteePower,
        RelayCommand::GuaranteePowerRelease,
    ];

    /// The `N1` byte.
    pub const fn code(self) -> u8 {
        match self {
            RelayCommand::Trip => 0x1A,
            RelayCommand::CloseAllowed => 0x1B,
            RelayCommand::DirectClose => 0x1C,
            RelayCommand::Alarm => 0x2A,
            RelayCommand::AlarmRelease => 0x2B,
            RelayCommand::GuaranteePower => 0x3A,
            RelayCommand::GuaranteePowerRelease => 0x3B,
        }
    }

    /// The command with this `N1` byte.
    pub fn from_code(code: u8) -> Option<Self> {
        RelayCommand::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// When a freeze applies: `mm hh DD MM`, each field either a value or `99` ("every"); all four `99`
/// freeze at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FreezeTime {
    /// Minute, or `None` for "every".
    pub minute: Option<u8>,
    /// Hour, or `None`.
    pub hour: Option<u8>,
    /// Day of month, or `None`.
    pub day: Option<u8>,
    /// Month, or `None`.
    pub month: Option<u8>,
}

impl FreezeTime {
    /// Freeze now (`99999999`).
    pub const INSTANT: FreezeTime = FreezeTime {
        minute: None,
        hour: None,
        day: None,
        month: None,
    };

    /// The four bytes `mm hh DD MM`.
    pub fn to_wire(&self) -> [u8; 4] {
        let field = |v: Option<u8>| v.map_or(0x99, bcd::to_byte);
        [
            field(self.minute),
            field(self.hour),
            field(self.day),
            field(self.month),
        ]
    }
}

/// Read data (0x11) of one DI.
pub fn read_data(address: Dlt645Address, di: DataId) -> Frame {
    Frame::new(
        address,
        ControlCode::request(Function::ReadData),
        di.to_wire().to_vec(),
    )
}

/// Read the follow-up data (0x12) numbered `sequence` of a DI whose reply said more follows. The first
/// follow-up is sequence 1.
pub fn read_follow_up(address: Dlt645Address, di: DataId, sequence: u8) -> Frame {
    let mut data = di.to_wire().to_vec();
    data.push(sequence);
    Frame::new(address, ControlCode::request(Function::ReadFollowUp), data)
}

/// Read the address (0x13) of the one meter on the line, sent to the wildcard `AAAAAAAAAAAA`.
pub fn read_address() -> Frame {
    Frame::new(
        Dlt645Address::WILDCARD,
        ControlCode::request(Function::ReadAddress),
        Vec::new(),
    )
}

/// Write data (0x14): DI, password with its level, operator code, then the value bytes (plain, in the
/// DI's wire format).
pub fn write_data(
    address: Dlt645Address,
    di: DataId,
    password: &Password,
    operator: OperatorCode,
    value: &[u8],
) -> Frame {
    let mut data = di.to_wire().to_vec();
    data.extend_from_slice(&password.to_wire());
    data.extend_from_slice(&operator.0);
    data.extend_from_slice(value);
    Frame::new(address, ControlCode::request(Function::WriteData), data)
}

/// Set the clock of one meter: write the date (`04000101`) and the time (`04000102`) with the password.
/// Two requests, date first.
pub fn set_clock(
    address: Dlt645Address,
    time: &MeterDateTime,
    password: &Password,
    operator: OperatorCode,
) -> [Frame; 2] {
    let wire = time.to_wire();
    let date = [bcd::to_byte(time.weekday()), wire[3], wire[4], wire[5]];
    [
        write_data(address, DataId::DATE, password, operator, &date),
        write_data(address, DataId::TIME, password, operator, &wire[..3]),
    ]
}

/// Broadcast time sync (0x08) to `999999999999`: `ss mm hh DD MM YY`. Meters do not reply; send it with
/// the bus's `send`, not `transact`.
pub fn broadcast_time_sync(time: &MeterDateTime) -> Frame {
    Frame::new(
        Dlt645Address::BROADCAST,
        ControlCode::request(Function::BroadcastTime),
        time.to_wire().to_vec(),
    )
}

/// Freeze (0x16) at `when`. To the broadcast address, no meter replies.
pub fn freeze(address: Dlt645Address, when: FreezeTime) -> Frame {
    Frame::new(
        address,
        ControlCode::request(Function::Freeze),
        when.to_wire().to_vec(),
    )
}

/// Relay control (0x1C) in plaintext: password, operator, `N1` command, `N2` reserved, and the time the
/// command stays valid (`N3..N8` = `ss mm hh DD MM YY`).
///
/// Meters that take only ESAM-protected control (State-Grid prepaid meters) answer with an abnormal
/// reply (unauthorised).
pub fn relay_control(
    address: Dlt645Address,
    command: RelayCommand,
    password: &Password,
    operator: OperatorCode,
    valid_until: &MeterDateTime,
) -> Frame {
    let mut data = password.to_wire().to_vec();
    data.extend_from_slice(&operator.0);
    data.push(command.code());
    data.push(0x00);
    data.extend_from_slice(&valid_until.to_wire());
    Frame::new(address, ControlCode::request(Function::RelayControl), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let p: Password = "02123456".parse().unwrap();
        assert_eq!(p, Password::new(2, 123_456));
        assert_eq!(p.to_wire(), [0x02, 0x56, 0x34, 0x12]);
        assert_eq!(format!("{p:?}"), "Password { level: 02, code: ****** }");
        assert!("0212345".parse::<Password>().is_err());
        assert!("02é3456".parse::<Password>().is_err());
    }

    #[test]
    fn set_clock_writes_date_then_time() {
        let t = MeterDateTime::new(2026, 5, 1, 12, 34, 56).unwrap();
        let [date, time] = set_clock(
            Dlt645Address::from_number(1),
            &t,
            &Password::new(2, 0),
            OperatorCode::default(),
        );
        assert_eq!(&date.data[..4], &DataId::DATE.to_wire());
        assert_eq!(&date.data[12..], &[0x05, 0x01, 0x05, 0x26]);
        assert_eq!(&time.data[12..], &[0x56, 0x34, 0x12]);
    }
}
