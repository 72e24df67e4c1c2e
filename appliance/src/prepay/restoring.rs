//! Meters whose account is being restored from the head-end (`[ledger] restore = "headend"`): the store
//! has no account for them (a lost or new store, a meter moved here). Until the head-end's signed account
//! statement arrives they are not charged and take no tokens; their readings are kept (the first is the
//! baseline when the head-end knows no register), and a `RestoreRequest` goes up every
//! [`ASK_EVERY`] until the account exists (docs/ledger.md, *Restoring a lost store*).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use concentrator_protocol::RestoreRequest;

/// How often a restore request is repeated while the head-end has not answered.
pub const ASK_EVERY: Duration = Duration::from_secs(60);
/// How long the first request waits for the meter's first reading (sent with it, the head-end knows
/// the register now); a meter not read by then is asked for without one.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(10);

/// One meter waiting for its account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    /// Since when.
    since: Instant,
    /// The first register read while waiting: (Wh, unix seconds).
    first: Option<(u64, u64)>,
    /// The newest register read while waiting.
    latest: Option<(u64, u64)>,
    /// When the request was last queued.
    asked: Option<Instant>,
}

/// The meters (by their index in the meter book) waiting for the head-end.
#[derive(Debug, Default)]
pub(super) struct Restoring {
    waiting: BTreeMap<usize, Waiting>,
}

impl Restoring {
    /// Marks a meter as waiting (no-op if it already is).
    pub(super) fn start(&mut self, index: usize) {
        self.waiting.entry(index).or_insert_with(|| Waiting {
            since: Instant::now(),
            first: None,
            latest: None,
            asked: None,
        });
    }

    /// Whether the meter is waiting for the head-end.
    pub(super) fn contains(&self, index: usize) -> bool {
        self.waiting.contains_key(&index)
    }

    /// Keeps a reading of a waiting meter; `false` if the meter is not waiting.
    pub(super) fn reading(&mut self, index: usize, wh: u64, at: u64) -> bool {
        let Some(w) = self.waiting.get_mut(&index) else {
            return false;
        };
        w.first.get_or_insert((wh, at));
        w.latest = Some((wh, at));
        true
    }

    /// The first reading kept (the baseline of an account the head-end starts afresh).
    pub(super) fn first(&self, index: usize) -> Option<(u64, u64)> {
        self.waiting.get(&index).and_then(|w| w.first)
    }

    /// The requests due now (never asked, or asked [`ASK_EVERY`] ago; the first once the meter was read
    /// or after [`FIRST_READ_WAIT`]), marked as asked.
    pub(super) fn due(&mut self, now: Instant, unix: u64) -> Vec<(usize, RestoreRequest)> {
        self.waiting
            .iter_mut()
            .filter(|(_, w)| match w.asked {
                Some(t) => now.saturating_duration_since(t) >= ASK_EVERY,
                None => {
                    w.latest.is_some() || now.saturating_duration_since(w.since) >= FIRST_READ_WAIT
                }
            })
            .map(|(index, w)| {
                w.asked = Some(now);
                (
                    *index,
                    RestoreRequest {
                        at: unix,
                        register_wh: w.latest.map(|(wh, _)| wh),
                    },
                )
            })
            .collect()
    }

    /// The meter's account exists now: stops waiting and returns the newest reading kept.
    pub(super) fn done(&mut self, index: usize) -> Option<(u64, u64)> {
        self.waiting.remove(&index).and_then(|w| w.latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_repeat_every_minute_with_the_newest_register_until_done() {
        let mut r = Restoring::default();
        assert!(!r.reading(0, 1, 1));
        r.start(0);
        r.start(2);
        let t0 = Instant::now();
        // Not read yet: the first request waits for a reading, then goes without one.
        assert!(r.due(t0, 100).is_empty());
        let t0 = t0 + FIRST_READ_WAIT;
        let due = r.due(t0, 100);
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].1.register_wh, None);
        assert!(r.due(t0 + Duration::from_secs(59), 159).is_empty());
        assert!(r.reading(0, 5_000, 120));
        assert!(r.reading(0, 5_010, 130));
        let due = r.due(t0 + ASK_EVERY, 160);
        assert_eq!(due.len(), 2);
        assert_eq!(
            due[0].1,
            RestoreRequest {
                at: 160,
                register_wh: Some(5_010)
            }
        );
        assert_eq!(r.first(0), Some((5_000, 120)));
        assert_eq!(r.done(0), Some((5_010, 130)));
        assert!(!r.contains(0) && r.contains(2));
        // A meter read before its first request is asked at once, with the register.
        r.start(5);
        assert!(r.reading(5, 700, 200));
        let due = r.due(Instant::now(), 201);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.register_wh, Some(700));
    }
}
