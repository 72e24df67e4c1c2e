//! What `concentrator-headend status` and `audit anchors` print: gateways with their audit anchors and
//! alarms, meters with money as people read it, customers, and the uplink messages refused for good.

use std::fmt::Write;

use crate::engine::anchor_text;
use crate::money::{money, money_u, time};
use crate::store::{anchor_key, AnchorRecord, Store, StoreError, TokenState};

/// Rejected messages listed with their reasons (the newest).
pub const REJECTED_SHOWN: usize = 5;

/// One line per gateway: `<gateway> LEN:HEXHEAD (...)`, then its alarms.
pub fn anchors(store: &Store) -> Result<String, StoreError> {
    let mut out = String::new();
    for g in store.gateways()? {
        match store.get::<AnchorRecord>(anchor_key(&g.id))? {
            None => {
                let _ = writeln!(
                    out,
                    "{} no audit anchor yet (no account summary with one)",
                    g.id
                );
            }
            Some(a) => {
                let _ = writeln!(
                    out,
                    "{} {} (summary of meter {} made {}, received {})",
                    g.id,
                    anchor_text(a.len, &a.head),
                    a.meter,
                    time(a.at),
                    time(a.received_at)
                );
                for r in &a.replaced {
                    let _ = writeln!(out, "  store replaced {}: {}", time(r.at), r.reason);
                }
                for al in &a.alarms {
                    let _ = writeln!(out, "  ALARM {}: {}", time(al.at), al.reason);
                }
            }
        }
    }
    Ok(out)
}

/// The whole status report.
pub fn report(store: &Store, currency: &str) -> Result<String, StoreError> {
    let mut out = String::new();
    for g in store.gateways()? {
        let anchor = match store.get::<AnchorRecord>(anchor_key(&g.id))? {
            Some(a) => format!(
                ", audit anchor {}{}",
                anchor_text(a.len, &a.head),
                if a.alarms.is_empty() {
                    String::new()
                } else {
                    format!(
                        " with {} ALARM(S) (concentrator-headend audit anchors)",
                        a.alarms.len()
                    )
                }
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "gateway {}: {} ({}){}{anchor}",
            g.id,
            if g.online { "online" } else { "offline" },
            match g.meters.len() {
                1 => "1 meter".to_string(),
                n => format!("{n} meters"),
            },
            g.birth
                .map(|b| format!(", software {}, connection {}", b.software, b.session))
                .unwrap_or_default()
        );
        for line in block_balance(store, &g.id)? {
            let _ = writeln!(out, "  {line}");
        }
    }
    for m in store.meters()? {
        let tokens = store.tokens(&m.meter)?;
        let pending: Vec<_> = tokens
            .iter()
            .filter(|t| t.state == TokenState::Pending)
            .collect();
        let pending_sum: u64 = pending.iter().map(|t| t.amount_minor).sum();
        let balance = match (m.view.balance_minor, m.view.balance_at) {
            (Some(b), Some(at)) => format!("{} at {}", money(b, currency), time(at)),
            (Some(b), None) => money(b, currency),
            _ => "not reported yet".into(),
        };
        let supply = match m.view.supply_on {
            Some(true) => "on",
            Some(false) => "CUT",
            None => "unknown",
        };
        let reading = match (m.view.last_reading_wh, m.view.last_reading_at) {
            (Some(wh), Some(at)) => format!("{wh} Wh at {}", time(at)),
            _ => "none".into(),
        };
        let _ = writeln!(
            out,
            "meter {} at {} ({}): balance {balance}, supply {supply}, last reading {reading}, tokens {} ({} pending, {})",
            m.meter,
            m.gateway,
            m.dwelling,
            tokens.len(),
            pending.len(),
            money_u(pending_sum, currency)
        );
    }
    for c in store.customers()? {
        let _ = writeln!(
            out,
            "customer {} ({}): user {}, meters {}",
            c.id,
            c.name,
            c.user.as_deref().unwrap_or("(not registered)"),
            c.meters.join(", ")
        );
    }
    let waiting = store.pending_tenancies()?;
    if !waiting.is_empty() {
        let _ = writeln!(
            out,
            "change-of-tenancy orders waiting for their settlement: {} (concentrator-headend tenancy list)",
            waiting.len()
        );
        for t in &waiting {
            let _ = writeln!(
                out,
                "  order {} meter {}: {} to {}, ordered {}",
                t.order_id,
                t.meter,
                t.from,
                t.to,
                time(t.ordered_at)
            );
        }
    }
    let rejected = store.rejected()?;
    let _ = writeln!(
        out,
        "rejected uplink messages (acknowledged, not acted on): {}",
        rejected.len()
    );
    let mut newest = rejected;
    newest.sort_by_key(|r| std::cmp::Reverse(r.at));
    for r in newest.iter().take(REJECTED_SHOWN) {
        let _ = writeln!(
            out,
            "  {} gateway {}{} {} {}: {}",
            time(r.at),
            r.gateway,
            r.meter
                .as_deref()
                .map(|m| format!(" meter {m}"))
                .unwrap_or_default(),
            r.kind,
            r.id,
            r.reason
        );
    }
    Ok(out)
}

/// Block balance (gateway events 70 and 71, docs/protocol.md): for each group of gateway `gw`, its
/// last event in words: an open theft/loss alarm with the figures, or back within the allowance.
pub fn block_balance(store: &Store, gw: &str) -> Result<Vec<String>, StoreError> {
    use concentrator_protocol::event_code::{BLOCK_BALANCED, BLOCK_IMBALANCE};
    let mut last: std::collections::BTreeMap<String, (u64, u64, String)> = Default::default();
    for rec in store.ingested("event", &crate::engine::owner(gw, None))? {
        let b = &rec.body;
        let code = b["code"].as_u64().unwrap_or(0);
        if code != u64::from(BLOCK_IMBALANCE) && code != u64::from(BLOCK_BALANCED) {
            continue;
        }
        let at = b["at"].as_u64().unwrap_or(0);
        let detail = b["detail"].as_str().unwrap_or_default();
        let group = detail
            .strip_prefix("group ")
            .and_then(|r| r.split(':').next())
            .unwrap_or("(unnamed)")
            .to_string();
        let v: Vec<i64> = b["values"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
            .unwrap_or_default();
        let figures = match v[..] {
            [start, end, feeder, dwellings, difference, allowed] => {
                let kwh = |wh: i64| {
                    format!(
                        "{}{}.{:03} kWh",
                        if wh < 0 { "-" } else { "" },
                        wh.unsigned_abs() / 1000,
                        wh.unsigned_abs() % 1000
                    )
                };
                let percent = if feeder > 0 {
                    difference as f64 * 100.0 / feeder as f64
                } else {
                    0.0
                };
                format!(
                    "from {} to {} the feeder measured {}, the dwellings {}, difference {} ({percent:.1} % of the feeder's), {} allowed",
                    time(u64::try_from(start).unwrap_or(0)),
                    time(u64::try_from(end).unwrap_or(0)),
                    kwh(feeder),
                    kwh(dwellings),
                    kwh(difference),
                    kwh(allowed)
                )
            }
            _ => format!("figures missing ({})", detail),
        };
        if last.get(&group).is_none_or(|(t, _, _)| at >= *t) {
            last.insert(group, (at, code, figures));
        }
    }
    Ok(last
        .into_iter()
        .map(|(group, (at, code, figures))| {
            if code == u64::from(BLOCK_IMBALANCE) {
                format!("block {group}: THEFT/LOSS ALARM since {} (event 70): {figures}; inspect the wiring between the feeder meter and the dwellings' meters", time(at))
            } else {
                format!("block {group}: balanced again since {} (event 71): {figures}", time(at))
            }
        })
        .collect())
}

/// Every change-of-tenancy order, oldest first, with its state and settlement
/// (`concentrator-headend tenancy list`).
pub fn tenancies(store: &Store) -> Result<String, StoreError> {
    let mut out = String::new();
    let mut all = Vec::new();
    for (_, t) in store.scan::<crate::store::TenancyRecord>(b"ten/")? {
        all.push(t);
    }
    if all.is_empty() {
        out.push_str("no change-of-tenancy orders\n");
    }
    for t in all {
        let _ = write!(
            out,
            "order {} meter {}: {} to {}, effective {}, ",
            t.order_id,
            t.meter,
            t.from,
            t.to,
            time(t.effective_at)
        );
        match (&t.state, &t.settlement) {
            (_, Some(s)) => {
                let _ = writeln!(
                    out,
                    "settled {}: account {} closed at {} Wh, {}{}",
                    time(s.booked_at),
                    s.account_no,
                    s.closing_register_wh,
                    if s.debt_minor > 0 {
                        format!("billed {}", money_u(s.debt_minor, &t.currency))
                    } else {
                        format!(
                            "refunded {}",
                            money_u(s.remaining_credit_minor, &t.currency)
                        )
                    },
                    if s.refunded_tokens.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", {} token(s) never applied refunded",
                            s.refunded_tokens.len()
                        )
                    }
                );
            }
            (crate::store::TenancyState::Refused, None) => {
                let _ = writeln!(
                    out,
                    "REFUSED by the gateway: {}",
                    t.reason.as_deref().unwrap_or("no reason given")
                );
            }
            (_, None) => {
                let _ = writeln!(
                    out,
                    "waiting for the settlement ({}{})",
                    match t.sent_at {
                        Some(at) => format!("sent {} time(s), last {}", t.sends, time(at)),
                        None => "not sent yet: the gateway is offline or the meter has no security context".into(),
                    },
                    t.reason
                        .as_deref()
                        .map(|r| format!("; the gateway said: {r}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ingested_key, Batch, Ingested};

    fn event(store: &Store, at: u64, code: u16, group: &str, values: [i64; 6]) {
        let mut b = Batch::new();
        b.put(
            ingested_key("event", "gw:gw-1", at, &[at as u8; 16]),
            &Ingested {
                gateway: "gw-1".into(),
                meter: None,
                id: format!("{at}"),
                received_at: at,
                body: serde_json::json!({"at": at, "code": code, "severity": "Alarm", "detail": format!("group {group}: over the allowance"), "values": values}),
            },
        );
        store.apply(b).unwrap();
    }

    #[test]
    fn each_group_shows_its_last_balance_event_in_words() {
        let store = Store::memory();
        assert!(block_balance(&store, "gw-1").unwrap().is_empty());
        let t = 1_796_000_400;
        event(
            &store,
            t,
            70,
            "stair-A",
            [t as i64 - 900, t as i64, 1500, 1000, 500, 95],
        );
        event(
            &store,
            t + 10,
            70,
            "stair-B",
            [t as i64 - 900, t as i64, 1000, 900, 100, 70],
        );
        event(
            &store,
            t + 20,
            71,
            "stair-B",
            [t as i64, t as i64 + 900, 1000, 980, 20, 70],
        );
        let lines = block_balance(&store, "gw-1").unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "block stair-A: THEFT/LOSS ALARM since 2026-11-30 01:00:00 UTC (event 70): from 2026-11-30 00:45:00 UTC to 2026-11-30 01:00:00 UTC the feeder measured 1.500 kWh, the dwellings 1.000 kWh, difference 0.500 kWh (33.3 % of the feeder's), 0.095 kWh allowed; inspect the wiring between the feeder meter and the dwellings' meters"
        );
        assert!(
            lines[1].starts_with("block stair-B: balanced again since"),
            "{lines:?}"
        );
        assert!(block_balance(&store, "gw-2").unwrap().is_empty());
    }
}
