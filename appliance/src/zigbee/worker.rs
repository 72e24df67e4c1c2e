//! One coordinator's worker thread: it owns the stream, drives the stream driver's `StreamSession`
//! (bytes both ways, a tick at least every [`POLL`]), routes the readings of mapped meters to the same
//! sinks as RS485 polls, persists the device table, carries the ledger's relay jobs and the control
//! socket's requests to the driver as commands, and reopens the port with backoff after an error.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_hal::{Clock, SystemClock};
use concentrator_plugin_host::{
    CoordinatorCommand, CoordinatorEvent, CoordinatorRequest, DeviceAddress, Plugin, Reading,
    StreamEvent, StreamSession,
};
use serde_json::{json, Value};

use super::port::{OpenPort, PortSource};
use super::relay::{self, Waiting};
use super::store::{DeviceStore, DeviceTable};
use crate::clock::unix_now;
use crate::health::{Worker, WorkerState};
use crate::scheduler::{ReadingSink, SubmittedJob};
use crate::status::{BusStatus, MeterStatsView, MeterStatus, StatusBoard, ZigbeeView};

/// The longest the worker waits for bytes before it ticks the driver and looks at its queues.
pub const POLL: Duration = Duration::from_millis(20);
/// How often the status board is updated.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How long a command may wait for the notice that ends it.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// Retry delays for a port that cannot be opened or that failed.
const REOPEN_BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(60),
];

/// A request from the control socket.
#[derive(Debug)]
pub enum ToWorker {
    /// Open the network for joining.
    PermitJoin {
        /// Seconds, 1–254 (0 closes).
        seconds: u8,
        /// The answer.
        reply: Sender<Result<Value, String>>,
    },
    /// The device table with the meter mapping.
    Devices {
        /// The answer.
        reply: Sender<Result<Value, String>>,
    },
    /// Ask a device to leave and forget it.
    Remove {
        /// The device.
        ieee: DeviceAddress,
        /// The answer.
        reply: Sender<Result<Value, String>>,
    },
}

/// A configured meter behind the coordinator.
#[derive(Debug)]
struct MappedMeter {
    address: String,
    dwelling: String,
    meter_id: String,
    last_readings: Vec<Reading>,
    last_seen: Option<Instant>,
    left: bool,
    commands: u64,
    ok: u64,
    refused: u64,
    failed: u64,
}

struct Pending {
    waiting: Waiting,
    meter: Option<usize>,
    deadline: Instant,
}

/// What the worker is given.
pub struct WorkerSetup {
    /// The coordinator's name.
    pub name: String,
    /// The driver's name.
    pub driver: String,
    /// The driver's config (TOML).
    pub driver_config: String,
    /// The driver, when it is loaded.
    pub plugin: Result<Arc<Plugin>, String>,
    /// The stream's source.
    pub source: PortSource,
    /// The stored device table.
    pub store: DeviceStore,
    /// The meters behind it: address (IEEE), dwelling, meter number.
    pub meters: Vec<(String, String, String)>,
    /// Where mapped meters' readings go (ledger, uplink outbox).
    pub sinks: Vec<ReadingSink>,
    /// Relay jobs from the ledger and the head-end.
    pub jobs: Receiver<SubmittedJob>,
    /// Requests from the control socket.
    pub control: Receiver<ToWorker>,
    /// The status board.
    pub status: Arc<StatusBoard>,
    /// The health registry's entry.
    pub health: Arc<Worker>,
    /// Set on shutdown.
    pub stop: Arc<AtomicBool>,
    /// A meter without a report for this long is offline.
    pub offline_after: Duration,
}

impl std::fmt::Debug for WorkerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSetup")
            .field("name", &self.name)
            .field("driver", &self.driver)
            .field("meters", &self.meters.len())
            .finish()
    }
}

/// The worker.
pub struct ZigbeeWorker {
    setup: WorkerSetup,
    meters: Vec<MappedMeter>,
    by_address: HashMap<String, usize>,
    table: DeviceTable,
    seen: HashMap<DeviceAddress, u64>,
    view: ZigbeeView,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    port: String,
}

impl std::fmt::Debug for ZigbeeWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZigbeeWorker")
            .field("name", &self.setup.name)
            .finish()
    }
}

type Step = Result<(), String>;

impl ZigbeeWorker {
    /// A worker; loads the stored device table (a broken one is logged and started empty).
    pub fn new(setup: WorkerSetup) -> ZigbeeWorker {
        let table = match setup.store.load() {
            Ok(t) => t,
            Err(e) => {
                log::error!(
                    "zigbee {}: {e}; starting with an empty device table",
                    setup.name
                );
                DeviceTable::new()
            }
        };
        let meters: Vec<MappedMeter> = setup
            .meters
            .iter()
            .map(|(address, dwelling, meter_id)| MappedMeter {
                address: address.clone(),
                dwelling: dwelling.clone(),
                meter_id: meter_id.clone(),
                last_readings: Vec::new(),
                last_seen: None,
                left: false,
                commands: 0,
                ok: 0,
                refused: 0,
                failed: 0,
            })
            .collect();
        let by_address = meters
            .iter()
            .enumerate()
            .map(|(i, m)| (m.address.clone(), i))
            .collect();
        log::info!(
            "zigbee {}: {} devices in the stored table, {} meters configured",
            setup.name,
            table.len(),
            meters.len()
        );
        ZigbeeWorker {
            view: ZigbeeView {
                port: format!("{:?}", setup.source),
                devices: table.len(),
                ..ZigbeeView::default()
            },
            port: String::new(),
            setup,
            meters,
            by_address,
            table,
            seen: HashMap::new(),
            pending: HashMap::new(),
            next_id: 0,
        }
    }

    fn stopping(&self) -> bool {
        self.setup.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `d` in short steps, beating and answering control requests; false when asked to stop.
    fn pause(&mut self, d: Duration) -> bool {
        let stop = Arc::clone(&self.setup.stop);
        crate::clock::sleep_unless_stopped(
            &SystemClock::new(),
            &stop,
            d,
            Duration::from_millis(100),
            || {
                self.setup.health.beat();
                self.refuse_while_down();
            },
        )
    }

    /// Runs until the stop flag is set.
    pub fn run(mut self) {
        let clock = SystemClock::new();
        let mut attempt = 0usize;
        let name = self.setup.name.clone();
        while !self.stopping() {
            let reason = match self.open(&clock) {
                Ok((port, session)) => {
                    attempt = 0;
                    self.setup.health.set_state(WorkerState::Running);
                    match self.run_session(port, session, &clock) {
                        Ok(()) => break,
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            log::warn!("zigbee {name}: {reason}; reopening");
            self.view.last_error = Some(reason.clone());
            if self.view.link_up {
                self.view.link_up = false;
                self.view.link_downs += 1;
            }
            self.fail_pending(&format!("the coordinator's port was closed: {reason}"));
            self.setup.health.set_state(WorkerState::Retrying);
            self.publish("retrying");
            let delay = REOPEN_BACKOFF[attempt.min(REOPEN_BACKOFF.len() - 1)];
            attempt += 1;
            if !self.pause(delay) {
                break;
            }
        }
        self.fail_pending("the daemon is stopping");
        self.view.link_up = false;
        self.setup.health.set_state(WorkerState::Stopped);
        self.publish("stopped");
        log::info!("zigbee {name} stopped");
    }

    fn open(&mut self, clock: &SystemClock) -> Result<(OpenPort, StreamSession), String> {
        let plugin = self.setup.plugin.clone()?;
        let port = self.setup.source.open(&self.setup.name)?;
        let session = plugin
            .open_stream(&self.setup.driver_config, clock)
            .map_err(|e| e.to_string())?;
        log::info!(
            "zigbee {}: opened {} with driver {}",
            self.setup.name,
            port.description,
            self.setup.driver
        );
        self.port = port.description.clone();
        self.view.port = format!("{} ({})", port.description, self.setup.driver);
        Ok((port, session))
    }

    fn run_session(
        &mut self,
        mut port: OpenPort,
        mut session: StreamSession,
        clock: &SystemClock,
    ) -> Step {
        let id = self.id();
        let load = CoordinatorRequest {
            id,
            command: CoordinatorCommand::LoadDevices {
                devices: self.table.values().cloned().collect(),
            },
        };
        match session.command(&load.to_json(), clock) {
            Ok(()) => self.wait(id, Waiting::Internal("load the stored device table"), None),
            Err(e) => log::warn!(
                "zigbee {}: the driver does not take the stored device table: {e}",
                self.setup.name
            ),
        }
        let mut buf = vec![0u8; 2048];
        let mut last_publish = Instant::now();
        self.publish("running");
        loop {
            if self.stopping() {
                return Ok(());
            }
            self.setup.health.beat();
            let n = port
                .stream
                .read(&mut buf, POLL)
                .map_err(|e| e.to_string())?;
            if let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) {
                session.on_bytes(bytes).map_err(|e| e.to_string())?;
            }
            session.on_tick(clock).map_err(|e| e.to_string())?;
            self.take_requests(&mut session, clock);
            while let Some(frame) = session.poll_transmit().map_err(|e| e.to_string())? {
                port.stream.write_all(&frame).map_err(|e| e.to_string())?;
            }
            self.drain_events(&mut session)?;
            self.drain_notices(&mut session)?;
            self.expire_pending();
            if last_publish.elapsed() >= PUBLISH_EVERY {
                last_publish = Instant::now();
                self.publish(if self.view.link_up {
                    "running"
                } else {
                    "link-down"
                });
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn wait(&mut self, id: u64, waiting: Waiting, meter: Option<usize>) {
        self.pending.insert(
            id,
            Pending {
                waiting,
                meter,
                deadline: Instant::now() + COMMAND_LIMIT,
            },
        );
    }

    fn drain_events(&mut self, session: &mut StreamSession) -> Step {
        let mut batch: BTreeMap<usize, Vec<Reading>> = BTreeMap::new();
        while let Some(event) = session.poll_event().map_err(|e| e.to_string())? {
            match event {
                StreamEvent::Reading { address, reading } => {
                    let Some(ieee) = DeviceAddress::new(&address) else {
                        log::debug!(
                            "zigbee {}: a reading from address {address:02x?}",
                            self.setup.name
                        );
                        continue;
                    };
                    self.seen.insert(ieee, unix_now());
                    match self.by_address.get(&ieee.to_string()) {
                        Some(&i) => batch.entry(i).or_default().push(reading),
                        None => log::debug!(
                            "zigbee {}: {reading} from {ieee}, which no [[meter]] names",
                            self.setup.name
                        ),
                    }
                }
                StreamEvent::DeviceSeen { address } => {
                    if let Some(ieee) = DeviceAddress::new(&address) {
                        log::info!(
                            "zigbee {}: device {ieee} joined or announced itself",
                            self.setup.name
                        );
                        self.seen.insert(ieee, unix_now());
                        if let Some(&i) = self.by_address.get(&ieee.to_string()) {
                            self.meters[i].left = false;
                        }
                    }
                }
                StreamEvent::DeviceLost { address } => {
                    if let Some(ieee) = DeviceAddress::new(&address) {
                        log::info!("zigbee {}: device {ieee} left the network", self.setup.name);
                        if let Some(&i) = self.by_address.get(&ieee.to_string()) {
                            self.meters[i].left = true;
                        }
                    }
                }
                StreamEvent::LinkUp => {
                    log::info!("zigbee {}: coordinator up", self.setup.name);
                    self.view.link_up = true;
                    self.view.link_ups += 1;
                    self.view.last_error = None;
                }
                StreamEvent::LinkDown => {
                    log::warn!("zigbee {}: coordinator down (it reset or stopped answering); restarting it", self.setup.name);
                    self.view.link_up = false;
                    self.view.link_downs += 1;
                }
            }
        }
        for (i, readings) in batch {
            let meter = &mut self.meters[i];
            meter.last_seen = Some(Instant::now());
            meter.left = false;
            for r in &readings {
                match meter
                    .last_readings
                    .iter_mut()
                    .find(|l| l.quantity == r.quantity)
                {
                    Some(l) => *l = *r,
                    None => meter.last_readings.push(*r),
                }
            }
            self.view.readings += readings.len() as u64;
            log::info!(
                "zigbee {} meter {} ({}): {}",
                self.setup.name,
                meter.address,
                meter.dwelling,
                readings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let address = meter.address.clone();
            for sink in &mut self.setup.sinks {
                sink(&address, &readings);
            }
        }
        Ok(())
    }

    fn drain_notices(&mut self, session: &mut StreamSession) -> Step {
        while let Some(text) = session.poll_notice().map_err(|e| e.to_string())? {
            let event = match CoordinatorEvent::from_json(&text) {
                Ok(event) => event,
                Err(_) => {
                    log::info!("zigbee {}: driver notice: {text}", self.setup.name);
                    continue;
                }
            };
            match event {
                CoordinatorEvent::Joined { device } => {
                    log::info!("zigbee {}: device {device} joined", self.setup.name);
                    self.seen.entry(device).or_insert_with(unix_now);
                }
                CoordinatorEvent::Interviewed { device } => {
                    log::info!("zigbee {}: device {device} interviewed", self.setup.name);
                }
                CoordinatorEvent::Updated { info } => {
                    if let Err(e) = self.setup.store.put(&info) {
                        log::error!("zigbee {}: {e}", self.setup.name);
                        self.view.last_error = Some(e.to_string());
                    }
                    self.seen.entry(info.device).or_insert_with(unix_now);
                    self.table.insert(info.device, info);
                    self.view.devices = self.table.len();
                }
                CoordinatorEvent::Left { device } => {
                    if let Err(e) = self.setup.store.remove(device) {
                        log::error!("zigbee {}: {e}", self.setup.name);
                        self.view.last_error = Some(e.to_string());
                    }
                    self.table.remove(&device);
                    self.view.devices = self.table.len();
                    if let Some(&i) = self.by_address.get(&device.to_string()) {
                        self.meters[i].left = true;
                    }
                }
                CoordinatorEvent::LinkUp {
                    coordinator,
                    firmware,
                    restored,
                } => {
                    log::info!(
                        "zigbee {}: coordinator {coordinator}, firmware {firmware}, network {}",
                        self.setup.name,
                        if restored { "restored" } else { "formed now" }
                    );
                    self.view.coordinator_ieee = Some(coordinator.to_string());
                    self.view.firmware = Some(firmware);
                }
                CoordinatorEvent::CommandDone {
                    id,
                    readings,
                    detail,
                } => {
                    let readings: Result<Vec<Reading>, String> =
                        readings.into_iter().map(|r| r.to_reading()).collect();
                    match readings {
                        Ok(readings) => self.finish(id, Ok(relay::Done { readings, detail })),
                        Err(e) => self.finish(
                            id,
                            Err(relay::Failure::Failed(format!(
                                "the driver returned an invalid reading: {e}"
                            ))),
                        ),
                    }
                }
                CoordinatorEvent::CommandRefused { id, code, text } => self.finish(
                    id,
                    Err(relay::Failure::Refused(
                        u8::try_from(code).unwrap_or(u8::MAX),
                        text,
                    )),
                ),
                CoordinatorEvent::CommandFailed { id, reason } => {
                    self.finish(id, Err(relay::Failure::Failed(reason)))
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, id: u64, outcome: Result<relay::Done, relay::Failure>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        if let Some(meter) = pending.meter.and_then(|i| self.meters.get_mut(i)) {
            match &outcome {
                Ok(_) => meter.ok += 1,
                Err(relay::Failure::Refused(..)) => meter.refused += 1,
                Err(relay::Failure::Failed(_)) => meter.failed += 1,
            }
        }
        if let (Waiting::PermitJoin(_, seconds), Ok(_)) = (&pending.waiting, &outcome) {
            self.view.permit_join_until_unix =
                (*seconds > 0).then(|| unix_now() + u64::from(*seconds));
        }
        relay::answer(&self.setup.name, pending.waiting, outcome);
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.finish(
                id,
                Err(relay::Failure::Failed(format!(
                    "the driver did not finish the command within {} s",
                    COMMAND_LIMIT.as_secs()
                ))),
            );
        }
    }

    fn fail_pending(&mut self, reason: &str) {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            self.finish(id, Err(relay::Failure::Failed(reason.to_string())));
        }
    }

    /// Answers control requests and relay jobs while there is no session.
    fn refuse_while_down(&mut self) {
        let why = format!(
            "the Zigbee coordinator `{}` is not open ({}); try again when `concentrator status` shows it running",
            self.setup.name,
            self.view.last_error.as_deref().unwrap_or("starting")
        );
        while let Ok(request) = self.setup.control.try_recv() {
            match request {
                ToWorker::Devices { reply } => {
                    let _ = reply.send(Ok(self.devices()));
                }
                ToWorker::PermitJoin { reply, .. } | ToWorker::Remove { reply, .. } => {
                    let _ = reply.send(Err(why.clone()));
                }
            }
        }
        while let Ok((_, _, _, reply)) = self.setup.jobs.try_recv() {
            let _ = reply.send(Err(why.clone()));
        }
    }

    fn take_requests(&mut self, session: &mut StreamSession, clock: &dyn Clock) {
        while let Ok(request) = self.setup.control.try_recv() {
            let (command, waiting) = match request {
                ToWorker::Devices { reply } => {
                    let _ = reply.send(Ok(self.devices()));
                    continue;
                }
                ToWorker::PermitJoin { seconds, reply } => (
                    CoordinatorCommand::PermitJoin { seconds },
                    Waiting::PermitJoin(reply, seconds),
                ),
                ToWorker::Remove { ieee, reply } => {
                    if !self.table.contains_key(&ieee) {
                        let _ = reply.send(Err(format!(
                            "device {ieee} is not in coordinator `{}`'s table; `concentrator zigbee devices` lists the devices",
                            self.setup.name
                        )));
                        continue;
                    }
                    (
                        CoordinatorCommand::Remove { device: ieee },
                        Waiting::Control(reply),
                    )
                }
            };
            self.send(session, clock, command, waiting, None);
        }
        while let Ok((address, task, _priority, reply)) = self.setup.jobs.try_recv() {
            let Some(&meter) = self.by_address.get(&address) else {
                let _ = reply.send(Err(format!(
                    "no meter {address} behind Zigbee coordinator {}",
                    self.setup.name
                )));
                continue;
            };
            match relay::command_for(&address, &task) {
                Ok((command, waiting)) => {
                    log::info!(
                        "zigbee {}: meter {} ({}): {task} as {command:?}",
                        self.setup.name,
                        self.meters[meter].meter_id,
                        self.meters[meter].dwelling
                    );
                    self.meters[meter].commands += 1;
                    self.send(session, clock, command, waiting(reply), Some(meter));
                }
                Err(why) => {
                    let _ = reply.send(Err(why));
                }
            }
        }
    }

    fn send(
        &mut self,
        session: &mut StreamSession,
        clock: &dyn Clock,
        command: CoordinatorCommand,
        waiting: Waiting,
        meter: Option<usize>,
    ) {
        let id = self.id();
        match session.command(&CoordinatorRequest { id, command }.to_json(), clock) {
            Ok(()) => self.wait(id, waiting, meter),
            Err(e) => {
                if let Some(m) = meter.and_then(|i| self.meters.get_mut(i)) {
                    m.failed += 1;
                }
                relay::answer(
                    &self.setup.name,
                    waiting,
                    Err(relay::Failure::Failed(e.to_string())),
                );
            }
        }
    }

    /// The device table with the meter mapping, for `concentrator zigbee devices`.
    fn devices(&self) -> Value {
        let rows: Vec<Value> = self
            .table
            .values()
            .map(|d| {
                let meter = self
                    .by_address
                    .get(&d.device.to_string())
                    .map(|&i| &self.meters[i]);
                json!({
                    "coordinator": self.setup.name,
                    "ieee": d.device.to_string(),
                    "nwk": d.network_address.map(|n| format!("0x{n:04x}")),
                    "endpoints": d.endpoints,
                    "clusters": d.clusters.iter().map(|c| format!("0x{c:04x}")).collect::<Vec<_>>(),
                    "interviewed": d.interviewed,
                    "meter_id": meter.map(|m| m.meter_id.clone()),
                    "dwelling": meter.map(|m| m.dwelling.clone()),
                    "last_seen_unix": self.seen.get(&d.device),
                })
            })
            .collect();
        json!({"coordinator": self.setup.name, "link_up": self.view.link_up, "devices": rows})
    }

    fn publish(&mut self, state: &str) {
        let meters = self
            .meters
            .iter()
            .map(|m| {
                let known = m
                    .address
                    .parse::<DeviceAddress>()
                    .ok()
                    .is_some_and(|a| self.table.contains_key(&a));
                let (state, error) = if m.left {
                    ("offline", Some("it left the network; pair it again with `concentrator zigbee permit-join` (docs/install.md)".to_string()))
                } else if !known {
                    ("not-joined", Some("not in the coordinator's device table: pair it with `concentrator zigbee permit-join` (docs/install.md)".to_string()))
                } else {
                    match m.last_seen {
                        None => ("unknown", None),
                        Some(t) if t.elapsed() <= self.setup.offline_after => ("online", None),
                        Some(_) => ("offline", Some(format!(
                            "no report for {} s", self.setup.offline_after.as_secs()
                        ))),
                    }
                };
                MeterStatus {
                    address: m.address.clone(),
                    dwelling: m.dwelling.clone(),
                    driver: self.setup.driver.clone(),
                    state: state.into(),
                    error,
                    readings: m.last_readings.iter().map(ToString::to_string).collect(),
                    stats: MeterStatsView {
                        requests: m.commands,
                        ok: m.ok,
                        timeouts: m.failed,
                        exceptions: m.refused,
                        ..MeterStatsView::default()
                    },
                }
            })
            .collect();
        let detail = format!(
            "zigbee coordinator on {}; link {}; firmware {}; {} devices",
            if self.port.is_empty() {
                "(not open)"
            } else {
                &self.port
            },
            if self.view.link_up { "up" } else { "down" },
            self.view.firmware.as_deref().unwrap_or("unknown"),
            self.view.devices
        );
        self.setup.status.set_zigbee(
            &self.setup.name,
            self.view.clone(),
            BusStatus {
                state: state.into(),
                detail,
                meters,
            },
        );
    }
}
