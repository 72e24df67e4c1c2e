//! Change of tenancy: the head-end's signed order that closes a meter's account and opens the next
//! tenant's, and the gateway's signed settlement that answers it.
//!
//! The **order** is signed with the head-end's token key and verified as a credit token is (chain to
//! the utility CA, head-end role, signature, key id, meter binding): only the party that issues credit
//! may end an account. Canonical encoding (what is signed; big-endian):
//!
//! ```text
//! u8        tag 'O' (0x4F)
//! u8        version (1)
//! u8 + n    meter id (as in tokens)
//! u64       order id (unique per head-end; a resent order carries the same id)
//! u8 + n    old customer id, 1..=64 printable ASCII
//! u8 + n    new customer id, 1..=64 printable ASCII
//! u64       effective at, unix seconds (the account closes at or after this time, never before)
//! u64       issued at, unix seconds
//! u64       last serial issued to the old customer (0: none); tokens up to it not applied yet are
//!           the old customer's money and are refused after the change
//! u64       opening credit of the new tenant, minor units
//! 3         currency, ISO 4217 letters
//! 8         key id of the signing key
//! ```
//!
//! The **settlement** is signed with the gateway's device key, as receipts are, and verified with a
//! [`crate::receipt::ReceiptVerifier`] (gateway role). Canonical encoding (big-endian):
//!
//! ```text
//! u8        tag 'S' (0x53)
//! u8        version (2)
//! u8 + n    meter id
//! u64       order id
//! u8 + n    old customer id
//! u32       tenancy number closed (1 for the meter's first account)
//! u64       closed at, unix seconds
//! u64       closing import register, Wh
//! 3         currency
//! u64       remaining credit, minor units (to refund)
//! u64       debt, minor units (to bill: arrears plus any negative balance)
//! u8 [u64]  last serial applied present (0/1), then the serial
//! u64       audit log entries up to and including the closing entry
//! 32        SHA-256 of the closing audit entry (the chain head)
//! u8 + n    gateway id
//! ```

use thiserror::Error;

use crate::pki::{PkiError, Role};
use crate::receipt::ReceiptVerifier;
use crate::signed::{DocumentSigner, SignedDocument};
use crate::token::{TokenError, TokenSigner, TokenVerifier, MAX_METER_ID};
use crate::wire::{put_u8_prefixed, Malformed, Reader};

/// Type tag of an order body.
pub const ORDER_TAG: u8 = b'O';
/// Order body version.
pub const ORDER_VERSION: u8 = 1;
/// Type tag of a settlement body.
pub const SETTLEMENT_TAG: u8 = b'S';
/// Settlement body version (version 1 was the ledger's own, without order or audit head).
pub const SETTLEMENT_VERSION: u8 = 2;
/// Longest customer or gateway id.
pub const MAX_PARTY_ID: usize = 64;

/// The head-end's order to change a meter's tenancy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancyOrder {
    /// The meter number.
    pub meter_id: String,
    /// The order's id (a resent order keeps it).
    pub order_id: u64,
    /// The customer who leaves.
    pub old_customer: String,
    /// The customer who moves in.
    pub new_customer: String,
    /// The account closes at or after this time, unix seconds.
    pub effective_at: u64,
    /// When the head-end signed it, unix seconds.
    pub issued_at: u64,
    /// The highest token serial issued to the old customer (0: none).
    pub last_old_serial: u64,
    /// The new tenant's opening credit, minor units.
    pub opening_credit_minor: u64,
    /// ISO 4217 currency of the amounts.
    pub currency: [u8; 3],
    /// Key id of the signing key (set when signed).
    pub key_id: [u8; 8],
}

/// The gateway's closing statement of an account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SettlementDocument {
    /// The meter number.
    pub meter_id: String,
    /// The order it answers.
    pub order_id: u64,
    /// The customer who left.
    pub old_customer: String,
    /// Tenancy number closed.
    pub account_no: u32,
    /// When closed, unix seconds.
    pub closed_at: u64,
    /// The import register at the close, Wh.
    pub closing_register_wh: u64,
    /// ISO 4217 currency of the amounts.
    pub currency: [u8; 3],
    /// Credit left, minor units: the head-end refunds it.
    pub remaining_credit_minor: u64,
    /// Debt left, minor units: the head-end bills it.
    pub debt_minor: u64,
    /// The highest serial applied to the meter when it closed.
    pub last_serial: Option<u64>,
    /// Audit log entries up to and including the closing entry.
    pub audit_len: u64,
    /// SHA-256 of the closing audit entry.
    pub audit_head: [u8; 32],
    /// The gateway that closed it.
    pub gateway_id: String,
}

/// Why an order or a settlement was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TenancyError {
    /// The signature, chain, role or key id failed (as for a token), or the octets do not parse.
    #[error("tenancy order refused: {0}")]
    Token(#[from] TokenError),
    /// A field that does not make sense.
    #[error("{what} field {field} is invalid: {reason}")]
    Invalid {
        /// Order or settlement.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The order is for another meter.
    #[error("tenancy order is for meter {got:?}, not {expected:?}")]
    WrongMeter {
        /// In the order.
        got: String,
        /// The meter it was given for.
        expected: String,
    },
    /// The settlement's signature does not verify.
    #[error("settlement signature does not verify: altered or forged")]
    BadSignature,
    /// The settlement's certificate chain failed.
    #[error("settlement signer: {0}")]
    Pki(#[from] PkiError),
}

impl From<Malformed> for TenancyError {
    fn from(m: Malformed) -> Self {
        TenancyError::Token(m.into())
    }
}

fn party_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_PARTY_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

fn meter_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_METER_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

fn bad(what: &'static str, field: &'static str, reason: &'static str) -> TenancyError {
    TenancyError::Invalid {
        what,
        field,
        reason,
    }
}

fn text(r: &mut Reader<'_>, what: &'static str) -> Result<String, TenancyError> {
    let off = r.offset();
    String::from_utf8(r.bytes_u8(what)?.to_vec())
        .map_err(|_| Malformed { what, offset: off }.into())
}

impl TenancyOrder {
    fn check(&self) -> Result<(), TenancyError> {
        const W: &str = "tenancy order";
        if !meter_ok(&self.meter_id) {
            return Err(bad(W, "meter_id", "1 to 32 printable ASCII characters"));
        }
        if !party_ok(&self.old_customer) {
            return Err(bad(W, "old_customer", "1 to 64 printable ASCII characters"));
        }
        if !party_ok(&self.new_customer) {
            return Err(bad(W, "new_customer", "1 to 64 printable ASCII characters"));
        }
        if self.old_customer == self.new_customer {
            return Err(bad(W, "new_customer", "the same as the old customer"));
        }
        if !self.currency.iter().all(u8::is_ascii_uppercase) {
            return Err(bad(W, "currency", "three upper-case ISO 4217 letters"));
        }
        if self.opening_credit_minor > i64::MAX as u64 {
            return Err(bad(W, "opening_credit", "too large"));
        }
        Ok(())
    }

    /// The canonical encoding, which is what gets signed.
    pub fn encode(&self) -> Result<Vec<u8>, TenancyError> {
        self.check()?;
        let mut out = vec![ORDER_TAG, ORDER_VERSION];
        let long = || bad("tenancy order", "id", "too long");
        put_u8_prefixed(&mut out, self.meter_id.as_bytes()).ok_or_else(long)?;
        out.extend_from_slice(&self.order_id.to_be_bytes());
        put_u8_prefixed(&mut out, self.old_customer.as_bytes()).ok_or_else(long)?;
        put_u8_prefixed(&mut out, self.new_customer.as_bytes()).ok_or_else(long)?;
        out.extend_from_slice(&self.effective_at.to_be_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.last_old_serial.to_be_bytes());
        out.extend_from_slice(&self.opening_credit_minor.to_be_bytes());
        out.extend_from_slice(&self.currency);
        out.extend_from_slice(&self.key_id);
        Ok(out)
    }

    /// Parses a canonical encoding and checks its fields; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, TenancyError> {
        let mut r = Reader::new(bytes);
        r.expect_u8("tag", ORDER_TAG)?;
        r.expect_u8("version", ORDER_VERSION)?;
        let meter_id = text(&mut r, "meter_id")?;
        let order_id = r.u64("order_id")?;
        let old_customer = text(&mut r, "old_customer")?;
        let new_customer = text(&mut r, "new_customer")?;
        let order = TenancyOrder {
            meter_id,
            order_id,
            old_customer,
            new_customer,
            effective_at: r.u64("effective_at")?,
            issued_at: r.u64("issued_at")?,
            last_old_serial: r.u64("last_old_serial")?,
            opening_credit_minor: r.u64("opening_credit")?,
            currency: r.array::<3>("currency")?,
            key_id: r.array::<8>("key_id")?,
        };
        r.finish()?;
        order.check()?;
        Ok(order)
    }

    /// Signs with the head-end's token key (the key id is set to the signer's) and returns the
    /// `SignedDocument` wire octets that go into a tenancy change message (0x8C) or an order file.
    pub fn sign(&self, signer: &TokenSigner) -> Result<Vec<u8>, TenancyError> {
        self.sign_with(&signer.0)
    }

    /// [`TenancyOrder::sign`] with the token key as a plain document signer.
    pub fn sign_with(&self, signer: &DocumentSigner) -> Result<Vec<u8>, TenancyError> {
        let mut o = self.clone();
        o.key_id = signer.key_id();
        let doc = signer
            .sign(o.encode()?)
            .map_err(|e| TenancyError::Token(e.into()))?;
        doc.encode().ok_or(bad(
            "tenancy order",
            "signed order",
            "a field is too long for its length prefix",
        ))
    }
}

impl SettlementDocument {
    fn check(&self) -> Result<(), TenancyError> {
        const W: &str = "settlement";
        if !meter_ok(&self.meter_id) {
            return Err(bad(W, "meter_id", "1 to 32 printable ASCII characters"));
        }
        if !party_ok(&self.old_customer) {
            return Err(bad(W, "old_customer", "1 to 64 printable ASCII characters"));
        }
        if !party_ok(&self.gateway_id) {
            return Err(bad(W, "gateway_id", "1 to 64 printable ASCII characters"));
        }
        if !self.currency.iter().all(u8::is_ascii_uppercase) {
            return Err(bad(W, "currency", "three upper-case ISO 4217 letters"));
        }
        if self.remaining_credit_minor > 0 && self.debt_minor > 0 {
            return Err(bad(
                W,
                "debt",
                "credit and debt at once; one of them is zero",
            ));
        }
        Ok(())
    }

    /// The canonical encoding, which is what gets signed.
    pub fn encode(&self) -> Result<Vec<u8>, TenancyError> {
        self.check()?;
        let long = || bad("settlement", "id", "too long");
        let mut out = vec![SETTLEMENT_TAG, SETTLEMENT_VERSION];
        put_u8_prefixed(&mut out, self.meter_id.as_bytes()).ok_or_else(long)?;
        out.extend_from_slice(&self.order_id.to_be_bytes());
        put_u8_prefixed(&mut out, self.old_customer.as_bytes()).ok_or_else(long)?;
        out.extend_from_slice(&self.account_no.to_be_bytes());
        out.extend_from_slice(&self.closed_at.to_be_bytes());
        out.extend_from_slice(&self.closing_register_wh.to_be_bytes());
        out.extend_from_slice(&self.currency);
        out.extend_from_slice(&self.remaining_credit_minor.to_be_bytes());
        out.extend_from_slice(&self.debt_minor.to_be_bytes());
        match self.last_serial {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.to_be_bytes());
            }
        }
        out.extend_from_slice(&self.audit_len.to_be_bytes());
        out.extend_from_slice(&self.audit_head);
        put_u8_prefixed(&mut out, self.gateway_id.as_bytes()).ok_or_else(long)?;
        Ok(out)
    }

    /// Parses a canonical encoding and checks its fields; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, TenancyError> {
        let mut r = Reader::new(bytes);
        r.expect_u8("tag", SETTLEMENT_TAG)?;
        r.expect_u8("version", SETTLEMENT_VERSION)?;
        let meter_id = text(&mut r, "meter_id")?;
        let order_id = r.u64("order_id")?;
        let old_customer = text(&mut r, "old_customer")?;
        let account_no = r.u32("account_no")?;
        let closed_at = r.u64("closed_at")?;
        let closing_register_wh = r.u64("closing_register")?;
        let currency = r.array::<3>("currency")?;
        let remaining_credit_minor = r.u64("remaining_credit")?;
        let debt_minor = r.u64("debt")?;
        let off = r.offset();
        let last_serial = match r.u8("last_serial")? {
            0 => None,
            1 => Some(r.u64("last_serial")?),
            _ => {
                return Err(Malformed {
                    what: "last_serial",
                    offset: off,
                }
                .into())
            }
        };
        let audit_len = r.u64("audit_len")?;
        let audit_head = r.array::<32>("audit_head")?;
        let gateway_id = text(&mut r, "gateway_id")?;
        r.finish()?;
        let s = SettlementDocument {
            meter_id,
            order_id,
            old_customer,
            account_no,
            closed_at,
            closing_register_wh,
            currency,
            remaining_credit_minor,
            debt_minor,
            last_serial,
            audit_len,
            audit_head,
            gateway_id,
        };
        s.check()?;
        Ok(s)
    }

    /// Signs with the gateway's device key; returns the `SignedDocument` wire octets.
    pub fn sign(&self, gateway: &DocumentSigner) -> Result<Vec<u8>, TenancyError> {
        let doc = gateway
            .sign(self.encode()?)
            .map_err(|e| TenancyError::Token(e.into()))?;
        doc.encode().ok_or(bad(
            "settlement",
            "signed settlement",
            "a field is too long for its length prefix",
        ))
    }
}

impl TokenVerifier {
    /// Verifies a signed tenancy order (wire octets) as a credit token is verified: chain to the
    /// utility CA, head-end role, signature, key id, then the meter binding. An order has no expiry: it
    /// is applied once, and a resent one is answered with the same settlement.
    pub fn verify_order(
        &self,
        signed: &[u8],
        expected_meter: Option<&str>,
        now: u64,
    ) -> Result<TenancyOrder, TenancyError> {
        let doc = SignedDocument::decode(signed)?;
        let order = TenancyOrder::decode(&doc.body)?;
        self.check_head_end_document(&doc, order.key_id, now)?;
        if let Some(expected) = expected_meter {
            if order.meter_id != expected {
                return Err(TenancyError::WrongMeter {
                    got: order.meter_id,
                    expected: expected.to_string(),
                });
            }
        }
        Ok(order)
    }
}

impl ReceiptVerifier {
    /// Verifies a signed settlement (wire octets): chain to the utility CA with the gateway role, and
    /// the signature. The caller checks that the signer is the gateway the settlement names.
    pub fn verify_settlement(
        &self,
        signed: &[u8],
        now: u64,
    ) -> Result<(SettlementDocument, SignedDocument), TenancyError> {
        let doc = SignedDocument::decode(signed)?;
        let s = SettlementDocument::decode(&doc.body)?;
        let signer = self.trust().verify_chain(&doc.chain, Role::Gateway, now)?;
        let ec = signer
            .key
            .ec_key()
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        if !doc.signature_valid(&ec) {
            return Err(TenancyError::BadSignature);
        }
        Ok((s, doc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> TenancyOrder {
        TenancyOrder {
            meter_id: "M1".into(),
            order_id: 7,
            old_customer: "C-1".into(),
            new_customer: "C-2".into(),
            effective_at: 1_700_000_000,
            issued_at: 1_699_999_000,
            last_old_serial: 4,
            opening_credit_minor: 0,
            currency: *b"EUR",
            key_id: [3; 8],
        }
    }

    fn settlement() -> SettlementDocument {
        SettlementDocument {
            meter_id: "M1".into(),
            order_id: 7,
            old_customer: "C-1".into(),
            account_no: 1,
            closed_at: 1_700_000_010,
            closing_register_wh: 12_345,
            currency: *b"EUR",
            remaining_credit_minor: 1_900,
            debt_minor: 0,
            last_serial: Some(4),
            audit_len: 12,
            audit_head: [9; 32],
            gateway_id: "gw-1".into(),
        }
    }

    #[test]
    fn orders_and_settlements_round_trip_and_every_truncation_is_an_error() {
        let o = order();
        let bytes = o.encode().unwrap();
        assert_eq!(TenancyOrder::decode(&bytes).unwrap(), o);
        for cut in 0..bytes.len() {
            assert!(TenancyOrder::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let s = settlement();
        let bytes = s.encode().unwrap();
        assert_eq!(SettlementDocument::decode(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(
                SettlementDocument::decode(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let none = SettlementDocument {
            last_serial: None,
            ..settlement()
        };
        assert_eq!(
            SettlementDocument::decode(&none.encode().unwrap()).unwrap(),
            none
        );
    }

    #[test]
    fn inconsistent_documents_are_refused() {
        let mut o = order();
        o.new_customer = o.old_customer.clone();
        assert!(o.encode().is_err());
        let mut o = order();
        o.currency = *b"eur";
        assert!(o.encode().is_err());
        let mut s = settlement();
        s.debt_minor = 5;
        let err = s.encode().unwrap_err();
        assert!(err.to_string().contains("debt"), "{err}");
    }
}
