//! One uplink thread's life: connect with backoff, announce (birth), drain the outboxes in a window of
//! unacknowledged messages, act on verified downlink messages, and say goodbye (death) on stop.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use concentrator_protocol::{
    event_code, protect, result_code, Ack, Birth, Body, CommandResult, Death, Event, Frame, Kind,
    MessageId, Protection, Scope, Severity, Topic,
};
use native_tls::TlsConnector;
use rumqttc::{
    Client, ConnectionError, Event as MqttEvent, LastWill, MqttOptions, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};

use super::downlink::{is_aka, is_command, Handled, Outcome, Ticket};
use super::outbox::{merged_where, AppendOutbox, Outbox, Pending};
use super::uplink::{Shared, UplinkConfig, UplinkParts, MAX_PACKET};

/// How often the loop wakes to look for new outbox entries and for stop.
const TICK: Duration = Duration::from_millis(50);
/// How long a stop waits for the death message to reach the broker.
const GOODBYE: Duration = Duration::from_secs(2);
/// Most outbox entries one listing looks at (entries that cannot be sent yet are skipped over).
const SCAN: usize = 20_000;

type Events = Receiver<Result<MqttEvent, ConnectionError>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a downlink message was dealt with (the broker gets its PUBACK) or dropped before it could be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Yes,
    No,
    /// Under way: acknowledged to the broker when the command is done.
    Later(MessageId),
}

/// A command being carried out elsewhere, with the broker's delivery to acknowledge when it is done.
struct Running {
    id: MessageId,
    kind: Kind,
    scope: Scope,
    ticket: Ticket,
    delivery: Option<Publish>,
}

enum Ended {
    Stopped,
    /// Lost, after being connected this long (`None`: it never connected).
    Lost(String, Option<Duration>),
}

pub(crate) fn run(
    config: UplinkConfig,
    mut parts: UplinkParts,
    connector: Option<TlsConnector>,
    shared: &Shared,
) {
    let mut backoff = config.backoff.clone();
    let mut resends = Resends::default();
    // Connections made; an attempt carries the next number (in its will, and in its birth if it connects).
    let mut made: u32 = 0;
    while !shared.stopping() {
        let number = made.wrapping_add(1);
        let ended = connection(
            &config,
            &mut parts,
            connector.as_ref(),
            shared,
            number,
            &mut resends,
        );
        parts.channels.disconnected();
        match ended {
            Ended::Stopped => break,
            Ended::Lost(why, up) => {
                if up.is_some() {
                    made = number;
                }
                shared.update(|s| {
                    s.connected = false;
                    s.failures += 1;
                    s.in_flight = 0;
                    s.last_error = Some(why.clone());
                });
                backoff.connection_ended(up.unwrap_or_default());
                let wait = backoff.next_delay();
                log::warn!(
                    "uplink: connection {number} to {}:{} lost or refused: {why}; next attempt in {:.1} s",
                    config.host,
                    config.port,
                    wait.as_secs_f64()
                );
                let until = Instant::now() + wait;
                while Instant::now() < until && !shared.stopping() {
                    std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
                }
            }
        }
    }
    shared.update(|s| s.connected = false);
}

fn plain(parts: &UplinkParts, body: Body) -> Option<Vec<u8>> {
    let id = parts.outbox.fresh_id().ok()?;
    Frame::new(id, None, unix_now(), body).encode().ok()
}

fn options(config: &UplinkConfig, connector: Option<&TlsConnector>, will: Vec<u8>) -> MqttOptions {
    let mut o = MqttOptions::new(config.gateway.as_str(), config.host.clone(), config.port);
    o.set_clean_session(false)
        .set_keep_alive(config.keep_alive)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(u16::try_from(config.window).unwrap_or(u16::MAX))
        .set_request_channel_capacity(config.window + 16)
        .set_transport(match connector {
            Some(c) => Transport::tls_with_config(TlsConfiguration::NativeConnector(c.clone())),
            None => Transport::tcp(),
        })
        .set_last_will(LastWill::new(
            Topic::status(&config.gateway),
            will,
            QoS::AtLeastOnce,
            true,
        ));
    o
}

/// One connection, from CONNECT to its end.
fn connection(
    config: &UplinkConfig,
    parts: &mut UplinkParts,
    connector: Option<&TlsConnector>,
    shared: &Shared,
    number: u32,
    resends: &mut Resends,
) -> Ended {
    let death = plain(parts, Body::Death(Death { session: number })).unwrap_or_default();
    let (client, mut conn) = Client::new(
        options(config, connector, death.clone()),
        config.window + 16,
    );
    let mut network = rumqttc::NetworkOptions::new();
    network.set_connection_timeout(config.connect_timeout.as_secs().max(1));
    // Small messages, one at a time on a 3G link: do not wait to coalesce them.
    network.set_tcp_nodelay(true);
    conn.eventloop.set_network_options(network);
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("uplink-mqtt".into())
        .spawn(move || {
            for ev in conn.iter() {
                let end = ev.is_err();
                if tx.send(ev).is_err() || end {
                    break;
                }
            }
        });
    if let Err(e) = reader {
        return Ended::Lost(format!("cannot start the MQTT reader thread: {e}"), None);
    }
    // Wait for CONNACK.
    loop {
        if shared.stopping() {
            return Ended::Stopped;
        }
        match rx.recv_timeout(TICK) {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => return Ended::Lost(e.to_string(), None),
            Err(RecvTimeoutError::Disconnected) => {
                return Ended::Lost("the MQTT event loop ended".into(), None)
            }
        }
    }
    let since = Instant::now();
    log::info!(
        "uplink: connected to {}:{} (connection {number})",
        config.host,
        config.port
    );
    let mut s = Session {
        config,
        parts,
        client,
        shared,
        in_flight: HashMap::new(),
        ready: VecDeque::new(),
        listed_at: None,
        listed_len: None,
        freed: true,
        unsealable: HashMap::new(),
        resends,
        running: Vec::new(),
    };
    shared.update(|st| {
        st.connected = true;
        st.connections = number;
    });
    let subscribe = Topic::gateway_subscription(&config.gateway);
    if let Err(e) = s.client.try_subscribe(subscribe, QoS::AtLeastOnce) {
        return Ended::Lost(format!("subscribe: {e}"), Some(since.elapsed()));
    }
    s.birth(number);
    if let Err(e) = s.parts.outbox.report_drops() {
        log::error!("uplink: {e}");
    }
    loop {
        if shared.stopping() {
            s.goodbye(&rx, death);
            return Ended::Stopped;
        }
        s.expire();
        s.complete();
        s.parts.channels.tick(unix_now());
        s.refill();
        match rx.recv_timeout(TICK) {
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                // A message dropped before it could be carried out is not acknowledged to the broker,
                // which delivers it again after the next reconnect (and the head-end resends it).
                match s.downlink(&p.topic, &p.payload) {
                    Taken::Yes => {
                        if let Err(e) = s.client.try_ack(&p) {
                            log::warn!(
                                "uplink: cannot acknowledge a downlink message to the broker: {e}"
                            );
                        }
                    }
                    Taken::Later(id) => s.defer_ack(id, p),
                    Taken::No => {}
                }
            }
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => return Ended::Lost(e.to_string(), Some(since.elapsed())),
            Err(RecvTimeoutError::Disconnected) => {
                return Ended::Lost("the MQTT event loop ended".into(), Some(since.elapsed()))
            }
        }
    }
}

struct Session<'a> {
    config: &'a UplinkConfig,
    parts: &'a mut UplinkParts,
    client: Client,
    shared: &'a Shared,
    /// Sent and not acknowledged by the head-end, with when it was sent.
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
    resends: &'a mut Resends,
    /// Commands under way (their answers and broker acknowledgements wait for them).
    running: Vec<Running>,
}

/// Messages the head-end has not acknowledged after being sent: each is sent again after a wait that
/// doubles with every unacknowledged send (the resend interval, then twice that, up to [`MAX_RESEND`]),
/// so a message the head-end will never take cannot hold the window against the others. In memory: a
/// restart sends everything unacknowledged once more, which the head-end's dedup by id absorbs.
#[derive(Debug, Default)]
struct Resends {
    by_id: HashMap<MessageId, (u32, Instant)>,
}

/// The longest wait between two sends of a message the head-end does not acknowledge.
const MAX_RESEND: Duration = Duration::from_secs(3600);

impl Resends {
    /// `id` was not acknowledged in time: when it may go again, and how often it went.
    fn expired(&mut self, id: MessageId, resend_after: Duration) -> u32 {
        let e = self.by_id.entry(id).or_insert((0, Instant::now()));
        e.0 += 1;
        let wait = resend_after
            .saturating_mul(1u32 << e.0.saturating_sub(1).min(8))
            .min(MAX_RESEND);
        e.1 = Instant::now() + wait;
        e.0
    }

    /// Whether `id` is waiting out its backoff.
    fn waiting(&self, id: &MessageId) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|(_, at)| Instant::now() < *at)
    }

    fn acknowledged(&mut self, id: &MessageId) {
        self.by_id.remove(id);
    }

    /// Messages sent at least three times without an acknowledgement.
    fn stuck(&self) -> usize {
        self.by_id.values().filter(|(n, _)| *n >= 3).count()
    }
}

impl Session<'_> {
    fn birth(&mut self, number: u32) {
        let (modem, meters) = (self.parts.inventory)();
        let outbox_len = self.parts.outbox.len().unwrap_or(0);
        let body = Body::Birth(Birth {
            software: self.config.software.clone(),
            started_at: self.config.started_at,
            session: number,
            modem,
            meters,
            outbox_len,
        });
        if let Some(payload) = plain(self.parts, body) {
            let topic = Topic::status(&self.config.gateway);
            if let Err(e) = self
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, payload)
            {
                log::warn!("uplink: cannot queue the birth message: {e}");
            }
        }
    }

    /// On stop: the death message (retained, as the will would have been), then a clean disconnect.
    fn goodbye(&mut self, rx: &Events, death: Vec<u8>) {
        let topic = Topic::status(&self.config.gateway);
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, death)
            .is_ok()
        {
            // The death message is the last publish queued: once the broker has acknowledged as many
            // publishes as are pending, it is there. Wait for the outgoing queue to drain, briefly.
            let until = Instant::now() + GOODBYE;
            while Instant::now() < until {
                match rx.recv_timeout(TICK) {
                    Ok(Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Publish(_)))) => {}
                    Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => {
                        if rx.try_recv().is_err() {
                            // Nothing else buffered: give the last acks a moment, then go.
                            std::thread::sleep(Duration::from_millis(20));
                            if rx.try_recv().is_err() {
                                break;
                            }
                        }
                    }
                    Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                    Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        let _ = self.client.try_disconnect();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            match rx.recv_timeout(TICK) {
                Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        log::info!("uplink: disconnected (stop)");
    }

    /// Forgets in-flight messages the head-end has not acknowledged in time, so they are sent again.
    fn expire(&mut self) {
        let limit = self.config.resend_after;
        let expired: Vec<MessageId> = self
            .in_flight
            .iter()
            .filter(|(_, at)| at.elapsed() >= limit)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut most = 0;
        for id in &expired {
            self.in_flight.remove(id);
            most = most.max(self.resends.expired(*id, limit));
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
        let stuck = self.resends.stuck();
        self.shared.update(|s| s.unacknowledged_resends = stuck);
        self.freed = true;
    }

    fn outboxes(&self) -> Vec<&dyn Outbox> {
        let mut v: Vec<&dyn Outbox> = vec![&*self.parts.outbox];
        v.extend(self.parts.others.iter().map(|o| &**o as &dyn Outbox));
        v
    }

    fn refill(&mut self) {
        let window = self.config.window;
        if self.in_flight.len() >= window {
            return;
        }
        let stale = self
            .listed_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let len = self.parts.outbox.len().ok();
        // Between the 1 s listings, list again only when something changed: entries that cannot be sent
        // yet (a meter before its AKA run) would otherwise be read again every turn.
        let quiet = self.listed_at.is_none_or(|t| t.elapsed() >= TICK) && len != self.listed_len;
        if stale || (self.ready.is_empty() && (self.freed || quiet)) {
            let limit = 4 * window + self.in_flight.len();
            let channels = &*self.parts.channels;
            let keep = |p: &Pending| channels.sendable(p.scope(), p.frame.kind());
            let list = merged_where(&self.outboxes(), limit, SCAN, &keep);
            self.listed_len = len;
            let resends = &*self.resends;
            self.ready = list
                .into_iter()
                .filter(|p| !self.in_flight.contains_key(&p.id()) && !resends.waiting(&p.id()))
                .collect();
            self.listed_at = Some(Instant::now());
            self.freed = false;
        }
        while self.in_flight.len() < window {
            let Some(p) = self.ready.pop_front() else {
                break;
            };
            if self.in_flight.contains_key(&p.id()) {
                continue;
            }
            let Some((topic, payload)) = self.seal(p.scope(), &p.frame) else {
                continue;
            };
            match self
                .client
                .try_publish(topic.to_string(), QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => {
                    self.in_flight.insert(p.id(), Instant::now());
                    self.shared.update(|s| s.sent += 1);
                }
                Err(_) => {
                    // rumqttc's request queue is full: try again on the next turn.
                    self.ready.push_front(p);
                    break;
                }
            }
        }
        let n = self.in_flight.len();
        self.shared.update(|s| s.in_flight = n);
    }

    /// The topic and payload of `frame`, queued under `queued`: relabelled to the scope it travels in now
    /// (a meter's current TID), then sealed with that scope's next COUNT, or plain for plain kinds.
    fn seal(&mut self, queued: Scope, frame: &Frame) -> Option<(Topic, Vec<u8>)> {
        let now = unix_now();
        let kind = frame.kind();
        let scope = match self.parts.channels.wire_scope(queued) {
            Some(s) => s,
            None if kind.protection() == Protection::Plain => queued,
            None => {
                self.no_context(queued);
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
                self.no_context(queued);
                return None;
            };
            protect::payload(Some(ch), &sender, now, frame)
        };
        match result {
            Ok(p) => Some((Topic::for_message(&self.config.gateway, scope, kind), p)),
            Err(e) => {
                log::error!("uplink: cannot seal message {}: {e}", frame.header.id);
                None
            }
        }
    }

    fn no_context(&mut self, scope: Scope) {
        let due = self
            .unsealable
            .get(&scope)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(600));
        if due {
            log::warn!("uplink: no security context for {scope:?}; its messages wait in the outbox until AKA completes");
            self.unsealable.insert(scope, Instant::now());
        }
    }

    /// Publishes a message that does not wait in the outbox (acknowledgements of downlink messages).
    fn publish_now(&mut self, scope: Scope, body: Body) {
        let Ok(id) = self.parts.outbox.fresh_id() else {
            return;
        };
        let frame = Frame::new(id, scope.tid(), unix_now(), body);
        if let Some((topic, payload)) = self.seal(scope, &frame) {
            if let Err(e) =
                self.client
                    .try_publish(topic.to_string(), QoS::AtLeastOnce, false, payload)
            {
                log::warn!("uplink: cannot queue an acknowledgement: {e}");
            }
        }
    }

    /// Queues an answer and lists the outboxes again at the next turn, so a command's result (and the
    /// receipt the command wrote) leave at once instead of at the next periodic listing.
    fn queue(&mut self, scope: Scope, body: Body) {
        match self.parts.outbox.append(scope, unix_now(), body) {
            Ok(_) => self.freed = true,
            Err(e) => log::error!("uplink: cannot queue an answer: {e}"),
        }
    }

    /// One downlink message: every check, then at most one execution (module docs of `downlink`).
    /// Whether the message was dealt with (carried out, answered or refused for good), so that the broker
    /// may forget it.
    fn downlink(&mut self, topic_name: &str, payload: &[u8]) -> Taken {
        let topic = match Topic::parse(topic_name) {
            Ok(t @ Topic::Data { .. }) if t.gateway() == &self.config.gateway => t,
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
            flow: concentrator_protocol::Flow::Down,
            ..
        } = topic
        else {
            log::warn!("uplink: ignored an uplink-direction message on {topic_name:?}");
            return Taken::Yes;
        };
        let now = unix_now();
        let frame = match self.parts.channels.open(&topic, payload, now) {
            Ok(f) => f,
            Err(e) => {
                self.refuse(scope, kind, topic_name, payload, &e.to_string());
                return Taken::Yes;
            }
        };
        let id = frame.header.id;
        if is_aka(kind) {
            // The AKA client answers through the outbox; only the TID assignment is acknowledged.
            let acknowledge = self.parts.channels.aka(scope, &frame, now);
            self.parts.channels.opened(scope);
            if acknowledge {
                self.publish_now(scope, Body::AckUp(Ack { ids: vec![id] }));
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
            self.shared.update(|s| s.acked += n as u64);
            self.parts.channels.opened(scope);
            return Taken::Yes;
        }
        if self.running.iter().any(|r| r.id == id) {
            log::info!(
                "uplink: {kind:?} {id} is still being carried out; it is answered when done"
            );
            self.parts.channels.opened(scope);
            return Taken::Yes;
        }
        match self.parts.executed.result_of(&id) {
            Ok(Some(_)) => {
                log::info!(
                    "uplink: {kind:?} {id} was already carried out; answering, not executing"
                );
                self.shared.update(|s| s.repeats += 1);
                self.parts.channels.opened(scope);
                self.answer(scope, kind, id, result_code::ALREADY_DONE, None);
                return Taken::Yes;
            }
            Ok(None) => {}
            Err(e) => {
                // Cannot tell whether it ran: do not run it, and do not let the broker forget it.
                log::error!("uplink: {e}; {kind:?} {id} not carried out; it is taken again when delivered again");
                return Taken::No;
            }
        }
        let local = self.parts.channels.local_scope(scope);
        self.parts.channels.opened(scope);
        match self.parts.downlink.start(local, &frame) {
            Handled::Now(outcome) => {
                self.finish(scope, kind, id, outcome);
                Taken::Yes
            }
            Handled::Later(ticket) => {
                self.running.push(Running {
                    id,
                    kind,
                    scope,
                    ticket,
                    delivery: None,
                });
                Taken::Later(id)
            }
        }
    }

    /// Keeps the broker's delivery of a running command, to acknowledge it once the command is done.
    fn defer_ack(&mut self, id: MessageId, delivery: Publish) {
        if let Some(r) = self.running.iter_mut().find(|r| r.id == id) {
            r.delivery = Some(delivery);
        }
    }

    /// Answers the commands whose tickets completed, and acknowledges their deliveries to the broker.
    fn complete(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let mut still = Vec::with_capacity(self.running.len());
        for mut r in std::mem::take(&mut self.running) {
            match r.ticket.poll() {
                Some(outcome) => {
                    self.finish(r.scope, r.kind, r.id, outcome);
                    if let Some(p) = r.delivery.take() {
                        if let Err(e) = self.client.try_ack(&p) {
                            log::warn!(
                                "uplink: cannot acknowledge a downlink message to the broker: {e}"
                            );
                        }
                    }
                }
                None => still.push(r),
            }
        }
        self.running = still;
        let n = self.running.len();
        self.shared.update(|s| s.running = n);
    }

    /// Records a command's outcome (when final) and answers it.
    fn finish(&mut self, scope: Scope, kind: Kind, id: MessageId, outcome: Outcome) {
        // Only a final outcome is remembered: a temporary one (no account yet, ledger busy, meter
        // offline) must run again when the head-end sends the same command again.
        if result_code::is_final(outcome.code) {
            if let Err(e) = self.parts.executed.record(&id, outcome.code) {
                log::error!("uplink: {e}; {kind:?} {id} ran but could not be recorded");
            }
        } else {
            log::info!(
                "uplink: {kind:?} {id} not carried out for now ({}); it runs again when sent again",
                outcome.reason.as_deref().unwrap_or("temporary failure")
            );
            self.shared.update(|s| s.temporary += 1);
        }
        self.shared.update(|s| s.executed += 1);
        self.answer(scope, kind, id, outcome.code, outcome.reason);
    }

    fn answer(
        &mut self,
        scope: Scope,
        kind: Kind,
        id: MessageId,
        code: u16,
        reason: Option<String>,
    ) {
        if is_command(kind) {
            let body = Body::CommandResult(CommandResult {
                command: id,
                code,
                reason,
            });
            let local = self.parts.channels.local_scope(scope);
            self.queue(local, body);
        } else {
            self.publish_now(scope, Body::AckUp(Ack { ids: vec![id] }));
        }
    }

    /// A message that failed a check: logged, reported (event 40, and a command result when the id of a
    /// plain frame can be read), never acted on.
    fn refuse(&mut self, scope: Scope, kind: Kind, topic: &str, payload: &[u8], why: &str) {
        log::warn!("uplink: refused {kind:?} on {topic}: {why}");
        self.shared.update(|s| s.refused += 1);
        let mut detail = format!("{kind:?} on {topic}: {why}");
        detail.truncate(detail.floor_char_boundary(256));
        let event = Body::Event(Event {
            at: unix_now(),
            code: event_code::VERIFICATION_FAILED,
            severity: Severity::Warning,
            detail: Some(detail),
            values: vec![],
        });
        self.queue(Scope::Gateway, event);
        if kind.protection() == Protection::Plain {
            if let Ok(f) = Frame::decode(payload) {
                if is_command(kind) {
                    let body = Body::CommandResult(CommandResult {
                        command: f.header.id,
                        code: result_code::VERIFICATION_FAILED,
                        reason: Some(why.chars().take(200).collect()),
                    });
                    let local = self.parts.channels.local_scope(scope);
                    self.queue(local, body);
                }
            }
        }
    }
}
