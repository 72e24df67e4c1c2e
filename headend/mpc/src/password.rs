//! Password hashes as the payment server stores them: `scrypt$<log2 N>$<r>$<p>$<salt hex>$<hash hex>`
//! (scrypt through openssl, N = 2^14, r = 8, p = 1, a 16-octet random salt, a 32-octet hash).

use thiserror::Error;

/// log2 of scrypt's N for new hashes.
pub const LOG2_N: u8 = 14;
/// scrypt's r for new hashes.
pub const R: u32 = 8;
/// scrypt's p for new hashes.
pub const P: u32 = 1;
/// Octets of salt.
pub const SALT_LEN: usize = 16;
/// Octets of hash.
pub const HASH_LEN: usize = 32;
/// Shortest password accepted at registration, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in octets (scrypt's cost does not depend on it; this bounds the message).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a password could not be hashed or a stored hash not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PasswordError {
    /// The stored hash is not in the format above.
    #[error("stored password hash is not `scrypt$<log2 N>$<r>$<p>$<salt hex>$<hash hex>`: {0}; reset the customer's password")]
    BadFormat(String),
    /// openssl refused the parameters or failed.
    #[error("scrypt failed: {0}")]
    Scrypt(String),
}

fn derive(
    password: &str,
    salt: &[u8],
    log2_n: u8,
    r: u32,
    p: u32,
) -> Result<Vec<u8>, PasswordError> {
    if !(1..=20).contains(&log2_n) || !(1..=32).contains(&r) || !(1..=16).contains(&p) {
        return Err(PasswordError::BadFormat(format!(
            "parameters N=2^{log2_n}, r={r}, p={p} are outside what this server computes"
        )));
    }
    let n = 1u64 << log2_n;
    let need = 128 * n * u64::from(r) * u64::from(p) + 128 * u64::from(r) * u64::from(p);
    let mut out = vec![0u8; HASH_LEN];
    openssl::pkcs5::scrypt(
        password.as_bytes(),
        salt,
        n,
        u64::from(r),
        u64::from(p),
        need + 1024 * 1024,
        &mut out,
    )
    .map_err(|e| PasswordError::Scrypt(e.to_string()))?;
    Ok(out)
}

/// A new hash of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| PasswordError::Scrypt(e.to_string()))?;
    let h = derive(password, &salt, LOG2_N, R, P)?;
    Ok(format!(
        "scrypt${LOG2_N}${R}${P}${}${}",
        hex::encode(salt),
        hex::encode(h)
    ))
}

/// Whether `password` matches `stored` (compared in constant time).
pub fn verify(password: &str, stored: &str) -> Result<bool, PasswordError> {
    let parts: Vec<&str> = stored.split('$').collect();
    let [tag, log2_n, r, p, salt, h] = parts.as_slice() else {
        return Err(PasswordError::BadFormat(format!(
            "{} fields separated by `$`, expected 6",
            parts.len()
        )));
    };
    if *tag != "scrypt" {
        return Err(PasswordError::BadFormat(format!("algorithm {tag:?}")));
    }
    let num = |s: &str, what: &str| {
        s.parse::<u32>()
            .map_err(|_| PasswordError::BadFormat(format!("{what} {s:?} is not a number")))
    };
    let log2_n = u8::try_from(num(log2_n, "log2 N")?)
        .map_err(|_| PasswordError::BadFormat("log2 N too large".into()))?;
    let (r, p) = (num(r, "r")?, num(p, "p")?);
    let salt = hex::decode(salt).map_err(|e| PasswordError::BadFormat(format!("salt: {e}")))?;
    let expected = hex::decode(h).map_err(|e| PasswordError::BadFormat(format!("hash: {e}")))?;
    if expected.len() != HASH_LEN {
        return Err(PasswordError::BadFormat(format!(
            "hash of {} octets, expected {HASH_LEN}",
            expected.len()
        )));
    }
    let got = derive(password, &salt, log2_n, r, p)?;
    Ok(openssl::memcmp::eq(&got, &expected))
}

/// A hash that matches no password, for spending the same time on a login whose user has none.
pub(crate) fn dummy() -> String {
    format!(
        "scrypt${LOG2_N}${R}${P}${}${}",
        "00".repeat(SALT_LEN),
        "00".repeat(HASH_LEN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("scrypt$14$8$1$"));
        assert!(verify("correct horse", &h).unwrap());
        assert!(!verify("correct hors", &h).unwrap());
        assert!(!verify("x", &dummy()).unwrap());
        assert_ne!(hash("correct horse").unwrap(), h, "salts differ");
    }

    #[test]
    fn bad_stored_hashes_are_named() {
        for bad in [
            "",
            "bcrypt$1$2$3$00$00",
            "scrypt$14$8$1$zz$00",
            "scrypt$40$8$1$00$00",
        ] {
            assert!(
                matches!(verify("x", bad), Err(PasswordError::BadFormat(_))),
                "{bad}"
            );
        }
    }
}
