//! The uplink's own durable outbox: a tree of its own in the sled database the ledger uses.
//!
//! Layout of tree `uplink.outbox`: key = priority (1 octet: 0 urgent, 1 normal, 2 routine) ‖ sequence
//! (8 octets, big-endian), value = the frame's CBOR. Iterating the tree in key order is the drain order.
//! Meta keys start with 0xFF (above every priority): the outbox's random message-id source and the count
//! of readings dropped and not yet reported.
//!
//! Sequence numbers come from sled's `generate_id`, which only grows, also across crashes, so message ids
//! are never reused. Readings are committed without a flush (sled flushes every 500 ms by itself, so a
//! power cut loses at most that much of a routine reading stream); every other message is flushed before
//! `append` returns.

use concentrator_durable::DurableSync;
use concentrator_protocol::unix_now;
use std::sync::Mutex;

use concentrator_protocol::{event_code, Body, Event, Frame, MessageId, Priority, Scope, Severity};

use super::error::OutboxError;
use super::outbox::{AppendOutbox, Appended, Limits, Outbox, Pending};

const NAME: &str = "uplink";
/// The tree's name in the shared database.
pub const OUTBOX_TREE: &str = "uplink.outbox";
const META: u8 = 0xFF;
const SOURCE_KEY: &[u8] = b"\xFFsource";
const DROPPED_KEY: &[u8] = b"\xFFdropped";
/// At most one "readings dropped" event per this many seconds (more drops are added to the next one).
pub const DROP_REPORT_INTERVAL_S: u64 = 3600;

#[derive(Debug, Default)]
struct State {
    entries: u64,
    bytes: u64,
    dropped_unreported: u64,
    last_drop_report: u64,
}

/// The uplink's outbox in sled (see the module docs for the layout and durability).
#[derive(Debug)]
pub struct SledOutbox {
    db: sled::Db,
    tree: sled::Tree,
    /// fsync after every flush (`concentrator_durable::DurableSync`: sled's flush alone does not survive
    /// a power cut).
    durable: Option<DurableSync>,
    source: [u8; 8],
    limits: Limits,
    state: Mutex<State>,
}

fn store_err(op: &'static str) -> impl Fn(sled::Error) -> OutboxError {
    move |e| OutboxError::Store {
        outbox: NAME,
        op,
        reason: e.to_string(),
    }
}

fn key(priority: Priority, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = priority as u8;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl SledOutbox {
    /// Opens (or creates) the outbox in `db` (the ledger's database: `SledStore` shares its handle), with
    /// `limits`. Counts what is queued, which reads the whole tree once (about 50 ms per 100 000 entries).
    pub fn open(db: &sled::Db, limits: Limits) -> Result<Self, OutboxError> {
        let tree = db.open_tree(OUTBOX_TREE).map_err(store_err("open tree"))?;
        let source = match tree.get(SOURCE_KEY).map_err(store_err("read source"))? {
            Some(v) if v.len() == 8 => {
                let mut s = [0u8; 8];
                s.copy_from_slice(&v);
                s
            }
            Some(_) => {
                return Err(OutboxError::Corrupt {
                    outbox: NAME,
                    key: "source".into(),
                    reason: "not 8 octets".into(),
                })
            }
            None => {
                let s: [u8; 8] = rand::random();
                tree.insert(SOURCE_KEY, &s)
                    .map_err(store_err("write source"))?;
                tree.flush().map_err(store_err("flush source"))?;
                // The source is written once, at creation; sled's own fsync follows within 500 ms,
                // and `with_durable` cannot have been called yet.
                s
            }
        };
        let mut state = State::default();
        for item in tree.range(..[META].as_slice()) {
            let (k, v) = item.map_err(store_err("count entries"))?;
            state.entries += 1;
            state.bytes += (k.len() + v.len()) as u64;
        }
        if let Some(v) = tree
            .get(DROPPED_KEY)
            .map_err(store_err("read drop count"))?
        {
            if let Ok(b) = <[u8; 8]>::try_from(v.as_ref()) {
                state.dropped_unreported = u64::from_be_bytes(b);
            }
        }
        Ok(SledOutbox {
            durable: None,
            db: db.clone(),
            tree,
            source,
            limits,
            state: Mutex::new(state),
        })
    }

    /// The message-id source of this outbox (its first 8 octets of every id).
    pub fn source(&self) -> [u8; 8] {
        self.source
    }

    /// A fresh message id that is never reused, for messages that do not wait in the outbox (birth,
    /// death, acknowledgements of downlink messages).
    pub fn fresh_id(&self) -> Result<MessageId, OutboxError> {
        let seq = self.db.generate_id().map_err(store_err("generate id"))?;
        Ok(MessageId::new(self.source, seq))
    }

    /// Octets queued.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Makes every append so far durable.
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.tree.flush().map(drop).map_err(store_err("flush"))?;
        self.sync()
    }

    /// Makes every flush an `fsync` of the database's log file too (see [`DurableSync`]).
    pub fn with_durable(mut self, durable: DurableSync) -> Self {
        self.durable = Some(durable);
        self
    }

    fn sync(&self) -> Result<(), OutboxError> {
        match &self.durable {
            Some(d) => d.sync_log().map_err(|reason| OutboxError::Store {
                outbox: NAME,
                op: "fsync",
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Queues a "readings dropped" event (code 51, gateway scope) if readings were dropped since the last
    /// one. The uplink calls it on every connection; `append` calls it at most once per
    /// [`DROP_REPORT_INTERVAL_S`].
    pub fn report_drops(&self) -> Result<Option<MessageId>, OutboxError> {
        let count = {
            let mut st = self.lock();
            let n = st.dropped_unreported;
            if n == 0 {
                return Ok(None);
            }
            st.dropped_unreported = 0;
            st.last_drop_report = unix_now();
            n
        };
        self.tree
            .insert(DROPPED_KEY, &0u64.to_be_bytes())
            .map_err(store_err("reset drop count"))?;
        let body = Body::Event(Event {
            at: unix_now(),
            code: event_code::READINGS_DROPPED,
            severity: Severity::Warning,
            detail: Some(format!("{count} readings dropped: the outbox was full")),
            values: vec![i64::try_from(count).unwrap_or(i64::MAX)],
        });
        log::warn!("uplink outbox: {count} readings dropped because the outbox was full");
        self.append(Scope::Gateway, unix_now(), body)
            .map(|a| Some(a.id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters that are at worst slightly off.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fits(&self, st: &State, extra: u64) -> bool {
        st.entries < self.limits.max_entries && st.bytes + extra <= self.limits.max_bytes
    }

    /// Deletes the oldest routine entry; returns false when there is none.
    fn drop_oldest_routine(&self, st: &mut State) -> Result<bool, OutboxError> {
        let lo = [Priority::Routine as u8];
        let hi = [Priority::Routine as u8 + 1];
        let Some(first) = self.tree.range(lo..hi).next() else {
            return Ok(false);
        };
        let (k, _) = first.map_err(store_err("find oldest reading"))?;
        if let Some(v) = self
            .tree
            .remove(&k)
            .map_err(store_err("drop oldest reading"))?
        {
            st.entries = st.entries.saturating_sub(1);
            st.bytes = st.bytes.saturating_sub((k.len() + v.len()) as u64);
        }
        Ok(true)
    }
}

impl Outbox for SledOutbox {
    fn name(&self) -> &'static str {
        NAME
    }

    fn list(&self, limit: usize) -> Result<Vec<Pending>, OutboxError> {
        self.list_where(limit, usize::MAX, &|_| true)
    }

    fn list_where(
        &self,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&Pending) -> bool,
    ) -> Result<Vec<Pending>, OutboxError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        for (seen, item) in self.tree.range(..[META].as_slice()).enumerate() {
            if out.len() >= limit || seen >= scan {
                break;
            }
            let (k, v) = item.map_err(store_err("list"))?;
            let priority = match k.first() {
                Some(0) => Priority::Urgent,
                Some(1) => Priority::Normal,
                _ => Priority::Routine,
            };
            match Frame::decode(&v) {
                Ok(frame) if k.len() == 9 => {
                    let p = Pending { frame, priority };
                    if keep(&p) {
                        out.push(p);
                    }
                }
                Ok(_) => log::error!("{}", corrupt(&k, "key is not 9 octets")),
                Err(e) => log::error!("{}", corrupt(&k, &e.to_string())),
            }
        }
        Ok(out)
    }

    fn ack(&self, ids: &[MessageId]) -> Result<usize, OutboxError> {
        let mut st = self.lock();
        let mut n = 0;
        for id in ids.iter().filter(|id| id.source() == self.source) {
            for p in [Priority::Urgent, Priority::Normal, Priority::Routine] {
                let k = key(p, id.seq());
                if let Some(v) = self
                    .tree
                    .remove(k)
                    .map_err(store_err("delete acknowledged"))?
                {
                    st.entries = st.entries.saturating_sub(1);
                    st.bytes = st.bytes.saturating_sub((k.len() + v.len()) as u64);
                    n += 1;
                    break;
                }
            }
        }
        Ok(n)
    }

    fn len(&self) -> Result<u64, OutboxError> {
        Ok(self.lock().entries)
    }
}

fn corrupt(k: &[u8], reason: &str) -> OutboxError {
    OutboxError::Corrupt {
        outbox: NAME,
        key: k.iter().map(|b| format!("{b:02x}")).collect(),
        reason: reason.into(),
    }
}

impl AppendOutbox for SledOutbox {
    fn append(&self, scope: Scope, created_at: u64, body: Body) -> Result<Appended, OutboxError> {
        let priority = body.priority();
        let droppable = body.droppable();
        let kind = body.kind();
        let id = self.fresh_id()?;
        let frame = Frame::new(id, scope.tid(), created_at, body);
        let octets = frame.encode().map_err(|e| OutboxError::Encode {
            outbox: NAME,
            kind: format!("{kind}"),
            reason: e.to_string(),
        })?;
        let k = key(priority, id.seq());
        let size = (k.len() + octets.len()) as u64;
        let (dropped, report_due) = {
            let mut st = self.lock();
            let mut dropped = 0;
            while !self.fits(&st, size) && self.drop_oldest_routine(&mut st)? {
                dropped += 1;
            }
            let refused = !self.fits(&st, size) && droppable;
            if refused {
                dropped += 1;
            } else {
                self.tree.insert(k, octets).map_err(store_err("append"))?;
                st.entries += 1;
                st.bytes += size;
            }
            if dropped > 0 {
                st.dropped_unreported += dropped;
                self.tree
                    .insert(DROPPED_KEY, &st.dropped_unreported.to_be_bytes())
                    .map_err(store_err("count dropped readings"))?;
            }
            if refused {
                return Err(OutboxError::Full {
                    outbox: NAME,
                    entries: st.entries,
                    bytes: st.bytes,
                });
            }
            let due = st.dropped_unreported > 0
                && unix_now().saturating_sub(st.last_drop_report) >= DROP_REPORT_INTERVAL_S;
            (dropped, due)
        };
        if !droppable {
            self.flush()?;
        }
        if report_due {
            self.report_drops()?;
        }
        Ok(Appended { id, dropped })
    }

    fn limits(&self) -> Limits {
        self.limits
    }
}

impl SledOutbox {
    /// The message-id source for the ledger's outbox adapter: this outbox's source with the top bit of
    /// its first octet flipped, so the two never collide and both change together when the store is
    /// created anew.
    pub fn ledger_source(&self) -> [u8; 8] {
        let mut s = self.source;
        s[0] ^= 0x80;
        s
    }
}
