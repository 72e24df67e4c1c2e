//! Detached signatures of plugin files, and the trusted vendor keys that check them.
//!
//! A plugin `libfoo.so` is signed by `libfoo.so.sig`, a small text file:
//!
//! ```text
//! concentrator-plugin-signature 2
//! algorithm ed25519
//! key-id 3f2a9c0d11e4b7a8
//! plugin acme-meter
//! version 1.2.0
//! file-sha256 <64 hex digits>
//! signature <hex>
//! ```
//!
//! The signed message is `concentrator-plugin-signature-v2\0`, the plugin's name, `\0`, its version,
//! `\0`, then the 32-byte SHA-256 of the file: Ed25519 signs it as is, ECDSA P-256 signs its SHA-256.
//! Binding the name and version lets the loader refuse a file that declares otherwise and an older
//! signed build swapped back in (see `versions`). Format 1 (the hash alone) is refused with a message
//! to re-sign. The key id is the first 8 bytes of the
//! SHA-256 of the public key's DER (SubjectPublicKeyInfo), in hex. The `file-sha256` line lets a check
//! say "the file changed after signing" instead of only "bad signature".

use std::fmt;
use std::path::{Path, PathBuf};

use openssl::ec::EcKey;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};

use crate::error::{KeyError, SignatureError};

const MAGIC: &str = "concentrator-plugin-signature 2";
const MAGIC_V1: &str = "concentrator-plugin-signature 1";
const DOMAIN: &[u8] = b"concentrator-plugin-signature-v2\0";

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over P-256 with SHA-256.
    EcdsaP256,
}

impl Algorithm {
    /// The name used in signature files.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256 => "ecdsa-p256-sha256",
        }
    }

    fn of_key<T: HasPublic>(key: &PKey<T>, origin: &str) -> Result<Self, KeyError> {
        match key.id() {
            Id::ED25519 => Ok(Algorithm::Ed25519),
            Id::EC => {
                let ec = key.ec_key().map_err(|source| KeyError::Crypto {
                    origin: origin.to_owned(),
                    action: "reading the EC key",
                    source,
                })?;
                match ec.group().curve_name() {
                    Some(Nid::X9_62_PRIME256V1) => Ok(Algorithm::EcdsaP256),
                    other => Err(KeyError::Unsupported {
                        origin: origin.to_owned(),
                        found: format!(
                            "EC ({})",
                            other
                                .and_then(|n| n.short_name().ok())
                                .unwrap_or("unnamed curve")
                        ),
                    }),
                }
            }
            other => Err(KeyError::Unsupported {
                origin: origin.to_owned(),
                found: format!("{other:?}"),
            }),
        }
    }
}

fn key_id<T: HasPublic>(key: &PKey<T>, origin: &str) -> Result<String, KeyError> {
    let der = key.public_key_to_der().map_err(|source| KeyError::Crypto {
        origin: origin.to_owned(),
        action: "encoding the public key",
        source,
    })?;
    let digest = hash(MessageDigest::sha256(), &der).map_err(|source| KeyError::Crypto {
        origin: origin.to_owned(),
        action: "hashing the public key",
        source,
    })?;
    Ok(hex::encode(&digest[..8]))
}

fn sha256(bytes: &[u8]) -> Result<[u8; 32], SignatureError> {
    let digest = hash(MessageDigest::sha256(), bytes).map_err(|source| SignatureError::Crypto {
        action: "hashing the plugin file",
        source,
    })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    Ok(out)
}

fn message(plugin: &str, version: &str, file_sha256: &[u8; 32]) -> Vec<u8> {
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(plugin.as_bytes());
    message.push(0);
    message.extend_from_slice(version.as_bytes());
    message.push(0);
    message.extend_from_slice(file_sha256);
    message
}

/// A name or version fit for a signature line: non-empty, at most 64 bytes, no whitespace or NUL.
fn check_word(what: &str, value: &str) -> Result<(), SignatureError> {
    if value.is_empty() || value.len() > 64 || value.chars().any(|c| c.is_whitespace() || c == '\0')
    {
        return Err(SignatureError::Malformed {
            reason: format!("the {what} `{value}` is empty, longer than 64 bytes or has spaces"),
        });
    }
    Ok(())
}

/// What a verified signature file vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The verified bytes of the file (load these, not the path).
    pub bytes: Vec<u8>,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The plugin name the signature binds.
    pub plugin: String,
    /// The version the signature binds.
    pub version: String,
}

/// The path of a plugin's signature file: the plugin's path with `.sig` appended.
pub fn signature_path(plugin: &Path) -> PathBuf {
    let mut path = plugin.as_os_str().to_owned();
    path.push(".sig");
    PathBuf::from(path)
}

/// A parsed signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The algorithm.
    pub algorithm: String,
    /// The signing key's id.
    pub key_id: String,
    /// The plugin's declared name.
    pub plugin: String,
    /// The plugin's declared version.
    pub version: String,
    /// The SHA-256 of the signed file.
    pub file_sha256: [u8; 32],
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl Signature {
    /// Parses a signature file's text.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let malformed = |reason: String| SignatureError::Malformed { reason };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next();
        if first == Some(MAGIC_V1) {
            return Err(SignatureError::OldFormat);
        }
        if first != Some(MAGIC) {
            return Err(malformed(format!("the first line is not `{MAGIC}`")));
        }
        let (mut algorithm, mut key_id, mut file_sha256, mut signature) = (None, None, None, None);
        let (mut plugin, mut version) = (None, None);
        for line in lines {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| malformed(format!("line `{line}` has no value")))?;
            let value = value.trim();
            match key {
                "algorithm" => algorithm = Some(value.to_owned()),
                "key-id" => key_id = Some(value.to_owned()),
                "plugin" => plugin = Some(value.to_owned()),
                "version" => version = Some(value.to_owned()),
                "file-sha256" => {
                    let bytes = hex::decode(value)
                        .map_err(|e| malformed(format!("file-sha256 is not hex: {e}")))?;
                    let array: [u8; 32] = bytes
                        .try_into()
                        .map_err(|_| malformed(String::from("file-sha256 is not 32 bytes")))?;
                    file_sha256 = Some(array);
                }
                "signature" => {
                    signature = Some(
                        hex::decode(value)
                            .map_err(|e| malformed(format!("signature is not hex: {e}")))?,
                    )
                }
                other => return Err(malformed(format!("unknown field `{other}`"))),
            }
        }
        Ok(Signature {
            algorithm: algorithm.ok_or_else(|| malformed(String::from("no algorithm line")))?,
            key_id: key_id.ok_or_else(|| malformed(String::from("no key-id line")))?,
            plugin: plugin.ok_or_else(|| malformed(String::from("no plugin line")))?,
            version: version.ok_or_else(|| malformed(String::from("no version line")))?,
            file_sha256: file_sha256
                .ok_or_else(|| malformed(String::from("no file-sha256 line")))?,
            signature: signature.ok_or_else(|| malformed(String::from("no signature line")))?,
        })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{MAGIC}")?;
        writeln!(f, "algorithm {}", self.algorithm)?;
        writeln!(f, "key-id {}", self.key_id)?;
        writeln!(f, "plugin {}", self.plugin)?;
        writeln!(f, "version {}", self.version)?;
        writeln!(f, "file-sha256 {}", hex::encode(self.file_sha256))?;
        writeln!(f, "signature {}", hex::encode(&self.signature))
    }
}

/// A vendor's private key, for signing plugin files in the vendor's build pipeline.
pub struct SigningKey {
    key: PKey<Private>,
    algorithm: Algorithm,
    id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from PEM text (PKCS#8 or traditional EC); `origin` names it in errors.
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<Self, KeyError> {
        let key = PKey::private_key_from_pem(pem).map_err(|source| KeyError::Pem {
            origin: origin.to_owned(),
            expected: "private key",
            source,
        })?;
        let algorithm = Algorithm::of_key(&key, origin)?;
        let id = key_id(&key, origin)?;
        Ok(SigningKey { key, algorithm, id })
    }

    /// A key from a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    /// The key id that signatures name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs a file's bytes as plugin `plugin` version `version` (what the file declares).
    pub fn sign(
        &self,
        file: &[u8],
        plugin: &str,
        version: &str,
    ) -> Result<Signature, SignatureError> {
        check_word("plugin name", plugin)?;
        check_word("version", version)?;
        let digest = sha256(file)?;
        let message = message(plugin, version, &digest);
        let crypto = |source| SignatureError::Crypto {
            action: "signing",
            source,
        };
        let signature = match self.algorithm {
            Algorithm::Ed25519 => {
                let mut signer = Signer::new_without_digest(&self.key).map_err(crypto)?;
                signer.sign_oneshot_to_vec(&message).map_err(crypto)?
            }
            Algorithm::EcdsaP256 => {
                let mut signer = Signer::new(MessageDigest::sha256(), &self.key).map_err(crypto)?;
                signer.update(&message).map_err(crypto)?;
                signer.sign_to_vec().map_err(crypto)?
            }
        };
        Ok(Signature {
            algorithm: self.algorithm.name().to_owned(),
            key_id: self.id.clone(),
            plugin: plugin.to_owned(),
            version: version.to_owned(),
            file_sha256: digest,
            signature,
        })
    }

    /// Signs the file at `path` as plugin `plugin` version `version` and writes `path.sig`; returns the
    /// signature file's path.
    pub fn sign_file(
        &self,
        path: &Path,
        plugin: &str,
        version: &str,
    ) -> Result<PathBuf, SignatureError> {
        let bytes = std::fs::read(path).map_err(|source| SignatureError::Io {
            path: path.to_owned(),
            source,
        })?;
        let signature = self.sign(&bytes, plugin, version)?;
        let sig_path = signature_path(path);
        std::fs::write(&sig_path, signature.to_string()).map_err(|source| SignatureError::Io {
            path: sig_path.clone(),
            source,
        })?;
        Ok(sig_path)
    }
}

struct TrustedKey {
    id: String,
    algorithm: Algorithm,
    key: PKey<Public>,
    origin: String,
}

/// The vendor public keys the appliance trusts, from the daemon's config.
#[derive(Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| format!("{} ({}, {})", k.id, k.algorithm.name(), k.origin)),
            )
            .finish()
    }
}

impl TrustedKeys {
    /// No trusted keys: every plugin file is refused (static drivers still register).
    pub fn none() -> Self {
        TrustedKeys::default()
    }

    /// One key from PEM text (a `PUBLIC KEY` block); `origin` names it in errors.
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<Self, KeyError> {
        let mut keys = TrustedKeys::default();
        keys.add_pem(pem, origin)?;
        Ok(keys)
    }

    /// Keys from PEM files, one public key each.
    pub fn from_pem_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, KeyError> {
        let mut keys = TrustedKeys::default();
        for path in paths {
            let path = path.as_ref();
            let pem = std::fs::read(path).map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })?;
            keys.add_pem(&pem, &path.display().to_string())?;
        }
        Ok(keys)
    }

    /// Adds a key from PEM text.
    pub fn add_pem(&mut self, pem: &[u8], origin: &str) -> Result<(), KeyError> {
        let key = PKey::public_key_from_pem(pem).map_err(|source| KeyError::Pem {
            origin: origin.to_owned(),
            expected: "public key",
            source,
        })?;
        let algorithm = Algorithm::of_key(&key, origin)?;
        let id = key_id(&key, origin)?;
        self.keys.push(TrustedKey {
            id,
            algorithm,
            key,
            origin: origin.to_owned(),
        });
        Ok(())
    }

    /// The ids of the trusted keys.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a file's bytes against its signature; returns the id of the key that signed it.
    pub fn verify(&self, file: &[u8], signature: &Signature) -> Result<String, SignatureError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == signature.key_id)
            .ok_or_else(|| SignatureError::UnknownKey {
                key_id: signature.key_id.clone(),
                trusted: if self.keys.is_empty() {
                    String::from("none")
                } else {
                    self.ids().join(", ")
                },
            })?;
        if signature.algorithm != key.algorithm.name() {
            return Err(SignatureError::AlgorithmMismatch {
                key_id: key.id.clone(),
                found: signature.algorithm.clone(),
                expected: key.algorithm.name(),
            });
        }
        let actual = sha256(file)?;
        if actual != signature.file_sha256 {
            return Err(SignatureError::FileChanged {
                signed: hex::encode(signature.file_sha256),
                actual: hex::encode(actual),
            });
        }
        let message = message(&signature.plugin, &signature.version, &actual);
        let crypto = |source| SignatureError::Crypto {
            action: "verifying",
            source,
        };
        let valid = match key.algorithm {
            Algorithm::Ed25519 => {
                let mut verifier = Verifier::new_without_digest(&key.key).map_err(crypto)?;
                verifier
                    .verify_oneshot(&signature.signature, &message)
                    .unwrap_or(false)
            }
            Algorithm::EcdsaP256 => {
                let mut verifier =
                    Verifier::new(MessageDigest::sha256(), &key.key).map_err(crypto)?;
                verifier.update(&message).map_err(crypto)?;
                // A malformed DER signature is an error in OpenSSL; to us it is just a bad signature.
                verifier.verify(&signature.signature).unwrap_or(false)
            }
        };
        if valid {
            Ok(key.id.clone())
        } else {
            Err(SignatureError::BadSignature {
                key_id: key.id.clone(),
            })
        }
    }

    /// Reads `path` and `path.sig` and checks them; returns the verified bytes, the key id and the name
    /// and version the signature binds.
    pub fn verify_file(&self, path: &Path) -> Result<Verified, SignatureError> {
        let sig_path = signature_path(path);
        let text = match std::fs::read_to_string(&sig_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SignatureError::Missing { sig_path })
            }
            Err(source) => {
                return Err(SignatureError::Io {
                    path: sig_path,
                    source,
                })
            }
        };
        let signature = Signature::parse(&text)?;
        let bytes = std::fs::read(path).map_err(|source| SignatureError::Io {
            path: path.to_owned(),
            source,
        })?;
        let key_id = self.verify(&bytes, &signature)?;
        Ok(Verified {
            bytes,
            key_id,
            plugin: signature.plugin,
            version: signature.version,
        })
    }
}

/// Makes a new key pair as PEM (private, public), for tests and for `concentrator plugins` examples.
pub fn generate_key_pem(algorithm: Algorithm) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let crypto = |action| {
        move |source| KeyError::Crypto {
            origin: String::from("a new key"),
            action,
            source,
        }
    };
    let key = match algorithm {
        Algorithm::Ed25519 => {
            PKey::generate_ed25519().map_err(crypto("generating an Ed25519 key"))?
        }
        Algorithm::EcdsaP256 => {
            let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                .map_err(crypto("choosing the P-256 curve"))?;
            let ec = EcKey::generate(&group).map_err(crypto("generating a P-256 key"))?;
            PKey::from_ec_key(ec).map_err(crypto("wrapping the P-256 key"))?
        }
    };
    let private = key
        .private_key_to_pem_pkcs8()
        .map_err(crypto("encoding the private key"))?;
    let public = key
        .public_key_to_pem()
        .map_err(crypto("encoding the public key"))?;
    Ok((private, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(algorithm: Algorithm) {
        let (private, public) = generate_key_pem(algorithm).unwrap();
        let signer = SigningKey::from_pem(&private, "test").unwrap();
        let trusted = TrustedKeys::from_pem(&public, "test").unwrap();
        let file = b"\x7fELF pretend plugin".to_vec();
        let signature =
            Signature::parse(&signer.sign(&file, "acme", "1.2.0").unwrap().to_string()).unwrap();
        assert_eq!(trusted.verify(&file, &signature).unwrap(), signer.id());
        assert_eq!(
            (signature.plugin.as_str(), signature.version.as_str()),
            ("acme", "1.2.0")
        );

        // The name and version are signed: an older version's signature moved onto the file fails.
        let mut relabelled = signature.clone();
        relabelled.version = String::from("1.1.0");
        assert!(matches!(
            trusted.verify(&file, &relabelled),
            Err(SignatureError::BadSignature { .. })
        ));

        let mut changed = file.clone();
        changed[5] ^= 1;
        assert!(matches!(
            trusted.verify(&changed, &signature),
            Err(SignatureError::FileChanged { .. })
        ));

        let mut forged = signature.clone();
        forged.signature[3] ^= 0x40;
        assert!(matches!(
            trusted.verify(&file, &forged),
            Err(SignatureError::BadSignature { .. })
        ));

        let (_, other_public) = generate_key_pem(algorithm).unwrap();
        let other = TrustedKeys::from_pem(&other_public, "other").unwrap();
        let err = other.verify(&file, &signature).unwrap_err();
        assert!(err.to_string().contains(signer.id()), "{err}");
    }

    #[test]
    fn ed25519_signatures_round_trip_and_catch_changes() {
        round_trip(Algorithm::Ed25519);
    }

    #[test]
    fn ecdsa_p256_signatures_round_trip_and_catch_changes() {
        round_trip(Algorithm::EcdsaP256);
    }

    #[test]
    fn format_1_signatures_are_refused_with_the_fix() {
        let old = "concentrator-plugin-signature 1\nalgorithm ed25519\nkey-id 00\nfile-sha256 00\nsignature 00\n";
        let err = Signature::parse(old).unwrap_err().to_string();
        assert!(err.contains("format 1") && err.contains("re-sign"), "{err}");
        let (private, _) = generate_key_pem(Algorithm::Ed25519).unwrap();
        let signer = SigningKey::from_pem(&private, "test").unwrap();
        assert!(signer.sign(b"x", "two words", "1").is_err());
        assert!(signer.sign(b"x", "acme", "").is_err());
    }

    #[test]
    fn malformed_signature_files_say_what_is_wrong() {
        let err = Signature::parse("hello").unwrap_err().to_string();
        assert!(err.contains("first line"), "{err}");
        let err = Signature::parse(&format!("{MAGIC}\nalgorithm ed25519\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no key-id"), "{err}");
    }

    #[test]
    fn other_curves_are_refused() {
        let group = openssl::ec::EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let err = TrustedKeys::from_pem(&key.public_key_to_pem().unwrap(), "p384.pem")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p384.pem") && err.contains("Ed25519 or ECDSA P-256"),
            "{err}"
        );
    }
}
