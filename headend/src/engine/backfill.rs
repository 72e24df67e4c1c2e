//! Reading backfill (issue #19 item 2): the head-end finds the gaps in each meter's readings, asks the
//! meter's gateway for the missing window ([`BackfillRequest`], meter scope), and stores what the
//! gateway read back from the meter's own history ([`Backfill`]) exactly once: a (meter, time,
//! quantity) it holds already, live or backfilled, is never stored again.

use concentrator_protocol::{
    result_code, Backfill, BackfillRequest, Body, CommandResult, MessageId, Reading,
};
use serde_json::json;

use super::{Engine, Fault, Outgoing};
use crate::store::{
    backfill_command_key, backfill_key, ingested_key, interval_key, BackfillRecord, Batch,
    IntervalRecord, StoreError,
};

/// The most intervals one request asks for (a week of five-minute intervals); a longer gap is asked
/// for in several requests, one after the other.
pub const MAX_INTERVALS_PER_REQUEST: u64 = 2016;
/// A request without any answer is sent this many times, then the window is left.
pub const MAX_SENDS: u32 = 5;
/// After a gateway answered that a meter keeps no history, the meter is not asked again for this long.
pub const UNSUPPORTED_PAUSE_S: u64 = 86_400;
/// Gaps are looked for in this much of a meter's most recent readings (31 days): history older than
/// that is rarely still in the meter, and reading a meter's whole history on every pass made each
/// pass cost more as the store aged (a year of 15-minute readings is 35,040 rows a meter).
pub const LOOKBACK_S: u64 = 31 * 86_400;
/// Windows answered "done" that stay empty are remembered (and not asked again) up to this many.
const ANSWERED_KEPT: usize = 64;

/// A run of missing intervals of one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The first missing interval's time, unix s.
    pub from: u64,
    /// The last missing interval's time, unix s.
    pub to: u64,
    /// The interval, s.
    pub interval_s: u64,
}

impl Gap {
    /// How many intervals it spans.
    pub fn intervals(&self) -> u64 {
        (self.to - self.from) / self.interval_s.max(1) + 1
    }
}

/// The meter's reading interval as its readings show it: the most frequent spacing between
/// consecutive reading times (the smaller on a tie); `None` with fewer than two readings.
pub fn interval_of(times: &[u64]) -> Option<u64> {
    let mut diffs: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .filter(|&d| d > 0)
        .collect();
    diffs.sort_unstable();
    let mut best: Option<(usize, u64)> = None;
    for chunk in diffs.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(n, _)| chunk.len() > n) {
            best = Some((chunk.len(), chunk[0]));
        }
    }
    best.map(|(_, d)| d)
}

/// The gaps in sorted, distinct reading times `times`, with `interval` (or the spacing the readings
/// show): between two readings `a` and `b`, every slot `a + k·interval` that lies more than half an
/// interval before `b` is missing (readings taken a few seconds late are no gap).
pub fn find_gaps(times: &[u64], interval: Option<u64>) -> Vec<Gap> {
    let Some(i) = interval.or_else(|| interval_of(times)).filter(|&i| i > 0) else {
        return vec![];
    };
    let half = i.div_ceil(2);
    times
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (w[0], w[1]);
            let n = b.checked_sub(a)?.checked_sub(half)? / i;
            (n >= 1).then(|| Gap {
                from: a + i,
                to: a + n * i,
                interval_s: i,
            })
        })
        .collect()
}

fn reading_json(x: &Reading, backfilled: bool) -> serde_json::Value {
    let mut v = json!({"at": x.at, "quantity": x.quantity.code(), "value": x.value, "exponent": x.exponent});
    if backfilled {
        v["backfilled"] = json!(true);
    }
    v
}

fn temporary(code: u16) -> bool {
    !result_code::is_final(code)
}

impl Engine {
    /// Stores the readings of `meter` and returns how many were stored and how many were not because
    /// the head-end holds that interval already. A backfilled reading (`backfilled`: the request's
    /// interval) is not stored where any reading of the meter lies less than half an interval from
    /// it (the live reading of that interval, taken a few seconds late, or an earlier backfill); a live
    /// reading is not stored where a backfilled one does (it came late, after the gap was filled).
    /// Live readings are otherwise stored as they come (their message ids are deduplicated).
    pub(super) fn store_readings(
        &mut self,
        gw: &str,
        meter: &str,
        id: MessageId,
        readings: &[Reading],
        backfilled: Option<u64>,
        now: u64,
    ) -> Result<(u64, u64), Fault> {
        let store = self.store.clone();
        let mut counts = (0u64, 0u64);
        let energy: Vec<&Reading> = readings
            .iter()
            .filter(|x| x.quantity == concentrator_protocol::Quantity::EnergyImportWh)
            .collect();
        store.update_meter(
            meter,
            Batch::new(),
            |rec| {
                for x in &energy {
                    if rec.view.last_reading_at.is_some_and(|t| t > x.at) {
                        continue;
                    }
                    if let Some(wh) = super::ingest::scaled(x.value, x.exponent) {
                        rec.view.last_reading_wh = Some(wh);
                        rec.view.last_reading_at = Some(x.at);
                    }
                }
            },
            |mut b| {
                // Read under the meter's lock: what is held now is what the writes below see.
                let (interval, any) = match backfilled {
                    Some(i) => (Some(i), true),
                    None => (
                        store.backfill(meter)?.map(|r| u64::from(r.interval_s)),
                        false,
                    ),
                };
                let mut fresh: Vec<Vec<u8>> = Vec::new();
                let mut kept = Vec::new();
                for x in readings {
                    let key = interval_key(meter, x.at, x.quantity.code());
                    let held = match interval {
                        Some(i) => store
                            .intervals_near(meter, x.at, i)?
                            .iter()
                            .any(|(_, r)| any || r.backfilled),
                        None => false,
                    };
                    if held || (backfilled.is_some() && fresh.contains(&key)) {
                        counts.1 += 1;
                        continue;
                    }
                    let rec = IntervalRecord {
                        id: id.to_string(),
                        backfilled: backfilled.is_some(),
                    };
                    if backfilled.is_some() {
                        // Insert-once: a second writer of the same interval fails the whole batch.
                        b.insert(key.clone(), &rec);
                    } else {
                        b.put(key.clone(), &rec);
                    }
                    fresh.push(key);
                    kept.push(reading_json(x, backfilled.is_some()));
                }
                counts.0 = kept.len() as u64;
                if !kept.is_empty() {
                    let at = readings.iter().map(|x| x.at).max().unwrap_or(now);
                    b.put(
                        ingested_key("readings", meter, at, &id.0),
                        &crate::store::Ingested {
                            gateway: gw.to_string(),
                            meter: Some(meter.to_string()),
                            id: id.to_string(),
                            received_at: now,
                            body: json!(kept),
                        },
                    );
                }
                store.apply(b)
            },
        )?;
        Ok(counts)
    }

    /// Readings from a meter's stored history, answering a backfill request.
    pub(super) fn backfilled(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        id: MessageId,
        bf: Backfill,
        now: u64,
    ) -> Result<(), Fault> {
        let Some(m) = meter else {
            return Err(Fault::Reject(
                "backfilled readings in the gateway scope name no meter".into(),
            ));
        };
        let rec = self.store.backfill(m)?;
        let request = bf.request.to_string();
        let ours = rec.as_ref().filter(|r| r.command == request);
        // The interval of the request it answers; of the meter's newest request when that one was
        // replaced meanwhile; else what the meter's readings show.
        let interval = match &rec {
            Some(r) => u64::from(r.interval_s).max(1),
            None => interval_of(
                &self
                    .store
                    .reading_times_since(m, now.saturating_sub(LOOKBACK_S))?,
            )
            .unwrap_or(1),
        };
        let (stored, dup) = self.store_readings(gw, m, id, &bf.readings, Some(interval), now)?;
        log::info!(
            "meter {m}: {stored} backfilled readings stored, {dup} held already (request {request}{})",
            if bf.last { ", last part" } else { "" }
        );
        if let Some(mut r) = ours.cloned() {
            r.stored += stored;
            r.duplicates += dup;
            let mut b = Batch::new();
            b.put(backfill_key(m), &r);
            self.store.apply(b)?;
        }
        Ok(())
    }

    /// A command result for a backfill request of ours (`None`: not one of ours).
    pub(super) fn backfill_result(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        r: &CommandResult,
        now: u64,
    ) -> Result<Option<Vec<Outgoing>>, Fault> {
        let id = r.command.to_string();
        let Some(m) = self.store.get::<String>(backfill_command_key(&id))? else {
            return Ok(None);
        };
        if meter != Some(m.as_str()) {
            return Err(Fault::Reject(format!(
                "result for the backfill request of meter {m} arrived in the scope of {}",
                meter.unwrap_or("the gateway")
            )));
        }
        let Some(mut rec) = self.store.backfill(&m)?.filter(|b| b.command == id) else {
            return Ok(Some(vec![]));
        };
        rec.result = Some(r.code);
        rec.result_at = Some(now);
        rec.reason = r.reason.clone();
        let mut b = Batch::new();
        b.put(backfill_key(&m), &rec);
        self.store.commit(b)?;
        let words = r.reason.as_deref().unwrap_or("no reason given");
        match r.code {
            result_code::DONE | result_code::ALREADY_DONE => {
                log::info!("gateway {gw}: backfill of meter {m} under way ({words})")
            }
            code => log::warn!(
                "gateway {gw}: backfill of meter {m} not carried out, code {code}: {words}"
            ),
        }
        Ok(Some(vec![]))
    }

    /// Asks for the readings missing: of one meter (`Some`), or of every meter behind an online
    /// gateway. A meter has one request open at a time; one without an answer is sent again (same
    /// id) after the result timeout, a temporary failure likewise; a window answered "done" is not
    /// asked for again, and a meter that keeps no history is left for a day.
    pub fn deliver_backfill(&mut self, meter: Option<&str>, now: u64) -> Vec<Outgoing> {
        let gateways: Vec<String> = match meter {
            Some(m) => match self.store.meter(m) {
                Ok(Some(r)) => vec![r.gateway],
                Ok(None) => return vec![],
                Err(e) => {
                    log::error!("backfill: {e}");
                    return vec![];
                }
            },
            None => match self.store.gateways() {
                Ok(v) => v.into_iter().map(|g| g.id).collect(),
                Err(e) => {
                    log::error!("backfill: {e}");
                    return vec![];
                }
            },
        };
        let mut out = Vec::new();
        for gw in gateways {
            out.extend(self.backfill_requests(&gw, meter, now).0);
        }
        out
    }

    /// The backfill requests due for the meters of gateway `gw` (when it is online), with how many
    /// meters were looked at.
    pub(super) fn deliver_backfill_of(&mut self, gw: &str, now: u64) -> (Vec<Outgoing>, usize) {
        self.backfill_requests(gw, None, now)
    }

    /// Of `gw`'s meters (or only `meter`), in one scope of the gateway; with how many meters.
    fn backfill_requests(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        now: u64,
    ) -> (Vec<Outgoing>, usize) {
        if self.in_gateway.as_deref().is_some_and(|g| g != gw) {
            return (vec![], 0);
        }
        // The gateway's record once: whether it is online, and its meters.
        let rec = match self.store.gateway(gw) {
            Ok(Some(g)) if g.online => g,
            Ok(_) => return (vec![], 0),
            Err(e) => {
                log::error!("backfill: {e}");
                return (vec![], 0);
            }
        };
        let meters: Vec<String> = match meter {
            Some(m) => vec![m.to_string()],
            None => rec.meters,
        };
        let sent = self.on_gateway(gw, now, |this| {
            let mut out = Vec::new();
            for name in &meters {
                match this.send_backfill(name, now) {
                    Ok(Some(o)) => out.push(o),
                    Ok(None) => {}
                    Err(e) => log::warn!("backfill request for meter {name}: {e}"),
                }
            }
            out
        });
        let looked = meters.len();
        let out = sent.unwrap_or_else(|e| {
            log::warn!("backfill requests for gateway {gw}: {e}");
            vec![]
        });
        (out, looked)
    }

    /// The window to ask `meter` for now, and the id to ask with (`None`: a new one).
    fn backfill_due(
        &self,
        meter: &str,
        now: u64,
    ) -> Result<Option<(Gap, Option<BackfillRecord>)>, StoreError> {
        let timeout = self.s.result_timeout;
        let rec = self.store.backfill(meter)?;
        if let Some(r) = &rec {
            let again = Gap {
                from: r.from,
                to: r.to,
                interval_s: u64::from(r.interval_s),
            };
            match (r.result, r.result_at) {
                (None, _) if now < r.sent_at.saturating_add(timeout) => return Ok(None),
                (None, _) if r.sends < MAX_SENDS => return Ok(Some((again, rec.clone()))),
                (Some(c), Some(at)) if temporary(c) => {
                    if now < at.saturating_add(timeout) {
                        return Ok(None);
                    }
                    if r.sends < MAX_SENDS {
                        return Ok(Some((again, rec.clone())));
                    }
                }
                (Some(result_code::UNSUPPORTED), Some(at))
                    if now < at.saturating_add(UNSUPPORTED_PAUSE_S) =>
                {
                    return Ok(None)
                }
                _ => {}
            }
        }
        // Windows answered "done" before, and the newest request's when it was: a gap inside one of
        // them is what the meter did not have (its history may be coarser than the live readings).
        let mut answered = self.answered(meter)?;
        if let Some(r) = rec.as_ref().filter(|r| {
            matches!(
                r.result,
                Some(result_code::DONE | result_code::ALREADY_DONE)
            )
        }) {
            answered.push((r.from, r.to));
        }
        let times = self
            .store
            .reading_times_since(meter, now.saturating_sub(LOOKBACK_S))?;
        let gap = find_gaps(&times, None).into_iter().find(|g| {
            !answered
                .iter()
                .any(|&(from, to)| from <= g.from && g.to <= to)
        });
        Ok(gap.map(|mut g| {
            let most = MAX_INTERVALS_PER_REQUEST.saturating_sub(1) * g.interval_s;
            g.to = g.to.min(g.from.saturating_add(most));
            (g, None)
        }))
    }

    /// Windows answered "done" for `meter` (not asked for again).
    fn answered(&self, meter: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        Ok(self
            .store
            .get::<Vec<(u64, u64)>>(format!("bfa/{meter}"))?
            .unwrap_or_default())
    }

    fn send_backfill(&mut self, meter: &str, now: u64) -> Result<Option<Outgoing>, String> {
        let e = |e: StoreError| e.to_string();
        let Some((gap, resend)) = self.backfill_due(meter, now).map_err(e)? else {
            return Ok(None);
        };
        let Some(m) = self.store.meter(meter).map_err(e)? else {
            return Ok(None);
        };
        let Some((gw, scope, sub, rand)) = self.meter_target(&m, now) else {
            return Ok(None);
        };
        let mut b = Batch::new();
        // The window the previous request asked for, if answered "done", is not asked for again.
        if let Some(prev) = self.store.backfill(meter).map_err(e)? {
            if resend.is_none()
                && matches!(
                    prev.result,
                    Some(result_code::DONE | result_code::ALREADY_DONE)
                )
            {
                let mut a = self.answered(meter).map_err(e)?;
                if !a.contains(&(prev.from, prev.to)) {
                    a.push((prev.from, prev.to));
                }
                let skip = a.len().saturating_sub(ANSWERED_KEPT);
                a.drain(..skip);
                b.put(format!("bfa/{meter}"), &a);
            }
        }
        let id = match resend.as_ref().and_then(|r| {
            let v = hex::decode(&r.command).ok()?;
            Some(MessageId(v.try_into().ok()?))
        }) {
            Some(id) => id,
            None => self.new_id(),
        };
        let interval_s = u32::try_from(gap.interval_s).unwrap_or(u32::MAX);
        let out = self.seal(
            &gw,
            scope,
            &sub,
            &rand,
            Body::BackfillRequest(BackfillRequest {
                from: gap.from,
                to: gap.to,
                interval_s,
            }),
            Some(id),
            now,
        )?;
        let rec = BackfillRecord {
            meter: meter.to_string(),
            command: id.to_string(),
            from: gap.from,
            to: gap.to,
            interval_s,
            sent_at: now,
            sends: resend.as_ref().map_or(1, |r| r.sends + 1),
            result: None,
            result_at: None,
            reason: None,
            stored: resend.as_ref().map_or(0, |r| r.stored),
            duplicates: resend.as_ref().map_or(0, |r| r.duplicates),
        };
        b.put(backfill_key(meter), &rec);
        b.put(backfill_command_key(&rec.command), &meter.to_string());
        self.store.commit(b).map_err(e)?;
        log::info!(
            "backfill request for meter {meter} ({} intervals of {} s) sent to gateway {gw} (send {})",
            gap.intervals(),
            gap.interval_s,
            rec.sends
        );
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_found_from_the_spacing_and_late_readings_are_no_gap() {
        let h = 3_600;
        let t: Vec<u64> = [0, 1, 2, 6, 7, 9]
            .iter()
            .map(|k| 1_000_000 + k * h + 7)
            .collect();
        assert_eq!(interval_of(&t), Some(h));
        let g = find_gaps(&t, None);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].from, g[0].to, g[0].intervals()),
            (t[2] + h, t[2] + 3 * h, 3)
        );
        assert_eq!(
            (g[1].from, g[1].to, g[1].intervals()),
            (t[4] + h, t[4] + h, 1)
        );
        // A reading 20 minutes late, then one on time: no slot is missing.
        assert!(find_gaps(&[0, h, 2 * h + 1_200, 3 * h], Some(h)).is_empty());
        // 40 minutes late is more than half an interval: that slot has no reading of its own.
        let g = find_gaps(&[0, h, 2 * h + 2_400, 3 * h], Some(h));
        assert_eq!((g[0].from, g[0].to), (2 * h, 2 * h));
        assert!(find_gaps(&[5], None).is_empty());
        assert!(find_gaps(&[], Some(h)).is_empty());
    }
}
