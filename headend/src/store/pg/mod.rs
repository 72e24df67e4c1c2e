//! The store on PostgreSQL, for several head-end workers (docs/ARCHITECTURE.md, *The head-end's
//! store*).
//!
//! The records are the embedded store's, under the same keys, in one table `kv (key bytea primary
//! key, value bytea)` ([`migrations`]). What makes it safe for many workers:
//!
//! - every [`super::Store::scope`] is one transaction that first takes a transaction-level advisory
//!   lock per named record key (`pg_advisory_xact_lock` on 63 bits of the key's SHA-256), so two
//!   workers never change a gateway's, a meter's or the payment record's state at once, and each
//!   reads the other's committed writes after it has the lock (READ COMMITTED);
//! - records written once (tokens, payment record entries, request ids, uplink message ids) are plain
//!   `INSERT`s, so the primary key refuses a second writer even if a lock were forgotten, and the
//!   whole transaction is rolled back;
//! - a deadlock or serialisation failure aborts the transaction, and the scope runs again.
//!
//! Commits are durable when they return (`synchronous_commit` on, PostgreSQL's default), so
//! [`Kv::flush`] has nothing to do.

pub mod migrations;

use std::sync::{Arc, Mutex};

use postgres::error::SqlState;
use postgres::{Client, Statement};
use postgres_native_tls::MakeTlsConnector;

use super::kv::{Entries, Kv, KvTxn};
use super::{Batch, Op, StoreError};

/// A count and a SHA-256 over a run of records in key order (each key and value with its length),
/// to tell that two stores hold the same records.
#[derive(Default)]
pub struct EntryDigest {
    /// Records.
    pub records: u64,
    /// Octets of keys and values.
    pub octets: u64,
    hash: openssl::sha::Sha256,
}

impl EntryDigest {
    /// Adds the next record.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.records += 1;
        self.octets += (key.len() + value.len()) as u64;
        for part in [key, value] {
            self.hash.update(&(part.len() as u64).to_be_bytes());
            self.hash.update(part);
        }
    }

    /// The SHA-256 so far, in hex.
    pub fn hex(&self) -> String {
        hex::encode(self.hash.clone().finish())
    }
}

impl PartialEq for EntryDigest {
    fn eq(&self, other: &EntryDigest) -> bool {
        self.records == other.records && self.octets == other.octets && self.hex() == other.hex()
    }
}

impl std::fmt::Debug for EntryDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records, {} octets, SHA-256 {}",
            self.records,
            self.octets,
            self.hex()
        )
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// A libpq connection string or URL.
    pub url: String,
    /// Extra CA certificates (PEM) for the server's certificate.
    pub ca: Option<std::path::PathBuf>,
    /// Idle connections kept.
    pub pool: usize,
}

impl PgSettings {
    /// From `[store]`.
    pub fn from_config(config: &crate::config::Config) -> Result<PgSettings, StoreError> {
        let url = config.store.url.clone().ok_or_else(|| StoreError::Db {
            path: config.base.join("headend.toml").display().to_string(),
            reason: "[store] backend = \"postgres\" needs a url".into(),
        })?;
        Ok(PgSettings {
            url,
            ca: config.store.ca.as_ref().map(|p| config.path(p)),
            pool: config.store.pool.max(1),
        })
    }
}

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    scan_range: Statement,
    scan_from: Statement,
    put: Statement,
    insert: Statement,
    remove: Statement,
    cas_new: Statement,
    cas_update: Statement,
    lock: Statement,
    notify: Statement,
    put_many: Statement,
    insert_many: Statement,
    remove_many: Statement,
}

struct Shared {
    config: postgres::Config,
    tls: MakeTlsConnector,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    /// Where, for people (no password).
    place: String,
}

/// PostgreSQL as the head-end's key space.
pub struct PgKv {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv")
            .field("place", &self.shared.place)
            .finish()
    }
}

/// The lock id of a record key: 63 bits of its SHA-256 (the same in every worker).
fn lock_id(key: &[u8]) -> i64 {
    let h = openssl::sha::sha256(key);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (u64::from_be_bytes(b) >> 1) as i64
}

/// The first key after every key that starts with `prefix`; `None` if there is none.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn place_of(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgresql://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

impl Shared {
    /// A new connection, its failure named with the fix.
    fn client(&self) -> Result<Client, StoreError> {
        self.config.connect(self.tls.clone()).map_err(|e| StoreError::Db {
            path: self.place.clone(),
            reason: format!(
                "cannot connect: {e}; check that PostgreSQL runs there and that [store] url names the right host, database and user"
            ),
        })
    }

    fn err(&self, e: postgres::Error) -> StoreError {
        StoreError::Db {
            path: self.place.clone(),
            reason: e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string()),
        }
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let mut client = self.client()?;
        // Every range scan planned for its own bounds: the generic plan that prepared statements
        // switch to after five runs assumes a wide range (a parallel bitmap scan and a sort), which
        // made each scan of one meter's records tens of milliseconds once the table held millions
        // of rows (seen with 10,000 gateways of 100 meters; the load generator).
        client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .map_err(|e| self.err(e))?;
        let mut prep = |sql: &str| client.prepare(sql).map_err(|e| self.err(e));
        let get = prep("SELECT value FROM kv WHERE key = $1")?;
        let scan_range =
            prep("SELECT key, value FROM kv WHERE key >= $1 AND key < $2 ORDER BY key")?;
        let scan_from = prep("SELECT key, value FROM kv WHERE key >= $1 ORDER BY key")?;
        let put = prep(
            "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )?;
        let insert = prep("INSERT INTO kv (key, value) VALUES ($1, $2)")?;
        let remove = prep("DELETE FROM kv WHERE key = $1")?;
        let cas_new =
            prep("INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")?;
        let cas_update = prep("UPDATE kv SET value = $3 WHERE key = $1 AND value = $2")?;
        let lock = prep("SELECT pg_advisory_xact_lock($1)")?;
        let notify = prep("SELECT pg_notify($1, $2)")?;
        let put_many = prep(
            "INSERT INTO kv (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )?;
        let insert_many =
            prep("INSERT INTO kv (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])")?;
        let remove_many = prep("DELETE FROM kv WHERE key = ANY($1::bytea[])")?;
        Ok(Conn {
            client,
            get,
            scan_range,
            scan_from,
            put,
            insert,
            remove,
            cas_new,
            cas_update,
            lock,
            notify,
            put_many,
            insert_many,
            remove_many,
        })
    }

    fn checkout(&self) -> Result<Conn, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(c) if !c.client.is_closed() => Ok(c),
            _ => self.connect(),
        }
    }

    fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

/// A statement's failure: the store error, and whether trying the transaction again may succeed.
fn failure(shared: &Shared, e: postgres::Error, key: Option<&[u8]>) -> (StoreError, bool) {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => match key {
            Some(k) => (StoreError::conflict(k), false),
            None => (shared.err(e), false),
        },
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            (shared.err(e), true)
        }
        _ => (shared.err(e), false),
    }
}

impl Conn {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, postgres::Error> {
        Ok(self
            .client
            .query_opt(&self.get, &[&key])?
            .map(|r| r.get::<_, Vec<u8>>(0)))
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<Entries, postgres::Error> {
        self.scan_from(prefix, prefix)
    }

    /// The keys under `prefix` from `from` on, in one ranged index scan.
    fn scan_from(&mut self, prefix: &[u8], from: &[u8]) -> Result<Entries, postgres::Error> {
        let from = from.max(prefix);
        let rows = match prefix_end(prefix) {
            Some(end) => self.client.query(&self.scan_range, &[&from, &end])?,
            None => self.client.query(&self.scan_from, &[&from])?,
        };
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
    }

    /// The writes of a batch, inside a transaction the caller began: each run of writes of one kind
    /// in one statement (a round trip per run, not per write), in the batch's order.
    fn write(&mut self, batch: Batch) -> Result<(), (postgres::Error, Option<Vec<u8>>)> {
        let mut ops = batch.into_ops().into_iter().peekable();
        while let Some((k, op)) = ops.next() {
            let mut run = vec![(k, op)];
            while let Some((_, next)) = ops.peek() {
                if std::mem::discriminant(next) != std::mem::discriminant(&run[0].1) {
                    break;
                }
                if let Some(w) = ops.next() {
                    run.push(w);
                }
            }
            self.write_run(run)?;
        }
        Ok(())
    }

    /// Writes of one kind.
    fn write_run(
        &mut self,
        run: Vec<(Vec<u8>, Op)>,
    ) -> Result<(), (postgres::Error, Option<Vec<u8>>)> {
        if run.len() == 1 {
            let (k, op) = &run[0];
            let r = match op {
                Op::Put(v) => self.client.execute(&self.put, &[k, v]),
                Op::Insert(v) => self.client.execute(&self.insert, &[k, v]),
                Op::Remove => self.client.execute(&self.remove, &[k]),
            };
            return r.map(|_| ()).map_err(|e| (e, Some(k.clone())));
        }
        let first = run[0].0.clone();
        match run[0].1 {
            Op::Remove => {
                let keys: Vec<Vec<u8>> = run.into_iter().map(|(k, _)| k).collect();
                self.client
                    .execute(&self.remove_many, &[&keys])
                    .map(|_| ())
                    .map_err(|e| (e, Some(first)))
            }
            Op::Put(_) => {
                // The last value of a key set twice (one statement cannot set a row twice).
                let mut last: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
                for (k, op) in run {
                    if let Op::Put(v) = op {
                        last.insert(k, v);
                    }
                }
                let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = last.into_iter().unzip();
                self.client
                    .execute(&self.put_many, &[&keys, &values])
                    .map(|_| ())
                    .map_err(|e| (e, Some(first)))
            }
            Op::Insert(_) => {
                let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = run
                    .into_iter()
                    .map(|(k, op)| match op {
                        Op::Insert(v) | Op::Put(v) => (k, v),
                        Op::Remove => (k, Vec::new()),
                    })
                    .unzip();
                self.client
                    .execute(&self.insert_many, &[&keys, &values])
                    .map(|_| ())
                    .map_err(|e| {
                        // The key that exists, as the database names it; else the run's first.
                        let named = e
                            .as_db_error()
                            .and_then(|d| d.detail())
                            .and_then(|d| d.split_once("=(\\x"))
                            .and_then(|(_, rest)| rest.split_once(')'))
                            .and_then(|(h, _)| hex::decode(h).ok())
                            .filter(|k| keys.contains(k));
                        (e, Some(named.unwrap_or(first)))
                    })
            }
        }
    }

    fn cas(&mut self, key: &[u8], old: Option<&[u8]>, new: &[u8]) -> Result<bool, postgres::Error> {
        let n = match old {
            None => self.client.execute(&self.cas_new, &[&key, &new])?,
            Some(old) => self.client.execute(&self.cas_update, &[&key, &old, &new])?,
        };
        Ok(n == 1)
    }

    fn notify(&mut self, channel: &str, payload: &str) -> Result<(), postgres::Error> {
        self.client
            .query_one(&self.notify, &[&channel, &payload])
            .map(|_| ())
    }

    fn lock(&mut self, keys: &[Vec<u8>]) -> Result<(), postgres::Error> {
        let mut ids: Vec<i64> = keys.iter().map(|k| lock_id(k)).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.client.query_one(&self.lock, &[&id])?;
        }
        Ok(())
    }
}

impl PgKv {
    /// Connects and checks that the schema is current (else: run `concentrator-headend migrate`).
    pub fn open(settings: &PgSettings) -> Result<PgKv, StoreError> {
        let shared = Arc::new(Shared::new(settings)?);
        {
            let mut client = shared.client()?;
            let found = migrations::version(&mut client).map_err(|e| shared.err(e))?;
            let wanted = migrations::latest();
            if found != wanted {
                return Err(StoreError::Schema {
                    url: shared.place.clone(),
                    found,
                    wanted,
                    fix: if found < wanted {
                        "run `concentrator-headend migrate` (with the same configuration) first"
                            .into()
                    } else {
                        "this program is older than the database: run the newer version".into()
                    },
                });
            }
        }
        let first = shared.connect()?;
        shared.checkin(first);
        Ok(PgKv { shared })
    }

    /// Applies every migration the database lacks, each in its own transaction; returns those applied
    /// (version, name).
    pub fn migrate(settings: &PgSettings) -> Result<Vec<(i32, &'static str)>, StoreError> {
        let shared = Shared::new(settings)?;
        let mut client = shared.client()?;
        migrations::apply(&mut client).map_err(|e| shared.err(e))
    }

    /// Copies `entries` (in key order) into the store's table, which must be empty, in one
    /// transaction: the table is locked, the entries streamed in with `COPY`, then read back in key
    /// order and compared with what was sent (count and [`EntryDigest`]) before the commit. Any
    /// difference, or a record already there, rolls everything back. `progress` is told the number
    /// of records sent so far, now and then.
    pub fn copy_into_empty(
        settings: &PgSettings,
        entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EntryDigest, StoreError> {
        use std::io::Write;
        let shared = Shared::new(settings)?;
        let mut client = shared.client()?;
        let mut tx = client.transaction().map_err(|e| shared.err(e))?;
        tx.batch_execute("LOCK TABLE kv IN ACCESS EXCLUSIVE MODE")
            .map_err(|e| shared.err(e))?;
        let held: i64 = tx
            .query_one("SELECT count(*) FROM kv", &[])
            .map_err(|e| shared.err(e))?
            .get(0);
        if held > 0 {
            return Err(StoreError::Db {
                path: shared.place.clone(),
                reason: format!(
                    "already holds {held} records; copy into a new, empty database (createdb, then `concentrator-headend migrate`) so that no record is mixed with another store's"
                ),
            });
        }
        let mut sent = EntryDigest::default();
        {
            let mut w = tx
                .copy_in("COPY kv (key, value) FROM STDIN")
                .map_err(|e| shared.err(e))?;
            let io = |e: std::io::Error| StoreError::Db {
                path: shared.place.clone(),
                reason: format!("the copy was interrupted: {e}"),
            };
            let mut line = Vec::new();
            for entry in entries {
                let (k, v) = entry?;
                sent.add(&k, &v);
                // COPY's text format: bytea in hex, the backslash itself escaped.
                line.clear();
                line.extend_from_slice(b"\\\\x");
                line.extend_from_slice(hex::encode(&k).as_bytes());
                line.extend_from_slice(b"\t\\\\x");
                line.extend_from_slice(hex::encode(&v).as_bytes());
                line.push(b'\n');
                w.write_all(&line).map_err(io)?;
                if sent.records.is_multiple_of(10_000) {
                    progress(sent.records);
                }
            }
            w.finish().map_err(|e| shared.err(e))?;
        }
        progress(sent.records);
        let mut read = EntryDigest::default();
        {
            use postgres::fallible_iterator::FallibleIterator;
            let none: [&(dyn postgres::types::ToSql + Sync); 0] = [];
            let mut rows = tx
                .query_raw("SELECT key, value FROM kv ORDER BY key", none)
                .map_err(|e| shared.err(e))?;
            while let Some(row) = rows.next().map_err(|e| shared.err(e))? {
                let (k, v): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
                read.add(&k, &v);
            }
        }
        if read != sent {
            return Err(StoreError::Db {
                path: shared.place.clone(),
                reason: format!(
                    "read back {} records ({} octets) where {} ({} octets) were sent; nothing was kept",
                    read.records, read.octets, sent.records, sent.octets
                ),
            });
        }
        tx.commit().map_err(|e| shared.err(e))?;
        Ok(sent)
    }

    /// Where, for people.
    pub fn place(&self) -> &str {
        &self.shared.place
    }

    fn run<R>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<R, postgres::Error>,
    ) -> Result<R, StoreError> {
        let mut c = self.shared.checkout()?;
        let r = f(&mut c).map_err(|e| self.shared.err(e));
        self.shared.checkin(c);
        r
    }
}

impl Shared {
    fn new(settings: &PgSettings) -> Result<Shared, StoreError> {
        let config: postgres::Config = settings.url.parse().map_err(|e| StoreError::Db {
            path: "[store] url".into(),
            reason: format!(
                "is not a PostgreSQL connection string ({e}); write postgresql://USER@HOST/DATABASE"
            ),
        })?;
        let place = place_of(&config);
        let mut tls = native_tls::TlsConnector::builder();
        if let Some(ca) = &settings.ca {
            let pem = std::fs::read(ca).map_err(|e| StoreError::Db {
                path: place.clone(),
                reason: format!("cannot read [store] ca {}: {e}", ca.display()),
            })?;
            let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| StoreError::Db {
                path: place.clone(),
                reason: format!("[store] ca {} is not a PEM certificate: {e}", ca.display()),
            })?;
            tls.add_root_certificate(cert);
        }
        let tls = tls.build().map_err(|e| StoreError::Db {
            path: place.clone(),
            reason: format!("cannot set up TLS: {e}"),
        })?;
        Ok(Shared {
            config,
            tls: MakeTlsConnector::new(tls),
            idle: Mutex::new(Vec::new()),
            max_idle: settings.pool.max(1),
            place,
        })
    }
}

impl Kv for PgKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|c| c.get(key))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut c = self.shared.checkout()?;
        let r = (|| {
            c.client
                .batch_execute("BEGIN")
                .map_err(|e| failure(&self.shared, e, None).0)?;
            if let Err((e, key)) = c.write(batch) {
                let _ = c.client.batch_execute("ROLLBACK");
                return Err(failure(&self.shared, e, key.as_deref()).0);
            }
            c.client
                .batch_execute("COMMIT")
                .map_err(|e| failure(&self.shared, e, None).0)
        })();
        self.shared.checkin(c);
        r
    }

    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.run(|c| c.scan(prefix))
    }

    fn scan_from(&self, prefix: &[u8], from: &[u8]) -> Result<Entries, StoreError> {
        self.run(|c| c.scan_from(prefix, from))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.run(|c| c.cas(key, old, &new))
    }

    fn shared(&self) -> bool {
        true
    }

    fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.run(|c| c.notify(channel, payload))
    }

    fn listen(
        &self,
        channel: &str,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Option<std::sync::mpsc::Receiver<String>>, StoreError> {
        let mut client = self
            .shared
            .config
            .connect(self.shared.tls.clone())
            .map_err(|e| self.shared.err(e))?;
        // A channel name is an identifier: quoted, so that any name the program chose is one.
        client
            .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
            .map_err(|e| self.shared.err(e))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let place = self.shared.place.clone();
        let channel = channel.to_string();
        std::thread::Builder::new()
            .name("headend-listen".into())
            .spawn(move || {
                use postgres::fallible_iterator::FallibleIterator;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut n = client.notifications();
                    let mut it = n.timeout_iter(std::time::Duration::from_millis(500));
                    loop {
                        match it.next() {
                            Ok(Some(note)) => {
                                if tx.send(note.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                log::error!("{place}: listening on {channel} ended ({e}); new purchases of other processes now wait for the periodic poll");
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Db {
                path: self.shared.place.clone(),
                reason: format!("cannot start the thread that listens for notifications: {e}"),
            })?;
        Ok(Some(rx))
    }

    fn begin(&self, locks: &[Vec<u8>]) -> Result<Option<Box<dyn KvTxn>>, StoreError> {
        let mut c = self.shared.checkout()?;
        if let Err(e) = c.client.batch_execute("BEGIN").and_then(|()| c.lock(locks)) {
            let _ = c.client.batch_execute("ROLLBACK");
            self.shared.checkin(c);
            return Err(self.shared.err(e));
        }
        Ok(Some(Box::new(PgTxn {
            shared: self.shared.clone(),
            conn: Some(c),
            failed: None,
            cache: Default::default(),
        })))
    }
}

/// A scope's transaction.
struct PgTxn {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    /// The first failure and whether trying again may succeed: every later statement would fail,
    /// and the commit is refused.
    failed: Option<(String, bool)>,
    /// What this transaction read or wrote, by key (`true`: written here). A value read is kept
    /// only until the transaction takes another lock (its holder may have changed it before); a
    /// value written here no other transaction can change before this one ends.
    cache: std::collections::HashMap<Vec<u8>, (Option<Vec<u8>>, bool)>,
}

impl PgTxn {
    /// [`KvTxn::apply`] without the cache.
    fn apply_uncached(&mut self, batch: Batch) -> Result<(), StoreError> {
        if !batch.has_inserts() {
            return self.step(None, |c| c.write(batch));
        }
        // A record that exists already is an answer, not a broken transaction: the batch alone is
        // undone (a savepoint) and the caller told.
        self.step(None, |c| plain(c.client.batch_execute("SAVEPOINT batch")))?;
        let r = self.step(None, |c| match c.write(batch) {
            Err((e, Some(k))) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                c.client
                    .batch_execute("ROLLBACK TO SAVEPOINT batch")
                    .map_err(|e| (e, None))?;
                Ok(Err(StoreError::conflict(&k)))
            }
            Err(e) => Err(e),
            Ok(()) => Ok(Ok(())),
        })?;
        r
    }

    /// Remembers a batch's writes, once they were made.
    fn written(&mut self, ops: &[(Vec<u8>, Op)]) {
        for (k, op) in ops {
            let v = match op {
                Op::Put(v) | Op::Insert(v) => Some(v.clone()),
                Op::Remove => None,
            };
            self.cache.insert(k.clone(), (v, true));
        }
    }

    fn step<R>(
        &mut self,
        key: Option<&[u8]>,
        f: impl FnOnce(&mut Conn) -> Result<R, (postgres::Error, Option<Vec<u8>>)>,
    ) -> Result<R, StoreError> {
        if let Some((reason, _)) = &self.failed {
            return Err(StoreError::Db {
                path: self.shared.place.clone(),
                reason: format!(
                    "the transaction failed earlier ({reason}) and is being rolled back"
                ),
            });
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Db {
                path: self.shared.place.clone(),
                reason: "the transaction has ended".into(),
            });
        };
        f(conn).map_err(|(e, k)| {
            let (err, retry) = failure(&self.shared, e, k.as_deref().or(key));
            self.failed = Some((err.to_string(), retry));
            err
        })
    }
}

fn plain<R>(r: Result<R, postgres::Error>) -> Result<R, (postgres::Error, Option<Vec<u8>>)> {
    r.map_err(|e| (e, None))
}

impl KvTxn for PgTxn {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((v, _)) = self.cache.get(key) {
            return Ok(v.clone());
        }
        let v = self.step(None, |c| plain(c.get(key)))?;
        self.cache.insert(key.to_vec(), (v.clone(), false));
        Ok(v)
    }

    fn apply(&mut self, batch: Batch) -> Result<(), StoreError> {
        let ops = batch.clone().into_ops();
        let r = self.apply_uncached(batch);
        if matches!(r, Ok(())) {
            self.written(&ops);
        }
        r
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.step(None, |c| plain(c.scan(prefix)))
    }

    fn scan_from(&mut self, prefix: &[u8], from: &[u8]) -> Result<Entries, StoreError> {
        self.step(None, |c| plain(c.scan_from(prefix, from)))
    }

    fn compare_and_swap(
        &mut self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let swapped = self.step(None, |c| plain(c.cas(key, old, &new)))?;
        if swapped {
            self.cache.insert(key.to_vec(), (Some(new), true));
        } else {
            // Someone else's value: read it afresh next time.
            self.cache.remove(key);
        }
        Ok(swapped)
    }

    fn lock(&mut self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        self.step(None, |c| plain(c.lock(keys)))?;
        self.cache.retain(|_, (_, written)| *written);
        Ok(())
    }

    fn notify(&mut self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.step(None, |c| plain(c.notify(channel, payload)))
    }

    fn retryable(&self) -> bool {
        self.failed.as_ref().is_some_and(|(_, retry)| *retry)
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        if let Some((reason, _)) = self.failed.take() {
            let _ = conn.client.batch_execute("ROLLBACK");
            self.shared.checkin(conn);
            return Err(StoreError::Db {
                path: self.shared.place.clone(),
                reason: format!("nothing of the transaction was written: {reason}"),
            });
        }
        let r = conn
            .client
            .batch_execute("COMMIT")
            .map_err(|e| failure(&self.shared, e, None).0);
        self.shared.checkin(conn);
        r
    }
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.client.batch_execute("ROLLBACK");
            self.shared.checkin(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_lock_ids() {
        assert_eq!(prefix_end(b"m/"), Some(b"m0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        assert!(lock_id(b"g/GW-1") >= 0);
        assert_ne!(lock_id(b"g/GW-1"), lock_id(b"g/GW-2"));
    }
}
