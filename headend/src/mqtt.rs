//! The MQTT driver: a dispatcher thread, one thread per [`Engine`] (several on a shared store, each
//! gateway's messages always to the same one), and a reader thread per connection that runs rumqttc's
//! event loop; two connections, the prompt lane and the routine lane (readings), so that receipts
//! never queue at the broker behind readings. Persistent session (clean session off), QoS 1 both ways, manual MQTT
//! acknowledgements (a message is acknowledged to the broker only after the store flushed what it caused,
//! so a crash makes the broker deliver it again), reconnection with exponential backoff and full jitter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_protocol::Topic;
use native_tls::{Certificate, Identity, Protocol, TlsConnector};
use rand::Rng;
use rumqttc::{Client, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};

use crate::engine::{Engine, Outgoing};
use crate::error::{HeadEndError, Result};

/// The longest the worker waits for an MQTT event before it looks at the nudges (a top-up just bought
/// waits at most this long to be sent): short, since the two channels cannot be waited on together; a
/// server thread waking 200 times a second costs nothing measurable.
const TICK: Duration = Duration::from_millis(5);
const MAX_PACKET: usize = 300 * 1024;
/// The most messages the dispatcher takes from the connections in one turn before it hands them to
/// the engines (what arrived while they worked) and looks at the purchases' nudges.
const WINDOW: usize = 512;

/// Where and how to connect.
#[derive(Clone)]
pub struct MqttSettings {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS, `None` for plain loopback.
    pub tls: Option<TlsConnector>,
    /// Client id.
    pub client_id: String,
    /// The shared-subscription group of several workers, if any.
    pub shared_group: Option<String>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Backoff: first ceiling, largest ceiling, shortest wait.
    pub backoff: (Duration, Duration, Duration),
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A TLS connector that trusts only `ca_pem` and presents the head-end's certificate.
pub fn connector(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> std::result::Result<TlsConnector, String> {
    let key = openssl::pkey::PKey::private_key_from_pem(key_pem)
        .and_then(|k| k.private_key_to_pem_pkcs8())
        .map_err(|e| format!("the MQTT key is not a PEM private key: {e}"))?;
    let identity = Identity::from_pkcs8(cert_pem, &key)
        .map_err(|e| format!("the MQTT certificate and key do not fit together: {e}"))?;
    let cas = openssl::x509::X509::stack_from_pem(ca_pem)
        .map_err(|e| format!("the MQTT CA file: {e}"))?;
    if cas.is_empty() {
        return Err("the MQTT CA file holds no certificate".into());
    }
    let mut b = TlsConnector::builder();
    b.identity(identity)
        .min_protocol_version(Some(Protocol::Tlsv12))
        .disable_built_in_roots(true);
    for ca in cas {
        let der = ca.to_der().map_err(|e| e.to_string())?;
        b.add_root_certificate(Certificate::from_der(&der).map_err(|e| e.to_string())?);
    }
    b.build().map_err(|e| format!("TLS connector: {e}"))
}

/// What the link is doing.
#[derive(Debug, Clone, Default)]
pub struct LinkStatus {
    /// Connected now.
    pub connected: bool,
    /// Connections made.
    pub connections: u32,
    /// Messages received.
    pub received: u64,
    /// Messages published.
    pub published: u64,
    /// The last connection error.
    pub last_error: Option<String>,
}

use concentrator_protocol::unix_now;

fn jitter(failures: u32, (base, cap, floor): (Duration, Duration, Duration)) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap)
        .max(floor);
    let lo = floor.as_millis() as u64;
    let hi = (ceiling.as_millis() as u64).max(lo);
    Duration::from_millis(rand::thread_rng().gen_range(lo..=hi))
}

/// Runs the link until `stop`, with one engine thread per engine (at least one). Each gateway's
/// messages go to one engine (by a hash of its id), so they are worked on in the order they came; the
/// first engine also runs the periodic work. Several engines need a shared store (PostgreSQL), whose
/// scopes keep them apart as they keep workers apart.
pub fn run(
    settings: MqttSettings,
    mut engines: Vec<Engine>,
    nudges: Receiver<String>,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<LinkStatus>>,
) {
    let mut failures = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let err = connection(&settings, &mut engines, &nudges, &stop, &status);
        if let Ok(mut s) = status.lock() {
            s.connected = false;
            s.last_error = err.clone();
        }
        let Some(err) = err else { break };
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        let wait = jitter(failures, settings.backoff);
        failures = failures.saturating_add(1);
        log::warn!(
            "MQTT to {}:{}: {err}; reconnecting in {wait:?}",
            settings.host,
            settings.port
        );
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
            // Without the broker, what needs no broker goes on: urgent events that came by SMS.
            if let Some(e) = engines.first_mut() {
                e.offline_tick(unix_now());
            }
        }
    }
}

fn publish(client: &Client, out: Vec<Outgoing>, status: &Mutex<LinkStatus>) {
    for o in out {
        if let Err(e) = client.publish(o.topic.clone(), QoS::AtLeastOnce, false, o.payload) {
            log::warn!("cannot publish to {}: {e}", o.topic);
        } else if let Ok(mut s) = status.lock() {
            s.published += 1;
        }
    }
}

/// The connections of a worker, each with its own queue at the broker: the prompt lane (status,
/// AKA, receipts, results, events; its client id is `[mqtt] client_id`, the session head-ends have
/// always had) and the routine lane (readings and backfill; the client id with `.routine`). A
/// backlog of readings waits in the routine lane's queue and never in front of a receipt.
const LANES: usize = 2;
const PROMPT: usize = 0;

fn lane_client_id(settings: &MqttSettings, lane: usize) -> String {
    if lane == PROMPT {
        settings.client_id.clone()
    } else {
        format!("{}.routine", settings.client_id)
    }
}

/// What a lane's reader thread hands on: the lane and the event.
type LaneEvent = (usize, std::result::Result<Event, rumqttc::ConnectionError>);

/// The connections of both lanes; `None` when stopped, `Some(reason)` when either was lost (both
/// are then made again).
fn connection(
    settings: &MqttSettings,
    engines: &mut [Engine],
    nudges: &Receiver<String>,
    stop: &AtomicBool,
    status: &Mutex<LinkStatus>,
) -> Option<String> {
    let (tx, rx) = mpsc::channel::<LaneEvent>();
    let mut clients = Vec::with_capacity(LANES);
    let mut readers = Vec::with_capacity(LANES);
    for lane in 0..LANES {
        let mut o = MqttOptions::new(
            lane_client_id(settings, lane),
            settings.host.clone(),
            settings.port,
        );
        o.set_clean_session(false)
            .set_keep_alive(settings.keep_alive)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_inflight(100)
            .set_request_channel_capacity(4096)
            .set_transport(match &settings.tls {
                Some(c) => Transport::tls_with_config(TlsConfiguration::NativeConnector(c.clone())),
                None => Transport::tcp(),
            });
        let (client, mut conn) = Client::new(o, 4096);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(10);
        network.set_tcp_nodelay(true);
        conn.eventloop.set_network_options(network);
        let tx = tx.clone();
        let reader = std::thread::Builder::new()
            .name(format!("headend-mqtt-{lane}"))
            .spawn(move || {
                for ev in conn.iter() {
                    let end = ev.is_err();
                    if tx.send((lane, ev)).is_err() || end {
                        break;
                    }
                }
            });
        clients.push(client);
        match reader {
            Ok(r) => readers.push(r),
            Err(e) => {
                for c in &clients {
                    let _ = c.try_disconnect();
                }
                return Some(format!("cannot start the MQTT reader thread: {e}"));
            }
        }
    }
    drop(tx);
    let result = session(settings, engines, nudges, stop, status, &clients, &rx);
    for c in &clients {
        let _ = c.try_disconnect();
    }
    drop(rx);
    for r in readers {
        let _ = r.join();
    }
    result
}

/// Work for an engine thread.
enum Work {
    /// Messages of its gateways, in the order they came (each with its lane).
    Messages(Vec<(usize, Publish)>),
    /// A purchase of this meter was made: send its token now.
    Nudge(String),
    /// The periodic work (first engine only).
    Tick,
}

/// Which of `n` engines works for gateway `name`: the same one for the whole connection.
fn engine_for(name: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

fn session(
    settings: &MqttSettings,
    engines: &mut [Engine],
    nudges: &Receiver<String>,
    stop: &AtomicBool,
    status: &Mutex<LinkStatus>,
    clients: &[Client],
    rx: &Receiver<LaneEvent>,
) -> Option<String> {
    let mut up = [false; LANES];
    // What a lane already connected delivers (the broker's queue for its session) while the other
    // connects: kept for the engines (unacknowledged, the broker would not send it again before the
    // next connection).
    let mut early: Vec<(usize, Publish)> = Vec::new();
    while !up.iter().all(|u| *u) {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match rx.recv_timeout(TICK) {
            Ok((lane, Ok(Event::Incoming(Packet::ConnAck(_))))) => up[lane] = true,
            Ok((lane, Ok(Event::Incoming(Packet::Publish(p))))) => early.push((lane, p)),
            Ok((_, Ok(_))) | Err(RecvTimeoutError::Timeout) => {
                if let Some(e) = engines.first_mut() {
                    e.offline_tick(unix_now());
                }
            }
            Ok((_, Err(e))) => return Some(e.to_string()),
            Err(RecvTimeoutError::Disconnected) => return Some("the MQTT event loop ended".into()),
        }
    }
    // Several workers: each message of the group's subscription goes to one of them.
    let shared = |t: &str| match &settings.shared_group {
        Some(g) => format!("$share/{g}/{t}"),
        None => t.to_string(),
    };
    // The one subscription of versions before the lanes, still held by the prompt lane's session
    // at the broker: it would deliver readings there too.
    for t in Topic::HEAD_END_SUBSCRIPTIONS {
        if let Err(e) = clients[PROMPT].try_unsubscribe(shared(t)) {
            return Some(format!("unsubscribe {t}: {e}"));
        }
    }
    for (lane, client) in clients.iter().enumerate() {
        for t in Topic::head_end_lane(lane != PROMPT) {
            let t = shared(&t);
            if let Err(e) = client.try_subscribe(&t, QoS::AtLeastOnce) {
                return Some(format!("subscribe {t}: {e}"));
            }
        }
    }
    if let Ok(mut s) = status.lock() {
        s.connected = true;
        s.connections += 1;
    }
    log::info!(
        "MQTT: connected to {}:{} as {} and {} ({} engine thread{})",
        settings.host,
        settings.port,
        lane_client_id(settings, PROMPT),
        lane_client_id(settings, 1),
        engines.len(),
        if engines.len() == 1 { "" } else { "s" }
    );
    let n = engines.len();
    std::thread::scope(|sc| {
        let mut work = Vec::with_capacity(n);
        for (i, engine) in engines.iter_mut().enumerate() {
            let (tx, rx) = mpsc::channel::<Work>();
            let spawned = std::thread::Builder::new()
                .name(format!("headend-engine-{i}"))
                .spawn_scoped(sc, move || engine_thread(engine, &rx, clients, status));
            if let Err(e) = spawned {
                return Some(format!("cannot start an engine thread: {e}"));
            }
            work.push(tx);
        }
        // Dropping `work` when this returns lets each engine finish what it was given, then end.
        dispatch(nudges, stop, status, rx, &work, early)
    })
}

/// Hands the broker's deliveries, the purchases' nudges and the periodic work to the engine threads.
fn dispatch(
    nudges: &Receiver<String>,
    stop: &AtomicBool,
    status: &Mutex<LinkStatus>,
    rx: &Receiver<LaneEvent>,
    work: &[mpsc::Sender<Work>],
    early: Vec<(usize, Publish)>,
) -> Option<String> {
    let n = work.len();
    let mut early = early.into_iter();
    let send = |i: usize, w: Work| work.get(i).is_some_and(|tx| tx.send(w).is_ok());
    let mut last_tick = Instant::now() - Duration::from_secs(2);
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        // What the broker delivered since the last turn, split by engine (each gateway's in order).
        let mut lost = None;
        let mut batches: Vec<Vec<(usize, Publish)>> = (0..n).map(|_| Vec::new()).collect();
        let mut ev = match early.next() {
            Some((lane, p)) => Ok((lane, Ok(Event::Incoming(Packet::Publish(p))))),
            None => rx.recv_timeout(TICK),
        };
        let mut taken = 0;
        loop {
            match ev {
                Ok((lane, Ok(Event::Incoming(Packet::Publish(p))))) => {
                    if let Ok(mut s) = status.lock() {
                        s.received += 1;
                    }
                    let i = match Topic::parse(&p.topic) {
                        Ok(t) => engine_for(t.gateway().as_str(), n),
                        Err(_) => 0,
                    };
                    if let Some(b) = batches.get_mut(i) {
                        b.push((lane, p));
                    }
                    taken += 1;
                }
                Ok((_, Ok(_))) | Err(RecvTimeoutError::Timeout) => {}
                Ok((_, Err(e))) => lost = Some(e.to_string()),
                Err(RecvTimeoutError::Disconnected) => {
                    lost = Some("the MQTT event loop ended".into())
                }
            }
            if lost.is_some() || taken >= WINDOW {
                break;
            }
            if let Some((lane, p)) = early.next() {
                ev = Ok((lane, Ok(Event::Incoming(Packet::Publish(p)))));
                continue;
            }
            ev = match rx.try_recv() {
                Ok(e) => Ok(e),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            };
        }
        for (i, b) in batches.into_iter().enumerate() {
            if !b.is_empty() && !send(i, Work::Messages(b)) {
                return Some("an engine thread ended".into());
            }
        }
        if lost.is_some() {
            return lost;
        }
        // `GATEWAY<tab>METER`: to the engine of the gateway, whose COUNTs then leave in order.
        while let Ok(nudge) = nudges.try_recv() {
            let (gw, meter) = nudge.split_once('\t').unwrap_or(("", nudge.as_str()));
            send(engine_for(gw, n), Work::Nudge(meter.to_string()));
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            send(0, Work::Tick);
        }
    }
}

/// The most readings an engine settles in one turn, before it looks again for prompt work: the
/// longest a receipt or a purchase waits for readings. Measured with 8,000 readings in flight (200
/// gateways of the load generator): top-ups during readings p50 183 ms, p99 318 ms at 32, p50 511
/// ms, p99 1.05 s at 128, and 4.9 s, 9.3 s with no limit; readings 6 % slower at 32 than at 128.
const ROUTINE_CHUNK: usize = 32;

/// What an engine has taken from its queue and not yet done.
#[derive(Default)]
struct Queued {
    prompt: Vec<(usize, Publish)>,
    routine: std::collections::VecDeque<(usize, Publish)>,
    nudged: std::collections::BTreeSet<String>,
    tick: bool,
}

impl Queued {
    fn take(&mut self, w: Work) {
        match w {
            Work::Messages(ps) => {
                for m in ps {
                    if m.0 == PROMPT {
                        self.prompt.push(m);
                    } else {
                        self.routine.push_back(m);
                    }
                }
            }
            Work::Nudge(meter) => {
                self.nudged.insert(meter);
            }
            Work::Tick => self.tick = true,
        }
    }
}

/// One engine, until the dispatcher hangs up. Each turn it takes everything queued for it, then
/// settles all of the prompt lane's messages, sends the purchases' tokens (each meter once), settles
/// at most [`ROUTINE_CHUNK`] readings, and runs the periodic work if it is due. Readings wait in the
/// engine's own queue meanwhile (acknowledged to the broker only once settled), so however many
/// are queued, a receipt or a new top-up waits for one chunk at most.
fn engine_thread(
    engine: &mut Engine,
    rx: &Receiver<Work>,
    clients: &[Client],
    status: &Mutex<LinkStatus>,
) {
    let client = &clients[PROMPT];
    let mut q = Queued::default();
    loop {
        if q.prompt.is_empty() && q.routine.is_empty() {
            // Nothing queued here: wait for work (nudges and ticks were done last turn).
            match rx.recv() {
                Ok(w) => q.take(w),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(w) => q.take(w),
                Err(mpsc::TryRecvError::Empty) => break,
                // The connection ended or the worker stops: what is not settled was not
                // acknowledged to the broker, which delivers it again.
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if !q.prompt.is_empty() {
            settle(engine, clients, &mut q.prompt, status);
        }
        let now = unix_now();
        for meter in std::mem::take(&mut q.nudged) {
            let out = engine.deliver(Some(&meter), now);
            publish(client, out, status);
        }
        if !q.routine.is_empty() {
            let n = q.routine.len().min(ROUTINE_CHUNK);
            let mut chunk: Vec<(usize, Publish)> = q.routine.drain(..n).collect();
            settle(engine, clients, &mut chunk, status);
        }
        if std::mem::take(&mut q.tick) {
            let out = engine.tick(unix_now());
            publish(client, out, status);
        }
    }
}

/// Works on a settle window's messages (each gateway's in one transaction, [`Engine::handle_batch`]),
/// flushes the store, sends what they led to (acknowledgements, AKA steps), then acknowledges the
/// MQTT deliveries, each on the connection it came by. The window's messages are of one lane.
fn settle(
    engine: &mut Engine,
    clients: &[Client],
    window: &mut Vec<(usize, Publish)>,
    status: &Mutex<LinkStatus>,
) {
    let now = unix_now();
    let msgs: Vec<(&str, &[u8])> = window
        .iter()
        .map(|(_, p)| (p.topic.as_str(), p.payload.as_ref()))
        .collect();
    let mut out = engine.handle_batch(&msgs, now);
    // Acknowledgements queued by other paths (none normally).
    out.extend(engine.flush_acks(now));
    if let Err(e) = engine.store().flush() {
        log::error!("the store did not flush: {e}; MQTT deliveries stay unacknowledged (the broker sends them again)");
        window.clear();
        return;
    }
    // What the window led to leaves on its lane's connection (one settle is one lane's): the
    // acknowledgements of readings queue in the routine lane's outgoing queue, never in front of a
    // top-up or an AKA step.
    let lane = window.first().map_or(PROMPT, |(lane, _)| *lane);
    publish(&clients[lane], out, status);
    for (lane, p) in window.drain(..) {
        if let Err(e) = clients[lane].try_ack(&p) {
            log::warn!("cannot acknowledge a delivery to the broker: {e}");
        }
    }
}

/// The connector for a configuration's `[mqtt]` files.
pub fn tls_for(cfg: &crate::config::Config) -> Result<Option<TlsConnector>> {
    let broker = cfg.broker()?;
    if !broker.tls {
        return Ok(None);
    }
    let read = |p: &std::path::Path, what: &'static str| {
        std::fs::read(p).map_err(HeadEndError::io(
            what,
            p,
            "fix the [mqtt] path in headend.toml",
        ))
    };
    let ca = read(&cfg.path(&cfg.mqtt.ca), "MQTT CA certificate")?;
    let cert = read(&cfg.path(&cfg.mqtt.cert), "MQTT client certificate")?;
    let key = read(&cfg.path(&cfg.mqtt.key), "MQTT client key")?;
    connector(&ca, &cert, &key)
        .map(Some)
        .map_err(HeadEndError::Mqtt)
}
