//! The gateways' audit anchors: each account summary carries the head of its gateway's audit chain
//! (length and last hash); the head-end keeps the longest per gateway, outside the gateway, so that a
//! gateway chain cut short or rewritten is found (`concentrator audit verify --anchor LEN:HEXHEAD` on
//! the gateway, with the value `concentrator-headend audit anchors` prints).

use concentrator_protocol::{AnchorRecorded, AuditAnchor, Body, GatewayId, Scope};

use super::{Engine, Fault};
use crate::money::time;
use crate::store::{anchor_key, AnchorAlarm, AnchorRecord, Batch, Store, SubscriberRef};

/// `LEN:HEXHEAD`, the form the gateway's `audit verify --anchor` takes.
pub fn anchor_text(len: u64, head_hex: &str) -> String {
    format!("{len}:{head_hex}")
}

/// What a new chain head means against the recorded one: `Ok(true)` record it, `Ok(false)` nothing
/// new, `Err(reason)` an alarm.
fn judge(rec: &AnchorRecord, len: u64, head: &str, at: u64) -> Result<bool, String> {
    if len > rec.len {
        return Ok(true);
    }
    if len == rec.len {
        if head == rec.head {
            return Ok(false);
        }
        return Err(format!(
            "the gateway's audit chain has {len} entries as before, but its last entry's hash is now {head}, not {}: the chain was rewritten",
            rec.head
        ));
    }
    if at < rec.at {
        // An older summary that arrived late: its chain was shorter then.
        return Ok(false);
    }
    Err(format!(
        "the gateway's audit chain has {len} entries, fewer than the {} it reported at {}: entries were cut off or its store was replaced",
        rec.len,
        time(rec.at)
    ))
}

impl Engine {
    /// A gateway asked for an account restore: the next shorter chain it reports is a new one.
    pub(super) fn anchor_restarting(&self, b: &mut Batch, gw: &str, now: u64) -> Result<(), Fault> {
        restarting(&self.store, b, gw, now)
    }

    /// Records a summary's audit anchor for `gw` in `b` (see [`record`]); the anchor when it is the
    /// newly recorded one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn anchor(
        &self,
        b: &mut Batch,
        gw: &str,
        meter: &str,
        a: &AuditAnchor,
        at: u64,
        now: u64,
    ) -> Result<Option<AuditAnchor>, Fault> {
        record(&self.store, b, gw, meter, a, at, now)
    }

    /// After a newly recorded anchor is committed: tells the gateway (0x8D, gateway scope) when its
    /// last confirmation is `anchor_confirm_every` old, so it may archive the entries below. `None` when
    /// not due or the gateway has no live security context (the next summary tries again).
    pub(super) fn confirm_anchor(
        &mut self,
        gw: &str,
        a: &AuditAnchor,
        now: u64,
    ) -> Option<super::Outgoing> {
        if self
            .anchor_confirmed
            .get(gw)
            .is_some_and(|t| now < t.saturating_add(self.s.anchor_confirm_every))
        {
            return None;
        }
        let sub = SubscriberRef::Gateway(gw.to_string());
        let set = self.store.contexts(&sub).ok()?;
        let rand = set.live(now).next()?.rand.clone();
        let gateway = GatewayId::new(gw.to_string()).ok()?;
        let body = Body::AnchorRecorded(AnchorRecorded {
            len: a.len,
            head: a.head,
        });
        match self.seal(&gateway, Scope::Gateway, &sub, &rand, body, None, now) {
            Ok(o) => {
                self.anchor_confirmed.insert(gw.to_string(), now);
                log::info!(
                    "gateway {gw}: its audit anchor {} is recorded; told the gateway, which may archive below it",
                    anchor_text(a.len, &hex::encode(a.head))
                );
                Some(o)
            }
            Err(e) => {
                log::warn!("gateway {gw}: confirming its audit anchor: {e}");
                None
            }
        }
    }
}

/// A gateway asked for an account restore: the next shorter chain it reports is a new one.
fn restarting(store: &Store, b: &mut Batch, gw: &str, now: u64) -> Result<(), Fault> {
    if let Some(mut rec) = store.get::<AnchorRecord>(anchor_key(gw))? {
        if rec.restored_at.is_none() {
            rec.restored_at = Some(now);
            b.put(anchor_key(gw), &rec);
        }
    }
    Ok(())
}

/// Records a summary's audit anchor for `gw` in `b` (the longest kept; a shorter or different chain is
/// an alarm, logged and kept in the record for `status`, unless it follows a restore request: a new
/// store's new chain).
fn record(
    store: &Store,
    b: &mut Batch,
    gw: &str,
    meter: &str,
    a: &AuditAnchor,
    at: u64,
    now: u64,
) -> Result<Option<AuditAnchor>, Fault> {
    let head = hex::encode(a.head);
    let mut rec = match store.get::<AnchorRecord>(anchor_key(gw))? {
        Some(r) => r,
        None => AnchorRecord {
            len: a.len,
            head: head.clone(),
            at,
            meter: meter.to_string(),
            received_at: now,
            alarms: vec![],
            restored_at: None,
            replaced: vec![],
        },
    };
    // A summary older than the recorded head is one that arrived late (resent after an outage), not
    // a new chain: the old chain was shorter when it was taken.
    let new_chain = a.len < rec.len
        && at >= rec.at
        && rec.restored_at.is_some_and(|r| at >= r.saturating_sub(300));
    if new_chain {
        // The gateway asked for its accounts back (a replaced store) and now reports a shorter
        // chain: a new chain, not a cut one. The old head is kept; operators see both.
        let old = anchor_text(rec.len, &rec.head);
        log::warn!(
                "gateway {gw} started a new audit chain after its store was replaced (account restore); its previous chain ended at {old}"
            );
        rec.replaced.push(AnchorAlarm {
            at: now,
            reason: format!("previous chain {old}, replaced by a new store"),
        });
        rec.restored_at = None;
        rec.len = a.len;
        rec.head = head;
        rec.at = at;
        rec.meter = meter.to_string();
        rec.received_at = now;
        b.put(anchor_key(gw), &rec);
        return Ok(Some(*a));
    }
    let mut recorded = None;
    match judge(&rec, a.len, &head, at) {
        Ok(false) => {}
        Ok(true) => {
            recorded = Some(*a);
            rec.len = a.len;
            rec.head = head;
            rec.at = at;
            rec.meter = meter.to_string();
            rec.received_at = now;
        }
        Err(reason) => {
            log::error!(
                    "AUDIT ALARM gateway {gw} (summary of meter {meter}): {reason}; the recorded anchor {} stays: verify the gateway's audit log with `concentrator audit verify --anchor {}`",
                    anchor_text(rec.len, &rec.head),
                    anchor_text(rec.len, &rec.head)
                );
            rec.alarms.push(AnchorAlarm { at: now, reason });
            let over = rec.alarms.len().saturating_sub(AnchorRecord::MAX_ALARMS);
            rec.alarms.drain(..over);
        }
    }
    b.put(anchor_key(gw), &rec);
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(len: u64, head: &str, at: u64) -> AnchorRecord {
        AnchorRecord {
            len,
            head: head.into(),
            at,
            ..Default::default()
        }
    }

    fn recorded(store: &Store) -> AnchorRecord {
        store
            .get::<AnchorRecord>(anchor_key("gw-1"))
            .unwrap()
            .unwrap()
    }

    /// A gateway whose store was replaced asks for its accounts back, then reports a new, shorter
    /// chain: recorded as a new chain with the old head kept, not an alarm. Without the restore the
    /// same shorter chain is an alarm.
    #[test]
    fn a_new_chain_after_a_restore_is_recorded_not_an_alarm() {
        use crate::store::Batch;
        let dir = std::env::temp_dir().join(format!("anchor-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let mut b = Batch::new();
        b.put(anchor_key("gw-1"), &rec(40, "aa", 1_000));
        store.apply(b).unwrap();
        let short = AuditAnchor {
            len: 3,
            head: [0xbb; 32],
        };
        let mut b = Batch::new();
        record(&store, &mut b, "gw-1", "M1", &short, 2_000, 2_000).unwrap();
        store.apply(b).unwrap();
        let r = recorded(&store);
        assert_eq!((r.len, r.alarms.len()), (40, 1), "{r:?}");
        let mut b = Batch::new();
        restarting(&store, &mut b, "gw-1", 2_100).unwrap();
        store.apply(b).unwrap();
        // A summary of the old chain taken before the recorded head, arriving late after the restore
        // request (one meter's account asked for, the store not replaced): neither a new chain nor
        // an alarm.
        let late = AuditAnchor {
            len: 30,
            head: [0xcc; 32],
        };
        let mut b = Batch::new();
        record(&store, &mut b, "gw-1", "M2", &late, 990, 2_150).unwrap();
        store.apply(b).unwrap();
        let r = recorded(&store);
        assert_eq!(
            (r.len, r.alarms.len(), r.replaced.len()),
            (40, 1, 0),
            "{r:?}"
        );
        let mut b = Batch::new();
        record(&store, &mut b, "gw-1", "M1", &short, 2_200, 2_200).unwrap();
        store.apply(b).unwrap();
        let r = recorded(&store);
        assert_eq!(
            (r.len, r.alarms.len(), r.replaced.len()),
            (3, 1, 1),
            "{r:?}"
        );
        assert!(r.replaced[0].reason.contains("40:aa"), "{r:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn longer_is_kept_shorter_or_different_is_an_alarm_late_summaries_are_not() {
        let r = rec(10, "aa", 1_000);
        assert_eq!(judge(&r, 11, "bb", 1_100), Ok(true));
        assert_eq!(judge(&r, 10, "aa", 1_100), Ok(false));
        assert!(judge(&r, 10, "cc", 1_100)
            .unwrap_err()
            .contains("rewritten"));
        assert!(judge(&r, 4, "dd", 1_100).unwrap_err().contains("cut off"));
        assert_eq!(
            judge(&r, 4, "dd", 900),
            Ok(false),
            "an older summary arriving late"
        );
        assert_eq!(anchor_text(10, "aa"), "10:aa");
    }
}
