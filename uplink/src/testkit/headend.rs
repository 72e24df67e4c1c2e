//! A fake head-end: a rumqttc client with its own certificate (CN `head-end`) that opens every uplink
//! message with the scope's security context, records it, and acknowledges it by message id (kind 0x89,
//! batched); it also sends sealed commands down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concentrator_protocol::*;
use concentrator_security::envelope::{Channel, Sender, SenderKind};
use concentrator_security::Direction;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use super::broker::Broker;
use super::{context, unix_now};

#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub frame: Frame,
}

#[derive(Debug, Default)]
pub struct Log {
    /// Every uplink message opened, in arrival order (duplicates included).
    pub up: Vec<Received>,
    /// Status messages (birth, death), with the retain flag.
    pub status: Vec<(Frame, bool)>,
    /// Messages that failed to open.
    pub refused: Vec<String>,
}

#[allow(missing_debug_implementations)]
pub struct HeadEnd {
    pub client: Client,
    pub log: Arc<Mutex<Log>>,
    pub ack: Arc<AtomicBool>,
    channels: Arc<Mutex<HashMap<Scope, Channel>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

pub fn head_end_sender() -> Sender {
    Sender {
        kind: SenderKind::Device,
        id: b"head-end".to_vec(),
    }
}

impl HeadEnd {
    pub fn connect(broker: &Broker, id: &str) -> HeadEnd {
        let issued = broker.pki.client("head-end");
        let tls = crate::mqtt::TlsIdentity {
            ca_pem: broker.pki.ca_pem(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        let mut o = MqttOptions::new(id, "localhost", broker.port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(300 * 1024, 300 * 1024)
            .set_inflight(200)
            .set_transport(Transport::tls_with_config(
                TlsConfiguration::NativeConnector(tls.connector().unwrap()),
            ));
        let (client, mut conn) = Client::new(o, 1024);
        let log = Arc::new(Mutex::new(Log::default()));
        let ack = Arc::new(AtomicBool::new(true));
        let channels = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(String, Vec<u8>, bool)>();
        let (sub_client, st) = (client.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            for ev in conn.iter() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in Topic::HEAD_END_SUBSCRIPTIONS {
                            let _ = sub_client.try_subscribe(t, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send((p.topic.clone(), p.payload.to_vec(), p.retain))
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let (l, a, c, pubc, st) = (
            log.clone(),
            ack.clone(),
            channels.clone(),
            client.clone(),
            stop.clone(),
        );
        let worker = std::thread::spawn(move || {
            let mut acks: HashMap<(GatewayId, Scope), Vec<MessageId>> = HashMap::new();
            let mut last_flush = Instant::now();
            while !st.load(Ordering::Relaxed) {
                match rx.recv_timeout(Duration::from_millis(10)) {
                    Ok((topic, payload, retain)) => {
                        let Ok(t) = Topic::parse(&topic) else {
                            l.lock().unwrap().refused.push(topic);
                            continue;
                        };
                        if let Topic::Status { .. } = t {
                            match protect::open(&t, &payload, None, unix_now()) {
                                Ok(f) => l.lock().unwrap().status.push((f, retain)),
                                Err(e) => l.lock().unwrap().refused.push(format!("{topic}: {e}")),
                            }
                            continue;
                        }
                        let Topic::Data {
                            gateway,
                            scope,
                            kind,
                            ..
                        } = &t
                        else {
                            continue;
                        };
                        let opened = {
                            let mut chs = c.lock().unwrap();
                            let ch = chs.entry(*scope).or_insert_with(|| {
                                Channel::new(context(*scope), Direction::Downlink, 300)
                            });
                            protect::open(&t, &payload, Some(ch), unix_now())
                        };
                        match opened {
                            Ok(frame) => {
                                if *kind != Kind::AckUp && a.load(Ordering::Relaxed) {
                                    acks.entry((gateway.clone(), *scope))
                                        .or_default()
                                        .push(frame.header.id);
                                }
                                l.lock().unwrap().up.push(Received { topic, frame });
                            }
                            Err(e) => l.lock().unwrap().refused.push(format!("{topic}: {e}")),
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                let due = acks.values().map(Vec::len).sum::<usize>() >= 64
                    || last_flush.elapsed() >= Duration::from_millis(20);
                if due {
                    for ((gw, scope), ids) in acks.drain() {
                        let frame = Frame::new(
                            MessageId::new(*b"headend0", rand::random()),
                            scope.tid(),
                            unix_now(),
                            Body::AckDown(Ack { ids }),
                        );
                        let payload = {
                            let mut chs = c.lock().unwrap();
                            let ch = chs.entry(scope).or_insert_with(|| {
                                Channel::new(context(scope), Direction::Downlink, 300)
                            });
                            protect::payload(Some(ch), &head_end_sender(), unix_now(), &frame)
                                .unwrap()
                        };
                        let topic = Topic::for_message(&gw, scope, Kind::AckDown);
                        let _ = pubc.publish(topic.to_string(), QoS::AtLeastOnce, false, payload);
                    }
                    last_flush = Instant::now();
                }
            }
        });
        HeadEnd {
            client,
            log,
            ack,
            channels,
            stop,
            threads: vec![reader, worker],
        }
    }

    /// Seals a downlink frame with the next COUNT of the scope's channel.
    pub fn seal(&self, scope: Scope, frame: &Frame) -> Vec<u8> {
        let mut chs = self.channels.lock().unwrap();
        let ch = chs
            .entry(scope)
            .or_insert_with(|| Channel::new(context(scope), Direction::Downlink, 300));
        protect::payload(Some(ch), &head_end_sender(), unix_now(), frame).unwrap()
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }

    /// Waits until `pred` holds for the log, or panics with `what` after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&Log) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if pred(&self.log.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Uplink frames of `kind`, first arrival of each message id only, in arrival order.
    pub fn unique(&self, kind: Kind) -> Vec<Frame> {
        let log = self.log.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        log.up
            .iter()
            .filter(|r| r.frame.kind() == kind && seen.insert(r.frame.header.id))
            .map(|r| r.frame.clone())
            .collect()
    }
}

impl Drop for HeadEnd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
