//! Cutting a byte stream from the coordinator into MT frames, resynchronising after garbage: bytes
//! before a SOF are skipped, and a SOF whose frame fails its checks (reserved command type, length
//! above the limit, bad FCS) is dropped and the search restarts at the next byte, so a frame that
//! follows garbage containing 0xFE is still found.

use super::frame::{FrameError, MtFrame, SOF};

/// An incremental MT frame reader.
#[derive(Debug, Default, Clone)]
pub struct FrameReader {
    buffer: Vec<u8>,
    skipped: u64,
    rejected: u64,
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A whole, checked frame.
    Frame(MtFrame),
    /// A SOF whose frame failed its checks; the reader moved past it.
    Rejected(FrameError),
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        FrameReader::default()
    }

    /// Adds received bytes. Take the frames out with [`FrameReader::next_frame`] until it returns
    /// `None` after each push: then at most one partial frame (under 256 bytes) stays buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next frame (or rejected candidate), `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Read> {
        let Some(start) = self.buffer.iter().position(|&b| b == SOF) else {
            self.skipped += self.buffer.len() as u64;
            self.buffer.clear();
            return None;
        };
        if start > 0 {
            self.skipped += start as u64;
            self.buffer.drain(..start);
        }
        match MtFrame::decode_prefix(&self.buffer) {
            Ok((frame, used)) => {
                self.buffer.drain(..used);
                Some(Read::Frame(frame))
            }
            Err(FrameError::Truncated { .. }) => None,
            Err(e) => {
                self.rejected += 1;
                self.buffer.drain(..1);
                Some(Read::Rejected(e))
            }
        }
    }

    /// Gives up on the partial frame at the front (the line went quiet before it was whole, so its
    /// SOF was most likely garbage): drops that SOF so that [`FrameReader::next_frame`] searches again
    /// from the next byte. Returns false when nothing was pending.
    pub fn skip_partial(&mut self) -> bool {
        if self.buffer.is_empty() {
            return false;
        }
        self.rejected += 1;
        self.buffer.drain(..1);
        true
    }

    /// Bytes thrown away outside any frame so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// SOF bytes whose frame failed its checks so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Bytes waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Forgets buffered bytes (after the coordinator reset).
    pub fn clear(&mut self) {
        self.buffer.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PING_RSP: [u8; 7] = [0xFE, 0x02, 0x61, 0x01, 0x59, 0x06, 0x3D];

    fn frames(reader: &mut FrameReader) -> Vec<MtFrame> {
        let mut out = Vec::new();
        while let Some(read) = reader.next_frame() {
            if let Read::Frame(f) = read {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn split_at_every_byte() {
        for cut in 0..PING_RSP.len() {
            let mut reader = FrameReader::new();
            reader.push(&PING_RSP[..cut]);
            assert!(frames(&mut reader).is_empty(), "cut {cut}");
            reader.push(&PING_RSP[cut..]);
            assert_eq!(frames(&mut reader).len(), 1, "cut {cut}");
        }
    }

    #[test]
    fn resynchronises_after_garbage_holding_sof() {
        let mut reader = FrameReader::new();
        let mut bytes = vec![0x00, 0x13, 0xFE, 0x03, 0x99, 0xFE, 0xFE];
        bytes.extend_from_slice(&PING_RSP);
        bytes.extend_from_slice(&[0x55]);
        bytes.extend_from_slice(&PING_RSP);
        reader.push(&bytes);
        assert_eq!(frames(&mut reader).len(), 2);
        assert!(reader.rejected() > 0);
        assert_eq!(reader.pending(), 0);
    }

    #[test]
    fn endless_garbage_stays_bounded() {
        let mut reader = FrameReader::new();
        for _ in 0..100 {
            reader.push(&[0xFE, 0xF0, 0x21, 0x01]);
            let _ = frames(&mut reader);
            reader.push(&[0x11; 300]);
            let _ = frames(&mut reader);
        }
        assert!(reader.pending() < super::super::frame::MAX_DATA + super::super::frame::OVERHEAD);
    }
}
