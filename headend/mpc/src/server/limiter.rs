//! Failures per key (a customer, an identity, an authorization code, a source address): after `after`
//! failures in a row, each further attempt must wait 1, 2, 4, … seconds (up to `max`) after the last
//! failure. A success clears the count; so does a long quiet ([`Limiter::prune`]), which also keeps
//! the table bounded however many keys an attacker tries.
//! Kept in memory: a restart forgets it, which costs an attacker nothing they could not get by waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Failures {
    count: u32,
    until: Instant,
    last: Instant,
}

/// Keys kept at most; past this the longest-quiet ones are forgotten first.
const MAX_KEYS: usize = 100_000;

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
                last: now,
            });
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count >= self.after {
            let doublings = (f.count - self.after).min(20);
            let wait = Duration::from_secs(1u64 << doublings).min(self.max);
            f.until = now + wait;
        }
    }

    pub fn succeeded(&mut self, customer: &str) {
        self.by_customer.remove(customer);
    }

    /// Forgets keys whose wait is over and whose last failure is `quiet` old; then, if more than
    /// [`MAX_KEYS`] remain, the longest-quiet ones. Cheap to call after every failure: a small table
    /// is scanned only when its size is a multiple of 64.
    pub fn prune(&mut self, now: Instant, quiet: Duration) {
        let n = self.by_customer.len();
        if n < MAX_KEYS / 2 && !n.is_multiple_of(64) {
            return;
        }
        self.by_customer
            .retain(|_, f| f.until > now || now.saturating_duration_since(f.last) < quiet);
        if self.by_customer.len() > MAX_KEYS {
            let mut lasts: Vec<Instant> = self.by_customer.values().map(|f| f.last).collect();
            lasts.sort_unstable();
            let cut = lasts[self.by_customer.len() - MAX_KEYS];
            self.by_customer.retain(|_, f| f.last >= cut);
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.by_customer.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_customer.is_empty()
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

    #[test]
    fn quiet_keys_are_forgotten_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1, Duration::from_secs(5));
        for i in 0..64 {
            l.failed(&format!("k{i}"), t0);
        }
        l.prune(t0 + Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(l.len(), 64, "not quiet long enough");
        l.prune(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert!(l.is_empty());
        for i in 0..(MAX_KEYS + 10) {
            l.failed(&format!("k{i}"), t0 + Duration::from_millis(i as u64));
        }
        l.prune(t0, Duration::from_secs(3600));
        assert!(l.len() <= MAX_KEYS, "{}", l.len());
        assert!(
            l.check(&format!("k{}", MAX_KEYS + 9), t0).is_err(),
            "the newest kept"
        );
    }
}
