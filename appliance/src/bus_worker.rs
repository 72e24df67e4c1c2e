//! The bus workers: one thread per RS485 bus, owning the bus exclusively. It opens the bus (retrying with
//! backoff while the other buses run), runs the bus's [`BusScheduler`] over the meters on it, hands their
//! readings to the ledger and the uplink's outbox, registers the scheduler's handle for relay commands,
//! beats for the watchdog and stops on request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use concentrator_plugin_host::Quantity;

use crate::buses::{self, OpenBus};
use crate::config::{BusConfig, MeterConfig};
use crate::drivers::{driver_config, pack_address, Drivers};
use crate::health::{Worker, WorkerKind, WorkerState};
use crate::prepay::SchedulerHandles;
use crate::scheduler::{BusScheduler, ReadingSink, ScheduledMeter, SchedulerPolicy};
use crate::status::StatusBoard;
use crate::uplink::UplinkQueue;
use crate::workers::WorkerContext;

/// Retry delays for a bus whose device cannot be opened (USB adapter unplugged, port busy).
const REOPEN_BACKOFF: [Duration; 4] = [
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(60),
];

/// Opens every bus and starts its worker. A bus that cannot be opened is logged and retried in the
/// background; the others run regardless.
pub fn start_all(cx: &WorkerContext<'_>) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    for bus in &cx.config.buses {
        let worker = cx.health.register(WorkerKind::Bus, bus.name.get_ref());
        let opened = match buses::open(cx.config, bus) {
            Ok(opened) => {
                log::info!("opened bus {}", opened.description);
                cx.status
                    .bus_state(bus.name.get_ref(), "running", Some(&opened.description));
                worker.set_state(WorkerState::Running);
                Some(opened)
            }
            Err(e) => {
                log::error!(
                    "cannot open bus {}: {e}; retrying in the background, the other buses run",
                    bus.name.get_ref()
                );
                cx.status.bus_failed(bus.name.get_ref(), &e.to_string());
                worker.set_state(WorkerState::Retrying);
                None
            }
        };
        let job = BusWorker {
            meters: cx
                .config
                .meters
                .iter()
                .filter(|m| m.bus.get_ref() == bus.name.get_ref())
                .cloned()
                .collect(),
            bus: bus.clone(),
            drivers: Arc::clone(cx.drivers),
            status: Arc::clone(cx.status),
            worker,
            stop: Arc::clone(cx.stop),
            prepay: cx.prepay.map(|p| p.link(bus.name.get_ref())),
            uplink: cx.queue.cloned(),
            handles: cx.handles.clone(),
            balance: cx.balance.cloned(),
            clocks: cx
                .time
                .map(|t| crate::timekeeper::BusClocks::new(Arc::clone(t), bus.name.get_ref())),
        };
        match std::thread::Builder::new()
            .name(format!("bus {}", bus.name.get_ref()))
            .spawn(move || job.run(opened))
        {
            Ok(handle) => workers.push(handle),
            Err(e) => log::error!("cannot start the worker of bus {}: {e}", bus.name.get_ref()),
        }
    }
    workers
}

/// One bus's worker: owns the bus and its scheduler.
struct BusWorker {
    /// The meters on this bus.
    meters: Vec<MeterConfig>,
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
    /// With a feeder meter: the block balance, which takes the bus's energy registers.
    balance: Option<Arc<crate::balance::BlockBalance>>,
    /// The meters' clocks, read and set between polls.
    clocks: Option<crate::timekeeper::BusClocks>,
}

impl BusWorker {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `duration` on `clock`, beating; returns false when asked to stop. Ends early when a
    /// scan's exchange waits for this bus (`scheduler::loan`), so the scheduler serves it now.
    fn wait(&self, clock: &dyn concentrator_hal::Clock, duration: Duration) -> bool {
        let name = self.bus.name.get_ref();
        let until = clock.monotonic() + duration;
        while clock.monotonic() < until {
            if crate::scheduler::loan::pending(name) {
                break;
            }
            let step = crate::clock::TICK.min(until.saturating_sub(clock.monotonic()));
            if !crate::clock::worker_sleep(clock, &self.worker, &self.stop, step) {
                return false;
            }
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
            scheduler.set_state_sink(queue.state_sink(self.bus.name.get_ref()));
        }
        if let Some(balance) = &self.balance {
            sinks.push(balance.sink(self.bus.name.get_ref()));
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
            .meters
            .iter()
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

    fn run(mut self, mut opened: Option<OpenBus>) {
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
                match buses::open_on(&self.bus, &self.meters, true) {
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
            if let Some(clocks) = self.clocks.as_mut() {
                // After the polls are on the board: a clock pass takes two exchanges per meter.
                if clocks.tick(sched) {
                    self.status.update(sched);
                }
            }
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
