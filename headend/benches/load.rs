//! The head-end's load generator: many gateways simulated at the wire level (MQTT over TLS to a real
//! Mosquitto, AKA per meter, sealed readings, top-up commands applied and answered with signed receipts,
//! acknowledgements), against 1 and 3 workers on the tests' own PostgreSQL. No daemon runs: each
//! gateway is the tests' scripted gateway side (tests/support), a task with its own TLS connection on
//! a runtime of two threads, so that 10,000 gateways fit in one process.
//!
//! ```sh
//! cargo bench -p concentrator-headend --bench load                       # 100 gateways x 10 meters, 1 and 3 workers
//! cargo bench -p concentrator-headend --bench load -- --gateways 200 --meters 20 --seconds 20 --workers 3
//! cargo bench -p concentrator-headend --bench load -- --gateways 10000 --meters 100 --workers 1 \
//!     --window 4 --attaching 8 --resend-after 60                           # a city's worth of meters
//! ```
//!
//! `--window N`: sealed readings in flight per gateway (default 40, at most 4 per meter);
//! `--mixed-rate R`: top-ups a second bought while the readings go on (default 20);
//! `--attaching N`: meters attaching at once per gateway (default 250); `--resend-after S`: an
//! unacknowledged message is sent again after S seconds (default 3); `--reconcile-every S`: the
//! head-end's `[reconcile] interval_s` (its default otherwise); `--log LEVEL`: worker 1's log to
//! stderr (default `warn`; the other workers' logs are in their run directory).
//!
//! Printed per run: meters attached (AKA) per second; sealed readings acknowledged per second (each one
//! opened, checked, stored and acknowledged after its commit); top-ups bought at a steady rate while
//! the readings go on, with p50 and p99; how long the readings in flight took to drain once they
//! stopped; then, on a quiet head-end, top-ups per second end to end with p50 and p99 (a purchase through the payment server to the gateway's receipt booked and acknowledged);
//! the store's rows and bytes per reading; and the CPU seconds each part used (PostgreSQL, Mosquitto,
//! the worker processes, and in this process worker 1's threads apart from the simulated gateways'),
//! which shows the bottleneck.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_headend::engine::Outgoing;
use concentrator_headend::{HeadEnd, StartOptions};
use concentrator_mpc::backend::Backend;
use concentrator_protocol::*;
use concentrator_security::receipt::Receipt;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::token::{SignedToken, TokenVerifier};
use concentrator_security::SecurityMode;
use concentrator_uplink::mqtt::TlsIdentity;
use concentrator_uplink::testkit::broker::Broker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use support::{handle, unix_now, GatewaySide, Pilot};

const AKA: u8 = 0;
const READINGS: u8 = 1;
/// Readings go on while top-ups are bought at a steady rate.
const MIXED: u8 = 2;
const TOPUPS: u8 = 3;
const STOP: u8 = 4;

/// What the connection's event loop hands the gateway's task when it has connected again.
const RECONNECTED: &str = "";

struct Shared {
    phase: AtomicU8,
    attached: AtomicU64,
    /// Meters given a TID (of gateways not yet all attached too).
    tids: AtomicU64,
    readings_acked: AtomicU64,
    /// Readings sent and not yet acknowledged (resends not counted again).
    readings_in_flight: AtomicI64,
    /// (meter, serial) → when the purchase started / when its receipt was acknowledged.
    bought: Purchases,
    booked: Purchases,
    failed: AtomicBool,
    /// Downlink messages the gateways dropped (a COUNT out of order) and top-up commands they got.
    dropped: AtomicU64,
    commands: AtomicU64,
    /// Account requests the gateways answered, and connections made again (each announced by a
    /// birth).
    account_requests: AtomicU64,
    reconnects: AtomicU64,
    backfill_requests: AtomicU64,
}

fn spec(gateways: usize, meters: usize) -> String {
    let mut s = String::new();
    for g in 0..gateways {
        s.push_str(&format!(
            "[[gateway]]\nid = \"gw-{g}\"\nledger = {{ currency = \"EUR\" }}\n[[gateway.bus]]\nname = \"sim-1\"\nbackend = \"sim\"\n\n"
        ));
    }
    for g in 0..gateways {
        for m in 0..meters {
            s.push_str(&format!(
                "[[meter]]\nmeter = \"M{g}-{m}\"\ngateway = \"gw-{g}\"\ndwelling = \"D{g}-{m}\"\nbus = \"sim-1\"\naddress = \"{:012}\"\ndriver = \"dlt645\"\n\n",
                m + 1
            ));
        }
        let list: Vec<String> = (0..meters).map(|m| format!("\"M{g}-{m}\"")).collect();
        s.push_str(&format!(
            "[[customer]]\nid = \"C{g}\"\nname = \"Customer {g}\"\nmsisdn = \"4917{g:08}\"\nmeters = [{}]\n\n",
            list.join(", ")
        ));
    }
    s
}

/// An uplink message waiting for its acknowledgement: its scope and body (sent again as they are),
/// when last sent, and the token whose receipt it is.
type InFlight = (Scope, Body, Instant, Option<(String, u64)>);

/// How the simulated gateways pace themselves.
#[derive(Clone, Copy)]
struct Pace {
    /// Sealed readings in flight per gateway (and at most 4 per meter).
    window: usize,
    /// Meters attaching at once per gateway.
    attaching: usize,
    /// An unacknowledged message is sent again after this long.
    resend_after: Duration,
}

/// A simulated gateway's MQTT connection: its own client certificate from the test broker's PKI,
/// its downlink subscribed, messages handed over on a channel; an event-loop task of its own.
struct AsyncWire {
    client: AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl AsyncWire {
    /// Inside the runtime (spawns the event loop). At most `handshakes` permits' worth of
    /// connections are being made at once: 10,000 TLS handshakes started together time out against
    /// each other and never finish.
    fn connect(
        port: u16,
        tls: native_tls::TlsConnector,
        id: &str,
        handshakes: Arc<tokio::sync::Semaphore>,
    ) -> AsyncWire {
        let mut o = MqttOptions::new(id, "localhost", port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(120))
            .set_transport(Transport::tls_with_config(
                TlsConfiguration::NativeConnector(tls),
            ));
        let (client, mut events) = AsyncClient::new(o, 4096);
        let mut net = events.network_options();
        net.set_connection_timeout(60);
        events.set_network_options(net);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = client.clone();
        let topic = format!("c/v1/{id}/down/#");
        tokio::spawn(async move {
            let mut permit = handshakes.clone().acquire_owned().await.ok();
            let mut connections = 0u32;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        permit = None;
                        let _ = sub.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                        connections += 1;
                        // A daemon announces every new connection with a birth (the head-end
                        // marks the gateway online by it): the gateway's task sends it.
                        if connections > 1 && tx.send((RECONNECTED.into(), vec![])).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        drop(permit.take());
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        permit = handshakes.clone().acquire_owned().await.ok();
                    }
                }
            }
        });
        AsyncWire { client, rx }
    }

    async fn send(&self, (topic, payload): (String, Vec<u8>)) {
        let _ = self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await;
    }

    /// The gateway's birth on its status topic, as a daemon sends on each connection.
    async fn birth(&self, g: &mut GatewaySide, session: u32) {
        let frame = Frame::new(
            g.next_id(),
            None,
            unix_now(),
            Body::Birth(Birth {
                software: "load".into(),
                started_at: unix_now(),
                session,
                modem: ModemReport::default(),
                meters: vec![],
                outbox_len: 0,
            }),
        );
        self.send((Topic::status(&g.id), frame.encode().unwrap()))
            .await;
    }
}

/// Seals `body` in `scope` with a new message id, sends it and keeps it until it is acknowledged
/// (sent again meanwhile); `booked`: the top-up whose receipt it is.
async fn send_tracked(
    g: &mut GatewaySide,
    wire: &AsyncWire,
    unacked: &mut HashMap<MessageId, InFlight>,
    (scope, body): (Scope, Body),
    booked: Option<(String, u64)>,
) {
    let id = g.next_id();
    wire.send(g.seal(scope, body.clone(), Some(id))).await;
    unacked.insert(id, (scope, body, Instant::now(), booked));
}

/// One simulated gateway, until the phase is STOP: a task that wakes for a message or a tick.
async fn gateway(
    mut g: GatewaySide,
    mut wire: AsyncWire,
    meters: Vec<String>,
    (signer, verifier): (DocumentSigner, TokenVerifier),
    s: Arc<Shared>,
    pace: Pace,
) {
    let mut session = 1u32;
    wire.birth(&mut g, session).await;
    // AKA, a few meters at a time, each on its own attach handle.
    let mut started = 0usize;
    let mut attach_at = Instant::now();
    while started < meters.len().min(pace.attaching) {
        wire.send(g.attach(&meters[started], handle(started as u8 + 1)))
            .await;
        started += 1;
    }
    let mut scope_meter: HashMap<Scope, String> = HashMap::new();
    let mut unacked: HashMap<MessageId, InFlight> = HashMap::new();
    let mut per_meter: HashMap<String, u32> = HashMap::new();
    let mut applied: HashMap<(String, u64), Vec<u8>> = HashMap::new();
    let mut balance = 0i64;
    let mut value = 0i64;
    let mut next = 0usize;
    let mut readings_out = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let phase = s.phase.load(Ordering::Relaxed);
        if phase == STOP {
            return;
        }
        let message = tokio::select! {
            m = wire.rx.recv() => match m {
                Some(m) => Some(m),
                None => return,
            },
            _ = tick.tick() => None,
        };
        if message.as_ref().is_some_and(|(t, _)| t == RECONNECTED) {
            session += 1;
            s.reconnects.fetch_add(1, Ordering::Relaxed);
            wire.birth(&mut g, session).await;
        } else if let Some((topic, payload)) = message {
            let out = Outgoing { topic, payload };
            // An AKA step of a run the gateway has since replaced (it attached again) does not open
            // with the new run's keys: the scripted side panics on it; here it is dropped, as the
            // daemon drops it.
            let step = |g: &mut GatewaySide, f: &dyn Fn(&mut GatewaySide) -> (String, Vec<u8>)| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(g))).ok()
            };
            if out.topic.ends_with("/aka-challenge") {
                match step(&mut g, &|g| g.answer(&out)) {
                    Some(m) => wire.send(m).await,
                    None => {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else if out.topic.ends_with("/security-mode") {
                match step(&mut g, &|g| g.complete(&out).0) {
                    Some(m) => wire.send(m).await,
                    None => {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else if out.topic.ends_with("/tid") {
                let had = g.tids.len();
                match step(&mut g, &|g| g.take_tid(&out)) {
                    Some(m) => wire.send(m).await,
                    None => {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if g.tids.len() > had {
                    s.tids.fetch_add(1, Ordering::Relaxed);
                }
                attach_at = Instant::now();
                if started < meters.len() {
                    wire.send(g.attach(&meters[started], handle(started as u8 + 1)))
                        .await;
                    started += 1;
                }
                if g.tids.len() == meters.len() && scope_meter.is_empty() {
                    for m in &meters {
                        scope_meter.insert(g.meter_scope(m), m.clone());
                    }
                    s.attached.fetch_add(meters.len() as u64, Ordering::Relaxed);
                }
            } else if let Ok((scope, f)) = g.try_open(&out).map_err(|e| {
                if s.dropped.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("dropped {}: {e}", out.topic);
                }
            }) {
                match f.body {
                    Body::AckDown(a) => {
                        for id in a.ids {
                            if let Some((_, body, _, booked)) = unacked.remove(&id) {
                                if let Some(m) = scope_meter.get(&scope) {
                                    if let Some(n) = per_meter.get_mut(m) {
                                        *n = n.saturating_sub(1);
                                    }
                                }
                                if matches!(body, Body::Readings(_)) {
                                    readings_out = readings_out.saturating_sub(1);
                                    s.readings_acked.fetch_add(1, Ordering::Relaxed);
                                    s.readings_in_flight.fetch_sub(1, Ordering::Relaxed);
                                }
                                if let Some(k) = booked {
                                    s.booked
                                        .lock()
                                        .unwrap()
                                        .entry(k)
                                        .or_insert_with(Instant::now);
                                }
                            }
                        }
                    }
                    Body::BackfillRequest(_) => {
                        // The simulated meters keep no history: answered as a gateway answers for
                        // such a meter (the head-end then leaves it a day).
                        s.backfill_requests.fetch_add(1, Ordering::Relaxed);
                        let result = Body::CommandResult(CommandResult {
                            command: f.header.id,
                            code: result_code::UNSUPPORTED,
                            reason: None,
                        });
                        send_tracked(&mut g, &wire, &mut unacked, (scope, result), None).await;
                    }
                    Body::AccountRequest(_) => {
                        s.account_requests.fetch_add(1, Ordering::Relaxed);
                        let Some(m) = scope_meter.get(&scope).cloned() else {
                            continue;
                        };
                        let serials: Vec<u64> = applied
                            .keys()
                            .filter(|(meter, _)| *meter == m)
                            .map(|(_, serial)| *serial)
                            .collect();
                        let body = Body::AccountSummary(AccountSummary {
                            at: unix_now(),
                            balance_minor: balance,
                            currency: "EUR".into(),
                            last_token_serial: serials.iter().max().copied(),
                            register_wh: value.max(0) as u64,
                            tariff_id: 1,
                            charged_minor: 0,
                            relay_closed: true,
                            applied: Some(SerialRange::cover(serials)),
                            audit: None,
                        });
                        send_tracked(&mut g, &wire, &mut unacked, (scope, body), None).await;
                    }
                    Body::TopUp(t) => {
                        s.commands.fetch_add(1, Ordering::Relaxed);
                        let Some(m) = scope_meter.get(&scope).cloned() else {
                            continue;
                        };
                        let Ok(token) = SignedToken::decode(&t.token)
                            .map_err(|e| e.to_string())
                            .and_then(|st| {
                                verifier
                                    .verify(&st, &m, unix_now())
                                    .map_err(|e| e.to_string())
                            })
                        else {
                            s.failed.store(true, Ordering::Relaxed);
                            continue;
                        };
                        let key = (m.clone(), token.serial);
                        let (code, receipt) = match applied.get(&key) {
                            Some(r) => (result_code::ALREADY_DONE, r.clone()),
                            None => {
                                balance += token.amount_minor as i64;
                                let r = Receipt {
                                    meter_id: m.clone(),
                                    serial: token.serial,
                                    amount_minor: token.amount_minor,
                                    currency: *b"EUR",
                                    applied_at: unix_now(),
                                    balance_after_minor: balance,
                                    gateway_id: g.id.as_str().to_string(),
                                }
                                .sign(&signer)
                                .unwrap()
                                .encode()
                                .unwrap();
                                applied.insert(key.clone(), r.clone());
                                (result_code::DONE, r)
                            }
                        };
                        let result = Body::CommandResult(CommandResult {
                            command: f.header.id,
                            code,
                            reason: None,
                        });
                        send_tracked(&mut g, &wire, &mut unacked, (scope, result), None).await;
                        let body = Body::Receipt(ReceiptBody { signed: receipt });
                        send_tracked(&mut g, &wire, &mut unacked, (scope, body), Some(key)).await;
                    }
                    _ => {}
                }
            }
        } else {
            // A tick: what was lost is sent again.
            if phase == AKA
                && scope_meter.is_empty()
                && attach_at.elapsed() > (pace.resend_after * 3).max(Duration::from_secs(15))
            {
                // Lost steps (a step refused as out of order): attach again the meters started
                // without a TID.
                attach_at = Instant::now();
                for (i, m) in meters.iter().enumerate().take(started) {
                    if !g.tids.contains_key(m) {
                        wire.send(g.attach(m, handle(i as u8 + 1))).await;
                    }
                }
            }
            let now = Instant::now();
            let due: Vec<MessageId> = unacked
                .iter()
                .filter(|(_, (_, _, at, _))| now.duration_since(*at) > pace.resend_after)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                let (scope, body, _, k) = unacked.remove(&id).unwrap();
                wire.send(g.seal(scope, body.clone(), Some(id))).await;
                unacked.insert(id, (scope, body, now, k));
            }
        }
        if (phase == READINGS || phase == MIXED) && !scope_meter.is_empty() {
            // Up to `window` readings in flight, at most 4 per meter, meters in turn.
            let mut tried = 0;
            while readings_out < pace.window && tried < meters.len() {
                next = (next + 1) % meters.len();
                tried += 1;
                let m = &meters[next];
                let n = per_meter.entry(m.clone()).or_insert(0);
                if *n >= 4 {
                    continue;
                }
                *n += 1;
                tried = 0;
                readings_out += 1;
                s.readings_in_flight.fetch_add(1, Ordering::Relaxed);
                value += 1;
                let scope = g.meter_scope(m);
                let body = concentrator_uplink::testkit::reading(value as u64);
                send_tracked(&mut g, &wire, &mut unacked, (scope, body), None).await;
            }
        }
    }
}

/// CPU seconds (user + system) of this process's descendants by program name, and of itself.
fn cpu_by_program() -> HashMap<String, f64> {
    let tick = 100.0; // USER_HZ on Linux
    let me = std::process::id();
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut times: HashMap<u32, (String, f64)> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ppid: u32 = f[1].parse().unwrap_or(0);
        let cpu =
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / tick;
        parent.insert(pid, ppid);
        times.insert(pid, (comm, cpu));
    }
    let mut out: HashMap<String, f64> = HashMap::new();
    for (pid, (comm, cpu)) in &times {
        let mut p = *pid;
        let mut ours = false;
        while p > 1 {
            if p == me {
                ours = true;
                break;
            }
            p = parent.get(&p).copied().unwrap_or(0);
        }
        if ours && *pid == me {
            // Worker 1's threads are named `headend-…` (and `notice-scan`); the rest of this process
            // are the simulated gateways.
            for (name, cpu) in thread_cpu(me) {
                let part = if name.starts_with("headend") || name.starts_with("notice") {
                    "worker 1 (threads of this process)"
                } else {
                    "the simulated gateways (this process)"
                };
                *out.entry(part.to_string()).or_insert(0.0) += cpu;
            }
        } else if ours {
            let name = if comm.starts_with("postgres") {
                "postgres".into()
            } else {
                comm.clone()
            };
            *out.entry(name).or_insert(0.0) += cpu;
        }
    }
    out
}

/// CPU seconds of each thread of process `pid`, by thread name.
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let cpu =
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0;
        out.push((stat[open + 1..close].to_string(), cpu));
    }
    out
}

type Purchases = Mutex<HashMap<(String, u64), Instant>>;

/// Purchases through worker 1's payment server for `seconds`, recorded in `bought`: 8 buyers as
/// fast as they can (`rate` `None`), or together `rate` a second on a fixed schedule (an open loop:
/// a slow answer does not lower the rate offered). Returns how long they bought.
fn buy(
    backend: &Arc<concentrator_headend::backend::PaymentServer>,
    shared: &Arc<Shared>,
    bought: &Purchases,
    (gateways, meters): (usize, usize),
    seconds: u64,
    rate: Option<f64>,
) -> f64 {
    static ROUND: AtomicU64 = AtomicU64::new(0);
    let round = ROUND.fetch_add(1, Ordering::Relaxed);
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    std::thread::scope(|sc| {
        for n in 0..8u64 {
            let stop = &stop;
            // Named as worker 1's threads: a purchase is the payment server's work (as a phone's).
            std::thread::Builder::new()
                .name(format!("headend-buy-{n}"))
                .spawn_scoped(sc, move || {
                    let every = rate.map(|r| Duration::from_secs_f64(8.0 / r));
                    let first = t + every.map_or(Duration::ZERO, |e| e.mul_f64(n as f64 / 8.0));
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(e) = every {
                            let at = first + e.mul_f64(i as f64);
                            std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        }
                        i += 1;
                        let k = round * 8 + n;
                        let gi = ((k * 7919 + i * 104_729) % gateways as u64) as usize;
                        let mi = ((k + i * 31) % meters as u64) as usize;
                        let meter = format!("M{gi}-{mi}");
                        let mut rid = [0u8; 16];
                        rid[..8].copy_from_slice(&k.to_be_bytes());
                        rid[8..].copy_from_slice(&i.to_be_bytes());
                        let start = Instant::now();
                        match backend.top_up(&format!("C{gi}"), &meter, 100, rid) {
                            Ok(pu) => {
                                bought.lock().unwrap().insert((meter, pu.serial), start);
                            }
                            Err(e) => {
                                eprintln!("purchase refused: {e}");
                                shared.failed.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                })
                .unwrap();
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    t.elapsed().as_secs_f64()
}

/// Waits up to `limit` for every purchase in `bought` to be booked.
fn wait_booked(shared: &Shared, bought: &Purchases, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let missing = {
            let booked = shared.booked.lock().unwrap();
            bought
                .lock()
                .unwrap()
                .keys()
                .any(|k| !booked.contains_key(k))
        };
        if !missing {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Purchase to receipt of each booked purchase in `bought`, sorted.
fn latencies(bought: &Purchases, booked: &Purchases) -> Vec<Duration> {
    let bought = bought.lock().unwrap();
    let booked = booked.lock().unwrap();
    let mut lat: Vec<Duration> = bought
        .iter()
        .filter_map(|(k, start)| {
            booked
                .get(k)
                .map(|end| end.saturating_duration_since(*start))
        })
        .collect();
    lat.sort();
    lat
}

/// "p50 X ms, p99 Y ms, max Z ms" of sorted latencies.
fn latency_words(sorted: &[Duration]) -> String {
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        percentile(sorted, 0.5).as_millis(),
        percentile(sorted, 0.99).as_millis(),
        sorted.last().copied().unwrap_or_default().as_millis()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(
    gateways: usize,
    meters: usize,
    workers: usize,
    seconds: u64,
    pace: Pace,
    reconcile_every: Option<u64>,
    mixed_rate: f64,
) {
    let b = Broker::start();
    let p = Pilot::on_postgres("load", Some(format!("mqtts://localhost:{}", b.port)))
        .expect("PostgreSQL for the load generator (sudo apt-get install -y postgresql)");
    std::fs::write(p.dir.0.join("spec.toml"), spec(gateways, meters)).unwrap();
    let mut config = p.config_for_broker(&b);
    config.mqtt.shared_group = Some("headend".into());
    config.store.pool = 16;
    config.tokens.max_minor = 10_000_000;
    if let Some(s) = reconcile_every {
        config.reconcile.interval_s = s;
    }
    let conf = config.base.join("headend.toml");
    std::fs::write(&conf, toml::to_string(&config).unwrap()).unwrap();

    let t = Instant::now();
    let he = HeadEnd::open(config.clone()).unwrap().worker("w1");
    p.provision(&he.store());
    let provision_s = t.elapsed().as_secs_f64();
    let store = he.store();
    let handle = he.start(StartOptions::default()).unwrap();
    let backend = handle.backend();
    let logs = p.dir.0.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut children: Vec<Child> = (2..=workers)
        .map(|n| {
            Command::new(env!("CARGO_BIN_EXE_concentrator-headend"))
                .args(["--log-level", "warn", "run", "--no-phone", "--worker"])
                .arg(format!("w{n}"))
                .arg("--config")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(logs.join(format!("w{n}.log"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    let shared = Arc::new(Shared {
        phase: AtomicU8::new(AKA),
        attached: AtomicU64::new(0),
        tids: AtomicU64::new(0),
        readings_acked: AtomicU64::new(0),
        readings_in_flight: AtomicI64::new(0),
        bought: Mutex::new(HashMap::new()),
        booked: Mutex::new(HashMap::new()),
        failed: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        commands: AtomicU64::new(0),
        account_requests: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        backfill_requests: AtomicU64::new(0),
    });
    // The simulated gateways: tasks on a runtime of their own (two threads, named apart from the
    // head-end's), each with its own TLS connection; prepared one after the other, which also
    // spreads the connections' handshakes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gw-sim")
        .enable_all()
        .build()
        .unwrap();
    let cpu_aka = cpu_by_program();
    let spawned = Instant::now();
    let ca_pem = b.pki.ca_pem();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(32));
    for gi in 0..gateways {
        let id = format!("gw-{gi}");
        let g = p.gateway(&id, vec![SecurityMode::AES]);
        let issued = b.pki.client(&id);
        let tls = TlsIdentity {
            ca_pem: ca_pem.clone(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
        .connector()
        .unwrap();
        let dir = p.bundle(&id);
        let signer = DocumentSigner::new(
            openssl::pkey::PKey::private_key_from_pem(
                &std::fs::read(dir.join("gateway.key")).unwrap(),
            )
            .unwrap(),
            &[
                openssl::x509::X509::from_pem(&std::fs::read(dir.join("gateway.pem")).unwrap())
                    .unwrap(),
            ],
        )
        .unwrap();
        let ca = openssl::x509::X509::from_pem(&std::fs::read(dir.join("utility-ca.pem")).unwrap())
            .unwrap();
        let verifier = TokenVerifier::new(vec![ca]);
        let ms: Vec<String> = (0..meters).map(|m| format!("M{gi}-{m}")).collect();
        let (s, port, handshakes) = (shared.clone(), b.port, handshakes.clone());
        rt.spawn(async move {
            let wire = AsyncWire::connect(port, tls, &id, handshakes);
            gateway(g, wire, ms, (signer, verifier), s, pace).await
        });
        if gi % 1000 == 999 {
            eprintln!("{} gateways started…", gi + 1);
        }
    }
    let start_s = spawned.elapsed().as_secs_f64();

    // AKA of every meter.
    let total = (gateways * meters) as u64;
    let limit = Duration::from_secs(600.max(total / 200));
    let mut shown = Instant::now();
    while shared.attached.load(Ordering::Relaxed) < total {
        assert!(
            spawned.elapsed() < limit,
            "AKA not done in {} s: {} of {total} meters attached",
            limit.as_secs(),
            shared.attached.load(Ordering::Relaxed)
        );
        if shown.elapsed() > Duration::from_secs(10) {
            shown = Instant::now();
            eprintln!(
                "AKA: {} of {total} meters attached ({} with a TID) after {:.0} s…",
                shared.attached.load(Ordering::Relaxed),
                shared.tids.load(Ordering::Relaxed),
                spawned.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let aka_s = spawned.elapsed().as_secs_f64();
    let cpu_aka_end = cpu_by_program();

    // Readings: a warm-up second, then the measured window.
    let rows = |what: &str| -> (i64, i64) {
        let url = config.store.url.clone().unwrap();
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let r = c
            .query_one(
                "SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value)), 0)::bigint FROM kv WHERE key >= $1::bytea AND key < $2::bytea",
                &[&what.as_bytes(), &format!("{}\u{7f}", what).as_bytes()],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let size = || -> i64 {
        let url = config.store.url.clone().unwrap();
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query_one("SELECT pg_total_relation_size('kv')", &[])
            .unwrap()
            .get(0)
    };
    shared.phase.store(READINGS, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let (size0, cpu0) = (size(), cpu_by_program());
    let r0 = shared.readings_acked.load(Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let readings = shared.readings_acked.load(Ordering::Relaxed) - r0;
    let readings_s = t.elapsed().as_secs_f64();
    let cpu1 = cpu_by_program();
    let (size1, (in_rows, in_bytes)) = (size(), rows("in/readings/"));

    // Top-ups bought at a steady rate while the readings go on: the broker holds a backlog of
    // readings for the head-end (the gateways keep `window` each in flight), and a top-up's result
    // and receipt must not wait behind it.
    shared.phase.store(MIXED, Ordering::Relaxed);
    let mixed: Purchases = Mutex::new(HashMap::new());
    let r1 = shared.readings_acked.load(Ordering::Relaxed);
    let backlog_at_mix = shared.readings_in_flight.load(Ordering::Relaxed);
    let mixed_s = buy(
        &backend,
        &shared,
        &mixed,
        (gateways, meters),
        seconds,
        Some(mixed_rate),
    );
    let mixed_readings = shared.readings_acked.load(Ordering::Relaxed) - r1;
    let mixed_readings_s = mixed_readings as f64 / mixed_s;
    wait_booked(&shared, &mixed, Duration::from_secs(30));
    let mixed_lat = latencies(&mixed, &shared.booked);
    let mixed_n = mixed.lock().unwrap().len();

    // The readings stop; the backlog drains before the top-ups are measured alone.
    shared.phase.store(TOPUPS, Ordering::Relaxed);
    let drain = Instant::now();
    let backlog = shared.readings_in_flight.load(Ordering::Relaxed);
    let mut shown = Instant::now();
    while shared.readings_in_flight.load(Ordering::Relaxed) > 0
        && drain.elapsed() < Duration::from_secs(900)
    {
        if shown.elapsed() > Duration::from_secs(10) {
            shown = Instant::now();
            eprintln!(
                "{} readings still in flight {:.0} s after the readings stopped…",
                shared.readings_in_flight.load(Ordering::Relaxed),
                drain.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let drain_s = drain.elapsed().as_secs_f64();
    let cpu_drained = cpu_by_program();

    // Top-ups, first as fast as 8 buyers can (the throughput: purchases come faster than receipts
    // are booked, so the latency is the queue's), then at half the booked rate (the latency of a
    // top-up at a load the system sustains).
    let t = Instant::now();
    let buy_s = buy(
        &backend,
        &shared,
        &shared.bought,
        (gateways, meters),
        seconds,
        None,
    );
    let bought_n = shared.bought.lock().unwrap().len();
    wait_booked(&shared, &shared.bought, Duration::from_secs(30));
    let cpu2 = cpu_by_program();
    let lat = latencies(&shared.bought, &shared.booked);
    let done = lat.len();
    let last_booked = shared.booked.lock().unwrap().values().max().copied();
    let booked_rate =
        done as f64 / last_booked.map_or(buy_s, |l| l.saturating_duration_since(t).as_secs_f64());
    let rate = (booked_rate / 2.0).max(1.0);
    let paced: Purchases = Mutex::new(HashMap::new());
    let paced_s = buy(
        &backend,
        &shared,
        &paced,
        (gateways, meters),
        seconds,
        Some(rate),
    );
    wait_booked(&shared, &paced, Duration::from_secs(30));
    let paced_lat = latencies(&paced, &shared.booked);
    let paced_n = paced.lock().unwrap().len();
    let pending = store.pending(None).unwrap();
    let tokens_pending = pending.len();
    // Why tokens are still pending, if any are: never sent, or sent and not answered; and whether
    // the head-end sees their gateway online.
    let (mut unsent, mut offline, mut unreachable) = (0usize, 0usize, 0usize);
    let mut gateway_of: HashMap<String, bool> = HashMap::new();
    for r in &pending {
        if let Ok(Some(t)) = store.token(&r.meter, r.serial) {
            unsent += usize::from(t.sends == 0);
        }
        let gw = r.meter[1..].split('-').next().unwrap_or("").to_string();
        let online = *gateway_of.entry(gw.clone()).or_insert_with(
            || matches!(store.gateway(&format!("gw-{gw}")), Ok(Some(g)) if g.online),
        );
        offline += usize::from(!online);
        let sub = concentrator_headend::store::SubscriberRef::Meter(r.meter.clone());
        let reachable = store
            .contexts(&sub)
            .is_ok_and(|set| set.live(unix_now()).any(|c| c.tid.is_some()));
        unreachable += usize::from(!reachable);
    }
    shared.phase.store(STOP, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(5));
    handle.stop().unwrap();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }

    println!("\n== {gateways} gateways x {meters} meters, {workers} worker(s), PostgreSQL, Mosquitto (TLS), loopback");
    println!(
        "provisioning: {provision_s:.1} s; gateways started (keys loaded, TLS identities issued) in {start_s:.1} s; \
         AKA: all {total} meters attached {aka_s:.1} s after the first gateway started (at least {:.0} meters/s)",
        total as f64 / aka_s
    );
    println!(
        "pace: {} readings in flight per gateway (4 per meter at most), {} meters attaching at once per gateway, sent again after {} s",
        pace.window,
        pace.attaching,
        pace.resend_after.as_secs()
    );
    println!(
        "readings: {readings} sealed readings acknowledged in {readings_s:.1} s = {:.0} readings/s",
        readings as f64 / readings_s
    );
    let per_reading = if in_rows > 0 {
        (size1 - size0) as f64 / readings.max(1) as f64
    } else {
        0.0
    };
    println!(
        "store: {in_rows} ingested reading rows, {:.0} bytes of key+value each; the table and its index grew {:.0} bytes per acknowledged reading",
        in_bytes as f64 / in_rows.max(1) as f64,
        per_reading
    );
    println!(
        "top-ups during readings, {mixed_rate:.0}/s: {mixed_n} bought in {mixed_s:.1} s, {} booked, while {mixed_readings_s:.0} readings/s were acknowledged \
         ({backlog_at_mix} readings in flight as they began); purchase to receipt acknowledged: {}",
        mixed_lat.len(),
        latency_words(&mixed_lat)
    );
    println!(
        "the readings stopped with {backlog} in flight; the last acknowledged {drain_s:.1} s later ({} still in flight)",
        shared.readings_in_flight.load(Ordering::Relaxed).max(0)
    );
    println!(
        "top-ups: {bought_n} bought in {buy_s:.1} s ({:.0}/s), {done} booked from their receipts ({:.0}/s to the last receipt), \
         {tokens_pending} still pending ({unsent} never sent, {offline} of a gateway the head-end holds offline, {unreachable} of a meter without a live context); \
         purchase to receipt acknowledged: {}",
        bought_n as f64 / buy_s,
        booked_rate,
        latency_words(&lat)
    );
    println!(
        "top-ups at {rate:.0}/s (half the booked rate): {paced_n} bought in {paced_s:.1} s, {} booked; purchase to receipt acknowledged: {}",
        paced_lat.len(),
        latency_words(&paced_lat)
    );
    println!(
        "gateways: {} top-up commands received, {} account requests and {} backfill requests answered, {} downlink messages dropped (COUNT out of order), {} connections made again",
        shared.commands.load(Ordering::Relaxed),
        shared.account_requests.load(Ordering::Relaxed),
        shared.backfill_requests.load(Ordering::Relaxed),
        shared.dropped.load(Ordering::Relaxed),
        shared.reconnects.load(Ordering::Relaxed)
    );
    let mut names: Vec<&String> = cpu2.keys().collect();
    names.sort();
    for n in names {
        let r = cpu1.get(n).unwrap_or(&0.0) - cpu0.get(n).unwrap_or(&0.0);
        let tp = cpu2.get(n).unwrap_or(&0.0) - cpu_drained.get(n).unwrap_or(&0.0);
        let aka = cpu_aka_end.get(n).unwrap_or(&0.0) - cpu_aka.get(n).unwrap_or(&0.0);
        if r + tp + aka >= 0.05 {
            println!(
                "cpu {n}: {aka:.1} s during AKA, {r:.1} s during readings, {tp:.1} s during top-ups"
            );
        }
    }
    assert!(
        !shared.failed.load(Ordering::Relaxed),
        "a purchase was refused"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let gateways: usize = arg("--gateways", "100").parse().unwrap();
    let meters: usize = arg("--meters", "10").parse().unwrap();
    let seconds: u64 = arg("--seconds", "10").parse().unwrap();
    let pace = Pace {
        window: arg("--window", "40").parse().unwrap(),
        attaching: arg("--attaching", "250").parse().unwrap(),
        resend_after: Duration::from_secs(arg("--resend-after", "3").parse().unwrap()),
    };
    let workers: Vec<usize> = arg("--workers", "1,3")
        .split(',')
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(
        meters <= 250,
        "at most 250 meters per gateway (attach handles)"
    );
    let mixed_rate: f64 = arg("--mixed-rate", "20").parse().unwrap();
    let reconcile_every = args
        .iter()
        .any(|a| a == "--reconcile-every")
        .then(|| arg("--reconcile-every", "900").parse().unwrap());
    // Worker 1 runs in this process: its log to stderr (`--log warn`, the default, `info`, `off`).
    concentrator_headend::log_to_stderr(arg("--log", "warn").parse().unwrap());
    for w in workers {
        run(
            gateways,
            meters,
            w,
            seconds,
            pace,
            reconcile_every,
            mixed_rate,
        );
    }
}
