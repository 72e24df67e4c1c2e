//! The production store: sled 0.34, one tree per [`Keyspace`], commits as multi-tree transactions.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use concentrator_durable::DurableSync;

use super::{Batch, Entries, Entry, Keyspace, Store, StoreError, Write};

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
        let db = concentrator_durable::open_sled(
            &sled::Config::new()
                .path(path)
                // sled also flushes by itself every 500 ms; money is flushed explicitly before
                // acknowledgement.
                .flush_every_ms(Some(500)),
        )
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
