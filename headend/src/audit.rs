//! The payment record: append-only and hash-chained, for audit.
//!
//! Entry n is stored under `pay/<n BE>` as its *canonical octets*: the JSON object of [`PaymentEntry`]
//! with its fields in declaration order and no whitespace. Each entry carries `prev`, the SHA-256 (hex)
//! of entry n−1's canonical octets (64 zeros for entry 0); `paymeta` holds the next sequence number and
//! the hash of the last entry, so a removed or altered last entry is found too. [`verify`] walks the
//! chain and names the first broken entry.
//!
//! The chain is anchored outside the store: after every append its head (length and last hash) is
//! appended to an anchor file beside the database (`len hexhash unix_time` per line, fsynced), so that
//! cutting entries off the end, or rewriting the chain with fresh hashes, is found by
//! [`verify_anchored`] although the chain itself is consistent.

use openssl::hash::{hash, MessageDigest};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::store::{Batch, Store, StoreError};

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A customer paid.
    Purchase,
    /// The token for a purchase was signed.
    TokenIssued,
    /// The gateway confirmed the token applied (receipt or account summary).
    TokenApplied,
    /// The gateway refused the token.
    TokenRefused,
    /// The token was sent to the gateway again.
    Resent,
    /// A gateway that lost its store got the meter's account back (the figures in `detail`).
    AccountRestored,
    /// A change of tenancy was ordered (the order id in `serial`, the new customer in `detail`).
    TenancyOrdered,
    /// Money owed back to a customer: the credit left at a change of tenancy (`serial` 0), or a token
    /// the customer bought and the gateway never applied (its serial).
    Refund,
    /// Debt left at a change of tenancy, billed to the customer who left.
    Bill,
    /// The new tenant's account opened (the opening credit as the amount).
    TenancyOpened,
}

/// One entry, as hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEntry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// SHA-256 (hex) of the previous entry's canonical octets.
    pub prev: String,
    /// When, unix s.
    pub at: u64,
    /// What.
    pub what: EntryKind,
    /// The customer, when one is involved.
    pub customer: Option<String>,
    /// The meter.
    pub meter: String,
    /// The token serial.
    pub serial: u64,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// ISO 4217.
    pub currency: String,
    /// For people: a refusal's reason, the receipt's balance.
    pub detail: Option<String>,
}

/// An entry before it is chained.
#[derive(Debug, Clone)]
pub struct Draft {
    /// See [`PaymentEntry`].
    pub at: u64,
    /// See [`PaymentEntry`].
    pub what: EntryKind,
    /// See [`PaymentEntry`].
    pub customer: Option<String>,
    /// See [`PaymentEntry`].
    pub meter: String,
    /// See [`PaymentEntry`].
    pub serial: u64,
    /// See [`PaymentEntry`].
    pub amount_minor: u64,
    /// See [`PaymentEntry`].
    pub currency: String,
    /// See [`PaymentEntry`].
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    next: u64,
    last_hash: Option<String>,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn entry_key(seq: u64) -> Vec<u8> {
    let mut k = b"pay/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn sha256_hex(b: &[u8]) -> String {
    hash(MessageDigest::sha256(), b)
        .map(hex::encode)
        .unwrap_or_default()
}

/// The chain's writer: one append at a time (a store scope on `paymeta`, so also across workers on
/// PostgreSQL).
#[derive(Debug, Default)]
pub struct PaymentRecord {
    anchor: Option<PathBuf>,
}

impl PaymentRecord {
    /// A writer without an anchor file (tests over a memory store).
    pub fn new() -> Self {
        PaymentRecord::default()
    }

    /// A writer that anchors the chain's head in `anchor` after every append.
    pub fn anchored(anchor: PathBuf) -> Self {
        PaymentRecord {
            anchor: Some(anchor),
        }
    }

    /// Appends `drafts` in order; `with` gets their sequence numbers and returns the rest of the
    /// transaction (records that name them). Everything is applied in one batch and flushed before
    /// this returns (inside a PostgreSQL scope: committed with it). The entries are inserted, never
    /// overwritten: a second writer of the same sequence number is refused by the store. `with` may
    /// run again if the database aborted a first attempt.
    pub fn append(
        &self,
        store: &Store,
        drafts: Vec<Draft>,
        mut with: impl FnMut(&[u64]) -> Batch,
    ) -> Result<Vec<u64>, StoreError> {
        let (seqs, meta) = store.scope(&[b"paymeta"], || -> Result<_, StoreError> {
            let mut meta: Meta = store.get("paymeta")?.unwrap_or_default();
            let mut batch = Batch::new();
            let mut seqs = Vec::with_capacity(drafts.len());
            for d in drafts.iter().cloned() {
                let e = PaymentEntry {
                    seq: meta.next,
                    prev: meta.last_hash.clone().unwrap_or_else(|| GENESIS.into()),
                    at: d.at,
                    what: d.what,
                    customer: d.customer,
                    meter: d.meter,
                    serial: d.serial,
                    amount_minor: d.amount_minor,
                    currency: d.currency,
                    detail: d.detail,
                };
                let octets = serde_json::to_vec(&e).unwrap_or_default();
                meta.last_hash = Some(sha256_hex(&octets));
                batch.insert_raw(entry_key(e.seq), octets);
                seqs.push(e.seq);
                meta.next += 1;
            }
            batch.put("paymeta", &meta);
            batch.extend(with(&seqs));
            store.commit(batch)?;
            Ok((seqs, meta))
        })??;
        if let (Some(path), Some(hash)) = (self.anchor.clone(), meta.last_hash) {
            // Anchored once the entries are committed (after the outermost scope, on PostgreSQL), so
            // the anchor never names a head that was rolled back.
            store.after_commit(move || {
                if let Err(e) = write_anchor(&path, meta.next, &hash, now()) {
                    // The entries are durable; the next append writes a newer anchor.
                    log::error!(
                        "payment record: cannot append its anchor to {}: {e}; check the disk and the file's permissions",
                        path.display()
                    );
                }
            });
        }
        Ok(seqs)
    }
}

impl PaymentRecord {
    /// [`PaymentRecord::append`] of entries with `batch` (the writes that caused them). Inside a
    /// database transaction (PostgreSQL) the batch is applied now and the entries just before the
    /// commit ([`Store::before_commit`]): the chain's head is then locked for the commit only, not
    /// for the rest of the transaction (a settle window's messages of a gateway), and last, in the
    /// lock order. Still one transaction: the entries are committed with the writes that caused
    /// them, or neither is. On a store one process owns, one atomic batch as
    /// [`PaymentRecord::append`] writes it.
    pub fn append_with(
        self: &std::sync::Arc<Self>,
        store: &std::sync::Arc<Store>,
        drafts: Vec<Draft>,
        batch: Batch,
    ) -> Result<(), StoreError> {
        if !store.in_transaction() {
            return self.append(store, drafts, |_| batch.clone()).map(|_| ());
        }
        store.apply(batch)?;
        let (record, on) = (self.clone(), store.clone());
        store.before_commit(move || record.append(&on, drafts, |_| Batch::new()).map(|_| ()))
    }
}

use concentrator_protocol::unix_now as now;

/// Appends `len hexhash unix_time` to the anchor file and fsyncs it.
fn write_anchor(path: &Path, len: u64, hash: &str, at: u64) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{len} {hash} {at}\n").as_bytes())?;
    f.sync_data()
}

/// One line of the anchor file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Entries in the chain then.
    pub len: u64,
    /// SHA-256 (hex) of its last entry.
    pub hash: String,
    /// When, unix s.
    pub at: u64,
}

/// The last complete line of the anchor file; `None` without a file or a line. A torn last line (a
/// crash while writing) is skipped.
pub fn last_anchor(path: &Path) -> std::io::Result<Option<Anchor>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text.lines().rev().find_map(|l| {
        let mut it = l.split_whitespace();
        let len = it.next()?.parse().ok()?;
        let hash = it.next().filter(|h| h.len() == 64)?.to_string();
        let at = it.next()?.parse().ok()?;
        Some(Anchor { len, hash, at })
    }))
}

/// [`verify`], then against the last anchor in `anchor`: the chain must be at least as long as it
/// and its entry at the anchor's length must hash to the anchored hash.
pub fn verify_anchored(store: &Store, anchor: &Path) -> Result<Result<u64, Broken>, StoreError> {
    let n = match verify(store)? {
        Ok(n) => n,
        Err(b) => return Ok(Err(b)),
    };
    let a = match last_anchor(anchor) {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(Ok(n)),
        Err(e) => {
            return Ok(Err(Broken {
                seq: n,
                reason: format!(
                    "its anchor file {} cannot be read ({e}); check it, or move it away to verify the chain alone",
                    anchor.display()
                ),
            }))
        }
    };
    if a.len == 0 {
        return Ok(Ok(n));
    }
    if n < a.len {
        return Ok(Err(Broken {
            seq: n,
            reason: format!(
                "the record holds {n} entries but the anchor file {} says it held {} on {}: the last {} entries were cut off",
                anchor.display(),
                a.len,
                crate::money::time(a.at),
                a.len - n
            ),
        }));
    }
    let last = store
        .get_raw(entry_key(a.len - 1))?
        .map(|octets| sha256_hex(&octets));
    if last.as_deref() != Some(a.hash.as_str()) {
        return Ok(Err(Broken {
            seq: a.len - 1,
            reason: format!(
                "its hash differs from the one the anchor file {} recorded on {}: the record was rewritten",
                anchor.display(),
                crate::money::time(a.at)
            ),
        }));
    }
    Ok(Ok(n))
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment record entry {seq} is broken: {reason}")]
pub struct Broken {
    /// The first broken entry.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// Every entry, in order (for `audit show`); undecodable ones are skipped.
pub fn entries(store: &Store) -> Result<Vec<PaymentEntry>, StoreError> {
    Ok(store
        .scan_raw("pay/")?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// Walks the chain. `Ok(n)`: n entries, all linked; `Err(Broken)`: the first entry that was altered,
/// removed or inserted.
///
/// Runs in a scope on the record's head, so that on PostgreSQL no worker appends while the chain is
/// walked (appends wait for it).
pub fn verify(store: &Store) -> Result<Result<u64, Broken>, StoreError> {
    store.scope(&[b"paymeta"], || verify_now(store))?
}

fn verify_now(store: &Store) -> Result<Result<u64, Broken>, StoreError> {
    let meta: Meta = store.get("paymeta")?.unwrap_or_default();
    let mut prev_hash = GENESIS.to_string();
    let mut expected = 0u64;
    for (key, octets) in store.scan_raw("pay/")? {
        let at_key = key
            .get(4..12)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(expected);
        let e: PaymentEntry = match serde_json::from_slice(&octets) {
            Ok(e) => e,
            Err(err) => {
                return Ok(Err(Broken {
                    seq: at_key,
                    reason: format!("it does not decode ({err})"),
                }))
            }
        };
        if e.seq != expected || at_key != expected {
            return Ok(Err(Broken {
                seq: expected,
                reason: format!(
                    "expected entry {expected} here, found entry {} under key {at_key}: an entry was removed or inserted",
                    e.seq
                ),
            }));
        }
        if e.prev != prev_hash {
            let seq = expected.saturating_sub(1);
            return Ok(Err(Broken {
                seq,
                reason: format!(
                    "its hash is no longer what entry {expected} recorded: entry {seq} was altered (or entry {expected}'s link was)"
                ),
            }));
        }
        prev_hash = sha256_hex(&octets);
        expected += 1;
    }
    if expected != meta.next {
        return Ok(Err(Broken {
            seq: expected,
            reason: format!(
                "the record should hold {} entries and holds {expected}: the last entries were removed",
                meta.next
            ),
        }));
    }
    if expected > 0 && meta.last_hash.as_deref() != Some(prev_hash.as_str()) {
        return Ok(Err(Broken {
            seq: expected - 1,
            reason: "the last entry's hash differs from the one recorded when it was written: it was altered".into(),
        }));
    }
    Ok(Ok(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(serial: u64) -> Draft {
        Draft {
            at: 1000 + serial,
            what: EntryKind::Purchase,
            customer: Some("C-1".into()),
            meter: "MTR-1".into(),
            serial,
            amount_minor: 500,
            currency: "EUR".into(),
            detail: None,
        }
    }

    fn tamper(store: &Store, seq: u64, f: impl FnOnce(&mut PaymentEntry)) {
        let raw = store.get_raw(entry_key(seq)).unwrap().unwrap();
        let mut e: PaymentEntry = serde_json::from_slice(&raw).unwrap();
        f(&mut e);
        let mut b = Batch::new();
        b.put_raw(entry_key(seq), serde_json::to_vec(&e).unwrap());
        store.commit(b).unwrap();
    }

    #[test]
    fn chain_verifies_and_names_the_tampered_entry() {
        let store = Store::memory();
        let pr = PaymentRecord::new();
        for s in 0..3 {
            let seqs = pr
                .append(&store, vec![draft(2 * s), draft(2 * s + 1)], |seqs| {
                    let mut b = Batch::new();
                    b.put(format!("x/{}", seqs[0]), &seqs.to_vec());
                    b
                })
                .unwrap();
            assert_eq!(seqs, vec![2 * s, 2 * s + 1]);
        }
        assert_eq!(store.get::<Vec<u64>>("x/2").unwrap(), Some(vec![2, 3]));
        assert_eq!(verify(&store).unwrap(), Ok(6));
        assert_eq!(entries(&store).unwrap().len(), 6);

        // An amount changed in the middle: entry 2 is named.
        tamper(&store, 2, |e| e.amount_minor = 50_000);
        let broken = verify(&store).unwrap().unwrap_err();
        assert_eq!(broken.seq, 2, "{broken}");

        // The last entry altered: found through the stored head hash.
        let store = Store::memory();
        pr.append(&store, vec![draft(0), draft(1)], |_| Batch::new())
            .unwrap();
        tamper(&store, 1, |e| e.meter = "MTR-2".into());
        assert_eq!(verify(&store).unwrap().unwrap_err().seq, 1);

        // An entry removed.
        let store = Store::memory();
        pr.append(&store, vec![draft(0), draft(1), draft(2)], |_| Batch::new())
            .unwrap();
        let mut b = Batch::new();
        b.remove(entry_key(1));
        store.commit(b).unwrap();
        assert_eq!(verify(&store).unwrap().unwrap_err().seq, 1);
    }

    #[test]
    fn a_truncated_or_rewritten_chain_fails_against_its_anchor() {
        let dir = std::env::temp_dir().join(format!("headend-anchor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let anchor = dir.join("store.anchor");
        let store = Store::memory();
        let pr = PaymentRecord::anchored(anchor.clone());
        for s in 0..3 {
            pr.append(&store, vec![draft(s)], |_| Batch::new()).unwrap();
        }
        assert_eq!(last_anchor(&anchor).unwrap().unwrap().len, 3);
        assert_eq!(verify_anchored(&store, &anchor).unwrap(), Ok(3));

        // The last entry cut off, and the head in paymeta fixed to match: the chain alone verifies.
        let cut = Store::memory();
        for (k, v) in store.scan_raw("pay/").unwrap() {
            if k != entry_key(2) {
                let mut b = Batch::new();
                b.put_raw(k, v);
                cut.commit(b).unwrap();
            }
        }
        let second = store.get_raw(entry_key(1)).unwrap().unwrap();
        let mut b = Batch::new();
        b.put(
            "paymeta",
            &Meta {
                next: 2,
                last_hash: Some(sha256_hex(&second)),
            },
        );
        cut.commit(b).unwrap();
        assert_eq!(verify(&cut).unwrap(), Ok(2));
        let broken = verify_anchored(&cut, &anchor).unwrap().unwrap_err();
        assert!(broken.reason.contains("cut off"), "{broken}");

        // Rewritten with consistent fresh hashes (same length): the anchored hash differs.
        let rewritten = Store::memory();
        let other = PaymentRecord::new();
        for s in 0..3 {
            other
                .append(&rewritten, vec![draft(10 + s)], |_| Batch::new())
                .unwrap();
        }
        assert_eq!(verify(&rewritten).unwrap(), Ok(3));
        let broken = verify_anchored(&rewritten, &anchor).unwrap().unwrap_err();
        assert!(broken.reason.contains("rewritten"), "{broken}");

        // A torn last line is skipped; no file means nothing to compare.
        OpenOptions::new()
            .append(true)
            .open(&anchor)
            .unwrap()
            .write_all(b"4 abc")
            .unwrap();
        assert_eq!(last_anchor(&anchor).unwrap().unwrap().len, 3);
        assert_eq!(verify_anchored(&store, &dir.join("none")).unwrap(), Ok(3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
