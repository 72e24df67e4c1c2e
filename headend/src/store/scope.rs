//! Scopes: the unit of mutual exclusion between writers of the store.
//!
//! [`super::Store::scope`] runs a closure holding locks named by record keys (a gateway's record,
//! a meter's, the payment record's head). Every store call the closure makes on the same thread joins
//! the scope: on PostgreSQL they are one transaction holding the database locks, committed when the
//! closure returns; on sled (one process owns the store) the locks are in-process and calls go to the
//! key space as they always did. A scope opened inside another joins it and adds its locks.
//!
//! Lock order, so that no two scopes wait for each other: a gateway, then a meter, then the payment
//! record (`paymeta`), which is always last.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

use super::kv::KvTxn;

/// In-process locks by key; re-entrant for the thread that holds them.
#[derive(Debug, Default)]
pub(super) struct LockTable {
    held: Mutex<HashMap<Vec<u8>, (ThreadId, u32)>>,
    freed: Condvar,
}

impl LockTable {
    /// Waits until every key is free or already this thread's, then takes them all at once.
    pub(super) fn acquire(&self, keys: &[Vec<u8>]) {
        let me = std::thread::current().id();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let free = keys
                .iter()
                .all(|k| held.get(k).is_none_or(|(owner, _)| *owner == me));
            if free {
                break;
            }
            held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        for k in keys {
            held.entry(k.clone()).or_insert((me, 0)).1 += 1;
        }
    }

    /// Gives back what [`LockTable::acquire`] took.
    pub(super) fn release(&self, keys: &[Vec<u8>]) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(e) = held.get_mut(k) {
                e.1 = e.1.saturating_sub(1);
                if e.1 == 0 {
                    held.remove(k);
                }
            }
        }
        drop(held);
        self.freed.notify_all();
    }
}

/// The scope a thread is in, per store.
pub(super) struct Active {
    /// The database transaction (PostgreSQL); `None` on a store one process owns.
    pub(super) txn: Option<Box<dyn KvTxn>>,
    /// What to do once the transaction committed.
    pub(super) after: Vec<Box<dyn FnOnce()>>,
    /// What to do in the transaction just before its commit (work that takes a busy lock, so that
    /// the lock is held for the commit only).
    pub(super) before: Vec<BeforeCommit>,
}

/// Work run inside a transaction just before its commit.
pub(super) type BeforeCommit = Box<dyn FnOnce() -> Result<(), super::StoreError>>;

thread_local! {
    static ACTIVE: RefCell<HashMap<u64, Active>> = RefCell::new(HashMap::new());
}

/// Whether this thread is in a scope of store `id`.
pub(super) fn active(id: u64) -> bool {
    ACTIVE.with(|a| a.borrow().contains_key(&id))
}

/// Enters a scope of store `id`.
pub(super) fn enter(id: u64, txn: Option<Box<dyn KvTxn>>) {
    ACTIVE.with(|a| {
        a.borrow_mut().insert(
            id,
            Active {
                txn,
                after: Vec::new(),
                before: Vec::new(),
            },
        )
    });
}

/// What a scope leaves behind: its transaction and what to do after the commit.
pub(super) type Left = (Option<Box<dyn KvTxn>>, Vec<Box<dyn FnOnce()>>);

/// Leaves the scope of store `id`.
pub(super) fn leave(id: u64) -> Left {
    ACTIVE.with(|a| {
        a.borrow_mut()
            .remove(&id)
            .map(|s| (s.txn, s.after))
            .unwrap_or_default()
    })
}

/// Queues `f` for after the commit of the transaction this thread is in (store `id`); `Err(f)` if
/// it is in none.
pub(super) fn defer(id: u64, f: Box<dyn FnOnce()>) -> Result<(), Box<dyn FnOnce()>> {
    ACTIVE.with(|a| match a.borrow_mut().get_mut(&id) {
        Some(s) if s.txn.is_some() => {
            s.after.push(f);
            Ok(())
        }
        _ => Err(f),
    })
}

/// Queues `f` to run inside the transaction this thread is in (store `id`), just before it commits;
/// `Err(f)` if it is in none.
pub(super) fn defer_before(id: u64, f: BeforeCommit) -> Result<(), BeforeCommit> {
    ACTIVE.with(|a| match a.borrow_mut().get_mut(&id) {
        Some(s) if s.txn.is_some() => {
            s.before.push(f);
            Ok(())
        }
        _ => Err(f),
    })
}

/// The work queued by [`defer_before`] so far (taken).
pub(super) fn take_before(id: u64) -> Vec<BeforeCommit> {
    ACTIVE.with(|a| {
        a.borrow_mut()
            .get_mut(&id)
            .map(|s| std::mem::take(&mut s.before))
            .unwrap_or_default()
    })
}

/// Runs `f` on the scope's transaction, if this thread is in a scope of store `id` that has one.
pub(super) fn with_txn<R>(id: u64, f: impl FnOnce(&mut dyn KvTxn) -> R) -> Option<R> {
    ACTIVE.with(|a| {
        a.borrow_mut()
            .get_mut(&id)
            .and_then(|s| s.txn.as_mut())
            .map(|t| f(t.as_mut()))
    })
}

/// Leaves the scope when dropped (a panic inside it rolls the transaction back).
pub(super) struct Leave<'a> {
    pub(super) id: u64,
    pub(super) table: &'a LockTable,
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) done: bool,
}

impl Leave<'_> {
    /// Leaves now and hands back the transaction and what to do after its commit.
    pub(super) fn finish(mut self) -> Left {
        self.done = true;
        self.table.release(&self.keys);
        leave(self.id)
    }
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.table.release(&self.keys);
            drop(leave(self.id));
        }
    }
}
