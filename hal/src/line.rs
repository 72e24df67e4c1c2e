//! Line settings of a serial port (baud, data bits, parity, stop bits) and the wire time they imply.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The baud rates a config may name; every UART and USB adapter we support does these.
pub const STANDARD_BAUD_RATES: &[u32] = &[
    300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600,
];

/// Parity bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity (DL/T 645's default).
    Even,
    /// Odd parity.
    Odd,
}

/// Why a set of line settings is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineSettingsError {
    /// The baud rate is not one of [`STANDARD_BAUD_RATES`].
    #[error("baud rate {0} is not supported; use one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 (or 300, 600, 230400, 460800, 921600)")]
    Baud(u32),
    /// Data bits outside 5..=8.
    #[error("{0} data bits is not possible; use 7 or 8")]
    DataBits(u8),
    /// Stop bits other than 1 or 2.
    #[error("{0} stop bits is not possible; use 1 or 2")]
    StopBits(u8),
    /// A frame-format string that is not like `8E1`.
    #[error("`{0}` is not a frame format; write data bits, parity and stop bits like `8E1`, `8N1` or `7E1`")]
    Format(String),
}

/// Line settings of a UART: baud, data bits, parity and stop bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineSettings {
    /// Bits per second.
    pub baud: u32,
    /// Data bits per character (5 to 8).
    pub data_bits: u8,
    /// Parity bit.
    pub parity: Parity,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
}

impl LineSettings {
    /// Checked settings.
    pub fn new(
        baud: u32,
        data_bits: u8,
        parity: Parity,
        stop_bits: u8,
    ) -> Result<Self, LineSettingsError> {
        let settings = LineSettings {
            baud,
            data_bits,
            parity,
            stop_bits,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// 2400 baud 8E1, the DL/T 645-2007 default.
    pub const fn dlt645_default() -> Self {
        LineSettings {
            baud: 2400,
            data_bits: 8,
            parity: Parity::Even,
            stop_bits: 1,
        }
    }

    /// 9600 baud 8N1, the usual Modbus RTU meter default.
    pub const fn modbus_default() -> Self {
        LineSettings {
            baud: 9600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
        }
    }

    /// Checks that a port can be set to these settings.
    pub fn validate(&self) -> Result<(), LineSettingsError> {
        if !STANDARD_BAUD_RATES.contains(&self.baud) {
            return Err(LineSettingsError::Baud(self.baud));
        }
        if !(5..=8).contains(&self.data_bits) {
            return Err(LineSettingsError::DataBits(self.data_bits));
        }
        if !(1..=2).contains(&self.stop_bits) {
            return Err(LineSettingsError::StopBits(self.stop_bits));
        }
        Ok(())
    }

    /// Bits on the wire per character: start bit, data bits, parity bit if any, stop bits (11 at 8E1).
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// The time `bytes` characters take on the wire, rounded down to the nanosecond.
    ///
    /// Computed from the total bit count, so `wire_time(n)` is exact for any `n` rather than `n` times a
    /// rounded character time.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        let bits = bytes as u128 * u128::from(self.bits_per_char());
        let nanos = bits * 1_000_000_000 / u128::from(self.baud.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The time of one character on the wire.
    pub fn char_time(&self) -> Duration {
        self.wire_time(1)
    }

    /// Modbus RTU's silent interval between frames: 3.5 character times, or 1.75 ms above 19200 baud
    /// (Modbus over serial line v1.02, §2.5.1.1).
    pub fn modbus_silent_interval(&self) -> Duration {
        if self.baud > 19200 {
            Duration::from_micros(1750)
        } else {
            self.wire_time(7) / 2
        }
    }

    /// The frame format as `8E1`.
    pub fn format(&self) -> String {
        let parity = match self.parity {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        };
        format!("{}{}{}", self.data_bits, parity, self.stop_bits)
    }

    /// Parses a frame format like `8E1` and combines it with a baud rate.
    pub fn with_format(baud: u32, format: &str) -> Result<Self, LineSettingsError> {
        let bad = || LineSettingsError::Format(format.to_string());
        let mut chars = format.chars();
        let (Some(d), Some(p), Some(s), None) =
            (chars.next(), chars.next(), chars.next(), chars.next())
        else {
            return Err(bad());
        };
        let data_bits = d.to_digit(10).ok_or_else(bad)? as u8;
        let parity = match p.to_ascii_uppercase() {
            'N' => Parity::None,
            'E' => Parity::Even,
            'O' => Parity::Odd,
            _ => return Err(bad()),
        };
        let stop_bits = s.to_digit(10).ok_or_else(bad)? as u8;
        LineSettings::new(baud, data_bits, parity, stop_bits)
    }
}

impl fmt::Display for LineSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} baud {}", self.baud, self.format())
    }
}

impl FromStr for LineSettings {
    type Err = LineSettingsError;

    /// Parses `2400 8E1` or `2400,8E1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split([' ', ',']).filter(|p| !p.is_empty());
        let (Some(baud), Some(format), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LineSettingsError::Format(s.to_string()));
        };
        let baud = baud
            .parse()
            .map_err(|_| LineSettingsError::Format(s.to_string()))?;
        LineSettings::with_format(baud, format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleven_bits_per_byte_at_8e1() {
        let s = LineSettings::dlt645_default();
        assert_eq!(s.bits_per_char(), 11);
        // 11 bits at 2400 baud: 4583.333 µs per byte.
        assert_eq!(s.char_time(), Duration::from_nanos(4_583_333));
        // 24 bytes: 264 bits = 110 ms exactly.
        assert_eq!(s.wire_time(24), Duration::from_millis(110));
    }

    #[test]
    fn ten_bits_at_8n1_and_modbus_silence() {
        let s = LineSettings::modbus_default();
        assert_eq!(s.bits_per_char(), 10);
        assert_eq!(s.wire_time(96), Duration::from_millis(100));
        assert_eq!(s.modbus_silent_interval(), Duration::from_nanos(3_645_833));
        let fast = LineSettings::new(38400, 8, Parity::None, 1).unwrap();
        assert_eq!(fast.modbus_silent_interval(), Duration::from_micros(1750));
    }

    #[test]
    fn parse_and_reject() {
        assert_eq!(
            "2400 8E1".parse::<LineSettings>().unwrap(),
            LineSettings::dlt645_default()
        );
        assert_eq!(
            LineSettings::with_format(9600, "8n1").unwrap(),
            LineSettings::modbus_default()
        );
        assert_eq!(
            LineSettings::new(2401, 8, Parity::Even, 1),
            Err(LineSettingsError::Baud(2401))
        );
        assert!(matches!(
            LineSettings::with_format(9600, "8X1"),
            Err(LineSettingsError::Format(_))
        ));
        assert_eq!(
            LineSettings::with_format(9600, "8N3"),
            Err(LineSettingsError::StopBits(3))
        );
        assert_eq!(LineSettings::dlt645_default().to_string(), "2400 baud 8E1");
    }
}
