//! Pushes [`Notice`]s to the customers' open sessions as things happen (not polled by the phone).
//!
//! Each session reads a bounded [`NoticeFeed`]: a phone that stops reading costs the server at most
//! the feed's capacity, and is told how many it missed ([`concentrator_mpc::feed`]).
//!
//! The engine pushes what the gateway reports (applied, refused, alerts). The steps in between, a
//! token sent to its gateway and a gateway's "not now" with its reason, the engine only writes to the
//! token's record; [`Notifier::scan`] turns them into [`Notice::Delivered`] and [`Notice::Delayed`]
//! for the buyer while the purchase is followed ([`Notifier::track`]), so that a customer waiting for
//! a top-up sees it move instead of a silence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use concentrator_mpc::backend::Notice;
use concentrator_mpc::feed::{feed, NoticeFeed, NoticeSender, DEFAULT_CAPACITY};
use concentrator_protocol::{result_code, unix_now};

use crate::store::{Store, TokenState};

/// How long a purchase's steps are followed (the customer has long stopped waiting by then; the
/// history keeps the rest).
const FOLLOW_FOR: Duration = Duration::from_secs(3600);
/// Purchases followed at once; beyond this the oldest is let go (its outcome is still pushed).
const MAX_FOLLOWED: usize = 10_000;
/// How often the followed purchases' records are read.
pub const SCAN_EVERY: Duration = Duration::from_millis(100);

/// A purchase whose steps are pushed to its buyer.
#[derive(Debug)]
struct Followed {
    customer: String,
    since: Instant,
    delivered: bool,
    /// The gateway's last "not now" reason, as pushed.
    reason: Option<String>,
}

/// Subscriptions per customer, and the purchases followed.
#[derive(Debug)]
pub struct Notifier {
    subs: Mutex<HashMap<String, Vec<NoticeSender>>>,
    followed: Mutex<HashMap<(String, u64), Followed>>,
    capacity: usize,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::with_capacity(DEFAULT_CAPACITY)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Notifier {
    /// No subscriptions; feeds of [`DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Notifier::default()
    }

    /// No subscriptions; each feed keeps at most `capacity` notices for a reader that is behind.
    pub fn with_capacity(capacity: usize) -> Self {
        Notifier {
            subs: Mutex::new(HashMap::new()),
            followed: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Notices for `customer` from now on, until the feed is dropped.
    pub fn subscribe(&self, customer: &str) -> NoticeFeed {
        let (tx, rx) = feed(self.capacity);
        let mut subs = lock(&self.subs);
        // Feeds whose reader left without a notice since are forgotten here too.
        for list in subs.values_mut() {
            list.retain(NoticeSender::is_open);
        }
        subs.retain(|_, l| !l.is_empty());
        subs.entry(customer.to_string()).or_default().push(tx);
        rx
    }

    /// Sends `notice` to `customer`'s open feeds.
    pub fn customer(&self, customer: &str, notice: &Notice) {
        let mut subs = lock(&self.subs);
        if let Some(list) = subs.get_mut(customer) {
            list.retain(|tx| tx.send(notice.clone()).is_ok());
            if list.is_empty() {
                subs.remove(customer);
            }
        }
    }

    /// Sends `notice` to every customer whose meters include `meter`; forgets closed feeds.
    /// Only the customers with a session open here are read (not every customer, for every notice).
    pub fn meter(&self, store: &Store, meter: &str, notice: Notice) {
        let listening: Vec<String> = lock(&self.subs).keys().cloned().collect();
        let mut customers = Vec::new();
        for id in listening {
            match store.customer(&id) {
                Ok(Some(c)) => customers.push(c),
                Ok(None) => {}
                Err(e) => {
                    log::error!("notices: cannot read customer {id} (of meter {meter}?): {e}");
                }
            }
        }
        let mut to = Vec::new();
        {
            let mut subs = lock(&self.subs);
            for c in customers
                .iter()
                .filter(|c| c.meters.iter().any(|m| m == meter))
            {
                if let Some(list) = subs.get_mut(&c.id) {
                    list.retain(NoticeSender::is_open);
                    to.extend(list.iter().cloned());
                }
            }
            subs.retain(|_, l| !l.is_empty());
        }
        // Told only once what the notice reports is committed: inside a gateway's settle window on
        // PostgreSQL the receipt is booked at the window's commit, and a window rolled back must not
        // have told a customer "applied" (at once where there is no transaction).
        store.after_commit(move || {
            for tx in to {
                let _ = tx.send(notice.clone());
            }
        });
    }

    /// Follows a purchase just made: its buyer is told when it is sent to the gateway and why the
    /// gateway cannot apply it yet, if it cannot ([`Notifier::scan`]).
    /// Only while the buyer has a session open here: nobody else would be told, and the purchase's
    /// record would be read every [`SCAN_EVERY`] for nothing (the history shows its steps).
    pub fn track(&self, customer: &str, meter: &str, serial: u64) {
        let listening = lock(&self.subs)
            .get(customer)
            .is_some_and(|l| l.iter().any(NoticeSender::is_open));
        if !listening {
            return;
        }
        let mut f = lock(&self.followed);
        if f.len() >= MAX_FOLLOWED {
            if let Some(oldest) = f
                .iter()
                .min_by_key(|(_, v)| v.since)
                .map(|(k, _)| k.clone())
            {
                f.remove(&oldest);
            }
        }
        f.entry((meter.to_string(), serial)).or_insert(Followed {
            customer: customer.to_string(),
            since: Instant::now(),
            delivered: false,
            reason: None,
        });
    }

    /// Purchases followed now.
    pub fn followed(&self) -> usize {
        lock(&self.followed).len()
    }

    /// Reads the followed purchases' records and pushes what changed: [`Notice::Delivered`] once the
    /// token was first sent, [`Notice::Delayed`] when the gateway answered "not now" with a new
    /// reason. A purchase applied or refused (the engine pushes those) or followed for an hour is let
    /// go.
    pub fn scan(&self, store: &Store) {
        let keys: Vec<(String, u64)> = lock(&self.followed).keys().cloned().collect();
        for (meter, serial) in keys {
            let record = match store.token(&meter, serial) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("notices: cannot read token {meter}#{serial}: {e}");
                    continue;
                }
            };
            let mut notices = Vec::new();
            let customer = {
                let mut f = lock(&self.followed);
                let Some(fol) = f.get_mut(&(meter.clone(), serial)) else {
                    continue;
                };
                let done = record
                    .as_ref()
                    .is_none_or(|t| t.state != TokenState::Pending);
                if done || fol.since.elapsed() > FOLLOW_FOR {
                    f.remove(&(meter.clone(), serial));
                    continue;
                }
                let Some(t) = record else { continue };
                if let (Some(at), false) = (t.sent_at, fol.delivered) {
                    fol.delivered = true;
                    notices.push(Notice::Delivered {
                        meter: meter.clone(),
                        serial,
                        at,
                    });
                }
                let carried_out = matches!(
                    t.result,
                    Some(result_code::DONE | result_code::ALREADY_DONE)
                );
                if let (Some(reason), false) = (&t.reason, carried_out) {
                    if fol.reason.as_ref() != Some(reason) {
                        fol.reason = Some(reason.clone());
                        notices.push(Notice::Delayed {
                            meter: meter.clone(),
                            serial,
                            reason: reason.clone(),
                            at: t.result_at.or(t.sent_at).unwrap_or_else(unix_now),
                        });
                    }
                }
                fol.customer.clone()
            };
            for n in &notices {
                self.customer(&customer, n);
            }
        }
    }
}

/// Scans `notifier`'s followed purchases every [`SCAN_EVERY`] on a thread of its own, until the
/// notifier or the store is dropped.
pub fn spawn_scanner(notifier: &Arc<Notifier>, store: &Arc<Store>) {
    let (n, s): (Weak<Notifier>, Weak<Store>) = (Arc::downgrade(notifier), Arc::downgrade(store));
    let spawned = std::thread::Builder::new()
        .name("notice-scan".into())
        .spawn(move || loop {
            std::thread::sleep(SCAN_EVERY);
            let (Some(n), Some(s)) = (n.upgrade(), s.upgrade()) else {
                return;
            };
            if n.followed() > 0 {
                n.scan(&s);
            }
        });
    if let Err(e) = spawned {
        log::error!(
            "notices: cannot start the thread that tells customers their top-up was delivered: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_that_stops_reading_keeps_at_most_its_capacity_and_learns_what_it_missed() {
        let n = Notifier::with_capacity(8);
        let feed = n.subscribe("C-1");
        feed.set_progress(true);
        for i in 0..100 {
            n.customer(
                "C-1",
                &Notice::LowCredit {
                    meter: "M1".into(),
                    balance_minor: i,
                    at: 1,
                },
            );
        }
        assert_eq!(feed.len(), 8);
        assert!(
            matches!(feed.try_recv(), Ok(Notice::Missed { count: 93, .. })),
            "the count of what was dropped comes first"
        );
        assert!(matches!(
            feed.try_recv(),
            Ok(Notice::LowCredit {
                balance_minor: 93,
                ..
            })
        ));
        // A feed whose reader left is forgotten at the next notice.
        drop(feed);
        n.customer(
            "C-1",
            &Notice::SupplyCut {
                meter: "M1".into(),
                at: 2,
            },
        );
        assert!(lock(&n.subs).is_empty());
    }
}
