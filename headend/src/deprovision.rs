//! `concentrator-headend provision --remove KIND:ID`: taking meters, gateways and customers out of
//! service, all in one transaction, never at the cost of a customer's money.
//!
//! What goes: the subscriber (its record, its IMSI, its security contexts and TIDs, so it can no longer
//! attach), and its place in the lists of its gateway and customers. What stays: its tokens, its serial
//! counter and the payment record, so its history remains and a meter enrolled again under the same
//! number never gets a serial twice. What is refused, with the reason and the fix:
//! - a meter with tokens not yet applied or refused (money on its way: wait for the receipt, or the
//!   refusal that refunds it);
//! - a meter whose last known balance is in credit, unless `--force` (the credit is the customer's: settle
//!   it first with a change of tenancy);
//! - a gateway that still has meters (remove or move them first);
//! - a customer with a purchase still on its way.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::{HeadEndError, Result};
use crate::money::money;
use crate::store::{
    ctx_key, customer_key, gateway_key, meter_key, tid_key, Batch, ContextSet, Store,
    SubscriberRef, TokenState,
};

/// One thing to take out of service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Removal {
    /// A meter by number.
    Meter(String),
    /// A gateway by id.
    Gateway(String),
    /// A customer by id.
    Customer(String),
}

impl FromStr for Removal {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let usage = "write meter:NUMBER, gateway:ID or customer:ID, e.g. --remove meter:MTR-9";
        let (kind, id) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} names no kind; {usage}"))?;
        if id.is_empty() {
            return Err(format!("{s:?} names no {kind}; {usage}"));
        }
        match kind {
            "meter" => Ok(Removal::Meter(id.into())),
            "gateway" => Ok(Removal::Gateway(id.into())),
            "customer" => Ok(Removal::Customer(id.into())),
            other => Err(format!("{other:?} is not something to remove; {usage}")),
        }
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::Meter(m) => write!(f, "meter {m}"),
            Removal::Gateway(g) => write!(f, "gateway {g}"),
            Removal::Customer(c) => write!(f, "customer {c}"),
        }
    }
}

fn refused(what: &Removal, why: String) -> HeadEndError {
    HeadEndError::Refused(format!(
        "{what} was not removed: {why}; nothing was removed"
    ))
}

/// The contexts and TIDs of a subscriber, removed in `b`.
fn forget_subscriber(store: &Store, b: &mut Batch, sub: &SubscriberRef) -> Result<()> {
    if let Some(set) = store.get::<ContextSet>(ctx_key(sub))? {
        for c in [set.current, set.previous].into_iter().flatten() {
            if let Some(tid) = c.tid.as_deref().and_then(|t| hex::decode(t).ok()) {
                if let Ok(tid) = <[u8; 8]>::try_from(tid.as_slice()) {
                    b.remove(tid_key(&tid));
                }
            }
        }
    }
    b.remove(ctx_key(sub));
    Ok(())
}

/// Removes everything in `what`, all or nothing; returns one line per removal, in words. `currency`:
/// the pilot's, for the amounts in refusals.
pub fn remove(store: &Store, what: &[Removal], force: bool, currency: &str) -> Result<Vec<String>> {
    let what: BTreeSet<Removal> = what.iter().cloned().collect();
    let meters_going: BTreeSet<&str> = what
        .iter()
        .filter_map(|r| match r {
            Removal::Meter(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    let mut b = Batch::new();
    let mut done = Vec::new();
    let mut gateways = store.gateways()?;
    let mut customers = store.customers()?;
    for r in &what {
        match r {
            Removal::Meter(m) => {
                let rec = store
                    .meter(m)?
                    .ok_or_else(|| refused(r, "no such meter is enrolled".into()))?;
                let waiting: Vec<u64> = store
                    .tokens(m)?
                    .iter()
                    .filter(|t| t.state == TokenState::Pending)
                    .map(|t| t.serial)
                    .collect();
                if !waiting.is_empty() {
                    return Err(refused(
                        r,
                        format!(
                            "{} token(s) bought for it are not yet applied or refused (serials {}); wait for their receipts (or the refusals that refund them) and remove it then",
                            waiting.len(),
                            waiting.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                match rec.view.balance_minor {
                    Some(b) if b > 0 && !force => {
                        return Err(refused(
                            r,
                            format!(
                                "its last known balance is {} in credit, which is the customer's; settle it with a change of tenancy first, or add --force to remove it anyway",
                                money(b, currency)
                            ),
                        ))
                    }
                    _ => {}
                }
                b.remove(meter_key(m));
                b.remove(format!("imsi/{}", rec.imsi));
                forget_subscriber(store, &mut b, &SubscriberRef::Meter(m.clone()))?;
                for g in gateways.iter_mut().filter(|g| g.meters.contains(m)) {
                    g.meters.retain(|x| x != m);
                    b.put(gateway_key(&g.id), g);
                }
                for c in customers.iter_mut().filter(|c| c.meters.contains(m)) {
                    c.meters.retain(|x| x != m);
                    b.put(customer_key(&c.id), c);
                }
                done.push(format!(
                    "removed meter {m} (gateway {}, dwelling {}); its tokens and payment history stay",
                    rec.gateway, rec.dwelling
                ));
            }
            Removal::Gateway(g) => {
                let rec = gateways
                    .iter()
                    .find(|x| &x.id == g)
                    .cloned()
                    .ok_or_else(|| refused(r, "no such gateway is enrolled".into()))?;
                let left: Vec<&String> = rec
                    .meters
                    .iter()
                    .filter(|m| !meters_going.contains(m.as_str()))
                    .collect();
                if !left.is_empty() {
                    return Err(refused(
                        r,
                        format!(
                            "it still serves meter(s) {}; remove them too (--remove meter:NUMBER) or move them to another gateway in the provisioning file first",
                            left.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                b.remove(gateway_key(g));
                b.remove(format!("imsi/{}", rec.imsi));
                forget_subscriber(store, &mut b, &SubscriberRef::Gateway(g.clone()))?;
                gateways.retain(|x| &x.id != g);
                done.push(format!(
                    "removed gateway {g}; revoke its certificate at the broker (its ACL and CA) as well"
                ));
            }
            Removal::Customer(c) => {
                let rec = customers
                    .iter()
                    .find(|x| &x.id == c)
                    .cloned()
                    .ok_or_else(|| refused(r, "no such customer is enrolled".into()))?;
                for m in &rec.meters {
                    let waiting = store
                        .tokens(m)?
                        .iter()
                        .filter(|t| t.state == TokenState::Pending)
                        .count();
                    if waiting > 0 {
                        return Err(refused(
                            r,
                            format!("{waiting} token(s) for meter {m} are still on their way; wait for their receipts or refusals first"),
                        ));
                    }
                }
                b.remove(customer_key(c));
                b.remove(format!("imsi/{}", rec.imsi));
                if let Some(user) = &rec.user {
                    b.remove(format!("user/{user}"));
                }
                if let Some(h) = &rec.auth_code_hash {
                    b.remove(format!("code/{h}"));
                }
                forget_subscriber(store, &mut b, &SubscriberRef::Customer(c.clone()))?;
                customers.retain(|x| &x.id != c);
                done.push(format!(
                    "removed customer {c} ({}); their purchases stay in the payment record",
                    rec.name
                ));
            }
        }
    }
    store.commit(b)?;
    Ok(done)
}
