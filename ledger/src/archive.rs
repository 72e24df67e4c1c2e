//! Archiving the audit log's acknowledged past, so the store stops growing with every checkpoint.
//!
//! The audit log is a hash chain that the gateway keeps forever unless something takes the old part
//! off it; at one entry per checkpoint that is gigabytes a year on an SD card. Once the head-end has
//! recorded an anchor of the chain (its length and head hash, sent with every account summary), the
//! entries below the anchor are proven to the utility: nobody can rewrite them without the anchor
//! showing it. [`crate::Ledger::archive_through`] then moves them out of the store, in one transaction
//! and flush that
//!
//! 1. deletes the entries below the anchor,
//! 2. stores the **base**: the anchor's length and hash and every meter as recomputed from the log up to
//!    there ([`crate::check::Recomputed`]), so that verification and recomputation go on from it, and
//! 3. appends an [`AuditEvent::Archived`] entry to the chain with the base's digest, so the base itself is
//!    under the chain (and under the next anchor): a base altered afterwards no longer matches it.
//!
//! Optionally the removed entries are first written, exactly as stored, to a file in an archive
//! directory (fsync, then rename), whose oldest files are deleted beyond a size budget. A power cut at
//! any point leaves either the old store (and perhaps a complete archive file that the next run writes
//! again under the same name) or the new one: sled commits the batch whole.
//!
//! [`crate::audit::walk`] starts at the base, checks that the chain's `Archived` entry for it carries its
//! digest, and [`crate::check::recompute`] starts from the base's meters.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use concentrator_security::restore::SerialSpan;

use crate::anchor::AuditAnchor;
use crate::audit::{self, AuditError, AuditEvent};
use crate::check::{self, Recomputed};
use crate::codec::{DecodeError, Reader, Writer};
use crate::ledger::Ledger;
use crate::store::{Keyspace, Store};
use crate::LedgerError;

/// Meta key of the stored [`AuditBase`].
pub const BASE_KEY: &[u8] = b"audit_base";
const BASE_VERSION: u8 = 1;

/// Where the stored chain starts: entries below `len` were archived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditBase {
    /// Entries archived (the first stored entry's sequence number).
    pub len: u64,
    /// The hash of entry `len - 1`.
    pub hash: [u8; 32],
    /// Every meter as recomputed from the log up to `len`.
    pub meters: BTreeMap<String, Recomputed>,
}

impl AuditBase {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(BASE_VERSION)
            .u64(self.len)
            .bytes(&self.hash)
            .u64(self.meters.len() as u64);
        for (meter, m) in &self.meters {
            w.str(meter)
                .u64(u64::from(m.account_no))
                .i64(m.balance_minor)
                .i64(m.tokens_minor)
                .i64(m.charges_minor)
                .i64(m.debt_minor)
                .u64(m.register_wh)
                .i64(m.carry_micro);
            spans(&mut w, &SerialSpan::cover(m.serials.iter().copied()));
            spans(&mut w, &m.restored);
            w.opt_u64(m.restored_last);
        }
        w.finish()
    }

    /// Reads the stored form back; never panics.
    pub fn decode(bytes: &[u8]) -> Result<AuditBase, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8("base version")? != BASE_VERSION {
            return Err(DecodeError {
                field: "base version",
                offset: 0,
            });
        }
        let len = r.u64("base length")?;
        let hash: [u8; 32] = r.bytes("base hash")?.try_into().map_err(|_| DecodeError {
            field: "base hash",
            offset: 0,
        })?;
        let count = r.u64("meter count")?;
        let mut meters = BTreeMap::new();
        for _ in 0..count {
            let meter = r.string("meter")?;
            let account_no = u32::try_from(r.u64("account_no")?).map_err(|_| DecodeError {
                field: "account_no",
                offset: 0,
            })?;
            let mut m = Recomputed {
                account_no,
                balance_minor: r.i64("balance")?,
                tokens_minor: r.i64("tokens")?,
                charges_minor: r.i64("charges")?,
                debt_minor: r.i64("debt")?,
                register_wh: r.u64("register_wh")?,
                carry_micro: r.i64("carry")?,
                ..Recomputed::default()
            };
            for span in read_spans(&mut r, "serials")? {
                if span.last < span.first || span.last - span.first > 10_000_000 {
                    return Err(DecodeError {
                        field: "serials",
                        offset: 0,
                    });
                }
                m.serials.extend(span.first..=span.last);
            }
            m.restored = read_spans(&mut r, "restored")?;
            m.restored_last = r.opt_u64("restored_last")?;
            meters.insert(meter, m);
        }
        r.finish()?;
        Ok(AuditBase { len, hash, meters })
    }

    /// The digest the chain's [`AuditEvent::Archived`] entry carries: SHA-256 of the stored form.
    pub fn digest(&self) -> [u8; 32] {
        openssl::sha::sha256(&self.encode())
    }

    /// The stored base, if any part of the chain was archived.
    pub fn load<S: Store + ?Sized>(store: &S) -> Result<Option<AuditBase>, LedgerError> {
        let Some(v) = store.get(Keyspace::Meta, BASE_KEY)? else {
            return Ok(None);
        };
        AuditBase::decode(&v)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt {
                keyspace: Keyspace::Meta.name(),
                key: "audit_base".into(),
                reason: e.to_string(),
            })
    }
}

fn spans(w: &mut Writer, spans: &[SerialSpan]) {
    w.u64(spans.len() as u64);
    for s in spans {
        w.u64(s.first).u64(s.last);
    }
}

fn read_spans(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<SerialSpan>, DecodeError> {
    let n = r.u64(field)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let first = r.u64(field)?;
        let last = r.u64(field)?;
        out.push(SerialSpan { first, last });
    }
    Ok(out)
}

/// Where archived entries go besides out of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePolicy {
    /// A directory for the removed entries (one file per archiving), or none to keep nothing locally
    /// (the head-end's anchor is then their only proof).
    pub dir: Option<PathBuf>,
    /// The archive directory's budget: its oldest files are deleted beyond it.
    pub keep_bytes: u64,
    /// At most this many entries per transaction (a large backlog is archived in steps).
    pub max_entries: u64,
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        ArchivePolicy {
            dir: None,
            keep_bytes: 64 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

/// Meta key of the newest anchor the head-end confirmed it recorded ([`crate::Ledger::keep_confirmed_anchor`]).
pub const CONFIRMED_KEY: &[u8] = b"audit_confirmed_anchor";

/// What [`crate::Ledger::keep_confirmed_anchor`] did with a confirmed anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorKept {
    /// Kept: the newest confirmed anchor now.
    Kept,
    /// No newer than the one already kept: nothing changed.
    AlreadyKept,
}

/// What one [`crate::Ledger::archive_through`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Entries taken out of the store.
    pub entries: u64,
    /// The chain's base now.
    pub base_len: u64,
    /// The archive file written, if any.
    pub file: Option<PathBuf>,
    /// Older archive files deleted for the budget.
    pub deleted: Vec<PathBuf>,
}

impl<S: Store> Ledger<S> {
    /// Archives the audit entries below `anchor` (one the head-end has recorded), at most
    /// `policy.max_entries` of them: see the module documentation. The anchor must be on the chain
    /// (its entry's hash) and durable; an anchor at or below the current base does nothing.
    pub fn archive_through(
        &mut self,
        anchor: &AuditAnchor,
        policy: &ArchivePolicy,
        now: u64,
    ) -> Result<ArchiveReport, LedgerError> {
        if self.unflushed {
            self.flush()?;
        }
        let base = AuditBase::load(&self.store)?.unwrap_or_default();
        if anchor.len <= base.len {
            return Ok(ArchiveReport {
                base_len: base.len,
                ..ArchiveReport::default()
            });
        }
        if anchor.len > self.durable_head.next_seq {
            return Err(AuditError::BeyondHead {
                anchor_len: anchor.len,
                entries: self.durable_head.next_seq,
            }
            .into());
        }
        // The whole chain first (base seal included), then the anchor on it.
        let report = audit::verify(&self.store)?;
        crate::anchor::check_against(&self.store, &report, anchor)?;
        // A step at most `max_entries` long; its end must be an entry of the chain (any entry is).
        let end = anchor
            .len
            .min(base.len.saturating_add(policy.max_entries.max(1)));
        let end_hash = audit::stored_hash(&self.store, end - 1)?;
        let meters = check::recompute_until(&self.store, end)?;
        let new_base = AuditBase {
            len: end,
            hash: end_hash,
            meters,
        };
        let file = match &policy.dir {
            Some(dir) => Some(write_archive(&self.store, dir, base.len, end)?),
            None => None,
        };
        let mut txn = self.begin();
        for seq in base.len..end {
            txn.batch
                .delete(Keyspace::Audit, seq.to_be_bytes().to_vec());
        }
        txn.batch.put(Keyspace::Meta, BASE_KEY, new_base.encode());
        txn.audit(
            now,
            "",
            AuditEvent::Archived {
                base_len: end,
                digest: new_base.digest(),
                entries: end - base.len,
            },
        );
        self.finish(txn, true)?;
        let deleted = match (&policy.dir, &file) {
            (Some(dir), Some(keep)) => prune(dir, policy.keep_bytes, keep)?,
            _ => Vec::new(),
        };
        Ok(ArchiveReport {
            entries: end - base.len,
            base_len: end,
            file,
            deleted,
        })
    }
}

impl<S: Store> Ledger<S> {
    /// The newest anchor the head-end confirmed it recorded, if any.
    pub fn confirmed_anchor(&self) -> Result<Option<AuditAnchor>, LedgerError> {
        let Some(v) = self.store.get(Keyspace::Meta, CONFIRMED_KEY)? else {
            return Ok(None);
        };
        if v.len() != 40 {
            return Err(LedgerError::Corrupt {
                keyspace: Keyspace::Meta.name(),
                key: "audit_confirmed_anchor".into(),
                reason: format!("{} octets, not 40", v.len()),
            });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&v[..8]);
        let mut head = [0u8; 32];
        head.copy_from_slice(&v[8..]);
        Ok(Some(AuditAnchor {
            len: u64::from_be_bytes(len),
            head,
        }))
    }

    /// Keeps `anchor`, which the head-end says it recorded, as the newest confirmed anchor, durably
    /// (flushed before this returns, so the confirmation can be acknowledged). It must be on this
    /// chain: an anchor of a chain this store never had (a replaced store) or beyond the durable head is
    /// an error naming it, and nothing is kept.
    pub fn keep_confirmed_anchor(
        &mut self,
        anchor: &AuditAnchor,
    ) -> Result<AnchorKept, LedgerError> {
        if self.unflushed {
            self.flush()?;
        }
        if anchor.len == 0 {
            return Ok(AnchorKept::AlreadyKept);
        }
        if self
            .confirmed_anchor()?
            .is_some_and(|c| anchor.len <= c.len)
        {
            return Ok(AnchorKept::AlreadyKept);
        }
        if anchor.len > self.durable_head.next_seq {
            return Err(AuditError::BeyondHead {
                anchor_len: anchor.len,
                entries: self.durable_head.next_seq,
            }
            .into());
        }
        let base = AuditBase::load(&self.store)?.unwrap_or_default();
        let on_chain = if anchor.len < base.len {
            // Below the base: covered by the base's seal; nothing newer to keep.
            return Ok(AnchorKept::AlreadyKept);
        } else if anchor.len == base.len {
            base.hash == anchor.head
        } else {
            audit::stored_hash(&self.store, anchor.len - 1)? == anchor.head
        };
        if !on_chain {
            return Err(AuditError::AnchorMismatch {
                seq: anchor.len - 1,
            }
            .into());
        }
        let mut value = anchor.len.to_be_bytes().to_vec();
        value.extend_from_slice(&anchor.head);
        let mut txn = self.begin();
        txn.batch.put(Keyspace::Meta, CONFIRMED_KEY, value);
        self.finish(txn, true)?;
        Ok(AnchorKept::Kept)
    }

    /// Archives what is due: the entries below the newest confirmed anchor that are older than
    /// `keep_s` seconds (the recent past stays in the store for `concentrator audit` and the installer),
    /// at most `policy.max_entries` of them. `None` when nothing is due.
    pub fn archive_due(
        &mut self,
        keep_s: u64,
        policy: &ArchivePolicy,
        now: u64,
    ) -> Result<Option<ArchiveReport>, LedgerError> {
        let Some(confirmed) = self.confirmed_anchor()? else {
            return Ok(None);
        };
        let base = AuditBase::load(&self.store)?.unwrap_or_default();
        if confirmed.len <= base.len {
            return Ok(None);
        }
        // The first entry at or after the cut-off time, between the base and the anchor (the chain's
        // times rise; a clock stepped back only makes the cut a little earlier).
        let cutoff = now.saturating_sub(keep_s);
        let (mut lo, mut hi) = (base.len, confirmed.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if audit::stored_time(&self.store, mid)? < cutoff {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let end = lo;
        if end <= base.len {
            return Ok(None);
        }
        let anchor = AuditAnchor {
            len: end,
            head: audit::stored_hash(&self.store, end - 1)?,
        };
        self.archive_through(&anchor, policy, now).map(Some)
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> LedgerError {
    LedgerError::Output(format!(
        "audit archive: cannot {what} {}: {e}; check the archive directory is writable and has space, or set no archive directory",
        path.display()
    ))
}

/// The archive file of entries `first..end`: each as sequence number (8 octets, big-endian), value
/// length (4 octets, big-endian) and the value exactly as stored (body and chain hash), so
/// `concentrator audit` or any reader can re-check the chain from the previous file's last hash.
pub fn archive_file_name(first: u64, end: u64) -> String {
    format!("audit-{first:020}-{:020}.bin", end - 1)
}

fn write_archive<S: Store + ?Sized>(
    store: &S,
    dir: &Path,
    first: u64,
    end: u64,
) -> Result<PathBuf, LedgerError> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let path = dir.join(archive_file_name(first, end));
    let tmp = path.with_extension("tmp");
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?);
    let mut next = first;
    while next < end {
        let page = store.range_from(Keyspace::Audit, &next.to_be_bytes(), 1024)?;
        if page.is_empty() {
            break;
        }
        for (k, v) in page {
            let seq = <[u8; 8]>::try_from(k.as_slice())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if seq >= end {
                next = end;
                break;
            }
            let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
            out.write_all(&k)
                .and_then(|()| out.write_all(&len.to_be_bytes()))
                .and_then(|()| out.write_all(&v))
                .map_err(|e| io("write", &tmp, e))?;
            next = seq + 1;
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| io("write", &tmp, e.into_error()))?;
    file.sync_all().map_err(|e| io("sync", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Deletes the oldest archive files while the directory is over `budget`, never `keep`.
fn prune(dir: &Path, budget: u64, keep: &Path) -> Result<Vec<PathBuf>, LedgerError> {
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .map_err(|e| io("list", dir, e))?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("audit-") && name.ends_with(".bin")
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|(_, len)| len).sum();
    let mut deleted = Vec::new();
    for (path, len) in files {
        if total <= budget {
            break;
        }
        if path == keep {
            continue;
        }
        std::fs::remove_file(&path).map_err(|e| io("delete", &path, e))?;
        total -= len;
        deleted.push(path);
    }
    Ok(deleted)
}
