//! The store trait: an ordered key space ([`Kv`]) with atomic batches, and, for a store that several
//! processes share, transactions that hold database locks ([`KvTxn`]). The typed [`super::Store`]
//! sits on top and is what the rest of the head-end calls.
//!
//! Two implementations serve the head-end: sled ([`SledKv`], one process, the embedded default) and
//! PostgreSQL ([`super::pg::PgKv`], many workers); [`MemKv`] serves unit tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use concentrator_ledger::DurableSync;

use super::{Batch, Op, StoreError};

/// Raw entries: (key, value).
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The key-value space the store needs.
pub trait Kv: Send + Sync {
    /// One value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies a batch atomically (not yet durable). A [`Batch::insert`] of a key that exists fails
    /// the whole batch with [`StoreError::Conflict`].
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// The entries under `prefix` from key `from` on (a meter's recent readings, not its whole
    /// history); the stores that can seek override this filtering default.
    fn scan_from(&self, prefix: &[u8], from: &[u8]) -> Result<Entries, StoreError> {
        let mut all = self.scan(prefix)?;
        all.retain(|(k, _)| k.as_slice() >= from);
        Ok(all)
    }
    /// Makes every applied batch durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Sets `key` to `new` only if it holds `old` now (`None`: absent); `Ok(false)` if it did not.
    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError>;
    /// A transaction holding the locks on `locks` until it ends, for a store that other processes
    /// share (PostgreSQL). `None` (the default): one process owns the store, the store's in-process
    /// locks serialise its writers and every call goes straight to this key space.
    fn begin(&self, _locks: &[Vec<u8>]) -> Result<Option<Box<dyn KvTxn>>, StoreError> {
        Ok(None)
    }

    /// Whether other processes (head-end workers) may write this store at the same time, so that
    /// nothing read from it may be kept in memory beyond a scope.
    fn shared(&self) -> bool {
        false
    }

    /// Tells every process listening on `channel` ([`Kv::listen`]); nothing on a store one process
    /// owns.
    fn notify(&self, _channel: &str, _payload: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// What other processes [`Kv::notify`] on `channel`, from now until `stop`; `None` on a store
    /// one process owns.
    fn listen(
        &self,
        _channel: &str,
        _stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Option<std::sync::mpsc::Receiver<String>>, StoreError> {
        Ok(None)
    }
}

/// One database transaction: every read sees what it wrote, nothing is visible to others before
/// [`KvTxn::commit`]; dropped without a commit, it is rolled back.
pub trait KvTxn: Send {
    /// One value.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies a batch inside the transaction.
    fn apply(&mut self, batch: Batch) -> Result<(), StoreError>;
    /// Entries under a prefix, in key order.
    fn scan(&mut self, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// See [`Kv::scan_from`].
    fn scan_from(&mut self, prefix: &[u8], from: &[u8]) -> Result<Entries, StoreError> {
        let mut all = self.scan(prefix)?;
        all.retain(|(k, _)| k.as_slice() >= from);
        Ok(all)
    }
    /// See [`Kv::compare_and_swap`].
    fn compare_and_swap(
        &mut self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError>;
    /// Takes more locks (a nested scope), kept until the end.
    fn lock(&mut self, keys: &[Vec<u8>]) -> Result<(), StoreError>;
    /// [`Kv::notify`], delivered when (and only if) the transaction commits.
    fn notify(&mut self, channel: &str, payload: &str) -> Result<(), StoreError>;
    /// Whether a statement failed in a way that a fresh attempt may not (deadlock, serialisation
    /// failure): the scope that began the transaction runs again.
    fn retryable(&self) -> bool;
    /// Commits: durable when this returns.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// sled, one tree.
#[derive(Debug)]
pub struct SledKv {
    db: sled::Db,
    tree: sled::Tree,
    path: String,
    /// sled's `flush` alone does not survive a power cut (see `DurableSync`): token serials must.
    sync: DurableSync,
}

impl SledKv {
    /// Opens (creates) the database at `path`.
    pub fn open(path: &Path) -> Result<SledKv, StoreError> {
        let p = path.display().to_string();
        let db_err = |e: sled::Error| StoreError::Db {
            path: p.clone(),
            reason: e.to_string(),
        };
        let db = concentrator_ledger::open_sled(
            &sled::Config::new().path(path).flush_every_ms(Some(1000)),
        )
        .map_err(db_err)?;
        let tree = db.open_tree("headend").map_err(db_err)?;
        let sync = DurableSync::open(path).map_err(|e| StoreError::Db {
            path: p.clone(),
            reason: format!("cannot open its log file for fsync: {e}"),
        })?;
        Ok(SledKv {
            db,
            tree,
            path: p,
            sync,
        })
    }

    fn err(&self, e: sled::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Every record in key order, read as the iterator goes (a store larger than memory).
    pub fn entries(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + '_ {
        self.tree.iter().map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| self.err(e))
        })
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if !batch.has_inserts() {
            let mut b = sled::Batch::default();
            for (k, op) in batch.ops {
                match op {
                    Op::Put(v) | Op::Insert(v) => b.insert(k, v),
                    Op::Remove => b.remove(k),
                }
            }
            return self.tree.apply_batch(b).map_err(|e| self.err(e));
        }
        // Inserts need the check and the writes in one sled transaction.
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let r = self.tree.transaction(|tx| {
            for (k, op) in &batch.ops {
                match op {
                    Op::Put(v) => {
                        tx.insert(k.as_slice(), v.as_slice())?;
                    }
                    Op::Insert(v) => {
                        if tx.get(k.as_slice())?.is_some() {
                            return Err(ConflictableTransactionError::Abort(k.clone()));
                        }
                        tx.insert(k.as_slice(), v.as_slice())?;
                    }
                    Op::Remove => {
                        tx.remove(k.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(key)) => Err(StoreError::conflict(&key)),
            Err(TransactionError::Storage(e)) => Err(self.err(e)),
        }
    }

    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    fn scan_from(&self, prefix: &[u8], from: &[u8]) -> Result<Entries, StoreError> {
        let from = from.max(prefix);
        let mut out = Vec::new();
        for r in self.tree.range(from..) {
            let (k, v) = r.map_err(|e| self.err(e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.sync.flush(&self.db).map_err(|reason| StoreError::Db {
            path: self.path.clone(),
            reason,
        })
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .tree
            .compare_and_swap(key, old, Some(new))
            .map_err(|e| self.err(e))?
            .is_ok())
    }
}

/// In memory, for tests; counts flushes.
#[derive(Debug, Default)]
pub struct MemKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// How often `flush` was called.
    pub flushes: std::sync::atomic::AtomicU64,
}

impl MemKv {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut m = self.lock();
        if let Some((k, _)) = batch
            .ops
            .iter()
            .find(|(k, op)| matches!(op, Op::Insert(_)) && m.contains_key(k))
        {
            return Err(StoreError::conflict(k));
        }
        for (k, op) in batch.ops {
            match op {
                Op::Put(v) | Op::Insert(v) => m.insert(k, v),
                Op::Remove => m.remove(&k),
            };
        }
        Ok(())
    }

    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        Ok(self
            .lock()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let mut m = self.lock();
        if m.get(key).map(Vec::as_slice) != old {
            return Ok(false);
        }
        m.insert(key.to_vec(), new);
        Ok(true)
    }
}
