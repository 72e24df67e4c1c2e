//! The store behind the ledger: a few ordered keyspaces, atomic multi-keyspace commits and an explicit
//! flush.
//!
//! The engine needs very little from a database, and says so in [`Store`]: read a key, read a range in
//! key order, commit a [`Batch`] of puts and deletes across keyspaces atomically, and flush what has been
//! committed to stable storage. [`SledStore`] is the production engine; [`MemStore`] keeps everything in
//! memory and can simulate a crash (losing what was committed but not flushed); [`FaultyStore`] wraps any
//! store and fails commits or flushes on demand, so tests can check that nothing unpersisted is ever
//! acknowledged.
//!
//! Commit and flush are separate on purpose. A charge checkpoint is committed but not flushed: if it is
//! lost in a crash, the consumption it covered is charged again from the meter's register after restart,
//! exactly once. A top-up is committed *and* flushed before it is acknowledged.

mod mem;
mod sled_store;

pub use mem::{FaultPlan, FaultyStore, MemStore};
pub use sled_store::{DurableSync, SledStore};

/// The keyspaces (sled trees) of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Schema version, the configuration in force, counters.
    Meta,
    /// One record per meter account.
    Accounts,
    /// Applied tokens: meter id, 0, serial (big-endian) → the token's digest and its signed receipt.
    Tokens,
    /// The hash-chained audit log: sequence number (big-endian) → entry.
    Audit,
    /// Messages for the head-end: sequence number (big-endian) → entry; deleted when acknowledged.
    Outbox,
    /// Closed accounts (change of tenancy): meter id, 0, account number → closed record.
    Closed,
}

impl Keyspace {
    /// Every keyspace, in a fixed order (the order of sled trees in a transaction).
    pub const ALL: [Keyspace; 6] = [
        Keyspace::Meta,
        Keyspace::Accounts,
        Keyspace::Tokens,
        Keyspace::Audit,
        Keyspace::Outbox,
        Keyspace::Closed,
    ];

    /// The keyspace's name (the sled tree name).
    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Meta => "meta",
            Keyspace::Accounts => "accounts",
            Keyspace::Tokens => "tokens",
            Keyspace::Audit => "audit",
            Keyspace::Outbox => "outbox",
            Keyspace::Closed => "closed",
        }
    }

    /// The position in [`Keyspace::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`.
    Put(Keyspace, Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Keyspace, Vec<u8>),
}

/// Writes that are committed together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    writes: Vec<Write>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, keyspace: Keyspace, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes
            .push(Write::Put(keyspace, key.into(), value.into()));
    }

    /// Adds a delete.
    pub fn delete(&mut self, keyspace: Keyspace, key: impl Into<Vec<u8>>) {
        self.writes.push(Write::Delete(keyspace, key.into()));
    }

    /// The writes, in order.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Whether the batch has no writes.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Appends another batch's writes after this one's.
    pub fn extend(&mut self, other: Batch) {
        self.writes.extend(other.writes);
    }
}

/// A failure of the store. The ledger turns it into an error naming the operation that was not persisted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the ledger store at {path}: {reason}; check the directory exists, is writable by the daemon's user and is not used by another process")]
    Open {
        /// The store's directory.
        path: String,
        /// The engine's message.
        reason: String,
    },
    /// A read failed.
    #[error("reading {keyspace} from the ledger store failed: {reason}; the disk or the store may be damaged")]
    Read {
        /// The keyspace.
        keyspace: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// A commit failed; nothing of the batch was applied.
    #[error("committing to the ledger store failed: {reason}; nothing of this change was stored, retry when the disk is healthy")]
    Commit {
        /// The engine's message.
        reason: String,
    },
    /// A flush failed; what was committed may not survive a power cut.
    #[error("flushing the ledger store to disk failed: {reason}; the change is not durable and was not acknowledged")]
    Flush {
        /// The engine's message.
        reason: String,
    },
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Key-value entries as returned by a range read.
pub type Entries = Vec<Entry>;

/// What the ledger needs from a database.
///
/// Implementations must make [`Store::commit`] atomic across keyspaces (all writes or none, also across a
/// crash) and [`Store::flush`] durable (everything committed before it survives a power cut once it returns
/// `Ok`).
pub trait Store {
    /// The value of `key`.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries with keys `>= from`, in key order. Callers page by passing the last key
    /// followed by a zero octet.
    fn range_from(
        &self,
        keyspace: Keyspace,
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError>;

    /// The entry with the greatest key.
    fn last(&self, keyspace: Keyspace) -> Result<Option<Entry>, StoreError>;

    /// Applies every write of `batch`, atomically.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;

    /// Makes everything committed so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Bytes used on disk (0 for an in-memory store).
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

impl<S: Store + ?Sized> Store for &S {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(keyspace, key)
    }
    fn range_from(
        &self,
        keyspace: Keyspace,
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        (**self).range_from(keyspace, from, limit)
    }
    fn last(&self, keyspace: Keyspace) -> Result<Option<Entry>, StoreError> {
        (**self).last(keyspace)
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        (**self).commit(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        (**self).size_on_disk()
    }
}

/// Visits every entry of a keyspace in key order, a page at a time.
pub fn for_each<S: Store + ?Sized>(
    store: &S,
    keyspace: Keyspace,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), crate::LedgerError>,
) -> Result<(), crate::LedgerError> {
    const PAGE: usize = 512;
    let mut from = Vec::new();
    loop {
        let page = store.range_from(keyspace, &from, PAGE)?;
        let Some((last_key, _)) = page.last() else {
            return Ok(());
        };
        let mut next = last_key.clone();
        next.push(0);
        let full = page.len() == PAGE;
        for (k, v) in &page {
            visit(k, v)?;
        }
        if !full {
            return Ok(());
        }
        from = next;
    }
}
