//! A bounds-checked reader and a writer for the big-endian, length-prefixed encodings of envelopes,
//! tokens and receipts. Every read either yields a value or says which field at which offset failed.

/// A decoding failure: the field and the offset at which it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// The field that could not be read.
    pub what: &'static str,
    /// Its offset in the input.
    pub offset: usize,
}

/// Reads fields in order from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The current offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// `n` octets.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Malformed {
                what,
                offset: self.pos,
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    /// One octet.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads one byte that must be `expected` (a tag or a version); any other value is malformed at
    /// its offset.
    pub fn expect_u8(&mut self, what: &'static str, expected: u8) -> Result<(), Malformed> {
        let offset = self.offset();
        if self.u8(what)? == expected {
            Ok(())
        } else {
            Err(Malformed { what, offset })
        }
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Octets prefixed by a u8 length.
    pub fn bytes_u8(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u8(what)?;
        self.bytes(usize::from(n), what)
    }

    /// Octets prefixed by a u16 length.
    pub fn bytes_u16(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u16(what)?;
        self.bytes(usize::from(n), what)
    }

    /// Octets prefixed by a u32 length.
    pub fn bytes_u32(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let n = self.u32(what)?;
        self.bytes(n as usize, what)
    }

    /// Fails unless the whole input was read.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.pos != self.buf.len() {
            return Err(Malformed {
                what: "trailing octets",
                offset: self.pos,
            });
        }
        Ok(())
    }
}

/// Appends a length-prefixed field; fails if it does not fit the prefix.
pub fn put_u8_prefixed(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    out.push(u8::try_from(data.len()).ok()?);
    out.extend_from_slice(data);
    Some(())
}

/// Appends a u16-length-prefixed field.
pub fn put_u16_prefixed(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    out.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
    out.extend_from_slice(data);
    Some(())
}

/// Appends a u32-length-prefixed field.
pub fn put_u32_prefixed(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    out.extend_from_slice(&u32::try_from(data.len()).ok()?.to_be_bytes());
    out.extend_from_slice(data);
    Some(())
}
