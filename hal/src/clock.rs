//! Monotonic and wall time, and sleeping, behind one trait so that simulated time can stand in.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// A clock: monotonic time since the clock's start, wall time, and a sleep that advances the clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since this clock started; never goes backwards.
    fn monotonic(&self) -> Duration;
    /// Wall-clock time (for timestamps and tariffs; may jump when NTP or the head-end sets it).
    fn wall(&self) -> SystemTime;
    /// Waits `duration` of this clock's time.
    fn sleep(&self, duration: Duration);
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose monotonic time starts now.
    pub fn new() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}
