//! Faults that a test injects into a simulated device's behaviour.

use std::time::Duration;

/// A fault applied to a device's replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The device does not answer at all.
    Silence,
    /// The device answers with this many bytes of noise instead of its reply.
    Garbage {
        /// How many bytes of noise.
        len: usize,
    },
    /// One byte of the reply is XORed with `mask` (a corrupted byte; checksums must catch it).
    CorruptByte {
        /// Which byte of the reply (taken modulo the reply's length).
        index: usize,
        /// The bits flipped.
        mask: u8,
    },
    /// The reply comes this much later than the device would send it.
    Late {
        /// Extra latency.
        extra: Duration,
    },
    /// The reply stops after this many bytes (a device reset mid-reply).
    Truncate {
        /// Bytes sent before stopping.
        keep: usize,
    },
    /// The device answers every frame, even those for other addresses, with its own reply to that
    /// frame (if it has one) or with what the addressed device would say: two devices answering at once.
    /// The bus merges overlapping replies as the line would (a wired AND of the bits).
    AnswerAll,
}

/// A fault and how many more replies it applies to.
#[derive(Debug, Clone)]
pub(crate) struct ActiveFault {
    pub fault: Fault,
    /// `None`: until cleared.
    pub remaining: Option<u32>,
}
