//! Clock tolerances that every party shares, and how times are shown to people.
//!
//! The gateway is a Raspberry Pi without a real-time clock: after a power cut it restarts from the time
//! systemd-timesyncd saved last and is behind until NTP answers over the mobile link. The head-end and the
//! phone have ordinary clocks. Every check that compares a time made by one party with another party's
//! clock allows for that, with the values here; `docs/security.md` ("Clocks") lists every such check
//! in the system, with its value and why.

use std::borrow::Borrow;
use std::fmt;

/// The largest difference between two parties' clocks that a time check absorbs, seconds: an envelope's
/// timestamp may be this far from the receiver's clock either way (the gateway's and the head-end's
/// window), and a credit token may be issued this far in the future of the verifier's clock. Five
/// minutes: far above what NTP leaves (milliseconds) and what a Pi drifts between syncs, small against
/// the replay protection it weakens (COUNT and serials carry that, not time).
pub const MAX_CLOCK_SKEW_S: u64 = 300;

/// How far before the moment of issue a certificate's notBefore is set, seconds (one day). A
/// certificate valid only from the second it was made cannot be used by a gateway whose clock is behind
/// ("certificate is not yet valid" at TLS and at token verification). CAs backdate for the same reason
/// (by an hour to a day); a day covers a gateway that restarts after a day without power and has not
/// reached NTP yet. It costs nothing: the key pair did not exist before, so nothing can have been
/// signed with it earlier, and notAfter is unchanged.
pub const CERTIFICATE_BACKDATE_S: u64 = 86_400;

/// The notBefore for a certificate made at `now`: [`CERTIFICATE_BACKDATE_S`] earlier. Write it with
/// `Asn1Time::from_str(&not_before(now).asn1())`.
pub fn not_before(now: u64) -> Utc {
    Utc(now.saturating_sub(CERTIFICATE_BACKDATE_S))
}

/// A Unix time shown as a UTC date and time: `2026-12-06 13:49:51 UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc(pub u64);

impl Utc {
    /// From seconds (or a reference to them, as error messages hold their fields).
    pub fn of(unix: impl Borrow<u64>) -> Utc {
        Utc(*unix.borrow())
    }
}

impl Utc {
    /// As an ASN.1 GeneralizedTime string, `20261206134951Z`, for `openssl::asn1::Asn1Time::from_str`
    /// (which, unlike `from_unix`, does not go through a `time_t` that is 32 bits on armhf).
    pub fn asn1(self) -> String {
        let (year, month, day, h, m, s) = self.parts();
        format!("{year:04}{month:02}{day:02}{h:02}{m:02}{s:02}Z")
    }

    fn parts(self) -> (u64, u64, u64, u64, u64, u64) {
        let (year, month, day) = civil(self.0 / 86_400);
        let secs = self.0 % 86_400;
        (year, month, day, secs / 3_600, secs / 60 % 60, secs % 60)
    }
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, h, m, s) = self.parts();
        write!(f, "{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC")
    }
}

/// A Unix time shown in the machine's local time with its zone, as people at the gateway or the
/// head-end read their clocks: `2026-12-06 14:49:51 CET` (the zone's abbreviation, or its offset
/// `UTC+01:00` where the zone has none). Where the C library has no local time for it, as [`Utc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime(pub u64);

impl LocalTime {
    /// From seconds (or a reference to them, as error messages hold their fields).
    pub fn of(unix: impl Borrow<u64>) -> LocalTime {
        LocalTime(*unix.borrow())
    }
}

/// The local calendar fields of a Unix time: year, month, day, hour, minute, second, and the zone's
/// abbreviation (or `UTC±hh:mm`); `None` where the C library cannot convert it.
pub fn local_parts(unix: u64) -> Option<(i64, u32, u32, u32, u32, u32, String)> {
    let t = libc::time_t::try_from(unix).ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: localtime_r set tm_zone to a NUL-terminated string owned by the C library that
        // lives as long as the process's time zone setting.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    let zone = if zone.is_empty() || zone.starts_with(['+', '-']) {
        let off = tm.tm_gmtoff;
        let sign = if off < 0 { '-' } else { '+' };
        let m = off.unsigned_abs() / 60;
        format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
    } else {
        zone
    };
    let field = |v: libc::c_int| u32::try_from(v).ok();
    Some((
        i64::from(tm.tm_year) + 1900,
        field(tm.tm_mon + 1)?,
        field(tm.tm_mday)?,
        field(tm.tm_hour)?,
        field(tm.tm_min)?,
        field(tm.tm_sec)?,
        zone,
    ))
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match local_parts(self.0) {
            Some((year, month, day, h, m, s, zone)) => {
                write!(
                    f,
                    "{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} {zone}"
                )
            }
            None => Utc(self.0).fmt(f),
        }
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (eras of 400 years, 146 097 days;
/// years counted from March so that the leap day comes last).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run in a child process with `TZ` set (the zone is read once per process), by the test below.
    #[test]
    fn local_times_in_the_zone_of_the_child() {
        match std::env::var("CLOCK_TEST_ZONE").as_deref() {
            Ok("berlin") => {
                assert_eq!(
                    LocalTime(1_800_000_000).to_string(),
                    "2027-01-15 09:00:00 CET"
                );
                assert_eq!(
                    LocalTime(1_812_000_000).to_string(),
                    "2027-06-03 07:20:00 CEST"
                );
            }
            Ok("utc") => {
                assert_eq!(
                    LocalTime(1_800_000_000).to_string(),
                    "2027-01-15 08:00:00 UTC"
                );
            }
            _ => {}
        }
    }

    #[test]
    fn local_times_follow_the_zone_and_name_it() {
        // POSIX zone strings need no time zone database.
        for (zone, tz) in [("berlin", "CET-1CEST,M3.5.0,M10.5.0/3"), ("utc", "UTC0")] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "clock::tests::local_times_in_the_zone_of_the_child",
                ])
                .env("TZ", tz)
                .env("CLOCK_TEST_ZONE", zone)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{zone}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn times_show_as_utc_dates() {
        assert_eq!(Utc(0).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(Utc(951_782_400).to_string(), "2000-02-29 00:00:00 UTC");
        assert_eq!(Utc(1_800_000_000).to_string(), "2027-01-15 08:00:00 UTC");
        assert_eq!(Utc(4_102_444_799).to_string(), "2099-12-31 23:59:59 UTC");
        assert_eq!(
            Utc::of(1_234_567_890).to_string(),
            "2009-02-13 23:31:30 UTC"
        );
        let held = 1_234_567_890u64;
        let by_reference: &u64 = &held;
        assert_eq!(Utc::of(by_reference), Utc(held));
        assert_eq!(Utc(1_234_567_890).asn1(), "20090213233130Z");
    }
}
