//! Subscriber secrets at rest: every K and OPc (meters, gateways, customers) and every session key (CK,
//! IK) is kept in the store encrypted under a key-encryption key (KEK) that lives outside the database,
//! in a file of mode 0600 (`[store] kek`), as an operator's HSS keeps its subscriber keys. A copy of the
//! database, a PostgreSQL dump or a stolen sled directory then holds no usable key.
//!
//! Only the secret fields are encrypted, each on its own, so the rest of a record stays readable to
//! `status` and to SQL: the JSON string `"00112233…"` becomes `"kek1:" ‖ hex(nonce ‖ ciphertext ‖ tag)`,
//! AES-256-GCM with a random 96-bit nonce and, as additional data, the record's key and the field's
//! path (`current.ck`), so a ciphertext copied into another record or field does not open. Records
//! written before a KEK was configured are read as they are and encrypted when next written
//! (`concentrator-headend migrate` rewrites them all at once).

use std::path::{Path, PathBuf};

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use serde_json::Value;
use zeroize::Zeroize;

use super::StoreError;

/// The prefix of an encrypted field's value.
const TAG: &str = "kek1:";
/// Record prefixes whose values hold secrets.
const SECRET_RECORDS: [&str; 4] = ["m/", "g/", "c/", "ctx/"];
/// Field names that hold a secret (16 octets as 32 hex digits).
const SECRET_FIELDS: [&str; 4] = ["k", "opc", "ck", "ik"];

/// The key-encryption key.
pub struct Kek {
    key: [u8; 32],
}

impl Drop for Kek {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Db {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Kek {
    /// A fresh random key.
    pub fn generate() -> Result<Kek, StoreError> {
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key)
            .map_err(|e| bad(Path::new("the key-encryption key"), e))?;
        Ok(Kek { key })
    }

    /// Writes a new key to `path` (mode 0600, never over an existing file) and returns it.
    pub fn create(path: &Path) -> Result<Kek, StoreError> {
        use std::io::Write;
        let kek = Kek::generate()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut text = hex::encode(kek.key);
        text.push('\n');
        let written = opts
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
        text.zeroize();
        written.map_err(|e| {
            bad(
                path,
                format!("cannot write the key-encryption key: {e}; the file must not exist yet and its directory must be writable"),
            )
        })?;
        Ok(kek)
    }

    /// Reads the key from `path`: 64 hex digits, a file only its owner can read.
    pub fn load(path: &Path) -> Result<Kek, StoreError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| {
                bad(path, format!("cannot read the key-encryption key ([store] kek): {e}; restore it from the operator's safe copy (without it the subscriber keys in the store cannot be used)"))
            })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(bad(
                    path,
                    format!("the key-encryption key has mode {mode:o}, readable by others; run `chmod 600 {}`", path.display()),
                ));
            }
        }
        let mut text = std::fs::read_to_string(path).map_err(|e| {
            bad(
                path,
                format!("cannot read the key-encryption key ([store] kek): {e}"),
            )
        })?;
        let mut key = [0u8; 32];
        let parsed = hex::decode_to_slice(text.trim(), &mut key);
        text.zeroize();
        if parsed.is_err() {
            key.zeroize();
            return Err(bad(
                path,
                "the key-encryption key is not 64 hex digits; restore the file from the operator's safe copy",
            ));
        }
        Ok(Kek { key })
    }

    fn seal(&self, aad: &[u8], plain: &[u8]) -> Option<String> {
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).ok()?;
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.key,
            Some(&nonce),
            aad,
            plain,
            &mut tag,
        )
        .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        Some(format!("{TAG}{}", hex::encode(out)))
    }

    fn open(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let raw = hex::decode(sealed.strip_prefix(TAG)?).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, rest) = raw.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        decrypt_aead(Cipher::aes_256_gcm(), &self.key, Some(nonce), aad, ct, tag).ok()
    }
}

fn holds_secrets(key: &[u8]) -> bool {
    SECRET_RECORDS.iter().any(|p| key.starts_with(p.as_bytes()))
}

fn aad(record: &[u8], path: &str) -> Vec<u8> {
    let mut a = record.to_vec();
    a.push(0);
    a.extend_from_slice(path.as_bytes());
    a
}

/// What [`walk`] calls on each secret field: `(path, value)` to the replacement, if any.
type FieldFn<'a> = dyn FnMut(&str, &str) -> Result<Option<String>, String> + 'a;

/// Walks `v`, calling `f(path, string)` on every secret field's string value; `f` returns the
/// replacement or `None` to keep it.
fn walk(v: &mut Value, path: &mut String, f: &mut FieldFn<'_>) -> Result<(), String> {
    if let Value::Object(map) = v {
        for (name, field) in map.iter_mut() {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
            match field {
                Value::String(s) if SECRET_FIELDS.contains(&name.as_str()) => {
                    if let Some(new) = f(path, s)? {
                        *s = new;
                    }
                }
                Value::Object(_) => walk(field, path, f)?,
                _ => {}
            }
            path.truncate(len);
        }
    }
    Ok(())
}

/// Whether a record holds a subscriber key in the clear (written before a KEK was configured).
pub(crate) fn has_clear_secrets(key: &[u8], value: &[u8]) -> bool {
    if !holds_secrets(key) {
        return false;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(value) else {
        return false;
    };
    let mut clear = false;
    let _ = walk(&mut v, &mut String::new(), &mut |_, s| {
        clear |= !s.starts_with(TAG) && hex::decode(s).is_ok();
        Ok(None)
    });
    clear
}

/// A record value on its way into the database: its secret fields encrypted (with a KEK).
pub(crate) fn protect(kek: Option<&Kek>, key: &[u8], value: Vec<u8>) -> Vec<u8> {
    let Some(kek) = kek else {
        return value;
    };
    if !holds_secrets(key) {
        return value;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&value) else {
        return value;
    };
    let mut seal = |path: &str, s: &str| -> Result<Option<String>, String> {
        if s.starts_with(TAG) {
            return Ok(None);
        }
        let Ok(mut plain) = hex::decode(s) else {
            return Ok(None);
        };
        let sealed = kek.seal(&aad(key, path), &plain);
        plain.zeroize();
        sealed
            .map(Some)
            .ok_or_else(|| "encryption failed".to_string())
    };
    match walk(&mut v, &mut String::new(), &mut seal) {
        // Never written in the clear: a value that cannot be encrypted is not written at all.
        Ok(()) => serde_json::to_vec(&v).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// A record value read from the database: its secret fields decrypted. A sealed field without the KEK,
/// or one that does not open with it, is an error naming the fix.
pub(crate) fn reveal(kek: Option<&Kek>, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if !holds_secrets(key) || !value.windows(TAG.len()).any(|w| w == TAG.as_bytes()) {
        return Ok(value);
    }
    let name = String::from_utf8_lossy(key).into_owned();
    let Some(kek) = kek else {
        return Err(StoreError::Corrupt {
            key: name,
            reason: "its keys are encrypted under a key-encryption key, and none is configured: set [store] kek in headend.toml to the KEK file".into(),
        });
    };
    let mut v: Value = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
        key: name.clone(),
        reason: e.to_string(),
    })?;
    let mut open = |path: &str, s: &str| -> Result<Option<String>, String> {
        if !s.starts_with(TAG) {
            return Ok(None);
        }
        let mut plain = kek.open(&aad(key, path), s).ok_or_else(|| {
            format!("field {path} does not decrypt with the configured key-encryption key ([store] kek): the wrong KEK file, or the record was altered")
        })?;
        let text = hex::encode(&plain);
        plain.zeroize();
        Ok(Some(text))
    };
    walk(&mut v, &mut String::new(), &mut open).map_err(|reason| StoreError::Corrupt {
        key: name.clone(),
        reason,
    })?;
    serde_json::to_vec(&v).map_err(|e| StoreError::Corrupt {
        key: name,
        reason: e.to_string(),
    })
}

/// The KEK file a configuration names, resolved against its directory.
pub fn kek_path(config: &crate::config::Config) -> Option<PathBuf> {
    config.store.kek.as_ref().map(|p| config.path(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_sealed_bound_to_record_and_field_and_read_back() {
        let kek = Kek::generate().unwrap();
        let rec = br#"{"id":"M1","k":"000102030405060708090a0b0c0d0e0f","opc":"f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff","n":3,"current":{"ck":"11111111111111111111111111111111","ik":"22222222222222222222222222222222"}}"#.to_vec();
        let sealed = protect(Some(&kek), b"m/M1", rec.clone());
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(
            !text.contains("000102030405") && !text.contains("1111111111"),
            "{text}"
        );
        assert_eq!(text.matches(TAG).count(), 4, "{text}");
        let back: Value =
            serde_json::from_slice(&reveal(Some(&kek), b"m/M1", sealed.clone()).unwrap()).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(&rec).unwrap());
        // Another record, another KEK, no KEK: refused with the reason.
        let e = reveal(Some(&kek), b"m/M2", sealed.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not decrypt"), "{e}");
        let other = Kek::generate().unwrap();
        assert!(reveal(Some(&other), b"m/M1", sealed.clone()).is_err());
        let e = reveal(None, b"m/M1", sealed).unwrap_err().to_string();
        assert!(e.contains("[store] kek"), "{e}");
        // Swapping two fields' ciphertexts is found.
        let mut v: Value =
            serde_json::from_slice(&protect(Some(&kek), b"m/M1", rec.clone())).unwrap();
        let k = v["k"].clone();
        v["k"] = v["opc"].clone();
        v["opc"] = k;
        assert!(reveal(Some(&kek), b"m/M1", serde_json::to_vec(&v).unwrap()).is_err());
        // Plain records (before a KEK) read as they are; other keys are never touched.
        assert_eq!(reveal(Some(&kek), b"m/M1", rec.clone()).unwrap(), rec);
        assert_eq!(protect(Some(&kek), b"tok/M1", rec.clone()), rec);
        // What `migrate` reseals: a record with a key in the clear, not one sealed or without keys.
        assert!(has_clear_secrets(b"m/M1", &rec));
        assert!(!has_clear_secrets(
            b"m/M1",
            &protect(Some(&kek), b"m/M1", rec.clone())
        ));
        assert!(!has_clear_secrets(
            b"c/C1",
            br#"{"id":"C1","meters":["M1"]}"#
        ));
        assert!(!has_clear_secrets(b"tok/M1", &rec));
    }

    #[test]
    fn the_file_is_created_0600_once_and_a_readable_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("kek-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kek.hex");
        let a = Kek::create(&path).unwrap();
        assert!(Kek::create(&path).is_err(), "never over an existing key");
        let b = Kek::load(&path).unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(format!("{b:?}"), "Kek(<redacted>)");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Kek::load(&path).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
