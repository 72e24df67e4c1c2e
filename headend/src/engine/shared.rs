//! Several workers on one store (PostgreSQL, MQTT shared subscriptions): a gateway's messages reach
//! any worker, one at a time per gateway (a store scope on its record), so nothing a worker keeps in
//! memory about a gateway may be trusted from one message to the next. With a shared store the engine
//! therefore keeps the AKA runs of a gateway in the store (`run/<gw>\0<scope>`, loaded and saved in
//! the gateway's scope) and rebuilds the security channels from the stored contexts for every unit of
//! work, reserving downlink COUNTs one at a time in the same transaction.

use concentrator_protocol::{Scope, Tid};
use concentrator_security::aka::AuthVector;
use concentrator_security::sqn::Sqn;
use serde::{Deserialize, Serialize};

use super::aka::{Phase, Run, RUN_TIMEOUT};
use super::Engine;
use crate::store::{gateway_key, hex16, key2, Batch, StoreError, SubscriberRef};

/// An AKA run as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    sub: SubscriberRef,
    phase: Phase,
    started: u64,
    fresh: u32,
    established: u64,
    #[serde(with = "hex16")]
    rand: [u8; 16],
    xres: String,
    #[serde(with = "hex16")]
    ck: [u8; 16],
    #[serde(with = "hex16")]
    ik: [u8; 16],
    #[serde(with = "hex16")]
    autn: [u8; 16],
    sqn: Sqn,
}

fn scope_name(scope: Scope) -> String {
    match scope {
        Scope::Gateway => "gw".into(),
        Scope::Meter(t) => t.to_hex(),
    }
}

fn scope_of(name: &[u8]) -> Option<Scope> {
    if name == b"gw" {
        return Some(Scope::Gateway);
    }
    let v = hex::decode(name).ok()?;
    Some(Scope::Meter(Tid(v.try_into().ok()?)))
}

impl Engine {
    /// Runs `f` in a store scope on gateway `gw` (see [`crate::store::Store::scope`]). With a shared
    /// store, the cached channels are dropped first and the gateway's AKA runs come from the store
    /// and go back to it before the scope commits.
    pub(super) fn on_gateway<R>(
        &mut self,
        gw: &str,
        now: u64,
        mut f: impl FnMut(&mut Engine) -> R,
    ) -> Result<R, StoreError> {
        let store = self.store.clone();
        let key = gateway_key(gw);
        if self.in_gateway.is_some() {
            // Inside a gateway's scope already (work a message led to): join it as it is.
            return store.scope(&[key.as_bytes()], || f(self));
        }
        store.scope(&[key.as_bytes()], || {
            if !self.shared {
                return Ok(f(self));
            }
            self.live.clear();
            self.dedup_next.clear();
            self.in_gateway = Some(gw.to_string());
            let r = self.load_runs(gw, now).map(|before| {
                let r = f(self);
                (r, before)
            });
            self.in_gateway = None;
            let (r, before) = r?;
            self.save_runs(gw, before)?;
            Ok(r)
        })?
    }

    /// Replaces the in-memory runs of `gw` with the stored ones (those not timed out); returns the
    /// stored keys.
    fn load_runs(&mut self, gw: &str, now: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.runs.retain_gateway(gw, |_, _| false);
        let prefix = key2("run/", gw, &[]);
        let mut keys = Vec::new();
        for (k, r) in self.store.scan::<RunRecord>(&prefix)? {
            let Some(scope) = k.get(prefix.len()..).and_then(scope_of) else {
                continue;
            };
            keys.push(k);
            if now >= r.started.saturating_add(RUN_TIMEOUT) {
                continue;
            }
            let Ok(xres) = hex::decode(&r.xres) else {
                continue;
            };
            let Ok(xres) = xres.try_into() else {
                continue;
            };
            self.runs.insert(
                (gw.to_string(), scope),
                Run {
                    sub: r.sub,
                    vector: AuthVector {
                        rand: r.rand,
                        xres,
                        ck: r.ck,
                        ik: r.ik,
                        autn: r.autn,
                        sqn: r.sqn,
                    },
                    phase: r.phase,
                    started: r.started,
                    fresh: r.fresh,
                    established: r.established,
                },
            );
        }
        Ok(keys)
    }

    /// Writes the runs of `gw` back; removes the stored ones that ended (`before`: keys loaded).
    fn save_runs(&mut self, gw: &str, before: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let mut b = Batch::new();
        for k in before {
            b.remove(k);
        }
        for (scope, run) in self.runs.of_gateway(gw) {
            let rec = RunRecord {
                sub: run.sub.clone(),
                phase: run.phase,
                started: run.started,
                fresh: run.fresh,
                established: run.established,
                rand: run.vector.rand,
                xres: hex::encode(run.vector.xres),
                ck: run.vector.ck,
                ik: run.vector.ik,
                autn: run.vector.autn,
                sqn: run.vector.sqn,
            };
            b.put(key2("run/", gw, scope_name(scope).as_bytes()), &rec);
        }
        self.store.apply(b)
    }
}
