//! The outbox: messages for the head-end (signed receipts, settlements, reconciliation reports) written in
//! the same transaction as the change they report, listed in order, and deleted when the head-end
//! acknowledges them. The uplink drains it.

use concentrator_security::receipt::Receipt;
use concentrator_security::signed::SignedDocument;

use crate::store::{Batch, Keyspace, Store};
use crate::LedgerError;

/// Meta key of the next outbox sequence number (so numbers are never reused after the outbox empties).
pub(crate) const OUTBOX_NEXT_KEY: &[u8] = b"outbox_next";

/// What an outbox entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A signed receipt ([`concentrator_security::signed::SignedDocument`] wire octets).
    Receipt,
    /// A signed settlement at a change of tenancy (see [`crate::tenancy::Settlement`]).
    Settlement,
    /// A reconciliation report (JSON, see [`crate::tenancy::Reconciliation`]).
    Reconciliation,
}

impl OutboxKind {
    fn code(self) -> u8 {
        match self {
            OutboxKind::Receipt => 1,
            OutboxKind::Settlement => 2,
            OutboxKind::Reconciliation => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(OutboxKind::Receipt),
            2 => Some(OutboxKind::Settlement),
            3 => Some(OutboxKind::Reconciliation),
            _ => None,
        }
    }
}

/// One message waiting for the head-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its number; entries are listed in this order.
    pub seq: u64,
    /// What it is.
    pub kind: OutboxKind,
    /// The octets to send.
    pub payload: Vec<u8>,
}

pub(crate) fn encode_entry(kind: OutboxKind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(kind.code());
    v.extend_from_slice(payload);
    v
}

/// The outbox of a store, for the uplink.
#[derive(Debug)]
pub struct Outbox<'a, S: Store + ?Sized> {
    store: &'a S,
}

impl<'a, S: Store + ?Sized> Outbox<'a, S> {
    /// The outbox in `store`.
    pub fn new(store: &'a S) -> Self {
        Outbox { store }
    }

    /// Up to `limit` entries with numbers `>= from`, in order.
    pub fn list(&self, from: u64, limit: usize) -> Result<Vec<OutboxEntry>, LedgerError> {
        let page = self
            .store
            .range_from(Keyspace::Outbox, &from.to_be_bytes(), limit)?;
        page.into_iter()
            .map(|(k, v)| {
                let bad = |reason: &str| LedgerError::Corrupt {
                    keyspace: Keyspace::Outbox.name(),
                    key: format!("{k:02x?}"),
                    reason: reason.into(),
                };
                let seq = <[u8; 8]>::try_from(k.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| bad("key is not 8 octets"))?;
                let (&code, payload) = v.split_first().ok_or_else(|| bad("empty entry"))?;
                let kind = OutboxKind::from_code(code).ok_or_else(|| bad("unknown kind"))?;
                Ok(OutboxEntry {
                    seq,
                    kind,
                    payload: payload.to_vec(),
                })
            })
            .collect()
    }

    /// Deletes acknowledged entries. Not flushed: an acknowledgement lost in a crash only means the entry
    /// is sent again, which the head-end ignores (receipts are idempotent).
    pub fn ack(&self, seqs: &[u64]) -> Result<(), LedgerError> {
        let mut batch = Batch::new();
        for s in seqs {
            batch.delete(Keyspace::Outbox, s.to_be_bytes().to_vec());
        }
        Ok(self.store.commit(&batch)?)
    }
}

/// A receipt as the ledger returns it: the receipt, its signed wire form, and where it waits in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// The signed receipt's wire octets ([`SignedDocument::encode`]).
    pub signed: Vec<u8>,
}

impl TopUpReceipt {
    /// Decodes the stored wire form.
    pub fn from_signed(signed: Vec<u8>) -> Result<Self, String> {
        let doc = SignedDocument::decode(&signed)
            .map_err(|e| format!("bad or truncated {} at offset {}", e.what, e.offset))?;
        let receipt = Receipt::decode(&doc.body).map_err(|e| e.to_string())?;
        Ok(TopUpReceipt { receipt, signed })
    }
}
