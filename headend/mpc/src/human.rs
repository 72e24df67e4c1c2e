//! Times as people read them: in the local time zone of the machine (or `TZ`), never as Unix seconds.

/// `unix` seconds as a local date and time, e.g. `2026-12-06 14:05 CET`; `-` for 0 (never).
pub fn local_time(unix: u64) -> String {
    if unix == 0 {
        return "-".into();
    }
    let Ok(t) = libc::time_t::try_from(unix) else {
        return format!("{unix} s after 1970 (beyond this system's clock)");
    };
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return format!("{unix} s after 1970 (no local time for it)");
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points at a NUL-terminated zone abbreviation owned by the C library.
        let z = unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) };
        format!(" {}", z.to_string_lossy())
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}{zone}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// How far `later` is after `now`, in words (`in 30 days`, `in 5 hours`, `expired`).
pub fn from_now(now: u64, later: u64) -> String {
    if later <= now {
        return "expired".into();
    }
    let s = later - now;
    match s {
        0..=119 => format!("in {s} s"),
        120..=7_199 => format!("in {} minutes", s / 60),
        7_200..=172_799 => format!("in {} hours", s / 3_600),
        _ => format!("in {} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_read_as_dates() {
        // The test process's zone is whatever the machine has; the shape is the same everywhere.
        let t = local_time(1_767_225_600);
        let (date, rest) = t.split_once(' ').unwrap();
        assert!(
            date.starts_with("2025-12-31") || date.starts_with("2026-01-01"),
            "{t}"
        );
        assert!(rest.len() >= 5, "{t}");
        assert!(!t.contains("1767225600"), "{t}");
        assert_eq!(local_time(0), "-");
        assert_eq!(from_now(100, 100 + 30 * 86_400), "in 30 days");
        assert_eq!(from_now(100, 50), "expired");
        assert_eq!(from_now(0, 90), "in 90 s");
    }
}
