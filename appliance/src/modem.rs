//! The modem in the daemon (docs/uplink.md, *The modem in the daemon*): one worker thread runs the
//! uplink crate's [`Supervisor`] on the `[modem]` AT port every `check_interval_s`, logs what it does,
//! publishes the modem's state to the status board (where `concentrator status` and the uplink's birth
//! message read it), and queues a "needs attention" event for the head-end.
//!
//! The worker shares nothing with the buses or the ledger but the status board's lock and, with
//! `[uplink]`, one local outbox insert per "needs attention": a hung modem delays only this thread.
//! The AT port is wrapped so that every wait on it beats the worker's heartbeat (a check that waits
//! minutes for a network search is not a hang) and ends at once when the daemon stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use concentrator_hal::gpio::OutputLine;
use concentrator_hal::sim::{SimPin, SimStream};
use concentrator_hal::{Clock, ErrorKind, HalError, LineSettings, SerialStream, SystemClock};
use concentrator_protocol::{event_code, Event, Severity};
use concentrator_uplink::modem::ppp_unit::{PppUnit, PppUnitConfig};
use concentrator_uplink::modem::sim::SimModem;
use concentrator_uplink::modem::{
    AtPort, DataLink, ModemStatus, NoDataLink, Stage, Supervisor, SupervisorEvent,
};

use crate::clock::unix_now;
use crate::config::{ModemDevice, ModemSetup};
use crate::health::{Health, Worker, WorkerKind, WorkerState};
use crate::sms::SmsPath;
use crate::status::{ModemView, StatusBoard};
use crate::uplink::UplinkQueue;

type Opener = Box<dyn FnMut() -> Result<Box<dyn SerialStream>, HalError> + Send>;

/// The AT port as the supervisor sees it: opened on first use and again after any error (a USB modem
/// re-enumerates after a reset), beating the worker on every wait, and failing at once on stop.
struct WatchedPort {
    name: String,
    inner: Option<Box<dyn SerialStream>>,
    open: Opener,
    worker: Arc<Worker>,
    stop: Arc<AtomicBool>,
}

impl WatchedPort {
    fn stream(&mut self) -> Result<&mut Box<dyn SerialStream>, HalError> {
        self.worker.beat();
        if self.stop.load(Ordering::SeqCst) {
            return Err(HalError::new(
                ErrorKind::Other,
                &self.name,
                "the daemon is stopping",
            ));
        }
        if self.inner.is_none() {
            self.inner = Some((self.open)()?);
        }
        self.inner
            .as_mut()
            .ok_or_else(|| HalError::new(ErrorKind::Disconnected, &self.name, "not open"))
    }

    fn after<T>(&mut self, r: Result<T, HalError>) -> Result<T, HalError> {
        if r.is_err() {
            self.inner = None;
        }
        r
    }
}

impl SerialStream for WatchedPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), HalError> {
        let r = self.stream()?.write_all(data);
        self.after(r)
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, HalError> {
        let r = self.stream()?.read(buf, timeout);
        self.after(r)
    }
}

/// How a stage is named in the log and the status file.
pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Healthy => "healthy",
        Stage::Reconnect => "reconnect",
        Stage::Reset => "reset",
        Stage::PowerCycle => "power-cycle",
        Stage::NeedsAttention => "needs-attention",
    }
}

/// The status board's view of the supervisor's status.
pub fn view(port: &str, s: &ModemStatus) -> ModemView {
    use concentrator_uplink::modem::parse::{Registration, SimState};
    ModemView {
        port: port.to_string(),
        sim: s.sim.as_ref().map(|sim| match sim {
            SimState::Ready => "ready".to_string(),
            SimState::PinRequired => "pin-required".to_string(),
            SimState::PukRequired => "puk-required".to_string(),
            SimState::Other(o) => o.clone(),
        }),
        registration: s.registration.map(|r| {
            match r {
                Registration::Home => "home",
                Registration::Roaming => "roaming",
                Registration::Searching => "searching",
                Registration::Denied => "denied",
                Registration::Idle => "not-registered",
                Registration::Unknown => "unknown",
            }
            .to_string()
        }),
        operator: s.operator.clone(),
        rssi_dbm: s.rssi_dbm,
        technology: s.technology.map(str::to_string),
        iccid: s.iccid.clone(),
        link_up: s.link_up,
        stage: stage_name(s.stage).to_string(),
        recoveries: s.recoveries,
        last_problem: s.last_problem.clone(),
        checked_unix: Some(unix_now()),
        sms: None,
    }
}

/// Starts the modem worker. Opening the port, the power key and pppd happens on the worker's thread,
/// so a missing modem never stops the daemon from starting; the worker retries at every check.
pub fn start(
    setup: ModemSetup,
    status: Arc<StatusBoard>,
    health: &Health,
    stop: Arc<AtomicBool>,
    uplink: Option<UplinkQueue>,
    sms: Option<SmsPath>,
) -> Result<JoinHandle<()>, String> {
    let worker = health.register(WorkerKind::Modem, "");
    std::thread::Builder::new()
        .name(worker.name().into())
        .spawn(move || run(setup, &status, &worker, &stop, uplink.as_ref(), sms))
        .map_err(|e| format!("cannot start the modem worker thread: {e}"))
}

fn run(
    setup: ModemSetup,
    status: &StatusBoard,
    worker: &Arc<Worker>,
    stop: &Arc<AtomicBool>,
    uplink: Option<&UplinkQueue>,
    mut sms: Option<SmsPath>,
) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let (name, open, sim_key): (String, Opener, Option<SimPin>) = match &setup.device {
        ModemDevice::Port { path, baud } => {
            let (path, baud) = (path.display().to_string(), *baud);
            let name = path.clone();
            let open: Opener = Box::new(move || {
                let settings = LineSettings::with_format(baud, "8N1")
                    .map_err(|e| HalError::new(ErrorKind::InvalidSettings, &path, e.to_string()))?;
                let port =
                    concentrator_hal::linux::SerialStreamPort::open("modem", &path, settings)?;
                Ok(Box::new(port) as Box<dyn SerialStream>)
            });
            (name, open, None)
        }
        ModemDevice::Sim { fault } => {
            let modem = SimModem::new();
            if let Some((fault, cure)) = fault.clone() {
                log::warn!("simulated modem starts with fault {fault:?} (cured by {cure:?})");
                modem.set_fault(fault, cure);
            }
            let key = setup.power_key.as_ref().map(|_| {
                let pin = SimPin::new("modem power key");
                modem.attach_power_key(pin.clone());
                pin
            });
            let open: Opener = Box::new(move || {
                let (stream, peer) = SimStream::pair("modem");
                modem.serve(peer);
                Ok(Box::new(stream) as Box<dyn SerialStream>)
            });
            ("sim".to_string(), open, key)
        }
    };
    let power_key: Option<Box<dyn OutputLine>> = match (sim_key, &setup.power_key) {
        (Some(pin), _) => Some(Box::new(pin)),
        (None, Some(spec)) => {
            match concentrator_hal::linux::GpioOutput::open(spec, "concentrator-modem-power", false)
            {
                Ok(line) => Some(Box::new(line)),
                Err(e) => {
                    log::error!("modem power key {spec}: {e}; staged recovery goes on without the power-key stage");
                    None
                }
            }
        }
        (None, None) => None,
    };
    let link: Box<dyn DataLink> = match &setup.ppp_port {
        Some(ppp) => {
            // pppd runs in concentrator-ppp.service (root); the daemon only asks (uplink's ppp_unit).
            let mut cfg = PppUnitConfig::new(ppp.clone(), setup.supervisor.apn.clone());
            if let ModemDevice::Port { baud, .. } = &setup.device {
                cfg.baud = *baud;
            }
            Box::new(PppUnit::new(cfg))
        }
        None => Box::new(NoDataLink),
    };
    let port = WatchedPort {
        name: name.clone(),
        inner: None,
        open,
        worker: Arc::clone(worker),
        stop: Arc::clone(stop),
    };
    let mut sup = Supervisor::new(
        AtPort::new(port, Arc::clone(&clock)),
        link,
        power_key,
        setup.supervisor.clone(),
    );
    log::info!(
        "modem supervisor on {name}: APN {}, a check every {:?}",
        setup.supervisor.apn,
        setup.check_interval
    );
    worker.set_state(WorkerState::Running);
    let mut link_was_up = false;
    while !stop.load(Ordering::SeqCst) {
        match sup.check() {
            Ok(events) => {
                // The data link came up (first dial, or after an outage): the uplink need not wait
                // out a reconnect backoff that grew while the link was down.
                let link_up = sup.status().link_up;
                if link_up && !link_was_up {
                    if let Some(q) = uplink {
                        q.link_is_back();
                    }
                }
                link_was_up = link_up;
                let mut view = view(&name, sup.status());
                for e in &events {
                    announce(e, &view, uplink);
                }
                if let Some(path) = sms.as_mut() {
                    if let Err(e) = path.tick(&mut sup, status, uplink) {
                        log::warn!("SMS path: {e}; tried again at the next check");
                    }
                    view.sms = Some(path.view());
                }
                status.set_modem(view);
                network_time(&mut sup);
            }
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(e) => {
                log::warn!("{e}; the modem's port is opened again at the next check");
                let mut view = view(&name, sup.status());
                view.sms = sms.as_ref().map(SmsPath::view);
                view.last_problem = Some(format!("{e}; check that the modem is plugged in and {name} exists (our udev rules create it)"));
                status.set_modem(view);
            }
        }
        if !wait(clock.as_ref(), worker, stop, setup.check_interval) {
            break;
        }
    }
    worker.set_state(WorkerState::Stopped);
    log::info!("modem supervisor stopped");
}

/// Hands the mobile network's time to the time keeper, when `[time] modem_time` asks for it.
fn network_time<S: SerialStream>(sup: &mut Supervisor<S>) {
    let Some(keeper) = crate::timekeeper::TimeKeeper::installed() else {
        return;
    };
    if !keeper.setup().modem_time {
        return;
    }
    match sup.network_time() {
        Ok(Some(unix)) => keeper.network_time(unix),
        Ok(None) => log::debug!("modem: no network time yet"),
        Err(e) => log::debug!("modem: reading the network time: {e}"),
    }
}

/// Logs one supervisor event, and queues the ones the protocol has a code for.
fn announce(event: &SupervisorEvent, view: &ModemView, uplink: Option<&UplinkQueue>) {
    match event {
        SupervisorEvent::Recovery { stage, problem } => {
            log::warn!("modem recovery: {} ({problem})", stage_name(*stage));
            let step = match stage {
                Stage::Reconnect => 1,
                Stage::Reset => 2,
                _ => 3,
            };
            queue_event(
                uplink,
                event_code::MODEM_RECOVERY,
                Severity::Warning,
                Some(problem),
                vec![step],
            );
        }
        SupervisorEvent::NeedsAttention { problem } => {
            log::error!("modem recovery: needs attention, staged recovery failed ({problem}); check the modem's power, antenna and SIM on site");
            queue_event(
                uplink,
                event_code::MODEM_NEEDS_ATTENTION,
                Severity::Alarm,
                Some(problem),
                Vec::new(),
            );
        }
        SupervisorEvent::Recovered => {
            log::info!(
                "modem recovered: registered on {}, {} dBm",
                view.operator.as_deref().unwrap_or("?"),
                view.rssi_dbm.map_or("?".into(), |d| d.to_string())
            );
            let steps = i64::from(view.recoveries);
            queue_event(
                uplink,
                event_code::MODEM_RECOVERED,
                Severity::Info,
                None,
                vec![steps],
            );
        }
        SupervisorEvent::WeakSignal { dbm } => {
            log::warn!("modem: weak signal, {dbm} dBm; check the antenna and its cable")
        }
    }
}

/// Queues a gateway event for the head-end (with `[uplink]`), the detail cut to the protocol's 256.
fn queue_event(
    uplink: Option<&UplinkQueue>,
    code: u16,
    severity: Severity,
    detail: Option<&String>,
    values: Vec<i64>,
) {
    let Some(queue) = uplink else {
        return;
    };
    let detail = detail.map(|d| {
        let mut d = d.clone();
        d.truncate(d.floor_char_boundary(256));
        d
    });
    queue.gateway_event(Event {
        at: unix_now(),
        code,
        severity,
        detail,
        values,
    });
}

/// Sleeps `duration`, beating; false when asked to stop.
fn wait(clock: &dyn Clock, worker: &Worker, stop: &AtomicBool, duration: Duration) -> bool {
    crate::clock::worker_sleep(clock, worker, stop, duration)
}
