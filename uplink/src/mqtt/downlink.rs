//! Downlink: what the daemon plugs in (security contexts, the command handler) and the checks every
//! received message passes before anything acts on it (docs/protocol.md, *Receiving a message*).
//!
//! Order: the topic parses and names this gateway's downlink; the envelope opens with the scope's
//! security context (`protect::open`: structure, version, DIRECTION, algorithms, key lifetime, MAC-I,
//! COUNT, time window, then the frame and its kind and TID against the topic); an acknowledgement deletes
//! outbox entries; a message id already executed is answered "already done" and not executed again;
//! anything else goes to the [`Downlink`] handler, is recorded as executed (flushed), and is answered.
//! A message that fails a check is logged with the reason, answered with a "verification failed" event
//! (code 40; and a command result when its id can be read), and never acted on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use concentrator_protocol::{protect, Frame, Kind, Protection, ProtocolError, Scope, Topic};
use concentrator_security::envelope::{Channel, Sender};

/// The security contexts the uplink seals and opens with, owned by the daemon (it runs AKA and keeps the
/// counters).
pub trait Channels: Send {
    /// The channel of `scope` (the gateway's own, or a meter's by TID) and the sender identity to seal
    /// with (the meter's TID, kind 1, or the gateway id, kind 3). `None` while the scope has no security
    /// context: its sealed messages wait in the outbox and its sealed downlink is refused.
    fn channel(&mut self, scope: Scope) -> Option<(&mut Channel, Sender)>;

    /// Called after a message of `scope` was opened and carried out; the place to persist
    /// `Channel::last_received` so a restart keeps refusing replays.
    fn opened(&mut self, _scope: Scope) {}

    /// The scope a message queued under `queued` is sent in now: the daemon may queue a meter's messages
    /// under a stable local scope and map it to the meter's current TID here (the session relabels the
    /// frame's TID and topic at send time). `None`: not sendable yet (no security context); it waits.
    /// Default: the same scope.
    fn wire_scope(&self, queued: Scope) -> Option<Scope> {
        Some(queued)
    }

    /// The scope a downlink message that arrived on wire scope `wire` is about, as the daemon queues it
    /// (the inverse of [`Channels::wire_scope`]); answers are queued under it. Default: the same scope.
    fn local_scope(&self, wire: Scope) -> Scope {
        wire
    }

    /// Whether a message of `kind` queued under `queued` can be sent now. The session lists only such
    /// entries, so a scope without a context does not hold back the others. Default: plain kinds always,
    /// sealed ones when [`Channels::wire_scope`] names a scope.
    fn sendable(&self, queued: Scope, kind: Kind) -> bool {
        kind.protection() == Protection::Plain || self.wire_scope(queued).is_some()
    }

    /// The channel to seal a message of `kind` with on wire scope `wire` (an AKA run seals its security
    /// mode complete with the new context while the scope's other messages still use the old one).
    /// Default: [`Channels::channel`].
    fn seal_channel(&mut self, wire: Scope, _kind: Kind) -> Option<(&mut Channel, Sender)> {
        self.channel(wire)
    }

    /// Opens a downlink message that arrived on `topic` (every check of `protect::open`). Default: with
    /// the scope's channel. An AKA client overrides it to open a security mode command with the run's new
    /// keys, and to try the previous context of a scope whose keys were just replaced.
    fn open(&mut self, topic: &Topic, payload: &[u8], now: u64) -> Result<Frame, ProtocolError> {
        let sealed = match topic {
            Topic::Data { kind, .. } => kind.protection() == Protection::Sealed,
            Topic::Status { .. } => false,
        };
        let ch = match topic {
            Topic::Data { scope, .. } if sealed => self.channel(*scope).map(|(c, _)| c),
            _ => None,
        };
        protect::open(topic, payload, ch, now)
    }

    /// An opened AKA message (challenge, security mode command, TID assignment) on wire scope `wire`;
    /// the daemon's AKA client queues its answers in the outbox. Returns whether the uplink should
    /// acknowledge it with kind 0x09 (the TID assignment). Default: there is no AKA client; logged.
    fn aka(&mut self, wire: Scope, frame: &Frame, _now: u64) -> bool {
        log::warn!(
            "uplink: {:?} on {wire:?} ignored: this gateway runs no AKA (provisioned keys)",
            frame.kind()
        );
        false
    }

    /// Called on every turn of the uplink loop while connected (about every 50 ms): timers of the AKA
    /// client, re-authentication, new runs.
    fn tick(&mut self, _now: u64) {}

    /// Called when the connection to the broker ends: AKA runs in progress are abandoned (they restart
    /// once connected again).
    fn disconnected(&mut self) {}
}

/// Whether a kind belongs to the AKA exchange the [`Channels`] owner runs (handed to [`Channels::aka`]).
pub fn is_aka(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::AkaChallenge | Kind::SecurityModeCommand | Kind::TidAssignment
    )
}

/// A table of channels, for tests and for daemons that keep them in memory.
#[derive(Debug, Default)]
pub struct ChannelTable {
    map: HashMap<Scope, (Channel, Sender)>,
}

impl ChannelTable {
    /// An empty table.
    pub fn new() -> Self {
        ChannelTable::default()
    }

    /// Adds or replaces the channel of `scope`.
    pub fn insert(&mut self, scope: Scope, channel: Channel, sender: Sender) {
        self.map.insert(scope, (channel, sender));
    }
}

impl Channels for ChannelTable {
    fn channel(&mut self, scope: Scope) -> Option<(&mut Channel, Sender)> {
        self.map.get_mut(&scope).map(|(c, s)| (c, s.clone()))
    }
}

/// What the daemon did with a downlink message; for commands it becomes the command result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// A `concentrator_protocol::result_code`.
    pub code: u16,
    /// Why, for people, when it failed.
    pub reason: Option<String>,
}

impl Outcome {
    /// Carried out.
    pub fn done() -> Self {
        Outcome {
            code: concentrator_protocol::result_code::DONE,
            reason: None,
        }
    }

    /// Not carried out, with a result code and a reason.
    pub fn failed(code: u16, reason: impl Into<String>) -> Self {
        Outcome {
            code,
            reason: Some(reason.into()),
        }
    }
}

/// A command that is being carried out elsewhere (the ledger thread, a bus): the uplink loop polls it on
/// every turn and answers once it completes, while acknowledgements, refills and other messages go on.
pub struct Ticket {
    poll: Box<dyn FnMut() -> Option<Outcome> + Send>,
    wait: Duration,
    deadline: Instant,
    timeout: Outcome,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("deadline", &self.deadline)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// A ticket that `poll` completes (`Some` once the outcome is known); after `wait` without one it
    /// completes with `timeout` (which should be a temporary code: the work may still finish).
    pub fn new(
        wait: Duration,
        timeout: Outcome,
        poll: impl FnMut() -> Option<Outcome> + Send + 'static,
    ) -> Self {
        Ticket {
            poll: Box::new(poll),
            wait,
            deadline: Instant::now() + wait,
            timeout,
        }
    }

    /// Counts the wait from `now` (when the uplink took the ticket, by its clock).
    pub(crate) fn started(&mut self, now: Instant) {
        self.deadline = now + self.wait;
    }

    /// The outcome, once there is one (or the deadline has passed).
    pub fn poll(&mut self) -> Option<Outcome> {
        self.poll_at(Instant::now())
    }

    /// [`Ticket::poll`] with the clock read by the caller.
    pub fn poll_at(&mut self, now: Instant) -> Option<Outcome> {
        match (self.poll)() {
            Some(o) => Some(o),
            None if now >= self.deadline => Some(self.timeout.clone()),
            None => None,
        }
    }
}

/// How a handler took a message: done at once, or a [`Ticket`] the uplink completes later.
#[derive(Debug)]
pub enum Handled {
    /// Carried out (or refused) already.
    Now(Outcome),
    /// Under way.
    Later(Ticket),
}

/// The daemon's side of the downlink: called once per verified, not yet executed message (everything but
/// acknowledgements, which the uplink handles), on the uplink thread. Work that waits on another thread
/// hands back a [`Ticket`] from [`Downlink::start`] instead of blocking the uplink.
pub trait Downlink: Send {
    /// Carries out `frame` (about `scope`) and says how it went.
    fn handle(&mut self, scope: Scope, frame: &Frame) -> Outcome;

    /// Starts `frame`: by default [`Downlink::handle`] at once; a handler overrides it to return a
    /// ticket for work that waits on another thread.
    fn start(&mut self, scope: Scope, frame: &Frame) -> Handled {
        Handled::Now(self.handle(scope, frame))
    }
}

impl<F: FnMut(Scope, &Frame) -> Outcome + Send> Downlink for F {
    fn handle(&mut self, scope: Scope, frame: &Frame) -> Outcome {
        self(scope, frame)
    }
}

/// Whether a kind is a command, answered with a command result (0x08); other downlink kinds are answered
/// with an acknowledgement (0x09). A time sync is one: its result says what the gateway did with the
/// head-end's time (kept its own, stepped, refused).
pub fn is_command(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::TopUp
            | Kind::RelayCommand
            | Kind::TariffUpdate
            | Kind::ConfigChange
            | Kind::AccountRestore
            | Kind::TenancyChange
            | Kind::TimeSync
            | Kind::AnchorRecorded
            | Kind::BackfillRequest
    )
}
