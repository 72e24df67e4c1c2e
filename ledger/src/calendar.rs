//! Local calendar for tariffs and friendly-credit hours: unix seconds to local day and minute with a fixed
//! UTC offset, civil dates, weekdays and day types (weekday, Saturday, Sunday, holiday).
//!
//! The offset is fixed per configuration: daylight-saving changes are a configuration change pushed by
//! the head-end (the tariff periods of the utility are usually stated in standard time anyway).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A civil date, stored as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i64);

impl Date {
    /// The date of a year, month (1–12) and day (1–31), if it exists.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Count from 1 March so that the leap day is the last day of the counting year.
        let (y, m) = if month <= 2 {
            (year - 1, i64::from(month) + 9)
        } else {
            (year, i64::from(month) - 3)
        };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let day_of_year = (153 * m + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        Some(Date(era * 146_097 + day_of_era - 719_468))
    }

    /// Year, month and day.
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    /// Day of the week, 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday).
    pub fn weekday(self) -> u32 {
        (self.0 + 3).rem_euclid(7) as u32
    }

    /// A month number that grows by one each calendar month (for monthly block resets).
    pub fn month_index(self) -> i64 {
        let (y, m, _) = self.ymd();
        y * 12 + i64::from(m) - 1
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl std::str::FromStr for Date {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("date {s:?} is not a valid YYYY-MM-DD date");
        let mut parts = s.split('-');
        let (Some(y), Some(m), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let y = y.parse().map_err(|_| bad())?;
        let m = m.parse().map_err(|_| bad())?;
        let d = d.parse().map_err(|_| bad())?;
        Date::from_ymd(y, m, d).ok_or_else(bad)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A time of day, minutes after local midnight (0..=1440; 1440 = end of day), written `"HH:MM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(pub u16);

impl TimeOfDay {
    /// `hh:mm`, if valid (24:00 is allowed as the end of a day).
    pub fn hm(h: u16, m: u16) -> Option<TimeOfDay> {
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(TimeOfDay(h * 60 + m))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = s
            .split_once(':')
            .and_then(|(h, m)| TimeOfDay::hm(h.parse().ok()?, m.parse().ok()?));
        parsed.ok_or_else(|| {
            serde::de::Error::custom(format!("time {s:?} is not HH:MM between 00:00 and 24:00"))
        })
    }
}

/// The kind of day, for tariff periods and friendly credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayType {
    /// Monday to Friday, not a holiday.
    Weekday,
    /// Saturday, not a holiday.
    Saturday,
    /// Sunday, not a holiday.
    Sunday,
    /// A configured public holiday.
    Holiday,
}

/// A local moment: the day and the minute of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The local date.
    pub date: Date,
    /// Seconds after local midnight.
    pub second: u32,
}

/// The local calendar: the UTC offset and the holidays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    offset_s: i64,
    holidays: BTreeSet<Date>,
}

impl Calendar {
    /// A calendar with a fixed offset from UTC in minutes (east positive) and a holiday list.
    pub fn new(utc_offset_minutes: i32, holidays: impl IntoIterator<Item = Date>) -> Self {
        Calendar {
            offset_s: i64::from(utc_offset_minutes) * 60,
            holidays: holidays.into_iter().collect(),
        }
    }

    /// The local date and time of unix time `at`.
    pub fn local(&self, at: u64) -> Local {
        let t = i64::try_from(at).unwrap_or(i64::MAX - self.offset_s.abs()) + self.offset_s;
        Local {
            date: Date(t.div_euclid(86_400)),
            second: t.rem_euclid(86_400) as u32,
        }
    }

    /// Unix time of local midnight starting `date`.
    pub fn midnight(&self, date: Date) -> i64 {
        date.0 * 86_400 - self.offset_s
    }

    /// The kind of day of a local date.
    pub fn day_type(&self, date: Date) -> DayType {
        if self.holidays.contains(&date) {
            return DayType::Holiday;
        }
        match date.weekday() {
            5 => DayType::Saturday,
            6 => DayType::Sunday,
            _ => DayType::Weekday,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_and_known_days() {
        assert_eq!(Date::from_ymd(1970, 1, 1), Some(Date(0)));
        assert_eq!(Date::from_ymd(2000, 3, 1), Some(Date(11_017)));
        assert_eq!(
            Date::from_ymd(2024, 2, 29)
                .map(|d| d.to_string())
                .as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(Date::from_ymd(2023, 2, 29), None);
        for d in -800_000..800_000 {
            let (y, m, day) = Date(d).ymd();
            assert_eq!(Date::from_ymd(y, m, day), Some(Date(d)));
        }
        // 2024-06-01 was a Saturday, 2024-06-03 a Monday.
        let sat: Date = "2024-06-01".parse().unwrap();
        assert_eq!(sat.weekday(), 5);
        assert_eq!(Date(sat.0 + 2).weekday(), 0);
    }

    #[test]
    fn local_time_uses_the_offset_and_holidays() {
        let holiday: Date = "2024-12-25".parse().unwrap();
        let cal = Calendar::new(120, [holiday]);
        // 2024-12-24 23:30 UTC is 2024-12-25 01:30 at UTC+2.
        let at = (cal.midnight(holiday) + 60 * 90) as u64;
        let local = cal.local(at);
        assert_eq!(local.date, holiday);
        assert_eq!(local.second, 90 * 60);
        assert_eq!(cal.day_type(holiday), DayType::Holiday);
        assert_eq!(cal.day_type(Date(holiday.0 + 4)), DayType::Sunday); // 2024-12-29
        assert!("2024-13-01".parse::<Date>().is_err());
    }
}
