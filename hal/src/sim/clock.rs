//! The virtual clock of the simulation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Clock;

/// A virtual clock, shared by cloning. Monotonic time starts at zero and advances only when a simulated
/// bus moves bytes or someone sleeps on it.
#[derive(Debug, Clone)]
pub struct SimClock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nanos: AtomicU64,
    wall_at_zero: SystemTime,
    paced: bool,
}

impl SimClock {
    /// A purely virtual clock: advancing it costs no real time. For tests.
    pub fn new_virtual() -> Self {
        Self::build(false, UNIX_EPOCH + Duration::from_secs(1_767_225_600)) // 2026-01-01T00:00:00Z
    }

    /// A paced clock: it advances like a virtual one and also sleeps for real, so a simulated bus runs at
    /// the speed of the wire. Wall time starts at the system's time. For the daemon on simulated hardware.
    pub fn new_paced() -> Self {
        Self::build(true, SystemTime::now())
    }

    /// A virtual clock whose wall time starts at `wall`.
    pub fn starting_at(wall: SystemTime) -> Self {
        Self::build(false, wall)
    }

    fn build(paced: bool, wall_at_zero: SystemTime) -> Self {
        SimClock {
            inner: Arc::new(Inner {
                nanos: AtomicU64::new(0),
                wall_at_zero,
                paced,
            }),
        }
    }

    /// Moves the clock forward by `by` (and, when paced, sleeps that long).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.nanos.fetch_add(nanos, Ordering::SeqCst);
        if self.inner.paced && !by.is_zero() {
            std::thread::sleep(by);
        }
    }

    /// Moves the clock forward to `at` if it is behind it.
    pub fn advance_to(&self, at: Duration) {
        let now = self.monotonic();
        if at > now {
            self.advance(at - now);
        }
    }

    /// Whether this clock sleeps for real when it advances.
    pub fn is_paced(&self) -> bool {
        self.inner.paced
    }
}

impl Clock for SimClock {
    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::SeqCst))
    }

    fn wall(&self) -> SystemTime {
        self.inner.wall_at_zero + self.monotonic()
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_and_shares() {
        let clock = SimClock::new_virtual();
        let other = clock.clone();
        clock.advance(Duration::from_micros(4583));
        other.sleep(Duration::from_millis(1));
        assert_eq!(clock.monotonic(), Duration::from_micros(5583));
        clock.advance_to(Duration::from_millis(1));
        assert_eq!(clock.monotonic(), Duration::from_micros(5583));
        assert_eq!(
            clock.wall(),
            UNIX_EPOCH + Duration::from_secs(1_767_225_600) + Duration::from_micros(5583)
        );
    }
}
