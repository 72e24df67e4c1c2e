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
use concentrator_uplink::mqtt::{AppendOutbox, Channels, Outbox, SledOutbox};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::channels::{COUNTS_TREE, RESERVE};
use crate::config::{AkaFile, Credentials};

/// Keys that expire within this many seconds no longer seal messages (they would arrive expired).
const SEAL_MARGIN_S: u64 = 2;

/// The tree of the subscribers' AKA state in the store's database.
pub const AKA_TREE: &str = "uplink.aka";
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
    fn restore(stored: StoredCtx, counts: &sled::Tree) -> Option<Ctx> {
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

fn stored_count(tree: &sled::Tree, prefix: u8, id: &[u8; 8]) -> Option<u32> {
    let v = tree.get(count_key(prefix, id)).ok()??;
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
    tree: sled::Tree,
    counts: sled::Tree,
    /// fsync after the flushes that matter (SQN windows, contexts, COUNT reservations: a COUNT reused
    /// after a power cut would reuse a keystream); sled's flush alone does not survive one.
    durable: Option<concentrator_ledger::DurableSync>,
    outbox: std::sync::Arc<SledOutbox>,
    states: std::sync::Arc<std::sync::Mutex<Vec<AkaState>>>,
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

fn load_record(tree: &sled::Tree, key: &[u8]) -> Result<Option<Record>, String> {
    match tree.get(key).map_err(|e| format!("cannot read the AKA state: {e}"))? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
            format!(
                "the AKA state of {} in the store is unreadable: {e}; remove tree {AKA_TREE} to attach afresh",
                String::from_utf8_lossy(key)
            )
        }),
    }
}

/// The local scope of every meter with credentials, chosen at random the first time and stored (and
/// flushed) in `db`; the daemon queues each meter's messages under it.
pub fn local_scopes(db: &sled::Db, aka: &AkaFile) -> Result<HashMap<String, Tid>, String> {
    let tree = db
        .open_tree(AKA_TREE)
        .map_err(|e| format!("cannot open the AKA state in the store: {e}"))?;
    let mut out = HashMap::new();
    let mut wrote = false;
    for m in &aka.meters {
        let key = subscriber_key(Some(&m.meter));
        let local = match load_record(&tree, &key)? {
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
                tree.insert(key, v)
                    .map_err(|e| format!("cannot store a local scope: {e}"))?;
                wrote = true;
                local
            }
        };
        out.insert(m.meter.clone(), local);
    }
    if wrote {
        tree.flush()
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
    /// The subscribers of `aka` (the gateway as device `gateway_id`), resumed from `db`; AKA messages are
    /// queued in `outbox`. Call [`local_scopes`] first.
    pub fn open(
        db: &sled::Db,
        aka: &AkaFile,
        outbox: std::sync::Arc<SledOutbox>,
        gateway_id: &str,
        now: u64,
    ) -> Result<Self, String> {
        let tree = db
            .open_tree(AKA_TREE)
            .map_err(|e| format!("cannot open the AKA state in the store: {e}"))?;
        let counts = db
            .open_tree(COUNTS_TREE)
            .map_err(|e| format!("cannot open the uplink counters in the store: {e}"))?;
        let mut list: Vec<(Option<&str>, &Credentials)> = vec![(None, &aka.gateway)];
        list.extend(
            aka.meters
                .iter()
                .map(|m| (Some(m.meter.as_str()), &m.credentials)),
        );
        let mut subs = Vec::new();
        for (meter, c) in list {
            let key = subscriber_key(meter);
            let record = load_record(&tree, &key)?;
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
                s.and_then(|s| Ctx::restore(s, &counts))
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
            tree,
            counts,
            durable: None,
            outbox,
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
    pub fn states(&self) -> std::sync::Arc<std::sync::Mutex<Vec<AkaState>>> {
        std::sync::Arc::clone(&self.states)
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
        self.tree
            .insert(&s.key, v)
            .and_then(|_| self.tree.flush())
            .map(|_| ())
            .map_err(|e| e.to_string())
            .and_then(|()| Self::sync(&self.durable))
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if c.expires() <= now.saturating_add(SEAL_MARGIN_S) {
            return None;
        }
        let matches = s.is_gateway()
            || c.stored.tid.map(|t| Scope::Meter(Tid(t))) == Some(wire)
            || c.stored.handle.map(|t| Scope::Meter(Tid(t))) == Some(wire);
        matches.then_some((i, false))
    }

    /// Makes every flush of the AKA state and every COUNT reservation an `fsync` of the store too.
    pub fn with_durable(mut self, durable: concentrator_ledger::DurableSync) -> Self {
        self.durable = Some(durable);
        self
    }

    fn sync(durable: &Option<concentrator_ledger::DurableSync>) -> Result<(), String> {
        durable.as_ref().map_or(Ok(()), |d| d.sync_log())
    }

    fn reserve(
        counts: &sled::Tree,
        durable: &Option<concentrator_ledger::DurableSync>,
        ctx: &mut Ctx,
        name: &str,
    ) -> bool {
        let Some(next) = ctx.channel.next_count() else {
            return false;
        };
        if next >= ctx.reserved {
            let end = next.saturating_add(RESERVE);
            let written = counts
                .insert(count_key(b's', &ctx.stored.id), &end.to_be_bytes())
                .and_then(|_| counts.flush())
                .map_err(|e| e.to_string())
                .and_then(|_| Self::sync(durable));
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
        if !Self::reserve(&self.counts, &self.durable, ctx, &s.name) {
            return None;
        }
        Some((&mut ctx.channel, sender))
    }

    fn opened(&mut self, wire: Scope) {
        let Some(i) = self.by_wire(wire) else { return };
        let s = &self.subs[i];
        for c in [&s.current, &s.previous].into_iter().flatten() {
            if let Some(last) = c.channel.last_received() {
                if let Err(e) = self
                    .counts
                    .insert(count_key(b'r', &c.stored.id), &last.to_be_bytes())
                {
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
                    self.abandon(i, crate::prepay::unix_now(), why);
                }
                _ => {
                    // Not the head-end's fault: start again as soon as the connection is back.
                    self.abandon(i, 0, None);
                }
            }
        }
    }
}
