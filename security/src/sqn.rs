//! Sequence-number freshness for AKA, as TS 33.102 Annex C describes it.
//!
//! SQN (48 bits) = SEQ (43 bits) || IND (5 bits). The server side keeps one SEQ counter per subscriber and
//! gives each new vector the next SEQ with the next IND ([`SqnGenerator`]). The meter side keeps an array
//! of the highest SEQ accepted per IND value and accepts an SQN when its SEQ is above the entry for its IND
//! and not too far above the highest SEQ accepted so far (the limit Δ, which stops an attacker from
//! exhausting the SQN space with one captured vector) ([`SqnWindow`]). Rejections lead to resynchronisation:
//! the meter sends AUTS carrying SQN_MS, the server resumes above it.
//!
//! Check MAC-A before calling [`SqnWindow::check`]: an unauthenticated SQN must not cause a
//! resynchronisation nor change state (see [`crate::aka`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bits of IND in SQN.
pub const IND_BITS: u32 = 5;
/// Entries of the IND array.
pub const IND_SLOTS: usize = 1 << IND_BITS;
/// Largest SQN (48 bits).
pub const SQN_MAX: u64 = (1 << 48) - 1;
/// Largest SEQ (43 bits).
pub const SEQ_MAX: u64 = SQN_MAX >> IND_BITS;
/// Default Δ: how far above the highest accepted SEQ a new SEQ may be (2^28, the value TS 33.102 C.2.1 suggests).
pub const DEFAULT_DELTA: u64 = 1 << 28;

/// A 48-bit sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sqn(u64);

impl Sqn {
    /// From SEQ and IND; `None` if either does not fit.
    pub fn new(seq: u64, ind: u8) -> Option<Self> {
        if seq > SEQ_MAX || usize::from(ind) >= IND_SLOTS {
            return None;
        }
        Some(Sqn((seq << IND_BITS) | u64::from(ind)))
    }

    /// From the 6 octets of SQN as AUTN and AUTS carry it.
    pub fn from_bytes(b: &[u8; 6]) -> Self {
        Sqn(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// The 6 octets.
    pub fn to_bytes(self) -> [u8; 6] {
        let be = self.0.to_be_bytes();
        [be[2], be[3], be[4], be[5], be[6], be[7]]
    }

    /// SEQ, the high 43 bits.
    pub fn seq(self) -> u64 {
        self.0 >> IND_BITS
    }

    /// IND, the low 5 bits.
    pub fn ind(self) -> u8 {
        (self.0 & (IND_SLOTS as u64 - 1)) as u8
    }

    /// The 48-bit value.
    pub fn value(self) -> u64 {
        self.0
    }
}

/// Why the meter side refused an SQN; either way the answer is a synchronisation failure with AUTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SqnError {
    /// SEQ is not above the last one accepted with the same IND: a replay or a vector used out of order.
    #[error("SQN replayed or out of order: SEQ {seq} is not above {last} already accepted for IND {ind}; resynchronise with AUTS")]
    Replay {
        /// The SEQ received.
        seq: u64,
        /// Its IND.
        ind: u8,
        /// The highest SEQ accepted for that IND.
        last: u64,
    },
    /// SEQ jumps more than Δ above the highest SEQ accepted.
    #[error("SQN too far ahead: SEQ {seq} is more than {delta} above the highest accepted {highest}; resynchronise with AUTS")]
    TooFarAhead {
        /// The SEQ received.
        seq: u64,
        /// The highest SEQ accepted.
        highest: u64,
        /// The limit Δ.
        delta: u64,
    },
}

/// The meter side's SQN state: the IND array and the limit Δ. Serialisable so the gateway can store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqnWindow {
    seq_ms: [u64; IND_SLOTS],
    /// The SQN of the highest SEQ accepted (SQN_MS for AUTS).
    highest: u64,
    delta: u64,
}

impl Default for SqnWindow {
    fn default() -> Self {
        SqnWindow::new(DEFAULT_DELTA)
    }
}

impl SqnWindow {
    /// A fresh window (nothing accepted yet) with the limit Δ.
    pub fn new(delta: u64) -> Self {
        SqnWindow {
            seq_ms: [0; IND_SLOTS],
            highest: 0,
            delta,
        }
    }

    /// Whether `sqn` would be accepted; changes nothing.
    pub fn check(&self, sqn: Sqn) -> Result<(), SqnError> {
        let (seq, ind) = (sqn.seq(), sqn.ind());
        let last = self.seq_ms[usize::from(ind)];
        if seq <= last {
            return Err(SqnError::Replay { seq, ind, last });
        }
        let highest = Sqn(self.highest).seq();
        if seq > highest && seq - highest > self.delta {
            return Err(SqnError::TooFarAhead {
                seq,
                highest,
                delta: self.delta,
            });
        }
        Ok(())
    }

    /// Checks `sqn` and, if it is fresh, records it.
    pub fn accept(&mut self, sqn: Sqn) -> Result<(), SqnError> {
        self.check(sqn)?;
        self.seq_ms[usize::from(sqn.ind())] = sqn.seq();
        if sqn.seq() > Sqn(self.highest).seq() {
            self.highest = sqn.value();
        }
        Ok(())
    }

    /// SQN_MS: the highest SQN accepted, which AUTS carries to the server.
    pub fn sqn_ms(&self) -> Sqn {
        Sqn(self.highest)
    }
}

/// Why the server side could not produce a fresh SQN.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SqnGenError {
    /// SEQ reached 2^43 - 1: the subscriber needs a new K (this does not happen in practice).
    #[error("SEQ space exhausted for this subscriber: provision a new key K")]
    Exhausted,
}

/// The server side's per-subscriber SQN state (SEQ_HE and the next IND). Serialisable for the head-end's store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SqnGenerator {
    seq_he: u64,
    next_ind: u8,
}

impl SqnGenerator {
    /// A generator for a new subscriber.
    pub fn new() -> Self {
        SqnGenerator::default()
    }

    /// The next fresh SQN: SEQ_HE + 1 with the next IND in turn.
    pub fn next_sqn(&mut self) -> Result<Sqn, SqnGenError> {
        if self.seq_he >= SEQ_MAX {
            return Err(SqnGenError::Exhausted);
        }
        self.seq_he += 1;
        let ind = self.next_ind;
        self.next_ind = ((usize::from(ind) + 1) % IND_SLOTS) as u8;
        Sqn::new(self.seq_he, ind).ok_or(SqnGenError::Exhausted)
    }

    /// After a verified AUTS: continue above the meter's SQN_MS (never go backwards).
    pub fn resync(&mut self, sqn_ms: Sqn) {
        self.seq_he = self.seq_he.max(sqn_ms.seq());
    }

    /// The highest SEQ handed out.
    pub fn seq_he(&self) -> u64 {
        self.seq_he
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqn(seq: u64, ind: u8) -> Sqn {
        Sqn::new(seq, ind).unwrap()
    }

    #[test]
    fn bytes_round_trip() {
        let s = Sqn::from_bytes(&[0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07]);
        assert_eq!(s.to_bytes(), [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07]);
        assert_eq!(Sqn::new(s.seq(), s.ind()), Some(s));
        assert_eq!(Sqn::new(SEQ_MAX + 1, 0), None);
        assert_eq!(Sqn::new(0, 32), None);
    }

    #[test]
    fn accepts_in_order_and_out_of_order_across_ind() {
        let mut w = SqnWindow::default();
        let mut g = SqnGenerator::new();
        let a = g.next_sqn().unwrap();
        let b = g.next_sqn().unwrap();
        let c = g.next_sqn().unwrap();
        // Vectors used out of order are fine as long as each IND slot moves up.
        w.accept(c).unwrap();
        w.accept(a).unwrap();
        w.accept(b).unwrap();
        assert_eq!(w.sqn_ms(), c);
    }

    #[test]
    fn replay_is_rejected_and_changes_nothing() {
        let mut w = SqnWindow::default();
        w.accept(sqn(5, 3)).unwrap();
        let before = w.clone();
        assert_eq!(
            w.accept(sqn(5, 3)),
            Err(SqnError::Replay {
                seq: 5,
                ind: 3,
                last: 5
            })
        );
        assert_eq!(
            w.accept(sqn(4, 3)),
            Err(SqnError::Replay {
                seq: 4,
                ind: 3,
                last: 5
            })
        );
        assert_eq!(w, before);
        w.accept(sqn(4, 2)).unwrap();
    }

    #[test]
    fn jump_beyond_delta_is_rejected() {
        let mut w = SqnWindow::new(100);
        w.accept(sqn(10, 0)).unwrap();
        assert!(matches!(
            w.accept(sqn(111, 1)),
            Err(SqnError::TooFarAhead { .. })
        ));
        w.accept(sqn(110, 1)).unwrap();
    }

    #[test]
    fn resync_moves_the_server_above_sqn_ms() {
        let mut w = SqnWindow::default();
        w.accept(sqn(1000, 0)).unwrap();
        let mut g = SqnGenerator::new();
        let stale = g.next_sqn().unwrap();
        assert!(w.check(stale).is_err());
        g.resync(w.sqn_ms());
        let fresh = g.next_sqn().unwrap();
        assert!(fresh.seq() > 1000);
        w.accept(fresh).unwrap();
        // Resync never moves the server backwards.
        g.resync(sqn(3, 0));
        assert!(g.next_sqn().unwrap().seq() > fresh.seq());
    }
}
