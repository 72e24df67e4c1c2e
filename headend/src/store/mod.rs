//! The subscriber store: one ordered key space behind the small [`Kv`] trait (sled, the embedded
//! default; PostgreSQL for many workers; a `BTreeMap` in unit tests), records as JSON. Writes go in
//! atomic batches; nothing that depends on a write (a challenge after an SQN step, a token command, an
//! acknowledgement) leaves before [`Store::flush`] returned, or, on PostgreSQL, before the
//! [`Store::scope`] that made it committed.
//!
//! Key prefixes (one concept each; `\0` separates a name from what follows it):
//!
//! | prefix | value |
//! |---|---|
//! | `m/<meter>` | [`MeterRecord`] |
//! | `g/<gateway>` | [`GatewayRecord`] |
//! | `c/<customer>` | [`CustomerRecord`] |
//! | `imsi/<imsi>` | [`SubscriberRef`] |
//! | `code/<sha256 hex of the code>` | customer id (one-time authorization codes) |
//! | `user/<name>` | customer id |
//! | `ctx/<subscriber key>` | [`ContextSet`] (current and previous security context) |
//! | `tid/<hex>` | [`TidRecord`] |
//! | `tok/<meter>\0<serial BE>` | [`TokenRecord`] |
//! | `pend/<meter>\0<serial BE>` | [`TokenRef`] (tokens not yet applied or refused) |
//! | `cmd/<message id hex>` | [`TokenRef`] (a top-up command's token) |
//! | `req/<customer>\0<request id hex>` | [`TokenRef`] (idempotent top-up requests) |
//! | `in/<kind>/<owner>\0<at BE><message id>` | [`Ingested`] (readings, events, receipts, accounts) |
//! | `dd/<gateway>\0<message id>`, `ddq/<gateway>\0<seq BE>`, `ddn/<gateway>` | deduplication ring |
//! | `pay/<seq BE>`, `paymeta` | the payment record ([`crate::audit`]) |
//! | `ser/<meter>` | the next token serial of a meter (u64; only [`Store::next_serial`] writes it) |
//! | `rej/<gateway>\0<at BE><message id>` | [`Rejected`] (uplink messages refused for good, acknowledged) |
//! | `anc/<gateway>` | [`AnchorRecord`] (the gateway's audit chain head, from its account summaries) |
//! | `rd/<meter>\0<at BE><quantity BE>` | [`IntervalRecord`] (each stored reading's time and quantity, once) |
//! | `bfr/<meter>`, `bfc/<message id hex>` | [`BackfillRecord`] (a meter's backfill request) and its command id |
//! | `ten/<order BE>`, `tenp/…`, `tenm/<meter>\0<order BE>`, `tcmd/<id hex>`, `tenn` | [`TenancyRecord`] (change-of-tenancy orders) and their indexes |
//!
//! While the head-end runs, a meter record changes only through [`Store::update_meter`] (a scope on
//! the meter's key, the record read afresh under it), and token serials come only from
//! [`Store::next_serial`] (compare-and-swap on their own key): a stale copy of a record can never roll
//! a serial back. Records written once (tokens, payment record entries, request ids, uplink message
//! ids) are written with [`Batch::insert`], so the database itself refuses a second writer.

pub mod copy;
pub mod kek;
mod kv;
mod meters;
pub mod pg;
mod readings;
mod records;
mod scope;
mod tenancy;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub use kv::{Entries, Kv, KvTxn, MemKv, SledKv};
pub use meters::{anchor_key, rejected_key, serial_key};
pub use readings::*;
pub use records::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
pub use tenancy::*;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (disk full, corruption, locked by another process, server gone).
    #[error(
        "database at {path}: {reason}; check the disk and that no other head-end uses the store"
    )]
    Db {
        /// Where.
        path: String,
        /// The database's error.
        reason: String,
    },
    /// A record does not decode: the store was written by an incompatible version or was altered.
    #[error("record {key:?} does not decode ({reason}); restore the store from a backup")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A record that may be written only once exists already (a token serial, a payment record
    /// entry, a request id): nothing of the batch was written.
    #[error("record {key:?} exists already; nothing was written (another worker wrote it first: try again)")]
    Conflict {
        /// Its key.
        key: String,
    },
    /// The database's schema is older or newer than this program's.
    #[error(
        "the database at {url} has schema version {found}, this program needs {wanted}: {fix}"
    )]
    Schema {
        /// Where (without a password).
        url: String,
        /// What it has.
        found: i32,
        /// What this program needs.
        wanted: i32,
        /// What to do.
        fix: String,
    },
}

impl StoreError {
    fn conflict(key: &[u8]) -> StoreError {
        StoreError::Conflict {
            key: String::from_utf8_lossy(key).into_owned(),
        }
    }
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Set.
    Put(Vec<u8>),
    /// Set, failing the batch if the key exists.
    Insert(Vec<u8>),
    /// Remove.
    Remove,
}

/// One atomic write: keys to set, insert or remove.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Op)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Sets `key` to a record.
    pub fn put<T: Serialize>(&mut self, key: impl Into<Vec<u8>>, value: &T) {
        // Serialising our own record types to JSON cannot fail (no maps with non-string keys).
        let v = serde_json::to_vec(value).unwrap_or_default();
        self.ops.push((key.into(), Op::Put(v)));
    }

    /// Sets `key` to a record that must not exist yet: if it does, the whole batch fails with
    /// [`StoreError::Conflict`] and nothing is written (a unique key in the database).
    pub fn insert<T: Serialize>(&mut self, key: impl Into<Vec<u8>>, value: &T) {
        let v = serde_json::to_vec(value).unwrap_or_default();
        self.ops.push((key.into(), Op::Insert(v)));
    }

    /// Sets `key` to raw octets.
    pub fn put_raw(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push((key.into(), Op::Put(value)));
    }

    /// [`Batch::insert`] of raw octets.
    pub fn insert_raw(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push((key.into(), Op::Insert(value)));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Op::Remove));
    }

    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends another batch.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// Whether some write is an insert.
    pub(crate) fn has_inserts(&self) -> bool {
        self.ops.iter().any(|(_, op)| matches!(op, Op::Insert(_)))
    }

    /// The writes.
    pub(crate) fn into_ops(self) -> Vec<(Vec<u8>, Op)> {
        self.ops
    }

    /// The batch with every value written through `f(key, value)`.
    fn map_values(self, mut f: impl FnMut(&[u8], Vec<u8>) -> Vec<u8>) -> Batch {
        Batch {
            ops: self
                .ops
                .into_iter()
                .map(|(k, op)| {
                    let op = match op {
                        Op::Put(v) => Op::Put(f(&k, v)),
                        Op::Insert(v) => Op::Insert(f(&k, v)),
                        Op::Remove => Op::Remove,
                    };
                    (k, op)
                })
                .collect(),
        }
    }
}

/// Tries of a scope whose transaction hit a deadlock or a serialisation failure.
const SCOPE_TRIES: u32 = 5;

static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

/// Typed access to the key space.
pub struct Store {
    kv: Box<dyn Kv>,
    /// Identifies this store's scopes on a thread.
    id: u64,
    /// In-process locks of a store that one process owns.
    locks: scope::LockTable,
    /// Encrypts subscriber secrets at rest ([`kek`]).
    kek: Option<kek::Kek>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// `prefix` ‖ `name` ‖ 0.
pub fn key2(prefix: &str, name: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + name.len() + 1 + rest.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(rest);
    k
}

impl Store {
    /// Over any key space.
    pub fn new(kv: Box<dyn Kv>) -> Store {
        Store {
            kv,
            id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            locks: scope::LockTable::default(),
            kek: None,
        }
    }

    /// Subscriber secrets written from now on are encrypted under `kek`, and read back through it.
    pub fn with_kek(mut self, kek: kek::Kek) -> Store {
        self.kek = Some(kek);
        self
    }

    /// With the KEK the configuration names (`[store] kek`), if any.
    pub fn with_configured_kek(self, config: &crate::config::Config) -> Result<Store, StoreError> {
        Ok(match kek::kek_path(config) {
            Some(path) => self.with_kek(kek::Kek::load(&path)?),
            None => self,
        })
    }

    /// Whether subscriber secrets are encrypted at rest.
    pub fn encrypts_secrets(&self) -> bool {
        self.kek.is_some()
    }

    /// sled at `path` (the directory made private to its owner, 0700).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store::new(Box::new(SledKv::open(path)?));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(
                |e| StoreError::Db {
                    path: path.display().to_string(),
                    reason: format!("cannot make the store directory private (0700): {e}"),
                },
            )?;
        }
        Ok(store)
    }

    /// Rewrites every record that holds subscriber secrets, so that all are encrypted under the KEK
    /// (after one was configured for a store written without). Returns how many were rewritten.
    pub fn seal_secrets(&self) -> Result<usize, StoreError> {
        if self.kek.is_none() {
            return Ok(0);
        }
        let mut n = 0;
        for prefix in ["m/", "g/", "c/", "ctx/"] {
            let mut batch = Batch::new();
            for (k, v) in self.kv_scan(prefix.as_bytes())? {
                if kek::has_clear_secrets(&k, &v) {
                    batch.put_raw(k, v);
                    n += 1;
                }
            }
            self.commit(batch)?;
        }
        Ok(n)
    }

    /// In memory (tests).
    pub fn memory() -> Store {
        Store::new(Box::new(MemKv::default()))
    }

    /// The store the configuration names: sled at `[store] path` (the default), or PostgreSQL at
    /// `[store] url` (its schema must be current: `concentrator-headend migrate`).
    pub fn open_configured(config: &crate::config::Config) -> Result<Store, StoreError> {
        match config.store.backend {
            crate::config::StoreBackend::Sled => Store::open(&config.path(&config.store.path)),
            crate::config::StoreBackend::Postgres => Ok(Store::new(Box::new(pg::PgKv::open(
                &pg::PgSettings::from_config(config)?,
            )?))),
        }?
        .with_configured_kek(config)
    }

    /// Runs `f` holding the locks named by `locks` (record keys; see the order in [`scope`]'s
    /// documentation). Every store call `f` makes on this thread belongs to the scope: on PostgreSQL
    /// one transaction, committed (durable) when `f` returns, whatever `f` returns, and run again
    /// from the start if the database broke a deadlock or a serialisation conflict by aborting it;
    /// on a store one process owns, calls are applied as they are made. Inside another scope, `f`
    /// joins it and its locks are added.
    pub fn scope<R>(&self, locks: &[&[u8]], mut f: impl FnMut() -> R) -> Result<R, StoreError> {
        let keys: Vec<Vec<u8>> = locks.iter().map(|k| k.to_vec()).collect();
        if scope::active(self.id) {
            let joined = scope::with_txn(self.id, |t| t.lock(&keys));
            return match joined {
                Some(r) => {
                    r?;
                    Ok(f())
                }
                None => {
                    self.locks.acquire(&keys);
                    let r = f();
                    self.locks.release(&keys);
                    Ok(r)
                }
            };
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let txn = self.kv.begin(&keys)?;
            let in_process = if txn.is_none() {
                self.locks.acquire(&keys);
                keys.clone()
            } else {
                Vec::new()
            };
            scope::enter(self.id, txn);
            let leave = scope::Leave {
                id: self.id,
                table: &self.locks,
                keys: in_process,
                done: false,
            };
            let r = f();
            // Work queued for just before the commit (it may queue more).
            let mut failed = None;
            loop {
                let before = scope::take_before(self.id);
                if before.is_empty() || failed.is_some() {
                    break;
                }
                for b in before {
                    if let Err(e) = b() {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match leave.finish() {
                (None, after) => {
                    after.into_iter().for_each(|a| a());
                    return Ok(r);
                }
                (Some(t), _) if t.retryable() && tries < SCOPE_TRIES => {
                    log::info!("store: a transaction was aborted to break a deadlock or a conflict; running it again (try {})", tries + 1);
                    drop(t);
                }
                (Some(t), after) => {
                    if let Some(e) = failed {
                        // Rolled back: nothing of it was written, nothing after it runs.
                        drop((t, after));
                        return Err(e);
                    }
                    t.commit()?;
                    after.into_iter().for_each(|a| a());
                    return Ok(r);
                }
            }
        }
    }

    /// Whether several processes (head-end workers) share this store (PostgreSQL).
    pub fn shared(&self) -> bool {
        self.kv.shared()
    }

    /// Runs `f` once what this thread wrote is committed: at the end of the outermost scope on
    /// PostgreSQL, at once otherwise (writes there are applied as they are made).
    pub fn after_commit(&self, f: impl FnOnce() + 'static) {
        if let Err(f) = scope::defer(self.id, Box::new(f)) {
            f();
        }
    }

    /// Runs `f` inside the transaction this thread is in, just before it commits (at the end of the
    /// outermost scope on PostgreSQL), so that a lock `f` takes is held for the commit only; at once
    /// when there is no transaction (a store one process owns). An error of `f` rolls the whole
    /// transaction back and is the scope's error.
    pub fn before_commit(
        &self,
        f: impl FnOnce() -> Result<(), StoreError> + 'static,
    ) -> Result<(), StoreError> {
        match scope::defer_before(self.id, Box::new(f)) {
            Ok(()) => Ok(()),
            Err(f) => f(),
        }
    }

    /// Whether this thread is in a scope with a database transaction (PostgreSQL).
    pub fn in_transaction(&self) -> bool {
        scope::with_txn(self.id, |_| ()).is_some()
    }

    /// Tells every process listening on `channel` (PostgreSQL's NOTIFY): inside a scope when its
    /// transaction commits, never if it is rolled back. Nothing on a store one process owns.
    pub fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        match scope::with_txn(self.id, |t| t.notify(channel, payload)) {
            Some(r) => r,
            None => self.kv.notify(channel, payload),
        }
    }

    /// What other processes [`Store::notify`] on `channel` from now until `stop` (PostgreSQL's
    /// LISTEN, on a connection of its own); `None` on a store one process owns.
    pub fn listen(
        &self,
        channel: &str,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Option<std::sync::mpsc::Receiver<String>>, StoreError> {
        self.kv.listen(channel, stop)
    }

    fn kv_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        scope::with_txn(self.id, |t| t.get(key)).unwrap_or_else(|| self.kv.get(key))
    }

    fn kv_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        scope::with_txn(self.id, |t| t.scan(prefix)).unwrap_or_else(|| self.kv.scan(prefix))
    }

    fn kv_scan_from(&self, prefix: &[u8], from: &[u8]) -> Result<Entries, StoreError> {
        scope::with_txn(self.id, |t| t.scan_from(prefix, from))
            .unwrap_or_else(|| self.kv.scan_from(prefix, from))
    }

    fn kv_cas(&self, key: &[u8], old: Option<&[u8]>, new: Vec<u8>) -> Result<bool, StoreError> {
        match scope::with_txn(self.id, |t| t.compare_and_swap(key, old, new.clone())) {
            Some(r) => r,
            None => self.kv.compare_and_swap(key, old, new),
        }
    }

    /// A record.
    pub fn get<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>, StoreError> {
        let key = key.as_ref();
        match self.kv_get(key)? {
            Some(v) => Ok(Some(decode(key, &kek::reveal(self.kek.as_ref(), key, v)?)?)),
            None => Ok(None),
        }
    }

    /// Raw octets.
    pub fn get_raw(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv_get(key.as_ref())
    }

    /// Every record under a prefix, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        self.kv_scan(prefix.as_ref())?
            .into_iter()
            .map(|(k, v)| {
                let t = decode(&k, &kek::reveal(self.kek.as_ref(), &k, v)?)?;
                Ok((k, t))
            })
            .collect()
    }

    /// Raw entries under a prefix.
    pub fn scan_raw(&self, prefix: impl AsRef<[u8]>) -> Result<Entries, StoreError> {
        self.kv_scan(prefix.as_ref())
    }

    /// Applies a batch (atomic, not yet durable; inside a scope on PostgreSQL, part of its
    /// transaction).
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = match &self.kek {
            Some(k) => batch.map_values(|key, v| kek::protect(Some(k), key, v)),
            None => batch,
        };
        let mut batch = Some(batch);
        match scope::with_txn(self.id, |t| t.apply(batch.take().unwrap_or_default())) {
            Some(r) => r,
            None => self.kv.apply(batch.take().unwrap_or_default()),
        }
    }

    /// Makes everything applied durable (inside a scope on PostgreSQL: its commit does).
    pub fn flush(&self) -> Result<(), StoreError> {
        if scope::with_txn(self.id, |_| ()).is_some() {
            return Ok(());
        }
        self.kv.flush()
    }

    /// Applies and flushes.
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.apply(batch)?;
        self.flush()
    }

    // ---- typed look-ups ----

    /// A meter by number.
    pub fn meter(&self, meter: &str) -> Result<Option<MeterRecord>, StoreError> {
        self.get(meter_key(meter))
    }

    /// A gateway by id.
    pub fn gateway(&self, id: &str) -> Result<Option<GatewayRecord>, StoreError> {
        self.get(gateway_key(id))
    }

    /// A customer by id.
    pub fn customer(&self, id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        self.get(customer_key(id))
    }

    /// Every meter.
    pub fn meters(&self) -> Result<Vec<MeterRecord>, StoreError> {
        Ok(self.scan("m/")?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every gateway.
    pub fn gateways(&self) -> Result<Vec<GatewayRecord>, StoreError> {
        Ok(self.scan("g/")?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every customer.
    pub fn customers(&self) -> Result<Vec<CustomerRecord>, StoreError> {
        Ok(self.scan("c/")?.into_iter().map(|(_, v)| v).collect())
    }

    /// The subscriber an IMSI belongs to.
    pub fn subscriber_by_imsi(&self, imsi: &str) -> Result<Option<SubscriberRef>, StoreError> {
        self.get(format!("imsi/{imsi}"))
    }

    /// The security contexts of a subscriber.
    pub fn contexts(&self, sub: &SubscriberRef) -> Result<ContextSet, StoreError> {
        Ok(self.get(ctx_key(sub))?.unwrap_or_default())
    }

    /// A TID's binding.
    pub fn tid(&self, tid: &[u8; 8]) -> Result<Option<TidRecord>, StoreError> {
        self.get(tid_key(tid))
    }

    /// One token.
    pub fn token(&self, meter: &str, serial: u64) -> Result<Option<TokenRecord>, StoreError> {
        self.get(token_key(meter, serial))
    }

    /// A meter's tokens, by serial.
    pub fn tokens(&self, meter: &str) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self
            .scan(key2("tok/", meter, &[]))?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Tokens waiting for their receipt (all meters, or one).
    pub fn pending(&self, meter: Option<&str>) -> Result<Vec<TokenRef>, StoreError> {
        let prefix = match meter {
            Some(m) => key2("pend/", m, &[]),
            None => b"pend/".to_vec(),
        };
        Ok(self.scan(prefix)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Ingested records of a kind for an owner (meter number or `gw:<gateway>`), oldest first.
    pub fn ingested(&self, kind: &str, owner: &str) -> Result<Vec<Ingested>, StoreError> {
        Ok(self
            .scan(key2(&format!("in/{kind}/"), owner, &[]))?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    // ---- deduplication of uplink message ids per gateway (bounded ring) ----

    /// Whether `(gateway, id)` was seen.
    pub fn seen(&self, gateway: &str, id: &[u8; 16]) -> Result<bool, StoreError> {
        Ok(self.kv_get(&key2("dd/", gateway, id))?.is_some())
    }

    /// Records `(gateway, id)` in `batch`, forgetting the oldest beyond `capacity`.
    pub fn remember(
        &self,
        batch: &mut Batch,
        gateway: &str,
        id: &[u8; 16],
        capacity: u64,
        pending: &mut std::collections::HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        let next = match pending.get(gateway) {
            Some(n) => *n,
            None => self.get::<u64>(key2("ddn/", gateway, &[]))?.unwrap_or(0),
        };
        batch.insert_raw(key2("dd/", gateway, id), next.to_be_bytes().to_vec());
        batch.put_raw(key2("ddq/", gateway, &next.to_be_bytes()), id.to_vec());
        if next >= capacity {
            let old = next - capacity;
            let qk = key2("ddq/", gateway, &old.to_be_bytes());
            if let Some(old_id) = self.kv_get(&qk)? {
                batch.remove(key2("dd/", gateway, &old_id));
            }
            batch.remove(qk);
        }
        pending.insert(gateway.to_string(), next + 1);
        batch.put(key2("ddn/", gateway, &[]), &(next + 1));
        Ok(())
    }
}

/// Key of a meter record.
pub fn meter_key(meter: &str) -> String {
    format!("m/{meter}")
}
/// Key of a gateway record.
pub fn gateway_key(id: &str) -> String {
    format!("g/{id}")
}
/// Key of a customer record.
pub fn customer_key(id: &str) -> String {
    format!("c/{id}")
}
/// Key of a subscriber's contexts.
pub fn ctx_key(sub: &SubscriberRef) -> String {
    format!("ctx/{}", sub.key())
}
/// Key of a TID.
pub fn tid_key(tid: &[u8; 8]) -> String {
    format!("tid/{}", hex::encode(tid))
}
/// Key of a token.
pub fn token_key(meter: &str, serial: u64) -> Vec<u8> {
    key2("tok/", meter, &serial.to_be_bytes())
}
/// Key of a pending token in the index of tokens waiting for their receipt.
pub fn pending_key(meter: &str, serial: u64) -> Vec<u8> {
    key2("pend/", meter, &serial.to_be_bytes())
}
/// Key of an ingested record.
pub fn ingested_key(kind: &str, owner: &str, at: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut rest = at.to_be_bytes().to_vec();
    rest.extend_from_slice(id);
    key2(&format!("in/{kind}/"), owner, &rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory store and a sled one in a directory of the test's own (tests run in parallel).
    fn stores(test: &str) -> Vec<(Store, Option<std::path::PathBuf>)> {
        let dir = std::env::temp_dir().join(format!("headend-store-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        vec![
            (Store::memory(), None),
            (Store::open(&dir).unwrap(), Some(dir)),
        ]
    }

    #[test]
    fn batches_scans_and_dedup_ring() {
        for (s, dir) in stores("scans") {
            let mut b = Batch::new();
            b.put("m/B", &1u32);
            b.put("m/A", &2u32);
            b.put("n/A", &3u32);
            s.commit(b).unwrap();
            let got: Vec<u32> = s.scan("m/").unwrap().into_iter().map(|(_, v)| v).collect();
            assert_eq!(got, vec![2, 1], "key order, prefix only");
            let mut b = Batch::new();
            b.remove("m/A");
            s.commit(b).unwrap();
            assert_eq!(s.get::<u32>("m/A").unwrap(), None);
            // A record of another type is reported as corrupt, naming the key.
            let err = s.get::<String>("m/B").unwrap_err();
            assert!(err.to_string().contains("m/B"), "{err}");

            // The dedup ring forgets the oldest id beyond its capacity.
            let mut pending = std::collections::HashMap::new();
            for n in 0u8..5 {
                let mut b = Batch::new();
                s.remember(&mut b, "gw1", &[n; 16], 3, &mut pending)
                    .unwrap();
                s.commit(b).unwrap();
            }
            assert!(!s.seen("gw1", &[0; 16]).unwrap());
            assert!(!s.seen("gw1", &[1; 16]).unwrap());
            for n in 2u8..5 {
                assert!(s.seen("gw1", &[n; 16]).unwrap());
            }
            assert!(!s.seen("gw2", &[4; 16]).unwrap(), "per gateway");
            drop(s);
            if let Some(d) = dir {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }

    #[test]
    fn reading_times_since_reads_only_the_window_of_that_meter() {
        for (s, dir) in stores("times") {
            let mut b = Batch::new();
            for (m, t) in [
                ("M1", 100u64),
                ("M1", 200),
                ("M1", 300),
                ("M10", 250),
                ("M", 260),
            ] {
                let mut rest = t.to_be_bytes().to_vec();
                rest.push(1);
                b.put(key2("rd/", m, &rest), &0u8);
            }
            s.commit(b).unwrap();
            assert_eq!(s.reading_times_since("M1", 0).unwrap(), vec![100, 200, 300]);
            assert_eq!(s.reading_times_since("M1", 150).unwrap(), vec![200, 300]);
            assert_eq!(s.reading_times_since("M1", 300).unwrap(), vec![300]);
            assert!(s.reading_times_since("M1", 301).unwrap().is_empty());
            assert_eq!(s.reading_times_since("M10", 0).unwrap(), vec![250]);
            drop(s);
            if let Some(d) = dir {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}
