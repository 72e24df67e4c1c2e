//! A bounded queue of [`Notice`]s from the payment server to one watching connection.
//!
//! A phone that stops reading (a stalled socket, a frozen app) must not make the server keep every
//! notice for it: the queue holds at most its capacity, drops the oldest beyond it, and puts a
//! [`Notice::Missed`] with the number dropped at its head, so the phone knows to reload its history
//! instead of showing a partial one.
//!
//! The steps of a purchase ([`Notice::is_progress`]) and [`Notice::Missed`] are queued only once the
//! reader asked for them ([`NoticeFeed::set_progress`]): readers written before those kinds existed
//! (the head-end's own tests, older connections) see exactly what they saw before.

use std::collections::VecDeque;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::Notice;

/// Notices a feed keeps for a reader that is behind, unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 64;

#[derive(Debug)]
struct State {
    queue: VecDeque<Notice>,
    /// Dropped since the reader last took the [`Notice::Missed`] at the head.
    missed: u64,
    progress: bool,
    senders: usize,
    reader: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing end (kept by the payment server's notifier). Cloning makes another writer; the feed
/// reports disconnection once every writer is gone.
#[derive(Debug)]
pub struct NoticeSender {
    shared: Arc<Shared>,
}

/// The reading end (kept by the connection that watches).
#[derive(Debug)]
pub struct NoticeFeed {
    shared: Arc<Shared>,
}

/// The reader is gone: the notice was not queued, and this sender can be forgotten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the watching connection is gone")]
pub struct Closed;

/// A feed that keeps at most `capacity` notices (at least 2: the [`Notice::Missed`] and one more).
pub fn feed(capacity: usize) -> (NoticeSender, NoticeFeed) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            missed: 0,
            progress: false,
            senders: 1,
            reader: true,
        }),
        ready: Condvar::new(),
        capacity: capacity.max(2),
    });
    (
        NoticeSender {
            shared: shared.clone(),
        },
        NoticeFeed { shared },
    )
}

fn unix_now() -> u64 {
    crate::now_unix()
}

impl NoticeSender {
    /// Queues `notice`, dropping the oldest if the queue is full (and counting it as missed).
    pub fn send(&self, notice: Notice) -> Result<(), Closed> {
        let mut s = self.shared.lock();
        if !s.reader {
            return Err(Closed);
        }
        let late_kind = notice.is_progress() || matches!(notice, Notice::Missed { .. });
        if late_kind && !s.progress {
            return Ok(());
        }
        let cap = self.shared.capacity;
        if s.queue.len() >= cap {
            if s.progress {
                // The head becomes (or stays) the running count of what was dropped; the oldest real
                // notices make room for it and for the new one.
                let head_is_missed = matches!(s.queue.front(), Some(Notice::Missed { .. }));
                let (keep, room) = if head_is_missed { (1, 1) } else { (0, 2) };
                while s.queue.len() + room > cap && s.queue.len() > keep {
                    s.queue.remove(keep);
                    s.missed += 1;
                }
                let missed = Notice::Missed {
                    count: s.missed,
                    at: unix_now(),
                };
                match s.queue.front_mut() {
                    Some(head) if head_is_missed => *head = missed,
                    _ => s.queue.push_front(missed),
                }
            } else {
                // A reader that cannot be told: the oldest goes.
                s.queue.pop_front();
            }
        }
        s.queue.push_back(notice);
        drop(s);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Whether the reader is still there.
    pub fn is_open(&self) -> bool {
        self.shared.lock().reader
    }
}

impl Clone for NoticeSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        NoticeSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for NoticeSender {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.senders = s.senders.saturating_sub(1);
        drop(s);
        self.shared.ready.notify_all();
    }
}

impl Drop for NoticeFeed {
    fn drop(&mut self) {
        self.shared.lock().reader = false;
    }
}

impl NoticeFeed {
    /// Also queue the steps of a purchase (delivered, delayed) and, when notices had to be dropped,
    /// a [`Notice::Missed`].
    pub fn set_progress(&self, on: bool) {
        self.shared.lock().progress = on;
    }

    fn take(s: &mut State) -> Option<Notice> {
        let n = s.queue.pop_front()?;
        if matches!(n, Notice::Missed { .. }) {
            s.missed = 0;
        }
        Some(n)
    }

    /// The next notice if one is queued (the same errors as [`std::sync::mpsc::Receiver::try_recv`]).
    pub fn try_recv(&self) -> Result<Notice, TryRecvError> {
        let mut s = self.shared.lock();
        match Self::take(&mut s) {
            Some(n) => Ok(n),
            None if s.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next notice, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Notice, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        loop {
            if let Some(n) = Self::take(&mut s) {
                return Ok(n);
            }
            if s.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            s = self
                .shared
                .ready
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Notices queued now.
    pub fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn low(n: i64) -> Notice {
        Notice::LowCredit {
            meter: "M1".into(),
            balance_minor: n,
            at: 1,
        }
    }

    #[test]
    fn a_reader_that_falls_behind_gets_the_newest_and_a_count_of_the_rest() {
        let (tx, rx) = feed(4);
        rx.set_progress(true);
        for i in 0..10 {
            tx.send(low(i)).unwrap();
        }
        assert_eq!(rx.len(), 4, "bounded");
        match rx.try_recv().unwrap() {
            Notice::Missed { count, .. } => assert_eq!(count, 7),
            other => panic!("{other:?}"),
        }
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(rest, vec![low(7), low(8), low(9)]);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        // The count starts again once read.
        for i in 0..5 {
            tx.send(low(i)).unwrap();
        }
        assert!(matches!(rx.try_recv(), Ok(Notice::Missed { count: 2, .. })));
    }

    #[test]
    fn old_readers_get_no_new_kinds_and_are_still_bounded() {
        let (tx, rx) = feed(3);
        tx.send(Notice::Delivered {
            meter: "M1".into(),
            serial: 1,
            at: 1,
        })
        .unwrap();
        assert!(rx.is_empty(), "progress only when asked for");
        for i in 0..5 {
            tx.send(low(i)).unwrap();
        }
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got, vec![low(2), low(3), low(4)]);
    }

    #[test]
    fn ends_are_reported() {
        let (tx, rx) = feed(4);
        let tx2 = tx.clone();
        drop(tx);
        tx2.send(low(1)).unwrap();
        drop(tx2);
        assert_eq!(rx.try_recv(), Ok(low(1)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Disconnected)
        );
        let (tx, rx) = feed(4);
        drop(rx);
        assert_eq!(tx.send(low(1)), Err(Closed));
    }
}
