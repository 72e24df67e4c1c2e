//! The ledger's outbox (signed receipts, settlements, reconciliation reports), drained through the same
//! uplink as everything else.
//!
//! The ledger writes an entry in the same store transaction as the money change it reports, numbered by
//! the ledger's own outbox sequence; this adapter lists those entries as frames whose message id is
//! `source ‖ ledger sequence` (so the id is the same at every resend and after restarts) and deletes them
//! when the head-end acknowledges that id. Turning an entry into a frame needs what only the daemon knows
//! (the TID of a meter number), so the daemon passes the mapping; [`LedgerOutbox::receipts`] is the one
//! for receipts.

use std::fmt;

use concentrator_ledger::{Outbox as LedgerEntries, OutboxEntry, OutboxKind, Store, TopUpReceipt};
use concentrator_protocol::{Body, Frame, MessageId, ReceiptBody, Scope, SettlementBody, Tid};

use concentrator_uplink::mqtt::{Outbox, OutboxError, Pending};

const NAME: &str = "ledger";

/// Turns a ledger entry into (scope, creation time, body); `None` leaves it queued and unsent.
pub type LedgerMapping = dyn Fn(&OutboxEntry) -> Option<(Scope, u64, Body)> + Send + Sync;

/// The ledger's outbox as an uplink [`Outbox`].
pub struct LedgerOutbox<S> {
    store: S,
    source: [u8; 8],
    map: Box<LedgerMapping>,
}

impl<S> fmt::Debug for LedgerOutbox<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerOutbox")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<S: Store + Send + Sync> LedgerOutbox<S> {
    /// The outbox of `store` (a clone of the ledger's `SledStore` shares its database), with message ids
    /// from `source` (use `SledOutbox::ledger_source`: stable, and never the uplink
    /// outbox's own source) and the daemon's `map`.
    pub fn new(store: S, source: [u8; 8], map: Box<LedgerMapping>) -> Self {
        LedgerOutbox { store, source, map }
    }

    /// Sends receipts (kind 0x03) and settlements (kind 0x0D) in the scope of the meter whose TID
    /// `tid_of` gives for their meter number; one of a meter without a TID waits. Reconciliation reports
    /// have no wire kind and wait in the ledger's outbox.
    pub fn receipts(
        store: S,
        source: [u8; 8],
        tid_of: impl Fn(&str) -> Option<Tid> + Send + Sync + 'static,
    ) -> Self {
        let map = move |e: &OutboxEntry| -> Option<(Scope, u64, Body)> {
            if e.kind == OutboxKind::Settlement {
                return settlement(e, &tid_of);
            }
            if e.kind != OutboxKind::Receipt {
                return None;
            }
            let r = match TopUpReceipt::from_signed(e.payload.clone()) {
                Ok(r) => r,
                Err(why) => {
                    log::error!(
                        "uplink: ledger outbox entry {} is not a receipt: {why}",
                        e.seq
                    );
                    return None;
                }
            };
            let tid = tid_of(&r.receipt.meter_id)?;
            Some((
                Scope::Meter(tid),
                r.receipt.applied_at,
                Body::Receipt(ReceiptBody { signed: r.signed }),
            ))
        };
        LedgerOutbox::new(store, source, Box::new(map))
    }

    fn entries(&self) -> LedgerEntries<'_, S> {
        LedgerEntries::new(&self.store)
    }
}

/// A settlement entry as a frame in its meter's scope (created at its closing time).
fn settlement(e: &OutboxEntry, tid_of: &dyn Fn(&str) -> Option<Tid>) -> Option<(Scope, u64, Body)> {
    let doc = concentrator_security::signed::SignedDocument::decode(&e.payload).ok();
    let Some(s) =
        doc.and_then(|d| concentrator_security::tenancy::SettlementDocument::decode(&d.body).ok())
    else {
        log::error!(
            "uplink: ledger outbox entry {} is not a settlement; it stays in the outbox",
            e.seq
        );
        return None;
    };
    let tid = tid_of(&s.meter_id)?;
    Some((
        Scope::Meter(tid),
        s.closed_at,
        Body::Settlement(SettlementBody {
            signed: e.payload.clone(),
        }),
    ))
}

fn store_err(op: &'static str) -> impl Fn(concentrator_ledger::LedgerError) -> OutboxError {
    move |e| OutboxError::Store {
        outbox: NAME,
        op,
        reason: e.to_string(),
    }
}

impl<S: Store + Send + Sync> Outbox for LedgerOutbox<S> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn list(&self, limit: usize) -> Result<Vec<Pending>, OutboxError> {
        const PAGE: usize = 256;
        let mut out = Vec::new();
        let mut from = 0;
        while out.len() < limit {
            let page = self.entries().list(from, PAGE).map_err(store_err("list"))?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            let full = page.len() == PAGE;
            for e in &page {
                if out.len() >= limit {
                    break;
                }
                if let Some((scope, created_at, body)) = (self.map)(e) {
                    let priority = body.priority();
                    let id = MessageId::new(self.source, e.seq);
                    let frame = Frame::new(id, scope.tid(), created_at, body);
                    out.push(Pending { frame, priority });
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    fn ack(&self, ids: &[MessageId]) -> Result<usize, OutboxError> {
        let seqs: Vec<u64> = ids
            .iter()
            .filter(|id| id.source() == self.source)
            .map(MessageId::seq)
            .collect();
        if seqs.is_empty() {
            return Ok(0);
        }
        self.entries()
            .ack(&seqs)
            .map_err(store_err("delete acknowledged"))?;
        Ok(seqs.len())
    }

    fn len(&self) -> Result<u64, OutboxError> {
        let mut n = 0u64;
        let mut from = 0;
        loop {
            let page = self
                .entries()
                .list(from, 1024)
                .map_err(store_err("count"))?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            n += page.len() as u64;
            if page.len() < 1024 {
                break;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use concentrator_ledger::store::{Batch, Keyspace};
    use concentrator_ledger::MemStore;
    use concentrator_protocol::{Kind, Priority, Readings};
    use concentrator_uplink::mqtt::{merged, AppendOutbox, Limits, SledOutbox};

    use super::*;

    fn tid(n: u8) -> Tid {
        Tid([0x3c, 0x91, 0, 0, 0, 0, 0, n])
    }

    #[test]
    fn ledger_outbox_drains_through_the_same_trait() {
        let store = MemStore::new();
        let mut b = Batch::new();
        for (seq, kind, payload) in [
            (3u64, OutboxKind::Receipt, b"r3".to_vec()),
            (4, OutboxKind::Reconciliation, b"{}".to_vec()),
            (7, OutboxKind::Receipt, b"r7".to_vec()),
        ] {
            let code = match kind {
                OutboxKind::Receipt => 1u8,
                OutboxKind::Settlement => 2,
                OutboxKind::Reconciliation => 3,
            };
            let mut v = vec![code];
            v.extend_from_slice(&payload);
            b.put(Keyspace::Outbox, seq.to_be_bytes().to_vec(), v);
        }
        store.commit(&b).unwrap();
        let source = *b"ledger01";
        let ob = LedgerOutbox::new(
            &store,
            source,
            Box::new(|e: &OutboxEntry| {
                (e.kind == OutboxKind::Receipt).then(|| {
                    (
                        Scope::Meter(tid(1)),
                        100 + e.seq,
                        Body::Receipt(ReceiptBody {
                            signed: e.payload.clone(),
                        }),
                    )
                })
            }),
        );
        let list = ob.list(10).unwrap();
        let ids: Vec<_> = list.iter().map(Pending::id).collect();
        assert_eq!(ids, [MessageId::new(source, 3), MessageId::new(source, 7)]);
        assert!(list.iter().all(|p| p.priority == Priority::Urgent));
        // Stable across listings (resends keep their ids and frames).
        assert_eq!(ob.list(10).unwrap(), list);
        assert_eq!(ob.len().unwrap(), 3);
        assert_eq!(ob.ack(&[MessageId::new(source, 3)]).unwrap(), 1);
        assert_eq!(ob.ack(&[MessageId::new(*b"uplink00", 7)]).unwrap(), 0);
        assert_eq!(ob.list(10).unwrap().len(), 1);

        // Merged with the uplink's outbox: receipts (urgent) before readings, after nothing.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let uplink = SledOutbox::open(&db, Limits::default()).unwrap();
        let readings = Body::Readings(Readings { readings: vec![] });
        uplink.append(Scope::Meter(tid(1)), 1, readings).unwrap();
        let all = merged(&[&uplink, &ob], 10);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id(), MessageId::new(source, 7));
        assert_eq!(all[1].frame.kind(), Kind::Readings);
    }
}
