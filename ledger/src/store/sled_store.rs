//! The production store: sled 0.34, one tree per [`Keyspace`], commits as multi-tree transactions.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{Batch, Entries, Entry, Keyspace, Store, StoreError, Write};

/// Makes a sled database durable against a power cut, not only against a crash of the process.
///
/// sled 0.34's `flush()` ends its log writes with `sync_file_range(2)` on Linux, which writes the data
/// pages but neither the file's metadata (its size, newly allocated extents) nor the drive's cache; only
/// sled's background flusher calls `fsync`, every `flush_every_ms`. A process killed with SIGKILL loses
/// nothing (the page cache survives it), but a power cut in between loses writes that `flush()` had
/// reported done: the QEMU hard power-off test lost an acknowledged top-up this way. `fsync` applies to
/// the file, whatever descriptor it is called on, so this holds its own descriptor of sled's log file
/// and calls `sync_all` on it after every `flush()`. The directory is synced once at open, so a newly
/// created log file's name survives too.
#[derive(Debug, Clone)]
pub struct DurableSync {
    log: Arc<File>,
}

impl DurableSync {
    /// For the sled database in directory `dir` (opened already, so its files exist).
    pub fn open(dir: &Path) -> std::io::Result<DurableSync> {
        let log = File::open(dir.join("db"))?;
        // sled writes its `conf` at creation without an fsync: after a power cut in the first seconds
        // it finds it empty and writes it again ("empty/corrupt configuration file found").
        if let Ok(conf) = File::open(dir.join("conf")) {
            conf.sync_all()?;
        }
        File::open(dir)?.sync_all()?;
        log.sync_all()?;
        Ok(DurableSync { log: Arc::new(log) })
    }

    /// `db.flush()`, then `fsync` of its log file.
    pub fn flush(&self, db: &sled::Db) -> Result<(), String> {
        db.flush().map_err(|e| e.to_string())?;
        self.sync_log()
    }

    /// `fsync` of the log file, after a `flush()` of the database or of one of its trees.
    pub fn sync_log(&self) -> Result<(), String> {
        self.log
            .sync_all()
            .map_err(|e| format!("fsync of the store's log file: {e}"))
    }
}

/// A sled database with the ledger's trees.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    sync: DurableSync,
}

impl SledStore {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// sled takes an exclusive lock on the directory: a second process opening the same store gets
    /// [`StoreError::Open`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |e: sled::Error| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let db = sled::Config::new()
            .path(path)
            // sled also flushes by itself every 500 ms; money is flushed explicitly before acknowledgement.
            .flush_every_ms(Some(500))
            .open()
            .map_err(open_err)?;
        let trees = Keyspace::ALL
            .iter()
            .map(|ks| db.open_tree(ks.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(open_err)?;
        let sync = DurableSync::open(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: format!("cannot open its log file for fsync: {e}"),
        })?;
        Ok(SledStore { db, trees, sync })
    }

    /// Flushes and fsyncs the database (for the other trees that share it: the uplink's).
    pub fn durable(&self) -> &DurableSync {
        &self.sync
    }

    /// The sled database itself, for other trees that must share the ledger's store and its flushes
    /// (the uplink's outbox and executed-command set, `concentrator-uplink`).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn tree(&self, keyspace: Keyspace) -> Result<&sled::Tree, StoreError> {
        self.trees.get(keyspace.index()).ok_or(StoreError::Read {
            keyspace: keyspace.name(),
            reason: "tree not opened".into(),
        })
    }
}

fn read_err(keyspace: Keyspace) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Read {
        keyspace: keyspace.name(),
        reason: e.to_string(),
    }
}

impl Store for SledStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(keyspace)?
            .get(key)
            .map_err(read_err(keyspace))?
            .map(|v| v.to_vec()))
    }

    fn range_from(
        &self,
        keyspace: Keyspace,
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(keyspace)?.range(from..).take(limit) {
            let (k, v) = item.map_err(read_err(keyspace))?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last(&self, keyspace: Keyspace) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .tree(keyspace)?
            .last()
            .map_err(read_err(keyspace))?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let result: Result<(), TransactionError<()>> = self.trees.as_slice().transaction(|views| {
            for write in batch.writes() {
                match write {
                    Write::Put(ks, k, v) => {
                        let Some(view) = views.get(ks.index()) else {
                            return Err(ConflictableTransactionError::Abort(()));
                        };
                        view.insert(k.as_slice(), v.as_slice())?;
                    }
                    Write::Delete(ks, k) => {
                        let Some(view) = views.get(ks.index()) else {
                            return Err(ConflictableTransactionError::Abort(()));
                        };
                        view.remove(k.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        result.map_err(|e| StoreError::Commit {
            reason: match e {
                TransactionError::Abort(()) => "a write named a keyspace that is not open".into(),
                TransactionError::Storage(e) => e.to_string(),
            },
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.sync
            .flush(&self.db)
            .map_err(|reason| StoreError::Flush { reason })
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(read_err(Keyspace::Meta))
    }
}
