//! The bus's line settings as drivers receive them (API 1.2): every meter driver's config carries them
//! as `line = "9600 8E1"` (baud, data bits, parity `N`/`E`/`O`, stop bits), so a driver can time its
//! frames (a Modbus 3.5-character silence, a DL/T 645 byte time) without asking the operator twice.

use std::fmt;
use std::time::Duration;

/// Parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineParity {
    /// None.
    None,
    /// Even.
    Even,
    /// Odd.
    Odd,
}

/// A serial line's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Line {
    /// Bits a second.
    pub baud: u32,
    /// Data bits, 5–8.
    pub data_bits: u8,
    /// Parity.
    pub parity: LineParity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
}

impl Line {
    /// The time one character takes on the line (start, data, parity and stop bits).
    pub fn char_time(&self) -> Duration {
        let bits = 1
            + u64::from(self.data_bits)
            + u64::from(self.parity != LineParity::None)
            + u64::from(self.stop_bits);
        Duration::from_micros(bits * 1_000_000 / u64::from(self.baud.max(1)))
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parity = match self.parity {
            LineParity::None => 'N',
            LineParity::Even => 'E',
            LineParity::Odd => 'O',
        };
        write!(
            f,
            "{} {}{parity}{}",
            self.baud, self.data_bits, self.stop_bits
        )
    }
}

impl std::str::FromStr for Line {
    type Err = String;

    /// `9600 8N1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("`{s}` is not a line setting; write the baud rate and the format, like \"9600 8N1\"")
        };
        let (baud, format) = s.trim().split_once(' ').ok_or_else(bad)?;
        let baud: u32 = baud.parse().map_err(|_| bad())?;
        let bytes = format.trim().as_bytes();
        let [data, parity, stop] = bytes else {
            return Err(bad());
        };
        let parity = match parity.to_ascii_uppercase() {
            b'N' => LineParity::None,
            b'E' => LineParity::Even,
            b'O' => LineParity::Odd,
            _ => return Err(bad()),
        };
        let (data_bits, stop_bits) = (data.wrapping_sub(b'0'), stop.wrapping_sub(b'0'));
        if baud == 0 || !(5..=8).contains(&data_bits) || !(1..=2).contains(&stop_bits) {
            return Err(bad());
        }
        Ok(Line {
            baud,
            data_bits,
            parity,
            stop_bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_settings_read_write_and_time_a_character() {
        let line: Line = "2400 8E1".parse().unwrap();
        assert_eq!(line.to_string(), "2400 8E1");
        assert_eq!(line.char_time(), Duration::from_micros(4583));
        assert!("9600".parse::<Line>().is_err());
        assert!("9600 9N1".parse::<Line>().unwrap_err().contains("9600 8N1"));
    }
}
