//! Abnormal replies: the meter understood the request and refuses it. A device exception, not a
//! transport failure: the meter is healthy.

use std::fmt;

use crate::control::Function;

/// The error bits of an abnormal reply's error byte (DL/T 645-2007 §7, "error information word").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorBit {
    /// Bit 0: other error.
    Other,
    /// Bit 1: no requested data (the meter does not have this DI).
    NoRequestedData,
    /// Bit 2: wrong password or not authorised.
    Unauthorised,
    /// Bit 3: the baud rate cannot be changed.
    BaudCannotChange,
    /// Bit 4: more annual time zones than allowed.
    TooManyTimeZones,
    /// Bit 5: more daily time periods than allowed.
    TooManyDailyPeriods,
    /// Bit 6: more tariffs than allowed.
    TooManyTariffs,
    /// Bit 7: reserved.
    Reserved,
}

impl ErrorBit {
    /// Every bit, by bit number.
    pub const ALL: [ErrorBit; 8] = [
        ErrorBit::Other,
        ErrorBit::NoRequestedData,
        ErrorBit::Unauthorised,
        ErrorBit::BaudCannotChange,
        ErrorBit::TooManyTimeZones,
        ErrorBit::TooManyDailyPeriods,
        ErrorBit::TooManyTariffs,
        ErrorBit::Reserved,
    ];

    /// The bit's mask in the error byte.
    pub fn mask(self) -> u8 {
        let index = ErrorBit::ALL.iter().position(|&b| b == self).unwrap_or(7);
        1 << index
    }

    /// What the bit means.
    pub const fn description(self) -> &'static str {
        match self {
            ErrorBit::Other => "other error",
            ErrorBit::NoRequestedData => "no requested data",
            ErrorBit::Unauthorised => "password error or unauthorised",
            ErrorBit::BaudCannotChange => "baud rate cannot be changed",
            ErrorBit::TooManyTimeZones => "annual time-zone count exceeded",
            ErrorBit::TooManyDailyPeriods => "daily time-period count exceeded",
            ErrorBit::TooManyTariffs => "tariff count exceeded",
            ErrorBit::Reserved => "reserved bit 7",
        }
    }
}

/// An abnormal reply from a meter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dlt645Exception {
    /// The function the meter refused.
    pub function: Option<Function>,
    /// The error byte as sent.
    pub error_byte: u8,
}

impl Dlt645Exception {
    /// An exception for `function` with these bits set.
    pub fn new(function: Function, bits: &[ErrorBit]) -> Self {
        Dlt645Exception {
            function: Some(function),
            error_byte: bits.iter().fold(0, |acc, b| acc | b.mask()),
        }
    }

    /// The bits set in the error byte.
    pub fn bits(&self) -> Vec<ErrorBit> {
        ErrorBit::ALL
            .into_iter()
            .filter(|b| self.error_byte & b.mask() != 0)
            .collect()
    }

    /// True if the bit is set.
    pub fn has(&self, bit: ErrorBit) -> bool {
        self.error_byte & bit.mask() != 0
    }
}

impl fmt::Display for Dlt645Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let function = self.function.map_or("the request", Function::name);
        write!(f, "the meter refused {function}: ")?;
        let bits = self.bits();
        if bits.is_empty() {
            return f.write_str("error byte 0x00 (no bit set)");
        }
        let names: Vec<&str> = bits.iter().map(|b| b.description()).collect();
        write!(
            f,
            "{} (error byte 0x{:02X})",
            names.join(", "),
            self.error_byte
        )
    }
}

impl std::error::Error for Dlt645Exception {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_text() {
        let e = Dlt645Exception {
            function: Some(Function::ReadData),
            error_byte: 0x02,
        };
        assert_eq!(e.bits(), vec![ErrorBit::NoRequestedData]);
        assert_eq!(
            e.to_string(),
            "the meter refused read data: no requested data (error byte 0x02)"
        );
        assert_eq!(
            Dlt645Exception::new(Function::RelayControl, &[ErrorBit::Unauthorised]).error_byte,
            0x04
        );
    }
}
