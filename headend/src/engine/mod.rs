//! The head-end's protocol core, sans I/O: it takes MQTT messages (topic, payload) and the time, uses
//! the store, and returns the messages to publish. The MQTT driver ([`crate::mqtt`]) and tests feed it.
//!
//! Per message, in the order of docs/protocol.md "Receiving a message": the topic names an enrolled
//! gateway; a sealed kind opens with the security context of its scope (a TID's, the gateway's, or an
//! AKA run's); the frame matches the topic; a message id seen before is acknowledged again and not acted
//! on. Then it is acted on and stored (applied to the store), and queued for acknowledgement: the 0x89
//! messages leave from [`Engine::flush_acks`], after the store has flushed.

mod aka;
mod anchor;
pub mod backfill;
mod ingest;
mod remote;
pub mod restore;
mod shared;
mod sms;
mod tenancy;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use concentrator_protocol::{protect, Body, Frame, GatewayId, Kind, MessageId, Scope, Topic};
use concentrator_security::envelope::{Channel, Sender, SenderKind};
use concentrator_security::receipt::ReceiptVerifier;
use concentrator_security::security_mode::{CipherAlg, IntegrityAlg};
use concentrator_security::signed::DocumentSigner;
use concentrator_security::suci::Profile;
use concentrator_security::{Direction, SecurityContext, SecurityMode};

use crate::audit::PaymentRecord;
use crate::notify::Notifier;
use crate::store::{
    accept_count, rejected_key, Batch, ContextRecord, ContextSet, Rejected, Store, StoreError,
    SubscriberRef,
};

pub use aka::Phase;
pub use anchor::anchor_text;
pub use ingest::owner;
pub use sms::{describe, event_name, sms_spool_dir, spool_sms, SmsIngest, SmsIngestError};

/// Downlink COUNTs reserved per store write (the next start resumes above the reservation).
pub const RESERVE: u32 = 1024;
/// The device name the head-end seals with.
pub const HEAD_END: &str = "head-end";
/// Acknowledgements queued before a flush is due regardless of time.
pub const ACK_BATCH: usize = 64;

/// What the core needs to know.
#[derive(Debug)]
pub struct Settings {
    /// SUCI profile of the home network.
    pub profile: Profile,
    /// Home-network private key.
    pub hn_private: Vec<u8>,
    /// Its key id.
    pub key_id: u8,
    /// Allowed pairs, preferred first.
    pub modes: Vec<SecurityMode>,
    /// Key lifetime of a new context, s.
    pub key_lifetime: u64,
    /// Envelope timestamp window, s.
    pub window: u64,
    /// The pilot's currency.
    pub currency: String,
    /// Message ids remembered per gateway.
    pub dedup_capacity: u64,
    /// Account requests every this many seconds.
    pub reconcile_interval: u64,
    /// Resend a top-up without a result after this many seconds.
    pub result_timeout: u64,
    /// Confirm a gateway's recorded audit anchor to it at most every this many seconds.
    pub anchor_confirm_every: u64,
    /// Meters looked at for reading gaps per tick (a second), at most.
    pub gap_checks_per_s: u64,
    /// Verifies receipts (gateway role, chain to the utility CA).
    pub receipts: ReceiptVerifier,
    /// Signs account restore statements: the head-end's token key.
    pub statements: DocumentSigner,
}

/// A message to publish (QoS 1, not retained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why an uplink message was not acted on.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The head-end's own trouble (its store): the message is not acknowledged, so the gateway sends
    /// it again.
    Retry(String),
    /// The message is wrong for good (unknown token, amount mismatch, a signature that will never
    /// verify): it is acknowledged, so the gateway stops sending it, and recorded as rejected.
    Reject(String),
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Retry(e.to_string())
    }
}

struct Live {
    channel: Channel,
    reserved_until: u32,
}

#[derive(Debug)]
struct AckBatch {
    gateway: GatewayId,
    scope: Scope,
    sub: SubscriberRef,
    rand: String,
    ids: Vec<MessageId>,
}

/// The most gateways a tick asks accounts of in a reconciliation pass; the gap sweep's pace is
/// `[reconcile] gap_checks_per_s` meters a tick. Never one tick that holds the engine for minutes.
const RECONCILE_PER_TICK: usize = 20;

/// How often expired TIDs are purged.
const TID_PURGE_EVERY_S: u64 = 600;

/// The core.
pub struct Engine {
    store: Arc<Store>,
    s: Settings,
    payments: Arc<PaymentRecord>,
    notifier: Arc<Notifier>,
    runs: aka::Runs,
    live: HashMap<(String, String), Live>,
    acks: Vec<AckBatch>,
    dedup_next: HashMap<String, u64>,
    source: [u8; 8],
    seq: u64,
    next_reconcile: u64,
    /// Online gateways whose meters' reading gaps are still to be looked for in this pass
    /// (`[reconcile] gap_checks_per_s` meters a tick).
    reconcile_queue: Vec<String>,
    /// Gateways with meters to ask for their accounts in this pass (a top-up sent and not answered),
    /// at most [`RECONCILE_PER_TICK`] a tick.
    account_queue: Vec<(String, Vec<String>)>,
    /// When expired TIDs are looked for next.
    next_tid_purge: u64,
    /// Meters asked for an account summary (reconciliation), and when: their tokens wait for it.
    awaiting_account: HashMap<String, u64>,
    /// When each gateway was last sent the anchor recorded here (0x8D).
    anchor_confirmed: HashMap<String, u64>,
    /// Makes account restore statements (see [`restore::StatementFn`]).
    statement: Option<restore::StatementFn>,
    /// Other workers share the store: nothing about a gateway is kept in memory between scopes.
    shared: bool,
    /// The gateway whose scope the engine is in (shared store).
    in_gateway: Option<String>,
    /// When the poll of every pending token runs next (shared store).
    next_delivery: u64,
    /// Where the CLI leaves change-of-tenancy requests while the head-end runs ([`crate::tenancy`]).
    order_spool: Option<std::path::PathBuf>,
    /// The spool of remote commands (`commands/` beside `headend.toml`), when set.
    spool: Option<std::path::PathBuf>,
    /// Where `concentrator-headend sms ingest` leaves texts while the head-end runs (`sms/`).
    sms_spool: Option<std::path::PathBuf>,
    /// The second of the last [`Engine::offline_tick`].
    last_offline_tick: Option<u64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("runs", &self.runs.len())
            .field("live", &self.live.len())
            .finish()
    }
}

/// The mode of algorithm ids.
pub fn mode_of(integrity: u8, ciphering: u8) -> Option<SecurityMode> {
    Some(SecurityMode {
        integrity: IntegrityAlg::from_id(integrity)?,
        ciphering: CipherAlg::from_id(ciphering)?,
    })
}

fn sender() -> Sender {
    Sender {
        kind: SenderKind::Device,
        id: HEAD_END.as_bytes().to_vec(),
    }
}

fn short(scope: Scope) -> String {
    match scope {
        Scope::Gateway => "gw".into(),
        Scope::Meter(t) => t.to_hex(),
    }
}

impl Engine {
    /// A core over the store.
    pub fn new(
        store: Arc<Store>,
        settings: Settings,
        payments: Arc<PaymentRecord>,
        notifier: Arc<Notifier>,
    ) -> Engine {
        Engine {
            shared: store.shared(),
            in_gateway: None,
            next_delivery: 0,
            store,
            s: settings,
            payments,
            notifier,
            runs: aka::Runs::default(),
            live: HashMap::new(),
            acks: Vec::new(),
            dedup_next: HashMap::new(),
            source: rand::random(),
            seq: 0,
            next_reconcile: 0,
            reconcile_queue: Vec::new(),
            account_queue: Vec::new(),
            next_tid_purge: 0,
            awaiting_account: HashMap::new(),
            anchor_confirmed: HashMap::new(),
            statement: None,
            order_spool: None,
            spool: None,
            sms_spool: None,
            last_offline_tick: None,
        }
    }

    /// Takes SMS texts from `dir` (the CLI's SMS spool, [`sms_spool_dir`]) at every tick.
    pub fn set_sms_spool(&mut self, dir: Option<std::path::PathBuf>) {
        self.sms_spool = dir;
    }

    /// Takes change-of-tenancy requests from `dir` (the CLI's order spool) at every tick.
    pub fn set_order_spool(&mut self, dir: Option<std::path::PathBuf>) {
        self.order_spool = dir;
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The phase of the AKA run on a scope, if one is in progress (for tests and status).
    pub fn run_phase(&self, gateway: &str, scope: Scope) -> Option<Phase> {
        self.runs
            .get(&(gateway.to_string(), scope))
            .map(|r| r.phase)
    }

    fn new_id(&mut self) -> MessageId {
        self.seq += 1;
        MessageId::new(self.source, self.seq)
    }

    /// One MQTT message. Returns what to publish now (AKA steps); acknowledgements wait for
    /// [`Engine::flush_acks`].
    pub fn handle(&mut self, topic: &str, payload: &[u8], now: u64) -> Vec<Outgoing> {
        let t = match Topic::parse(topic) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("ignored a message: {e}");
                return vec![];
            }
        };
        let gw = t.gateway().as_str().to_string();
        if !self.enrolled(&gw, topic) {
            return vec![];
        }
        // Everything a message changes is changed in one scope on its gateway: on PostgreSQL one
        // transaction that no other worker's work on the same gateway overlaps.
        let result = self.on_gateway(&gw, now, |this| this.handle_in_scope(&t, &gw, payload, now));
        let result = result.map_err(|e| e.to_string()).and_then(|r| r);
        match result {
            Ok(out) => out,
            Err(e) => {
                log::warn!("{topic}: {e}");
                vec![]
            }
        }
    }

    /// The messages of a settle window (topic, payload), in the order they came: each gateway's
    /// messages in one store scope (on PostgreSQL one transaction and one commit for all of them,
    /// instead of one per message), their acknowledgements sealed in the same scope. Returns
    /// everything to publish, acknowledgements included; it may leave once the store flushed
    /// ([`Store::flush`]; on PostgreSQL the scopes' commits did). A gateway whose transaction does
    /// not commit gets nothing: what its messages did was rolled back, and it sends them again.
    pub fn handle_batch(&mut self, msgs: &[(&str, &[u8])], now: u64) -> Vec<Outgoing> {
        // Per gateway, in order of first arrival: (parsed topic, topic, payload).
        type Group<'a> = (String, Vec<(Topic, &'a str, &'a [u8])>);
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for &(topic, payload) in msgs {
            let t = match Topic::parse(topic) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("ignored a message: {e}");
                    continue;
                }
            };
            let gw = t.gateway().as_str().to_string();
            let i = *index.entry(gw.clone()).or_insert_with(|| {
                groups.push((gw, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push((t, topic, payload));
        }
        let mut out = Vec::new();
        for (gw, items) in groups {
            if !self.enrolled(&gw, items[0].1) {
                continue;
            }
            let sealed = self.on_gateway(&gw, now, |this| {
                // A scope run again (the database broke a deadlock) starts from nothing queued.
                this.acks.retain(|b| b.gateway.as_str() != gw);
                let mut out = Vec::new();
                for (t, topic, payload) in &items {
                    match this.handle_in_scope(t, &gw, payload, now) {
                        Ok(o) => out.extend(o),
                        Err(e) => log::warn!("{topic}: {e}"),
                    }
                }
                out.extend(this.seal_acks(Some(&gw), now));
                out
            });
            match sealed {
                Ok(o) => out.extend(o),
                Err(e) => log::warn!(
                    "{} messages of gateway {gw} not taken: {e}; nothing of them was kept, the gateway sends them again",
                    items.len()
                ),
            }
        }
        out
    }

    /// Whether `gw` is enrolled here (else the message on `topic` is ignored, and said so).
    fn enrolled(&self, gw: &str, topic: &str) -> bool {
        match self.store.gateway(gw) {
            Ok(Some(_)) => true,
            Ok(None) => {
                log::warn!(
                    "ignored {topic}: gateway {gw} is not enrolled here (provision it first)"
                );
                false
            }
            Err(e) => {
                log::error!("{topic}: {e}");
                false
            }
        }
    }

    /// One message, inside its gateway's scope.
    fn handle_in_scope(
        &mut self,
        t: &Topic,
        gw: &str,
        payload: &[u8],
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        // Counters cached from an earlier message may be stale when other workers share the store.
        self.dedup_next.clear();
        match t {
            Topic::Status { .. } => self.status(t, payload, now),
            Topic::Data { scope, kind, .. } => match kind {
                Kind::Attach | Kind::AkaResponse => match protect::open(t, payload, None, now) {
                    Ok(frame) => self.aka_plain(gw, *scope, frame, now),
                    Err(e) => Err(format!("refused: {e}")),
                },
                Kind::SecurityModeComplete => {
                    self.security_mode_complete(t, gw, *scope, payload, now)
                }
                _ => self.sealed(t, gw, *scope, payload, now),
            },
        }
    }

    /// The contexts a sealed message on `scope` may be in: (subscriber, context).
    fn candidates(
        &self,
        gw: &str,
        scope: Scope,
        now: u64,
    ) -> Result<Vec<(SubscriberRef, ContextRecord)>, String> {
        let e = |e: StoreError| e.to_string();
        match scope {
            Scope::Gateway => {
                let sub = SubscriberRef::Gateway(gw.to_string());
                let set = self.store.contexts(&sub).map_err(e)?;
                Ok([set.current, set.previous]
                    .into_iter()
                    .flatten()
                    .map(|c| (sub.clone(), c))
                    .collect())
            }
            Scope::Meter(tid) => {
                if let Some(rec) = self.store.tid(&tid.0).map_err(e)? {
                    if rec.gateway != gw {
                        return Err(format!(
                            "TID {} belongs to a meter of gateway {}, not {gw}: ignored",
                            tid.to_hex(),
                            rec.gateway
                        ));
                    }
                    if now >= rec.expires_at {
                        return Err(format!(
                            "TID {} of meter {} expired at {}: the gateway must run AKA again",
                            tid.to_hex(),
                            rec.meter,
                            rec.expires_at
                        ));
                    }
                    let sub = SubscriberRef::Meter(rec.meter);
                    let set = self.store.contexts(&sub).map_err(e)?;
                    let hex = tid.to_hex();
                    return Ok([set.current, set.previous]
                        .into_iter()
                        .flatten()
                        .filter(|c| c.tid.as_deref() == Some(hex.as_str()))
                        .map(|c| (sub.clone(), c))
                        .collect());
                }
                // An attach handle during an AKA run, after the security mode was agreed.
                if let Some(run) = self.runs.get(&(gw.to_string(), scope)) {
                    if run.phase == Phase::AwaitTidAck {
                        let set = self.store.contexts(&run.sub).map_err(e)?;
                        return Ok([set.current, set.previous]
                            .into_iter()
                            .flatten()
                            .filter(|c| c.rand == run.rand_hex())
                            .map(|c| (run.sub.clone(), c))
                            .collect());
                    }
                }
                Ok(vec![])
            }
        }
    }

    fn live(&mut self, sub: &SubscriberRef, c: &ContextRecord) -> Result<&mut Live, String> {
        let key = (sub.key(), c.rand.clone());
        if !self.live.contains_key(&key) {
            let mode = mode_of(c.integrity, c.ciphering).ok_or_else(|| {
                format!(
                    "stored context of {} names unknown algorithms {}/{}",
                    sub.key(),
                    c.integrity,
                    c.ciphering
                )
            })?;
            let ctx = SecurityContext::new(mode, &c.ck, &c.ik, c.fresh, c.established, c.lifetime);
            let channel = Channel::resume(
                ctx,
                Direction::Downlink,
                self.s.window,
                c.down_reserved,
                c.up_last,
            );
            self.live.insert(
                key.clone(),
                Live {
                    channel,
                    reserved_until: c.down_reserved,
                },
            );
        }
        self.live
            .get_mut(&key)
            .ok_or_else(|| "security context vanished".to_string())
    }

    /// Changes one stored context (found by its RAND) in a batch applied now.
    fn update_ctx(
        &self,
        sub: &SubscriberRef,
        rand: &str,
        f: impl FnOnce(&mut ContextRecord),
    ) -> Result<(), String> {
        let mut set: ContextSet = self.store.contexts(sub).map_err(|e| e.to_string())?;
        let c = [set.current.as_mut(), set.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|c| c.rand == rand);
        if let Some(c) = c {
            f(c);
            let mut b = Batch::new();
            b.put(crate::store::ctx_key(sub), &set);
            self.store.apply(b).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Opens a sealed message with the first context of its scope that verifies it.
    fn open_sealed(
        &mut self,
        t: &Topic,
        gw: &str,
        scope: Scope,
        payload: &[u8],
        now: u64,
    ) -> Result<(Frame, SubscriberRef, ContextRecord), String> {
        let cands = self.candidates(gw, scope, now)?;
        if cands.is_empty() {
            return Err(format!(
                "no security context for scope {} of gateway {gw}: the gateway must attach (run AKA) first",
                short(scope)
            ));
        }
        let mut first_err: Option<String> = None;
        let window = self.s.window;
        for (sub, c) in cands {
            let live = self.live(&sub, &c)?;
            // One meter's messages may come out of order: several workers and engines take them
            // in any order, and a receipt on the prompt lane overtakes readings queued on the
            // routine lane. The COUNT is therefore checked against the context's stored window of
            // accepted COUNTs (the last 64) below, not against the last one alone.
            let mut channel = Channel::resume(
                live.channel.context().clone(),
                Direction::Downlink,
                window,
                0,
                None,
            );
            match protect::open(t, payload, Some(&mut channel), now) {
                Ok(frame) => {
                    let accepted = match channel.last_received() {
                        Some(n) => match accept_count(c.up_last, c.up_seen, n) {
                            Some((last, seen)) => (Some(last), Some(seen)),
                            None => {
                                first_err.get_or_insert(format!(
                                    "COUNT {n} was accepted before or is 64 or more below the last accepted {}: replayed or too late",
                                    c.up_last.unwrap_or(0)
                                ));
                                continue;
                            }
                        },
                        None => (c.up_last, c.up_seen),
                    };
                    let on_tid = matches!(scope, Scope::Meter(tid) if c.tid.as_deref() == Some(tid.to_hex().as_str()));
                    self.update_ctx(&sub, &c.rand, |r| {
                        (r.up_last, r.up_seen) = accepted;
                        if on_tid {
                            r.confirmed = true;
                        }
                    })?;
                    return Ok((frame, sub, c));
                }
                Err(e) => {
                    first_err.get_or_insert(e.to_string());
                }
            }
        }
        Err(format!(
            "refused: {}",
            first_err.unwrap_or_else(|| "no context".to_string())
        ))
    }

    fn sealed(
        &mut self,
        t: &Topic,
        gw: &str,
        scope: Scope,
        payload: &[u8],
        now: u64,
    ) -> Result<Vec<Outgoing>, String> {
        let (frame, sub, ctx) = self.open_sealed(t, gw, scope, payload, now)?;
        if frame.kind() == Kind::AckUp {
            return self.ack_up(gw, scope, &frame, now);
        }
        let id = frame.header.id;
        if self.store.seen(gw, &id.0).map_err(|e| e.to_string())? {
            log::debug!("{t}: message {id} seen before: acknowledged again, not acted on");
            self.queue_ack(gw, scope, &sub, &ctx.rand, id)?;
            return Ok(vec![]);
        }
        let meter = match &sub {
            SubscriberRef::Meter(m) => Some(m.clone()),
            _ => None,
        };
        let kind = frame.kind().topic_name();
        let mut b = Batch::new();
        let out = match self.act(gw, meter.as_deref(), frame, now) {
            Ok(out) => out,
            Err(Fault::Retry(e)) => {
                return Err(format!(
                    "message {id} not acted on: {e}; not acknowledged, the gateway sends it again"
                ))
            }
            Err(Fault::Reject(reason)) => {
                log::warn!(
                    "{t}: message {id} rejected for good: {reason}; acknowledged (the gateway stops sending it) and recorded (concentrator-headend status)"
                );
                b.put(
                    rejected_key(gw, now, &id.0),
                    &Rejected {
                        gateway: gw.to_string(),
                        meter: meter.clone(),
                        kind: kind.to_string(),
                        id: id.to_string(),
                        at: now,
                        reason,
                    },
                );
                vec![]
            }
        };
        self.store
            .remember(
                &mut b,
                gw,
                &id.0,
                self.s.dedup_capacity,
                &mut self.dedup_next,
            )
            .map_err(|e| e.to_string())?;
        self.store.apply(b).map_err(|e| e.to_string())?;
        self.queue_ack(gw, scope, &sub, &ctx.rand, id)?;
        Ok(out)
    }

    fn act(
        &mut self,
        gw: &str,
        meter: Option<&str>,
        frame: Frame,
        now: u64,
    ) -> Result<Vec<Outgoing>, Fault> {
        let id = frame.header.id;
        match frame.body {
            Body::Readings(r) => self.readings(gw, meter, id, r, now).map(|()| vec![]),
            Body::Event(ev) => self.event(gw, meter, id, ev, now).map(|()| vec![]),
            Body::Receipt(r) => self.receipt(gw, meter, id, r, now).map(|()| vec![]),
            Body::AccountSummary(a) => self.account(gw, meter, id, a, now),
            Body::CommandResult(r) => self.command_result(gw, meter, r, now),
            Body::RestoreRequest(r) => self.restore(gw, meter, r, now),
            Body::Settlement(s) => self.settlement(gw, meter, s, now).map(|()| vec![]),
            Body::Backfill(bf) => self.backfilled(gw, meter, id, bf, now).map(|()| vec![]),
            other => Err(Fault::Reject(format!(
                "a {} message is not expected in this scope",
                other.kind().topic_name()
            ))),
        }
    }

    fn queue_ack(
        &mut self,
        gw: &str,
        scope: Scope,
        sub: &SubscriberRef,
        rand: &str,
        id: MessageId,
    ) -> Result<(), String> {
        if let Some(b) = self
            .acks
            .iter_mut()
            .find(|b| b.gateway.as_str() == gw && b.scope == scope && b.rand == rand)
        {
            if !b.ids.contains(&id) {
                b.ids.push(id);
            }
            return Ok(());
        }
        self.acks.push(AckBatch {
            gateway: GatewayId::new(gw).map_err(|e| e.to_string())?,
            scope,
            sub: sub.clone(),
            rand: rand.to_string(),
            ids: vec![id],
        });
        Ok(())
    }

    /// Acknowledgements waiting.
    pub fn pending_acks(&self) -> usize {
        self.acks.iter().map(|b| b.ids.len()).sum()
    }

    /// Flushes the store, then seals the queued acknowledgements (0x89, one per scope).
    pub fn flush_acks(&mut self, now: u64) -> Vec<Outgoing> {
        if self.acks.is_empty() {
            return vec![];
        }
        if let Err(e) = self.store.flush() {
            log::error!("acknowledgements held back: the store did not flush: {e}");
            return vec![];
        }
        self.seal_acks(None, now)
    }

    /// Seals the queued acknowledgements (0x89, one per scope) of one gateway (`Some`, inside its
    /// scope) or of all, each gateway's in its own scope.
    fn seal_acks(&mut self, only: Option<&str>, now: u64) -> Vec<Outgoing> {
        let (mine, rest): (Vec<AckBatch>, Vec<AckBatch>) = std::mem::take(&mut self.acks)
            .into_iter()
            .partition(|b| only.is_none_or(|g| b.gateway.as_str() == g));
        self.acks = rest;
        let mut out = Vec::new();
        for b in mine {
            let n = b.ids.len();
            let ack = Body::AckDown(concentrator_protocol::Ack { ids: b.ids.clone() });
            let sealed = self
                .on_gateway(b.gateway.as_str(), now, |this| {
                    this.seal(&b.gateway, b.scope, &b.sub, &b.rand, ack.clone(), None, now)
                })
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            match sealed {
                Ok(o) => out.push(o),
                Err(e) => log::warn!(
                    "cannot acknowledge {n} messages of gateway {} scope {}: {e}; the gateway sends them again",
                    b.gateway,
                    short(b.scope)
                ),
            }
        }
        out
    }

    /// Seals a downlink frame in a stored context (reserving COUNTs, flushed, as needed).
    #[allow(clippy::too_many_arguments)]
    fn seal(
        &mut self,
        gateway: &GatewayId,
        scope: Scope,
        sub: &SubscriberRef,
        rand: &str,
        body: Body,
        id: Option<MessageId>,
        now: u64,
    ) -> Result<Outgoing, String> {
        let set = self.store.contexts(sub).map_err(|e| e.to_string())?;
        let c = [set.current, set.previous]
            .into_iter()
            .flatten()
            .find(|c| c.rand == rand)
            .ok_or_else(|| format!("the security context of {} is gone", sub.key()))?;
        let window_store = self.store.clone();
        let step = if self.shared { 1 } else { RESERVE };
        let live = self.live(sub, &c)?;
        let next = live.channel.next_count().ok_or_else(|| {
            "every COUNT of this context is used: the gateway must run AKA again".to_string()
        })?;
        if next >= live.reserved_until {
            // Shared: the channel is rebuilt from the store for every unit of work, so a reservation
            // beyond this message would only be skipped.
            let end = next.saturating_add(step);
            let mut set = window_store.contexts(sub).map_err(|e| e.to_string())?;
            if let Some(r) = [set.current.as_mut(), set.previous.as_mut()]
                .into_iter()
                .flatten()
                .find(|r| r.rand == rand)
            {
                r.down_reserved = end;
            }
            let mut b = Batch::new();
            b.put(crate::store::ctx_key(sub), &set);
            window_store.commit(b).map_err(|e| e.to_string())?;
            live.reserved_until = end;
        }
        let id = match id {
            Some(id) => id,
            None => self.new_id(),
        };
        let frame = Frame::new(id, scope.tid(), now, body);
        let live = self.live(sub, &c)?;
        let payload = protect::payload(Some(&mut live.channel), &sender(), now, &frame)
            .map_err(|e| e.to_string())?;
        Ok(Outgoing {
            topic: Topic::for_message(gateway, scope, frame.kind()).to_string(),
            payload,
        })
    }

    /// A plain downlink frame (the AKA challenge).
    fn plain(
        &mut self,
        gateway: &GatewayId,
        scope: Scope,
        body: Body,
        now: u64,
    ) -> Result<Outgoing, String> {
        let frame = Frame::new(self.new_id(), scope.tid(), now, body);
        let payload = protect::payload(None, &sender(), now, &frame).map_err(|e| e.to_string())?;
        Ok(Outgoing {
            topic: Topic::for_message(gateway, scope, frame.kind()).to_string(),
            payload,
        })
    }

    /// Periodic work: abandoned AKA runs, expired TIDs, reconciliation, top-ups without a result,
    /// remote commands (tariff updates, configuration changes) new or due again.
    pub fn tick(&mut self, now: u64) -> Vec<Outgoing> {
        self.runs.retain(|gw, scope, r| {
            let keep = now < r.started.saturating_add(aka::RUN_TIMEOUT);
            if !keep {
                log::info!(
                    "gateway {gw}: AKA run on scope {} abandoned at {:?}",
                    short(scope),
                    r.phase
                );
            }
            keep
        });
        self.live
            .retain(|_, l| l.channel.context().check_alive(now).is_ok());
        // Every TID record is read to find the expired ones: not every tick (a city's head-end holds
        // a million).
        if now >= self.next_tid_purge {
            self.next_tid_purge = now + TID_PURGE_EVERY_S;
            if let Err(e) = self.purge_tids(now) {
                log::error!("purging expired TIDs: {e}");
            }
        }
        let mut out = Vec::new();
        if self.reconcile_queue.is_empty() && now >= self.next_reconcile {
            self.next_reconcile = now + self.s.reconcile_interval;
            match self.store.gateways() {
                Ok(gws) => {
                    self.reconcile_queue = gws
                        .into_iter()
                        .filter(|g| g.online)
                        .map(|g| g.id)
                        .rev()
                        .collect();
                }
                Err(e) => log::error!("reconciliation: {e}"),
            }
            // Accounts are asked of the meters whose top-ups went unanswered, found from the
            // pending tokens (a few), not by asking the store about every meter of every gateway.
            match self.unanswered_by_gateway(now) {
                Ok(q) => self.account_queue = q,
                Err(e) => log::error!("reconciliation: {e}"),
            }
        }
        for _ in 0..RECONCILE_PER_TICK {
            let Some((gw, meters)) = self.account_queue.pop() else {
                break;
            };
            match self.on_gateway(&gw, now, |this| this.ask_accounts(&meters, now)) {
                Ok(o) => out.extend(o),
                Err(e) => log::error!("reconciliation of gateway {gw}: {e}"),
            }
        }
        // Gaps in the readings are looked for once an interval (or as fast as the pace allows),
        // gateway by gateway, `gap_checks_per_s` meters a tick: at least one gateway.
        let mut budget = self.s.gap_checks_per_s;
        while budget > 0 {
            let Some(gw) = self.reconcile_queue.pop() else {
                break;
            };
            let (o, looked) = self.deliver_backfill_of(&gw, now);
            out.extend(o);
            budget = budget.saturating_sub(looked.max(1) as u64);
        }
        // Shared store: every worker polls, and new purchases reach their gateway at once through the
        // worker that sold them, so the poll (of every pending token) runs a tenth as often as the
        // result timeout, not every second.
        if !self.shared || now >= self.next_delivery {
            self.next_delivery = now + (self.s.result_timeout / 10).max(1);
            out.extend(self.deliver(None, now));
        }
        out.extend(self.deliver_orders(now));
        self.take_sms(now);
        // Remote commands are few: every tick (new requests from the spool go out at once).
        out.extend(self.deliver_remote(now));
        out
    }

    /// What runs while the broker cannot be reached (the data link is what SMS stand in for): the SMS
    /// spool, at most once a second.
    pub fn offline_tick(&mut self, now: u64) {
        if self.last_offline_tick != Some(now) {
            self.last_offline_tick = Some(now);
            self.take_sms(now);
        }
    }

    fn purge_tids(&mut self, now: u64) -> Result<(), String> {
        let mut b = Batch::new();
        for (k, rec) in self
            .store
            .scan::<crate::store::TidRecord>("tid/")
            .map_err(|e| e.to_string())?
        {
            if now >= rec.expires_at {
                b.remove(k);
            }
        }
        self.store.apply(b).map_err(|e| e.to_string())
    }
}
