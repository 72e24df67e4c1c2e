//! The network side of attach, AKA and security mode (docs/protocol.md, "Attach, AKA and security mode
//! over MQTT"), one run per (gateway, scope) with its state in memory; the SQN state and the resulting
//! contexts are in the store.

use std::collections::HashMap;

use concentrator_protocol::{
    protect, AkaChallenge, AkaResult, Body, Frame, GatewayId, Kind, ModePair, Scope,
    SecurityModeCommand, TidAssignment, Topic,
};
use concentrator_security::aka::{self, AuthVector};
use concentrator_security::envelope::{Channel, Envelope};
use concentrator_security::milenage::Milenage;
use concentrator_security::suci::{self, Profile};
use concentrator_security::{Direction, SecurityContext};

use super::{mode_of, sender, short, Engine, Outgoing, RESERVE};
use crate::store::{ctx_key, gateway_key, tid_key, Batch, ContextRecord, SubscriberRef, TidRecord};

/// The AMF of every vector.
pub const AMF: [u8; 2] = [0x80, 0x00];
/// A run whose next step does not come within this many seconds is forgotten (the gateway waits 60 s).
pub const RUN_TIMEOUT: u64 = 120;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Challenge sent.
    AwaitResponse,
    /// Security mode command sent.
    AwaitComplete,
    /// TID assignment sent (meters).
    AwaitTidAck,
}

/// One AKA run.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) sub: SubscriberRef,
    pub(super) vector: AuthVector,
    pub(super) phase: Phase,
    pub(super) started: u64,
    pub(super) fresh: u32,
    pub(super) established: u64,
}

/// The AKA runs in progress, by gateway and then scope: a gateway's own are found without walking
/// every other gateway's (10,000 gateways attaching a city's meters keep tens of thousands of runs).
#[derive(Default)]
pub(super) struct Runs {
    by_gateway: HashMap<String, HashMap<Scope, Run>>,
    /// How many runs are keyed by each scope (a new TID must not be one of them).
    scopes: HashMap<Scope, usize>,
    len: usize,
}

impl Runs {
    pub(super) fn get(&self, (gw, scope): &(String, Scope)) -> Option<&Run> {
        self.by_gateway.get(gw)?.get(scope)
    }

    pub(super) fn get_mut(&mut self, (gw, scope): &(String, Scope)) -> Option<&mut Run> {
        self.by_gateway.get_mut(gw)?.get_mut(scope)
    }

    pub(super) fn insert(&mut self, (gw, scope): (String, Scope), run: Run) {
        if self
            .by_gateway
            .entry(gw)
            .or_default()
            .insert(scope, run)
            .is_none()
        {
            *self.scopes.entry(scope).or_insert(0) += 1;
            self.len += 1;
        }
    }

    fn forget(&mut self, scope: Scope) {
        if let Some(n) = self.scopes.get_mut(&scope) {
            *n -= 1;
            if *n == 0 {
                self.scopes.remove(&scope);
            }
        }
        self.len -= 1;
    }

    pub(super) fn remove(&mut self, (gw, scope): &(String, Scope)) -> Option<Run> {
        let runs = self.by_gateway.get_mut(gw)?;
        let run = runs.remove(scope)?;
        if runs.is_empty() {
            self.by_gateway.remove(gw);
        }
        self.forget(*scope);
        Some(run)
    }

    /// Keeps the runs of `gw` for which `keep` says so.
    pub(super) fn retain_gateway(&mut self, gw: &str, mut keep: impl FnMut(Scope, &Run) -> bool) {
        let Some(runs) = self.by_gateway.get_mut(gw) else {
            return;
        };
        let gone: Vec<Scope> = runs
            .iter()
            .filter(|(scope, run)| !keep(**scope, run))
            .map(|(scope, _)| *scope)
            .collect();
        for scope in gone {
            self.remove(&(gw.to_string(), scope));
        }
    }

    /// Keeps the runs for which `keep` says so (periodic: walks them all).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str, Scope, &Run) -> bool) {
        let gateways: Vec<String> = self.by_gateway.keys().cloned().collect();
        for gw in gateways {
            self.retain_gateway(&gw, |scope, run| keep(&gw, scope, run));
        }
    }

    /// The runs of `gw`.
    pub(super) fn of_gateway(&self, gw: &str) -> impl Iterator<Item = (Scope, &Run)> {
        self.by_gateway
            .get(gw)
            .into_iter()
            .flat_map(|runs| runs.iter().map(|(scope, run)| (*scope, run)))
    }

    /// Whether a run is keyed by `scope`, at any gateway.
    pub(super) fn uses_scope(&self, scope: Scope) -> bool {
        self.scopes.contains_key(&scope)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Run {
    pub(super) fn rand_hex(&self) -> String {
        hex::encode(self.vector.rand)
    }
}

fn profile_id(p: Profile) -> u8 {
    match p {
        Profile::A => 1,
        Profile::B => 2,
    }
}

impl Engine {
    /// Attach (0x05) and AKA response (0x06).
    pub(super) fn aka_plain(
        &mut self,
        gw: &str,
        scope: Scope,
        frame: Frame,
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        match frame.body {
            Body::Attach(a) => {
                if a.profile != profile_id(self.s.profile) || a.key_id != self.s.key_id {
                    return Err(format!(
                        "attach with profile {} key id {}: this home network uses profile {} key id {}; the gateway's aka.toml is from another pilot",
                        a.profile,
                        a.key_id,
                        profile_id(self.s.profile),
                        self.s.key_id
                    ));
                }
                let bcd = suci::reveal(self.s.profile, &self.s.hn_private, &a.concealed)
                    .map_err(|e| format!("attach: the concealed identity does not reveal: {e}"))?;
                let imsi = suci::bcd_to_msin(&bcd).map_err(|e| format!("attach: {e}"))?;
                let sub = self
                    .store
                    .subscriber_by_imsi(&imsi)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        format!("attach for IMSI {imsi}, which is not enrolled: ignored")
                    })?;
                let enrolled = match (&sub, scope) {
                    (SubscriberRef::Gateway(g), Scope::Gateway) => g == gw,
                    (SubscriberRef::Meter(m), Scope::Meter(_)) => self
                        .store
                        .meter(m)
                        .map_err(|e| e.to_string())?
                        .is_some_and(|r| r.gateway == gw),
                    _ => false,
                };
                if !enrolled {
                    return Err(format!(
                        "attach for {} on scope {} is not for a subscriber enrolled at gateway {gw}: ignored (a gateway attaches only itself and its own meters)",
                        sub.key(),
                        short(scope)
                    ));
                }
                if let Scope::Meter(handle) = scope {
                    if self
                        .store
                        .tid(&handle.0)
                        .map_err(|e| e.to_string())?
                        .is_some()
                    {
                        return Err(format!(
                            "attach on {}, which is an issued TID, not a fresh attach handle: ignored",
                            handle.to_hex()
                        ));
                    }
                }
                // A new attach for a subscriber replaces any run in progress.
                // (A subscriber attaches only at the gateway it is enrolled at: its runs are there.)
                self.runs.retain_gateway(gw, |_, r| r.sub != sub);
                log::info!(
                    "gateway {gw}: attach of {} on scope {}",
                    sub.key(),
                    short(scope)
                );
                self.challenge(gw, scope, sub, now).map(|o| vec![o])
            }
            Body::AkaResponse(r) => {
                let key = (gw.to_string(), scope);
                let Some(run) = self.runs.get(&key) else {
                    return Err(format!(
                        "AKA response on scope {} without a run in progress: ignored",
                        short(scope)
                    ));
                };
                if run.phase != Phase::AwaitResponse || run.vector.rand != r.rand {
                    return Err(format!(
                        "AKA response on scope {} answers another challenge (RAND {}): ignored",
                        short(scope),
                        hex::encode(r.rand)
                    ));
                }
                let sub = run.sub.clone();
                match r.result {
                    AkaResult::Res(res) => {
                        if aka::check_res(&run.vector, &res).is_err() {
                            self.runs.remove(&key);
                            return Err(format!(
                                "RES of {} does not match: the gateway does not hold this subscriber's key; no context made",
                                sub.key()
                            ));
                        }
                        self.security_mode_command(gw, scope, now).map(|o| vec![o])
                    }
                    AkaResult::SyncFailure(auts) => {
                        let auts: [u8; 14] = auts.as_slice().try_into().map_err(|_| {
                            format!("AUTS of {} octets (14 expected): ignored", auts.len())
                        })?;
                        let (k, opc, mut sqn) = self.credentials(&sub)?;
                        let m = Milenage::with_opc(&k, &opc);
                        let rand = run.vector.rand;
                        match aka::resynchronise(&m, &mut sqn, &rand, &auts) {
                            Ok(sqn_ms) => {
                                log::info!(
                                    "gateway {gw}: {} resynchronised above SEQ {}",
                                    sub.key(),
                                    sqn_ms.seq()
                                );
                                self.save_sqn(&sub, &sqn)?;
                                self.runs.remove(&key);
                                self.challenge(gw, scope, sub, now).map(|o| vec![o])
                            }
                            Err(e) => {
                                self.runs.remove(&key);
                                Err(format!("resynchronisation of {} refused: {e}", sub.key()))
                            }
                        }
                    }
                    AkaResult::MacFailure => {
                        self.runs.remove(&key);
                        Err(format!(
                            "the gateway found our challenge for {} not authentic (MAC failure): its K/OPc differ from ours; re-provision it",
                            sub.key()
                        ))
                    }
                }
            }
            other => Err(format!("{:?} is not an AKA message", other.kind())),
        }
    }

    fn credentials(
        &self,
        sub: &SubscriberRef,
    ) -> Result<([u8; 16], [u8; 16], concentrator_security::sqn::SqnGenerator), String> {
        let e = |e: crate::store::StoreError| e.to_string();
        match sub {
            SubscriberRef::Meter(m) => {
                let r = self
                    .store
                    .meter(m)
                    .map_err(e)?
                    .ok_or_else(|| format!("meter {m} vanished"))?;
                Ok((r.k, r.opc, r.sqn))
            }
            SubscriberRef::Gateway(g) => {
                let r = self
                    .store
                    .gateway(g)
                    .map_err(e)?
                    .ok_or_else(|| format!("gateway {g} vanished"))?;
                Ok((r.k, r.opc, r.sqn))
            }
            SubscriberRef::Customer(c) => Err(format!("customer {c} does not attach over MQTT")),
        }
    }

    /// Writes and flushes a subscriber's SQN generator.
    fn save_sqn(
        &self,
        sub: &SubscriberRef,
        sqn: &concentrator_security::sqn::SqnGenerator,
    ) -> Result<(), String> {
        let e = |e: crate::store::StoreError| e.to_string();
        let mut b = Batch::new();
        match sub {
            SubscriberRef::Meter(m) => {
                return self
                    .store
                    .update_meter(m, b, |r| r.sqn = sqn.clone(), |b| self.store.commit(b))
                    .map_err(e)?
                    .ok_or_else(|| format!("meter {m} vanished"));
            }
            SubscriberRef::Gateway(g) => {
                let mut r = self
                    .store
                    .gateway(g)
                    .map_err(e)?
                    .ok_or_else(|| format!("gateway {g} vanished"))?;
                r.sqn = sqn.clone();
                b.put(gateway_key(g), &r);
            }
            SubscriberRef::Customer(_) => {}
        }
        self.store.commit(b).map_err(e)
    }

    /// Step 2: a fresh vector; the SQN state is flushed before the challenge leaves.
    fn challenge(
        &mut self,
        gw: &str,
        scope: Scope,
        sub: SubscriberRef,
        now: u64,
    ) -> Result<Outgoing, String> {
        let (k, opc, mut sqn) = self.credentials(&sub)?;
        let m = Milenage::with_opc(&k, &opc);
        let vector = aka::generate_vector(&m, &mut sqn, rand::random(), AMF)
            .map_err(|e| format!("{}: {e}", sub.key()))?;
        self.save_sqn(&sub, &sqn)?;
        let gateway = GatewayId::new(gw).map_err(|e| e.to_string())?;
        let out = self.plain(
            &gateway,
            scope,
            Body::AkaChallenge(AkaChallenge {
                rand: vector.rand,
                autn: vector.autn,
            }),
            now,
        )?;
        self.runs.insert(
            (gw.to_string(), scope),
            Run {
                sub,
                vector,
                phase: Phase::AwaitResponse,
                started: now,
                fresh: 0,
                established: now,
            },
        );
        Ok(out)
    }

    /// Step 4: the allowed pairs, FRESH and the lifetime, sealed with the first pair, COUNT 0.
    fn security_mode_command(
        &mut self,
        gw: &str,
        scope: Scope,
        now: u64,
    ) -> Result<Outgoing, String> {
        let modes = self.s.modes.clone();
        let lifetime = self.s.key_lifetime;
        let run = self
            .runs
            .get_mut(&(gw.to_string(), scope))
            .ok_or_else(|| "AKA run vanished".to_string())?;
        let fresh: u32 = rand::random();
        run.fresh = fresh;
        run.established = now;
        run.phase = Phase::AwaitComplete;
        run.started = now;
        let first = modes
            .first()
            .copied()
            .ok_or_else(|| "no allowed security mode".to_string())?;
        let ctx = SecurityContext::new(first, &run.vector.ck, &run.vector.ik, fresh, now, lifetime);
        let mut channel = Channel::new(ctx, Direction::Downlink, self.s.window);
        let body = Body::SecurityModeCommand(SecurityModeCommand {
            allowed: modes
                .iter()
                .map(|m| ModePair {
                    integrity: m.integrity.id(),
                    ciphering: m.ciphering.id(),
                })
                .collect(),
            fresh,
            lifetime_s: lifetime,
        });
        let frame = Frame::new(self.new_id(), scope.tid(), now, body);
        let payload = protect::payload(Some(&mut channel), &sender(), now, &frame)
            .map_err(|e| e.to_string())?;
        let gateway = GatewayId::new(gw).map_err(|e| e.to_string())?;
        Ok(Outgoing {
            topic: Topic::for_message(&gateway, scope, Kind::SecurityModeCommand).to_string(),
            payload,
        })
    }

    /// Step 5 (and 6 for meters): the complete, sealed with the chosen pair; the context is stored.
    pub(super) fn security_mode_complete(
        &mut self,
        t: &Topic,
        gw: &str,
        scope: Scope,
        payload: &[u8],
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        let key = (gw.to_string(), scope);
        let Some(run) = self.runs.get(&key) else {
            return Err(format!(
                "security mode complete on scope {} without a run in progress: ignored",
                short(scope)
            ));
        };
        if run.phase != Phase::AwaitComplete {
            return Err(format!(
                "security mode complete on scope {} at {:?}: ignored",
                short(scope),
                run.phase
            ));
        }
        let env = Envelope::decode(payload).map_err(|e| format!("refused: {e}"))?;
        if !self.s.modes.contains(&env.mode) {
            return Err(format!(
                "security mode complete sealed with {:?}, which this head-end does not allow ({:?}): no context made",
                env.mode, self.s.modes
            ));
        }
        let ctx = SecurityContext::new(
            env.mode,
            &run.vector.ck,
            &run.vector.ik,
            run.fresh,
            run.established,
            self.s.key_lifetime,
        );
        let mut channel = Channel::resume(ctx, Direction::Downlink, self.s.window, 1, None);
        let frame = protect::open(t, payload, Some(&mut channel), now)
            .map_err(|e| format!("refused: {e}"))?;
        let Body::SecurityModeComplete(c) = &frame.body else {
            return Err("not a security mode complete".into());
        };
        if mode_of(c.chosen.integrity, c.chosen.ciphering) != Some(env.mode) {
            return Err(format!(
                "security mode complete chooses {:?} but is sealed with {:?}: no context made",
                c.chosen, env.mode
            ));
        }
        let run = self
            .runs
            .remove(&key)
            .ok_or_else(|| "AKA run vanished".to_string())?;
        let sub = run.sub.clone();
        let rand = run.rand_hex();
        let mut rec = ContextRecord {
            tid: None,
            rand: rand.clone(),
            integrity: env.mode.integrity.id(),
            ciphering: env.mode.ciphering.id(),
            ck: run.vector.ck,
            ik: run.vector.ik,
            fresh: run.fresh,
            established: run.established,
            lifetime: self.s.key_lifetime,
            // Shared store: the next unit of work resumes at exactly the next COUNT (the security
            // mode command used 0).
            down_reserved: if self.shared { 1 } else { RESERVE },
            up_last: channel.last_received(),
            up_seen: None,
            confirmed: matches!(sub, SubscriberRef::Gateway(_)),
        };
        let mut b = Batch::new();
        let mut tid = None;
        if let SubscriberRef::Meter(m) = &sub {
            let t = loop {
                let candidate: [u8; 8] = rand::random();
                if self
                    .store
                    .tid(&candidate)
                    .map_err(|e| e.to_string())?
                    .is_none()
                    && !self
                        .runs
                        .uses_scope(Scope::Meter(concentrator_protocol::Tid(candidate)))
                {
                    break candidate;
                }
            };
            rec.tid = Some(hex::encode(t));
            b.put(
                tid_key(&t),
                &TidRecord {
                    meter: m.clone(),
                    gateway: gw.to_string(),
                    expires_at: rec.expires_at(),
                },
            );
            tid = Some(t);
        }
        let mut set = self.store.contexts(&sub).map_err(|e| e.to_string())?;
        if let Some(dropped) = set.previous.take() {
            if let Some(t) = dropped.tid.as_deref().and_then(|h| hex::decode(h).ok()) {
                if let Ok(t) = <[u8; 8]>::try_from(t.as_slice()) {
                    b.remove(tid_key(&t));
                }
            }
            self.live.remove(&(sub.key(), dropped.rand));
        }
        set.previous = set.current.take().filter(|c| now < c.expires_at());
        set.current = Some(rec);
        b.put(ctx_key(&sub), &set);
        self.store.commit(b).map_err(|e| e.to_string())?;
        self.live.insert(
            (sub.key(), rand.clone()),
            super::Live {
                channel,
                reserved_until: if self.shared { 1 } else { RESERVE },
            },
        );
        log::info!(
            "gateway {gw}: {} authenticated, security mode {:?}{}",
            sub.key(),
            env.mode,
            tid.map(|t| format!(", TID {}", hex::encode(t)))
                .unwrap_or_default()
        );
        let gateway = GatewayId::new(gw).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        if let Some(t) = tid {
            // Step 6: the TID, sealed on the attach handle (COUNT 1).
            let expires_at = run.established.saturating_add(self.s.key_lifetime);
            out.push(self.seal(
                &gateway,
                scope,
                &sub,
                &rand,
                Body::TidAssignment(TidAssignment {
                    tid: concentrator_protocol::Tid(t),
                    expires_at,
                }),
                None,
                now,
            )?);
            self.runs.insert(
                key,
                Run {
                    phase: Phase::AwaitTidAck,
                    started: now,
                    ..run
                },
            );
        }
        // The complete is an uplink message like any other: acknowledged (after the TID assignment).
        self.queue_ack(gw, scope, &sub, &rand, frame.header.id)?;
        Ok(out)
    }

    /// 0x09 from the gateway: the TID assignment's acknowledgement confirms the new context.
    pub(super) fn ack_up(
        &mut self,
        gw: &str,
        scope: Scope,
        frame: &Frame,
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        let key = (gw.to_string(), scope);
        if let Some(run) = self.runs.get(&key) {
            if run.phase == Phase::AwaitTidAck {
                let (sub, rand) = (run.sub.clone(), run.rand_hex());
                self.update_ctx(&sub, &rand, |c| c.confirmed = true)?;
                self.store.flush().map_err(|e| e.to_string())?;
                self.runs.remove(&key);
                log::info!("gateway {gw}: {} confirmed its new TID", sub.key());
                if let SubscriberRef::Meter(m) = &sub {
                    return Ok(self.deliver(Some(m.as_str()), now));
                }
            }
        }
        log::debug!(
            "gateway {gw}: acknowledgement of {} messages",
            match &frame.body {
                Body::AckUp(a) => a.ids.len(),
                _ => 0,
            }
        );
        Ok(vec![])
    }
}
