//! The isolated mode's wire format: length-prefixed frames over a Unix socket pair.
//!
//! A frame is a little-endian `u32` length, then that many bytes: a one-byte frame type and its fields.
//! Fields are fixed-width little-endian integers and length-prefixed (`u32`) byte strings. The parent
//! treats every byte from the child as untrusted: a frame longer than [`MAX_FRAME_LEN`], a truncated
//! field or an unknown type is a protocol violation and the child is killed.

use std::io::{self, Read, Write};

/// The protocol version the child states in its hello. Bumped on any change to a frame's layout.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest frame either side accepts.
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Frame types.
pub mod frame {
    /// Child → parent, once: protocol version and the plugin's declaration.
    pub const HELLO: u8 = 1;
    /// Child → parent, any time during a call: one log record of the plugin.
    pub const LOG: u8 = 2;
    /// Child → parent: the answer to the call in progress.
    pub const REPLY: u8 = 3;
    /// Child → parent, instead of a hello: the plugin could not be loaded, with the reason.
    pub const REFUSED: u8 = 4;
    /// Parent → child: open a meter.
    pub const OPEN: u8 = 10;
    /// Parent → child: begin a task.
    pub const BEGIN: u8 = 11;
    /// Parent → child: is this reply complete?
    pub const IS_COMPLETE: u8 = 12;
    /// Parent → child: finish an exchange.
    pub const FINISH: u8 = 13;
    /// Parent → child: close a meter.
    pub const CLOSE: u8 = 14;
}

/// Builds one frame.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A frame of type `kind`.
    pub fn new(kind: u8) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        Writer { buf }
    }

    /// Appends a byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.buf.push(v);
        self
    }

    /// Appends a `u32`.
    pub fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a `u64`.
    pub fn u64(mut self, v: u64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends an `i64`.
    pub fn i64(mut self, v: i64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a length-prefixed byte string (cut at [`MAX_FRAME_LEN`] / 2).
    pub fn bytes(mut self, v: &[u8]) -> Self {
        let v = v.get(..MAX_FRAME_LEN / 2).unwrap_or(v);
        self.buf
            .extend_from_slice(&u32::try_from(v.len()).unwrap_or(0).to_le_bytes());
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a length-prefixed string.
    pub fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }

    /// The finished frame, length prefix included.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len() - 4).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf
    }

    /// Writes the finished frame.
    pub fn send(self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.finish())
    }
}

/// A truncated or malformed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads the fields of one received frame.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over a frame's fields (after the type byte).
    pub fn new(fields: &'a [u8]) -> Self {
        Reader { rest: fields }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// An `i64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, Malformed> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// A length-prefixed string (invalid UTF-8 replaced).
    pub fn string(&mut self, what: &'static str) -> Result<String, Malformed> {
        Ok(String::from_utf8_lossy(self.bytes(what)?).into_owned())
    }
}

/// Reads one frame: its type and fields. `Ok(None)` at a clean end of stream.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {MAX_FRAME_LEN} allowed)"),
        ));
    }
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf)?;
    let kind = buf.remove(0);
    Ok(Some((kind, buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_truncation_is_an_error() {
        let frame = Writer::new(frame::OPEN)
            .u8(7)
            .u32(0xdead_beef)
            .u64(u64::MAX)
            .i64(-5)
            .bytes(&[1, 2, 3])
            .str("héllo")
            .finish();
        let (kind, fields) = read_frame(&mut frame.as_slice()).unwrap().unwrap();
        assert_eq!(kind, frame::OPEN);
        let mut r = Reader::new(&fields);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("c").unwrap(), u64::MAX);
        assert_eq!(r.i64("d").unwrap(), -5);
        assert_eq!(r.bytes("e").unwrap(), &[1, 2, 3]);
        assert_eq!(r.string("f").unwrap(), "héllo");
        assert_eq!(r.u8("past the end"), Err(Malformed("past the end")));
        let mut short = Reader::new(&[5, 0, 0, 0, 1]);
        assert_eq!(short.bytes("cut"), Err(Malformed("cut")));
    }

    #[test]
    fn oversized_and_empty_frames_are_refused() {
        let huge = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_le_bytes();
        assert!(read_frame(&mut huge.as_slice()).is_err());
        assert!(read_frame(&mut [0u8, 0, 0, 0].as_slice()).is_err());
        assert!(read_frame(&mut [].as_slice()).unwrap().is_none());
    }
}
