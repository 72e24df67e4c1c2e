//! Account statements: the head-end's signed account of one meter, from which a gateway that lost its
//! store restores the meter's account before it charges the meter or accepts tokens for it again.
//!
//! The statement is signed with the head-end's token key and verified exactly as a credit token is
//! (chain to the utility CA, head-end role, signature, key id, meter binding), so nothing but the
//! head-end that issues credit can state credit. Canonical encoding (what is signed; big-endian):
//!
//! ```text
//! u8        tag 'A' (0x41; tokens are 'T', receipts 'R', settlements 'S')
//! u8        version (1)
//! u8 + n    meter id (as in tokens)
//! u64       statement time, unix seconds
//! 3         currency, ISO 4217 letters
//! i64       balance, minor units, at the last account summary the head-end holds (else the opening balance)
//! u64       the time of that summary, unix seconds (the statement time for a new account)
//! u8 [u64]  register present (0/1), then the import register at that summary, Wh
//! u64       outstanding debt, minor units
//! u8 [u64]  highest serial present (0/1), then the highest token serial applied
//! u8        flags: bit 0 = new account (the head-end never heard of the meter's account)
//! u16       n, then n × (u64 first, u64 last): every serial applied, as increasing inclusive ranges
//! 8         key id of the signing key
//! ```
//!
//! A statement is accepted from [`CLOCK_TOLERANCE_S`] before its time (the gateway's clock may be
//! behind; a re-imaged Pi has no RTC) until [`MAX_AGE_S`] after it: an older one is refused, so that a
//! statement captured earlier cannot restore an account to an older state.

use thiserror::Error;

use crate::signed::SignedDocument;
use crate::token::{TokenError, TokenSigner, TokenVerifier, MAX_METER_ID};
use crate::wire::{put_u8_prefixed, Malformed, Reader};

/// Type tag of a statement body.
pub const STATEMENT_TAG: u8 = b'A';
/// Statement body version.
pub const STATEMENT_VERSION: u8 = 1;
/// Most serial ranges one statement carries (the body must fit the signed container's 64 KiB).
pub const MAX_RANGES: usize = 2_048;
/// How far the gateway's clock may be behind the statement's time.
pub const CLOCK_TOLERANCE_S: u64 = 300;
/// How long after its time a statement is accepted.
pub const MAX_AGE_S: u64 = 86_400;

/// An inclusive range of token serials.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SerialSpan {
    /// First serial.
    pub first: u64,
    /// Last serial (≥ `first`).
    pub last: u64,
}

impl SerialSpan {
    /// The increasing, disjoint, non-adjacent ranges covering `serials` (any order, duplicates allowed).
    pub fn cover(serials: impl IntoIterator<Item = u64>) -> Vec<SerialSpan> {
        let mut v: Vec<u64> = serials.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let mut out: Vec<SerialSpan> = Vec::new();
        for s in v {
            match out.last_mut() {
                Some(r) if r.last.checked_add(1) == Some(s) => r.last = s,
                _ => out.push(SerialSpan { first: s, last: s }),
            }
        }
        out
    }

    /// The union of two sets of ranges, as increasing disjoint non-adjacent ranges.
    pub fn union(a: &[SerialSpan], b: &[SerialSpan]) -> Vec<SerialSpan> {
        let mut all: Vec<SerialSpan> = a.iter().chain(b).copied().collect();
        all.sort_unstable();
        let mut out: Vec<SerialSpan> = Vec::new();
        for r in all {
            match out.last_mut() {
                Some(p) if r.first <= p.last.saturating_add(1) => p.last = p.last.max(r.last),
                _ => out.push(r),
            }
        }
        out
    }

    /// Whether `serial` is in one of `spans`.
    pub fn contains(spans: &[SerialSpan], serial: u64) -> bool {
        spans.iter().any(|r| r.first <= serial && serial <= r.last)
    }
}

/// The head-end's account of one meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountStatement {
    /// The meter number (as in tokens).
    pub meter_id: String,
    /// When the head-end made the statement, unix seconds.
    pub at: u64,
    /// ISO 4217 currency of the amounts.
    pub currency: [u8; 3],
    /// The balance at the last account summary the head-end holds plus the tokens receipted after it;
    /// for a new account (no summary), the credit of the receipted tokens alone, which the gateway adds
    /// to its configured opening balance. Minor units.
    pub balance_minor: i64,
    /// When that summary was made, unix seconds (the balance and the register are as of then; the
    /// statement time for a new account).
    pub summary_at: u64,
    /// The import register at that summary, Wh; `None` for a new account (the first reading is the
    /// baseline).
    pub register_wh: Option<u64>,
    /// Outstanding debt (arrears), minor units.
    pub debt_minor: u64,
    /// Every token serial applied to the meter, as increasing inclusive ranges.
    pub applied: Vec<SerialSpan>,
    /// The highest token serial applied.
    pub last_serial: Option<u64>,
    /// The head-end holds no account summary of this meter: the account starts afresh.
    pub new_account: bool,
    /// Key id of the signing key (set when signed).
    pub key_id: [u8; 8],
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreError {
    /// The signature, chain, role or key id failed (as for a token), or the octets do not parse.
    #[error("account statement refused: {0}")]
    Token(#[from] TokenError),
    /// A field that does not make sense.
    #[error("account statement field {field} is invalid: {reason}; the head-end must issue a new statement")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The statement is for another meter.
    #[error("account statement is for meter {got:?}, not {expected:?}")]
    WrongMeter {
        /// In the statement.
        got: String,
        /// The meter being restored.
        expected: String,
    },
    /// The statement's time is too far ahead of the gateway's clock.
    #[error("account statement made at {at} (unix), more than {CLOCK_TOLERANCE_S} s after this gateway's time {now}: check the gateway's clock (NTP)")]
    FromTheFuture {
        /// The statement's time.
        at: u64,
        /// The gateway's time.
        now: u64,
    },
    /// The statement is too old.
    #[error("account statement made at {at} (unix) is older than {MAX_AGE_S} s at {now}: ask the head-end for a new one")]
    TooOld {
        /// The statement's time.
        at: u64,
        /// The gateway's time.
        now: u64,
    },
}

impl From<Malformed> for RestoreError {
    fn from(m: Malformed) -> Self {
        RestoreError::Token(m.into())
    }
}

fn invalid(field: &'static str, reason: &'static str) -> RestoreError {
    RestoreError::Invalid { field, reason }
}

fn valid_spans(spans: &[SerialSpan]) -> bool {
    spans.iter().all(|r| r.first <= r.last)
        && spans
            .windows(2)
            .all(|w| w[0].last.checked_add(1).is_some_and(|n| n < w[1].first))
}

impl AccountStatement {
    fn check(&self) -> Result<(), RestoreError> {
        let id = self.meter_id.as_bytes();
        if id.is_empty() || id.len() > MAX_METER_ID || !id.iter().all(u8::is_ascii_graphic) {
            return Err(invalid("meter_id", "1 to 32 printable ASCII characters"));
        }
        if !self.currency.iter().all(u8::is_ascii_uppercase) {
            return Err(invalid("currency", "three upper-case ISO 4217 letters"));
        }
        if self.summary_at > self.at {
            return Err(invalid("summary_at", "after the statement's time"));
        }
        if self.applied.len() > MAX_RANGES {
            return Err(invalid("applied", "more than 2048 ranges"));
        }
        if !valid_spans(&self.applied) {
            return Err(invalid(
                "applied",
                "ranges must be increasing, disjoint and not adjacent",
            ));
        }
        let highest = self.applied.last().map(|r| r.last);
        if highest.is_some() && self.last_serial < highest {
            return Err(invalid("last_serial", "below a serial listed as applied"));
        }
        Ok(())
    }

    /// The canonical encoding, which is what gets signed.
    pub fn encode(&self) -> Result<Vec<u8>, RestoreError> {
        self.check()?;
        let mut out = vec![STATEMENT_TAG, STATEMENT_VERSION];
        put_u8_prefixed(&mut out, self.meter_id.as_bytes())
            .ok_or(invalid("meter_id", "at most 32 characters"))?;
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(&self.currency);
        out.extend_from_slice(&self.balance_minor.to_be_bytes());
        out.extend_from_slice(&self.summary_at.to_be_bytes());
        put_opt(&mut out, self.register_wh);
        out.extend_from_slice(&self.debt_minor.to_be_bytes());
        put_opt(&mut out, self.last_serial);
        out.push(u8::from(self.new_account));
        out.extend_from_slice(&(self.applied.len() as u16).to_be_bytes());
        for r in &self.applied {
            out.extend_from_slice(&r.first.to_be_bytes());
            out.extend_from_slice(&r.last.to_be_bytes());
        }
        out.extend_from_slice(&self.key_id);
        Ok(out)
    }

    /// Parses a canonical encoding and checks its fields; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, RestoreError> {
        let mut r = Reader::new(bytes);
        r.expect_u8("tag", STATEMENT_TAG)?;
        r.expect_u8("version", STATEMENT_VERSION)?;
        let meter = r.bytes_u8("meter_id")?;
        let meter_id = String::from_utf8(meter.to_vec())
            .map_err(|_| invalid("meter_id", "1 to 32 printable ASCII characters"))?;
        let at = r.u64("at")?;
        let currency = r.array::<3>("currency")?;
        let balance_minor = i64::from_be_bytes(r.array::<8>("balance")?);
        let summary_at = r.u64("summary_at")?;
        let register_wh = get_opt(&mut r, "register_wh")?;
        let debt_minor = r.u64("debt")?;
        let last_serial = get_opt(&mut r, "last_serial")?;
        let off = r.offset();
        let new_account = match r.u8("flags")? {
            0 => false,
            1 => true,
            _ => {
                return Err(Malformed {
                    what: "flags",
                    offset: off,
                }
                .into())
            }
        };
        let n = usize::from(r.u16("range count")?);
        if n > MAX_RANGES {
            return Err(invalid("applied", "more than 2048 ranges"));
        }
        let mut applied = Vec::with_capacity(n);
        for _ in 0..n {
            applied.push(SerialSpan {
                first: r.u64("range first")?,
                last: r.u64("range last")?,
            });
        }
        let key_id = r.array::<8>("key_id")?;
        r.finish()?;
        let statement = AccountStatement {
            meter_id,
            at,
            currency,
            balance_minor,
            summary_at,
            register_wh,
            debt_minor,
            applied,
            last_serial,
            new_account,
            key_id,
        };
        statement.check()?;
        Ok(statement)
    }

    /// Signs the statement with the head-end's token key (its key id is set to the signer's) and returns
    /// the `SignedDocument` wire octets that go into an `AccountRestore` message.
    pub fn sign(&self, signer: &TokenSigner) -> Result<Vec<u8>, RestoreError> {
        self.sign_with(&signer.0)
    }

    /// [`AccountStatement::sign`] with the head-end's token key as a plain document signer.
    pub fn sign_with(
        &self,
        signer: &crate::signed::DocumentSigner,
    ) -> Result<Vec<u8>, RestoreError> {
        let mut s = self.clone();
        s.key_id = signer.key_id();
        let doc = signer
            .sign(s.encode()?)
            .map_err(|e| RestoreError::Token(e.into()))?;
        doc.encode().ok_or(invalid(
            "signed statement",
            "a field is too long for its length prefix",
        ))
    }
}

/// Builds and signs a statement for the head-end: [`AccountStatement::sign`].
pub fn sign_statement(
    signer: &TokenSigner,
    statement: &AccountStatement,
) -> Result<Vec<u8>, RestoreError> {
    statement.sign(signer)
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_be_bytes());
        }
    }
}

fn get_opt(r: &mut Reader<'_>, what: &'static str) -> Result<Option<u64>, RestoreError> {
    let off = r.offset();
    match r.u8(what)? {
        0 => Ok(None),
        1 => Ok(Some(r.u64(what)?)),
        _ => Err(Malformed { what, offset: off }.into()),
    }
}

impl TokenVerifier {
    /// Verifies a signed statement (wire octets) as a credit token is verified: chain to the utility CA,
    /// head-end role, signature, key id, then the meter binding and the statement's age.
    pub fn verify_statement(
        &self,
        signed: &[u8],
        expected_meter: &str,
        now: u64,
    ) -> Result<AccountStatement, RestoreError> {
        let doc = SignedDocument::decode(signed)?;
        let statement = AccountStatement::decode(&doc.body)?;
        self.check_head_end_document(&doc, statement.key_id, now)?;
        if statement.meter_id != expected_meter {
            return Err(RestoreError::WrongMeter {
                got: statement.meter_id,
                expected: expected_meter.to_string(),
            });
        }
        if statement.at > now.saturating_add(CLOCK_TOLERANCE_S) {
            return Err(RestoreError::FromTheFuture {
                at: statement.at,
                now,
            });
        }
        if now.saturating_sub(statement.at) > MAX_AGE_S {
            return Err(RestoreError::TooOld {
                at: statement.at,
                now,
            });
        }
        Ok(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AccountStatement {
        AccountStatement {
            meter_id: "M1".into(),
            at: 1_700_000_000,
            currency: *b"EUR",
            balance_minor: -250,
            summary_at: 1_699_999_000,
            register_wh: Some(12_345),
            debt_minor: 100,
            applied: SerialSpan::cover([1, 2, 3, 7]),
            last_serial: Some(7),
            new_account: false,
            key_id: [9; 8],
        }
    }

    #[test]
    fn statements_round_trip_and_every_truncation_is_an_error() {
        let s = sample();
        let bytes = s.encode().unwrap();
        assert_eq!(AccountStatement::decode(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(
                AccountStatement::decode(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let fresh = AccountStatement {
            register_wh: None,
            applied: Vec::new(),
            last_serial: None,
            new_account: true,
            ..sample()
        };
        let bytes = fresh.encode().unwrap();
        assert_eq!(AccountStatement::decode(&bytes).unwrap(), fresh);
    }

    #[test]
    fn inconsistent_statements_are_refused() {
        let mut s = sample();
        s.applied = vec![
            SerialSpan { first: 5, last: 6 },
            SerialSpan { first: 1, last: 2 },
        ];
        assert!(s.encode().is_err());
        let mut s = sample();
        s.last_serial = Some(3);
        assert!(s.encode().is_err());
        let mut s = sample();
        s.meter_id = String::new();
        assert!(s.encode().is_err());
    }

    #[test]
    fn spans_cover_union_and_contain() {
        let a = SerialSpan::cover([5, 1, 2, 2, 9]);
        assert_eq!(
            a,
            vec![
                SerialSpan { first: 1, last: 2 },
                SerialSpan { first: 5, last: 5 },
                SerialSpan { first: 9, last: 9 }
            ]
        );
        let u = SerialSpan::union(&a, &SerialSpan::cover([3, 4, 10]));
        assert_eq!(
            u,
            vec![
                SerialSpan { first: 1, last: 5 },
                SerialSpan { first: 9, last: 10 }
            ]
        );
        assert!(SerialSpan::contains(&u, 4));
        assert!(!SerialSpan::contains(&u, 6));
    }
}
