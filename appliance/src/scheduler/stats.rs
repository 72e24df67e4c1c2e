//! Per-meter statistics and the latency estimate that sets each meter's reply timeout.

use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the latency histogram's buckets, in milliseconds (the last bucket is open).
pub const LATENCY_BUCKETS_MS: [u64; 7] = [20, 50, 100, 200, 500, 1000, 2000];

/// What happened on the bus for one meter, since the daemon started.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MeterStats {
    /// Exchanges (request frames put on the bus).
    pub requests: u64,
    /// Tasks that returned readings.
    pub ok: u64,
    /// Exchanges with no reply within the timeout.
    pub timeouts: u64,
    /// Replies the driver could not use (bad checksum, truncated, garbled by a collision).
    pub bad_replies: u64,
    /// Tasks the meter answered with an exception ("no such data", "password wrong").
    pub exceptions: u64,
    /// Tasks where the driver plugin panicked or broke a rule.
    pub driver_faults: u64,
    /// Latency histogram: counts per bucket of [`LATENCY_BUCKETS_MS`], plus one open bucket.
    pub latency_histogram: [u64; 8],
    /// The last measured latency, in milliseconds.
    pub last_latency_ms: Option<f64>,
}

impl MeterStats {
    /// Records a measured reply latency.
    pub fn record_latency(&mut self, latency: Duration) {
        let ms = latency.as_millis() as u64;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_histogram[bucket] += 1;
        self.last_latency_ms = Some(latency.as_secs_f64() * 1000.0);
    }
}

/// A smoothed latency estimate in the manner of TCP's retransmission timer (RFC 6298): the reply
/// timeout is the mean plus four deviations, within bounds, so a meter that answers in 40 ms is given up
/// on after well under the protocol's full window, while a slow meter keeps the time it needs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyEstimate {
    mean: Option<f64>,
    deviation: f64,
}

impl LatencyEstimate {
    /// Adds a measurement.
    pub fn observe(&mut self, latency: Duration) {
        let x = latency.as_secs_f64();
        match self.mean {
            None => {
                self.mean = Some(x);
                self.deviation = x / 2.0;
            }
            Some(mean) => {
                self.deviation = 0.75 * self.deviation + 0.25 * (mean - x).abs();
                self.mean = Some(0.875 * mean + 0.125 * x);
            }
        }
    }

    /// Forgets the estimate (after the meter went silent: give it the full window again).
    pub fn reset(&mut self) {
        *self = LatencyEstimate::default();
    }

    /// The timeout this estimate justifies, between `floor` and the protocol's own `ceiling`; `None`
    /// before any measurement.
    pub fn timeout(&self, floor: Duration, ceiling: Duration) -> Option<Duration> {
        let mean = self.mean?;
        let t = Duration::from_secs_f64(mean + 4.0 * self.deviation);
        Some(t.clamp(floor, ceiling.max(floor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_follows_the_measured_latency() {
        let mut e = LatencyEstimate::default();
        let (floor, ceiling) = (Duration::from_millis(50), Duration::from_millis(500));
        assert_eq!(e.timeout(floor, ceiling), None);
        for _ in 0..20 {
            e.observe(Duration::from_millis(40));
        }
        let t = e.timeout(floor, ceiling).unwrap();
        assert!(
            t >= Duration::from_millis(50) && t < Duration::from_millis(80),
            "{t:?}"
        );
        e.observe(Duration::from_millis(400));
        assert!(e.timeout(floor, ceiling).unwrap() > t);
        for _ in 0..50 {
            e.observe(Duration::from_millis(2000));
        }
        assert_eq!(e.timeout(floor, ceiling), Some(ceiling));
    }

    #[test]
    fn histogram_buckets() {
        let mut s = MeterStats::default();
        s.record_latency(Duration::from_millis(5));
        s.record_latency(Duration::from_millis(45));
        s.record_latency(Duration::from_millis(5000));
        assert_eq!(s.latency_histogram, [1, 1, 0, 0, 0, 0, 0, 1]);
    }
}
