//! The uplink thread: its settings, what the daemon hands it, and its handle (start, status, stop).
//!
//! One thread per gateway runs connections one after another ([`super::session`], around the state
//! machine of [`super::state`]); each connection is a
//! fresh rumqttc sync `Client`/`Connection` pair (a small tokio runtime of rumqttc's own, on a reader
//! thread that only forwards events). A new client per connection lets every connection carry its own
//! last will (the death message names the connection number of its birth) and leaves nothing from a dead
//! connection in rumqttc's queues: the outbox, not rumqttc, is what survives a link cut.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concentrator_protocol::{GatewayId, InventoryMeter, ModemReport};

use super::backoff::Backoff;
use super::downlink::{Channels, Downlink};
use super::error::UplinkError;
use super::executed::Executed;
use super::outbox::Outbox;
use super::sled_outbox::SledOutbox;
use super::tls::TlsIdentity;

/// Largest MQTT packet either way: the largest frame (256 KiB) sealed, with topic and headers.
pub const MAX_PACKET: usize = 260 * 1024;

/// Settings of the uplink.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// The gateway id: the MQTT client id, the topics' gateway level and the certificate's CN.
    pub gateway: GatewayId,
    /// The broker's host name (must match its certificate).
    pub host: String,
    /// The broker's TLS port (8883).
    pub port: u16,
    /// Certificates and key.
    pub tls: TlsIdentity,
    /// Plain TCP without TLS (`tls` unused). Only for a broker on the loopback interface in tests: the
    /// daemon accepts it only with `mqtt://` and a loopback host. Default off.
    pub plain_tcp: bool,
    /// MQTT keep-alive (60 s: a dead 3G link is noticed within 1.5 × that).
    pub keep_alive: Duration,
    /// Longest TCP + TLS + CONNECT exchange (30 s, for slow 3G attaches).
    pub connect_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Most messages sent and not yet acknowledged by the head-end (128).
    pub window: usize,
    /// A message not acknowledged this long on a live connection is sent again, same id (120 s).
    pub resend_after: Duration,
    /// Software version for the birth message.
    pub software: String,
    /// When the daemon started, unix seconds, for the birth message.
    pub started_at: u64,
}

impl UplinkConfig {
    /// Defaults for `gateway` at `host:port` with `tls`.
    pub fn new(gateway: GatewayId, host: impl Into<String>, port: u16, tls: TlsIdentity) -> Self {
        UplinkConfig {
            gateway,
            host: host.into(),
            port,
            tls,
            plain_tcp: false,
            keep_alive: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            window: 128,
            resend_after: Duration::from_secs(120),
            software: env!("CARGO_PKG_VERSION").into(),
            started_at: 0,
        }
    }

    fn validate(&self) -> Result<(), UplinkError> {
        let bad = |field, value: String, reason: &str| {
            Err(UplinkError::Config {
                field,
                value,
                reason: reason.into(),
            })
        };
        if self.host.is_empty() {
            return bad("host", String::new(), "name the broker's host");
        }
        if self.port == 0 {
            return bad("port", "0".into(), "1..=65535, normally 8883");
        }
        if !(1..=u16::MAX as usize).contains(&self.window) {
            return bad("window", self.window.to_string(), "1..=65535");
        }
        if self.keep_alive < Duration::from_secs(5) {
            return bad(
                "keep_alive",
                format!("{:?}", self.keep_alive),
                "at least 5 s (rumqttc's minimum)",
            );
        }
        if self.connect_timeout < Duration::from_secs(1) {
            return bad(
                "connect_timeout",
                format!("{:?}", self.connect_timeout),
                "at least 1 s",
            );
        }
        Ok(())
    }
}

/// The modem and meters for the birth message, asked on every connection.
pub type Inventory = dyn FnMut() -> (ModemReport, Vec<InventoryMeter>) + Send;

/// What the daemon hands the uplink.
pub struct UplinkParts {
    /// The uplink's own outbox (readings, events); command results and events of the uplink go here too.
    pub outbox: Arc<SledOutbox>,
    /// Other outboxes drained after the uplink's within each priority (the ledger's, adapted by the
    /// daemon).
    pub others: Vec<Arc<dyn Outbox>>,
    /// Executed downlink ids.
    pub executed: Arc<Executed>,
    /// Security contexts.
    pub channels: Box<dyn Channels>,
    /// The command handler.
    pub downlink: Box<dyn Downlink>,
    /// The birth message's inventory.
    pub inventory: Box<Inventory>,
}

impl std::fmt::Debug for UplinkParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkParts")
            .field("outbox", &self.outbox)
            .field("others", &self.others)
            .finish_non_exhaustive()
    }
}

/// What the uplink is doing, for the status page and the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Connections made since start (the birth's connection number).
    pub connections: u32,
    /// Connection attempts that failed or connections that were lost.
    pub failures: u64,
    /// Outbox messages published (resends included).
    pub sent: u64,
    /// Outbox entries deleted on the head-end's acknowledgement.
    pub acked: u64,
    /// Sent and not yet acknowledged.
    pub in_flight: usize,
    /// Downlink messages refused by a check (never acted on).
    pub refused: u64,
    /// Downlink messages carried out.
    pub executed: u64,
    /// Downlink messages answered "already done" instead of being carried out again.
    pub repeats: u64,
    /// Commands that failed temporarily (answered "try later", not remembered as executed).
    pub temporary: u64,
    /// Messages sent three times or more without an acknowledgement (the head-end may refuse them).
    pub unacknowledged_resends: usize,
    /// Commands under way (waiting for the ledger or a bus).
    pub running: usize,
    /// The last connection error.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) status: Mutex<UplinkStatus>,
    /// Set by [`LinkWaker::link_is_back`]: the reconnect backoff under way ends now.
    pub(crate) wake: AtomicBool,
}

impl Shared {
    pub(crate) fn update(&self, f: impl FnOnce(&mut UplinkStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Waits `wait`, or less when the uplink is stopped or woken ([`LinkWaker`]) meanwhile.
    pub(crate) fn sleep(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.stopping() {
            if self.wake.swap(false, Ordering::Relaxed) {
                log::info!("uplink: the data link is back; connecting now instead of waiting out the backoff");
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(super::state::TICK.min(left));
        }
    }
}

/// Ends the uplink's reconnect backoff early: [`Uplink::waker`].
#[derive(Debug, Clone)]
pub struct LinkWaker(Arc<Shared>);

impl LinkWaker {
    /// The network is back: if the uplink is waiting to reconnect, it connects now. While connected it
    /// changes nothing (the mark is cleared at the next connection).
    pub fn link_is_back(&self) {
        self.0.wake.store(true, Ordering::Relaxed);
    }
}

/// The running uplink. Dropping it stops it, like [`Uplink::stop`].
#[derive(Debug)]
pub struct Uplink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Uplink {
    /// Checks the settings and the TLS material, then starts the uplink thread. Never blocks on the
    /// network: the thread connects (and reconnects, with backoff) on its own.
    pub fn start(config: UplinkConfig, parts: UplinkParts) -> Result<Uplink, UplinkError> {
        config.validate()?;
        let connector = if config.plain_tcp {
            None
        } else {
            Some(config.tls.connector()?)
        };
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("uplink".into())
            .spawn(move || super::session::run(config, parts, connector, &s))
            .map_err(|e| UplinkError::Thread(e.to_string()))?;
        Ok(Uplink {
            shared,
            thread: Some(thread),
        })
    }

    /// A handle that ends a reconnect backoff early, for whoever knows the network is back (the
    /// modem's supervisor after a recovery: without it, a gateway that failed to connect a few times
    /// during an outage could wait up to the backoff's cap, 120 s, after the link returned).
    pub fn waker(&self) -> LinkWaker {
        LinkWaker(Arc::clone(&self.shared))
    }

    /// A snapshot of the status.
    pub fn status(&self) -> UplinkStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops: publishes the death message itself (a clean disconnect suppresses the will), disconnects
    /// and joins the thread. What is queued stays in the outbox for the next start.
    pub fn stop(mut self) -> Result<(), UplinkError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), UplinkError> {
        self.shared.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| UplinkError::Thread("the uplink thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            log::error!("{e}");
        }
    }
}
