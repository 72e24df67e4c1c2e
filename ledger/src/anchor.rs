//! Anchoring the audit chain outside itself.
//!
//! A hash chain proves that no entry was altered, removed or reordered *before its head*, but entries
//! cut off the end leave a shorter chain that verifies as well as the whole one did: [`crate::audit::verify`]
//! cannot see a truncation. So the chain's head (its length and last hash) leaves the gateway: it goes up
//! with every account summary, and the head-end records it. [`verify_anchored`] checks the chain against
//! such an anchor: the chain must be at least as long as the anchor says, and its entry at that length
//! must be the one the anchor recorded. A shorter chain fails naming the missing entries; a different
//! entry there fails naming it (the log was rewritten up to it).

use std::fmt;

use crate::audit::{self, AuditError, AuditHead, VerifyReport};
use crate::store::Store;
use crate::LedgerError;

/// Where the chain stood when the anchor was taken: its length and the hash of its last entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditAnchor {
    /// Entries in the chain (the next sequence number).
    pub len: u64,
    /// The hash of entry `len - 1` (zeros for an empty chain).
    pub head: [u8; 32],
}

impl AuditAnchor {
    /// The anchor of a chain's head.
    pub fn of(head: &AuditHead) -> Self {
        AuditAnchor {
            len: head.next_seq,
            head: head.hash,
        }
    }

    /// Parses `LEN:HEXHEAD` (as the head-end prints it: the length in decimal, the 32-octet hash in hex).
    pub fn parse(s: &str) -> Result<Self, String> {
        let usage = "write the anchor as LEN:HEXHEAD, e.g. 1234:9f86d081… (64 hex digits), as the head-end prints it";
        let (len, hex) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("anchor {s:?} has no ':'; {usage}"))?;
        let len: u64 = len
            .parse()
            .map_err(|_| format!("anchor length {len:?} is not a number; {usage}"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("anchor head {hex:?} is not 64 hex digits; {usage}"));
        }
        let mut head = [0u8; 32];
        for (i, out) in head.iter_mut().enumerate() {
            *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("anchor head {hex:?} is not hex; {usage}"))?;
        }
        Ok(AuditAnchor { len, head })
    }
}

impl fmt::Display for AuditAnchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.len, audit::hex_string(&self.head))
    }
}

/// Verifies the whole chain, then that it reaches `anchor`: at least `anchor.len` entries, the entry at
/// `anchor.len - 1` having the anchored hash.
pub fn verify_anchored<S: Store + ?Sized>(
    store: &S,
    anchor: &AuditAnchor,
) -> Result<VerifyReport, LedgerError> {
    let report = audit::verify(store)?;
    check_against(store, &report, anchor)?;
    Ok(report)
}

/// The anchor check for a chain already verified (`report` from [`audit::verify`] or a walk).
pub fn check_against<S: Store + ?Sized>(
    store: &S,
    report: &VerifyReport,
    anchor: &AuditAnchor,
) -> Result<(), LedgerError> {
    if anchor.len == 0 {
        return Ok(());
    }
    if report.entries < anchor.len {
        return Err(AuditError::Truncated {
            entries: report.entries,
            anchor_len: anchor.len,
        }
        .into());
    }
    // Entries archived out of the store (`crate::archive`) are checked at the base: the base's hash for
    // an anchor at the base; an older anchor is below it, covered by the base's seal in the chain.
    if let Some(base) = crate::archive::AuditBase::load(store)? {
        if anchor.len < base.len {
            return Ok(());
        }
        if anchor.len == base.len {
            return if base.hash == anchor.head {
                Ok(())
            } else {
                Err(AuditError::AnchorMismatch {
                    seq: anchor.len - 1,
                }
                .into())
            };
        }
    }
    let seq = anchor.len - 1;
    let stored = audit::stored_hash(store, seq)?;
    if stored != anchor.head {
        return Err(AuditError::AnchorMismatch { seq }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;
    use crate::store::{Batch, Keyspace, MemStore};

    fn chain(n: u64) -> (MemStore, Vec<AuditAnchor>) {
        let store = MemStore::new();
        let mut head = AuditHead::default();
        let mut batch = Batch::new();
        let mut anchors = vec![AuditAnchor::of(&head)];
        for i in 0..n {
            let (k, v) = head.append(
                1_700_000_000 + i,
                "M1",
                AuditEvent::EmergencySelected { automatic: false },
            );
            batch.put(Keyspace::Audit, k, v);
            anchors.push(AuditAnchor::of(&head));
        }
        store.commit(&batch).unwrap();
        (store, anchors)
    }

    /// Cutting entries off the end passes the plain verification (a hash chain cannot see it), and
    /// fails the anchored one naming the missing entries.
    #[test]
    fn a_truncated_chain_verifies_alone_but_not_against_its_anchor() {
        let (store, anchors) = chain(10);
        let anchor = anchors[10];
        verify_anchored(&store, &anchor).unwrap();
        // An older anchor is still reached (the chain only grows).
        verify_anchored(&store, &anchors[4]).unwrap();
        let mut cut = Batch::new();
        for seq in 7u64..10 {
            cut.delete(Keyspace::Audit, seq.to_be_bytes().to_vec());
        }
        store.commit(&cut).unwrap();
        assert_eq!(audit::verify(&store).unwrap().entries, 7);
        let e = verify_anchored(&store, &anchor).unwrap_err();
        assert!(
            matches!(
                e,
                LedgerError::Audit(AuditError::Truncated {
                    entries: 7,
                    anchor_len: 10
                })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("entries 7 to 9"), "{e}");
    }

    #[test]
    fn a_rewritten_chain_does_not_reach_the_anchor() {
        let (store, anchors) = chain(5);
        let (other, _) = {
            let store = MemStore::new();
            let mut head = AuditHead::default();
            let mut batch = Batch::new();
            for i in 0..6 {
                let (k, v) = head.append(
                    1_800_000_000 + i,
                    "M2",
                    AuditEvent::EmergencySelected { automatic: true },
                );
                batch.put(Keyspace::Audit, k, v);
            }
            store.commit(&batch).unwrap();
            (store, ())
        };
        verify_anchored(&store, &anchors[5]).unwrap();
        let e = verify_anchored(&other, &anchors[5]).unwrap_err();
        assert!(
            matches!(e, LedgerError::Audit(AuditError::AnchorMismatch { seq: 4 })),
            "{e}"
        );
    }

    #[test]
    fn anchors_print_and_parse() {
        let (_, anchors) = chain(3);
        let text = anchors[3].to_string();
        assert_eq!(AuditAnchor::parse(&text).unwrap(), anchors[3]);
        for bad in ["", "12", "x:00", "3:abc", &format!("3:{}", "g".repeat(64))] {
            assert!(AuditAnchor::parse(bad).is_err(), "{bad}");
        }
    }
}
