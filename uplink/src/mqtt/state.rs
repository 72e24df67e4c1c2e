//! The uplink session as a state machine without I/O: it takes events (connected, a tick of the clock, a
//! downlink message, a publish the client could not queue, the connection's end) and returns actions
//! (subscribe, publish, acknowledge a delivery to the broker, reconnect after a wait). The MQTT client,
//! its reader thread and the sleeping are [`super::session`]'s; the clock comes in with every event, so
//! the tests below drive it without a broker and without waiting.
//!
//! What it owns: the window of messages sent and not yet acknowledged by the head-end, the listing of
//! the outboxes that refills it, the resend backoff of messages the head-end does not acknowledge, the
//! checks of every downlink message (module docs of `downlink`), the commands under way (a [`Ticket`]
//! each, with the broker's delivery acknowledged only when the command is done) and the reconnect
//! backoff. What it uses in process: the outboxes, the executed set, the security contexts and the
//! command handler the daemon hands over ([`UplinkParts`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use concentrator_protocol::{
    event_code, protect, result_code, Ack, Birth, Body, CommandResult, Death, Event as Report,
    Flow, Frame, GatewayId, Kind, MessageId, Protection, Scope, Severity, Topic,
};

use super::backoff::Backoff;
use super::downlink::{is_aka, is_command, Handled, Outcome, Ticket};
use super::outbox::{merged_where, AppendOutbox, Outbox, Pending};
use super::uplink::{UplinkConfig, UplinkParts, UplinkStatus};

/// How often the loop wakes to look for new outbox entries and for stop (and the shortest gap between
/// two listings of the outboxes when nothing was acknowledged).
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// Most outbox entries one listing looks at (entries that cannot be sent yet are skipped over).
const SCAN: usize = 20_000;
/// The outboxes are listed again at least this often while there is room in the window.
const RELIST: Duration = Duration::from_secs(1);
/// How often a scope without a security context is logged.
const NO_CONTEXT_LOG: Duration = Duration::from_secs(600);
/// The longest wait between two sends of a message the head-end does not acknowledge.
const MAX_RESEND: Duration = Duration::from_secs(3600);

/// The clock as the machine sees it: monotonic time for its timers, wall-clock time (unix seconds) for
/// what it writes into messages and envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) mono: Instant,
    pub(crate) unix: u64,
}

impl Now {
    /// The system's clocks.
    pub(crate) fn system() -> Now {
        Now {
            mono: Instant::now(),
            unix: concentrator_protocol::unix_now(),
        }
    }
}

/// What happened. `D` is the broker's delivery of a downlink message (rumqttc's `Publish` in the loop),
/// handed back in [`Action::Ack`] when the message was dealt with.
#[derive(Debug)]
pub(crate) enum Event<'a, D> {
    /// The broker accepted connection number `number`.
    Connected { number: u32 },
    /// A turn of the loop: in-flight messages past their time, commands that completed, the security
    /// contexts' timers, and a refill of the window.
    Tick,
    /// A message arrived on `topic`.
    Incoming {
        topic: &'a str,
        payload: &'a [u8],
        delivery: D,
    },
    /// The client could not queue the publish of outbox entry `id` (its request queue is full); it is
    /// listed again.
    NotQueued(MessageId),
    /// The connection ended after being up for `up` (`None`: it never came up).
    Lost { up: Option<Duration> },
    /// The uplink stops: no reconnect.
    Stopped,
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action<D> {
    /// Subscribe to the gateway's downlink, QoS 1.
    Subscribe(String),
    /// Publish at QoS 1. `entry`: the outbox entry it carries (tell the machine
    /// [`Event::NotQueued`] when the client refuses it); `what` names it for a log line otherwise.
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        entry: Option<MessageId>,
        what: &'static str,
    },
    /// Acknowledge this delivery to the broker (it may forget the message).
    Ack(D),
    /// Connect again after this wait.
    ReconnectAfter(Duration),
}

/// Whether a downlink message was dealt with (the broker gets its PUBACK) or dropped before it could be.
enum Taken {
    Yes,
    No,
    /// Under way: acknowledged to the broker when the command is done.
    Later,
}

/// A command being carried out elsewhere, with the broker's delivery to acknowledge when it is done.
struct Running<D> {
    id: MessageId,
    kind: Kind,
    scope: Scope,
    ticket: Ticket,
    delivery: Option<D>,
}

/// Messages the head-end has not acknowledged after being sent: each is sent again after a wait that
/// doubles with every unacknowledged send (the resend interval, then twice that, up to [`MAX_RESEND`]),
/// so a message the head-end will never take cannot hold the window against the others. In memory: a
/// restart sends everything unacknowledged once more, which the head-end's dedup by id absorbs.
#[derive(Debug, Default)]
struct Resends {
    by_id: HashMap<MessageId, (u32, Instant)>,
}

impl Resends {
    /// `id` was not acknowledged in time at `now`: when it may go again, and how often it went.
    fn expired(&mut self, id: MessageId, resend_after: Duration, now: Instant) -> u32 {
        let e = self.by_id.entry(id).or_insert((0, now));
        e.0 += 1;
        let wait = resend_after
            .saturating_mul(1u32 << e.0.saturating_sub(1).min(8))
            .min(MAX_RESEND);
        e.1 = now + wait;
        e.0
    }

    /// Whether `id` is waiting out its backoff at `now`.
    fn waiting(&self, id: &MessageId, now: Instant) -> bool {
        self.by_id.get(id).is_some_and(|(_, at)| now < *at)
    }

    fn acknowledged(&mut self, id: &MessageId) {
        self.by_id.remove(id);
    }

    /// The connection ended: what waits out a backoff goes again at once on the next connection, in
    /// queue order (it may never have reached the head-end; the counts, and so the next waits, stay).
    fn reconnected(&mut self, now: Instant) {
        for (_, at) in self.by_id.values_mut() {
            *at = (*at).min(now);
        }
    }

    /// Messages sent at least three times without an acknowledgement.
    fn stuck(&self) -> usize {
        self.by_id.values().filter(|(n, _)| *n >= 3).count()
    }
}

/// The counters the machine keeps for [`UplinkStatus`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) in_flight: usize,
    pub(crate) refused: u64,
    pub(crate) executed: u64,
    pub(crate) repeats: u64,
    pub(crate) temporary: u64,
    pub(crate) unacknowledged_resends: usize,
    pub(crate) running: usize,
}

impl Counters {
    /// Copies the machine's counters into `status` (the loop keeps the connection's own fields).
    pub(crate) fn fill(&self, status: &mut UplinkStatus) {
        status.sent = self.sent;
        status.acked = self.acked;
        status.in_flight = self.in_flight;
        status.refused = self.refused;
        status.executed = self.executed;
        status.repeats = self.repeats;
        status.temporary = self.temporary;
        status.unacknowledged_resends = self.unacknowledged_resends;
        status.running = self.running;
    }
}

/// The session's state across connections.
pub(crate) struct Machine<D> {
    gateway: GatewayId,
    window: usize,
    resend_after: Duration,
    software: String,
    started_at: u64,
    backoff: Backoff,
    parts: UplinkParts,
    /// Sent and not acknowledged by the head-end, with when it was sent (this connection).
    in_flight: HashMap<MessageId, Instant>,
    /// Listed, not yet sent.
    ready: VecDeque<Pending>,
    listed_at: Option<Instant>,
    /// The uplink outbox's length at the last listing (a change means new entries to list).
    listed_len: Option<u64>,
    /// Acknowledgements arrived since the last listing (room, or new entries behind it).
    freed: bool,
    /// Scopes without a security context, and when that was last logged.
    unsealable: HashMap<Scope, Instant>,
    /// Messages sent without an acknowledgement, across connections.
    resends: Resends,
    /// Commands under way (their answers and broker acknowledgements wait for them).
    running: Vec<Running<D>>,
    counters: Counters,
}

impl<D> std::fmt::Debug for Machine<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("in_flight", &self.in_flight.len())
            .field("ready", &self.ready.len())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl<D> Machine<D> {
    pub(crate) fn new(config: &UplinkConfig, parts: UplinkParts) -> Self {
        Machine {
            gateway: config.gateway.clone(),
            window: config.window,
            resend_after: config.resend_after,
            software: config.software.clone(),
            started_at: config.started_at,
            backoff: config.backoff.clone(),
            parts,
            in_flight: HashMap::new(),
            ready: VecDeque::new(),
            listed_at: None,
            listed_len: None,
            freed: true,
            unsealable: HashMap::new(),
            resends: Resends::default(),
            running: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// The counters for the status.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The death message of connection `number`: its will, and what a stop publishes itself.
    pub(crate) fn death(&self, number: u32, now: Now) -> Vec<u8> {
        self.plain(Body::Death(Death { session: number }), now)
            .unwrap_or_default()
    }

    /// The status topic (birth and death, retained).
    pub(crate) fn status_topic(&self) -> String {
        Topic::status(&self.gateway).to_string()
    }

    /// One event at `now`, and what to do about it.
    pub(crate) fn handle(&mut self, event: Event<'_, D>, now: Now) -> Vec<Action<D>> {
        let mut out = Vec::new();
        match event {
            Event::Connected { number } => self.connected(number, now, &mut out),
            Event::Tick => {
                self.expire(now);
                self.complete(now, &mut out);
                self.parts.channels.tick(now.unix);
                self.refill(now, &mut out);
            }
            Event::Incoming {
                topic,
                payload,
                delivery,
            } => {
                // A message dropped before it could be carried out is not acknowledged to the broker,
                // which delivers it again after the next reconnect (and the head-end resends it).
                match self.downlink(topic, payload, now, &mut out) {
                    Taken::Yes => out.push(Action::Ack(delivery)),
                    Taken::Later => {
                        if let Some(r) = self.running.last_mut() {
                            r.delivery = Some(delivery);
                        }
                    }
                    Taken::No => {}
                }
            }
            Event::NotQueued(id) => {
                // rumqttc's request queue is full: it is listed and sent again on a later turn.
                if self.in_flight.remove(&id).is_some() {
                    self.counters.sent = self.counters.sent.saturating_sub(1);
                }
                self.counters.in_flight = self.in_flight.len();
                self.freed = true;
            }
            Event::Lost { up } => {
                self.ended();
                self.resends.reconnected(now.mono);
                self.backoff.connection_ended(up.unwrap_or_default());
                out.push(Action::ReconnectAfter(self.backoff.next_delay()));
            }
            Event::Stopped => self.ended(),
        }
        out
    }

    /// Forgets what belonged to the connection that ended (the outboxes keep every message).
    fn ended(&mut self) {
        self.parts.channels.disconnected();
        self.in_flight.clear();
        self.ready.clear();
        self.listed_at = None;
        self.listed_len = None;
        self.freed = true;
        self.unsealable.clear();
        // Commands under way are dropped with their deliveries: the broker delivers them again.
        self.running.clear();
        self.counters.in_flight = 0;
        self.counters.running = 0;
    }

    fn connected(&mut self, number: u32, now: Now, out: &mut Vec<Action<D>>) {
        out.push(Action::Subscribe(Topic::gateway_subscription(
            &self.gateway,
        )));
        let (modem, meters) = (self.parts.inventory)();
        let outbox_len = self.parts.outbox.len().unwrap_or(0);
        let body = Body::Birth(Birth {
            software: self.software.clone(),
            started_at: self.started_at,
            session: number,
            modem,
            meters,
            outbox_len,
        });
        if let Some(payload) = self.plain(body, now) {
            out.push(Action::Publish {
                topic: self.status_topic(),
                payload,
                retain: true,
                entry: None,
                what: "the birth message",
            });
        }
        if let Err(e) = self.parts.outbox.report_drops() {
            log::error!("uplink: {e}");
        }
    }

    fn plain(&self, body: Body, now: Now) -> Option<Vec<u8>> {
        let id = self.parts.outbox.fresh_id().ok()?;
        Frame::new(id, None, now.unix, body).encode().ok()
    }

    /// Forgets in-flight messages the head-end has not acknowledged in time, so they are sent again.
    fn expire(&mut self, now: Now) {
        let limit = self.resend_after;
        let expired: Vec<MessageId> = self
            .in_flight
            .iter()
            .filter(|(_, at)| now.mono.saturating_duration_since(**at) >= limit)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut most = 0;
        for id in &expired {
            self.in_flight.remove(id);
            most = most.max(self.resends.expired(*id, limit, now.mono));
        }
        log::info!(
            "uplink: {} messages not acknowledged within {} s; sending them again after a backoff",
            expired.len(),
            limit.as_secs()
        );
        if most >= 3 {
            log::warn!(
                "uplink: {} messages have gone {most} times or more without an acknowledgement from the head-end; it may be refusing them (see its status)",
                self.resends.stuck()
            );
        }
        self.counters.unacknowledged_resends = self.resends.stuck();
        self.counters.in_flight = self.in_flight.len();
        self.freed = true;
    }

    fn outboxes(&self) -> Vec<&dyn Outbox> {
        let mut v: Vec<&dyn Outbox> = vec![&*self.parts.outbox];
        v.extend(self.parts.others.iter().map(|o| &**o as &dyn Outbox));
        v
    }

    fn refill(&mut self, now: Now, out: &mut Vec<Action<D>>) {
        let window = self.window;
        if self.in_flight.len() >= window {
            return;
        }
        let since = |t: Instant| now.mono.saturating_duration_since(t);
        let stale = self.listed_at.is_none_or(|t| since(t) >= RELIST);
        let len = self.parts.outbox.len().ok();
        // Between the 1 s listings, list again only when something changed: entries that cannot be sent
        // yet (a meter before its AKA run) would otherwise be read again every turn.
        let quiet = self.listed_at.is_none_or(|t| since(t) >= TICK) && len != self.listed_len;
        if stale || (self.ready.is_empty() && (self.freed || quiet)) {
            let limit = 4 * window + self.in_flight.len();
            let channels = &*self.parts.channels;
            let keep = |p: &Pending| channels.sendable(p.scope(), p.frame.kind());
            let list = merged_where(&self.outboxes(), limit, SCAN, &keep);
            self.listed_len = len;
            self.ready = list
                .into_iter()
                .filter(|p| {
                    !self.in_flight.contains_key(&p.id())
                        && !self.resends.waiting(&p.id(), now.mono)
                })
                .collect();
            self.listed_at = Some(now.mono);
            self.freed = false;
        }
        while self.in_flight.len() < window {
            let Some(p) = self.ready.pop_front() else {
                break;
            };
            if self.in_flight.contains_key(&p.id()) {
                continue;
            }
            let Some((topic, payload)) = self.seal(p.scope(), &p.frame, now) else {
                continue;
            };
            self.in_flight.insert(p.id(), now.mono);
            self.counters.sent += 1;
            out.push(Action::Publish {
                topic: topic.to_string(),
                payload,
                retain: false,
                entry: Some(p.id()),
                what: "an outbox message",
            });
        }
        self.counters.in_flight = self.in_flight.len();
    }

    /// The topic and payload of `frame`, queued under `queued`: relabelled to the scope it travels in now
    /// (a meter's current TID), then sealed with that scope's next COUNT, or plain for plain kinds.
    fn seal(&mut self, queued: Scope, frame: &Frame, now: Now) -> Option<(Topic, Vec<u8>)> {
        let kind = frame.kind();
        let scope = match self.parts.channels.wire_scope(queued) {
            Some(s) => s,
            None if kind.protection() == Protection::Plain => queued,
            None => {
                self.no_context(queued, now);
                return None;
            }
        };
        let relabelled;
        let frame = if scope.tid() == frame.header.tid {
            frame
        } else {
            let mut f = frame.clone();
            f.header.tid = scope.tid();
            relabelled = f;
            &relabelled
        };
        let result = if kind.protection() == Protection::Plain {
            frame.encode()
        } else {
            let Some((ch, sender)) = self.parts.channels.seal_channel(scope, kind) else {
                self.no_context(queued, now);
                return None;
            };
            protect::payload(Some(ch), &sender, now.unix, frame)
        };
        match result {
            Ok(p) => Some((Topic::for_message(&self.gateway, scope, kind), p)),
            Err(e) => {
                log::error!("uplink: cannot seal message {}: {e}", frame.header.id);
                None
            }
        }
    }

    fn no_context(&mut self, scope: Scope, now: Now) {
        let due = self
            .unsealable
            .get(&scope)
            .is_none_or(|t| now.mono.saturating_duration_since(*t) >= NO_CONTEXT_LOG);
        if due {
            log::warn!("uplink: no security context for {scope}; its messages wait in the outbox until AKA completes");
            self.unsealable.insert(scope, now.mono);
        }
    }

    /// A message that does not wait in the outbox (acknowledgements of downlink messages).
    fn publish_now(&mut self, scope: Scope, body: Body, now: Now, out: &mut Vec<Action<D>>) {
        let Ok(id) = self.parts.outbox.fresh_id() else {
            return;
        };
        let frame = Frame::new(id, scope.tid(), now.unix, body);
        if let Some((topic, payload)) = self.seal(scope, &frame, now) {
            out.push(Action::Publish {
                topic: topic.to_string(),
                payload,
                retain: false,
                entry: None,
                what: "an acknowledgement",
            });
        }
    }

    /// Queues an answer and lists the outboxes again at the next turn, so a command's result (and the
    /// receipt the command wrote) leave at once instead of at the next periodic listing.
    fn queue(&mut self, scope: Scope, body: Body, now: Now) {
        match self.parts.outbox.append(scope, now.unix, body) {
            Ok(_) => self.freed = true,
            Err(e) => log::error!("uplink: cannot queue an answer: {e}"),
        }
    }

    /// One downlink message: every check, then at most one execution (module docs of `downlink`).
    /// Whether the message was dealt with (carried out, answered or refused for good), so that the broker
    /// may forget it.
    fn downlink(
        &mut self,
        topic_name: &str,
        payload: &[u8],
        now: Now,
        out: &mut Vec<Action<D>>,
    ) -> Taken {
        let topic = match Topic::parse(topic_name) {
            Ok(t @ Topic::Data { .. }) if t.gateway() == &self.gateway => t,
            Ok(_) | Err(_) => {
                log::warn!(
                    "uplink: ignored a message on {topic_name:?}: not this gateway's downlink"
                );
                return Taken::Yes;
            }
        };
        let Topic::Data {
            scope,
            kind,
            flow: Flow::Down,
            ..
        } = topic
        else {
            log::warn!("uplink: ignored an uplink-direction message on {topic_name:?}");
            return Taken::Yes;
        };
        let frame = match self.parts.channels.open(&topic, payload, now.unix) {
            Ok(f) => f,
            Err(e) => {
                self.refuse(scope, kind, topic_name, payload, &e.to_string(), now);
                return Taken::Yes;
            }
        };
        let id = frame.header.id;
        if is_aka(kind) {
            // The AKA client answers through the outbox; only the TID assignment is acknowledged.
            let acknowledge = self.parts.channels.aka(scope, &frame, now.unix);
            self.parts.channels.opened(scope);
            if acknowledge {
                self.publish_now(scope, Body::AckUp(Ack { ids: vec![id] }), now, out);
            }
            return Taken::Yes;
        }
        if let Body::AckDown(Ack { ids }) = &frame.body {
            let mut n = 0;
            for ob in self.outboxes() {
                match ob.ack(ids) {
                    Ok(k) => n += k,
                    Err(e) => log::error!("uplink: {e}"),
                }
            }
            for i in ids {
                self.in_flight.remove(i);
                self.resends.acknowledged(i);
            }
            self.freed = true;
            self.counters.acked += n as u64;
            self.counters.unacknowledged_resends = self.resends.stuck();
            self.counters.in_flight = self.in_flight.len();
            self.parts.channels.opened(scope);
            return Taken::Yes;
        }
        if self.running.iter().any(|r| r.id == id) {
            log::info!("uplink: {kind} {id} is still being carried out; it is answered when done");
            self.parts.channels.opened(scope);
            return Taken::Yes;
        }
        match self.parts.executed.result_of(&id) {
            Ok(Some(_)) => {
                log::info!("uplink: {kind} {id} was already carried out; answering, not executing");
                self.counters.repeats += 1;
                self.parts.channels.opened(scope);
                self.answer(scope, kind, id, result_code::ALREADY_DONE, None, now, out);
                return Taken::Yes;
            }
            Ok(None) => {}
            Err(e) => {
                // Cannot tell whether it ran: do not run it, and do not let the broker forget it.
                log::error!("uplink: {e}; {kind} {id} not carried out; it is taken again when delivered again");
                return Taken::No;
            }
        }
        let local = self.parts.channels.local_scope(scope);
        self.parts.channels.opened(scope);
        match self.parts.downlink.start(local, &frame) {
            Handled::Now(outcome) => {
                self.finish(scope, kind, id, outcome, now, out);
                Taken::Yes
            }
            Handled::Later(ticket) => {
                let mut ticket = ticket;
                ticket.started(now.mono);
                self.running.push(Running {
                    id,
                    kind,
                    scope,
                    ticket,
                    delivery: None,
                });
                self.counters.running = self.running.len();
                Taken::Later
            }
        }
    }

    /// Answers the commands whose tickets completed, and acknowledges their deliveries to the broker.
    fn complete(&mut self, now: Now, out: &mut Vec<Action<D>>) {
        if self.running.is_empty() {
            return;
        }
        let mut still = Vec::with_capacity(self.running.len());
        for mut r in std::mem::take(&mut self.running) {
            match r.ticket.poll_at(now.mono) {
                Some(outcome) => {
                    self.finish(r.scope, r.kind, r.id, outcome, now, out);
                    if let Some(d) = r.delivery.take() {
                        out.push(Action::Ack(d));
                    }
                }
                None => still.push(r),
            }
        }
        self.running = still;
        self.counters.running = self.running.len();
    }

    /// Records a command's outcome (when final) and answers it.
    fn finish(
        &mut self,
        scope: Scope,
        kind: Kind,
        id: MessageId,
        outcome: Outcome,
        now: Now,
        out: &mut Vec<Action<D>>,
    ) {
        // Only a final outcome is remembered: a temporary one (no account yet, ledger busy, meter
        // offline) must run again when the head-end sends the same command again.
        if result_code::is_final(outcome.code) {
            if let Err(e) = self.parts.executed.record(&id, outcome.code) {
                log::error!("uplink: {e}; {kind} {id} ran but could not be recorded");
            }
        } else {
            log::info!(
                "uplink: {kind} {id} not carried out for now ({}); it runs again when sent again",
                outcome.reason.as_deref().unwrap_or("temporary failure")
            );
            self.counters.temporary += 1;
        }
        self.counters.executed += 1;
        self.answer(scope, kind, id, outcome.code, outcome.reason, now, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        scope: Scope,
        kind: Kind,
        id: MessageId,
        code: u16,
        reason: Option<String>,
        now: Now,
        out: &mut Vec<Action<D>>,
    ) {
        if is_command(kind) {
            let body = Body::CommandResult(CommandResult {
                command: id,
                code,
                reason,
            });
            let local = self.parts.channels.local_scope(scope);
            self.queue(local, body, now);
        } else {
            self.publish_now(scope, Body::AckUp(Ack { ids: vec![id] }), now, out);
        }
    }

    /// A message that failed a check: logged, reported (event 40, and a command result when the id of a
    /// plain frame can be read), never acted on.
    fn refuse(
        &mut self,
        scope: Scope,
        kind: Kind,
        topic: &str,
        payload: &[u8],
        why: &str,
        now: Now,
    ) {
        log::warn!("uplink: refused {kind} on {topic}: {why}");
        self.counters.refused += 1;
        let mut detail = format!("{kind} on {topic}: {why}");
        detail.truncate(detail.floor_char_boundary(256));
        let event = Body::Event(Report {
            at: now.unix,
            code: event_code::VERIFICATION_FAILED,
            severity: Severity::Warning,
            detail: Some(detail),
            values: vec![],
        });
        self.queue(Scope::Gateway, event, now);
        if kind.protection() == Protection::Plain {
            if let Ok(f) = Frame::decode(payload) {
                if is_command(kind) {
                    let body = Body::CommandResult(CommandResult {
                        command: f.header.id,
                        code: result_code::VERIFICATION_FAILED,
                        reason: Some(why.chars().take(200).collect()),
                    });
                    let local = self.parts.channels.local_scope(scope);
                    self.queue(local, body, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The session without a broker: events in, actions out, the clock moved by hand.

    use std::sync::{Arc, Mutex};

    use concentrator_protocol::{MessageId, ModemReport, Quantity, Reading, Readings, TopUp};
    use concentrator_security::envelope::{Channel, Sender, SenderKind};
    use concentrator_security::{Direction, SecurityContext, SecurityMode};

    use super::*;
    use crate::mqtt::{
        ChannelTable, Downlink, Executed, Limits, SledOutbox, TlsIdentity, DEFAULT_CAPACITY,
    };

    const T0: u64 = 1_800_000_000;
    const RESEND: Duration = Duration::from_secs(10);

    fn tid(n: u8) -> concentrator_protocol::Tid {
        concentrator_protocol::Tid([0x3c, 0x91, 0, 0, 0, 0, 0, n])
    }

    fn context(scope: Scope) -> SecurityContext {
        let mut ck = [0x11u8; 16];
        let mut ik = [0x22u8; 16];
        if let Scope::Meter(t) = scope {
            ck[..8].copy_from_slice(&t.0);
            ik[8..].copy_from_slice(&t.0);
        }
        SecurityContext::new(SecurityMode::AES, &ck, &ik, 0, T0 - 10, 86_400)
    }

    /// The head-end's end: seals downlink messages.
    struct HeadEnd {
        channels: HashMap<Scope, Channel>,
        gateway: GatewayId,
        next: u64,
    }

    impl HeadEnd {
        fn seal(
            &mut self,
            scope: Scope,
            id: MessageId,
            body: Body,
            unix: u64,
        ) -> (String, Vec<u8>) {
            let frame = Frame::new(id, scope.tid(), unix, body);
            let kind = frame.kind();
            let ch = self
                .channels
                .entry(scope)
                .or_insert_with(|| Channel::new(context(scope), Direction::Downlink, 300));
            let sender = Sender {
                kind: SenderKind::Device,
                id: b"head-end".to_vec(),
            };
            let payload = protect::payload(Some(ch), &sender, unix, &frame).unwrap();
            let topic = Topic::for_message(&self.gateway, scope, kind).to_string();
            (topic, payload)
        }

        fn fresh(&mut self) -> MessageId {
            self.next += 1;
            MessageId::new(*b"headend0", self.next)
        }

        fn ack(&mut self, scope: Scope, ids: Vec<MessageId>, unix: u64) -> (String, Vec<u8>) {
            let id = self.fresh();
            self.seal(scope, id, Body::AckDown(Ack { ids }), unix)
        }
    }

    /// What the command handler does, set by the test.
    #[derive(Clone, Default)]
    struct Handler {
        calls: Arc<Mutex<Vec<MessageId>>>,
        /// `None`: hand back a ticket completed through `done`.
        now: Arc<Mutex<Option<Outcome>>>,
        done: Arc<Mutex<HashMap<MessageId, Outcome>>>,
    }

    impl Downlink for Handler {
        fn handle(&mut self, _: Scope, _: &Frame) -> Outcome {
            Outcome::done()
        }

        fn start(&mut self, _: Scope, frame: &Frame) -> Handled {
            let id = frame.header.id;
            self.calls.lock().unwrap().push(id);
            match self.now.lock().unwrap().clone() {
                Some(o) => Handled::Now(o),
                None => {
                    let done = self.done.clone();
                    Handled::Later(Ticket::new(
                        Duration::from_secs(20),
                        Outcome::failed(result_code::TRY_LATER, "the ledger did not answer"),
                        move || done.lock().unwrap().remove(&id),
                    ))
                }
            }
        }
    }

    struct Rig {
        m: Machine<u32>,
        head: HeadEnd,
        outbox: Arc<SledOutbox>,
        executed: Arc<Executed>,
        handler: Handler,
        now: Now,
        deliveries: u32,
    }

    impl Rig {
        fn new(window: usize) -> Rig {
            let db = sled::Config::new().temporary(true).open().unwrap();
            let outbox = Arc::new(SledOutbox::open(&db, Limits::default()).unwrap());
            let executed = Arc::new(Executed::open(&db, DEFAULT_CAPACITY).unwrap());
            let gateway = GatewayId::new("gw-1").unwrap();
            let mut channels = ChannelTable::new();
            channels.insert(
                Scope::Gateway,
                Channel::new(context(Scope::Gateway), Direction::Uplink, 300),
                Sender {
                    kind: SenderKind::Device,
                    id: b"gw-1".to_vec(),
                },
            );
            let meter = Scope::Meter(tid(1));
            channels.insert(
                meter,
                Channel::new(context(meter), Direction::Uplink, 300),
                Sender {
                    kind: SenderKind::Tid,
                    id: tid(1).0.to_vec(),
                },
            );
            let handler = Handler::default();
            *handler.now.lock().unwrap() = Some(Outcome::done());
            let parts = UplinkParts {
                outbox: outbox.clone(),
                others: vec![],
                executed: executed.clone(),
                channels: Box::new(channels),
                downlink: Box::new(handler.clone()),
                inventory: Box::new(|| (ModemReport::default(), vec![])),
            };
            let tls = TlsIdentity {
                ca_pem: vec![],
                cert_pem: vec![],
                key_pem: vec![],
            };
            let mut config = UplinkConfig::new(gateway.clone(), "broker.invalid", 8883, tls);
            config.window = window;
            config.resend_after = RESEND;
            let mut rig = Rig {
                m: Machine::new(&config, parts),
                head: HeadEnd {
                    channels: HashMap::new(),
                    gateway,
                    next: 0,
                },
                outbox,
                executed,
                handler,
                now: Now {
                    mono: Instant::now(),
                    unix: T0,
                },
                deliveries: 0,
            };
            let actions = rig.on(Event::Connected { number: 1 });
            assert!(matches!(&actions[0], Action::Subscribe(t) if t.contains("gw-1")));
            assert!(
                matches!(
                    &actions[1],
                    Action::Publish {
                        retain: true,
                        entry: None,
                        ..
                    }
                ),
                "the birth follows the subscription"
            );
            rig
        }

        fn on(&mut self, event: Event<'_, u32>) -> Vec<Action<u32>> {
            self.m.handle(event, self.now)
        }

        fn later(&mut self, by: Duration) {
            self.now.mono += by;
            self.now.unix += by.as_secs();
        }

        fn tick(&mut self) -> Vec<MessageId> {
            let actions = self.on(Event::Tick);
            sent(&actions)
        }

        /// Delivers a downlink message; the actions and the delivery's token.
        fn deliver(&mut self, msg: (String, Vec<u8>)) -> (Vec<Action<u32>>, u32) {
            self.deliveries += 1;
            let d = self.deliveries;
            let actions = self.m.handle(
                Event::Incoming {
                    topic: &msg.0,
                    payload: &msg.1,
                    delivery: d,
                },
                self.now,
            );
            (actions, d)
        }

        fn reading(&self, n: i64) -> MessageId {
            let body = Body::Readings(Readings {
                readings: vec![Reading {
                    at: T0,
                    quantity: Quantity::EnergyImportWh,
                    value: n,
                    exponent: 0,
                }],
            });
            self.outbox
                .append(Scope::Meter(tid(1)), T0, body)
                .unwrap()
                .id
        }

        fn top_up(&mut self, id: MessageId) -> (String, Vec<u8>) {
            let body = Body::TopUp(TopUp {
                token: vec![1, 2, 3],
            });
            let unix = self.now.unix;
            self.head.seal(Scope::Meter(tid(1)), id, body, unix)
        }

        /// The command results queued in the outbox: (command, code).
        fn results(&self) -> Vec<(MessageId, u16)> {
            self.outbox
                .list(1000)
                .unwrap()
                .into_iter()
                .filter_map(|p| match p.frame.body {
                    Body::CommandResult(r) => Some((r.command, r.code)),
                    _ => None,
                })
                .collect()
        }
    }

    fn sent(actions: &[Action<u32>]) -> Vec<MessageId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish {
                    entry: Some(id), ..
                } => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn acks(actions: &[Action<u32>]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Ack(d) => Some(*d),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_an_acknowledgement_makes_room() {
        let mut r = Rig::new(4);
        let ids: Vec<MessageId> = (0..10).map(|n| r.reading(n)).collect();
        assert_eq!(r.tick(), ids[..4].to_vec(), "queue order, four at most");
        assert_eq!(r.m.counters().in_flight, 4);
        r.later(TICK);
        assert!(r.tick().is_empty(), "a full window sends nothing");

        let ack = r.head.ack(Scope::Meter(tid(1)), ids[..2].to_vec(), T0);
        let (actions, d) = r.deliver(ack);
        assert_eq!(
            acks(&actions),
            vec![d],
            "the broker's delivery is acknowledged"
        );
        assert_eq!(r.m.counters().acked, 2);
        assert_eq!(
            r.outbox.len().unwrap(),
            8,
            "acknowledged entries are deleted"
        );
        r.later(TICK);
        assert_eq!(r.tick(), ids[4..6].to_vec(), "the room refills at once");
        assert_eq!(r.m.counters().sent, 6);
    }

    #[test]
    fn a_message_the_head_end_does_not_acknowledge_goes_again_after_a_doubling_wait() {
        let mut r = Rig::new(4);
        let id = r.reading(1);
        assert_eq!(r.tick(), vec![id]);
        r.later(RESEND - Duration::from_millis(1));
        assert!(r.tick().is_empty(), "not before the resend interval");
        r.later(Duration::from_millis(1));
        assert!(r.tick().is_empty(), "expired, then a wait of one interval");
        r.later(RESEND - Duration::from_millis(1));
        assert!(r.tick().is_empty());
        // Due now; it goes with the next listing of the outboxes (at most a second later).
        r.later(RELIST);
        assert_eq!(r.tick(), vec![id], "sent again, same id");
        // Second expiry: twice the interval.
        r.later(RESEND);
        assert!(r.tick().is_empty());
        r.later(RESEND + RESEND - Duration::from_millis(1));
        assert!(r.tick().is_empty());
        r.later(RELIST);
        assert_eq!(r.tick(), vec![id]);
        // Third expiry: counted as stuck; an acknowledgement clears it.
        r.later(RESEND);
        r.tick();
        assert_eq!(r.m.counters().unacknowledged_resends, 1);
        let ack = r.head.ack(Scope::Meter(tid(1)), vec![id], r.now.unix);
        r.deliver(ack);
        assert_eq!(r.outbox.len().unwrap(), 0);
        r.later(RESEND);
        r.tick();
        assert_eq!(r.m.counters().unacknowledged_resends, 0);
    }

    #[test]
    fn an_entry_the_client_could_not_queue_goes_on_a_later_turn() {
        let mut r = Rig::new(4);
        let a = r.reading(1);
        let b = r.reading(2);
        assert_eq!(r.tick(), vec![a, b]);
        r.on(Event::NotQueued(b));
        assert_eq!(r.m.counters().in_flight, 1);
        r.later(TICK);
        assert_eq!(r.tick(), vec![b]);
    }

    #[test]
    fn messages_of_a_scope_without_a_context_wait_and_hold_back_nothing() {
        let mut r = Rig::new(4);
        let body = Body::Readings(Readings { readings: vec![] });
        r.outbox.append(Scope::Meter(tid(9)), T0, body).unwrap();
        let id = r.reading(1);
        assert_eq!(r.tick(), vec![id]);
        assert_eq!(
            r.outbox.len().unwrap(),
            2,
            "the unsendable one stays queued"
        );
    }

    #[test]
    fn a_command_delivered_again_is_answered_already_done_and_not_run_again() {
        let mut r = Rig::new(4);
        let id = r.head.fresh();
        let msg = r.top_up(id);
        let (actions, d) = r.deliver(msg);
        assert_eq!(acks(&actions), vec![d]);
        assert_eq!(r.handler.calls.lock().unwrap().len(), 1);
        assert_eq!(r.executed.result_of(&id).unwrap(), Some(result_code::DONE));
        // The head-end resends it (same id, a new COUNT).
        let again = r.top_up(id);
        let (actions, d2) = r.deliver(again);
        assert_eq!(acks(&actions), vec![d2]);
        assert_eq!(r.handler.calls.lock().unwrap().len(), 1, "run once only");
        assert_eq!(r.m.counters().repeats, 1);
        assert_eq!(
            r.results(),
            vec![(id, result_code::DONE), (id, result_code::ALREADY_DONE)]
        );
        // The answers leave at the next turn.
        let sent = r.tick();
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn a_temporary_outcome_is_not_remembered_so_a_resend_runs_again() {
        let mut r = Rig::new(4);
        *r.handler.now.lock().unwrap() = Some(Outcome::failed(
            result_code::TRY_LATER,
            "the account is being restored",
        ));
        let id = r.head.fresh();
        let msg = r.top_up(id);
        r.deliver(msg);
        assert_eq!(r.executed.result_of(&id).unwrap(), None);
        *r.handler.now.lock().unwrap() = Some(Outcome::done());
        let again = r.top_up(id);
        r.deliver(again);
        assert_eq!(r.handler.calls.lock().unwrap().len(), 2, "ran again");
        assert_eq!(r.executed.result_of(&id).unwrap(), Some(result_code::DONE));
        assert_eq!(r.m.counters().temporary, 1);
        assert_eq!(r.m.counters().executed, 2);
        assert_eq!(
            r.results(),
            vec![(id, result_code::TRY_LATER), (id, result_code::DONE)]
        );
    }

    #[test]
    fn a_command_under_way_does_not_hold_up_acknowledgements_and_is_acked_when_answered() {
        let mut r = Rig::new(4);
        *r.handler.now.lock().unwrap() = None;
        let first = r.head.fresh();
        let second = r.head.fresh();
        let m1 = r.top_up(first);
        let (actions, d1) = r.deliver(m1);
        assert!(
            acks(&actions).is_empty(),
            "not acknowledged to the broker yet"
        );
        let m2 = r.top_up(second);
        let (_, d2) = r.deliver(m2);
        assert_eq!(r.m.counters().running, 2);

        // Meanwhile: outbox messages go and acknowledgements are taken.
        let reading = r.reading(1);
        assert_eq!(r.tick(), vec![reading]);
        let ack = r.head.ack(Scope::Meter(tid(1)), vec![reading], r.now.unix);
        let (actions, d) = r.deliver(ack);
        assert_eq!(acks(&actions), vec![d]);
        // The first command delivered again while it runs: taken, not started twice.
        let again = r.top_up(first);
        let (actions, d3) = r.deliver(again);
        assert_eq!(acks(&actions), vec![d3]);
        assert_eq!(r.handler.calls.lock().unwrap().len(), 2);

        // The second completes first: it is answered and acknowledged first.
        r.handler
            .done
            .lock()
            .unwrap()
            .insert(second, Outcome::done());
        r.later(TICK);
        let actions = r.on(Event::Tick);
        assert_eq!(acks(&actions), vec![d2]);
        assert_eq!(r.results(), vec![(second, result_code::DONE)]);
        assert_eq!(r.m.counters().running, 1);
        r.handler.done.lock().unwrap().insert(
            first,
            Outcome::failed(result_code::TOKEN_REFUSED, "bad token"),
        );
        r.later(TICK);
        let actions = r.on(Event::Tick);
        assert_eq!(acks(&actions), vec![d1]);
        assert_eq!(
            r.executed.result_of(&first).unwrap(),
            Some(result_code::TOKEN_REFUSED),
            "a final refusal is remembered"
        );
        assert_eq!(r.m.counters().running, 0);
    }

    #[test]
    fn a_ticket_without_an_answer_by_its_deadline_completes_with_its_timeout_outcome() {
        let mut r = Rig::new(4);
        *r.handler.now.lock().unwrap() = None;
        let id = r.head.fresh();
        let msg = r.top_up(id);
        let (_, d) = r.deliver(msg);
        r.later(Duration::from_secs(19));
        assert!(acks(&r.on(Event::Tick)).is_empty());
        r.later(Duration::from_secs(1));
        assert_eq!(acks(&r.on(Event::Tick)), vec![d]);
        assert_eq!(r.results(), vec![(id, result_code::TRY_LATER)]);
        assert_eq!(
            r.executed.result_of(&id).unwrap(),
            None,
            "temporary: runs again"
        );
    }

    #[test]
    fn a_message_that_fails_its_checks_is_refused_reported_and_never_run() {
        let mut r = Rig::new(4);
        let id = r.head.fresh();
        let (topic, mut payload) = r.top_up(id);
        let last = payload.len() - 1;
        payload[last] ^= 1;
        let (actions, d) = r.deliver((topic, payload));
        assert_eq!(
            acks(&actions),
            vec![d],
            "refused for good: the broker may forget it"
        );
        assert!(r.handler.calls.lock().unwrap().is_empty());
        assert_eq!(r.m.counters().refused, 1);
        let events: Vec<u16> = r
            .outbox
            .list(10)
            .unwrap()
            .into_iter()
            .filter_map(|p| match p.frame.body {
                Body::Event(e) => Some(e.code),
                _ => None,
            })
            .collect();
        assert_eq!(events, vec![event_code::VERIFICATION_FAILED]);
        // Another gateway's topic is ignored.
        let (actions, d) = r.deliver(("c/v1/gw-2/down/gw/ack".into(), vec![]));
        assert_eq!(acks(&actions), vec![d]);
        assert_eq!(r.m.counters().refused, 1);
    }

    #[test]
    fn a_lost_connection_forgets_its_window_and_asks_to_reconnect_after_a_backoff() {
        let mut r = Rig::new(4);
        let id = r.reading(1);
        assert_eq!(r.tick(), vec![id]);
        let actions = r.on(Event::Lost { up: None });
        let [Action::ReconnectAfter(wait)] = actions.as_slice() else {
            panic!("one reconnect: {actions:?}");
        };
        assert!(*wait >= Duration::from_millis(100) && *wait <= Duration::from_secs(1));
        assert_eq!(r.m.counters().in_flight, 0);
        r.on(Event::Connected { number: 2 });
        assert_eq!(r.tick(), vec![id], "sent again on the new connection");
    }

    #[test]
    fn after_a_lost_connection_messages_in_backoff_go_first_in_queue_order() {
        let mut r = Rig::new(4);
        let old = r.reading(1);
        assert_eq!(r.tick(), vec![old]);
        // The link is dead but not noticed yet: the message expires and waits out its backoff.
        r.later(RESEND);
        assert!(r.tick().is_empty());
        r.on(Event::Lost { up: Some(RESEND) });
        let new = r.reading(2);
        r.on(Event::Connected { number: 2 });
        assert_eq!(
            r.tick(),
            vec![old, new],
            "the older reading keeps its place"
        );
    }
}
