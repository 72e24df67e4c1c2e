//! Finding frames in bytes as they arrive: the completion check the bus host calls after every chunk,
//! and resynchronisation past garbage (line noise, a late reply, a half frame).

use crate::frame::{Decoded, Frame, FrameError, OVERHEAD, PREAMBLE, START};

/// Whether the bytes received so far hold a whole reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// A whole, valid frame ends after this many bytes (preamble included).
    Complete(usize),
    /// The frame has not ended yet; keep listening.
    NeedMore,
    /// The bytes cannot become a valid frame; stop listening and resynchronise with [`scan`].
    Invalid(FrameError),
}

impl Completeness {
    /// True when the host can stop listening ([`Completeness::Complete`] or [`Completeness::Invalid`]).
    pub fn is_done(&self) -> bool {
        !matches!(self, Completeness::NeedMore)
    }
}

/// The incremental completion check: skips leading `FE`, requires `68` next, reads the length byte and
/// waits for `12 + L` bytes, then checks the checksum and the end byte.
///
/// Cheap enough to call after every received byte; it never panics.
pub fn reply_complete(bytes: &[u8]) -> Completeness {
    match Frame::decode(bytes) {
        Ok(decoded) => Completeness::Complete(decoded.len),
        Err(FrameError::Empty { .. } | FrameError::Truncated { .. }) => Completeness::NeedMore,
        Err(err) => Completeness::Invalid(err),
    }
}

/// The result of scanning a buffer for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid frame starts at `start` (its `68`, or the first of its `FE`s) and is `len` bytes long.
    Found {
        /// Offset of the frame (bytes before it are garbage).
        start: usize,
        /// Its length, from `start`.
        len: usize,
    },
    /// No whole frame yet. Bytes before `keep_from` can never be part of one and may be dropped.
    NeedMore {
        /// Offset of the earliest byte that may still start a frame.
        keep_from: usize,
    },
}

/// Scans `bytes` for the first valid frame, skipping garbage: every `68` is tried as a start, so a
/// frame is found after noise, after a truncated frame, or inside bytes that only looked like a frame.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut keep_from = None;
    // The `FE` bytes right before a start belong to its frame.
    let preamble_start = |start: usize| {
        bytes[..start]
            .iter()
            .rposition(|&b| b != PREAMBLE)
            .map_or(0, |i| i + 1)
    };
    for start in (0..bytes.len()).filter(|&i| bytes[i] == START) {
        match Frame::decode(&bytes[start..]) {
            Ok(decoded) => {
                let first = preamble_start(start);
                return Scan::Found {
                    start: first,
                    len: start - first + decoded.len,
                };
            }
            Err(FrameError::Truncated { .. }) => {
                keep_from.get_or_insert(preamble_start(start));
            }
            Err(_) => {}
        }
    }
    // A buffer of only FE bytes (or ending in them) may still become a frame.
    let trailing_preamble = bytes.iter().rev().take_while(|&&b| b == PREAMBLE).count();
    Scan::NeedMore {
        keep_from: keep_from.unwrap_or(bytes.len() - trailing_preamble),
    }
}

/// Decodes the first valid frame in `bytes`, skipping garbage before it. When there is none, the
/// error is the one the bytes from the first plausible start give (what a person reading the capture
/// would want to know).
pub fn decode_first(bytes: &[u8]) -> Result<(usize, Decoded), FrameError> {
    match scan(bytes) {
        Scan::Found { start, .. } => Frame::decode(&bytes[start..]).map(|d| (start, d)),
        Scan::NeedMore { .. } => Err(Frame::decode(bytes)
            .err()
            .unwrap_or(FrameError::Empty { preamble: 0 })),
    }
}

/// A receive buffer that collects bytes and hands out whole frames, resynchronising after garbage.
#[derive(Debug, Default, Clone)]
pub struct FrameBuffer {
    buffer: Vec<u8>,
    discarded: usize,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        FrameBuffer::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. Garbage before it is dropped and counted.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match scan(&self.buffer) {
            Scan::Found { start, len } => {
                let frame = Frame::decode(&self.buffer[start..start + len])
                    .ok()
                    .map(|d| d.frame);
                self.discarded += start;
                self.buffer.drain(..start + len);
                frame
            }
            Scan::NeedMore { keep_from } => {
                self.discarded += keep_from;
                self.buffer.drain(..keep_from);
                None
            }
        }
    }

    /// Bytes dropped as garbage so far.
    pub fn discarded(&self) -> usize {
        self.discarded
    }

    /// Bytes held, waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// The shortest possible frame (no data), preamble excluded.
pub const MIN_FRAME: usize = OVERHEAD;

#[cfg(test)]
mod tests {
    use super::*;

    const READ_REPLY: &str = "FEFEFEFE68010000000000689108333333339A785634D216";

    fn bytes(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    #[test]
    fn completes_at_every_split() {
        let frame = bytes(READ_REPLY);
        for cut in 0..frame.len() {
            assert_eq!(
                reply_complete(&frame[..cut]),
                Completeness::NeedMore,
                "cut at {cut}"
            );
        }
        assert_eq!(reply_complete(&frame), Completeness::Complete(frame.len()));
        let mut longer = frame.clone();
        longer.extend_from_slice(&[0x00, 0x68]);
        assert_eq!(reply_complete(&longer), Completeness::Complete(frame.len()));
    }

    #[test]
    fn invalid_as_soon_as_it_cannot_be_a_frame() {
        assert!(matches!(
            reply_complete(&[0xFE, 0x00]),
            Completeness::Invalid(_)
        ));
        let mut frame = bytes(READ_REPLY);
        let cs = frame.len() - 2;
        frame[cs] ^= 1;
        assert!(matches!(
            reply_complete(&frame),
            Completeness::Invalid(FrameError::Checksum { .. })
        ));
    }

    #[test]
    fn resynchronises_after_garbage_and_a_broken_frame() {
        let frame = bytes(READ_REPLY);
        let mut noisy = vec![0x00, 0x68, 0x12, 0xFF, 0x68];
        noisy.extend_from_slice(&frame[4..10]); // a frame cut off
        noisy.extend_from_slice(&frame);
        let start = noisy.len() - frame.len();
        assert_eq!(
            scan(&noisy),
            Scan::Found {
                start,
                len: frame.len()
            }
        );

        let mut buffer = FrameBuffer::new();
        for chunk in noisy.chunks(3) {
            buffer.push(chunk);
            if let Some(found) = buffer.next_frame() {
                assert_eq!(found.data, vec![0, 0, 0, 0, 0x67, 0x45, 0x23, 0x01]);
                assert_eq!(buffer.pending(), 0);
                return;
            }
        }
        panic!("no frame found");
    }

    #[test]
    fn need_more_keeps_a_possible_start() {
        assert_eq!(
            scan(&[0x01, 0x02, 0xFE, 0xFE]),
            Scan::NeedMore { keep_from: 2 }
        );
        assert_eq!(scan(&[0x01, 0x68, 0x01]), Scan::NeedMore { keep_from: 1 });
        assert_eq!(scan(&[]), Scan::NeedMore { keep_from: 0 });
    }
}
