//! Where the security contexts keep what must survive a restart: the AKA records (tree `uplink.aka`)
//! and the COUNT reservations (tree `uplink.counts`). The contexts reach them only through
//! [`ContextStore`], so their logic runs (and is tested) on [`MemContexts`] as well as on sled.

use std::collections::HashMap;
use std::sync::Mutex;

use concentrator_durable::DurableSync;

/// The tree of the subscribers' AKA state in the store's database.
pub const AKA_TREE: &str = "uplink.aka";
/// The tree of the envelope counters in the store's database.
pub const COUNTS_TREE: &str = "uplink.counts";

/// Which of the two trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// [`AKA_TREE`].
    Aka,
    /// [`COUNTS_TREE`].
    Counts,
}

/// Key-value storage for the security contexts.
pub trait ContextStore: Send + Sync {
    /// The value under `key`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, String>;

    /// Writes `value` under `key` (durable only after [`ContextStore::flush`]).
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), String>;

    /// Makes the writes to `tree` so far durable (flushed, and fsynced where the store can).
    fn flush(&self, tree: Tree) -> Result<(), String>;
}

/// The two trees in the store's sled database.
#[derive(Debug, Clone)]
pub struct SledContexts {
    aka: sled::Tree,
    counts: sled::Tree,
    /// fsync after the flushes that matter (SQN windows, contexts, COUNT reservations: a COUNT reused
    /// after a power cut would reuse a keystream); sled's flush alone does not survive one.
    durable: Option<DurableSync>,
}

impl SledContexts {
    /// Opens (creates) the trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, String> {
        let aka = db
            .open_tree(AKA_TREE)
            .map_err(|e| format!("cannot open the AKA state in the store: {e}"))?;
        let counts = db
            .open_tree(COUNTS_TREE)
            .map_err(|e| format!("cannot open the uplink counters in the store: {e}"))?;
        Ok(SledContexts {
            aka,
            counts,
            durable: None,
        })
    }

    /// Makes every flush an `fsync` of the store's log file too.
    pub fn with_durable(mut self, durable: DurableSync) -> Self {
        self.durable = Some(durable);
        self
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::Aka => &self.aka,
            Tree::Counts => &self.counts,
        }
    }
}

impl ContextStore for SledContexts {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.tree(tree)
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| e.to_string())
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.tree(tree)
            .insert(key, value)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn flush(&self, tree: Tree) -> Result<(), String> {
        self.tree(tree).flush().map_err(|e| e.to_string())?;
        self.durable.as_ref().map_or(Ok(()), DurableSync::sync_log)
    }
}

/// The entries of [`MemContexts`], by tree and key.
type Entries = HashMap<(Tree, Vec<u8>), Vec<u8>>;

/// The trees in memory: for tests, and a store that may fail on demand.
#[derive(Debug, Default)]
pub struct MemContexts {
    map: Mutex<Entries>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemContexts {
    /// An empty store.
    pub fn new() -> Self {
        MemContexts::default()
    }

    /// From now on every write fails (`true`) or succeeds again (`false`).
    pub fn fail_writes(&self, fail: bool) {
        self.failing
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ContextStore for MemContexts {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(&(tree, key.to_vec())).cloned())
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), String> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("the test store refuses writes".into());
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((tree, key.to_vec()), value.to_vec());
        Ok(())
    }

    fn flush(&self, _tree: Tree) -> Result<(), String> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("the test store refuses writes".into());
        }
        Ok(())
    }
}
