//! 128-EEA2 (AES-CTR) and 128-EIA2 (AES-CMAC) as TS 33.401 Annex B specifies them, on messages of any
//! number of bits.

use crate::aes128::{xor_into, Aes128Key, Block};
use crate::bits::{byte_len, check_bearer, check_len, clear_tail, Direction, LengthError};

/// The 64-bit prefix COUNT || BEARER || DIRECTION || 0^26 shared by EEA2's counter block and EIA2's message.
fn prefix(count: u32, bearer: u8, direction: Direction) -> [u8; 8] {
    let word =
        (u64::from(count) << 32) | (u64::from(bearer) << 27) | (u64::from(direction.bit()) << 26);
    word.to_be_bytes()
}

/// Blocks of keystream computed per AES call in EEA2 (the hardware pipelines them).
const CTR_BATCH: usize = 8;

/// 128-EEA2 keyed with a 128-bit key.
#[derive(Debug, Clone)]
pub struct Eea2 {
    key: Aes128Key,
}

impl Eea2 {
    /// Expands the key.
    pub fn new(key: &[u8; 16]) -> Self {
        Eea2 {
            key: Aes128Key::new(key),
        }
    }

    /// Encrypts or decrypts the first `length_bits` bits of `buf` in place; the bits after them in the
    /// last octet are set to zero, later octets are left alone.
    pub fn apply(
        &self,
        count: u32,
        bearer: u8,
        direction: Direction,
        buf: &mut [u8],
        length_bits: usize,
    ) -> Result<(), LengthError> {
        check_bearer(bearer)?;
        check_len(buf.len(), length_bits)?;
        // T1 = COUNT || BEARER || DIRECTION || 0^26 || 0^64; the low 64 bits count blocks.
        let hi = prefix(count, bearer, direction);
        let data = &mut buf[..byte_len(length_bits)];
        let mut counter = 0u64;
        for chunk in data.chunks_mut(16 * CTR_BATCH) {
            let mut ks: [Block; CTR_BATCH] = core::array::from_fn(|i| {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&hi);
                t[8..].copy_from_slice(&counter.wrapping_add(i as u64).to_be_bytes());
                t
            });
            self.key.encrypt_n(&mut ks);
            counter = counter.wrapping_add(CTR_BATCH as u64);
            for (piece, k) in chunk.chunks_mut(16).zip(ks.iter()) {
                for (b, k) in piece.iter_mut().zip(k) {
                    *b ^= k;
                }
            }
        }
        clear_tail(data, length_bits);
        Ok(())
    }
}

/// 128-EIA2 keyed with a 128-bit key, with the CMAC subkeys K1 and K2 derived once. The subkeys are
/// wiped when it is dropped (the AES schedule by `aes` itself) and never shown by `Debug`.
#[derive(Clone)]
pub struct Eia2 {
    key: Aes128Key,
    k1: Block,
    k2: Block,
}

impl std::fmt::Debug for Eia2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Eia2(..)")
    }
}

impl Drop for Eia2 {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.k1.zeroize();
        self.k2.zeroize();
    }
}

/// Doubling in GF(2^128) as CMAC's subkey generation (NIST SP 800-38B) does.
fn dbl(b: &Block) -> Block {
    let v = u128::from_be_bytes(*b);
    let carry = if v >> 127 == 1 { 0x87 } else { 0 };
    ((v << 1) ^ carry).to_be_bytes()
}

impl Eia2 {
    /// Expands the key and derives the CMAC subkeys.
    pub fn new(key: &[u8; 16]) -> Self {
        let key = Aes128Key::new(key);
        let mut l = [0u8; 16];
        key.encrypt(&mut l);
        let k1 = dbl(&l);
        let k2 = dbl(&k1);
        Eia2 { key, k1, k2 }
    }

    /// MAC-I (the 32 most significant bits of the CMAC) over the first `length_bits` bits of `message`.
    pub fn mac(
        &self,
        count: u32,
        bearer: u8,
        direction: Direction,
        message: &[u8],
        length_bits: usize,
    ) -> Result<[u8; 4], LengthError> {
        check_bearer(bearer)?;
        check_len(message.len(), length_bits)?;
        let full = self.cmac_bits(
            &prefix(count, bearer, direction),
            &message[..byte_len(length_bits)],
            length_bits,
        );
        let mut out = [0u8; 4];
        out.copy_from_slice(&full[..4]);
        Ok(out)
    }

    /// CMAC over the bit string `head || first msg_bits bits of msg`; `head` is 8 octets.
    fn cmac_bits(&self, head: &[u8; 8], msg: &[u8], msg_bits: usize) -> Block {
        let total_bits = 64 + msg_bits;
        // Number of blocks n (at least one); the last one is complete only if total_bits is a positive multiple of 128.
        let n = total_bits.div_ceil(128).max(1);
        let last_complete = total_bits != 0 && total_bits.is_multiple_of(128);
        let octet = |i: usize| -> u8 {
            if i < 8 {
                head[i]
            } else {
                msg.get(i - 8).copied().unwrap_or(0)
            }
        };
        let mut state = [0u8; 16];
        // All but the last block: whole octets straight from head and msg.
        for blk in 0..n - 1 {
            let base = blk * 16;
            for (j, s) in state.iter_mut().enumerate() {
                *s ^= octet(base + j);
            }
            self.key.encrypt(&mut state);
        }
        let base = (n - 1) * 16;
        let mut last: Block = core::array::from_fn(|j| octet(base + j));
        if last_complete {
            xor_into(&mut last, &self.k1);
        } else {
            let used = total_bits - base * 8;
            clear_tail(&mut last, used);
            for b in last.iter_mut().skip(used.div_ceil(8)) {
                *b = 0;
            }
            last[used / 8] |= 0x80 >> (used % 8);
            xor_into(&mut last, &self.k2);
        }
        xor_into(&mut state, &last);
        self.key.encrypt(&mut state);
        state
    }
}
