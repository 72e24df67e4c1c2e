//! In-memory stores for tests: [`MemStore`] (with a simulated crash) and [`FaultyStore`] (fails on demand).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Batch, Entries, Entry, Keyspace, Store, StoreError, Write};

type Maps = BTreeMap<Keyspace, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Debug, Default)]
struct MemInner {
    live: Maps,
    durable: Maps,
}

/// An in-memory store. Clones share the same data, so a test can keep a handle while the ledger owns
/// another. What is committed is visible at once; what is flushed survives [`MemStore::crash`].
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<MemInner>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        MemStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A poisoned lock only means a test panicked while holding it; the maps are still consistent
        // because every mutation below is a single step.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a restart after a power cut would find: a new store holding only what was flushed.
    pub fn crash(&self) -> MemStore {
        let durable = self.lock().durable.clone();
        MemStore {
            inner: Arc::new(Mutex::new(MemInner {
                live: durable.clone(),
                durable,
            })),
        }
    }

    /// Number of entries in a keyspace (live view).
    pub fn len(&self, keyspace: Keyspace) -> usize {
        self.lock().live.get(&keyspace).map_or(0, BTreeMap::len)
    }

    /// A copy of everything (live view), for comparing before and after an operation.
    pub fn snapshot(&self) -> BTreeMap<Keyspace, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.lock().live.clone()
    }
}

impl Store for MemStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .live
            .get(&keyspace)
            .and_then(|m| m.get(key).cloned()))
    }

    fn range_from(
        &self,
        keyspace: Keyspace,
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        Ok(self.lock().live.get(&keyspace).map_or_else(Vec::new, |m| {
            m.range(from.to_vec()..)
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    fn last(&self, keyspace: Keyspace) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .lock()
            .live
            .get(&keyspace)
            .and_then(|m| m.iter().next_back().map(|(k, v)| (k.clone(), v.clone()))))
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for write in batch.writes() {
            match write {
                Write::Put(ks, k, v) => {
                    inner
                        .live
                        .entry(*ks)
                        .or_default()
                        .insert(k.clone(), v.clone());
                }
                Write::Delete(ks, k) => {
                    if let Some(m) = inner.live.get_mut(ks) {
                        m.remove(k);
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.durable = inner.live.clone();
        Ok(())
    }
}

/// Which operations a [`FaultyStore`] fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Fail every commit (nothing is written).
    pub fail_commits: bool,
    /// Fail every flush (commits are written but never made durable).
    pub fail_flushes: bool,
    /// Let this many commits succeed, then fail the rest (when `fail_commits` is false).
    pub commits_before_failure: Option<u32>,
}

/// A store that fails writes or flushes according to its [`FaultPlan`], which the test can change at any
/// time through a clone.
#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    inner: S,
    plan: Arc<Mutex<(FaultPlan, u32)>>,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps a store; no faults until [`FaultyStore::set_plan`].
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            plan: Arc::new(Mutex::new((FaultPlan::default(), 0))),
        }
    }

    /// Replaces the fault plan (and restarts the commit count).
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = (plan, 0);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(keyspace, key)
    }

    fn range_from(
        &self,
        keyspace: Keyspace,
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.inner.range_from(keyspace, from, limit)
    }

    fn last(&self, keyspace: Keyspace) -> Result<Option<Entry>, StoreError> {
        self.inner.last(keyspace)
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut guard = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        let (plan, count) = &mut *guard;
        let fail = plan.fail_commits || plan.commits_before_failure.is_some_and(|n| *count >= n);
        if fail {
            return Err(StoreError::Commit {
                reason: "injected write failure".into(),
            });
        }
        *count += 1;
        drop(guard);
        self.inner.commit(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let fail = self
            .plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .fail_flushes;
        if fail {
            return Err(StoreError::Flush {
                reason: "injected flush failure".into(),
            });
        }
        self.inner.flush()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}
