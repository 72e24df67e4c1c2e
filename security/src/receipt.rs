//! Receipts: the gateway's signed statement that it applied a token to a meter, with the balance after.
//!
//! Canonical encoding (what is signed):
//!
//! ```text
//! u8        tag 'R' (0x52)
//! u8        version (1)
//! u8 + n    meter id (as in the token)
//! u64       token serial
//! u64       amount applied, minor units
//! 3         currency
//! u64       applied at, unix seconds
//! i64       balance after, minor units (may be negative: debt)
//! u8 + n    gateway id, 1..=64 printable ASCII
//! ```

use thiserror::Error;

use crate::pki::{PkiError, Role, TrustStore};
use crate::signed::{DocumentSigner, SignedDocument};
use crate::wire::{put_u8_prefixed, Malformed, Reader};

/// Type tag of a receipt body.
pub const RECEIPT_TAG: u8 = b'R';
/// Receipt body version.
pub const RECEIPT_VERSION: u8 = 1;

/// A receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    /// The meter number.
    pub meter_id: String,
    /// The applied token's serial.
    pub serial: u64,
    /// Amount applied, minor units.
    pub amount_minor: u64,
    /// Currency.
    pub currency: [u8; 3],
    /// When it was applied, unix seconds.
    pub applied_at: u64,
    /// The meter's balance after, minor units.
    pub balance_after_minor: i64,
    /// The gateway that applied it.
    pub gateway_id: String,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReceiptError {
    /// The octets do not parse.
    #[error("malformed receipt: bad or truncated {what} at offset {offset}")]
    Malformed {
        /// The field.
        what: &'static str,
        /// Its offset.
        offset: usize,
    },
    /// The signature does not verify.
    #[error("receipt signature does not verify: altered or forged")]
    BadSignature,
    /// The signer's chain or role is not accepted (only gateway certificates sign receipts).
    #[error("receipt signer not accepted: {0}")]
    Signer(#[from] PkiError),
    /// A field the encoder refuses.
    #[error("receipt field {0} is invalid: {1}")]
    InvalidField(&'static str, &'static str),
}

impl From<Malformed> for ReceiptError {
    fn from(m: Malformed) -> Self {
        ReceiptError::Malformed {
            what: m.what,
            offset: m.offset,
        }
    }
}

fn printable(b: &[u8], max: usize) -> bool {
    !b.is_empty() && b.len() <= max && b.iter().all(|c| c.is_ascii_graphic())
}

impl Receipt {
    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, ReceiptError> {
        if !printable(self.meter_id.as_bytes(), 32) {
            return Err(ReceiptError::InvalidField(
                "meter_id",
                "1 to 32 printable ASCII characters",
            ));
        }
        if !printable(self.gateway_id.as_bytes(), 64) {
            return Err(ReceiptError::InvalidField(
                "gateway_id",
                "1 to 64 printable ASCII characters",
            ));
        }
        let mut out = vec![RECEIPT_TAG, RECEIPT_VERSION];
        put_u8_prefixed(&mut out, self.meter_id.as_bytes())
            .ok_or(ReceiptError::InvalidField("meter_id", "too long"))?;
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.amount_minor.to_be_bytes());
        out.extend_from_slice(&self.currency);
        out.extend_from_slice(&self.applied_at.to_be_bytes());
        out.extend_from_slice(&self.balance_after_minor.to_be_bytes());
        put_u8_prefixed(&mut out, self.gateway_id.as_bytes())
            .ok_or(ReceiptError::InvalidField("gateway_id", "too long"))?;
        Ok(out)
    }

    /// Parses a canonical encoding; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let mut r = Reader::new(bytes);
        r.expect_u8("tag", RECEIPT_TAG)?;
        r.expect_u8("version", RECEIPT_VERSION)?;
        let off = r.offset();
        let meter = r.bytes_u8("meter_id")?;
        if !printable(meter, 32) {
            return Err(Malformed {
                what: "meter_id",
                offset: off,
            }
            .into());
        }
        let serial = r.u64("serial")?;
        let amount_minor = r.u64("amount")?;
        let currency = r.array::<3>("currency")?;
        let applied_at = r.u64("applied_at")?;
        let balance_after_minor = i64::from_be_bytes(r.array::<8>("balance_after")?);
        let off = r.offset();
        let gw = r.bytes_u8("gateway_id")?;
        if !printable(gw, 64) {
            return Err(Malformed {
                what: "gateway_id",
                offset: off,
            }
            .into());
        }
        r.finish()?;
        Ok(Receipt {
            meter_id: String::from_utf8_lossy(meter).into_owned(),
            serial,
            amount_minor,
            currency,
            applied_at,
            balance_after_minor,
            gateway_id: String::from_utf8_lossy(gw).into_owned(),
        })
    }

    /// Signs with the gateway's device key.
    pub fn sign(&self, gateway: &DocumentSigner) -> Result<SignedDocument, ReceiptError> {
        Ok(gateway.sign(self.encode()?)?)
    }
}

/// Verifies receipts (head-end, phone client).
#[derive(Debug)]
pub struct ReceiptVerifier {
    trust: TrustStore,
}

impl ReceiptVerifier {
    /// Trusts receipts whose gateway certificate chains to one of `utility_cas`.
    pub fn new(utility_cas: Vec<openssl::x509::X509>) -> Self {
        ReceiptVerifier {
            trust: TrustStore::new(utility_cas),
        }
    }

    /// The trusted utility CAs.
    pub(crate) fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Verifies the chain (gateway role) and the signature, and returns the receipt.
    pub fn verify(&self, signed: &SignedDocument, now: u64) -> Result<Receipt, ReceiptError> {
        let receipt = Receipt::decode(&signed.body)?;
        let signer = self.trust.verify_chain(&signed.chain, Role::Gateway, now)?;
        let ec = signer
            .key
            .ec_key()
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        if !signed.signature_valid(&ec) {
            return Err(ReceiptError::BadSignature);
        }
        Ok(receipt)
    }
}
