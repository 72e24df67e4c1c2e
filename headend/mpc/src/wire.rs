//! Framing between the phone and the payment server: every message is a u32 big-endian length followed
//! by that many octets of CBOR (docs/protocol.md, *Phone client and payment server*).
//!
//! [`FrameDecoder`] is sans-IO: it takes whatever octets arrived and hands back whole frames, so a read
//! that stops in the middle of a frame (a read timeout, a TLS record boundary) loses nothing.
//! [`Conn`] is the thin driver over any `Read + Write` (a TLS stream in practice).

use std::io::{self, Read, Write};

use thiserror::Error;

/// Longest message either end accepts (the length prefix excluded). A list of 100 purchases with their
/// tokens and certificate chains fits with room to spare.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;
/// Octets of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Why the framing layer gave up on a connection.
#[derive(Debug, Error)]
pub enum WireError {
    /// The length prefix announces more than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} octets announced, more than the {max}-octet limit: the peer is not speaking this protocol, or is broken")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A length prefix of zero: no message is empty.
    #[error("empty message (length prefix 0): the peer is not speaking this protocol")]
    Empty,
    /// The connection ended inside a frame.
    #[error("connection closed after {got} of {want} octets of a message: the message was cut")]
    Truncated {
        /// Octets received of the frame (prefix included).
        got: usize,
        /// Octets the frame needed.
        want: usize,
    },
    /// The connection ended between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The transport failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
}

/// Assembles frames from octets as they arrive.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Octets of `buf` already handed out as frames.
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// Adds octets received.
    pub fn push(&mut self, octets: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(octets);
    }

    /// The next whole frame's payload, `Ok(None)` if more octets are needed, or an error that ends the
    /// connection (the stream cannot be resynchronised after a bad prefix).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len == 0 {
            return Err(WireError::Empty);
        }
        if len > MAX_MESSAGE_LEN {
            return Err(WireError::TooLong {
                len,
                max: MAX_MESSAGE_LEN,
            });
        }
        let Some(payload) = pending.get(PREFIX_LEN..PREFIX_LEN + len) else {
            return Ok(None);
        };
        let frame = payload.to_vec();
        self.start += PREFIX_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Octets received that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The error for a connection that ends now: [`WireError::Closed`] between frames, else
    /// [`WireError::Truncated`].
    pub fn end_of_stream(&self) -> WireError {
        let pending = &self.buf[self.start..];
        if pending.is_empty() {
            return WireError::Closed;
        }
        let want = match pending.first_chunk::<PREFIX_LEN>() {
            Some(p) => PREFIX_LEN + u32::from_be_bytes(*p) as usize,
            None => PREFIX_LEN,
        };
        WireError::Truncated {
            got: pending.len(),
            want,
        }
    }
}

/// The length prefix and the payload, ready to write.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.is_empty() {
        return Err(WireError::Empty);
    }
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_MESSAGE_LEN)
        .ok_or(WireError::TooLong {
            len: payload.len(),
            max: MAX_MESSAGE_LEN,
        })?;
    let mut out = Vec::with_capacity(PREFIX_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// A framed connection over a stream.
#[derive(Debug)]
pub struct Conn<S> {
    stream: S,
    decoder: FrameDecoder,
}

impl<S: Read + Write> Conn<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            decoder: FrameDecoder::new(),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Writes one message.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), WireError> {
        self.send_framed(&frame(payload)?)
    }

    /// Writes octets that are already framed (or, in tests, deliberately not).
    pub fn send_framed(&mut self, octets: &[u8]) -> Result<(), WireError> {
        self.stream.write_all(octets)?;
        self.stream.flush()?;
        Ok(())
    }

    /// The next message. `Ok(None)` when the stream's read timeout passed with no whole message (what
    /// arrived so far is kept for the next call).
    pub fn receive(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(self.decoder.end_of_stream()),
                Ok(n) => self.decoder.push(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether an I/O error is a read or write timeout (`WouldBlock` on Linux sockets).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_every_octet_come_out_whole() {
        let mut octets = frame(b"hello").unwrap();
        octets.extend(frame(&[7u8; 300]).unwrap());
        for cut in 0..=octets.len() {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for part in [&octets[..cut], &octets[cut..]] {
                d.push(part);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, vec![b"hello".to_vec(), vec![7u8; 300]], "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversize_and_empty_prefixes_are_refused_before_the_payload() {
        let mut d = FrameDecoder::new();
        d.push(&((MAX_MESSAGE_LEN as u32) + 1).to_be_bytes());
        assert!(matches!(d.next_frame(), Err(WireError::TooLong { .. })));
        let mut d = FrameDecoder::new();
        d.push(&[0, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(WireError::Empty)));
        assert!(matches!(frame(&[]), Err(WireError::Empty)));
    }

    #[test]
    fn end_of_stream_says_whether_a_frame_was_cut() {
        let mut d = FrameDecoder::new();
        assert!(matches!(d.end_of_stream(), WireError::Closed));
        d.push(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert!(matches!(
            d.end_of_stream(),
            WireError::Truncated { got: 6, want: 13 }
        ));
    }
}
