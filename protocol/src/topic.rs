//! The MQTT topic scheme. Topics carry the gateway id and a meter's TID, never a permanent identity.
//!
//! ```text
//! c/v1/{gateway}/up/{scope}/{kind}      gateway → head-end (QoS 1, not retained)
//! c/v1/{gateway}/down/{scope}/{kind}    head-end → gateway (QoS 1, not retained)
//! c/v1/{gateway}/status                 birth (retained, by the gateway) and death (retained will)
//! ```
//!
//! `{scope}` is `gw` for gateway-level messages, else the meter's TID (16 lower-case hex digits; before the
//! meter has a TID, the random attach handle of its [`crate::Attach`]). `{kind}` is [`Kind::topic_name`].

use std::fmt;

use crate::ids::{GatewayId, Tid};
use crate::kind::{Flow, Kind, Priority};
use crate::ProtocolError;

/// First two levels of every topic.
pub const PREFIX: &str = "c/v1";

/// Who a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The gateway itself.
    Gateway,
    /// A meter, by TID (or attach handle).
    Meter(Tid),
}

/// "the gateway", or "meter TID" with the TID in hex as in topics.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Gateway => f.write_str("the gateway"),
            Scope::Meter(t) => write!(f, "meter {t}"),
        }
    }
}

impl Scope {
    /// The TID, if a meter's.
    pub fn tid(self) -> Option<Tid> {
        match self {
            Scope::Gateway => None,
            Scope::Meter(t) => Some(t),
        }
    }
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A data topic.
    Data {
        /// The gateway.
        gateway: GatewayId,
        /// Up or down.
        flow: Flow,
        /// The gateway or a meter.
        scope: Scope,
        /// The kind.
        kind: Kind,
    },
    /// The retained birth/death topic.
    Status {
        /// The gateway.
        gateway: GatewayId,
    },
}

impl Topic {
    /// The topic for a message of `kind` about `scope` from or to `gateway` (birth and death go to status).
    pub fn for_message(gateway: &GatewayId, scope: Scope, kind: Kind) -> Topic {
        if matches!(kind, Kind::Birth | Kind::Death) {
            return Topic::Status {
                gateway: gateway.clone(),
            };
        }
        Topic::Data {
            gateway: gateway.clone(),
            flow: kind.flow(),
            scope,
            kind,
        }
    }

    /// The gateway's status topic.
    pub fn status(gateway: &GatewayId) -> String {
        format!("{PREFIX}/{gateway}/status")
    }

    /// What a gateway subscribes to: everything sent down to it.
    pub fn gateway_subscription(gateway: &GatewayId) -> String {
        format!("{PREFIX}/{gateway}/down/#")
    }

    /// What a head-end subscribes to (prefix with `$share/{group}/` to spread over workers).
    pub const HEAD_END_SUBSCRIPTIONS: [&'static str; 2] = ["c/v1/+/up/#", "c/v1/+/status"];

    /// The same, split into two lanes for two connections: `routine` the bulk that may wait
    /// (readings and backfilled readings, [`Priority::Routine`]), else everything else (status, AKA,
    /// receipts, results, events, account summaries). A broker keeps one queue per connection, so a
    /// backlog of readings never stands in front of a receipt. Together they cover every uplink kind
    /// once.
    pub fn head_end_lane(routine: bool) -> Vec<String> {
        let mut topics: Vec<String> = Kind::ALL
            .iter()
            .filter(|k| k.flow() == Flow::Up && !matches!(k, Kind::Birth | Kind::Death))
            .filter(|k| (k.priority() == Priority::Routine) == routine)
            .map(|k| format!("{PREFIX}/+/up/+/{}", k.topic_name()))
            .collect();
        if !routine {
            topics.push(format!("{PREFIX}/+/status"));
        }
        topics
    }

    /// The gateway.
    pub fn gateway(&self) -> &GatewayId {
        match self {
            Topic::Data { gateway, .. } | Topic::Status { gateway } => gateway,
        }
    }

    /// Parses a topic name (no wildcards).
    pub fn parse(topic: &str) -> Result<Topic, ProtocolError> {
        let bad = |reason: &str| ProtocolError::BadTopic {
            topic: topic.chars().take(200).collect(),
            reason: reason.into(),
        };
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| bad("it does not start with c/v1/"))?;
        let levels: Vec<&str> = rest.split('/').collect();
        let gateway = GatewayId::new(levels[0]).map_err(|_| bad("bad gateway id level"))?;
        match levels.as_slice() {
            [_, "status"] => Ok(Topic::Status { gateway }),
            [_, dir, scope, kind] => {
                let flow = match *dir {
                    "up" => Flow::Up,
                    "down" => Flow::Down,
                    _ => return Err(bad("the third level must be up, down or status")),
                };
                let scope = if *scope == "gw" {
                    Scope::Gateway
                } else {
                    Scope::Meter(
                        Tid::from_hex(scope).map_err(|_| bad("scope is neither gw nor a TID"))?,
                    )
                };
                let kind = Kind::from_topic(flow, kind)
                    .filter(|k| !matches!(k, Kind::Birth | Kind::Death))
                    .ok_or_else(|| bad("unknown kind for this direction"))?;
                Ok(Topic::Data {
                    gateway,
                    flow,
                    scope,
                    kind,
                })
            }
            _ => Err(bad("wrong number of levels")),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Status { gateway } => write!(f, "{PREFIX}/{gateway}/status"),
            Topic::Data {
                gateway,
                flow,
                scope,
                kind,
            } => {
                let dir = match flow {
                    Flow::Up => "up",
                    Flow::Down => "down",
                };
                write!(f, "{PREFIX}/{gateway}/{dir}/")?;
                match scope {
                    Scope::Gateway => f.write_str("gw")?,
                    Scope::Meter(t) => write!(f, "{t}")?,
                }
                write!(f, "/{}", kind.topic_name())
            }
        }
    }
}

/// A Mosquitto ACL for the topic scheme (docs/uplink.md): the head-end (certificate CN `head-end`)
/// reads every gateway's uplink and status and writes every downlink; each gateway (user = its
/// certificate's CN) only its own topics. Used by the head-end's pilot set-up and the test brokers.
pub const MOSQUITTO_ACL: &str = "\
# The head-end reads every gateway's uplink and status and writes every gateway's downlink.
user head-end
topic read c/v1/+/up/#
topic read c/v1/+/status
topic write c/v1/+/down/#

# Every gateway (user = its certificate's CN) only its own topics.
pattern write c/v1/%u/up/#
pattern write c/v1/%u/status
pattern read c/v1/%u/down/#
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_lanes_cover_every_uplink_topic_once() {
        let gw = GatewayId::new("gw-7").unwrap();
        let tid = Tid([1, 2, 3, 4, 5, 6, 7, 8]);
        let matches = |filter: &str, topic: &str| {
            let (f, t): (Vec<_>, Vec<_>) =
                (filter.split('/').collect(), topic.split('/').collect());
            f.len() == t.len() && f.iter().zip(&t).all(|(a, b)| *a == "+" || a == b)
        };
        let lanes = [Topic::head_end_lane(false), Topic::head_end_lane(true)];
        for kind in Kind::ALL.iter().filter(|k| k.flow() == Flow::Up) {
            for scope in [Scope::Gateway, Scope::Meter(tid)] {
                let t = Topic::for_message(&gw, scope, *kind).to_string();
                let hits: Vec<bool> = lanes
                    .iter()
                    .map(|l| l.iter().filter(|f| matches(f, &t)).count() == 1)
                    .collect();
                assert!(hits[0] != hits[1], "{t}: in exactly one lane, once");
                assert_eq!(hits[1], kind.priority() == Priority::Routine, "{t}");
            }
        }
        assert_eq!(
            lanes[1],
            ["c/v1/+/up/+/readings", "c/v1/+/up/+/backfill"],
            "the routine lane"
        );
    }

    #[test]
    fn round_trips() {
        let gw = GatewayId::new("gw-7").unwrap();
        let tid = Tid([1, 2, 3, 4, 5, 6, 7, 8]);
        for kind in Kind::ALL {
            for scope in [Scope::Gateway, Scope::Meter(tid)] {
                let t = Topic::for_message(&gw, scope, *kind);
                let s = t.to_string();
                assert_eq!(Topic::parse(&s).unwrap(), t, "{s}");
            }
        }
        assert_eq!(
            Topic::for_message(&gw, Scope::Meter(tid), Kind::Readings).to_string(),
            "c/v1/gw-7/up/0102030405060708/readings"
        );
        assert_eq!(Topic::status(&gw), "c/v1/gw-7/status");
    }

    #[test]
    fn refuses_foreign_topics() {
        for t in [
            "",
            "c/v1",
            "c/v1/",
            "c/v2/gw/status",
            "c/v1/+/status",
            "c/v1/gw/up/gw/top-up",
            "c/v1/gw/down/gw/readings",
            "c/v1/gw/up/xyz/readings",
            "c/v1/gw/up/gw/birth",
            "c/v1/gw/up/gw/readings/extra",
            "c/v1/gw/sideways/gw/readings",
        ] {
            assert!(Topic::parse(t).is_err(), "{t}");
        }
    }
}
