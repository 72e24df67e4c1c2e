//! The index of stored readings that makes them exactly once per meter: `rd/<meter>\0<at BE><quantity
//! BE>` for every (time, quantity) of a meter the head-end holds a reading of, whether it came live or
//! backfilled; and the meter's backfill request (`bfr/<meter>`, one open at a time, and
//! `bfc/<message id hex>` from its command id to the meter).

use serde::{Deserialize, Serialize};

use super::{key2, Store, StoreError};

/// Key of one stored (meter, time, quantity).
pub fn interval_key(meter: &str, at: u64, quantity: u16) -> Vec<u8> {
    let mut rest = at.to_be_bytes().to_vec();
    rest.extend_from_slice(&quantity.to_be_bytes());
    key2("rd/", meter, &rest)
}

/// Key of a meter's backfill request.
pub fn backfill_key(meter: &str) -> String {
    format!("bfr/{meter}")
}

/// Key from a backfill request's command id to its meter.
pub fn backfill_command_key(id_hex: &str) -> String {
    format!("bfc/{id_hex}")
}

/// What the index holds for one stored (meter, time, quantity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalRecord {
    /// The uplink message that brought it, hex.
    pub id: String,
    /// Whether it came from the meter's stored history (a backfill), not live.
    pub backfilled: bool,
}

/// A meter's newest backfill request: the window asked for and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRecord {
    /// The meter.
    pub meter: String,
    /// The command's message id, hex.
    pub command: String,
    /// The first missing interval's time, unix s.
    pub from: u64,
    /// The last missing interval's time, unix s.
    pub to: u64,
    /// The interval, s.
    pub interval_s: u32,
    /// When last sent, unix s.
    pub sent_at: u64,
    /// How often sent.
    pub sends: u32,
    /// The gateway's result code, once answered.
    pub result: Option<u16>,
    /// When answered, unix s.
    pub result_at: Option<u64>,
    /// The gateway's words (e.g. why the meter's history cannot be read).
    pub reason: Option<String>,
    /// Readings stored from its answers (intervals × quantities not held before).
    pub stored: u64,
    /// Readings in its answers the head-end held already (not stored again).
    pub duplicates: u64,
}

impl Store {
    /// Whether a reading of `meter` at `at` of `quantity` is stored.
    pub fn has_interval(&self, meter: &str, at: u64, quantity: u16) -> Result<bool, StoreError> {
        Ok(self.get_raw(interval_key(meter, at, quantity))?.is_some())
    }

    /// The stored (time, record) of `meter` less than half of `interval` from `at`: a scan of the one to
    /// three 65 536-second blocks of keys around it, not of the meter's whole history.
    pub fn intervals_near(
        &self,
        meter: &str,
        at: u64,
        interval: u64,
    ) -> Result<Vec<(u64, IntervalRecord)>, StoreError> {
        let half = interval / 2;
        let prefix_len = key2("rd/", meter, &[]).len();
        let mut out = Vec::new();
        for block in (at.saturating_sub(half) >> 16)..=(at.saturating_add(half) >> 16) {
            let head = (block << 16).to_be_bytes();
            for (k, rec) in self.scan::<IntervalRecord>(key2("rd/", meter, &head[..6]))? {
                let Some(t) = k
                    .get(prefix_len..prefix_len + 8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                if t.abs_diff(at).saturating_mul(2) < interval {
                    out.push((t, rec));
                }
            }
        }
        Ok(out)
    }

    /// The distinct times the head-end holds readings of `meter` at from `since` on (unix seconds),
    /// oldest first: a ranged scan, so that the cost follows the window asked for, not the meter's whole history.
    pub fn reading_times_since(&self, meter: &str, since: u64) -> Result<Vec<u64>, StoreError> {
        let prefix = key2("rd/", meter, &[]);
        let from = key2("rd/", meter, &since.to_be_bytes());
        let mut out: Vec<u64> = Vec::new();
        for (k, _) in self.kv_scan_from(&prefix, &from)? {
            let Some(at) = k
                .get(prefix.len()..prefix.len() + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            if out.last() != Some(&at) {
                out.push(at);
            }
        }
        Ok(out)
    }

    /// A meter's newest backfill request.
    pub fn backfill(&self, meter: &str) -> Result<Option<BackfillRecord>, StoreError> {
        self.get(backfill_key(meter))
    }
}
