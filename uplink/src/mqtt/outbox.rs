//! What the uplink drains: the [`Outbox`] trait, the entries it lists, and the merge of several outboxes.
//!
//! Two outboxes feed one uplink: the uplink's own ([`crate::mqtt::SledOutbox`]: readings, events, command
//! results, account summaries) and the ledger's (signed receipts, written in the same transaction as the
//! money change; the daemon adapts it). Each lists its entries in drain order: priority
//! first (urgent, normal, routine), then sequence, so that within one meter messages of one priority keep
//! the order they were queued in. An entry leaves its outbox only through [`Outbox::ack`], called when
//! the head-end's acknowledgement (kind 0x89) names its message id.

use std::fmt;

use concentrator_protocol::{Body, Frame, MessageId, Priority, Scope};

use super::error::OutboxError;

/// One message waiting for the head-end: the frame (with its stable message id) and its drain priority.
/// The frame is sealed only when it is sent (docs/uplink.md, *Seal at send time*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The frame.
    pub frame: Frame,
    /// Its drain priority.
    pub priority: Priority,
}

impl Pending {
    /// The message id (what the head-end acknowledges and deduplicates on).
    pub fn id(&self) -> MessageId {
        self.frame.header.id
    }

    /// Whom it is about: the meter of its TID, or the gateway.
    pub fn scope(&self) -> Scope {
        self.frame.header.tid.map_or(Scope::Gateway, Scope::Meter)
    }
}

/// The drain side of an outbox: list in drain order, delete on acknowledgement, size.
pub trait Outbox: Send + Sync + fmt::Debug {
    /// A short name for logs and errors (`uplink`, `ledger`).
    fn name(&self) -> &'static str;

    /// The first `limit` entries in drain order (priority, then sequence). An entry that cannot be
    /// decoded is logged and skipped, never returned and never deleted.
    fn list(&self, limit: usize) -> Result<Vec<Pending>, OutboxError>;

    /// Like [`Outbox::list`], but only the entries `keep` accepts, looking at no more than `scan` entries
    /// (so entries that cannot be sent yet, such as a meter's before its AKA run, neither hold back the
    /// others nor make a listing read the whole store).
    fn list_where(
        &self,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&Pending) -> bool,
    ) -> Result<Vec<Pending>, OutboxError> {
        Ok(self
            .list(scan.max(limit))?
            .into_iter()
            .filter(|p| keep(p))
            .take(limit)
            .collect())
    }

    /// Deletes the entries the head-end acknowledged; ids that are not this outbox's, or already deleted,
    /// are ignored. Returns how many were deleted.
    fn ack(&self, ids: &[MessageId]) -> Result<usize, OutboxError>;

    /// Entries queued.
    fn len(&self) -> Result<u64, OutboxError>;

    /// Whether nothing is queued.
    fn is_empty(&self) -> Result<bool, OutboxError> {
        Ok(self.len()? == 0)
    }
}

/// An outbox the daemon writes to directly (the ledger's is written only inside ledger transactions).
pub trait AppendOutbox: Outbox {
    /// Queues `body` about `scope`, made at `created_at` (unix seconds), and returns its message id.
    ///
    /// Never blocks on the network: it is a local store write. When the outbox is full the
    /// [`Limits`] policy applies: the oldest routine readings are dropped to make room (and counted for a
    /// "readings dropped" event, code 51); messages that may not be dropped are always accepted.
    fn append(&self, scope: Scope, created_at: u64, body: Body) -> Result<Appended, OutboxError>;

    /// The size limits in force.
    fn limits(&self) -> Limits;
}

/// What [`AppendOutbox::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The new entry's message id.
    pub id: MessageId,
    /// Routine readings dropped to make room for it.
    pub dropped: u64,
}

/// The bound on an outbox and its policy when full.
///
/// When queueing a message would pass either limit, the oldest *routine* entries (readings: the only
/// kind whose [`Body::droppable`] is true) are deleted until it fits. If it still does not fit, a
/// routine message is refused ([`OutboxError::Full`], and counted as dropped); any other message
/// (alarms, events, command results, account summaries) is accepted above the limit: losing a money or
/// relay event is worse than using more disk. Receipts live in the ledger's outbox, which has no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries.
    pub max_entries: u64,
    /// Most octets (keys and frames).
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 500 000 entries or 64 MiB: about five days of 15-minute readings from 1 000 meters, in well under a
    /// tenth of the smallest SD card the image supports.
    fn default() -> Self {
        Limits {
            max_entries: 500_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The entries of several outboxes in one drain order: by priority; within a priority, the outboxes in
/// the order given, each in its own order.
pub fn merged(outboxes: &[&dyn Outbox], limit: usize) -> Vec<Pending> {
    merged_where(outboxes, limit, limit, &|_| true)
}

/// [`merged`] with [`Outbox::list_where`]: only entries `keep` accepts, each outbox scanned at most
/// `scan` entries deep.
pub fn merged_where(
    outboxes: &[&dyn Outbox],
    limit: usize,
    scan: usize,
    keep: &dyn Fn(&Pending) -> bool,
) -> Vec<Pending> {
    let mut all = Vec::new();
    for ob in outboxes {
        match ob.list_where(limit, scan, keep) {
            Ok(list) => all.extend(list),
            Err(e) => log::warn!("uplink: listing outbox {}: {e}", ob.name()),
        }
    }
    // Stable: keeps each outbox's own order within a priority.
    all.sort_by_key(|p| p.priority);
    all.truncate(limit);
    all
}
