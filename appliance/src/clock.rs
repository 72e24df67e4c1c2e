//! The daemon's time: the wall clock and the one stop-aware sleep of its workers.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use concentrator_hal::Clock;

use crate::health::Worker;

/// The longest a worker sleeps before it checks for a stop request and beats.
pub const TICK: Duration = Duration::from_millis(200);

/// Unix seconds now: [`concentrator_protocol::unix_now`], the one wall-clock reading, as the daemon
/// sees it (the ledger's token checks, readings, charges, the uplink's records, the meters' time
/// sync): the host's clock ([`system_now`]) plus the step the time authority took while NTP had not
/// synchronised it ([`set_correction_s`], from the modem's network time or the head-end's TimeSync;
/// 0 once NTP has).
pub fn unix_now() -> u64 {
    system_now().saturating_add_signed(CORRECTION_S.load(Ordering::SeqCst))
}

/// The host's clock as the daemon found it, without the time authority's step.
///
/// Test-only hook: `CONCENTRATOR_CLOCK_OFFSET_S` (signed seconds, read once) shifts it, so the
/// whole-system money test (system/tests/money.rs) can run a gateway whose clock is ahead or behind, as
/// a Pi without RTC is before NTP, and the time test (appliance/tests/time.rs) can start a gateway
/// seconds before its daily meter time sync. Unset in production.
pub fn system_now() -> u64 {
    static OFFSET_S: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET_S.get_or_init(|| {
        std::env::var("CONCENTRATOR_CLOCK_OFFSET_S")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    concentrator_protocol::unix_now().saturating_add_signed(offset)
}

/// The step [`unix_now`] adds to the host's clock, seconds.
static CORRECTION_S: AtomicI64 = AtomicI64::new(0);

/// Sets the step [`unix_now`] adds to the host's clock (the time authority's, `crate::timekeeper`).
pub fn set_correction_s(seconds: i64) {
    CORRECTION_S.store(seconds, Ordering::SeqCst);
}

/// The step [`unix_now`] adds to the host's clock now, seconds.
pub fn correction_s() -> i64 {
    CORRECTION_S.load(Ordering::SeqCst)
}

/// The local hour (0 to 23) and a number for the local day of `unix` (different every day), in the
/// host's time zone; `None` when the C library has no local time for it.
pub fn local_hour_and_day(unix: u64) -> Option<(u8, i64)> {
    let t = libc::time_t::try_from(unix).ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    let hour = u8::try_from(tm.tm_hour).ok()?;
    Some((hour, i64::from(tm.tm_year) * 1000 + i64::from(tm.tm_yday)))
}

/// `unix` as people read it: the host's local date and time (`2026-12-06 14:00:00`), or the UTC
/// date and time with `UTC` when the C library has no local time for it.
pub fn local_time_text(unix: u64) -> String {
    match concentrator_security::clock::local_parts(unix) {
        Some((year, month, day, h, m, s, _zone)) => {
            format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}")
        }
        None => concentrator_security::clock::Utc(unix).to_string(),
    }
}

/// Sleeps `duration` on `clock` in steps of at most `step`, calling `each` between steps (a worker
/// beats there); returns false as soon as `stop` is set, true when the whole time passed.
pub fn sleep_unless_stopped(
    clock: &dyn Clock,
    stop: &AtomicBool,
    duration: Duration,
    step: Duration,
    mut each: impl FnMut(),
) -> bool {
    let until = clock.monotonic() + duration;
    while clock.monotonic() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        each();
        clock.sleep(step.min(until.saturating_sub(clock.monotonic())));
    }
    !stop.load(Ordering::SeqCst)
}

/// [`sleep_unless_stopped`] for a worker: beating every [`TICK`].
pub fn worker_sleep(
    clock: &dyn Clock,
    worker: &Worker,
    stop: &AtomicBool,
    duration: Duration,
) -> bool {
    sleep_unless_stopped(clock, stop, duration, TICK, || worker.beat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_hal::sim::SimClock;

    #[test]
    fn a_sleep_lasts_its_time_and_ends_early_on_stop() {
        let clock = SimClock::new_virtual();
        let stop = AtomicBool::new(false);
        let start = clock.monotonic();
        let mut beats = 0;
        assert!(sleep_unless_stopped(
            &clock,
            &stop,
            Duration::from_secs(1),
            TICK,
            || beats += 1
        ));
        assert_eq!(clock.monotonic() - start, Duration::from_secs(1));
        assert_eq!(beats, 5);
        let mut calls = 0;
        let stopped = sleep_unless_stopped(&clock, &stop, Duration::from_secs(10), TICK, || {
            calls += 1;
            if calls == 3 {
                stop.store(true, Ordering::SeqCst);
            }
        });
        assert!(!stopped);
        assert_eq!(calls, 3);
    }
}
