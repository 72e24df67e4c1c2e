//! Typed values read from a meter: decimal readings with a unit, dates and times, the relay state.

use std::fmt;

use crate::bcd;

/// The unit of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Unit {
    /// Kilowatt-hours (active energy).
    #[serde(rename = "kWh")]
    KilowattHour,
    /// Volts.
    #[serde(rename = "V")]
    Volt,
    /// Amperes.
    #[serde(rename = "A")]
    Ampere,
    /// Kilowatts (active power).
    #[serde(rename = "kW")]
    Kilowatt,
    /// Hertz.
    #[serde(rename = "Hz")]
    Hertz,
    /// The meter's currency (yuan on State-Grid prepaid meters).
    #[serde(rename = "currency")]
    Currency,
}

impl Unit {
    /// The symbol.
    pub const fn symbol(self) -> &'static str {
        match self {
            Unit::KilowattHour => "kWh",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Kilowatt => "kW",
            Unit::Hertz => "Hz",
            Unit::Currency => "currency",
        }
    }
}

/// An exact decimal reading: `mantissa × 10^exponent unit` (`1234567 × 10^-2 kWh` is 12345.67 kWh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Reading {
    /// The digits, with the sign.
    pub mantissa: i64,
    /// The power of ten to scale by (the number of decimals, negated).
    pub exponent: i8,
    /// The unit.
    pub unit: Unit,
}

impl Reading {
    /// A reading.
    pub const fn new(mantissa: i64, exponent: i8, unit: Unit) -> Self {
        Reading {
            mantissa,
            exponent,
            unit,
        }
    }

    /// The value as a float (for display and rough arithmetic; keep the mantissa for billing).
    pub fn to_f64(&self) -> f64 {
        self.mantissa as f64 * 10f64.powi(i32::from(self.exponent))
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exponent >= 0 {
            let zeros = "0".repeat(usize::from(self.exponent.unsigned_abs()));
            return write!(f, "{}{zeros} {}", self.mantissa, self.unit.symbol());
        }
        let decimals = usize::from(self.exponent.unsigned_abs());
        let digits = format!(
            "{:0width$}",
            self.mantissa.unsigned_abs(),
            width = decimals + 1
        );
        let (int, frac) = digits.split_at(digits.len() - decimals);
        let sign = if self.mantissa < 0 { "-" } else { "" };
        write!(f, "{sign}{int}.{frac} {}", self.unit.symbol())
    }
}

/// A calendar date and time as meters keep it (years 2000-2099, no time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct MeterDateTime {
    /// Year, 2000..=2099.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
}

/// A date or time field that is out of range or not BCD.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateTimeError {
    /// A byte is not BCD.
    #[error(transparent)]
    Bcd(#[from] bcd::BcdError),
    /// A field is out of its range.
    #[error("{field} is {value}, which is outside {min}..={max}")]
    Range {
        /// The field ("month").
        field: &'static str,
        /// Its value.
        value: u16,
        /// Smallest allowed.
        min: u16,
        /// Largest allowed.
        max: u16,
    },
}

fn check(field: &'static str, value: u16, min: u16, max: u16) -> Result<(), DateTimeError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(DateTimeError::Range {
            field,
            value,
            min,
            max,
        })
    }
}

fn bcd_at(bytes: &[u8], offset: usize) -> Result<u8, DateTimeError> {
    let byte = bytes.get(offset).copied().unwrap_or(0);
    bcd::byte_value(byte).ok_or(DateTimeError::Bcd(bcd::BcdError { offset, byte }))
}

impl MeterDateTime {
    /// A checked date and time.
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Result<Self, DateTimeError> {
        check("year", year, 2000, 2099)?;
        check("month", month.into(), 1, 12)?;
        check("day", day.into(), 1, 31)?;
        check("hour", hour.into(), 0, 23)?;
        check("minute", minute.into(), 0, 59)?;
        check("second", second.into(), 0, 59)?;
        Ok(MeterDateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// The six bytes `ss mm hh DD MM YY` (seconds first), as broadcast time sync and relay control's
    /// "valid until" carry them.
    pub fn to_wire(&self) -> [u8; 6] {
        [
            bcd::to_byte(self.second),
            bcd::to_byte(self.minute),
            bcd::to_byte(self.hour),
            bcd::to_byte(self.day),
            bcd::to_byte(self.month),
            bcd::to_byte((self.year % 100) as u8),
        ]
    }

    /// Parses `ss mm hh DD MM YY` (at least six bytes; more are ignored).
    pub fn from_wire(bytes: &[u8]) -> Result<Self, DateTimeError> {
        let year = 2000 + u16::from(bcd_at(bytes, 5)?);
        MeterDateTime::new(
            year,
            bcd_at(bytes, 4)?,
            bcd_at(bytes, 3)?,
            bcd_at(bytes, 2)?,
            bcd_at(bytes, 1)?,
            bcd_at(bytes, 0)?,
        )
    }

    /// From seconds since the Unix epoch (UTC or local, as the caller decides), for years 2000-2099.
    pub fn from_unix(seconds: u64) -> Result<Self, DateTimeError> {
        let days = seconds / 86_400;
        let rest = seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        let year = u16::try_from(year).unwrap_or(u16::MAX);
        MeterDateTime::new(
            year,
            month,
            day,
            (rest / 3600) as u8,
            (rest / 60 % 60) as u8,
            (rest % 60) as u8,
        )
    }

    /// Seconds since the Unix epoch.
    pub fn to_unix(&self) -> u64 {
        let days = days_from_civil(u64::from(self.year), self.month, self.day);
        days * 86_400
            + u64::from(self.hour) * 3600
            + u64::from(self.minute) * 60
            + u64::from(self.second)
    }

    /// Day of week, 0 = Sunday (the meter's `WW`).
    pub fn weekday(&self) -> u8 {
        // 1970-01-01 was a Thursday.
        ((self.to_unix() / 86_400 + 4) % 7) as u8
    }
}

impl fmt::Display for MeterDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

// Days since 1970-01-01 to a proleptic Gregorian date, for dates from 1970 on (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u8, u8) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: u64, month: u8, day: u8) -> u64 {
    let year = if month <= 2 {
        year.saturating_sub(1)
    } else {
        year
    };
    let era = year / 400;
    let yoe = year - era * 400;
    let m = u64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// A meter's date (`04000101`, sent `WW DD MM YY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MeterDate {
    /// Year, 2000..=2099.
    pub year: u16,
    /// Month.
    pub month: u8,
    /// Day of month.
    pub day: u8,
    /// Day of week as the meter keeps it, 0 = Sunday.
    pub weekday: u8,
}

impl MeterDate {
    /// Parses `WW DD MM YY`.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, DateTimeError> {
        let weekday = bcd_at(bytes, 0)?;
        check("weekday", weekday.into(), 0, 6)?;
        let day = bcd_at(bytes, 1)?;
        let month = bcd_at(bytes, 2)?;
        let year = 2000 + u16::from(bcd_at(bytes, 3)?);
        check("month", month.into(), 1, 12)?;
        check("day", day.into(), 1, 31)?;
        Ok(MeterDate {
            year,
            month,
            day,
            weekday,
        })
    }

    /// `WW DD MM YY`.
    pub fn to_wire(&self) -> [u8; 4] {
        [
            bcd::to_byte(self.weekday),
            bcd::to_byte(self.day),
            bcd::to_byte(self.month),
            bcd::to_byte((self.year % 100) as u8),
        ]
    }
}

/// A meter's time of day (`04000102`, sent `ss mm hh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MeterTime {
    /// Hour.
    pub hour: u8,
    /// Minute.
    pub minute: u8,
    /// Second.
    pub second: u8,
}

impl MeterTime {
    /// Parses `ss mm hh`.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, DateTimeError> {
        let (second, minute, hour) = (bcd_at(bytes, 0)?, bcd_at(bytes, 1)?, bcd_at(bytes, 2)?);
        check("hour", hour.into(), 0, 23)?;
        check("minute", minute.into(), 0, 59)?;
        check("second", second.into(), 0, 59)?;
        Ok(MeterTime {
            hour,
            minute,
            second,
        })
    }

    /// `ss mm hh`.
    pub fn to_wire(&self) -> [u8; 3] {
        [
            bcd::to_byte(self.second),
            bcd::to_byte(self.minute),
            bcd::to_byte(self.hour),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_print_exactly() {
        assert_eq!(
            Reading::new(1_234_567, -2, Unit::KilowattHour).to_string(),
            "12345.67 kWh"
        );
        assert_eq!(Reading::new(-5, -3, Unit::Ampere).to_string(), "-0.005 A");
        assert_eq!(Reading::new(12, 1, Unit::Volt).to_string(), "120 V");
        assert!((Reading::new(2201, -1, Unit::Volt).to_f64() - 220.1).abs() < 1e-9);
    }

    #[test]
    fn date_time_wire_and_calendar() {
        let t = MeterDateTime::new(2026, 5, 1, 12, 34, 56).unwrap();
        assert_eq!(t.to_wire(), [0x56, 0x34, 0x12, 0x01, 0x05, 0x26]);
        assert_eq!(MeterDateTime::from_wire(&t.to_wire()), Ok(t));
        assert_eq!(MeterDateTime::from_unix(t.to_unix()), Ok(t));
        assert_eq!(t.weekday(), 5); // a Friday
        assert_eq!(
            MeterDateTime::from_unix(1_777_638_896).unwrap().to_string(),
            "2026-05-01 12:34:56"
        );
        assert!(matches!(
            MeterDateTime::new(2026, 13, 1, 0, 0, 0),
            Err(DateTimeError::Range { field: "month", .. })
        ));
    }

    #[test]
    fn date_and_time_fields() {
        let date = MeterDate::from_wire(&[0x03, 0x01, 0x05, 0x26]).unwrap();
        assert_eq!(
            (date.year, date.month, date.day, date.weekday),
            (2026, 5, 1, 3)
        );
        assert_eq!(date.to_wire(), [0x03, 0x01, 0x05, 0x26]);
        let time = MeterTime::from_wire(&[0x56, 0x34, 0x12]).unwrap();
        assert_eq!((time.hour, time.minute, time.second), (12, 34, 56));
        assert!(MeterTime::from_wire(&[0x60, 0, 0]).is_err());
    }
}
