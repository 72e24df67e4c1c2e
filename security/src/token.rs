//! Credit tokens: the head-end's signed promise that one meter may add an amount of credit, once.
//!
//! Canonical encoding (what is signed; fixed field order, big-endian):
//!
//! ```text
//! u8        tag 'T' (0x54)
//! u8        version (1)
//! u8 + n    meter id: the utility's meter number, 1..=32 printable ASCII characters
//! u64       serial, per meter, strictly increasing
//! u64       amount in minor currency units
//! 3         currency, ISO 4217 letters (e.g. "EUR")
//! u64       issued at, unix seconds
//! u64       expires at, unix seconds
//! 8         key id of the signing key (see [`crate::pki::key_id`])
//! ```
//!
//! The meter id is the meter number printed on the meter (the contract's meter), not the KID: tokens pass
//! through the phone client and the KID must not travel in clear.
//!
//! Clocks: the verifier's clock may be behind the head-end's by up to [`ISSUED_AT_TOLERANCE_S`] (a
//! gateway without a real-time clock); a token issued further in its future is refused as not yet
//! valid, which is the gateway's clock's fault, not the token's ([`TokenError::retry_later`]). Expiry has
//! no tolerance: refused at and after `expires_at` by the verifier's clock, so that the head-end knows a
//! token is certainly dead at `expires_at + ISSUED_AT_TOLERANCE_S` by its own clock (a gateway clock
//! behind by at most that may still apply it until then); with lifetimes of days, a gateway clock ahead
//! by minutes shortens the lifetime by a negligible share.

use thiserror::Error;

use crate::clock::{LocalTime, MAX_CLOCK_SKEW_S};
use crate::pki::{PkiError, Role, TrustStore};
use crate::signed::{DocumentSigner, SignedDocument};
use crate::wire::{put_u8_prefixed, Malformed, Reader};

/// Type tag of a token body.
pub const TOKEN_TAG: u8 = b'T';
/// Token body version.
pub const TOKEN_VERSION: u8 = 1;
/// Longest meter id.
pub const MAX_METER_ID: usize = 32;
/// How far in the future of the verifier's clock a token's issue time may lie, seconds: the system's
/// clock tolerance ([`MAX_CLOCK_SKEW_S`], the envelope's window too).
pub const ISSUED_AT_TOLERANCE_S: u64 = MAX_CLOCK_SKEW_S;

/// A credit token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CreditToken {
    /// The meter number (1..=32 printable ASCII).
    pub meter_id: String,
    /// Per-meter serial, issued in order by the head-end; the ledger applies each serial at most once, in
    /// any order (it remembers every serial it applied: docs/ledger.md).
    pub serial: u64,
    /// Amount in minor currency units (cents).
    pub amount_minor: u64,
    /// ISO 4217 currency code, three upper-case letters.
    pub currency: [u8; 3],
    /// Issue time, unix seconds.
    pub issued_at: u64,
    /// Expiry, unix seconds; the token is refused at and after this time.
    pub expires_at: u64,
    /// Key id of the head-end key that signs it.
    pub key_id: [u8; 8],
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    /// The octets do not parse.
    #[error("malformed token: bad or truncated {what} at offset {offset}; the token is corrupt or truncated")]
    Malformed {
        /// The field.
        what: &'static str,
        /// Its offset.
        offset: usize,
    },
    /// The signature does not verify with the signer's key: the token was altered or forged.
    #[error(
        "token signature does not verify: the token was altered or not signed by the certified key"
    )]
    BadSignature,
    /// The chain does not lead to a trusted utility CA.
    #[error("token signer is not trusted: certificate issued by {issuer:?} ({reason}); install the utility CA or reject the token")]
    UntrustedChain {
        /// The signer certificate's issuer.
        issuer: String,
        /// openssl's verdict.
        reason: String,
    },
    /// The signer is trusted but is not the head-end.
    #[error("token signed by a {got:?} certificate, not a head-end one: only the head-end issues credit")]
    NotHeadEnd {
        /// The signer's OU.
        got: Option<String>,
    },
    /// The token's key id is not the signer's.
    #[error("token key id {token:02x?} does not match the signer's key {signer:02x?}: re-issue the token")]
    KeyIdMismatch {
        /// In the token.
        token: [u8; 8],
        /// Of the signer.
        signer: [u8; 8],
    },
    /// The token is for another meter.
    #[error("token is for meter {got:?}, not {expected:?}")]
    WrongMeter {
        /// In the token.
        got: String,
        /// The meter applying it.
        expected: String,
    },
    /// The token expired.
    #[error("token expired at {} (this device's clock says {}): ask the head-end for a new one", LocalTime::of(.expires_at), LocalTime::of(.now))]
    Expired {
        /// Its expiry.
        expires_at: u64,
        /// The time given.
        now: u64,
    },
    /// The token's issue time lies more than [`ISSUED_AT_TOLERANCE_S`] in the future of the verifier's
    /// clock: that clock is behind the head-end's.
    #[error("token issued at {}, {} s after this device's clock ({}), more than the {ISSUED_AT_TOLERANCE_S} s a clock may lag the head-end's: this device's clock is behind; set it (NTP: `timedatectl timesync-status`) and apply the token again, the token itself is good", LocalTime::of(.issued_at), .issued_at.saturating_sub(*.now), LocalTime::of(.now))]
    NotYetValid {
        /// Its issue time.
        issued_at: u64,
        /// The time given.
        now: u64,
    },
    /// Another certificate or key problem.
    #[error("token certificate problem: {0}")]
    Certificate(String),
    /// A field value the encoder refuses.
    #[error("token field {0} is invalid: {1}")]
    InvalidField(&'static str, &'static str),
}

impl TokenError {
    /// True when the refusal comes from this device's clock being behind, not from the token: the issue
    /// time is too far ahead, or a certificate in the chain is not valid yet. The same token applies
    /// once the clock is right, so a caller answers "try later" (a temporary outcome), not "refused".
    pub fn retry_later(&self) -> bool {
        match self {
            TokenError::NotYetValid { .. } => true,
            TokenError::UntrustedChain { reason, .. } => reason.contains("not yet valid"),
            _ => false,
        }
    }
}

impl From<Malformed> for TokenError {
    fn from(m: Malformed) -> Self {
        TokenError::Malformed {
            what: m.what,
            offset: m.offset,
        }
    }
}

impl From<PkiError> for TokenError {
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::UntrustedChain { issuer, reason } => {
                TokenError::UntrustedChain { issuer, reason }
            }
            PkiError::WrongRole { got, .. } => TokenError::NotHeadEnd { got },
            PkiError::BadCertificate(s) => TokenError::Certificate(s),
        }
    }
}

fn valid_meter_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_METER_ID && id.iter().all(|b| b.is_ascii_graphic())
}

impl CreditToken {
    /// The canonical encoding, which is what gets signed.
    pub fn encode(&self) -> Result<Vec<u8>, TokenError> {
        if !valid_meter_id(self.meter_id.as_bytes()) {
            return Err(TokenError::InvalidField(
                "meter_id",
                "1 to 32 printable ASCII characters",
            ));
        }
        if !self.currency.iter().all(u8::is_ascii_uppercase) {
            return Err(TokenError::InvalidField(
                "currency",
                "three upper-case ISO 4217 letters",
            ));
        }
        let mut out = vec![TOKEN_TAG, TOKEN_VERSION];
        put_u8_prefixed(&mut out, self.meter_id.as_bytes()).ok_or(TokenError::InvalidField(
            "meter_id",
            "at most 32 characters",
        ))?;
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.amount_minor.to_be_bytes());
        out.extend_from_slice(&self.currency);
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.key_id);
        Ok(out)
    }

    /// Parses a canonical encoding; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, TokenError> {
        let mut r = Reader::new(bytes);
        r.expect_u8("tag", TOKEN_TAG)?;
        r.expect_u8("version", TOKEN_VERSION)?;
        let off = r.offset();
        let meter = r.bytes_u8("meter_id")?;
        if !valid_meter_id(meter) {
            return Err(Malformed {
                what: "meter_id",
                offset: off,
            }
            .into());
        }
        let serial = r.u64("serial")?;
        let amount_minor = r.u64("amount")?;
        let off = r.offset();
        let currency = r.array::<3>("currency")?;
        if !currency.iter().all(u8::is_ascii_uppercase) {
            return Err(Malformed {
                what: "currency",
                offset: off,
            }
            .into());
        }
        let issued_at = r.u64("issued_at")?;
        let expires_at = r.u64("expires_at")?;
        let key_id = r.array::<8>("key_id")?;
        r.finish()?;
        Ok(CreditToken {
            meter_id: String::from_utf8_lossy(meter).into_owned(),
            serial,
            amount_minor,
            currency,
            issued_at,
            expires_at,
            key_id,
        })
    }
}

/// A token with its signature and the signer's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedToken(pub SignedDocument);

impl SignedToken {
    /// Wire octets.
    pub fn encode(&self) -> Result<Vec<u8>, TokenError> {
        self.0.encode().ok_or(TokenError::InvalidField(
            "signed token",
            "a field is too long for its length prefix",
        ))
    }

    /// Parses wire octets (structure only); never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, TokenError> {
        Ok(SignedToken(SignedDocument::decode(bytes)?))
    }
}

/// The head-end's token issuer.
#[derive(Debug)]
pub struct TokenSigner(pub(crate) DocumentSigner);

impl TokenSigner {
    /// From the head-end's signing key and certificate chain.
    pub fn new(signer: DocumentSigner) -> Self {
        TokenSigner(signer)
    }

    /// The key id to put in tokens.
    pub fn key_id(&self) -> [u8; 8] {
        self.0.key_id()
    }

    /// Signs a token; its key id is set to this signer's.
    pub fn sign(&self, token: &CreditToken) -> Result<SignedToken, TokenError> {
        let mut t = token.clone();
        t.key_id = self.0.key_id();
        Ok(SignedToken(self.0.sign(t.encode()?)?))
    }
}

/// Verifies tokens against the utility CA(s); used by the gateway, the phone client and the ledger.
#[derive(Debug)]
pub struct TokenVerifier {
    pub(crate) trust: TrustStore,
}

impl TokenVerifier {
    /// Trusts tokens whose head-end certificate chains to one of `utility_cas`.
    pub fn new(utility_cas: Vec<openssl::x509::X509>) -> Self {
        TokenVerifier {
            trust: TrustStore::new(utility_cas),
        }
    }

    /// The checks every head-end-signed document shares (tokens, account statements, tenancy orders):
    /// the chain to the utility CA, the head-end role, the signature, then that the document names the
    /// signer's key id (`key_id`, read from its body).
    pub(crate) fn check_head_end_document(
        &self,
        doc: &SignedDocument,
        key_id: [u8; 8],
        now: u64,
    ) -> Result<(), TokenError> {
        let signer = self.trust.verify_chain(&doc.chain, Role::HeadEnd, now)?;
        let ec = signer
            .key
            .ec_key()
            .map_err(|e| TokenError::Certificate(e.to_string()))?;
        if !doc.signature_valid(&ec) {
            return Err(TokenError::BadSignature);
        }
        if key_id != signer.key_id {
            return Err(TokenError::KeyIdMismatch {
                token: key_id,
                signer: signer.key_id,
            });
        }
        Ok(())
    }

    /// Verifies chain, role, signature, key id, meter and validity period, in that order. `now` is this
    /// device's clock; the token may be issued up to [`ISSUED_AT_TOLERANCE_S`] after it.
    pub fn verify(
        &self,
        signed: &SignedToken,
        expected_meter: &str,
        now: u64,
    ) -> Result<CreditToken, TokenError> {
        let token = CreditToken::decode(&signed.0.body)?;
        self.check_head_end_document(&signed.0, token.key_id, now)?;
        if token.meter_id != expected_meter {
            return Err(TokenError::WrongMeter {
                got: token.meter_id,
                expected: expected_meter.to_string(),
            });
        }
        if token.issued_at > now.saturating_add(ISSUED_AT_TOLERANCE_S) {
            return Err(TokenError::NotYetValid {
                issued_at: token.issued_at,
                now,
            });
        }
        if now >= token.expires_at {
            return Err(TokenError::Expired {
                expires_at: token.expires_at,
                now,
            });
        }
        Ok(token)
    }
}
