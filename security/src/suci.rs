//! Concealment of a permanent identity with ECIES, as TS 33.501 Annex C.3 does for the SUCI: profile A
//! (X25519) and profile B (NIST P-256, compressed points).
//!
//! Both profiles: shared secret Z by ECDH between an ephemeral key and the home network's key; the ANSI
//! X9.63 KDF with SHA-256 and SharedInfo = the ephemeral public key yields 64 octets, split into an
//! AES-128 key, a 16-octet initial counter block and a 32-octet HMAC-SHA-256 key; the identity is
//! encrypted with AES-128-CTR (only the low 32 bits of the counter block are incremented) and tagged with
//! the first 8 octets of HMAC-SHA-256 over the ciphertext. Scheme output = ephemeral public key ||
//! ciphertext || MAC tag.
//!
//! In this system the concealed identity is a meter's KID before the head-end has issued a TID; the MSIN
//! helpers serve the 3GPP test data and the `concentrator crypto suci` tool.

use openssl::bn::{BigNum, BigNumContext};
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcPoint, PointConversionForm};
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey};
use openssl::sign::Signer;
use thiserror::Error;

use crate::aes128::Aes128Key;

/// Length of the MAC tag in the scheme output.
pub const MAC_TAG_LEN: usize = 8;

/// The ECIES protection scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Profile A: Curve25519 (X25519), 32-octet public keys.
    A,
    /// Profile B: NIST P-256 (secp256r1), 33-octet compressed public keys.
    B,
}

impl Profile {
    /// Octets of an ephemeral public key in the scheme output.
    pub fn public_key_len(self) -> usize {
        match self {
            Profile::A => 32,
            Profile::B => 33,
        }
    }
}

/// Why concealment or de-concealment failed.
#[derive(Debug, Error)]
pub enum SuciError {
    /// A key has the wrong size or is not a valid key for the profile's curve.
    #[error("invalid {what} for profile {profile:?}: {reason}; give a {expected}")]
    BadKey {
        /// Which key.
        what: &'static str,
        /// The profile in use.
        profile: Profile,
        /// What is wrong.
        reason: String,
        /// What is expected.
        expected: &'static str,
    },
    /// The scheme output is too short to hold a public key and a MAC tag.
    #[error("scheme output of {len} octets is too short for profile {profile:?} (at least {min}): it is truncated")]
    TooShort {
        /// Its length.
        len: usize,
        /// The profile.
        profile: Profile,
        /// The least possible length.
        min: usize,
    },
    /// The MAC tag does not match: the scheme output was altered or made for another home-network key.
    #[error(
        "MAC tag mismatch: the scheme output was altered or concealed for another home-network key"
    )]
    BadMac,
    /// An MSIN that is not 1 to 15 decimal digits.
    #[error("MSIN {0:?} is not 1 to 15 decimal digits")]
    BadMsin(String),
    /// The plaintext is not a packed-BCD MSIN.
    #[error("revealed plaintext {0} is not a BCD-coded MSIN")]
    NotBcd(String),
    /// The cryptographic library failed.
    #[error("openssl failed during ECIES: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

/// The intermediate values of one concealment, for test data. The secrets (Z and the derived keys) are
/// wiped when it is dropped and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct EciesKeys {
    /// The ephemeral public key as sent.
    pub eph_public: Vec<u8>,
    /// The ECDH shared secret Z.
    pub shared: Vec<u8>,
    /// The AES-128 key.
    pub enc_key: [u8; 16],
    /// The initial counter block.
    pub icb: [u8; 16],
    /// The HMAC-SHA-256 key.
    pub mac_key: [u8; 32],
}

impl std::fmt::Debug for EciesKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EciesKeys")
            .field("eph_public", &self.eph_public)
            .finish_non_exhaustive()
    }
}

impl Drop for EciesKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.shared.zeroize();
        self.enc_key.zeroize();
        self.icb.zeroize();
        self.mac_key.zeroize();
    }
}

fn bad_key(
    what: &'static str,
    profile: Profile,
    reason: impl ToString,
    expected: &'static str,
) -> SuciError {
    SuciError::BadKey {
        what,
        profile,
        reason: reason.to_string(),
        expected,
    }
}

fn p256() -> Result<EcGroup, SuciError> {
    Ok(EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?)
}

/// ECDH: (our public key as sent, Z) for a private scalar and the peer's public key.
fn ecdh(
    profile: Profile,
    private: &[u8],
    peer_public: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SuciError> {
    match profile {
        Profile::A => {
            if private.len() != 32 {
                return Err(bad_key(
                    "private key",
                    profile,
                    format!("{} octets", private.len()),
                    "32-octet X25519 key",
                ));
            }
            if peer_public.len() != 32 {
                return Err(bad_key(
                    "public key",
                    profile,
                    format!("{} octets", peer_public.len()),
                    "32-octet X25519 key",
                ));
            }
            let ours = PKey::private_key_from_raw_bytes(private, Id::X25519)
                .map_err(|e| bad_key("private key", profile, e, "32-octet X25519 key"))?;
            let peer = PKey::public_key_from_raw_bytes(peer_public, Id::X25519)
                .map_err(|e| bad_key("public key", profile, e, "32-octet X25519 key"))?;
            let mut d = Deriver::new(&ours)?;
            d.set_peer(&peer)?;
            let z = d.derive_to_vec()?;
            Ok((ours.raw_public_key()?, z))
        }
        Profile::B => {
            let group = p256()?;
            let mut ctx = BigNumContext::new()?;
            if private.len() != 32 {
                return Err(bad_key(
                    "private key",
                    profile,
                    format!("{} octets", private.len()),
                    "32-octet P-256 scalar",
                ));
            }
            let scalar = BigNum::from_slice(private)?;
            let peer = EcPoint::from_bytes(&group, peer_public, &mut ctx)
                .map_err(|e| bad_key("public key", profile, e, "33- or 65-octet P-256 point"))?;
            let mut ours = EcPoint::new(&group)?;
            ours.mul_generator2(&group, &scalar, &mut ctx)?;
            if ours.is_infinity(&group) {
                return Err(bad_key(
                    "private key",
                    profile,
                    "zero scalar",
                    "non-zero P-256 scalar",
                ));
            }
            let mut shared = EcPoint::new(&group)?;
            shared.mul2(&group, &peer, &scalar, &mut ctx)?;
            if shared.is_infinity(&group) {
                return Err(bad_key(
                    "public key",
                    profile,
                    "shared point at infinity",
                    "valid P-256 point",
                ));
            }
            let mut x = BigNum::new()?;
            let mut y = BigNum::new()?;
            shared.affine_coordinates(&group, &mut x, &mut y, &mut ctx)?;
            let ours = ours.to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)?;
            Ok((ours, x.to_vec_padded(32)?))
        }
    }
}

/// ANSI X9.63 KDF with SHA-256: 64 octets from Z and SharedInfo.
fn kdf(z: &[u8], shared_info: &[u8]) -> Result<EciesKeys, SuciError> {
    let mut okm = Vec::with_capacity(64);
    for counter in 1u32..=2 {
        let mut input = Vec::with_capacity(z.len() + 4 + shared_info.len());
        input.extend_from_slice(z);
        input.extend_from_slice(&counter.to_be_bytes());
        input.extend_from_slice(shared_info);
        okm.extend_from_slice(&hash(MessageDigest::sha256(), &input)?);
    }
    let mut keys = EciesKeys {
        eph_public: shared_info.to_vec(),
        shared: z.to_vec(),
        enc_key: [0; 16],
        icb: [0; 16],
        mac_key: [0; 32],
    };
    keys.enc_key.copy_from_slice(&okm[..16]);
    keys.icb.copy_from_slice(&okm[16..32]);
    keys.mac_key.copy_from_slice(&okm[32..64]);
    Ok(keys)
}

/// AES-128-CTR incrementing the low 32 bits of the counter block.
fn ctr32(key: &[u8; 16], icb: &[u8; 16], data: &mut [u8]) {
    let aes = Aes128Key::new(key);
    let mut block = *icb;
    for chunk in data.chunks_mut(16) {
        let mut ks = block;
        aes.encrypt(&mut ks);
        for (b, k) in chunk.iter_mut().zip(ks) {
            *b ^= k;
        }
        let low = u32::from_be_bytes([block[12], block[13], block[14], block[15]]).wrapping_add(1);
        block[12..].copy_from_slice(&low.to_be_bytes());
    }
}

fn mac_tag(mac_key: &[u8; 32], ciphertext: &[u8]) -> Result<[u8; MAC_TAG_LEN], SuciError> {
    let key = PKey::hmac(mac_key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.update(ciphertext)?;
    let full = signer.sign_to_vec()?;
    let mut tag = [0u8; MAC_TAG_LEN];
    tag.copy_from_slice(&full[..MAC_TAG_LEN]);
    Ok(tag)
}

/// Conceals `plaintext` for the home network's public key with a given ephemeral private key; returns
/// the scheme output and the intermediate keys. Use [`conceal`] in production: it draws the ephemeral key.
pub fn conceal_with_ephemeral(
    profile: Profile,
    hn_public: &[u8],
    eph_private: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, EciesKeys), SuciError> {
    let (eph_public, z) = ecdh(profile, eph_private, hn_public)?;
    let keys = kdf(&z, &eph_public)?;
    let mut out = eph_public;
    let start = out.len();
    out.extend_from_slice(plaintext);
    ctr32(&keys.enc_key, &keys.icb, &mut out[start..]);
    let tag = mac_tag(&keys.mac_key, &out[start..])?;
    out.extend_from_slice(&tag);
    Ok((out, keys))
}

/// Conceals `plaintext` for the home network's public key with a fresh ephemeral key.
pub fn conceal(profile: Profile, hn_public: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SuciError> {
    let eph = match profile {
        Profile::A => PKey::generate_x25519()?.raw_private_key()?,
        Profile::B => {
            let group = p256()?;
            let key = openssl::ec::EcKey::generate(&group)?;
            key.private_key().to_vec_padded(32)?
        }
    };
    Ok(conceal_with_ephemeral(profile, hn_public, &eph, plaintext)?.0)
}

/// De-conceals a scheme output with the home network's private key: checks the MAC tag, then decrypts.
pub fn reveal(
    profile: Profile,
    hn_private: &[u8],
    scheme_output: &[u8],
) -> Result<Vec<u8>, SuciError> {
    let pk_len = profile.public_key_len();
    let min = pk_len + MAC_TAG_LEN;
    if scheme_output.len() < min {
        return Err(SuciError::TooShort {
            len: scheme_output.len(),
            profile,
            min,
        });
    }
    let (eph_public, rest) = scheme_output.split_at(pk_len);
    let (ciphertext, tag) = rest.split_at(rest.len() - MAC_TAG_LEN);
    let (_, z) = ecdh(profile, hn_private, eph_public)?;
    let keys = kdf(&z, eph_public)?;
    let expected = mac_tag(&keys.mac_key, ciphertext)?;
    if !openssl::memcmp::eq(&expected, tag) {
        return Err(SuciError::BadMac);
    }
    let mut plain = ciphertext.to_vec();
    ctr32(&keys.enc_key, &keys.icb, &mut plain);
    Ok(plain)
}

/// Packs an MSIN into BCD as the SUCI scheme input: two digits per octet, the first in the low nibble,
/// an odd count filled with F.
pub fn msin_to_bcd(msin: &str) -> Result<Vec<u8>, SuciError> {
    let digits: Vec<u8> = msin.bytes().map(|c| c.wrapping_sub(b'0')).collect();
    if digits.is_empty() || digits.len() > 15 || digits.iter().any(|&d| d > 9) {
        return Err(SuciError::BadMsin(msin.to_string()));
    }
    Ok(digits
        .chunks(2)
        .map(|p| p[0] | (p.get(1).copied().unwrap_or(0xf) << 4))
        .collect())
}

/// Unpacks a BCD MSIN (the inverse of [`msin_to_bcd`]).
pub fn bcd_to_msin(bcd: &[u8]) -> Result<String, SuciError> {
    let not_bcd = || SuciError::NotBcd(bcd.iter().map(|b| format!("{b:02x}")).collect());
    let mut out = String::with_capacity(bcd.len() * 2);
    for (i, &b) in bcd.iter().enumerate() {
        let (lo, hi) = (b & 0x0f, b >> 4);
        if lo > 9 {
            return Err(not_bcd());
        }
        out.push(char::from(b'0' + lo));
        if hi == 0xf && i == bcd.len() - 1 {
            break;
        }
        if hi > 9 {
            return Err(not_bcd());
        }
        out.push(char::from(b'0' + hi));
    }
    if out.is_empty() {
        return Err(not_bcd());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_round_trip() {
        assert_eq!(
            msin_to_bcd("001002086").unwrap(),
            [0x00, 0x01, 0x20, 0x80, 0xf6]
        );
        assert_eq!(
            bcd_to_msin(&[0x00, 0x01, 0x20, 0x80, 0xf6]).unwrap(),
            "001002086"
        );
        assert_eq!(bcd_to_msin(&msin_to_bcd("1234").unwrap()).unwrap(), "1234");
        assert!(msin_to_bcd("12a").is_err());
        assert!(bcd_to_msin(&[0xfa]).is_err());
        assert!(bcd_to_msin(&[]).is_err());
    }
}
