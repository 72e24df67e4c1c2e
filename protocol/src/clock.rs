//! The wall clock, in the unit every message carries: unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch by the system clock; 0 for a clock set before 1970 (never a panic).
///
/// The one wall-clock reading of the gateway, the head-end and their tools: frame creation times,
/// envelope timestamps, ledger and outbox records. Timers use `Instant`, never this.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_is_past_2020() {
        assert!(super::unix_now() > 1_577_836_800);
    }
}
