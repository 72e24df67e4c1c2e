//! A signed document: canonical body octets, a DER ECDSA P-256/SHA-256 signature over them, and the
//! signer's certificate chain (DER). Shared by credit tokens and receipts.
//!
//! ```text
//! u8        version (1)
//! u16 + n   body (the canonical encoding, which starts with its own type tag)
//! u16 + n   signature, DER ECDSA-Sig-Value
//! u8        number of certificates c (1..=4), then c times: u16 + n  certificate DER, signer first
//! ```

use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::pki::{key_id, PkiError};
use crate::wire::{put_u16_prefixed, Malformed, Reader};

/// The container format version.
pub const SIGNED_VERSION: u8 = 1;
/// Most certificates a chain may carry.
pub const MAX_CHAIN: usize = 4;

/// A signed document as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDocument {
    /// The canonical body octets that were signed.
    pub body: Vec<u8>,
    /// DER ECDSA signature.
    pub signature: Vec<u8>,
    /// Certificate chain, DER, signer first.
    pub chain: Vec<Vec<u8>>,
}

impl SignedDocument {
    /// Encodes for the wire; `None` if a field does not fit its length prefix.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = vec![SIGNED_VERSION];
        put_u16_prefixed(&mut out, &self.body)?;
        put_u16_prefixed(&mut out, &self.signature)?;
        if self.chain.is_empty() || self.chain.len() > MAX_CHAIN {
            return None;
        }
        out.push(self.chain.len() as u8);
        for c in &self.chain {
            put_u16_prefixed(&mut out, c)?;
        }
        Some(out)
    }

    /// Decodes from the wire; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let off = r.offset();
        if r.u8("container version")? != SIGNED_VERSION {
            return Err(Malformed {
                what: "container version",
                offset: off,
            });
        }
        let body = r.bytes_u16("body")?.to_vec();
        let signature = r.bytes_u16("signature")?.to_vec();
        let off = r.offset();
        let n = usize::from(r.u8("certificate count")?);
        if n == 0 || n > MAX_CHAIN {
            return Err(Malformed {
                what: "certificate count",
                offset: off,
            });
        }
        let mut chain = Vec::with_capacity(n);
        for _ in 0..n {
            chain.push(r.bytes_u16("certificate")?.to_vec());
        }
        r.finish()?;
        Ok(SignedDocument {
            body,
            signature,
            chain,
        })
    }

    /// Checks the signature over the body with `key`: false for a wrong or unparsable signature.
    pub fn signature_valid(&self, key: &openssl::ec::EcKeyRef<openssl::pkey::Public>) -> bool {
        let Ok(digest) = hash(MessageDigest::sha256(), &self.body) else {
            return false;
        };
        let Ok(sig) = EcdsaSig::from_der(&self.signature) else {
            return false;
        };
        sig.verify(&digest, key).unwrap_or(false)
    }
}

/// A private P-256 key with its certificate chain, for signing tokens (head-end) or receipts (gateway).
pub struct DocumentSigner {
    key: PKey<Private>,
    chain: Vec<Vec<u8>>,
    key_id: [u8; 8],
}

impl std::fmt::Debug for DocumentSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentSigner")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl DocumentSigner {
    /// A signer from its key and its chain (its own certificate first, then intermediates; not the CA).
    pub fn new(key: PKey<Private>, chain: &[X509]) -> Result<Self, PkiError> {
        let bad = |e: openssl::error::ErrorStack| PkiError::BadCertificate(e.to_string());
        if chain.is_empty() || chain.len() > MAX_CHAIN {
            return Err(PkiError::BadCertificate(format!(
                "chain of {} certificates; give 1 to {MAX_CHAIN}",
                chain.len()
            )));
        }
        let der = chain
            .iter()
            .map(|c| c.to_der())
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let public = chain[0].public_key().map_err(bad)?;
        if !public.public_eq(&key) {
            return Err(PkiError::BadCertificate(
                "the private key does not match the first certificate".into(),
            ));
        }
        Ok(DocumentSigner {
            key_id: key_id(&public)?,
            key,
            chain: der,
        })
    }

    /// The key id that documents signed by this signer must carry.
    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }

    /// Signs canonical body octets.
    pub fn sign(&self, body: Vec<u8>) -> Result<SignedDocument, PkiError> {
        let bad = |e: openssl::error::ErrorStack| PkiError::BadCertificate(e.to_string());
        let digest = hash(MessageDigest::sha256(), &body).map_err(bad)?;
        let ec = self.key.ec_key().map_err(bad)?;
        let sig = EcdsaSig::sign(&digest, &ec)
            .map_err(bad)?
            .to_der()
            .map_err(bad)?;
        Ok(SignedDocument {
            body,
            signature: sig,
            chain: self.chain.clone(),
        })
    }
}
