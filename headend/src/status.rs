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
