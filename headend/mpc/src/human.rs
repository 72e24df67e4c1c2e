//! For people: times in the local time zone of the machine (or `TZ`), never as Unix seconds; and what
//! a customer can do about a token that is late or refused, the same words in `mpc` and the web app.

use crate::backend::Notice;

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

/// What the customer can do about `n`, for the notices that call for it: a token the gateway cannot
/// apply yet ([`Notice::Delayed`]), a refused one ([`Notice::Refused`]), notices dropped unread
/// ([`Notice::Missed`]). `None` for the others, which need nothing.
pub fn advice(n: &Notice) -> Option<String> {
    let resent =
        "You need do nothing: the payment server sends the token again by itself until the \
                  gateway applies it, and you pay nothing more.";
    match n {
        Notice::Delayed { reason, .. } => {
            let why = reason.to_ascii_lowercase();
            let first = if why.contains("first reading") {
                "The meter's account opens at its first reading, normally within minutes of the \
                 gateway starting to read it."
            } else if why.contains("restor") {
                "The gateway is recovering the meter's account from the payment server; this takes \
                 minutes."
            } else if why.contains("meter") && (why.contains("answer") || why.contains("offline")) {
                "The gateway could not reach the meter; check that the meter has power."
            } else {
                "The gateway is busy or its store is unavailable for a moment."
            };
            Some(format!(
                "{first} {resent} If the gateway's link to the utility is down, the token kept on \
                 this phone can be applied at the gateway (its installer screen or its command line)."
            ))
        }
        Notice::Refused {
            meter,
            serial,
            reason,
            ..
        } => {
            let why = reason.to_ascii_lowercase();
            let first = if why.contains("expired") {
                "The token expired before it reached the meter."
            } else if why.contains("already") || why.contains("replay") {
                "The meter has already taken this token once; it is not applied twice."
            } else {
                "The gateway will not take this token, and sending it again will not change that."
            };
            Some(format!(
                "{first} Your payment stays in the utility's payment record: call the utility with \
                 meter {meter} and token {serial} to have it refunded or a new token issued."
            ))
        }
        Notice::Missed { count, .. } => Some(format!(
            "{count} alert{} could not be shown because the connection fell behind; reload the \
             history to see everything.",
            if *count == 1 { "" } else { "s" }
        )),
        _ => None,
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

    #[test]
    fn late_and_refused_tokens_say_what_to_do() {
        let later = advice(&Notice::Delayed {
            meter: "M1".into(),
            serial: 3,
            reason: "meter M1 has no account until its first reading".into(),
            at: 1,
        })
        .unwrap();
        assert!(later.contains("opens at its first reading"), "{later}");
        assert!(later.contains("pay nothing more"), "{later}");
        let refused = advice(&Notice::Refused {
            meter: "M1".into(),
            serial: 3,
            reason: "token expired".into(),
            at: 1,
        })
        .unwrap();
        assert!(
            refused.contains("expired") && refused.contains("token 3"),
            "{refused}"
        );
        assert!(advice(&Notice::SupplyCut {
            meter: "M1".into(),
            at: 1
        })
        .is_none());
    }
}
