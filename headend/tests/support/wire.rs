//! A gateway's MQTT connection for the tests: its own client certificate from the test broker's PKI,
//! a subscription to its downlink, messages handed over on a channel.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use concentrator_headend::engine::Outgoing;
use concentrator_protocol::{unix_now, Birth, Body, Frame, ModemReport, Topic};
use concentrator_uplink::mqtt::TlsIdentity;
use concentrator_uplink::testkit::broker::Broker;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

pub struct Wire {
    pub client: Client,
    pub rx: mpsc::Receiver<(String, Vec<u8>)>,
}

impl Wire {
    pub fn connect(b: &Broker, id: &str) -> Wire {
        let issued = b.pki.client(id);
        let tls = TlsIdentity {
            ca_pem: b.pki.ca_pem(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        };
        let mut o = MqttOptions::new(id, "localhost", b.port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            // A gateway's limit (the uplink's MAX_PACKET): acknowledgements of a long backlog are
            // larger than rumqttc's default 10 KiB.
            .set_max_packet_size(260 * 1024, 260 * 1024)
            .set_transport(Transport::tls_with_config(
                TlsConfiguration::NativeConnector(tls.connector().unwrap()),
            ));
        let (client, mut conn) = Client::new(o, 1024);
        let (tx, rx) = mpsc::channel();
        let sub = client.clone();
        let topic = format!("c/v1/{id}/down/#");
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Wire { client, rx }
    }

    pub fn send(&self, msg: (String, Vec<u8>)) {
        self.client
            .publish(msg.0, QoS::AtLeastOnce, false, msg.1)
            .unwrap();
    }

    /// Publishes the gateway's birth on its status topic, as a daemon does when it starts.
    pub fn birth(&self, g: &mut super::GatewaySide, software: &str, retain: bool) {
        let frame = Frame::new(
            g.next_id(),
            None,
            unix_now(),
            Body::Birth(Birth {
                software: software.into(),
                started_at: unix_now(),
                session: 1,
                modem: ModemReport::default(),
                meters: vec![],
                outbox_len: 0,
            }),
        );
        self.client
            .publish(
                Topic::status(&g.id),
                QoS::AtLeastOnce,
                retain,
                frame.encode().unwrap(),
            )
            .unwrap();
    }

    /// The next message whose topic ends with `suffix`; on a timeout, `resend` is sent again (the
    /// step may have reached a worker that was busy or dropped it as out of order).
    pub fn expect(&self, suffix: &str, resend: Option<&(String, Vec<u8>)>) -> Outgoing {
        let until = Instant::now() + Duration::from_secs(40);
        loop {
            assert!(Instant::now() < until, "timed out waiting for …{suffix}");
            match self.rx.recv_timeout(Duration::from_secs(3)) {
                Ok((topic, payload)) if topic.ends_with(suffix) => {
                    return Outgoing { topic, payload }
                }
                Ok((topic, _)) => eprintln!("(skipped {topic} while waiting for …{suffix})"),
                Err(_) => {
                    if let Some(m) = resend {
                        self.send(m.clone());
                    }
                }
            }
        }
    }
}
