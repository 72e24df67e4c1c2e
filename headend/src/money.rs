//! Money as people read it: "10.00 EUR", never minor units.

/// Minor units as a decimal amount with its currency (`-12.05 EUR`).
pub fn money(minor: i64, currency: &str) -> String {
    format!(
        "{} {currency}",
        concentrator_ledger::money::format_minor(minor)
    )
}

/// [`money`] for unsigned amounts.
pub fn money_u(minor: u64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, minor % 100)
}

/// A Unix time as `2026-12-06 13:05:09 UTC`, for people.
pub fn time(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil from days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_times_for_people() {
        assert_eq!(money(1_000, "EUR"), "10.00 EUR");
        assert_eq!(money(-1_205, "EUR"), "-12.05 EUR");
        assert_eq!(money_u(1_734, "EUR"), "17.34 EUR");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_796_562_309), "2026-12-06 13:05:09 UTC");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
