//! The uplink in the daemon (docs/uplink.md, *In the daemon*): the outboxes in the store, readings and
//! ledger events queued from the bus and ledger threads, the MQTT uplink thread, downlink commands, the
//! birth message's inventory and the status board's view.
//!
//! Nothing here lets a bus wait on the network: a poll's readings are one local outbox write (not
//! flushed; sled flushes every 500 ms), and the uplink thread does all network I/O.

mod commands;
mod convert;
mod ledger_outbox;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use concentrator_ledger::{DurableSync, LedgerEvent, RelayState, SledStore};
use concentrator_plugin_host::Reading;
use concentrator_protocol::{
    AccountSummary, Body, GatewayId, InventoryMeter, ModemReport, Readings, RestoreRequest, Scope,
    Tid,
};
use concentrator_uplink::mqtt::{
    AppendOutbox, Executed, Outbox, SledOutbox, Uplink, UplinkConfig, UplinkParts, DEFAULT_CAPACITY,
};

pub use commands::{Commands, Route, RELAY_WAIT, TOKEN_WAIT};
pub use concentrator_uplink::contexts::{
    local_scopes, AkaChannels, AkaState, StaticChannels, AKA_TREE, COUNTS_TREE, MAX_METER_RUNS,
    RESERVE, STEP_TIMEOUT_S,
};
use concentrator_uplink::contexts::{ContextStore, SledContexts};
pub use ledger_outbox::{LedgerMapping, LedgerOutbox};

use crate::clock::unix_now;
use crate::config::{Config, Contexts, UplinkSetup};
use crate::prepay::{LedgerReports, Place, SchedulerHandles, ToLedger};
use crate::scheduler::{ReadingSink, StateSink};
use crate::status::{AkaScopeView, StatusBoard, UplinkView};

/// The uplink's store side, opened before the ledger thread starts (which reports into it).
#[derive(Debug, Clone)]
pub struct UplinkQueue {
    db: sled::Db,
    /// fsync of the store after each flush that matters (sled's flush alone does not survive a power
    /// cut; envelope COUNTs must never repeat).
    durable: DurableSync,
    outbox: Arc<SledOutbox>,
    /// The scope a meter's messages are queued under, by meter number: the provisioned TID with `keys`,
    /// the meter's local scope with `aka` (mapped to its current TID when sent).
    tids: Arc<HashMap<String, Tid>>,
    /// `tids` are local scopes (AKA), not the wire's TIDs (provisioned keys).
    aka_scopes: bool,
    /// The same by (bus, address).
    places: Arc<HashMap<(String, String), Tid>>,
    refused: Arc<AtomicU64>,
    /// The last account summary queued per meter, and when (unix seconds).
    accounts: Arc<Mutex<HashMap<String, (u64, AccountSummary)>>>,
    account_every_s: u64,
    /// The month's data use and whether readings are dropped (the SMS path's data budget).
    data: Arc<crate::sms::DataBudget>,
    /// Ends the running uplink's reconnect backoff when the modem's link comes back (set once the
    /// uplink starts; the modem's worker holds a clone of this queue from before).
    waker: Arc<std::sync::OnceLock<concentrator_uplink::mqtt::LinkWaker>>,
}

/// Octets counted per queued message on top of its frame, for the data budget: the envelope, the
/// topic, MQTT's and TLS's framing and the acknowledgement, as an allowance.
pub const WIRE_ALLOWANCE: u64 = 100;

impl UplinkQueue {
    /// Opens the outbox in the ledger's database (`ledger`), or without `[ledger]` in a store of its own
    /// (`uplink/` in `[gateway] store`).
    pub fn open(
        config: &Config,
        setup: &UplinkSetup,
        ledger: Option<&SledStore>,
    ) -> Result<Self, String> {
        let (db, durable) = match ledger {
            Some(store) => (store.db().clone(), store.durable().clone()),
            None => {
                let path = config.gateway.store.join("uplink");
                let db = concentrator_ledger::open_sled(
                    &sled::Config::new().path(&path).flush_every_ms(Some(500)),
                )
                .map_err(|e| format!("cannot open the uplink store {}: {e}; check [gateway] store is writable by the daemon and no other process uses it", path.display()))?;
                let durable = DurableSync::open(&path).map_err(|e| {
                    format!(
                        "cannot open the uplink store's log file {} for fsync: {e}",
                        path.display()
                    )
                })?;
                (db, durable)
            }
        };
        let outbox = Arc::new(
            SledOutbox::open(&db, setup.limits)
                .map_err(|e| e.to_string())?
                .with_durable(durable.clone()),
        );
        let tids: HashMap<String, Tid> = match &setup.contexts {
            Contexts::Keys(keys) => keys
                .meters
                .iter()
                .map(|m| (m.meter.clone(), m.tid))
                .collect(),
            Contexts::Aka(aka) => local_scopes(&SledContexts::open(&db)?, aka)?,
        };
        let mut places = HashMap::new();
        for m in &config.meters {
            match tids.get(m.ledger_id()) {
                Some(tid) => {
                    places.insert((m.bus.get_ref().clone(), m.address.get_ref().clone()), *tid);
                }
                None => log::warn!(
                    "meter {} ({}) has no security context or AKA credentials for the uplink; its readings are not sent",
                    m.ledger_id(),
                    m.dwelling.get_ref()
                ),
            }
        }
        Ok(UplinkQueue {
            durable,
            db,
            outbox,
            tids: Arc::new(tids),
            aka_scopes: matches!(setup.contexts, Contexts::Aka(_)),
            places: Arc::new(places),
            refused: Arc::new(AtomicU64::new(0)),
            accounts: Arc::new(Mutex::new(HashMap::new())),
            account_every_s: setup.account_every_s,
            data: Arc::new(crate::sms::DataBudget::default()),
            waker: Arc::default(),
        })
    }

    /// The data link is up again (the modem's PPP link after an outage): the uplink connects now
    /// rather than at the end of its reconnect backoff.
    pub fn link_is_back(&self) {
        if let Some(w) = self.waker.get() {
            w.link_is_back();
        }
    }

    /// The data budget's counter, shared with the SMS path.
    pub fn data_budget(&self) -> Arc<crate::sms::DataBudget> {
        Arc::clone(&self.data)
    }

    /// The IK of the gateway's own security context, read when asked (AKA renews it).
    pub fn gateway_ik(&self, contexts: &Contexts) -> Box<dyn Fn() -> Option<[u8; 16]> + Send> {
        match contexts {
            Contexts::Keys(keys) => {
                let ik = keys.gateway.ik;
                Box::new(move || Some(ik))
            }
            Contexts::Aka(_) => {
                let db = self.db.clone();
                Box::new(move || {
                    SledContexts::open(&db)
                        .ok()
                        .and_then(|c| concentrator_uplink::contexts::gateway_ik(&c))
                })
            }
        }
    }

    /// Counts what `body` adds to the month's data (frame and allowance).
    fn count(&self, scope: Scope, body: &Body) {
        let frame = concentrator_protocol::Frame::new(
            concentrator_protocol::MessageId::new([0; 8], 0),
            scope.tid(),
            unix_now(),
            body.clone(),
        );
        let n = frame.encode().map_or(0, |b| b.len() as u64) + WIRE_ALLOWANCE;
        self.data.used.fetch_add(n, Ordering::Relaxed);
    }

    fn append(&self, scope: Scope, body: Body) {
        if matches!(body, Body::Readings(_)) && self.data.exhausted.load(Ordering::Relaxed) {
            return;
        }
        self.count(scope, &body);
        if let Err(e) = self.outbox.append(scope, unix_now(), body) {
            // Log the first and then every thousandth: a full outbox refuses every reading.
            if self
                .refused
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1000)
            {
                log::warn!("uplink: {e}");
            }
        }
    }

    /// Queues an event of the gateway itself (the modem's "needs attention"); a local store insert.
    pub fn gateway_event(&self, event: concentrator_protocol::Event) {
        self.append(Scope::Gateway, Body::Event(event));
    }

    /// Queues an event about the meter at `address` on bus `bus` (its clock): in the meter's scope when
    /// it has a TID, else in the gateway's with the meter named in the detail.
    pub fn meter_event(&self, bus: &str, address: &str, mut event: concentrator_protocol::Event) {
        match self.places.get(&(bus.to_string(), address.to_string())) {
            Some(tid) => self.append(Scope::Meter(*tid), Body::Event(event)),
            None => {
                let detail = event.detail.take().unwrap_or_default();
                let mut named = format!("meter {address} on bus {bus}: {detail}");
                named.truncate(named.floor_char_boundary(256));
                event.detail = Some(named);
                self.append(Scope::Gateway, Body::Event(event));
            }
        }
    }

    /// The reading sink part of bus `bus`: each poll of a meter with a TID becomes one readings message.
    pub fn sink(&self, bus: &str) -> ReadingSink {
        let queue = self.clone();
        let bus = bus.to_string();
        Box::new(move |address: &str, polled: &[Reading]| {
            let Some(tid) = queue.places.get(&(bus.clone(), address.to_string())) else {
                return;
            };
            let readings = convert::readings(unix_now(), polled);
            if !readings.is_empty() {
                queue.append(Scope::Meter(*tid), Body::Readings(Readings { readings }));
            }
        })
    }

    /// The meter-state part of bus `bus`: a meter going offline is event 30 (warning, with the failed
    /// polls), one answering again event 31, in the meter's scope.
    pub fn state_sink(&self, bus: &str) -> StateSink {
        let queue = self.clone();
        let bus = bus.to_string();
        Box::new(move |address: &str, online: bool, failures: u32| {
            let Some(tid) = queue.places.get(&(bus.clone(), address.to_string())) else {
                return;
            };
            let (code, severity, detail) = if online {
                (
                    concentrator_protocol::event_code::METER_ONLINE,
                    concentrator_protocol::Severity::Info,
                    None,
                )
            } else {
                (
                    concentrator_protocol::event_code::METER_OFFLINE,
                    concentrator_protocol::Severity::Warning,
                    Some(format!(
                        "no valid answer to {failures} polls in a row on bus {bus}"
                    )),
                )
            };
            queue.append(
                Scope::Meter(*tid),
                Body::Event(concentrator_protocol::Event {
                    at: unix_now(),
                    code,
                    severity,
                    detail,
                    values: if online {
                        vec![]
                    } else {
                        vec![i64::from(failures)]
                    },
                }),
            );
        })
    }

    /// Queues an event of the gateway about its supply (durably: flushed before this returns); its id.
    pub fn power_event(
        &self,
        code: u16,
        severity: concentrator_protocol::Severity,
        detail: &str,
        values: Vec<i64>,
    ) -> Option<concentrator_protocol::MessageId> {
        match self.outbox.append(
            Scope::Gateway,
            unix_now(),
            Body::Event(concentrator_protocol::Event {
                at: unix_now(),
                code,
                severity,
                detail: Some(detail.to_string()),
                values,
            }),
        ) {
            Ok(a) => Some(a.id),
            Err(e) => {
                log::error!("uplink: cannot queue event {code}: {e}");
                None
            }
        }
    }

    /// Whether message `id` is still in the outbox (not yet acknowledged by the head-end).
    pub fn is_queued(&self, id: concentrator_protocol::MessageId) -> bool {
        use concentrator_uplink::mqtt::Outbox as _;
        self.outbox
            .list(64)
            .map(|l| l.iter().any(|p| p.id() == id))
            .unwrap_or(false)
    }

    /// The TID a queued message's scope travels under now: with AKA a meter's messages are queued under
    /// its local scope and relabelled when sent (`None`: no context yet, it cannot be named); with
    /// provisioned keys the queued TID is the wire's. `Some(None)`: the gateway's scope.
    fn wire_tid(&self, queued: Option<Tid>) -> Option<Option<Tid>> {
        let Some(local) = queued else {
            return Some(None);
        };
        if !self.aka_scopes {
            return Some(Some(local));
        }
        let meter = self.tids.iter().find(|(_, t)| **t == local)?.0;
        let contexts = SledContexts::open(&self.db).ok()?;
        concentrator_uplink::contexts::meter_wire_tid(&contexts, meter).map(Some)
    }

    /// Events still waiting in the outbox whose code is in `codes`, in drain order (urgent first), at
    /// most `limit`, looking at no more than 512 entries: what the SMS path may send while the data
    /// link is down. Each with its message id and TID as it travels now (`None`: the gateway's own; a meter
    /// without a security context yet is left out).
    pub fn waiting_events(
        &self,
        codes: &[u16],
        limit: usize,
    ) -> Vec<(
        concentrator_protocol::MessageId,
        Option<Tid>,
        concentrator_protocol::Event,
    )> {
        use concentrator_uplink::mqtt::Outbox as _;
        let keep = |p: &concentrator_uplink::mqtt::Pending| matches!(&p.frame.body, Body::Event(e) if codes.contains(&e.code));
        match self.outbox.list_where(limit, 512, &keep) {
            Ok(list) => list
                .into_iter()
                .filter_map(|p| match p.frame.body {
                    Body::Event(e) => {
                        Some((p.frame.header.id, self.wire_tid(p.frame.header.tid)?, e))
                    }
                    _ => None,
                })
                .collect(),
            Err(e) => {
                log::warn!("SMS path: cannot list the outbox: {e}");
                Vec::new()
            }
        }
    }

    /// Where the ledger thread reports its events.
    pub fn reports(&self) -> Box<dyn LedgerReports> {
        Box::new(self.clone())
    }

    /// Starts the uplink thread: the ledger's receipts drain through it too (`ledger`), and top-up
    /// commands go to the ledger thread (`to_ledger`).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        self,
        config: &Config,
        setup: UplinkSetup,
        ledger: Option<SledStore>,
        to_ledger: Option<Sender<ToLedger>>,
        handles: SchedulerHandles,
        status: Arc<StatusBoard>,
    ) -> Result<UplinkHandle, String> {
        let gateway = GatewayId::new(config.gateway.id.get_ref().clone())
            .map_err(|e| format!("[gateway] id cannot be used on the uplink: {e}"))?;
        let now = unix_now();
        let executed = Arc::new(
            Executed::open(&self.db, DEFAULT_CAPACITY)
                .map_err(|e| e.to_string())?
                .with_durable(self.durable.clone()),
        );
        let mut aka_states = None;
        let store: Arc<dyn ContextStore> =
            Arc::new(SledContexts::open(&self.db)?.with_durable(self.durable.clone()));
        let channels: Box<dyn concentrator_uplink::mqtt::Channels> = match &setup.contexts {
            Contexts::Keys(keys) => {
                Box::new(StaticChannels::open(store, keys, gateway.as_str(), now)?)
            }
            Contexts::Aka(aka) => {
                let c = AkaChannels::open(
                    store,
                    aka,
                    Arc::clone(&self.outbox) as Arc<dyn AppendOutbox>,
                    gateway.as_str(),
                    now,
                )?;
                aka_states = Some(c.states());
                Box::new(c)
            }
        };
        // The TID each meter has on the wire now: provisioned, or from AKA's current state.
        let provisioned: HashMap<String, Tid> = match &setup.contexts {
            Contexts::Keys(_) => (*self.tids).clone(),
            Contexts::Aka(_) => HashMap::new(),
        };
        let states = aka_states.clone();
        let wire_tid = move |meter: &str| -> Option<Tid> {
            match &states {
                None => provisioned.get(meter).copied(),
                Some(st) => st
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|a| a.scope == meter)
                    .and_then(|a| a.tid.as_deref())
                    .and_then(|t| Tid::from_hex(t).ok()),
            }
        };
        let mut others: Vec<Arc<dyn Outbox>> = Vec::new();
        let mut ledger_outbox = None;
        if let Some(store) = ledger {
            let tids = Arc::clone(&self.tids);
            let o: Arc<dyn Outbox> = Arc::new(LedgerOutbox::receipts(
                store,
                self.outbox.ledger_source(),
                move |meter| tids.get(meter).copied(),
            ));
            others.push(Arc::clone(&o));
            ledger_outbox = Some(o);
        }
        let mut routes = HashMap::new();
        let mut inventory = Vec::new();
        for m in &config.meters {
            let tid = self.tids.get(m.ledger_id()).copied();
            let meter = m.ledger_id().to_string();
            let place = Place {
                bus: m.bus.get_ref().clone(),
                address: m.address.get_ref().clone(),
            };
            if let Some(tid) = tid {
                routes.insert(
                    tid,
                    Route {
                        meter: m.ledger_id().to_string(),
                        place: place.clone(),
                    },
                );
            }
            let model = m.model.as_ref().map_or_else(
                || m.driver.get_ref().clone(),
                |x| format!("{}-{}", m.driver.get_ref(), x.get_ref()),
            );
            inventory.push((meter, model, place));
        }
        let board = Arc::clone(&status);
        let inventory = move || {
            let snapshot = board.snapshot();
            let meters = inventory
                .iter()
                .map(|(meter, model, place)| InventoryMeter {
                    tid: wire_tid(meter),
                    model: model.clone(),
                    online: snapshot.buses.get(&place.bus).is_some_and(|b| {
                        b.meters
                            .iter()
                            .any(|m| m.address == place.address && m.state == "online")
                    }),
                })
                .collect();
            let modem = snapshot
                .modem
                .as_ref()
                .map_or_else(ModemReport::default, convert::modem_report);
            (modem, meters)
        };
        let mut uc = UplinkConfig::new(
            gateway,
            setup.broker.host.clone(),
            setup.broker.port,
            setup
                .tls
                .clone()
                .unwrap_or(concentrator_uplink::mqtt::TlsIdentity {
                    ca_pem: Vec::new(),
                    cert_pem: Vec::new(),
                    key_pem: Vec::new(),
                }),
        );
        uc.plain_tcp = !setup.broker.tls;
        uc.started_at = now;
        let parts = UplinkParts {
            outbox: Arc::clone(&self.outbox),
            others,
            executed,
            channels,
            downlink: Box::new(Commands {
                routes,
                ledger: to_ledger,
                handles,
                outbox: Arc::clone(&self.outbox),
            }),
            inventory: Box::new(inventory),
        };
        let broker = format!(
            "{}://{}:{}",
            if setup.broker.tls { "mqtts" } else { "mqtt" },
            setup.broker.host,
            setup.broker.port
        );
        let uplink = Uplink::start(uc, parts).map_err(|e| e.to_string())?;
        // Only this start sets it (a queue starts one uplink).
        let _ = self.waker.set(uplink.waker());
        log::info!(
            "uplink to {broker} started: {} meters with {}, outbox {} entries",
            self.tids.len(),
            if aka_states.is_some() {
                "AKA credentials"
            } else {
                "provisioned security contexts"
            },
            self.outbox.len().unwrap_or(0)
        );
        Ok(UplinkHandle {
            broker,
            outbox: self.outbox,
            ledger_outbox,
            uplink,
            last_ack: Mutex::new((0, None)),
            aka: aka_states,
        })
    }
}

impl LedgerReports for UplinkQueue {
    fn event(&mut self, event: &LedgerEvent) {
        if let Some((meter, e)) = convert::ledger_event(unix_now(), event) {
            match self.tids.get(&meter) {
                Some(tid) => self.append(Scope::Meter(*tid), Body::Event(e)),
                None => log::debug!("meter {meter} has no TID; its event stays in the log"),
            }
        }
    }

    fn account(&mut self, meter: &str, summary: &AccountSummary) {
        let Some(tid) = self.tids.get(meter) else {
            return;
        };
        let now = summary.at;
        let send = {
            let Ok(mut sent) = self.accounts.lock() else {
                return;
            };
            let due = match sent.get(meter) {
                None => true,
                Some((at, last)) => {
                    last.relay_closed != summary.relay_closed
                        || last.last_token_serial != summary.last_token_serial
                        || last.applied != summary.applied
                        || (last.balance_minor != summary.balance_minor
                            && now.saturating_sub(*at) >= self.account_every_s)
                }
            };
            if due {
                sent.insert(meter.to_string(), (now, summary.clone()));
            }
            due
        };
        if send {
            self.append(Scope::Meter(*tid), Body::AccountSummary(summary.clone()));
        }
    }

    fn restore_request(&mut self, meter: &str, request: &RestoreRequest) -> bool {
        let Some(tid) = self.tids.get(meter) else {
            return false;
        };
        self.append(Scope::Meter(*tid), Body::RestoreRequest(request.clone()));
        true
    }

    fn relay(&mut self, meter: &str, state: RelayState) {
        if let Some(tid) = self.tids.get(meter) {
            self.append(
                Scope::Meter(*tid),
                Body::Event(convert::relay_event(unix_now(), state)),
            );
        }
    }
}

/// The running uplink.
#[derive(Debug)]
pub struct UplinkHandle {
    broker: String,
    outbox: Arc<SledOutbox>,
    ledger_outbox: Option<Arc<dyn Outbox>>,
    uplink: Uplink,
    /// Acknowledged count seen last, and when it last grew (unix seconds).
    last_ack: Mutex<(u64, Option<u64>)>,
    /// With `aka`: the AKA client's view of each scope.
    aka: Option<Arc<Mutex<Vec<AkaState>>>>,
}

impl UplinkHandle {
    /// Copies the uplink's state to the status board.
    pub fn publish(&self, board: &StatusBoard) {
        let s = self.uplink.status();
        let mut last = self.last_ack.lock().unwrap_or_else(|p| p.into_inner());
        if s.acked > last.0 {
            *last = (s.acked, Some(unix_now()));
        }
        let depth = self.outbox.len().unwrap_or(0)
            + self
                .ledger_outbox
                .as_ref()
                .and_then(|o| o.len().ok())
                .unwrap_or(0);
        board.set_uplink(UplinkView {
            broker: self.broker.clone(),
            connected: s.connected,
            connections: s.connections,
            failures: s.failures,
            outbox: depth,
            sent: s.sent,
            acked: s.acked,
            in_flight: s.in_flight,
            refused: s.refused,
            executed: s.executed,
            repeats: s.repeats,
            last_ack_unix: last.1,
            last_error: s.last_error,
            aka: self
                .aka
                .as_ref()
                .map(|a| {
                    a.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|a| AkaScopeView {
                            scope: a.scope.clone(),
                            state: a.state.clone(),
                            tid: a.tid.clone(),
                            expires: a.expires,
                            problem: a.problem.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }

    /// Stops the uplink (death message, disconnect); what is queued stays for the next start.
    pub fn stop(self) {
        if let Err(e) = self.uplink.stop() {
            log::error!("{e}");
        }
        if let Err(e) = self.outbox.flush() {
            log::error!("{e}");
        }
    }
}
