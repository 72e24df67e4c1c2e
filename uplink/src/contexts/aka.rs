//! The gateway side of AKA (docs/protocol.md, *Attach, AKA and security mode over MQTT*): the USIM end of
//! a run for the gateway itself (scope `gw`) and for every meter with credentials in the `aka` file, and
//! the security contexts the runs make, as the uplink's [`Channels`].
//!
//! Per subscriber: the SQN window, the current context (and the previous one, kept for downlink that was
//! sealed before the switch), the run in progress. A run goes attach → challenge → response → security
//! mode command → complete → (meters) TID assignment; each step waits at most [`STEP_TIMEOUT_S`], then the
//! run is abandoned and a new one starts after a full-jitter delay in [5 s, min(600 s, 5 s × 2ⁿ)]. Runs
//! start only while the uplink is connected (it calls [`Channels::tick`] only then), at most
//! [`MAX_METER_RUNS`] meter runs at once, and again when less than a tenth of a context's lifetime is left.
//!
//! A meter's messages are queued under its *local scope* (8 random octets chosen once, stored, never
//! sent); [`Channels::wire_scope`] maps it to the current TID when a message is sent. The attach, the
//! response and the complete are outbox entries in the attach handle's scope; the next step of the run is
//! their acknowledgement (the head-end cannot acknowledge a plain message on a scope without a context),
//! so the client deletes them itself when the run moves on or is abandoned.
//!
//! Durability (tree `uplink.aka`, one JSON record per subscriber): the SQN window is written and flushed
//! before the response that depends on it is queued; a new context before the run is declared complete.
//! COUNTs are reserved in blocks in `uplink.counts` per context, as for provisioned contexts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use concentrator_protocol::{
    event_code, AkaResponse as AkaResponseBody, AkaResult, Attach, Body, Event, Frame, Kind,
    MessageId, ModePair, ProtocolError, Scope, SecurityModeComplete, Severity, Tid, Topic,
};
use concentrator_security::aka::{self, AkaError, AkaResponse};
use concentrator_security::envelope::{Channel, Envelope, Sender, SenderKind};
use concentrator_security::security_mode::{negotiate, CipherAlg, IntegrityAlg};
use concentrator_security::sqn::SqnWindow;
use concentrator_security::suci::{self, Profile};
use concentrator_security::{Direction, Milenage, SecurityContext, SecurityMode};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::provisioned::RESERVE;
use super::store::{ContextStore, Tree, AKA_TREE};
use super::{AkaFile, Credentials};
use crate::mqtt::{AppendOutbox, Channels};

/// Keys that expire within this many seconds no longer seal messages (they would arrive expired).
pub const SEAL_MARGIN_S: u64 = 2;

/// Longest wait for the next step of a run, seconds.
pub const STEP_TIMEOUT_S: u64 = 60;
/// Most meter runs in progress at once.
pub const MAX_METER_RUNS: usize = 8;
/// Shortest and longest delay before a run after a failed one, seconds.
pub const RETRY_MIN_S: u64 = 5;
/// See [`RETRY_MIN_S`].
pub const RETRY_MAX_S: u64 = 600;
/// Accepted distance between an envelope's timestamp and our clock, seconds.
const WINDOW_S: u64 = 300;
/// Lifetime of the context that opens a security mode command (only that message uses it).
const COMMAND_CONTEXT_S: u64 = 600;

/// A stored context.
#[derive(Clone, Serialize, Deserialize)]
struct StoredCtx {
    /// Names its COUNT reservations in `uplink.counts`.
    id: [u8; 8],
    ck: [u8; 16],
    ik: [u8; 16],
    integrity: u8,
    ciphering: u8,
    fresh: u32,
    established: u64,
    lifetime: u64,
    /// Meters: the TID (the scope of its messages).
    tid: Option<[u8; 8]>,
    /// Meters: the attach handle of the run that made it (the head-end may still answer on it).
    handle: Option<[u8; 8]>,
    /// Meters: the end of the TID's validity, as assigned.
    valid_until: Option<u64>,
}

/// A subscriber's record in [`AKA_TREE`].
#[derive(Clone, Serialize, Deserialize)]
struct Record {
    /// Meters: the local scope of its queued messages.
    local: Option<[u8; 8]>,
    window: SqnWindow,
    current: Option<StoredCtx>,
    previous: Option<StoredCtx>,
}

struct Ctx {
    stored: StoredCtx,
    channel: Channel,
    /// The first COUNT not covered by the stored reservation.
    reserved: u32,
}

fn mode_of(integrity: u8, ciphering: u8) -> Option<SecurityMode> {
    Some(SecurityMode {
        integrity: IntegrityAlg::from_id(integrity)?,
        ciphering: CipherAlg::from_id(ciphering)?,
    })
}

impl Ctx {
    fn restore(stored: StoredCtx, counts: &dyn ContextStore) -> Option<Ctx> {
        let mode = mode_of(stored.integrity, stored.ciphering)?;
        let ctx = SecurityContext::new(
            mode,
            &stored.ck,
            &stored.ik,
            stored.fresh,
            stored.established,
            stored.lifetime,
        );
        let next = stored_count(counts, b's', &stored.id).unwrap_or(0);
        let last = stored_count(counts, b'r', &stored.id);
        Some(Ctx {
            channel: Channel::resume(ctx, Direction::Uplink, WINDOW_S, next, last),
            reserved: next,
            stored,
        })
    }

    fn expires(&self) -> u64 {
        self.stored.established.saturating_add(self.stored.lifetime)
    }
}

fn count_key(prefix: u8, id: &[u8; 8]) -> Vec<u8> {
    let mut k = vec![prefix, b'a'];
    k.extend_from_slice(id);
    k
}

fn stored_count(store: &dyn ContextStore, prefix: u8, id: &[u8; 8]) -> Option<u32> {
    let v = store.get(Tree::Counts, &count_key(prefix, id)).ok()??;
    <[u8; 4]>::try_from(v.as_ref()).ok().map(u32::from_be_bytes)
}

/// Where a run is.
enum Run {
    Idle,
    /// Attach sent (or AUTS sent): waiting for a challenge.
    Attached {
        handle: Scope,
        since: u64,
    },
    /// RES sent: waiting for the security mode command.
    Responded {
        handle: Scope,
        since: u64,
        ck: [u8; 16],
        ik: [u8; 16],
        /// COUNT of the command once opened.
        command_count: Option<u32>,
    },
    /// Complete queued: meters wait for the TID assignment, the gateway for the first downlink message
    /// sealed with the new context (normally the acknowledgement of the complete).
    Pending {
        handle: Scope,
        since: u64,
        ctx: Box<Ctx>,
    },
    /// The challenge failed its MAC check: the answer is going out; then the run is abandoned.
    Refused {
        since: u64,
    },
}

impl Run {
    fn handle(&self) -> Option<Scope> {
        match self {
            Run::Attached { handle, .. }
            | Run::Responded { handle, .. }
            | Run::Pending { handle, .. } => Some(*handle),
            Run::Idle | Run::Refused { .. } => None,
        }
    }

    fn since(&self) -> Option<u64> {
        match self {
            Run::Attached { since, .. }
            | Run::Responded { since, .. }
            | Run::Pending { since, .. }
            | Run::Refused { since } => Some(*since),
            Run::Idle => None,
        }
    }

    fn step(&self) -> &'static str {
        match self {
            Run::Idle => "idle",
            Run::Attached { .. } => "1 (attach sent, waiting for the challenge)",
            Run::Responded { .. } => "3 (response sent, waiting for the security mode command)",
            Run::Pending { .. } => "5 (security mode complete sent, waiting for the head-end)",
            Run::Refused { .. } => "3 (MAC failure reported)",
        }
    }
}

struct Subscriber {
    /// `gateway` or the meter number.
    name: String,
    key: Vec<u8>,
    local: Option<Tid>,
    imsi_bcd: Vec<u8>,
    milenage: Milenage,
    window: SqnWindow,
    current: Option<Ctx>,
    previous: Option<Ctx>,
    run: Run,
    /// Outbox entries of the run in progress (deleted when it moves on or ends).
    entries: Vec<MessageId>,
    failures: u32,
    retry_at: u64,
    problem: Option<String>,
}

impl Subscriber {
    fn is_gateway(&self) -> bool {
        self.local.is_none()
    }

    fn wire(&self) -> Option<Scope> {
        if self.is_gateway() {
            return Some(Scope::Gateway);
        }
        self.current
            .as_ref()
            .and_then(|c| c.stored.tid)
            .map(|t| Scope::Meter(Tid(t)))
    }

    fn record(&self) -> Record {
        Record {
            local: self.local.map(|t| t.0),
            window: self.window.clone(),
            current: self.current.as_ref().map(|c| c.stored.clone()),
            previous: self.previous.as_ref().map(|c| c.stored.clone()),
        }
    }

    fn needs_run(&self, now: u64) -> bool {
        match &self.current {
            None => true,
            Some(c) => {
                let left = c.expires().saturating_sub(now);
                left == 0 || left < c.stored.lifetime / 10
            }
        }
    }
}

/// One subscriber's AKA state, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkaState {
    /// `gateway` or the meter number.
    pub scope: String,
    /// `established`, `running step N (…)`, `waiting to retry`, `waiting for the connection`.
    pub state: String,
    /// The current TID (meters).
    pub tid: Option<String>,
    /// When the current keys expire, unix seconds.
    pub expires: Option<u64>,
    /// Why the last run failed.
    pub problem: Option<String>,
}

/// The subscribers' AKA runs and contexts: the uplink's [`Channels`] when the daemon runs AKA.
pub struct AkaChannels {
    gateway_id: String,
    profile: Profile,
    key_id: u8,
    hn_public: Vec<u8>,
    modes: Vec<SecurityMode>,
    subs: Vec<Subscriber>,
    /// Local scope → subscriber.
    locals: HashMap<Tid, usize>,
    /// Wire TIDs and attach handles → subscriber.
    wires: HashMap<Tid, usize>,
    /// SQN windows, contexts and COUNT reservations (flushed durably where it matters: a COUNT reused
    /// after a power cut would reuse a keystream).
    store: Arc<dyn ContextStore>,
    outbox: Arc<dyn AppendOutbox>,
    /// The time of the last call that brought one (the uplink ticks about every 50 ms while connected).
    now: u64,
    states: Arc<Mutex<Vec<AkaState>>>,
    published_at: u64,
    connected: bool,
}

impl std::fmt::Debug for AkaChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkaChannels")
            .field("subscribers", &self.subs.len())
            .finish_non_exhaustive()
    }
}

fn subscriber_key(meter: Option<&str>) -> Vec<u8> {
    match meter {
        None => b"gw".to_vec(),
        Some(m) => [b"m:".as_slice(), m.as_bytes()].concat(),
    }
}

fn load_record(store: &dyn ContextStore, key: &[u8]) -> Result<Option<Record>, String> {
    match store
        .get(Tree::Aka, key)
        .map_err(|e| format!("cannot read the AKA state: {e}"))?
    {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
            format!(
                "the AKA state of {} in the store is unreadable: {e}; remove tree {AKA_TREE} to attach afresh",
                String::from_utf8_lossy(key)
            )
        }),
    }
}

/// The IK of the gateway's own current security context as the AKA client stored it (`None` before
/// the first AKA run): the key of the SMS form of urgent events (docs/protocol.md, *The SMS path*).
pub fn gateway_ik(store: &dyn ContextStore) -> Option<[u8; 16]> {
    load_record(store, &subscriber_key(None))
        .ok()
        .flatten()
        .and_then(|r| r.current)
        .map(|c| c.ik)
}

/// The TID meter `meter`'s messages travel under now (its current security context's), as the AKA
/// client stored it; `None` before its first AKA run. Messages are queued under the meter's local
/// scope and relabelled when sent; what leaves by another path (the SMS form) must be relabelled too.
pub fn meter_wire_tid(store: &dyn ContextStore, meter: &str) -> Option<Tid> {
    load_record(store, &subscriber_key(Some(meter)))
        .ok()
        .flatten()
        .and_then(|r| r.current)
        .and_then(|c| c.tid)
        .map(Tid)
}

/// The local scope of every meter with credentials, chosen at random the first time and stored (and
/// flushed) in `store`; the daemon queues each meter's messages under it.
pub fn local_scopes(
    store: &dyn ContextStore,
    aka: &AkaFile,
) -> Result<HashMap<String, Tid>, String> {
    let mut out = HashMap::new();
    let mut wrote = false;
    for m in &aka.meters {
        let key = subscriber_key(Some(&m.meter));
        let local = match load_record(store, &key)? {
            Some(Record { local: Some(l), .. }) => Tid(l),
            existing => {
                let local = Tid(rand::random());
                let record = Record {
                    local: Some(local.0),
                    window: existing.map(|r| r.window).unwrap_or_default(),
                    current: None,
                    previous: None,
                };
                let v = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
                store
                    .put(Tree::Aka, &key, &v)
                    .map_err(|e| format!("cannot store a local scope: {e}"))?;
                wrote = true;
                local
            }
        };
        out.insert(m.meter.clone(), local);
    }
    if wrote {
        store
            .flush(Tree::Aka)
            .map_err(|e| format!("cannot flush the AKA state: {e}"))?;
    }
    Ok(out)
}

fn pair(m: SecurityMode) -> ModePair {
    ModePair {
        integrity: m.integrity.id(),
        ciphering: m.ciphering.id(),
    }
}

impl AkaChannels {
    /// The subscribers of `aka` (the gateway as device `gateway_id`), resumed from `store`; AKA messages
    /// are queued in `outbox`. Call [`local_scopes`] first.
    pub fn open(
        store: Arc<dyn ContextStore>,
        aka: &AkaFile,
        outbox: Arc<dyn AppendOutbox>,
        gateway_id: &str,
        now: u64,
    ) -> Result<Self, String> {
        let mut list: Vec<(Option<&str>, &Credentials)> = vec![(None, &aka.gateway)];
        list.extend(
            aka.meters
                .iter()
                .map(|m| (Some(m.meter.as_str()), &m.credentials)),
        );
        let mut subs = Vec::new();
        for (meter, c) in list {
            let key = subscriber_key(meter);
            let record = load_record(&*store, &key)?;
            let local = match (meter, record.as_ref().and_then(|r| r.local)) {
                (None, _) => None,
                (Some(_), Some(l)) => Some(Tid(l)),
                (Some(m), None) => {
                    return Err(format!(
                        "meter {m} has no local scope in the store; the uplink queue was not opened first"
                    ))
                }
            };
            let imsi_bcd = suci::msin_to_bcd(&c.imsi).map_err(|e| e.to_string())?;
            let restore = |s: Option<StoredCtx>| {
                s.and_then(|s| Ctx::restore(s, &*store))
                    .filter(|c| c.expires() > now)
            };
            let (window, current, previous) = match record {
                Some(r) => (r.window, restore(r.current), restore(r.previous)),
                None => (SqnWindow::default(), None, None),
            };
            subs.push(Subscriber {
                name: meter.unwrap_or("gateway").to_string(),
                key,
                local,
                imsi_bcd,
                milenage: Milenage::with_opc(&c.k, &c.opc),
                window,
                current,
                previous,
                run: Run::Idle,
                entries: Vec::new(),
                failures: 0,
                retry_at: 0,
                problem: None,
            });
        }
        let mut me = AkaChannels {
            gateway_id: gateway_id.to_string(),
            profile: aka.profile,
            key_id: aka.key_id,
            hn_public: aka.home_network_public_key.clone(),
            modes: aka.modes.clone(),
            subs,
            locals: HashMap::new(),
            wires: HashMap::new(),
            store,
            outbox,
            now,
            states: Default::default(),
            published_at: 0,
            connected: false,
        };
        for i in 0..me.subs.len() {
            if let Some(l) = me.subs[i].local {
                me.locals.insert(l, i);
            }
            me.index(i);
        }
        me.publish(now);
        Ok(me)
    }

    /// The AKA state of every subscriber, refreshed about once a second while the uplink runs.
    pub fn states(&self) -> Arc<Mutex<Vec<AkaState>>> {
        Arc::clone(&self.states)
    }

    /// The current TID of each meter (by meter number), for the birth inventory.
    pub fn tids(&self) -> Vec<(String, Tid)> {
        self.subs
            .iter()
            .filter_map(|s| match s.wire() {
                Some(Scope::Meter(t)) => Some((s.name.clone(), t)),
                _ => None,
            })
            .collect()
    }

    fn index(&mut self, i: usize) {
        let s = &self.subs[i];
        let mut tids = Vec::new();
        for c in [&s.current, &s.previous].into_iter().flatten() {
            tids.extend(c.stored.tid);
        }
        if let Some(c) = &s.current {
            tids.extend(c.stored.handle);
        }
        if let Some(Scope::Meter(h)) = s.run.handle() {
            tids.push(h.0);
        }
        self.wires.retain(|_, v| *v != i);
        for t in tids {
            self.wires.insert(Tid(t), i);
        }
    }

    fn by_wire(&self, wire: Scope) -> Option<usize> {
        match wire {
            Scope::Gateway => Some(0),
            Scope::Meter(t) => self.wires.get(&t).copied(),
        }
    }

    fn persist(&self, i: usize) -> Result<(), String> {
        let s = &self.subs[i];
        let v = serde_json::to_vec(&s.record()).map_err(|e| e.to_string())?;
        self.store
            .put(Tree::Aka, &s.key, &v)
            .and_then(|()| self.store.flush(Tree::Aka))
            .map_err(|e| format!("cannot store the AKA state of {}: {e}", s.name))
    }

    fn queue(&mut self, i: usize, scope: Scope, body: Body, now: u64) -> bool {
        match self.outbox.append(scope, now, body) {
            Ok(a) => {
                self.subs[i].entries.push(a.id);
                true
            }
            Err(e) => {
                log::error!("uplink: AKA of {}: cannot queue: {e}", self.subs[i].name);
                false
            }
        }
    }

    fn clear_entries(&mut self, i: usize) {
        let ids = std::mem::take(&mut self.subs[i].entries);
        if !ids.is_empty() {
            if let Err(e) = self.outbox.ack(&ids) {
                log::error!("uplink: cannot delete finished AKA messages: {e}");
            }
        }
    }

    fn event(&self, now: u64, detail: String) {
        let mut detail = detail;
        detail.truncate(detail.floor_char_boundary(256));
        let e = Event {
            at: now,
            code: event_code::VERIFICATION_FAILED,
            severity: Severity::Warning,
            detail: Some(detail),
            values: vec![],
        };
        if let Err(e) = self.outbox.append(Scope::Gateway, now, Body::Event(e)) {
            log::error!("uplink: cannot queue event 40: {e}");
        }
    }

    /// Ends the run of `i`; a failure delays the next one (full jitter, doubling per failure).
    fn abandon(&mut self, i: usize, now: u64, failure: Option<String>) {
        self.clear_entries(i);
        let s = &mut self.subs[i];
        s.run = Run::Idle;
        if let Some(why) = failure {
            s.failures = s.failures.saturating_add(1);
            let cap = RETRY_MIN_S
                .saturating_mul(1u64 << s.failures.min(16))
                .min(RETRY_MAX_S);
            let delay = rand::thread_rng().gen_range(RETRY_MIN_S..=cap.max(RETRY_MIN_S));
            s.retry_at = now + delay;
            log::warn!(
                "uplink: AKA of {} failed ({why}); next attempt in {delay} s",
                s.name
            );
            s.problem = Some(why);
        }
        self.index(i);
    }

    fn start(&mut self, i: usize, now: u64) {
        let handle = if self.subs[i].is_gateway() {
            Scope::Gateway
        } else {
            Scope::Meter(Tid(rand::random()))
        };
        let concealed = match suci::conceal(self.profile, &self.hn_public, &self.subs[i].imsi_bcd) {
            Ok(c) => c,
            Err(e) => {
                return self.abandon(i, now, Some(format!("cannot conceal the IMSI: {e}")));
            }
        };
        let body = Body::Attach(Attach {
            profile: match self.profile {
                Profile::A => 1,
                Profile::B => 2,
            },
            key_id: self.key_id,
            concealed,
        });
        self.subs[i].run = Run::Attached { handle, since: now };
        self.index(i);
        if self.queue(i, handle, body, now) {
            log::info!(
                "uplink: AKA of {}: attach queued on {handle:?}",
                self.subs[i].name
            );
        } else {
            self.abandon(i, now, Some("the outbox refused the attach".into()));
        }
    }

    fn publish(&mut self, now: u64) {
        self.published_at = now;
        let states = self
            .subs
            .iter()
            .map(|s| {
                let state = match (&s.run, &s.current) {
                    (Run::Idle, Some(c)) if c.expires() > now => "established".to_string(),
                    (Run::Idle, _) if !self.connected => "waiting for the connection".to_string(),
                    (Run::Idle, _) if s.retry_at > now => {
                        format!("waiting to retry in {} s", s.retry_at - now)
                    }
                    (Run::Idle, _) => "waiting for a run slot".to_string(),
                    (run, _) => format!("running step {}", run.step()),
                };
                AkaState {
                    scope: s.name.clone(),
                    state,
                    tid: s
                        .current
                        .as_ref()
                        .and_then(|c| c.stored.tid)
                        .map(hex::encode),
                    expires: s.current.as_ref().map(Ctx::expires),
                    problem: s.problem.clone(),
                }
            })
            .collect();
        *self.states.lock().unwrap_or_else(|p| p.into_inner()) = states;
    }

    /// The context to seal a message of `kind` with on `wire` (no side effects).
    fn seal_target(&self, wire: Scope, kind: Kind) -> Option<(usize, bool)> {
        let i = self.by_wire(wire)?;
        let s = &self.subs[i];
        if kind == Kind::SecurityModeComplete {
            if let Run::Pending { handle, .. } = &s.run {
                if *handle == wire {
                    return Some((i, true));
                }
            }
        }
        let c = s.current.as_ref()?;
        // Keys at the end of their lifetime seal nothing: the head-end would refuse the message as
        // sealed with expired keys by the time it arrives. It waits in the outbox for the renewal.
        if c.expires() <= self.now.saturating_add(SEAL_MARGIN_S) {
            return None;
        }
        let matches = s.is_gateway()
            || c.stored.tid.map(|t| Scope::Meter(Tid(t))) == Some(wire)
            || c.stored.handle.map(|t| Scope::Meter(Tid(t))) == Some(wire);
        matches.then_some((i, false))
    }

    fn reserve(store: &dyn ContextStore, ctx: &mut Ctx, name: &str) -> bool {
        let Some(next) = ctx.channel.next_count() else {
            return false;
        };
        if next >= ctx.reserved {
            let end = next.saturating_add(RESERVE);
            let written = store
                .put(
                    Tree::Counts,
                    &count_key(b's', &ctx.stored.id),
                    &end.to_be_bytes(),
                )
                .and_then(|()| store.flush(Tree::Counts));
            if let Err(e) = written {
                log::error!(
                    "uplink: cannot reserve envelope counters for {name}: {e}; its messages wait"
                );
                return false;
            }
            ctx.reserved = end;
        }
        true
    }

    fn sender(&self, wire: Scope) -> Sender {
        match wire {
            Scope::Gateway => Sender {
                kind: SenderKind::Device,
                id: self.gateway_id.as_bytes().to_vec(),
            },
            Scope::Meter(t) => Sender {
                kind: SenderKind::Tid,
                id: t.0.to_vec(),
            },
        }
    }

    /// Opens a security mode command on `wire` with the run's keys and the pair the envelope names.
    fn open_command(
        &mut self,
        i: usize,
        topic: &Topic,
        payload: &[u8],
        now: u64,
    ) -> Result<Frame, ProtocolError> {
        let no_run = || {
            ProtocolError::Envelope(concentrator_security::EnvelopeError::Malformed {
                what: "security context (no AKA run waits for a security mode command here)",
                offset: 0,
            })
        };
        let (ck, ik) = match &self.subs[i].run {
            Run::Responded { ck, ik, .. } => (*ck, *ik),
            _ => return Err(no_run()),
        };
        let env = Envelope::decode(payload)?;
        if !self.modes.contains(&env.mode) {
            return Err(ProtocolError::Envelope(
                concentrator_security::EnvelopeError::AlgorithmMismatch {
                    got: env.mode,
                    agreed: self.modes.first().copied().unwrap_or(SecurityMode::AES),
                },
            ));
        }
        let ctx = SecurityContext::new(env.mode, &ck, &ik, 0, now, COMMAND_CONTEXT_S);
        let mut ch = Channel::new(ctx, Direction::Uplink, WINDOW_S);
        let frame = concentrator_protocol::protect::open(topic, payload, Some(&mut ch), now)?;
        if let Run::Responded { command_count, .. } = &mut self.subs[i].run {
            *command_count = ch.last_received();
        }
        Ok(frame)
    }

    fn challenge(&mut self, i: usize, wire: Scope, rand: [u8; 16], autn: [u8; 16], now: u64) {
        let s = &mut self.subs[i];
        match &s.run {
            Run::Attached { handle, .. } | Run::Responded { handle, .. } if *handle == wire => {}
            _ => {
                log::warn!(
                    "uplink: AKA challenge on {wire:?} for {} ignored: no run waits for one there",
                    s.name
                );
                return;
            }
        }
        // The challenge acknowledges what was sent before it.
        self.clear_entries(i);
        let s = &mut self.subs[i];
        let mut window = s.window.clone();
        match aka::respond(&s.milenage, &mut window, &rand, &autn) {
            Ok(AkaResponse::Authenticated { res, ck, ik }) => {
                s.window = window;
                // The window is durable before RES leaves: a replayed challenge is then refused.
                if let Err(e) = self.persist(i) {
                    return self.abandon(i, now, Some(e));
                }
                self.subs[i].run = Run::Responded {
                    handle: wire,
                    since: now,
                    ck,
                    ik,
                    command_count: None,
                };
                let body = Body::AkaResponse(AkaResponseBody {
                    rand,
                    result: AkaResult::Res(res.to_vec()),
                });
                self.queue(i, wire, body, now);
            }
            Ok(AkaResponse::SyncFailure { reason, auts }) => {
                log::info!("uplink: AKA of {}: {reason}; answering with AUTS", s.name);
                s.run = Run::Attached {
                    handle: wire,
                    since: now,
                };
                let body = Body::AkaResponse(AkaResponseBody {
                    rand,
                    result: AkaResult::SyncFailure(auts.to_vec()),
                });
                self.queue(i, wire, body, now);
            }
            Err(e) => {
                let why = match e {
                    AkaError::MacFailure => format!("MAC failure: the head-end's challenge does not verify with this subscriber's K/OPc; the K/OPc of {} in aka.toml differ from the head-end's (or the challenge was forged)", s.name),
                    other => other.to_string(),
                };
                log::error!("uplink: AKA of {}: {why}", s.name);
                s.run = Run::Refused { since: now };
                s.problem = Some(why.clone());
                let body = Body::AkaResponse(AkaResponseBody {
                    rand,
                    result: AkaResult::MacFailure,
                });
                self.queue(i, wire, body, now);
                self.event(now, format!("AKA of {}: {why}", self.subs[i].name));
            }
        }
    }

    fn security_mode(
        &mut self,
        i: usize,
        wire: Scope,
        cmd: &concentrator_protocol::SecurityModeCommand,
        now: u64,
    ) {
        let (ck, ik, last) = match &self.subs[i].run {
            Run::Responded {
                handle,
                ck,
                ik,
                command_count,
                ..
            } if *handle == wire => (*ck, *ik, *command_count),
            _ => return,
        };
        let theirs: Vec<SecurityMode> = cmd
            .allowed
            .iter()
            .filter_map(|p| mode_of(p.integrity, p.ciphering))
            .collect();
        let chosen = match negotiate(&self.modes, &theirs) {
            Ok(m) => m,
            Err(e) => return self.abandon(i, now, Some(e.to_string())),
        };
        let stored = StoredCtx {
            id: rand::random(),
            ck,
            ik,
            integrity: chosen.integrity.id(),
            ciphering: chosen.ciphering.id(),
            fresh: cmd.fresh,
            established: now,
            lifetime: cmd.lifetime_s,
            tid: None,
            handle: None,
            valid_until: None,
        };
        let ctx = SecurityContext::new(chosen, &ck, &ik, cmd.fresh, now, cmd.lifetime_s);
        let channel = Channel::resume(ctx, Direction::Uplink, WINDOW_S, 0, last);
        self.clear_entries(i);
        self.subs[i].run = Run::Pending {
            handle: wire,
            since: now,
            ctx: Box::new(Ctx {
                stored,
                channel,
                reserved: 0,
            }),
        };
        let body = Body::SecurityModeComplete(SecurityModeComplete {
            chosen: pair(chosen),
        });
        self.queue(i, wire, body, now);
    }

    /// The run's new context becomes the current one (the old one is kept for downlink sealed before).
    fn complete(&mut self, i: usize, tid: Option<(Tid, u64)>, now: u64) -> bool {
        let run = std::mem::replace(&mut self.subs[i].run, Run::Idle);
        let Run::Pending { handle, ctx, .. } = run else {
            self.subs[i].run = run;
            return false;
        };
        let mut ctx = *ctx;
        if let Some((t, until)) = tid {
            ctx.stored.tid = Some(t.0);
            ctx.stored.valid_until = Some(until);
            ctx.stored.handle = handle.tid().map(|h| h.0);
        }
        let s = &mut self.subs[i];
        s.previous = s.current.take();
        s.current = Some(ctx);
        if let Err(e) = self.persist(i) {
            // Not durable: keep using it now, a restart runs AKA again.
            log::error!("uplink: {e}");
        }
        self.clear_entries(i);
        let s = &mut self.subs[i];
        s.failures = 0;
        s.problem = None;
        log::info!(
            "uplink: AKA of {} complete{}",
            s.name,
            tid.map_or(String::new(), |(t, _)| format!(", TID {t}"))
        );
        self.index(i);
        self.publish(now);
        true
    }
}

impl Channels for AkaChannels {
    fn channel(&mut self, scope: Scope) -> Option<(&mut Channel, Sender)> {
        self.seal_channel(scope, Kind::Readings)
    }

    fn seal_channel(&mut self, wire: Scope, kind: Kind) -> Option<(&mut Channel, Sender)> {
        let (i, run) = self.seal_target(wire, kind)?;
        let sender = self.sender(wire);
        let s = &mut self.subs[i];
        let ctx = if run {
            match &mut s.run {
                Run::Pending { ctx, .. } => &mut **ctx,
                _ => return None,
            }
        } else {
            s.current.as_mut()?
        };
        if !Self::reserve(&*self.store, ctx, &s.name) {
            return None;
        }
        Some((&mut ctx.channel, sender))
    }

    fn opened(&mut self, wire: Scope) {
        let Some(i) = self.by_wire(wire) else { return };
        let s = &self.subs[i];
        for c in [&s.current, &s.previous].into_iter().flatten() {
            if let Some(last) = c.channel.last_received() {
                if let Err(e) = self.store.put(
                    Tree::Counts,
                    &count_key(b'r', &c.stored.id),
                    &last.to_be_bytes(),
                ) {
                    log::error!(
                        "uplink: cannot store the last received COUNT of {}: {e}",
                        s.name
                    );
                }
            }
        }
    }

    fn wire_scope(&self, queued: Scope) -> Option<Scope> {
        match queued {
            Scope::Gateway => Some(Scope::Gateway),
            Scope::Meter(t) => match self.locals.get(&t) {
                Some(&i) => self.subs[i].wire(),
                None => Some(queued),
            },
        }
    }

    fn local_scope(&self, wire: Scope) -> Scope {
        match self.by_wire(wire).and_then(|i| self.subs[i].local) {
            Some(l) => Scope::Meter(l),
            None => wire,
        }
    }

    fn sendable(&self, queued: Scope, kind: Kind) -> bool {
        if kind.protection() == concentrator_protocol::Protection::Plain {
            return true;
        }
        self.wire_scope(queued)
            .and_then(|w| self.seal_target(w, kind))
            .is_some()
    }

    fn open(&mut self, topic: &Topic, payload: &[u8], now: u64) -> Result<Frame, ProtocolError> {
        self.now = now;
        let (wire, kind) = match topic {
            Topic::Data { scope, kind, .. } => (*scope, *kind),
            Topic::Status { .. } => {
                return concentrator_protocol::protect::open(topic, payload, None, now)
            }
        };
        if kind.protection() == concentrator_protocol::Protection::Plain {
            return concentrator_protocol::protect::open(topic, payload, None, now);
        }
        let Some(i) = self.by_wire(wire) else {
            return concentrator_protocol::protect::open(topic, payload, None, now);
        };
        if kind == Kind::SecurityModeCommand {
            if let Run::Responded { handle, .. } = &self.subs[i].run {
                if *handle == wire {
                    return self.open_command(i, topic, payload, now);
                }
            }
        }
        // The current context, then the previous one (sealed before a switch), then a run's new one.
        let mut first = None;
        let s = &mut self.subs[i];
        for c in [&mut s.current, &mut s.previous].into_iter().flatten() {
            match concentrator_protocol::protect::open(topic, payload, Some(&mut c.channel), now) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if let Run::Pending { handle, ctx, .. } = &mut s.run {
            if *handle == wire {
                match concentrator_protocol::protect::open(
                    topic,
                    payload,
                    Some(&mut ctx.channel),
                    now,
                ) {
                    Ok(f) => {
                        if s.local.is_none() {
                            // The head-end seals with the new keys: it has the complete; switch.
                            self.complete(i, None, now);
                        }
                        return Ok(f);
                    }
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
        }
        Err(first.unwrap_or({
            ProtocolError::Envelope(concentrator_security::EnvelopeError::Malformed {
                what: "security context (none for this scope yet; AKA has not completed)",
                offset: 0,
            })
        }))
    }

    fn aka(&mut self, wire: Scope, frame: &Frame, now: u64) -> bool {
        self.now = now;
        let Some(i) = self.by_wire(wire) else {
            log::warn!(
                "uplink: {:?} on {wire:?} ignored: no AKA run uses this scope",
                frame.kind()
            );
            return false;
        };
        match &frame.body {
            Body::AkaChallenge(c) => {
                self.challenge(i, wire, c.rand, c.autn, now);
                false
            }
            Body::SecurityModeCommand(c) => {
                self.security_mode(i, wire, c, now);
                false
            }
            Body::TidAssignment(t) => {
                let pending =
                    matches!(&self.subs[i].run, Run::Pending { handle, .. } if *handle == wire);
                if !pending {
                    log::warn!(
                        "uplink: TID assignment on {wire:?} for {} ignored: no run waits for one",
                        self.subs[i].name
                    );
                    return false;
                }
                self.complete(i, Some((t.tid, t.expires_at)), now)
            }
            _ => false,
        }
    }

    fn tick(&mut self, now: u64) {
        self.now = now;
        self.connected = true;
        let mut meter_runs = 0;
        for i in 0..self.subs.len() {
            if let Some(since) = self.subs[i].run.since() {
                if now.saturating_sub(since) >= STEP_TIMEOUT_S {
                    let why = match self.subs[i].run {
                        Run::Refused { .. } => self.subs[i].problem.clone().unwrap_or_default(),
                        _ => format!(
                            "no answer from the head-end within {STEP_TIMEOUT_S} s at step {}",
                            self.subs[i].run.step()
                        ),
                    };
                    self.abandon(i, now, Some(why));
                } else if i > 0 {
                    meter_runs += 1;
                }
            }
        }
        for i in 0..self.subs.len() {
            let s = &self.subs[i];
            if !matches!(s.run, Run::Idle) || s.retry_at > now || !s.needs_run(now) {
                continue;
            }
            if i > 0 {
                if meter_runs >= MAX_METER_RUNS {
                    continue;
                }
                meter_runs += 1;
            }
            self.start(i, now);
        }
        if now != self.published_at {
            self.publish(now);
        }
    }

    fn disconnected(&mut self) {
        self.connected = false;
        for i in 0..self.subs.len() {
            match self.subs[i].run {
                Run::Idle => {}
                Run::Refused { .. } => {
                    let why = self.subs[i].problem.clone();
                    self.abandon(i, self.now, why);
                }
                _ => {
                    // Not the head-end's fault: start again as soon as the connection is back.
                    self.abandon(i, 0, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Whole runs against the network side of `concentrator-security`, in memory: no broker, no sled
    //! for the contexts, the time given by hand.

    use concentrator_protocol::{AkaChallenge, Frame, GatewayId, MessageId, Protection};
    use concentrator_security::aka::AuthVector;
    use concentrator_security::sqn::SqnGenerator;

    use super::*;
    use crate::contexts::{MemContexts, MeterCredentials};
    use crate::mqtt::{Limits, Outbox, SledOutbox};

    const T0: u64 = 1_800_000_000;
    const LIFETIME: u64 = 1_000;
    const K: [u8; 16] = [0x46; 16];
    const OPC: [u8; 16] = [0x3c; 16];

    fn file(k: [u8; 16]) -> AkaFile {
        let hn = openssl::pkey::PKey::generate_x25519().unwrap();
        AkaFile {
            key_id: 1,
            profile: Profile::A,
            home_network_public_key: hn.raw_public_key().unwrap(),
            modes: vec![SecurityMode::AES],
            gateway: Credentials {
                imsi: "001010000000001".into(),
                k,
                opc: OPC,
            },
            meters: vec![MeterCredentials {
                meter: "MTR-1".into(),
                credentials: Credentials {
                    imsi: "001010000000002".into(),
                    k,
                    opc: OPC,
                },
            }],
        }
    }

    /// The head-end's side of one subscriber.
    struct Network {
        milenage: Milenage,
        sqns: SqnGenerator,
        ids: u64,
    }

    impl Network {
        fn new() -> Self {
            Network {
                milenage: Milenage::with_opc(&K, &OPC),
                sqns: SqnGenerator::new(),
                ids: 0,
            }
        }

        fn vector(&mut self) -> AuthVector {
            aka::generate_vector(&self.milenage, &mut self.sqns, rand::random(), [0x80, 0]).unwrap()
        }

        fn frame(&mut self, tid: Option<Tid>, body: Body, now: u64) -> Frame {
            self.ids += 1;
            Frame::new(MessageId::new(*b"headend0", self.ids), tid, now, body)
        }

        fn challenge(&mut self, v: &AuthVector, now: u64) -> Frame {
            let body = Body::AkaChallenge(AkaChallenge {
                rand: v.rand,
                autn: v.autn,
            });
            self.frame(None, body, now)
        }
    }

    fn head_end() -> Sender {
        Sender {
            kind: SenderKind::Device,
            id: b"head-end".to_vec(),
        }
    }

    struct Rig {
        aka: AkaChannels,
        store: Arc<MemContexts>,
        outbox: Arc<SledOutbox>,
        net: Network,
        gw: GatewayId,
    }

    impl Rig {
        fn new() -> Rig {
            let store = Arc::new(MemContexts::new());
            let db = sled::Config::new().temporary(true).open().unwrap();
            let outbox = Arc::new(SledOutbox::open(&db, Limits::default()).unwrap());
            let aka = Rig::open(&store, &outbox, T0);
            Rig {
                aka,
                store,
                outbox,
                net: Network::new(),
                gw: GatewayId::new("gw-1").unwrap(),
            }
        }

        fn open(store: &Arc<MemContexts>, outbox: &Arc<SledOutbox>, now: u64) -> AkaChannels {
            let f = file(K);
            local_scopes(&**store, &f).unwrap();
            let s: Arc<dyn ContextStore> = store.clone();
            let o: Arc<dyn AppendOutbox> = outbox.clone();
            AkaChannels::open(s, &f, o, "gw-1", now).unwrap()
        }

        /// What is queued in the gateway's own scope (its AKA messages, events), oldest first.
        fn queued(&self) -> Vec<Body> {
            self.outbox
                .list(100)
                .unwrap()
                .into_iter()
                .filter(|p| p.scope() == Scope::Gateway)
                .map(|p| p.frame.body)
                .collect()
        }

        fn last_response(&self) -> AkaResult {
            self.last_response_on(Scope::Gateway)
        }

        fn last_response_on(&self, scope: Scope) -> AkaResult {
            self.outbox
                .list(100)
                .unwrap()
                .into_iter()
                .filter(|p| p.scope() == scope)
                .map(|p| p.frame.body)
                .rev()
                .find_map(|b| match b {
                    Body::AkaResponse(r) => Some(r.result),
                    _ => None,
                })
                .expect("an AKA response is queued")
        }

        /// A whole run of the gateway's own subscriber from `now`; the head-end's new downlink channel.
        fn run_gateway(&mut self, now: u64) -> Channel {
            self.aka.tick(now);
            assert!(
                self.queued().iter().any(|b| matches!(b, Body::Attach(_))),
                "the run starts with an attach"
            );
            let v = self.net.vector();
            let challenge = self.net.challenge(&v, now);
            assert!(!self.aka.aka(Scope::Gateway, &challenge, now));
            match self.last_response() {
                AkaResult::Res(res) => aka::check_res(&v, &res).unwrap(),
                other => panic!("not a RES: {other:?}"),
            }
            self.security_mode(&v, now)
        }

        /// The security mode command sealed with the run's keys, and the acknowledgement sealed with
        /// the new context that completes the gateway's run.
        fn security_mode(&mut self, v: &AuthVector, now: u64) -> Channel {
            let cmd = Body::SecurityModeCommand(concentrator_protocol::SecurityModeCommand {
                allowed: vec![pair(SecurityMode::AES)],
                fresh: 7,
                lifetime_s: LIFETIME,
            });
            let frame = self.net.frame(None, cmd, now);
            let ctx = SecurityContext::new(SecurityMode::AES, &v.ck, &v.ik, 0, now, 600);
            let mut first = Channel::new(ctx, Direction::Downlink, 300);
            let topic = Topic::for_message(&self.gw, Scope::Gateway, Kind::SecurityModeCommand);
            let payload =
                concentrator_protocol::protect::payload(Some(&mut first), &head_end(), now, &frame)
                    .unwrap();
            let opened = self.aka.open(&topic, &payload, now).unwrap();
            self.aka.aka(Scope::Gateway, &opened, now);
            assert!(
                self.queued()
                    .iter()
                    .any(|b| matches!(b, Body::SecurityModeComplete(_))),
                "the complete is queued"
            );
            let ctx = SecurityContext::new(SecurityMode::AES, &v.ck, &v.ik, 7, now, LIFETIME);
            let mut down = Channel::resume(ctx, Direction::Downlink, 300, 1, None);
            let ack = self.net.frame(
                None,
                Body::AckDown(concentrator_protocol::Ack { ids: vec![] }),
                now,
            );
            let topic = Topic::for_message(&self.gw, Scope::Gateway, Kind::AckDown);
            let payload =
                concentrator_protocol::protect::payload(Some(&mut down), &head_end(), now, &ack)
                    .unwrap();
            self.aka.open(&topic, &payload, now).unwrap();
            down
        }

        fn can_seal(&mut self) -> bool {
            self.aka
                .seal_channel(Scope::Gateway, Kind::Readings)
                .is_some()
        }
    }

    #[test]
    fn a_gateway_run_makes_a_context_that_seals_until_its_margin_and_is_renewed_in_its_last_tenth()
    {
        let mut r = Rig::new();
        assert!(!r.can_seal(), "no context before AKA");
        assert!(!r.aka.sendable(Scope::Gateway, Kind::Readings));
        assert!(
            r.aka.sendable(Scope::Gateway, Kind::Birth),
            "plain kinds always go"
        );
        r.run_gateway(T0);
        assert!(r.can_seal());
        assert_eq!(
            r.queued().len(),
            0,
            "the run's messages are deleted once it completes"
        );
        assert_eq!(r.aka.states().lock().unwrap()[0].state, "established");

        // Renewed only in the last tenth of the lifetime.
        r.aka.tick(T0 + LIFETIME - LIFETIME / 10);
        assert!(r.queued().is_empty(), "{:?}", r.queued());
        r.aka.tick(T0 + LIFETIME - LIFETIME / 10 + 1);
        assert!(
            matches!(r.queued()[..], [Body::Attach(_)]),
            "a new run starts"
        );
        // The old keys seal until SEAL_MARGIN_S before they expire, then nothing.
        r.aka.tick(T0 + LIFETIME - SEAL_MARGIN_S - 1);
        assert!(r.can_seal());
        r.aka.tick(T0 + LIFETIME - SEAL_MARGIN_S);
        assert!(!r.can_seal(), "keys about to expire seal nothing");
        assert!(!r.aka.sendable(Scope::Gateway, Kind::Readings));
    }

    #[test]
    fn a_replayed_challenge_is_answered_with_auts_and_the_resynchronised_one_is_taken() {
        let mut r = Rig::new();
        r.aka.tick(T0);
        let v = r.net.vector();
        let challenge = r.net.challenge(&v, T0);
        r.aka.aka(Scope::Gateway, &challenge, T0);
        assert!(matches!(r.last_response(), AkaResult::Res(_)));
        // The same challenge again (a replay, or a stale vector): refused by SQN, answered with AUTS.
        r.aka.aka(Scope::Gateway, &challenge, T0 + 1);
        let auts = match r.last_response() {
            AkaResult::SyncFailure(auts) => <[u8; 14]>::try_from(auts.as_slice()).unwrap(),
            other => panic!("not AUTS: {other:?}"),
        };
        // The head-end resynchronises from AUTS; its next vector is accepted.
        aka::resynchronise(&r.net.milenage, &mut r.net.sqns, &v.rand, &auts).unwrap();
        let fresh = r.net.vector();
        let challenge = r.net.challenge(&fresh, T0 + 2);
        r.aka.aka(Scope::Gateway, &challenge, T0 + 2);
        match r.last_response() {
            AkaResult::Res(res) => aka::check_res(&fresh, &res).unwrap(),
            other => panic!("not a RES: {other:?}"),
        }
    }

    #[test]
    fn the_sqn_window_and_the_context_survive_a_restart() {
        let mut r = Rig::new();
        r.aka.tick(T0);
        let v = r.net.vector();
        let challenge = r.net.challenge(&v, T0);
        r.aka.aka(Scope::Gateway, &challenge, T0);
        r.security_mode(&v, T0);
        let (ch, _) = r.aka.seal_channel(Scope::Gateway, Kind::Readings).unwrap();
        ch.seal(
            &Sender {
                kind: SenderKind::Device,
                id: b"gw-1".to_vec(),
            },
            0,
            T0,
            b"x",
        )
        .unwrap();

        let mut again = Rig::open(&r.store, &r.outbox, T0 + 10);
        let (ch, _) = again
            .seal_channel(Scope::Gateway, Kind::Readings)
            .expect("the context is restored");
        assert!(
            ch.next_count().unwrap() >= RESERVE,
            "a restart never repeats a COUNT"
        );
        // A replay of the challenge that made it is refused by the restored window.
        again.tick(T0 + 10 + LIFETIME);
        again.aka(Scope::Gateway, &challenge, T0 + 10 + LIFETIME);
        let last = r
            .outbox
            .list(100)
            .unwrap()
            .into_iter()
            .rev()
            .find_map(|p| match p.frame.body {
                Body::AkaResponse(a) => Some(a.result),
                _ => None,
            });
        assert!(matches!(last, Some(AkaResult::SyncFailure(_))), "{last:?}");
    }

    #[test]
    fn a_forged_challenge_is_refused_reported_and_retried_after_a_delay() {
        let mut r = Rig::new();
        r.net.milenage = Milenage::with_opc(&[0x99; 16], &OPC);
        r.aka.tick(T0);
        let v = r.net.vector();
        let challenge = r.net.challenge(&v, T0);
        r.aka.aka(Scope::Gateway, &challenge, T0);
        assert_eq!(r.last_response(), AkaResult::MacFailure);
        assert!(
            r.queued().iter().any(|b| matches!(
                b,
                Body::Event(e) if e.code == event_code::VERIFICATION_FAILED
            )),
            "event 40 reports it"
        );
        r.aka.tick(T0 + 1);
        let problem = r.aka.states().lock().unwrap()[0].problem.clone().unwrap();
        assert!(problem.contains("MAC failure"), "{problem}");
        // Abandoned after the step timeout; the next attempt waits RETRY_MIN_S..=2 × RETRY_MIN_S.
        r.aka.tick(T0 + STEP_TIMEOUT_S);
        let attaches = |r: &Rig| {
            r.queued()
                .iter()
                .filter(|b| matches!(b, Body::Attach(_)))
                .count()
        };
        assert_eq!(attaches(&r), 0);
        r.aka.tick(T0 + STEP_TIMEOUT_S + 2 * RETRY_MIN_S + 1);
        assert_eq!(attaches(&r), 1, "tried again");
    }

    #[test]
    fn a_meter_is_queued_under_its_local_scope_and_sent_under_the_tid_it_is_assigned() {
        let mut r = Rig::new();
        let local = Scope::Meter(local_scopes(&*r.store, &file(K)).unwrap()["MTR-1"]);
        assert_eq!(r.aka.wire_scope(local), None, "no TID before its run");
        r.run_gateway(T0);
        r.aka.tick(T0 + 1);
        let handle = r
            .outbox
            .list(100)
            .unwrap()
            .into_iter()
            .find(|p| matches!(p.frame.body, Body::Attach(_)))
            .map(|p| p.scope())
            .expect("the meter's attach");
        assert_ne!(
            handle, local,
            "the attach handle is fresh, not the local scope"
        );
        let v = r.net.vector();
        let challenge = r.net.challenge(&v, T0 + 1);
        r.aka.aka(handle, &challenge, T0 + 1);
        assert!(matches!(r.last_response_on(handle), AkaResult::Res(_)));
        // Security mode on the handle.
        let cmd = Body::SecurityModeCommand(concentrator_protocol::SecurityModeCommand {
            allowed: vec![pair(SecurityMode::AES)],
            fresh: 1,
            lifetime_s: LIFETIME,
        });
        let frame = r.net.frame(handle.tid(), cmd, T0 + 1);
        let ctx = SecurityContext::new(SecurityMode::AES, &v.ck, &v.ik, 0, T0 + 1, 600);
        let mut first = Channel::new(ctx, Direction::Downlink, 300);
        let topic = Topic::for_message(&r.gw, handle, Kind::SecurityModeCommand);
        let payload =
            concentrator_protocol::protect::payload(Some(&mut first), &head_end(), T0 + 1, &frame)
                .unwrap();
        let opened = r.aka.open(&topic, &payload, T0 + 1).unwrap();
        r.aka.aka(handle, &opened, T0 + 1);
        assert_eq!(r.aka.wire_scope(local), None, "still no TID");
        // The TID assignment completes it: acknowledged, and the meter's messages go under the TID.
        let tid = Tid([0x5a; 8]);
        let assign = Body::TidAssignment(concentrator_protocol::TidAssignment {
            tid,
            expires_at: T0 + LIFETIME,
        });
        let frame = r.net.frame(handle.tid(), assign, T0 + 2);
        assert!(
            r.aka.aka(handle, &frame, T0 + 2),
            "the assignment is acknowledged"
        );
        assert_eq!(r.aka.wire_scope(local), Some(Scope::Meter(tid)));
        assert_eq!(r.aka.local_scope(Scope::Meter(tid)), local);
        assert_eq!(r.aka.tids(), vec![("MTR-1".to_string(), tid)]);
        assert!(r
            .aka
            .seal_channel(Scope::Meter(tid), Kind::Readings)
            .is_some());
        assert_eq!(Kind::TidAssignment.protection(), Protection::Sealed);
    }
}
