//! Change-of-tenancy orders in the store: `ten/<order BE>` the [`TenancyRecord`], `tenp/<order BE>`
//! the orders waiting for their settlement, `tenm/<meter>\0<order BE>` a meter's orders,
//! `tenf/<customer>\0<order BE>` the orders that move a customer out (their history stays theirs),
//! `tcmd/<message id hex>` the order a tenancy command carried, `tenn` the next order id. The same
//! keys on sled and PostgreSQL (both are the [`super::Kv`] key space); order ids come from a
//! compare-and-swap on `tenn`, so no two workers hand out the same one.

use serde::{Deserialize, Serialize};

use super::{key2, Batch, Store, StoreError};

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenancyState {
    /// Signed, waiting for the gateway's settlement.
    Pending,
    /// The settlement arrived and was booked.
    Settled,
    /// The gateway refused the order for good.
    Refused,
}

/// The gateway's settlement as booked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementView {
    /// Tenancy number closed on the gateway.
    pub account_no: u32,
    /// When closed, unix s (gateway clock).
    pub closed_at: u64,
    /// Closing import register, Wh.
    pub closing_register_wh: u64,
    /// Credit refunded, minor units.
    pub remaining_credit_minor: u64,
    /// Debt billed, minor units.
    pub debt_minor: u64,
    /// The highest serial applied at the close.
    pub last_serial: Option<u64>,
    /// The gateway's audit log length and head (hex) at the close.
    pub audit_len: u64,
    /// See `audit_len`.
    pub audit_head: String,
    /// The signed settlement (`SignedDocument` octets), hex.
    pub signed: String,
    /// Tokens of the old customer never applied and refunded: (serial, amount).
    pub refunded_tokens: Vec<(u64, u64)>,
    /// When the head-end booked it, unix s.
    pub booked_at: u64,
}

/// A change-of-tenancy order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenancyRecord {
    /// The order id.
    pub order_id: u64,
    /// The meter.
    pub meter: String,
    /// The customer who leaves.
    pub from: String,
    /// The customer who moves in.
    pub to: String,
    /// The account closes at or after this, unix s.
    pub effective_at: u64,
    /// When ordered (signed), unix s.
    pub ordered_at: u64,
    /// Serials up to this were issued to the old customer.
    pub last_old_serial: u64,
    /// The new tenant's opening credit, minor units.
    pub opening_credit_minor: u64,
    /// ISO 4217.
    pub currency: String,
    /// The signed order (`SignedDocument` octets), hex.
    pub signed: String,
    /// State.
    pub state: TenancyState,
    /// The last command's message id, hex.
    pub command: Option<String>,
    /// When last sent, unix s.
    pub sent_at: Option<u64>,
    /// Times sent.
    pub sends: u32,
    /// The last result code and when it came.
    pub result: Option<u16>,
    /// See `result`.
    pub result_at: Option<u64>,
    /// The gateway's words with the last result.
    pub reason: Option<String>,
    /// The settlement, once booked.
    pub settlement: Option<SettlementView>,
}

/// Key of an order.
pub fn tenancy_key(order_id: u64) -> Vec<u8> {
    let mut k = b"ten/".to_vec();
    k.extend_from_slice(&order_id.to_be_bytes());
    k
}

/// Key of an order in the index of orders waiting for their settlement.
pub fn tenancy_pending_key(order_id: u64) -> Vec<u8> {
    let mut k = b"tenp/".to_vec();
    k.extend_from_slice(&order_id.to_be_bytes());
    k
}

/// Key of an order in its meter's index.
pub fn tenancy_meter_key(meter: &str, order_id: u64) -> Vec<u8> {
    key2("tenm/", meter, &order_id.to_be_bytes())
}

/// Key of the order a tenancy command carried.
pub fn tenancy_command_key(id: &str) -> String {
    format!("tcmd/{id}")
}

impl Store {
    /// One order.
    pub fn tenancy(&self, order_id: u64) -> Result<Option<TenancyRecord>, StoreError> {
        self.get(tenancy_key(order_id))
    }

    /// The orders waiting for their settlement, oldest first.
    pub fn pending_tenancies(&self) -> Result<Vec<TenancyRecord>, StoreError> {
        let mut out = Vec::new();
        for (_, id) in self.scan::<u64>(b"tenp/")? {
            if let Some(t) = self.tenancy(id)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// A meter's orders, oldest first.
    pub fn tenancies_of(&self, meter: &str) -> Result<Vec<TenancyRecord>, StoreError> {
        let mut out = Vec::new();
        for (_, id) in self.scan::<u64>(key2("tenm/", meter, &[]))? {
            if let Some(t) = self.tenancy(id)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The meter's order waiting for its settlement, if any (purchases wait for it).
    pub fn tenancy_in_progress(&self, meter: &str) -> Result<Option<TenancyRecord>, StoreError> {
        Ok(self
            .tenancies_of(meter)?
            .into_iter()
            .find(|t| t.state == TenancyState::Pending))
    }

    /// Allocates the next order id (from 1): compare-and-swap on `tenn`.
    pub fn next_order_id(&self) -> Result<u64, StoreError> {
        let key = b"tenn";
        loop {
            let old = self.get_raw(key)?;
            let next: u64 = match &old {
                Some(v) => super::decode(key, v)?,
                None => 1,
            };
            let new = serde_json::to_vec(&next.saturating_add(1)).unwrap_or_default();
            if self.kv_cas(key, old.as_deref(), new)? {
                return Ok(next);
            }
        }
    }

    /// The highest token serial issued for a meter so far (0: none).
    pub fn highest_issued_serial(&self, meter: &str) -> Result<u64, StoreError> {
        let key = super::serial_key(meter);
        Ok(match self.get::<u64>(&key)? {
            Some(next) => next.saturating_sub(1),
            None => self
                .tokens(meter)?
                .iter()
                .map(|t| t.serial)
                .max()
                .unwrap_or(0),
        })
    }

    /// Writes a new order with its indexes (in `batch`).
    pub fn put_new_tenancy(batch: &mut Batch, t: &TenancyRecord) {
        batch.insert(tenancy_key(t.order_id), t);
        batch.put(tenancy_pending_key(t.order_id), &t.order_id);
        batch.put(tenancy_meter_key(&t.meter, t.order_id), &t.order_id);
        batch.put(
            key2("tenf/", &t.from, &t.order_id.to_be_bytes()),
            &t.order_id,
        );
    }

    /// The meters a customer moved out of (settled orders), for their purchase history.
    pub fn meters_left(&self, customer: &str) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for (_, id) in self.scan::<u64>(key2("tenf/", customer, &[]))? {
            if let Some(t) = self.tenancy(id)? {
                if t.state == TenancyState::Settled && !out.contains(&t.meter) {
                    out.push(t.meter);
                }
            }
        }
        Ok(out)
    }
}
