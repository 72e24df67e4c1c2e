//! The gateways' audit anchors: each account summary carries the head of its gateway's audit chain
//! (length and last hash); the head-end keeps the longest per gateway, outside the gateway, so that a
//! gateway chain cut short or rewritten is found (`concentrator audit verify --anchor LEN:HEXHEAD` on
//! the gateway, with the value `concentrator-headend audit anchors` prints).

use concentrator_protocol::AuditAnchor;

use super::{Engine, Fault};
use crate::money::time;
use crate::store::{anchor_key, AnchorAlarm, AnchorRecord, Batch};

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
    /// Records a summary's audit anchor for `gw` in `b` (the longest kept; a shorter or different
    /// chain is an alarm, logged and kept in the record for `status`).
    pub(super) fn anchor(
        &self,
        b: &mut Batch,
        gw: &str,
        meter: &str,
        a: &AuditAnchor,
        at: u64,
        now: u64,
    ) -> Result<(), Fault> {
        let head = hex::encode(a.head);
        let mut rec = match self.store.get::<AnchorRecord>(anchor_key(gw))? {
            Some(r) => r,
            None => AnchorRecord {
                len: a.len,
                head: head.clone(),
                at,
                meter: meter.to_string(),
                received_at: now,
                alarms: vec![],
            },
        };
        match judge(&rec, a.len, &head, at) {
            Ok(false) => {}
            Ok(true) => {
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
        Ok(())
    }
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
