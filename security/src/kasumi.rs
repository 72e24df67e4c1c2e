//! The KASUMI block cipher (TS 35.202): 64-bit blocks, 128-bit keys, eight Feistel rounds of FL and FO,
//! FO made of three FI, FI made of the S-boxes S7 and S9.
//!
//! Speed: UEA1 and UIA1 chain their blocks, so what matters is the latency of one block. FI is two
//! identical half-rounds around a key addition. Each half-round
//! `(a: 9 bits, b: 7 bits) -> (S9[a] xor b, S7[b] xor S9[a] xor b)` is folded here into two tables indexed
//! by `a` and by `b` whose entries are XORed, so a half-round costs two independent loads instead of a
//! chain of four; the second half's tables also hold the final swap of FI's output.
//!
//! The table entries are laid out so that the next indices come out of a value with one instruction and
//! need no bounds check: a 16-bit word `w` is carried as `w | (w >> 7) << 23` in a `u32` (after the first
//! half-round) or `w | (w >> 7) << 55` in a `u64` (FI's output, and the right half of the state). The
//! 9-bit index is then one shift (`x >> 23`, `x >> 55`, always in range), the 7-bit index one mask, and
//! the plain word a truncation; XOR keeps both copies in step, so state and key words use the same
//! layout. FL needs the plain words, so the left half of the state is kept as two `u16`.
//! The key schedule (TS 35.202 4.4) is expanded once per key into per-round arrays, with KI and KO
//! pre-arranged in these layouts, and the eight rounds are unrolled.
//! [`Kasumi::encrypt_x4`] and [`Kasumi::encrypt_lanes`] run independent blocks interleaved so that their
//! load latencies overlap.

use crate::kasumi_sbox::{S7, S9};

/// Half-round table indexed by the 9-bit half: S9[a] in the top 9 bits and its low 7 bits below.
const HA: [u16; 512] = build_ha(false);
/// Half-round table indexed by the 7-bit half: b in the top 9 bits, S7[b] xor b below.
const HB: [u16; 128] = build_hb(false);
/// Same as [`HA`] with FI's output swap folded in (rotated left by 9).
const HA2: [u16; 512] = build_ha(true);
/// Same as [`HB`] with FI's output swap folded in.
const HB2: [u16; 128] = build_hb(true);

/// First half-round of FI, entries in the `u32` layout (see the module notes).
static L1A: [u32; 512] = widen32(&HA);
/// First half-round, 7-bit side.
static L1B: [u32; 128] = widen32(&HB);
/// Second half-round (FI's output), entries in the `u64` layout.
static L2A: [u64; 512] = widen64(&HA2);
/// Second half-round, 7-bit side.
static L2B: [u64; 128] = widen64(&HB2);

const fn build_ha(swap: bool) -> [u16; 512] {
    let mut t = [0u16; 512];
    let mut a = 0;
    while a < 512 {
        let s = S9[a];
        let v = (s << 7) | (s & 0x7f);
        t[a] = if swap { v.rotate_left(9) } else { v };
        a += 1;
    }
    t
}

const fn build_hb(swap: bool) -> [u16; 128] {
    let mut t = [0u16; 128];
    let mut b = 0;
    while b < 128 {
        let v = ((b as u16) << 7) | ((S7[b] as u16) ^ b as u16);
        t[b] = if swap { v.rotate_left(9) } else { v };
        b += 1;
    }
    t
}

/// `w` with its 9-bit half copied to bits 23..32.
const fn lay32(w: u16) -> u32 {
    (((w >> 7) as u32) << 23) | w as u32
}

/// `w` with its 9-bit half copied to bits 55..64.
const fn lay64(w: u16) -> u64 {
    (((w >> 7) as u64) << 55) | w as u64
}

const fn widen32<const N: usize>(t: &[u16; N]) -> [u32; N] {
    let mut o = [0u32; N];
    let mut i = 0;
    while i < N {
        o[i] = lay32(t[i]);
        i += 1;
    }
    o
}

const fn widen64<const N: usize>(t: &[u16; N]) -> [u64; N] {
    let mut o = [0u64; N];
    let mut i = 0;
    while i < N {
        o[i] = lay64(t[i]);
        i += 1;
    }
    o
}

/// FI from its two input halves (`a` < 512, `b` < 128) with the pre-arranged subkey `ki` (KI rotated
/// left by 7 so KIij2 sits over the 9-bit half, in the `u32` layout); the result is in the `u64` layout.
#[inline(always)]
fn fi_halves(a: usize, b: usize, ki: u32) -> u64 {
    let w = L1A[a & 0x1ff] ^ (L1B[b & 0x7f] ^ ki);
    L2A[(w >> 23) as usize] ^ L2B[(w & 0x7f) as usize]
}

/// FI of a plain 16-bit word.
#[inline(always)]
fn fi(x: u16, ki: u32) -> u64 {
    fi_halves(usize::from(x >> 7), usize::from(x & 0x7f), ki)
}

/// FI of a word in the `u64` layout.
#[inline(always)]
fn fi_laid(x: u64, ki: u32) -> u64 {
    fi_halves((x >> 55) as usize, (x & 0x7f) as usize, ki)
}

/// The subkeys of one round.
#[derive(Clone, Copy, Default)]
struct RoundKeys {
    kl1: u16,
    kl2: u16,
    /// KOi,1..3, plain.
    ko: [u16; 3],
    /// KOi,1..3 in the `u64` layout.
    ko64: [u64; 3],
    /// KIi,1..3 rotated left by 7, in the `u32` layout.
    ki: [u32; 3],
}

/// A KASUMI key with its schedule expanded.
#[derive(Clone)]
pub struct Kasumi {
    rounds: [RoundKeys; 8],
}

impl std::fmt::Debug for Kasumi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kasumi(..)")
    }
}

/// The expanded schedule is the key: wiped when the cipher is dropped.
impl Drop for Kasumi {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for round in &mut self.rounds {
            round.kl1.zeroize();
            round.kl2.zeroize();
            round.ko.zeroize();
            round.ko64.zeroize();
            round.ki.zeroize();
        }
    }
}

const C: [u16; 8] = [
    0x0123, 0x4567, 0x89ab, 0xcdef, 0xfedc, 0xba98, 0x7654, 0x3210,
];

/// The state between rounds: the left half as plain words (FL reads it), the right half in the `u64`
/// layout (FO reads it).
#[derive(Clone, Copy)]
struct State {
    lh: u16,
    ll: u16,
    rh: u64,
    rl: u64,
}

impl State {
    #[inline(always)]
    fn load(block: u64) -> Self {
        State {
            lh: (block >> 48) as u16,
            ll: (block >> 32) as u16,
            rh: lay64((block >> 16) as u16),
            rl: lay64(block as u16),
        }
    }

    #[inline(always)]
    fn store(self) -> u64 {
        (u64::from(self.lh) << 48)
            | (u64::from(self.ll) << 32)
            | (u64::from(self.rh as u16) << 16)
            | u64::from(self.rl as u16)
    }

    /// An odd round (1, 3, 5, 7): R ^= FO(FL(L)).
    #[inline(always)]
    fn odd(&mut self, k: &RoundKeys) {
        // FL.
        let b = self.ll ^ (self.lh & k.kl1).rotate_left(1);
        let a = self.lh ^ (b | k.kl2).rotate_left(1);
        // FO; the XORs are grouped so that the late operand comes last.
        let o1 = fi(a ^ k.ko[0], k.ki[0]);
        let o2 = fi(b ^ k.ko[1], k.ki[1]);
        let b64 = lay64(b);
        let o3 = fi_laid(o1 ^ (b64 ^ k.ko64[2]), k.ki[2]);
        let r2 = o2 ^ (o1 ^ b64);
        self.rh ^= r2;
        self.rl ^= o3 ^ r2;
    }

    /// An even round (2, 4, 6, 8): L ^= FL(FO(R)).
    #[inline(always)]
    fn even(&mut self, k: &RoundKeys) {
        let o1 = fi_laid(self.rh ^ k.ko64[0], k.ki[0]);
        let o2 = fi_laid(self.rl ^ k.ko64[1], k.ki[1]);
        let o3 = fi_laid((o1 ^ k.ko64[2]) ^ self.rl, k.ki[2]);
        let r2 = (o2 ^ (o1 ^ self.rl)) as u16;
        let r3 = (o3 as u16) ^ r2;
        // FL.
        let b = r3 ^ (r2 & k.kl1).rotate_left(1);
        let a = r2 ^ (b | k.kl2).rotate_left(1);
        self.lh ^= a;
        self.ll ^= b;
    }
}

impl Kasumi {
    /// Expands the 128-bit key.
    pub fn new(key: &[u8; 16]) -> Self {
        let k: [u16; 8] =
            core::array::from_fn(|j| u16::from_be_bytes([key[2 * j], key[2 * j + 1]]));
        let kp: [u16; 8] = core::array::from_fn(|j| k[j] ^ C[j]);
        // Round i (0-based here) uses K_{i+n} with indices taken mod 8, as in TS 35.202 table 1.
        let at = |v: &[u16; 8], i: usize, n: usize| v[(i + n) % 8];
        let rounds = core::array::from_fn(|i| {
            let ko = [
                at(&k, i, 1).rotate_left(5),
                at(&k, i, 5).rotate_left(8),
                at(&k, i, 6).rotate_left(13),
            ];
            RoundKeys {
                kl1: at(&k, i, 0).rotate_left(1),
                kl2: at(&kp, i, 2),
                ko,
                ko64: ko.map(lay64),
                ki: [
                    at(&kp, i, 4).rotate_left(7),
                    at(&kp, i, 3).rotate_left(7),
                    at(&kp, i, 7).rotate_left(7),
                ]
                .map(lay32),
            }
        });
        Kasumi { rounds }
    }

    /// Encrypts one 64-bit block (big-endian: the first octet is the most significant).
    #[inline]
    pub fn encrypt_u64(&self, block: u64) -> u64 {
        let mut s = State::load(block);
        let [k1, k2, k3, k4, k5, k6, k7, k8] = &self.rounds;
        s.odd(k1);
        s.even(k2);
        s.odd(k3);
        s.even(k4);
        s.odd(k5);
        s.even(k6);
        s.odd(k7);
        s.even(k8);
        s.store()
    }

    /// Encrypts four independent blocks with this key, interleaved so that their table look-ups overlap.
    #[inline]
    pub fn encrypt_x4(&self, blocks: [u64; 4]) -> [u64; 4] {
        Kasumi::encrypt_lanes([self; 4], blocks)
    }

    /// Encrypts `N` independent blocks, lane `j` with key `keys[j]`, interleaved: one stream is bound by
    /// the latency of its look-up chain, so running several streams side by side multiplies throughput.
    #[inline]
    pub fn encrypt_lanes<const N: usize>(keys: [&Kasumi; N], blocks: [u64; N]) -> [u64; N] {
        let mut s = blocks.map(State::load);
        for pair in 0..4 {
            for (sj, kj) in s.iter_mut().zip(keys) {
                sj.odd(&kj.rounds[2 * pair]);
            }
            for (sj, kj) in s.iter_mut().zip(keys) {
                sj.even(&kj.rounds[2 * pair + 1]);
            }
        }
        s.map(State::store)
    }

    /// Encrypts one 8-octet block.
    pub fn encrypt_block(&self, block: &[u8; 8]) -> [u8; 8] {
        self.encrypt_u64(u64::from_be_bytes(*block)).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook FI of TS 35.202 4.3.3, step by step, to check the folded tables against.
    fn fi_reference(x: u16, ki: u16) -> u16 {
        let (l0, r0) = (x >> 7, x & 0x7f);
        let (ki1, ki2) = (ki >> 9, ki & 0x1ff);
        let l1 = r0;
        let r1 = S9[l0 as usize] ^ r0;
        let l2 = r1 ^ ki2;
        let r2 = u16::from(S7[l1 as usize]) ^ (r1 & 0x7f) ^ ki1;
        let l3 = r2;
        let r3 = S9[l2 as usize] ^ l3;
        let l4 = u16::from(S7[l3 as usize]) ^ (r3 & 0x7f);
        (l4 << 9) | r3
    }

    #[test]
    fn folded_fi_matches_the_specification() {
        for x in (0..=u16::MAX).step_by(7) {
            for ki in [0u16, 1, 0x1ff, 0xfe00, 0xa5c3, 0xffff] {
                let out = fi(x, lay32(ki.rotate_left(7)));
                let want = fi_reference(x, ki);
                assert_eq!(out, lay64(want), "x={x:04x} ki={ki:04x}");
                assert_eq!(fi_laid(lay64(x), lay32(ki.rotate_left(7))), out);
            }
        }
    }

    #[test]
    fn sboxes_are_permutations() {
        let mut s7: Vec<u8> = S7.to_vec();
        s7.sort_unstable();
        assert!(s7.iter().enumerate().all(|(i, &v)| usize::from(v) == i));
        let mut s9: Vec<u16> = S9.to_vec();
        s9.sort_unstable();
        assert!(s9.iter().enumerate().all(|(i, &v)| usize::from(v) == i));
    }

    #[test]
    fn interleaved_matches_single() {
        let k = Kasumi::new(&[7; 16]);
        let blocks = [1u64, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef];
        assert_eq!(k.encrypt_x4(blocks), blocks.map(|b| k.encrypt_u64(b)));
    }
}
