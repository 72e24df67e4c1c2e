//! A compact binary encoding for high-volume records (audit entries): LEB128 varints, zig-zag for signed
//! values, length-prefixed strings. The reader never panics and names the field that is bad.

/// A field that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad or truncated {field} at offset {offset}")]
pub struct DecodeError {
    /// The field.
    pub field: &'static str,
    /// Where it starts.
    pub offset: usize,
}

/// Appends values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// One octet.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// An unsigned varint.
    pub fn u64(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }

    /// A signed varint (zig-zag).
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(((v << 1) ^ (v >> 63)) as u64)
    }

    /// A length-prefixed octet string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// An optional value: 0, or 1 then the value.
    pub fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(x) => self.u8(1).u64(x),
        }
    }

    /// The encoded octets.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values back.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn err(&self, field: &'static str, offset: usize) -> DecodeError {
        DecodeError { field, offset }
    }

    /// One octet.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(self.err(field, self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned varint (at most 10 octets).
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.u8(field).map_err(|_| self.err(field, start))?;
            if shift == 63 && b > 1 {
                return Err(self.err(field, start));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(field, start))
    }

    /// A signed varint.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let z = self.u64(field)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A length-prefixed octet string.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len = usize::try_from(self.u64(field)?).map_err(|_| self.err(field, start))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(self.err(field, start))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(field, start))
    }

    /// An optional varint.
    pub fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        let start = self.pos;
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.u64(field)?)),
            _ => Err(self.err(field, start)),
        }
    }

    /// Fixed-size octets.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let start = self.pos;
        let end = start
            .checked_add(N)
            .filter(|&e| e <= self.buf.len())
            .ok_or(self.err(field, start))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[start..end]);
        self.pos = end;
        Ok(out)
    }

    /// Fails unless every octet was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.err("trailing octets", self.pos))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        let values = [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        let signed = [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX];
        let mut w = Writer::new();
        for v in values {
            w.u64(v);
        }
        for v in signed {
            w.i64(v);
        }
        w.str("meter-1").opt_u64(None).opt_u64(Some(7));
        let buf = w.finish();
        let mut r = Reader::new(&buf);
        for v in values {
            assert_eq!(r.u64("v").unwrap(), v);
        }
        for v in signed {
            assert_eq!(r.i64("v").unwrap(), v);
        }
        assert_eq!(r.string("s").unwrap(), "meter-1");
        assert_eq!(r.opt_u64("o").unwrap(), None);
        assert_eq!(r.opt_u64("o").unwrap(), Some(7));
        r.finish().unwrap();
    }

    #[test]
    fn truncated_and_oversized_input_is_an_error_not_a_panic() {
        let mut w = Writer::new();
        w.str("abcdef");
        let buf = w.finish();
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            assert!(r.string("s").is_err());
        }
        let eleven = [0xffu8; 11];
        assert!(Reader::new(&eleven).u64("v").is_err());
        let huge_len = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Reader::new(&huge_len).bytes("b").is_err());
    }
}
