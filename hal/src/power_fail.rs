//! The power-fail input (issue 17, *last gasp*): a GPIO line that a supercapacitor or UPS HAT drives when
//! the block's supply is gone and the gateway runs on its reserve. The monitor reads the line, with its
//! polarity, and reports a change only after the new level held for the debounce time, so a spike on a
//! long wire is not an outage; the daemon polls it (every few tens of milliseconds) and on
//! [`PowerEvent::Failed`] flushes its store, queues the last gasp ahead of everything and stops.
//!
//! ```
//! use std::time::Duration;
//! use concentrator_hal::power_fail::{PowerEvent, PowerFailMonitor, Polarity};
//! use concentrator_hal::sim::SimPin;
//!
//! let line = SimPin::new("power-good");
//! line.drive(true); // the HAT's "power good" is high while the supply is there
//! let mut m = PowerFailMonitor::new(Box::new(line.clone()), Polarity::ActiveLow, Duration::from_millis(20));
//! assert_eq!(m.poll(Duration::ZERO).unwrap(), None);
//! line.drive(false);
//! assert_eq!(m.poll(Duration::from_millis(5)).unwrap(), None, "not yet held for the debounce time");
//! assert_eq!(m.poll(Duration::from_millis(30)).unwrap(), Some(PowerEvent::Failed));
//! ```

use std::time::Duration;

use crate::gpio::InputLine;
use crate::HalError;

/// Which level of the line means "the supply has failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// Low means failed: a "power good" output (most UPS HATs, a supercapacitor board's PGOOD).
    ActiveLow,
    /// High means failed: a "power fail" output.
    ActiveHigh,
}

/// A change of the supply, once debounced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    /// The supply failed: the gateway runs on its reserve.
    Failed,
    /// The supply is back.
    Restored,
}

/// Debounces a power-fail line. Time is passed in (the daemon's monotonic clock), so tests need no
/// sleeping.
#[derive(Debug)]
pub struct PowerFailMonitor {
    line: Box<dyn InputLine>,
    polarity: Polarity,
    debounce: Duration,
    /// The state reported last (`true`: failed); starts as "supply present".
    failed: bool,
    /// A different reading and when it was first seen.
    pending: Option<(bool, Duration)>,
}

impl PowerFailMonitor {
    /// Watches `line`; a level must hold `debounce` before it counts.
    pub fn new(line: Box<dyn InputLine>, polarity: Polarity, debounce: Duration) -> Self {
        PowerFailMonitor {
            line,
            polarity,
            debounce,
            failed: false,
            pending: None,
        }
    }

    /// Whether the supply counts as failed now (the last reported state).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Reads the line at monotonic time `now`; `Some` when the debounced state changed.
    pub fn poll(&mut self, now: Duration) -> Result<Option<PowerEvent>, HalError> {
        let high = self.line.is_high()?;
        let failed = match self.polarity {
            Polarity::ActiveLow => !high,
            Polarity::ActiveHigh => high,
        };
        if failed == self.failed {
            self.pending = None;
            return Ok(None);
        }
        let since = match self.pending {
            Some((level, since)) if level == failed => since,
            _ => {
                self.pending = Some((failed, now));
                now
            }
        };
        if now.saturating_sub(since) < self.debounce {
            return Ok(None);
        }
        self.failed = failed;
        self.pending = None;
        Ok(Some(if failed {
            PowerEvent::Failed
        } else {
            PowerEvent::Restored
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimPin;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn spikes_are_ignored_and_both_edges_reported_once() {
        let line = SimPin::new("pfail");
        let mut m = PowerFailMonitor::new(Box::new(line.clone()), Polarity::ActiveHigh, ms(50));
        assert_eq!(m.poll(ms(0)).unwrap(), None);
        // A 30 ms spike: not an outage.
        line.drive(true);
        assert_eq!(m.poll(ms(10)).unwrap(), None);
        assert_eq!(m.poll(ms(40)).unwrap(), None);
        line.drive(false);
        assert_eq!(m.poll(ms(45)).unwrap(), None);
        assert!(!m.failed());
        // A real failure: reported once, after the debounce time from its first sighting.
        line.drive(true);
        assert_eq!(m.poll(ms(100)).unwrap(), None);
        assert_eq!(m.poll(ms(149)).unwrap(), None);
        assert_eq!(m.poll(ms(150)).unwrap(), Some(PowerEvent::Failed));
        assert_eq!(m.poll(ms(300)).unwrap(), None);
        assert!(m.failed());
        // Restored.
        line.drive(false);
        assert_eq!(m.poll(ms(400)).unwrap(), None);
        assert_eq!(m.poll(ms(460)).unwrap(), Some(PowerEvent::Restored));
        assert!(!m.failed());
    }

    #[test]
    fn active_low_power_good() {
        let line = SimPin::new("pgood");
        line.drive(true);
        let mut m = PowerFailMonitor::new(Box::new(line.clone()), Polarity::ActiveLow, ms(0));
        assert_eq!(m.poll(ms(0)).unwrap(), None);
        line.drive(false);
        assert_eq!(m.poll(ms(1)).unwrap(), Some(PowerEvent::Failed));
    }
}
