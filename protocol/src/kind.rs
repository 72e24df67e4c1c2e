//! Message kinds: the code in a frame header, the name in a topic, the direction a kind may travel in,
//! whether it travels sealed in a protected envelope, and its outbox priority.

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Gateway to head-end.
    Up,
    /// Head-end to gateway.
    Down,
}

/// How a message is protected end to end (TLS protects every message between gateway and broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// Sealed in the meter's (or the gateway's) protected envelope; refused if it arrives plain.
    Sealed,
    /// A plain frame: only the messages that exist before a security context does (attach, AKA) and the
    /// broker-published birth and death messages.
    Plain,
}

/// Outbox priority: lower drains first. Within one meter, messages of one priority keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Alarms, receipts, relay and money events, command results, security exchanges.
    Urgent = 0,
    /// Other events, account summaries, acknowledgements.
    Normal = 1,
    /// Readings: the only kind the outbox may drop when full.
    Routine = 2,
}

macro_rules! kinds {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $topic:literal, $flow:ident, $prot:ident, $prio:ident; )*) => {
        /// The kind of a message. The numeric code is in the frame header, the name in the topic.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Kind {
            $( $(#[$doc])* $name, )*
        }

        impl Kind {
            /// Every kind, in code order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];

            /// The header code.
            pub fn code(self) -> u16 {
                match self { $(Kind::$name => $code,)* }
            }

            /// The kind with header code `code`.
            pub fn from_code(code: u16) -> Option<Kind> {
                match code { $($code => Some(Kind::$name),)* _ => None }
            }

            /// The last topic level.
            pub fn topic_name(self) -> &'static str {
                match self { $(Kind::$name => $topic,)* }
            }

            /// The direction it travels in.
            pub fn flow(self) -> Flow {
                match self { $(Kind::$name => Flow::$flow,)* }
            }

            /// How it is protected.
            pub fn protection(self) -> Protection {
                match self { $(Kind::$name => Protection::$prot,)* }
            }

            /// Its default outbox priority ([`crate::Body::priority`] can raise it, e.g. for alarms).
            pub fn priority(self) -> Priority {
                match self { $(Kind::$name => Priority::$prio,)* }
            }
        }
    };
}

kinds! {
    /// A batch of register readings of one meter.
    Readings = 0x01, "readings", Up, Sealed, Routine;
    /// A meter event or alarm (tamper, relay change, register anomaly, low credit, ...).
    Event = 0x02, "event", Up, Sealed, Normal;
    /// A signed receipt for an applied credit token.
    Receipt = 0x03, "receipt", Up, Sealed, Urgent;
    /// A meter's account state, for reconciliation.
    AccountSummary = 0x04, "account", Up, Sealed, Normal;
    /// A request for AKA by a meter without a TID, its identity concealed (SUCI-style).
    Attach = 0x05, "attach", Up, Plain, Urgent;
    /// The gateway's answer to an AKA challenge on the meter's behalf.
    AkaResponse = 0x06, "aka-response", Up, Plain, Urgent;
    /// The security mode the gateway chose.
    SecurityModeComplete = 0x07, "security-mode-complete", Up, Sealed, Urgent;
    /// The outcome of a command (success or the reason it was refused).
    CommandResult = 0x08, "result", Up, Sealed, Urgent;
    /// The gateway acknowledges downlink messages by id.
    AckUp = 0x09, "ack", Up, Sealed, Normal;
    /// Retained: the gateway is online, with its inventory and modem state.
    Birth = 0x0A, "birth", Up, Plain, Urgent;
    /// Retained, the broker's last will: the gateway went offline.
    Death = 0x0B, "death", Up, Plain, Urgent;
    /// The gateway has no state for a meter's account (a new store) and asks the head-end for it.
    RestoreRequest = 0x0C, "restore-request", Up, Sealed, Urgent;
    /// The gateway's signed settlement of an account closed by a change of tenancy.
    Settlement = 0x0D, "settlement", Up, Sealed, Urgent;
    /// Readings read back from a meter's own stored history, answering a backfill request.
    Backfill = 0x0E, "backfill", Up, Sealed, Routine;
    /// An AKA challenge for a meter.
    AkaChallenge = 0x81, "aka-challenge", Down, Plain, Urgent;
    /// The algorithms the head-end allows.
    SecurityModeCommand = 0x82, "security-mode", Down, Sealed, Urgent;
    /// A new TID for a meter.
    TidAssignment = 0x83, "tid", Down, Sealed, Urgent;
    /// A signed credit token.
    TopUp = 0x84, "top-up", Down, Sealed, Urgent;
    /// Open, close or arm a meter's relay.
    RelayCommand = 0x85, "relay", Down, Sealed, Urgent;
    /// A tariff with its time-of-use calendar.
    TariffUpdate = 0x86, "tariff", Down, Sealed, Normal;
    /// The head-end's time.
    TimeSync = 0x87, "time", Down, Sealed, Normal;
    /// Configuration changes for the gateway or a meter.
    ConfigChange = 0x88, "config", Down, Sealed, Normal;
    /// The head-end acknowledges uplink messages by id.
    AckDown = 0x89, "ack", Down, Sealed, Normal;
    /// The head-end asks for a meter's account summary.
    AccountRequest = 0x8A, "account-request", Down, Sealed, Normal;
    /// The head-end's signed statement of a meter's account, answering a restore request.
    AccountRestore = 0x8B, "restore", Down, Sealed, Urgent;
    /// The head-end has durably recorded this anchor of the gateway's audit chain.
    AnchorRecorded = 0x8D, "anchor-recorded", Down, Sealed, Normal;
    /// The head-end's signed order to close a meter's account and open the next tenant's.
    TenancyChange = 0x8C, "tenancy", Down, Sealed, Urgent;
    /// The head-end asks for a meter's readings over a window it has none for.
    BackfillRequest = 0x8E, "backfill-request", Down, Sealed, Normal;
}

impl Kind {
    /// The kind in `flow` whose topic level is `name` (`ack` exists in both directions).
    pub fn from_topic(flow: Flow, name: &str) -> Option<Kind> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.flow() == flow && k.topic_name() == name)
    }
}

/// A kind as people and topics name it (`top-up`, `readings`).
impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.topic_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_per_flow() {
        for (i, a) in Kind::ALL.iter().enumerate() {
            assert_eq!(Kind::from_code(a.code()), Some(*a));
            assert_eq!(Kind::from_topic(a.flow(), a.topic_name()), Some(*a));
            assert_eq!(a.code() & 0x80 != 0, a.flow() == Flow::Down, "{a:?}");
            for b in &Kind::ALL[i + 1..] {
                assert_ne!(a.code(), b.code());
                assert!(a.flow() != b.flow() || a.topic_name() != b.topic_name());
            }
        }
    }
}
