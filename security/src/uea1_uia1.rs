//! UEA1 (f8, confidentiality) and UIA1 (f9, integrity) over KASUMI, as TS 35.201 specifies them, on
//! messages of any number of bits.

use crate::bits::{byte_len, check_bearer, check_len, clear_tail, Direction, LengthError};
use crate::kasumi::Kasumi;

/// The key modifier of f8: 0x55 in every octet.
const KM_F8: u8 = 0x55;
/// The key modifier of f9: 0xAA in every octet.
const KM_F9: u8 = 0xaa;
/// LENGTH is a 32-bit field in f8 and f9.
const MAX_BITS: usize = u32::MAX as usize;

fn modified(key: &[u8; 16], km: u8) -> Kasumi {
    Kasumi::new(&key.map(|b| b ^ km))
}

/// UEA1 keyed with a cipher key CK: both KASUMI schedules (CK and CK xor KM) expanded once.
#[derive(Debug, Clone)]
pub struct Uea1 {
    ck: Kasumi,
    ck_km: Kasumi,
}

impl Uea1 {
    /// Expands CK.
    pub fn new(ck: &[u8; 16]) -> Self {
        Uea1 {
            ck: Kasumi::new(ck),
            ck_km: modified(ck, KM_F8),
        }
    }

    /// Encrypts or decrypts (the same operation) the first `length_bits` bits of `buf` in place; the bits
    /// after them in the last octet are set to zero, later octets are left alone.
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
        if length_bits > MAX_BITS {
            return Err(LengthError::TooLong {
                bits: length_bits,
                max: MAX_BITS,
            });
        }
        let iv = (u64::from(count) << 32)
            | (u64::from(bearer) << 27)
            | (u64::from(direction.bit()) << 26);
        let a = self.ck_km.encrypt_u64(iv);
        let data = &mut buf[..byte_len(length_bits)];
        let mut ksb = 0u64;
        // KSi = KASUMI_CK(A xor BLKCNT xor KSi-1), BLKCNT = i - 1, KS0 = 0: each block waits for the
        // previous one, so this loop runs at the latency of one KASUMI block.
        for (blkcnt, chunk) in (0u64..).zip(data.chunks_mut(8)) {
            ksb = self.ck.encrypt_u64(a ^ blkcnt ^ ksb);
            xor_keystream(chunk, ksb);
        }
        clear_tail(data, length_bits);
        Ok(())
    }
}

/// XORs the keystream block `ks` (big-endian) into `chunk`, a whole 8-octet block or the shorter last one
/// (the leading octets of `ks` are used).
#[inline(always)]
fn xor_keystream(chunk: &mut [u8], ks: u64) {
    if let Ok(word) = <&mut [u8; 8]>::try_from(&mut *chunk) {
        *word = (u64::from_be_bytes(*word) ^ ks).to_be_bytes();
    } else {
        for (b, k) in chunk.iter_mut().zip(ks.to_be_bytes()) {
            *b ^= k;
        }
    }
}

/// One message for [`Uea1::apply_batch`].
#[derive(Debug)]
pub struct F8Job<'a> {
    /// The key.
    pub key: &'a Uea1,
    /// COUNT.
    pub count: u32,
    /// BEARER (0..=31).
    pub bearer: u8,
    /// DIRECTION.
    pub direction: Direction,
    /// The message, ciphered or deciphered in place.
    pub buf: &'a mut [u8],
    /// LENGTH in bits.
    pub length_bits: usize,
}

/// Streams run side by side in [`Uea1::apply_batch`].
const LANES: usize = 8;

impl Uea1 {
    /// Ciphers several independent messages (same or different keys) at once. UEA1's keystream is a chain
    /// in which each block depends on the previous one, so a single message is bound by KASUMI's latency;
    /// running up to eight messages side by side fills the CPU. Results equal [`Uea1::apply`] on each job.
    pub fn apply_batch(jobs: &mut [F8Job<'_>]) -> Result<(), LengthError> {
        for job in jobs.iter() {
            check_bearer(job.bearer)?;
            check_len(job.buf.len(), job.length_bits)?;
            if job.length_bits > MAX_BITS {
                return Err(LengthError::TooLong {
                    bits: job.length_bits,
                    max: MAX_BITS,
                });
            }
        }
        for group in jobs.chunks_mut(LANES) {
            if group.len() < LANES {
                for job in group.iter_mut() {
                    job.key.apply(
                        job.count,
                        job.bearer,
                        job.direction,
                        job.buf,
                        job.length_bits,
                    )?;
                }
                continue;
            }
            let keys: [&Kasumi; LANES] = core::array::from_fn(|j| &group[j].key.ck);
            let a: [u64; LANES] = core::array::from_fn(|j| {
                let g = &group[j];
                let iv = (u64::from(g.count) << 32)
                    | (u64::from(g.bearer) << 27)
                    | (u64::from(g.direction.bit()) << 26);
                g.key.ck_km.encrypt_u64(iv)
            });
            let lens: [usize; LANES] = core::array::from_fn(|j| byte_len(group[j].length_bits));
            let most = lens.iter().copied().max().unwrap_or(0).div_ceil(8);
            let mut ksb = [0u64; LANES];
            for n in 0..most {
                let input: [u64; LANES] = core::array::from_fn(|j| a[j] ^ n as u64 ^ ksb[j]);
                ksb = Kasumi::encrypt_lanes(keys, input);
                let start = n * 8;
                for ((job, &len), k) in group.iter_mut().zip(&lens).zip(ksb) {
                    xor_keystream(&mut job.buf[start.min(len)..len], k);
                }
            }
            for job in group.iter_mut() {
                clear_tail(job.buf, job.length_bits);
            }
        }
        Ok(())
    }
}

/// UIA1 keyed with an integrity key IK.
#[derive(Debug, Clone)]
pub struct Uia1 {
    ik: Kasumi,
    ik_km: Kasumi,
}

impl Uia1 {
    /// Expands IK.
    pub fn new(ik: &[u8; 16]) -> Self {
        Uia1 {
            ik: Kasumi::new(ik),
            ik_km: modified(ik, KM_F9),
        }
    }

    /// MAC-I over the first `length_bits` bits of `message`.
    pub fn mac(
        &self,
        count: u32,
        fresh: u32,
        direction: Direction,
        message: &[u8],
        length_bits: usize,
    ) -> Result<[u8; 4], LengthError> {
        check_len(message.len(), length_bits)?;
        if length_bits > MAX_BITS {
            return Err(LengthError::TooLong {
                bits: length_bits,
                max: MAX_BITS,
            });
        }
        // PS = COUNT || FRESH || MESSAGE || DIRECTION || 1 || 0*, cut into 64-bit blocks.
        let mut a = 0u64;
        let mut b = 0u64;
        let mut step = |block: u64| {
            a = self.ik.encrypt_u64(a ^ block);
            b ^= a;
        };
        step((u64::from(count) << 32) | u64::from(fresh));
        let full_bytes = length_bits / 8;
        let mut chunks = message[..full_bytes].chunks_exact(8);
        for chunk in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            step(u64::from_be_bytes(w));
        }
        // The last partial block: the remaining whole octets, the remaining bits, then DIRECTION and 1.
        let rest = chunks.remainder();
        let mut tail = [0u8; 16];
        tail[..rest.len()].copy_from_slice(rest);
        let tail_bits = rest.len() * 8 + length_bits % 8;
        if !length_bits.is_multiple_of(8) {
            tail[rest.len()] = message[full_bytes] & (0xffu8 << (8 - length_bits % 8));
        }
        set_bit(&mut tail, tail_bits, direction.bit() == 1);
        set_bit(&mut tail, tail_bits + 1, true);
        let used = tail_bits + 2;
        let mut w = [0u8; 8];
        w.copy_from_slice(&tail[..8]);
        step(u64::from_be_bytes(w));
        if used > 64 {
            w.copy_from_slice(&tail[8..]);
            step(u64::from_be_bytes(w));
        }
        let mac = self.ik_km.encrypt_u64(b);
        let mut out = [0u8; 4];
        out.copy_from_slice(&mac.to_be_bytes()[..4]);
        Ok(out)
    }
}

fn set_bit(buf: &mut [u8], bit: usize, value: bool) {
    if value {
        buf[bit / 8] |= 0x80 >> (bit % 8);
    }
}
