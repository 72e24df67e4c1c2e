//! One uplink thread's life, the I/O side of [`super::state`]: a rumqttc client per connection, its
//! reader thread, the clock and the waits. Every decision (window, acknowledgements, downlink checks,
//! commands under way, reconnect backoff) is the state machine's; this loop feeds it events and carries
//! out the actions it returns. On stop it says goodbye (the death message, retained) itself.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use native_tls::TlsConnector;
use rumqttc::{
    Client, ConnectionError, Event as MqttEvent, LastWill, MqttOptions, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};

use super::state::{Action, Event, Machine, Now, TICK};
use super::uplink::{Shared, UplinkConfig, UplinkParts, MAX_PACKET};

/// How long a stop waits for the death message to reach the broker.
const GOODBYE: Duration = Duration::from_secs(2);

type Events = Receiver<Result<MqttEvent, ConnectionError>>;

/// A lost or refused connection as the installer reads it (status, web UI): without the errno.
fn words(e: &ConnectionError) -> String {
    concentrator_hal::without_errno(&e.to_string()).to_string()
}
type Uplink = Machine<Publish>;

enum Ended {
    Stopped,
    /// Lost, after being connected this long (`None`: it never connected).
    Lost(String, Option<Duration>),
}

pub(crate) fn run(
    config: UplinkConfig,
    parts: UplinkParts,
    connector: Option<TlsConnector>,
    shared: &Shared,
) {
    let mut machine: Uplink = Machine::new(&config, parts);
    // Connections made; an attempt carries the next number (in its will, and in its birth if it connects).
    let mut made: u32 = 0;
    while !shared.stopping() {
        let number = made.wrapping_add(1);
        let ended = connection(&config, &mut machine, connector.as_ref(), shared, number);
        match ended {
            Ended::Stopped => {
                machine.handle(Event::Stopped, Now::system());
                break;
            }
            Ended::Lost(why, up) => {
                if up.is_some() {
                    made = number;
                }
                let actions = machine.handle(Event::Lost { up }, Now::system());
                shared.update(|s| {
                    machine.counters().fill(s);
                    s.connected = false;
                    s.failures += 1;
                    s.last_error = Some(why.clone());
                });
                for a in actions {
                    if let Action::ReconnectAfter(wait) = a {
                        log::warn!(
                            "uplink: connection {number} to {}:{} lost or refused: {why}; next attempt in {:.1} s",
                            config.host,
                            config.port,
                            wait.as_secs_f64()
                        );
                        shared.sleep(wait);
                    }
                }
            }
        }
    }
    shared.update(|s| s.connected = false);
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
            concentrator_protocol::Topic::status(&config.gateway),
            will,
            QoS::AtLeastOnce,
            true,
        ));
    o
}

/// Carries out the machine's actions on `client`; a failed subscribe ends the connection.
fn act(
    client: &Client,
    machine: &mut Uplink,
    actions: Vec<Action<Publish>>,
    now: Now,
) -> Result<(), String> {
    for a in actions {
        match a {
            Action::Subscribe(topic) => client
                .try_subscribe(topic, QoS::AtLeastOnce)
                .map_err(|e| format!("subscribe: {e}"))?,
            Action::Publish {
                topic,
                payload,
                retain,
                entry,
                what,
            } => {
                if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
                    match entry {
                        // The request queue is full: the entry goes again on a later turn.
                        Some(id) => drop(machine.handle(Event::NotQueued(id), now)),
                        None => log::warn!("uplink: cannot queue {what}: {e}"),
                    }
                }
            }
            Action::Ack(p) => {
                if let Err(e) = client.try_ack(&p) {
                    log::warn!("uplink: cannot acknowledge a downlink message to the broker: {e}");
                }
            }
            // Only the end of a connection asks for a reconnect; `run` handles it.
            Action::ReconnectAfter(_) => {}
        }
    }
    Ok(())
}

/// One connection, from CONNECT to its end.
fn connection(
    config: &UplinkConfig,
    machine: &mut Uplink,
    connector: Option<&TlsConnector>,
    shared: &Shared,
    number: u32,
) -> Ended {
    let death = machine.death(number, Now::system());
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
            Ok(Err(e)) => return Ended::Lost(words(&e), None),
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
    shared.update(|st| {
        st.connected = true;
        st.connections = number;
    });
    // A "link is back" from before this connection must not cut the backoff after its end short.
    shared
        .wake
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let step = |machine: &mut Uplink, event: Event<'_, Publish>| -> Result<(), String> {
        let now = Now::system();
        let actions = machine.handle(event, now);
        let done = act(&client, machine, actions, now);
        shared.update(|s| machine.counters().fill(s));
        done
    };
    if let Err(e) = step(machine, Event::Connected { number }) {
        return Ended::Lost(e, Some(since.elapsed()));
    }
    loop {
        if shared.stopping() {
            goodbye(&client, &rx, machine.status_topic(), death);
            return Ended::Stopped;
        }
        if let Err(e) = step(machine, Event::Tick) {
            return Ended::Lost(e, Some(since.elapsed()));
        }
        match rx.recv_timeout(TICK) {
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                let (topic, payload) = (p.topic.clone(), p.payload.clone());
                let event = Event::Incoming {
                    topic: &topic,
                    payload: &payload,
                    delivery: p,
                };
                if let Err(e) = step(machine, event) {
                    return Ended::Lost(e, Some(since.elapsed()));
                }
            }
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => return Ended::Lost(words(&e), Some(since.elapsed())),
            Err(RecvTimeoutError::Disconnected) => {
                return Ended::Lost("the MQTT event loop ended".into(), Some(since.elapsed()))
            }
        }
    }
}

/// On stop: the death message (retained, as the will would have been), then a clean disconnect.
fn goodbye(client: &Client, rx: &Events, topic: String, death: Vec<u8>) {
    if client
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
    let _ = client.try_disconnect();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        match rx.recv_timeout(TICK) {
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    log::info!("uplink: disconnected (stop)");
}
