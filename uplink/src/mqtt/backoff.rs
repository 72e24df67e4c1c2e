//! Reconnect backoff: exponential with full jitter, capped.
//!
//! The n-th consecutive failed connection (n from 0) waits a uniformly random time in
//! `[floor, min(cap, base × 2ⁿ)]`. Defaults: base 1 s, cap 120 s, floor 100 ms. Full jitter spreads the
//! reconnects of a whole city's gateways after a broker restart instead of having them arrive in waves;
//! the cap keeps a gateway from staying away for long once the network is back (120 s is four missed
//! 30-second keep-alives of a typical head-end dashboard). The count starts again after a connection that
//! stayed up for [`Backoff::stable_after`] (60 s): a broker that accepts and then drops a gateway at once
//! (a bad ACL, a duplicate client id) does not get hammered.

use std::time::Duration;

use rand::Rng;

/// Backoff settings and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// First ceiling.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
    /// Shortest wait.
    pub floor: Duration,
    /// A connection that lasted this long resets the count.
    pub stable_after: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(120),
            Duration::from_millis(100),
        )
    }
}

impl Backoff {
    /// Backoff from `base` doubling up to `cap`, never below `floor`; resets after 60 s of connection.
    pub fn new(base: Duration, cap: Duration, floor: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(floor),
            floor,
            stable_after: Duration::from_secs(60),
            failures: 0,
        }
    }

    /// The ceiling of the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
            .max(self.floor)
    }

    /// The wait before the next attempt; counts a failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let lo = self.floor.as_micros() as u64;
        let hi = (ceiling.as_micros() as u64).max(lo);
        Duration::from_micros(rand::thread_rng().gen_range(lo..=hi))
    }

    /// A connection ended after lasting `up`: resets the count if it was stable.
    pub fn connection_ended(&mut self, up: Duration) {
        if up >= self.stable_after {
            self.failures = 0;
        }
    }

    /// Consecutive failures counted.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_jitters_and_resets() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_secs());
            let d = b.next_delay();
            assert!(d >= b.floor && d <= Duration::from_secs(120), "{d:?}");
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120, 120, 120]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(120));
        b.connection_ended(Duration::from_secs(5));
        assert!(b.failures() > 0);
        b.connection_ended(Duration::from_secs(61));
        assert_eq!(b.failures(), 0);
        // Jitter: delays at the cap are spread, not equal.
        let mut b = Backoff::default();
        for _ in 0..8 {
            b.next_delay();
        }
        let ds: std::collections::HashSet<_> = (0..20).map(|_| b.clone().next_delay()).collect();
        assert!(ds.len() > 10);
    }
}
