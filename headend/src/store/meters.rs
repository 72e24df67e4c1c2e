//! The writers of per-meter state: the meter record (one lock per meter, the record read afresh under
//! it), the token serial counter (compare-and-swap on its own key), rejected uplink messages and the
//! gateways' audit anchors.

use super::{key2, meter_key, Batch, MeterRecord, Rejected, Store, StoreError};

/// Key of a meter's serial counter.
pub fn serial_key(meter: &str) -> String {
    format!("ser/{meter}")
}

/// Key of a rejected uplink message.
pub fn rejected_key(gateway: &str, at: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut rest = at.to_be_bytes().to_vec();
    rest.extend_from_slice(id);
    key2("rej/", gateway, &rest)
}

/// Key of a gateway's audit anchor.
pub fn anchor_key(gateway: &str) -> String {
    format!("anc/{gateway}")
}

impl Store {
    /// The one way a meter record changes while the head-end runs. In a scope on the meter's key the record
    /// is read afresh, `f` changes it and it joins `batch`; `write` applies the batch (with whatever
    /// else belongs to the same transaction, e.g. through the payment record) before the lock is
    /// released. Without the meter, `f` is not called and `batch` is written as it is. Returns `f`'s
    /// result.
    pub fn update_meter<R>(
        &self,
        meter: &str,
        mut batch: Batch,
        f: impl FnOnce(&mut MeterRecord) -> R,
        write: impl FnOnce(Batch) -> Result<(), StoreError>,
    ) -> Result<Option<R>, StoreError> {
        let key = meter_key(meter);
        let (mut f, mut write) = (Some(f), Some(write));
        self.scope(&[key.as_bytes()], || {
            let (Some(f), Some(write)) = (f.take(), write.take()) else {
                return Err(StoreError::Db {
                    path: "the store".into(),
                    reason: format!("the update of meter {meter} ran twice after an aborted transaction and cannot run again; it was not written"),
                });
            };
            let mut batch = std::mem::take(&mut batch);
            let out = match self.meter(meter)? {
                Some(mut rec) => {
                    let r = f(&mut rec);
                    batch.put(meter_key(meter), &rec);
                    Some(r)
                }
                None => None,
            };
            write(batch)?;
            Ok(out)
        })?
    }

    /// [`Store::update_meter`], the batch applied (not flushed).
    pub fn update_meter_apply<R>(
        &self,
        meter: &str,
        batch: Batch,
        f: impl FnOnce(&mut MeterRecord) -> R,
    ) -> Result<Option<R>, StoreError> {
        self.update_meter(meter, batch, f, |b| self.apply(b))
    }

    /// Allocates a meter's next token serial (from 1): an atomic increment of `ser/<meter>`, so no
    /// two callers ever get the same serial and none is ever handed out twice, whatever else writes the
    /// meter's record. A store written before the counter existed starts above its highest token.
    /// Durable with the next flush (the token's own commit).
    pub fn next_serial(&self, meter: &str) -> Result<u64, StoreError> {
        let key = serial_key(meter);
        loop {
            let old = self.get_raw(&key)?;
            let next: u64 = match &old {
                Some(v) => super::decode(key.as_bytes(), v)?,
                None => self
                    .tokens(meter)?
                    .iter()
                    .map(|t| t.serial.saturating_add(1))
                    .max()
                    .unwrap_or(1),
            }
            .max(1);
            let new = serde_json::to_vec(&next.saturating_add(1)).unwrap_or_default();
            if self.kv_cas(key.as_bytes(), old.as_deref(), new)? {
                return Ok(next);
            }
        }
    }

    /// Rejected uplink messages, oldest first (all gateways).
    pub fn rejected(&self) -> Result<Vec<Rejected>, StoreError> {
        Ok(self.scan("rej/")?.into_iter().map(|(_, v)| v).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_unique_across_threads_and_start_above_old_tokens() {
        let s = std::sync::Arc::new(Store::memory());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .map(|_| s.next_serial("MTR-1").unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=800).collect::<Vec<_>>());
        assert_eq!(s.next_serial("MTR-2").unwrap(), 1, "per meter");
    }
}
