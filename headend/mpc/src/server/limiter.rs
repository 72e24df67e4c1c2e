//! Failed logins per customer: after `lockout_after` failures in a row, each further attempt must wait
//! 1, 2, 4, … seconds (up to `lockout_max`) after the last failure. A success clears the count.
//! Kept in memory: a restart forgets it, which costs an attacker nothing they could not get by waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Failures {
    count: u32,
    until: Instant,
}

#[derive(Debug)]
pub struct Limiter {
    after: u32,
    max: Duration,
    by_customer: HashMap<String, Failures>,
}

impl Limiter {
    pub fn new(after: u32, max: Duration) -> Self {
        Limiter {
            after,
            max,
            by_customer: HashMap::new(),
        }
    }

    /// `Err(wait)` while the customer must wait.
    pub fn check(&self, customer: &str, now: Instant) -> Result<(), Duration> {
        match self.by_customer.get(customer) {
            Some(f) if f.until > now => Err(f.until - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, customer: &str, now: Instant) {
        let f = self
            .by_customer
            .entry(customer.to_owned())
            .or_insert(Failures {
                count: 0,
                until: now,
            });
        f.count = f.count.saturating_add(1);
        if f.count >= self.after {
            let doublings = (f.count - self.after).min(20);
            let wait = Duration::from_secs(1u64 << doublings).min(self.max);
            f.until = now + wait;
        }
    }

    pub fn succeeded(&mut self, customer: &str) {
        self.by_customer.remove(customer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_the_threshold_and_success_clears_them() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            l.failed("C1", t0);
            assert_eq!(l.check("C1", t0), Ok(()));
        }
        l.failed("C1", t0);
        assert_eq!(l.check("C1", t0), Err(Duration::from_secs(1)));
        assert_eq!(l.check("C1", t0 + Duration::from_secs(1)), Ok(()));
        l.failed("C1", t0);
        assert_eq!(l.check("C1", t0), Err(Duration::from_secs(2)));
        for _ in 0..10 {
            l.failed("C1", t0);
        }
        assert_eq!(l.check("C1", t0), Err(Duration::from_secs(5)), "capped");
        assert_eq!(l.check("C2", t0), Ok(()), "per customer");
        l.succeeded("C1");
        assert_eq!(l.check("C1", t0), Ok(()));
    }
}
