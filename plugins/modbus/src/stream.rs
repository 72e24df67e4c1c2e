//! Finding frames in bytes as they arrive: the completion check the bus host calls after every chunk
//! (so an exchange ends at the last byte rather than after a silent interval), and resynchronisation
//! past garbage.

use crate::frame::{frame_len, Direction, FrameError, RequestAdu, ResponseAdu};

/// Whether the bytes received so far hold a whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// A whole frame with a good CRC ends after this many bytes.
    Complete(usize),
    /// Not yet.
    NeedMore,
    /// The bytes cannot become a valid frame; stop listening and resynchronise with [`scan`].
    Invalid(FrameError),
}

impl Completeness {
    /// True when the host can stop listening.
    pub fn is_done(&self) -> bool {
        !matches!(self, Completeness::NeedMore)
    }
}

fn complete(bytes: &[u8], direction: Direction) -> Completeness {
    let len = match frame_len(bytes, direction) {
        Ok(Some(len)) => len,
        Ok(None) => return Completeness::NeedMore,
        Err(err) => return Completeness::Invalid(err),
    };
    if bytes.len() < len {
        return Completeness::NeedMore;
    }
    let decoded = match direction {
        Direction::Request => RequestAdu::decode(bytes).map(|(_, len)| len),
        Direction::Response => ResponseAdu::decode(bytes).map(|(_, len)| len),
    };
    match decoded {
        Ok(len) => Completeness::Complete(len),
        Err(err) => Completeness::Invalid(err),
    }
}

/// The incremental completion check for a reply: by function code and byte count (03, 04), fixed
/// length (06, 16), or 5 bytes for an exception; then the CRC.
pub fn reply_complete(bytes: &[u8]) -> Completeness {
    complete(bytes, Direction::Response)
}

/// The completion check for a request (what a slave, or the emulator, listens for).
pub fn request_complete(bytes: &[u8]) -> Completeness {
    complete(bytes, Direction::Request)
}

/// The result of scanning a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid frame at `start`, `len` bytes long.
    Found {
        /// Offset of the frame.
        start: usize,
        /// Its length.
        len: usize,
    },
    /// No whole frame yet; bytes before `keep_from` can be dropped.
    NeedMore {
        /// The earliest offset that may still start a frame.
        keep_from: usize,
    },
}

/// Scans for the first valid frame in `direction` from `slave` (any slave if `None`), trying every
/// offset: RTU has no start byte, so a good CRC over a plausible length is what marks a frame.
pub fn scan(bytes: &[u8], direction: Direction, slave: Option<u8>) -> Scan {
    let mut keep_from = None;
    for start in 0..bytes.len() {
        if slave.is_some_and(|s| bytes[start] != s) {
            continue;
        }
        match complete(&bytes[start..], direction) {
            Completeness::Complete(len) => return Scan::Found { start, len },
            Completeness::NeedMore => {
                keep_from.get_or_insert(start);
            }
            Completeness::Invalid(_) => {}
        }
    }
    Scan::NeedMore {
        keep_from: keep_from.unwrap_or(bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: [u8; 9] = [0x01, 0x04, 0x04, 0x43, 0x66, 0x80, 0x00, 0x6F, 0xDF];

    #[test]
    fn completes_at_every_split() {
        for cut in 0..REPLY.len() {
            assert_eq!(
                reply_complete(&REPLY[..cut]),
                Completeness::NeedMore,
                "cut at {cut}"
            );
        }
        assert_eq!(reply_complete(&REPLY), Completeness::Complete(9));
        assert_eq!(
            reply_complete(&[0x01, 0x84, 0x02, 0xC2, 0xC1]),
            Completeness::Complete(5)
        );
        assert!(matches!(
            reply_complete(&[0x01, 0x2B]),
            Completeness::Invalid(FrameError::Function(0x2B))
        ));
    }

    #[test]
    fn finds_a_reply_after_garbage() {
        let mut bytes = vec![0x00, 0x01, 0x04, 0xFF, 0x13];
        bytes.extend_from_slice(&REPLY);
        assert_eq!(
            scan(&bytes, Direction::Response, Some(1)),
            Scan::Found { start: 5, len: 9 }
        );
        assert_eq!(
            scan(&bytes[..8], Direction::Response, Some(1)),
            Scan::NeedMore { keep_from: 5 }
        );
    }
}
