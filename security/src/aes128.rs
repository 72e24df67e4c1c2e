//! AES-128 encryption of single blocks and of short batches, the primitive under Milenage, 128-EEA2,
//! 128-EIA2 and the SUCI ECIES profiles.
//!
//! Backed by RustCrypto's `aes` crate, which uses AES-NI (x86-64) or the ARMv8 crypto extensions when
//! the CPU has them (runtime detection) and a constant-time bitsliced fallback otherwise. A block costs a
//! few nanoseconds; openssl's EVP interface costs about ten times more per call, which dominates Milenage
//! (see docs/security.md for the measurement).

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};

/// One 16-octet AES block.
pub type Block = [u8; 16];

/// An expanded AES-128 encryption key.
#[derive(Clone)]
pub struct Aes128Key(aes::Aes128);

impl std::fmt::Debug for Aes128Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes128Key(..)")
    }
}

impl Aes128Key {
    /// Expands `key`.
    pub fn new(key: &[u8; 16]) -> Self {
        Aes128Key(aes::Aes128::new(&GenericArray::from(*key)))
    }

    /// Encrypts one block in place.
    #[inline]
    pub fn encrypt(&self, block: &mut Block) {
        self.0.encrypt_block(GenericArray::from_mut_slice(block));
    }

    /// Encrypts up to eight independent blocks in place in one call, letting the hardware pipeline them.
    /// The AES-NI backend pipelines whole groups of eight and does a shorter tail one block at a time,
    /// so the blocks are always run as a group of eight.
    #[inline]
    pub fn encrypt_n<const N: usize>(&self, blocks: &mut [Block; N]) {
        for chunk in blocks.chunks_mut(8) {
            let mut ga: [aes::Block; 8] = Default::default();
            for (g, b) in ga.iter_mut().zip(chunk.iter()) {
                g.copy_from_slice(b);
            }
            self.0.encrypt_blocks(&mut ga);
            for (out, g) in chunk.iter_mut().zip(ga.iter()) {
                out.copy_from_slice(g);
            }
        }
    }
}

/// XORs `b` into `a`.
#[inline]
pub(crate) fn xor_into(a: &mut Block, b: &Block) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fips197_appendix_c1() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let mut block: Block = core::array::from_fn(|i| (i as u8) * 0x11);
        Aes128Key::new(&key).encrypt(&mut block);
        assert_eq!(
            block,
            [
                0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
                0xc5, 0x5a
            ]
        );
        let mut many = [[0u8; 16]; 3];
        many[1] = core::array::from_fn(|i| (i as u8) * 0x11);
        Aes128Key::new(&key).encrypt_n(&mut many);
        assert_eq!(many[1], block);
    }
}
