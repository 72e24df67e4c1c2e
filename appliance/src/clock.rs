//! The daemon's time: the wall clock and the one stop-aware sleep of its workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use concentrator_hal::Clock;

use crate::health::Worker;

/// The longest a worker sleeps before it checks for a stop request and beats.
pub const TICK: Duration = Duration::from_millis(200);

/// Unix seconds now: [`concentrator_protocol::unix_now`], the one wall-clock reading, as the daemon
/// sees it (the ledger's token checks, readings, charges, the uplink's records).
///
/// Test-only hook: `CONCENTRATOR_CLOCK_OFFSET_S` (signed seconds, read once) shifts it, so the
/// whole-system money test (system/tests/money.rs) can run a gateway whose clock is ahead or behind, as
/// a Pi without RTC is before NTP. Unset in production.
pub fn unix_now() -> u64 {
    static OFFSET_S: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET_S.get_or_init(|| {
        std::env::var("CONCENTRATOR_CLOCK_OFFSET_S")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    concentrator_protocol::unix_now().saturating_add_signed(offset)
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
