//! The utility's PKI as this system uses it: one or more utility CA certificates are the trust anchors;
//! the head-end, each gateway and each phone client hold a P-256 key with a certificate that chains to
//! them. The role of a certificate is its subject organizational-unit name: `head-end`, `gateway` or
//! `phone`. Tokens must be signed by a `head-end` certificate, receipts by a `gateway` certificate, so a
//! gateway cannot mint credit and the head-end cannot forge a receipt (cross-validation).
//!
//! Chain verification costs several signature checks, so a verified chain is cached (by its SHA-256)
//! with its validity period; a repeated signer costs only a hash and a look-up.

use std::collections::HashMap;
use std::sync::Mutex;

use openssl::asn1::Asn1Time;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509StoreContext, X509};
use thiserror::Error;

/// Cached chains kept at most; the cache is emptied when it grows past this.
const CACHE_LIMIT: usize = 4096;

/// The role a certificate is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The head-end: signs credit tokens. Subject OU `head-end`.
    HeadEnd,
    /// A gateway: signs receipts. Subject OU `gateway`.
    Gateway,
    /// A phone client. Subject OU `phone`.
    Phone,
}

impl Role {
    /// The subject organizational-unit name that marks the role.
    pub fn ou(self) -> &'static str {
        match self {
            Role::HeadEnd => "head-end",
            Role::Gateway => "gateway",
            Role::Phone => "phone",
        }
    }
}

/// Why a certificate chain was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PkiError {
    /// The chain does not lead to a trusted utility CA (or a certificate in it is invalid or expired).
    #[error(
        "signer certificate issued by {issuer:?} does not chain to a trusted utility CA: {reason}"
    )]
    UntrustedChain {
        /// The issuer of the signer's certificate.
        issuer: String,
        /// openssl's verdict.
        reason: String,
    },
    /// The signer's certificate is trusted but not for this role.
    #[error("signer certificate has role {got:?}, not {expected:?}: a {expected:?} key must sign this document")]
    WrongRole {
        /// The OU found.
        got: Option<String>,
        /// The role needed.
        expected: Role,
    },
    /// A certificate or key could not be parsed or used.
    #[error("bad certificate or key: {0}")]
    BadCertificate(String),
}

fn ossl(e: openssl::error::ErrorStack) -> PkiError {
    PkiError::BadCertificate(e.to_string())
}

fn name_to_string(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn unix(t: &openssl::asn1::Asn1TimeRef) -> Result<i64, PkiError> {
    let epoch = Asn1Time::from_unix(0).map_err(ossl)?;
    let d = epoch.diff(t).map_err(ossl)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The identifier of a public key: the first 8 octets of SHA-256 over its SubjectPublicKeyInfo DER.
pub fn key_id(key: &PKey<Public>) -> Result<[u8; 8], PkiError> {
    let der = key.public_key_to_der().map_err(ossl)?;
    let digest = hash(MessageDigest::sha256(), &der).map_err(ossl)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    Ok(id)
}

#[derive(Debug, Clone)]
struct Verified {
    key: PKey<Public>,
    key_id: [u8; 8],
    not_before: i64,
    not_after: i64,
}

/// A verified signer: its public key and key id.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The public key.
    pub key: PKey<Public>,
    /// Its key id.
    pub key_id: [u8; 8],
}

/// The trusted utility CA certificates and a cache of chains already verified.
pub struct TrustStore {
    anchors: Vec<X509>,
    cache: Mutex<HashMap<([u8; 32], Role), Verified>>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl TrustStore {
    /// Trusts the given utility CA certificates.
    pub fn new(anchors: Vec<X509>) -> Self {
        TrustStore {
            anchors,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn store(&self, now: i64) -> Result<X509Store, openssl::error::ErrorStack> {
        let mut b = X509StoreBuilder::new()?;
        for ca in &self.anchors {
            b.add_cert(ca.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(now as _);
        b.set_param(&param)?;
        Ok(b.build())
    }

    /// Verifies that `chain` (DER; the signer's certificate first, then any intermediates) leads to a
    /// trusted CA at time `now` and that the signer has `role`; returns the signer's key.
    pub fn verify_chain(
        &self,
        chain: &[Vec<u8>],
        role: Role,
        now: u64,
    ) -> Result<Signer, PkiError> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let mut hasher = openssl::sha::Sha256::new();
        for c in chain {
            hasher.update(&(c.len() as u64).to_be_bytes());
            hasher.update(c);
        }
        let digest = hasher.finish();
        if let Ok(cache) = self.cache.lock() {
            if let Some(v) = cache.get(&(digest, role)) {
                if v.not_before <= now && now <= v.not_after {
                    return Ok(Signer {
                        key: v.key.clone(),
                        key_id: v.key_id,
                    });
                }
            }
        }
        let verified = self.verify_uncached(chain, role, now)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert((digest, role), verified.clone());
        }
        Ok(Signer {
            key: verified.key,
            key_id: verified.key_id,
        })
    }

    fn verify_uncached(
        &self,
        chain: &[Vec<u8>],
        role: Role,
        now: i64,
    ) -> Result<Verified, PkiError> {
        let certs = chain
            .iter()
            .map(|d| X509::from_der(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ossl)?;
        let Some((leaf, rest)) = certs.split_first() else {
            return Err(PkiError::BadCertificate("empty certificate chain".into()));
        };
        let issuer = name_to_string(leaf.issuer_name());
        let mut stack = Stack::new().map_err(ossl)?;
        for c in rest {
            stack.push(c.clone()).map_err(ossl)?;
        }
        let store = self.store(now).map_err(ossl)?;
        let mut ctx = X509StoreContext::new().map_err(ossl)?;
        let ok = ctx
            .init(&store, leaf, &stack, |c| {
                let ok = c.verify_cert()?;
                Ok(if ok {
                    None
                } else {
                    Some(c.error().error_string().to_string())
                })
            })
            .map_err(ossl)?;
        if let Some(reason) = ok {
            return Err(PkiError::UntrustedChain { issuer, reason });
        }
        let ou = leaf
            .subject_name()
            .entries_by_nid(Nid::ORGANIZATIONALUNITNAME)
            .next()
            .and_then(|e| e.data().to_string().ok());
        if ou.as_deref() != Some(role.ou()) {
            return Err(PkiError::WrongRole {
                got: ou,
                expected: role,
            });
        }
        let key = leaf.public_key().map_err(ossl)?;
        let mut not_before = unix(leaf.not_before())?;
        let mut not_after = unix(leaf.not_after())?;
        for c in &certs {
            not_before = not_before.max(unix(c.not_before())?);
            not_after = not_after.min(unix(c.not_after())?);
        }
        Ok(Verified {
            key_id: key_id(&key)?,
            key,
            not_before,
            not_after,
        })
    }
}
