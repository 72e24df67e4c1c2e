//! The daemon's life: open the buses, run one worker thread per bus, run the prepayment ledger on its
//! own thread when `[ledger]` is configured (see [`crate::prepay`]), the uplink to the head-end when
//! `[uplink]` is (see [`crate::uplink`]), the modem supervisor when `[modem]` is (see
//! [`crate::modem`]), a worker per Zigbee coordinator when `[[zigbee]]` is (see [`crate::zigbee`]),
//! serve the control socket (see [`crate::control`]), feed systemd's watchdog from the workers' health,
//! and stop cleanly on SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the daemon should stop and start again on its (new) configuration (commissioning from the
/// web UI); `concentratord` then re-executes itself after the clean stop.
static RESTART: AtomicBool = AtomicBool::new(false);

/// Asks the running daemon to stop cleanly and start again (see [`restart_requested`]).
pub fn request_restart() {
    RESTART.store(true, Ordering::SeqCst);
}

/// Whether a restart was asked for.
pub fn restart_requested() -> bool {
    RESTART.load(Ordering::SeqCst)
}
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concentrator_plugin_host::Quantity;

use crate::buses::{self, OpenBus};
use crate::config::{BusConfig, Config, LedgerSetup, ModemSetup, UplinkSetup};
use crate::drivers::{driver_config, pack_address, Drivers};
use crate::health::{Health, Worker, WorkerState};
use crate::notify::Notifier;
use crate::prepay::{Prepay, SchedulerHandles};
use crate::scheduler::{BusScheduler, ReadingSink, ScheduledMeter, SchedulerPolicy};
use crate::status::StatusBoard;
use crate::uplink::{UplinkHandle, UplinkQueue};

/// How long a worker may go without a heartbeat before it counts as hung.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// The longest a worker sleeps before it checks for a stop request and beats.
const TICK: Duration = Duration::from_millis(200);
/// How often the status file is rewritten.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Retry delays for a bus whose device cannot be opened (USB adapter unplugged, port busy).
const REOPEN_BACKOFF: [Duration; 4] = [
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(60),
];

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    health: Arc<Health>,
    status: Arc<StatusBoard>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    prepay: Option<Prepay>,
    uplink: Option<UplinkHandle>,
    /// With `[modem]`: the modem supervisor's thread.
    modem: Option<JoinHandle<()>>,
    /// With `[[zigbee]]`: the coordinators' workers.
    zigbee: crate::zigbee::Zigbee,
    /// The control socket `concentrator` commands talk to, when it could be created.
    control: Option<crate::control::ControlServer>,
    /// With `[web]`: the installer web UI.
    web: Option<crate::web::WebServer>,
}

impl Daemon {
    /// Loads the drivers, opens every bus and starts its worker. A bus that cannot be opened is logged
    /// and retried in the background; a meter whose driver is missing or refuses it is reported as
    /// failed; the others run regardless. Fails only when the drivers cannot be set up at all (an
    /// unreadable trusted key), with `[ledger]` when the ledger's files or store cannot be opened, or
    /// with `[uplink]` when its files or outbox cannot be opened. The uplink never waits for the broker:
    /// it connects (and reconnects) on its own thread while the buses run.
    pub fn start(config: &Config) -> Result<Daemon, String> {
        let drivers = Arc::new(Drivers::load(config)?);
        let names = drivers
            .all()
            .iter()
            .map(crate::drivers::status_line)
            .collect();
        let status = Arc::new(StatusBoard::new(config.gateway.id.get_ref(), names));
        let health = Arc::new(Health::new(STALL_LIMIT));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = SchedulerHandles::default();
        let ledger_setup = LedgerSetup::load(config).map_err(|e| e.to_string())?;
        let ledger_store = ledger_setup.as_ref().map(Prepay::open_store).transpose()?;
        let ledger_db = ledger_store.as_ref().map(|s| s.db().clone());
        let uplink_setup = UplinkSetup::load(config).map_err(|e| e.to_string())?;
        let modem_setup = ModemSetup::load(config).map_err(|e| e.to_string())?;
        let queue = uplink_setup
            .as_ref()
            .map(|s| UplinkQueue::open(config, s, ledger_store.as_ref()))
            .transpose()?;
        let prepay = match (ledger_setup, ledger_store.clone()) {
            (Some(setup), Some(store)) => Some(Prepay::start(
                setup,
                store,
                config,
                Arc::clone(&status),
                Arc::clone(&stop),
                handles.clone(),
                queue.as_ref().map(UplinkQueue::reports),
            )?),
            _ => None,
        };
        let uplink = match (uplink_setup, queue.clone()) {
            (Some(setup), Some(queue)) => Some(queue.start(
                config,
                setup,
                ledger_store,
                prepay.as_ref().map(Prepay::sender),
                handles.clone(),
                Arc::clone(&status),
            )?),
            _ => None,
        };
        let modem = modem_setup
            .map(|setup| {
                crate::modem::start(
                    setup,
                    Arc::clone(&status),
                    &health,
                    Arc::clone(&stop),
                    queue.clone(),
                )
            })
            .transpose()?;
        let zigbee = crate::zigbee::Zigbee::start(crate::zigbee::ZigbeeContext {
            config,
            drivers: &drivers,
            status: &status,
            health: &health,
            stop: &stop,
            prepay: prepay.as_ref(),
            queue: queue.as_ref(),
            handles: &handles,
            ledger_db: ledger_db.as_ref(),
        })?;
        let mut routes = crate::control::ControlRoutes::default();
        zigbee.add_routes(&mut routes);
        let hub = crate::web::Hub::new(Arc::clone(&status));
        crate::ops::add_routes(
            &mut routes,
            Arc::clone(&status),
            prepay.as_ref().map(Prepay::sender),
            hub.sink(),
        );
        let web = match crate::config::WebSetup::load(config)? {
            Some(setup) => {
                match crate::web::WebServer::start(setup, routes.clone(), Arc::clone(&hub), config)
                {
                    Ok(server) => {
                        crate::logging::set_tap(Some(hub.log_tap()));
                        Some(server)
                    }
                    Err(e) => {
                        log::error!("{e}; the web UI is off, the rest runs");
                        None
                    }
                }
            }
            None => None,
        };
        let socket = crate::control::socket_path(&config.gateway.store);
        let control = match crate::control::ControlServer::start(&socket, routes) {
            Ok(server) => Some(server),
            Err(e) => {
                log::error!("{e}; `concentrator` commands that talk to the daemon will not work");
                None
            }
        };
        let mut workers = Vec::new();
        for bus in &config.buses {
            let worker = health.register(&format!("bus {}", bus.name.get_ref()));
            let opened = match buses::open(config, bus) {
                Ok(opened) => {
                    log::info!("opened bus {}", opened.description);
                    status.bus_state(bus.name.get_ref(), "running", Some(&opened.description));
                    worker.set_state(WorkerState::Running);
                    Some(opened)
                }
                Err(e) => {
                    log::error!(
                        "cannot open bus {}: {e}; retrying in the background, the other buses run",
                        bus.name.get_ref()
                    );
                    status.bus_failed(bus.name.get_ref(), &e.to_string());
                    worker.set_state(WorkerState::Retrying);
                    None
                }
            };
            let job = BusJob {
                config: config.clone(),
                bus: bus.clone(),
                drivers: Arc::clone(&drivers),
                status: Arc::clone(&status),
                worker,
                stop: Arc::clone(&stop),
                prepay: prepay.as_ref().map(|p| p.link(bus.name.get_ref())),
                uplink: queue.clone(),
                handles: handles.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("bus {}", bus.name.get_ref()))
                .spawn(move || job.run(opened))
            {
                Ok(handle) => workers.push(handle),
                Err(e) => log::error!("cannot start the worker of bus {}: {e}", bus.name.get_ref()),
            }
        }
        Ok(Daemon {
            health,
            status,
            stop,
            workers,
            prepay,
            uplink,
            modem,
            zigbee,
            control,
            web,
        })
    }

    /// Copies the uplink's state to the status board (the main loop calls it before writing the file).
    pub fn publish_uplink(&self) {
        if let Some(u) = &self.uplink {
            u.publish(&self.status);
        }
    }

    /// The workers' health.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The status board.
    pub fn status(&self) -> &StatusBoard {
        &self.status
    }

    /// Asks every worker to stop and waits for them.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(web) = self.web {
            crate::logging::set_tap(None);
            web.stop();
        }
        for worker in self.workers {
            if worker.join().is_err() {
                log::error!("a bus worker panicked while stopping");
            }
        }
        if let Some(control) = self.control {
            control.stop();
        }
        self.zigbee.join();
        if let Some(modem) = self.modem {
            if modem.join().is_err() {
                log::error!("the modem worker panicked while stopping");
            }
        }
        if let Some(uplink) = self.uplink {
            uplink.publish(&self.status);
            uplink.stop();
        }
        if let Some(prepay) = self.prepay {
            prepay.join();
        }
    }
}

struct BusJob {
    config: Config,
    bus: BusConfig,
    drivers: Arc<Drivers>,
    status: Arc<StatusBoard>,
    worker: Arc<Worker>,
    stop: Arc<AtomicBool>,
    /// With a ledger: the link that takes the bus's readings to the ledger.
    prepay: Option<crate::prepay::PrepayLink>,
    /// With an uplink: its outbox, where the bus's readings are queued.
    uplink: Option<UplinkQueue>,
    /// Where the scheduler's handle is registered (relay commands from the ledger and the head-end).
    handles: SchedulerHandles,
}

impl BusJob {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `duration` on `clock` in ticks, beating; returns false when asked to stop.
    fn wait(&self, clock: &dyn concentrator_hal::Clock, duration: Duration) -> bool {
        let until = clock.monotonic() + duration;
        while clock.monotonic() < until {
            if self.stopping() {
                return false;
            }
            // A scan's exchange waits for this bus (scheduler::loan): run it now.
            if crate::scheduler::loan::pending(self.bus.name.get_ref()) {
                break;
            }
            self.worker.beat();
            clock.sleep(TICK.min(until - clock.monotonic()));
        }
        !self.stopping()
    }

    /// The scheduler for an opened bus, with a session for every meter on it; its readings go to the
    /// ledger and the uplink's outbox (when configured), and its handle is registered for relay commands.
    fn scheduler(&self, open: OpenBus) -> BusScheduler {
        let mut scheduler = self.new_scheduler(open);
        let mut sinks: Vec<ReadingSink> = Vec::new();
        if let Some(link) = &self.prepay {
            sinks.push(link.sink());
        }
        if let Some(queue) = &self.uplink {
            sinks.push(queue.sink(self.bus.name.get_ref()));
        }
        if !sinks.is_empty() {
            scheduler.set_reading_sink(Box::new(move |address: &str, readings: &[_]| {
                for sink in &mut sinks {
                    sink(address, readings);
                }
            }));
        }
        self.handles
            .register(self.bus.name.get_ref(), scheduler.handle());
        scheduler
    }

    fn new_scheduler(&self, open: OpenBus) -> BusScheduler {
        let name = self.bus.name.get_ref();
        let line = buses::line_settings(&self.bus).ok();
        let meters = self
            .config
            .meters
            .iter()
            .filter(|m| m.bus.get_ref() == name)
            .map(|meter| {
                let driver = meter.driver.get_ref();
                let session = match self.drivers.get(driver) {
                    None => Err(format!(
                        "no driver named `{driver}` is loaded (loaded: {}); check the meter's `driver` and the plugin log above",
                        self.drivers.all().iter().map(|p| p.name().to_string()).collect::<Vec<_>>().join(", ")
                    )),
                    Some(plugin) => pack_address(meter.address.get_ref())
                        .and_then(|address| ScheduledMeter::open(&plugin, &address, &driver_config(meter, line, &plugin))),
                };
                if let Err(why) = &session {
                    log::error!("bus {name} meter {} ({}) cannot be driven: {why}", meter.address.get_ref(), meter.dwelling.get_ref());
                }
                let reads = match &meter.read {
                    Some(names) => names.iter().filter_map(|n| n.get_ref().parse().ok()).collect(),
                    None => vec![Quantity::EnergyImportTotal],
                };
                ScheduledMeter::new(meter.address.get_ref(), meter.dwelling.get_ref(), driver, reads, session)
            })
            .collect();
        let interval = Duration::from_secs(u64::from(*self.bus.poll_interval_s.get_ref()));
        BusScheduler::new(
            open.bus,
            open.clock,
            meters,
            interval,
            SchedulerPolicy::default(),
        )
    }

    fn run(self, mut opened: Option<OpenBus>) {
        let name = self.bus.name.get_ref().clone();
        let mut attempt = 0usize;
        let wall = concentrator_hal::SystemClock::new();
        let mut scheduler = None;
        while !self.stopping() {
            if let Some(open) = opened.take() {
                scheduler = Some(self.scheduler(open));
            }
            let Some(sched) = scheduler.as_mut() else {
                let delay = REOPEN_BACKOFF[attempt.min(REOPEN_BACKOFF.len() - 1)];
                attempt += 1;
                if !self.wait(&wall, delay) {
                    break;
                }
                match buses::open(&self.config, &self.bus) {
                    Ok(open) => {
                        log::info!("opened bus {} (attempt {})", open.description, attempt + 1);
                        self.status
                            .bus_state(&name, "running", Some(&open.description));
                        self.worker.set_state(WorkerState::Running);
                        opened = Some(open);
                    }
                    Err(e) => {
                        log::warn!("bus {name} still cannot be opened: {e}");
                        self.status.bus_failed(&name, &e.to_string());
                    }
                }
                continue;
            };
            attempt = 0;
            self.worker.beat();
            let wait = sched.step();
            self.status.update(sched);
            self.worker.beat();
            if !self.wait(sched.clock(), wait) {
                break;
            }
        }
        self.worker.set_state(WorkerState::Stopped);
        self.status.bus_state(&name, "stopped", None);
        log::info!("bus {name} stopped");
    }
}

/// Runs the daemon until `stop` is set (by SIGTERM or SIGINT), talking to systemd through `notifier`.
/// Returns an error (and starts nothing) when the drivers cannot be set up.
pub fn run(config: &Config, stop: &AtomicBool, notifier: &Notifier) -> Result<(), String> {
    let daemon = Daemon::start(config)?;
    notifier.ready(&daemon.health().summary());
    log::info!(
        "concentratord running as gateway {}: {}",
        config.gateway.id.get_ref(),
        daemon.health().summary()
    );
    let status_file = config
        .gateway
        .status_file
        .clone()
        .unwrap_or_else(|| config.gateway.store.join("status.json"));
    let feed_every = notifier.watchdog_interval().map(|w| w / 2);
    let mut last_feed = Instant::now();
    let mut last_write = Instant::now();
    let mut last_status = String::new();
    let mut status_error_logged = false;
    while !stop.load(Ordering::SeqCst) && !restart_requested() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(every) = feed_every {
            if last_feed.elapsed() >= every {
                let hung = daemon.health().hung();
                if hung.is_empty() {
                    notifier.watchdog();
                } else {
                    log::error!(
                        "not feeding the watchdog: {} made no progress for {STALL_LIMIT:?}",
                        hung.join(", ")
                    );
                }
                last_feed = Instant::now();
            }
        }
        let status = daemon.health().summary();
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
        if last_write.elapsed() >= STATUS_EVERY {
            last_write = Instant::now();
            daemon.publish_uplink();
            match daemon.status().write(&status_file) {
                Ok(()) => status_error_logged = false,
                Err(e) if !status_error_logged => {
                    log::warn!(
                        "cannot write the status file {}: {e}",
                        status_file.display()
                    );
                    status_error_logged = true;
                }
                Err(_) => {}
            }
        }
    }
    log::info!("stopping on request");
    notifier.stopping();
    let status = Arc::clone(&daemon.status);
    daemon.shutdown();
    if let Err(e) = status.write(&status_file) {
        log::warn!(
            "cannot write the status file {}: {e}",
            status_file.display()
        );
    }
    log::info!("concentratord stopped cleanly");
    Ok(())
}
