//! The daemon's life, as wiring: open the buses and run one worker thread per bus (see
//! [`crate::bus_worker`]), run the prepayment ledger on its
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

use crate::config::{Config, LedgerSetup, ModemSetup, UplinkSetup};
use crate::drivers::Drivers;
use crate::health::Health;
use crate::notify::Notifier;
use crate::prepay::{Prepay, SchedulerHandles};
use crate::status::StatusBoard;
use crate::uplink::{UplinkHandle, UplinkQueue};

/// How long a worker may go without a heartbeat before it counts as hung.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How often the status file is rewritten.
const STATUS_EVERY: Duration = Duration::from_secs(2);

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
    /// With `[power]`: the power-fail watch (last gasp).
    power: Option<crate::power::PowerWatch>,
    /// With `[uplink]`: the outbox (the last gasp waits for its message to leave).
    queue: Option<UplinkQueue>,
    /// The meters' time authority.
    time: Arc<crate::timekeeper::TimeKeeper>,
    /// With a feeder meter: the block balance.
    balance: Option<Arc<crate::balance::BlockBalance>>,
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
        let modem_setup = ModemSetup::load(config.modem.as_ref()).map_err(|e| e.to_string())?;
        let queue = uplink_setup
            .as_ref()
            .map(|s| UplinkQueue::open(config, s, ledger_store.as_ref()))
            .transpose()?;
        // The SMS path signs urgent events with the gateway's own security context (from [uplink]).
        let sms_ik = match (&uplink_setup, &queue) {
            (Some(setup), Some(q)) => Some(q.gateway_ik(&setup.contexts)),
            _ => None,
        };
        let time = crate::timekeeper::TimeKeeper::new(
            crate::config::time::TimeSetup::from_config(config),
            Some(&config.gateway.store),
            queue.clone(),
        );
        time.install();
        let balance = crate::config::balance::BalanceSetup::from_config(config).map(|mut setup| {
            if let Some(ledger) = &ledger_setup {
                setup.dwelling_max_power_w = ledger.config.plausibility.max_power_w;
            }
            crate::balance::BlockBalance::new(setup, &config.gateway.store, queue.clone())
        });
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
        let gateway = concentrator_protocol::GatewayId::new(config.gateway.id.get_ref().clone())
            .map_err(|e| format!("[gateway] id cannot be used: {e}"))?;
        let modem = modem_setup
            .map(|setup| {
                let sms = crate::sms::SmsPath::open(
                    setup.sms.clone(),
                    gateway.clone(),
                    &config.gateway.store,
                    sms_ik.unwrap_or_else(|| Box::new(|| None)),
                    queue
                        .as_ref()
                        .map_or_else(Default::default, UplinkQueue::data_budget),
                );
                crate::modem::start(
                    setup,
                    Arc::clone(&status),
                    &health,
                    Arc::clone(&stop),
                    queue.clone(),
                    Some(sms),
                )
            })
            .transpose()?;
        let workers = crate::workers::WorkerContext {
            config,
            drivers: &drivers,
            status: &status,
            health: &health,
            stop: &stop,
            prepay: prepay.as_ref(),
            queue: queue.as_ref(),
            handles: &handles,
            time: Some(&time),
            balance: balance.as_ref(),
        };
        let zigbee = crate::zigbee::Zigbee::start(&workers, ledger_db.as_ref())?;
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
        let workers = crate::bus_worker::start_all(&workers);
        let power = match crate::config::PowerSetup::load(config.power.as_ref())? {
            Some(setup) => match crate::power::open_line(&setup) {
                Ok(line) => Some(crate::power::PowerWatch::start(
                    concentrator_hal::power_fail::PowerFailMonitor::new(
                        line,
                        setup.polarity,
                        setup.debounce,
                    ),
                    &config.gateway.store,
                    queue
                        .clone()
                        .map(|q| Box::new(q) as Box<dyn crate::power::PowerReports>),
                    setup.grace,
                )?),
                Err(e) => {
                    log::error!("{e}; the daemon runs without the last gasp");
                    None
                }
            },
            None => None,
        };
        Ok(Daemon {
            power,
            queue,
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
            time,
            balance,
        })
    }

    /// Copies the uplink's state to the status board (the main loop calls it before writing the file).
    pub fn publish_uplink(&self) {
        if let Some(u) = &self.uplink {
            u.publish(&self.status);
        }
    }

    /// Copies the gateway's and the meters' clocks to the status board (the main loop calls it before
    /// writing the file).
    pub fn publish_time(&self) {
        self.status.set_time(self.time.view());
    }

    /// Decides the block balance's intervals that can be decided and copies it to the status board
    /// (the main loop calls it before writing the file).
    pub fn publish_balance(&self) {
        if let Some(b) = &self.balance {
            b.tick();
            self.status.set_balance(b.view());
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
        if crate::power::stopping_for_power() {
            if let (Some(power), Some(queue)) = (&self.power, &self.queue) {
                power.let_last_gasp_leave(&|id| queue.is_queued(id));
            }
        }
        if let Some(power) = self.power {
            power.stop();
        }
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

/// With `[power]`: waits while the supply is off (a start on the reserve after a last gasp), touching
/// nothing; `false` when stopped meanwhile.
fn supply_present(config: &Config, stop: &AtomicBool, notifier: &Notifier) -> bool {
    let Ok(Some(setup)) = crate::config::PowerSetup::load(config.power.as_ref()) else {
        return true;
    };
    let Ok(line) = crate::power::open_line(&setup) else {
        return true; // Daemon::start says why
    };
    let mut monitor =
        concentrator_hal::power_fail::PowerFailMonitor::new(line, setup.polarity, setup.debounce);
    let mut last_feed = Instant::now();
    crate::power::wait_for_supply(&mut monitor, stop, || {
        if last_feed.elapsed() >= Duration::from_secs(5) {
            notifier.ready("waiting for the supply (power-fail line)");
            notifier.watchdog();
            last_feed = Instant::now();
        }
    })
}

/// Runs the daemon until `stop` is set (by SIGTERM or SIGINT), talking to systemd through `notifier`.
/// Returns an error (and starts nothing) when the drivers cannot be set up.
pub fn run(config: &Config, stop: &AtomicBool, notifier: &Notifier) -> Result<(), String> {
    if !supply_present(config, stop, notifier) {
        return Ok(());
    }
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
    let mut trial = crate::trial::Trial::start(
        &config.update.trial_flag(),
        &config.update.request_dir(),
        config.update.trial_limit(),
    );
    while !stop.load(Ordering::SeqCst)
        && !restart_requested()
        && !crate::power::stopping_for_power()
    {
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
            if let Some(t) = trial.as_mut() {
                t.check(&daemon.status().snapshot());
            }
            daemon.publish_time();
            daemon.publish_balance();
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
    if crate::power::stopping_for_power() {
        log::warn!("stopping cleanly: the supply failed (last gasp)");
    } else {
        log::info!("stopping on request");
    }
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
