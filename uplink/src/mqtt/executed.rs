//! The ids of downlink messages already carried out, so that a command delivered again (the broker
//! redelivers what it did not see acknowledged; the head-end resends what it did not see answered) is
//! answered "already done" and never executed twice.
//!
//! Tree `uplink.executed`: `b'i'` ‖ message id → order (8 octets) ‖ result code (2 octets), and
//! `b'o'` ‖ order → message id, so the oldest ids can be forgotten once more than `capacity` are held.
//! Each record is flushed before the broker is told the message arrived (MQTT PUBACK): a command whose
//! PUBACK was sent is recorded on disk.

use std::sync::Mutex;

use concentrator_protocol::{MessageId, MESSAGE_ID_LEN};

use super::error::OutboxError;

/// The tree's name in the shared database.
pub const EXECUTED_TREE: &str = "uplink.executed";
/// Default number of ids remembered: far more than the head-end resends within its retry horizon.
pub const DEFAULT_CAPACITY: u64 = 20_000;

fn err(op: &'static str) -> impl Fn(sled::Error) -> OutboxError {
    move |e| OutboxError::Store {
        outbox: "executed-commands",
        op,
        reason: e.to_string(),
    }
}

/// The bounded, durable set of executed downlink message ids.
#[derive(Debug)]
pub struct Executed {
    tree: sled::Tree,
    durable: Option<concentrator_durable::DurableSync>,
    capacity: u64,
    /// Next order number and how many are held.
    state: Mutex<(u64, u64)>,
}

impl Executed {
    /// Makes every record an `fsync` of the database's log file too
    /// (`concentrator_durable::DurableSync`).
    pub fn with_durable(mut self, durable: concentrator_durable::DurableSync) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Opens (or creates) the set in `db`, remembering at most `capacity` ids (at least 1).
    pub fn open(db: &sled::Db, capacity: u64) -> Result<Self, OutboxError> {
        let tree = db.open_tree(EXECUTED_TREE).map_err(err("open tree"))?;
        let mut held = 0;
        let mut next = 0;
        for item in tree.scan_prefix(b"o") {
            let (k, _) = item.map_err(err("count"))?;
            held += 1;
            if let Ok(b) = <[u8; 8]>::try_from(&k[1..]) {
                next = next.max(u64::from_be_bytes(b) + 1);
            }
        }
        Ok(Executed {
            durable: None,
            tree,
            capacity: capacity.max(1),
            state: Mutex::new((next, held)),
        })
    }

    /// The result code recorded for `id`, if it was executed.
    pub fn result_of(&self, id: &MessageId) -> Result<Option<u16>, OutboxError> {
        let Some(v) = self.tree.get(id_key(id)).map_err(err("read"))? else {
            return Ok(None);
        };
        Ok(Some(
            v.get(8..10)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map_or(0, u16::from_be_bytes),
        ))
    }

    /// Records `id` as executed with result `code`, forgets the oldest ids beyond the capacity, and
    /// flushes.
    pub fn record(&self, id: &MessageId, code: u16) -> Result<(), OutboxError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let order = st.0;
        let mut batch = sled::Batch::default();
        let mut value = order.to_be_bytes().to_vec();
        value.extend_from_slice(&code.to_be_bytes());
        batch.insert(id_key(id).to_vec(), value);
        batch.insert(order_key(order).to_vec(), id.0.to_vec());
        let mut held = st.1 + 1;
        if held > self.capacity {
            for item in self
                .tree
                .scan_prefix(b"o")
                .take((held - self.capacity) as usize)
            {
                let (k, v) = item.map_err(err("find oldest"))?;
                batch.remove(k);
                if let Ok(old) = <[u8; MESSAGE_ID_LEN]>::try_from(v.as_ref()) {
                    batch.remove(id_key(&MessageId(old)).to_vec());
                }
                held -= 1;
            }
        }
        self.tree.apply_batch(batch).map_err(err("record"))?;
        self.tree.flush().map_err(err("flush"))?;
        if let Some(d) = &self.durable {
            d.sync_log().map_err(|reason| OutboxError::Store {
                outbox: "executed-commands",
                op: "fsync",
                reason,
            })?;
        }
        *st = (order + 1, held);
        Ok(())
    }

    /// How many ids are remembered.
    pub fn len(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn id_key(id: &MessageId) -> [u8; 1 + MESSAGE_ID_LEN] {
    let mut k = [0u8; 1 + MESSAGE_ID_LEN];
    k[0] = b'i';
    k[1..].copy_from_slice(&id.0);
    k
}

fn order_key(order: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'o';
    k[1..].copy_from_slice(&order.to_be_bytes());
    k
}
