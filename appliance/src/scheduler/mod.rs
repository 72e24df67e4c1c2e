//! The bus scheduler: one per bus, owning it. It polls every meter on its interval, runs commands
//! (relay, top-up related reads) before routine polls, retries by policy, adapts each meter's reply
//! timeout to its measured latency, marks silent meters offline without slowing the others beyond their
//! timeout, and keeps per-meter statistics.

pub mod loan;
mod stats;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use concentrator_hal::{Clock, ReplyEnd, Rs485Bus};
use concentrator_plugin_host::{
    DeviceException, MeterSession, Plugin, Quantity, Reading, Task, TaskError,
};
use serde::Serialize;

pub use stats::{LatencyEstimate, MeterStats, LATENCY_BUCKETS_MS};

/// How urgent a job is; lower runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Priority {
    /// A command that changes a meter (relay, clock): money or safety depends on it.
    Command = 0,
    /// A read that a top-up or a relay decision waits for.
    TopUp = 1,
    /// The periodic poll.
    Routine = 2,
}

/// Retry and offline rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerPolicy {
    /// Extra attempts after a timeout or a bad reply (a device exception is never retried).
    pub retries: u32,
    /// Failed polls in a row after which a meter is offline.
    pub offline_after: u32,
    /// An offline meter is polled once every this many intervals.
    pub offline_poll_every: u32,
    /// The lowest reply timeout the latency estimate may set.
    pub timeout_floor: Duration,
    /// The highest (the protocol's own window is the real limit; the driver's timeout always caps it).
    pub timeout_ceiling: Duration,
}

impl Default for SchedulerPolicy {
    fn default() -> Self {
        SchedulerPolicy {
            retries: 1,
            offline_after: 3,
            offline_poll_every: 4,
            timeout_floor: Duration::from_millis(60),
            timeout_ceiling: Duration::from_millis(500),
        }
    }
}

/// The outcome of a job, as sent back to whoever submitted it.
pub type JobOutcome = Result<Result<Vec<Reading>, DeviceException>, String>;

struct Job {
    meter: usize,
    task: Task,
    priority: Priority,
    seq: u64,
    reply: Option<Sender<JobOutcome>>,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the lowest priority number and the oldest job come first.
        Reverse((self.priority, self.seq)).cmp(&Reverse((other.priority, other.seq)))
    }
}

/// A meter as the scheduler sees it.
#[derive(Debug)]
pub struct ScheduledMeter {
    /// The address as written in the config.
    pub address: String,
    /// The dwelling it supplies.
    pub dwelling: String,
    /// The driver's name.
    pub driver: String,
    /// What each poll reads.
    pub reads: Vec<Quantity>,
    session: Result<MeterSession, String>,
    stats: MeterStats,
    estimate: LatencyEstimate,
    failures: u32,
    online: Option<bool>,
    next_due: Duration,
    skipped: u32,
    last_readings: Vec<Reading>,
    plugin_fault: Option<String>,
}

impl ScheduledMeter {
    /// A meter driven by `driver` (or, when it could not be opened, the reason, reported as failed).
    pub fn new(
        address: &str,
        dwelling: &str,
        driver: &str,
        reads: Vec<Quantity>,
        session: Result<MeterSession, String>,
    ) -> Self {
        ScheduledMeter {
            address: address.to_string(),
            dwelling: dwelling.to_string(),
            driver: driver.to_string(),
            reads,
            session,
            stats: MeterStats::default(),
            estimate: LatencyEstimate::default(),
            failures: 0,
            online: None,
            next_due: Duration::ZERO,
            skipped: 0,
            last_readings: Vec::new(),
            plugin_fault: None,
        }
    }

    /// Opens the meter's session with `plugin`.
    pub fn open(
        plugin: &Arc<Plugin>,
        address: &[u8],
        config: &str,
    ) -> Result<MeterSession, String> {
        plugin
            .open_meter(address, config)
            .map_err(|e| e.to_string())
    }

    /// The meter's statistics.
    pub fn stats(&self) -> &MeterStats {
        &self.stats
    }

    /// Whether it answered its last poll (`None` before the first).
    pub fn online(&self) -> Option<bool> {
        self.online
    }

    /// The readings of its last successful poll.
    pub fn last_readings(&self) -> &[Reading] {
        &self.last_readings
    }

    /// Why the meter cannot be driven at all, if so (driver missing, config refused, quarantined).
    pub fn failure(&self) -> Option<String> {
        let session = match &self.session {
            Err(reason) => return Some(reason.clone()),
            Ok(session) => session,
        };
        let plugin = session.plugin();
        if plugin.is_quarantined() {
            return Some(format!(
                "driver plugin `{}` {}",
                plugin.name(),
                plugin.status()
            ));
        }
        // An offline meter whose last failure was its driver's is not a wiring problem.
        match (self.online, &self.plugin_fault) {
            (Some(false), Some(fault)) => Some(fault.clone()),
            _ => None,
        }
    }

    /// The plugin that drives it (none when it could not be opened).
    pub fn plugin(&self) -> Option<&Arc<Plugin>> {
        self.session.as_ref().ok().map(MeterSession::plugin)
    }
}

/// What one poll of every meter did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Meters polled.
    pub polled: usize,
    /// Meters that answered every read.
    pub answered: usize,
    /// Bus time the cycle took (on the bus's clock).
    pub took: Duration,
}

/// Receives every successful routine poll's readings: the meter's address as written and its readings.
/// Called on the bus's thread; it must not block (the daemon sends them on to the ledger's thread).
pub type ReadingSink = Box<dyn FnMut(&str, &[Reading]) + Send>;

/// A meter going offline or coming back: its address, whether it is online now, and the failed polls
/// in a row that made it offline (0 when back). Called on the bus's thread; it must not block.
pub type StateSink = Box<dyn FnMut(&str, bool, u32) + Send>;

/// Submits jobs to a running scheduler from other threads.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: Sender<(String, Task, Priority, Sender<JobOutcome>)>,
}

/// A job as a handle submits it: the meter's address, the task, its priority and where to answer.
pub type SubmittedJob = (String, Task, Priority, Sender<JobOutcome>);

impl SchedulerHandle {
    /// A handle and the receiving end of its jobs, for workers that run meters without a
    /// [`BusScheduler`] (a Zigbee coordinator's worker carries relay jobs to its meters).
    pub fn channel() -> (SchedulerHandle, Receiver<SubmittedJob>) {
        let (tx, rx) = channel();
        (SchedulerHandle { tx }, rx)
    }

    /// Queues `task` for the meter at `address`; the outcome arrives on the returned channel.
    pub fn submit(&self, address: &str, task: Task, priority: Priority) -> Receiver<JobOutcome> {
        let (tx, rx) = channel();
        if self
            .tx
            .send((address.to_string(), task, priority, tx.clone()))
            .is_err()
        {
            let _ = tx.send(Err("the bus scheduler has stopped".to_string()));
        }
        rx
    }
}

/// One bus's scheduler.
pub struct BusScheduler {
    name: String,
    bus: Box<dyn Rs485Bus>,
    clock: Box<dyn Clock>,
    meters: Vec<ScheduledMeter>,
    interval: Duration,
    policy: SchedulerPolicy,
    queue: BinaryHeap<Job>,
    seq: u64,
    inbox: Receiver<(String, Task, Priority, Sender<JobOutcome>)>,
    handle: SchedulerHandle,
    sink: Option<ReadingSink>,
    state_sink: Option<StateSink>,
    loans: loan::LoanDesk,
}

impl std::fmt::Debug for BusScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusScheduler")
            .field("name", &self.name)
            .field("meters", &self.meters.len())
            .finish()
    }
}

impl BusScheduler {
    /// A scheduler owning `bus`, polling `meters` every `interval` of `clock`.
    pub fn new(
        bus: Box<dyn Rs485Bus>,
        clock: Box<dyn Clock>,
        meters: Vec<ScheduledMeter>,
        interval: Duration,
        policy: SchedulerPolicy,
    ) -> Self {
        let (tx, inbox) = channel();
        let name = bus.name().to_string();
        let loans = loan::LoanDesk::open(&name);
        BusScheduler {
            name,
            bus,
            clock,
            meters,
            interval,
            policy,
            queue: BinaryHeap::new(),
            seq: 0,
            inbox,
            handle: SchedulerHandle { tx },
            sink: None,
            state_sink: None,
            loans,
        }
    }

    /// Hands every routine poll's readings to `sink` (the daemon feeds energy registers to the ledger).
    pub fn set_reading_sink(&mut self, sink: ReadingSink) {
        self.sink = Some(sink);
    }

    /// Tells `sink` when a meter goes offline, and when one that was offline answers again (the
    /// daemon queues events 30 and 31 for the head-end).
    pub fn set_state_sink(&mut self, sink: StateSink) {
        self.state_sink = Some(sink);
    }

    /// A handle to submit jobs from other threads.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// The bus's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The meters, with their state and statistics.
    pub fn meters(&self) -> &[ScheduledMeter] {
        &self.meters
    }

    /// The clock the bus runs on.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    fn take_inbox(&mut self) {
        while let Ok((address, task, priority, reply)) = self.inbox.try_recv() {
            match self.meters.iter().position(|m| m.address == address) {
                Some(meter) => self.push(meter, task, priority, Some(reply)),
                None => {
                    let _ = reply.send(Err(format!("no meter {address} on bus {}", self.name)));
                }
            }
        }
    }

    fn push(
        &mut self,
        meter: usize,
        task: Task,
        priority: Priority,
        reply: Option<Sender<JobOutcome>>,
    ) {
        self.seq += 1;
        self.queue.push(Job {
            meter,
            task,
            priority,
            seq: self.seq,
            reply,
        });
    }

    /// Runs every queued command and top-up job, most urgent first, then a slice of the exchanges lent
    /// to a scan ([`loan`]).
    pub fn run_urgent(&mut self) {
        self.take_inbox();
        while let Some(job) = self.queue.pop() {
            let outcome = self.run_task(job.meter, job.task, job.priority);
            if let Some(reply) = job.reply {
                let _ = reply.send(outcome.map_err(|e| e.to_string()));
            }
            self.take_inbox();
        }
        self.loans.serve(self.bus.as_mut());
    }

    /// One pass: urgent jobs, then every meter that is due. Returns how long until the next is due.
    pub fn step(&mut self) -> Duration {
        self.run_urgent();
        let now = self.clock.monotonic();
        for index in 0..self.meters.len() {
            if self.meters[index].next_due <= now {
                self.poll(index);
                self.run_urgent();
            }
        }
        let now = self.clock.monotonic();
        self.meters
            .iter()
            .map(|m| m.next_due.saturating_sub(now))
            .min()
            .unwrap_or(self.interval)
    }

    /// Polls every meter once now, whatever its schedule (installer's "read all", benchmarks).
    pub fn poll_cycle(&mut self) -> CycleReport {
        let start = self.clock.monotonic();
        let mut report = CycleReport::default();
        for index in 0..self.meters.len() {
            report.polled += 1;
            if self.poll(index) {
                report.answered += 1;
            }
            self.run_urgent();
        }
        report.took = self.clock.monotonic() - start;
        report
    }

    /// Runs one task on meter `index` now, as a command (retried by policy, counted in its statistics):
    /// the bus's own thread uses it for work between polls (the meters' clocks, `crate::timekeeper`).
    pub fn run_now(
        &mut self,
        index: usize,
        task: Task,
    ) -> Result<Result<Vec<Reading>, DeviceException>, TaskError> {
        if index >= self.meters.len() {
            return Err(TaskError::Failed {
                plugin: String::new(),
                entry: "begin",
                message: format!("no meter number {index} on bus {}", self.name),
            });
        }
        self.run_task(index, task, Priority::Command)
    }

    /// Reads every configured quantity of one meter; returns whether all were answered.
    fn poll(&mut self, index: usize) -> bool {
        let now = self.clock.monotonic();
        let interval = self.interval;
        let meter = &mut self.meters[index];
        meter.next_due = now + interval;
        if meter.session.is_err() {
            return false;
        }
        if meter.online == Some(false) {
            meter.skipped += 1;
            if meter.skipped < self.policy.offline_poll_every {
                return false;
            }
            meter.skipped = 0;
        }
        let reads = meter.reads.clone();
        let mut readings = Vec::new();
        let mut answered = true;
        for quantity in reads {
            match self.run_task(index, Task::Read(quantity), Priority::Routine) {
                Ok(Ok(mut r)) => readings.append(&mut r),
                Ok(Err(exception)) => {
                    log::debug!(
                        "bus {} meter {}: {quantity}: {exception}",
                        self.name,
                        self.meters[index].address
                    );
                }
                Err(e) => {
                    answered = false;
                    log::debug!(
                        "bus {} meter {}: {quantity}: {e}",
                        self.name,
                        self.meters[index].address
                    );
                    if matches!(e, TaskError::NoReply { .. }) {
                        break; // a silent meter: do not spend a timeout on each quantity
                    }
                }
            }
        }
        let meter = &mut self.meters[index];
        if answered {
            meter.failures = 0;
            if meter.online != Some(true) {
                log::info!(
                    "bus {} meter {} ({}) is online",
                    self.name,
                    meter.address,
                    meter.dwelling
                );
                if meter.online == Some(false) {
                    if let Some(s) = self.state_sink.as_mut() {
                        s(&meter.address, true, 0);
                    }
                }
            }
            meter.online = Some(true);
            if !readings.is_empty() {
                let line: Vec<String> = readings.iter().map(ToString::to_string).collect();
                log::info!(
                    "bus {} meter {} ({}): {}",
                    self.name,
                    meter.address,
                    meter.dwelling,
                    line.join(", ")
                );
                if let Some(sink) = self.sink.as_mut() {
                    sink(&meter.address, &readings);
                }
                meter.last_readings = readings;
            }
        } else {
            meter.failures += 1;
            if meter.failures >= self.policy.offline_after && meter.online != Some(false) {
                log::warn!(
                    "bus {} meter {} ({}) is offline: no valid answer to {} polls in a row",
                    self.name,
                    meter.address,
                    meter.dwelling,
                    meter.failures
                );
                meter.online = Some(false);
                meter.skipped = 0;
                meter.estimate.reset();
                if let Some(s) = self.state_sink.as_mut() {
                    s(&meter.address, false, meter.failures);
                }
            }
        }
        answered
    }

    /// Runs one task with retries, recording statistics and adapting the meter's timeout.
    fn run_task(
        &mut self,
        index: usize,
        task: Task,
        priority: Priority,
    ) -> Result<Result<Vec<Reading>, DeviceException>, TaskError> {
        let attempts =
            1 + if priority == Priority::Routine && self.meters[index].online == Some(false) {
                0
            } else {
                self.policy.retries
            };
        let mut last = None;
        for _ in 0..attempts {
            let meter = &mut self.meters[index];
            let Ok(session) = meter.session.as_mut() else {
                break;
            };
            session.set_reply_timeout_cap(
                meter
                    .estimate
                    .timeout(self.policy.timeout_floor, self.policy.timeout_ceiling),
            );
            let result = session.run(self.bus.as_mut(), self.clock.as_ref(), task);
            for exchange in session.last_exchanges() {
                meter.stats.requests += 1;
                if exchange.end == Some(ReplyEnd::NoReply) {
                    meter.stats.timeouts += 1;
                }
                if let Some(latency) = exchange.latency {
                    meter.stats.record_latency(latency);
                    meter.estimate.observe(latency);
                }
            }
            match &result {
                Err(e)
                    if e.is_plugin_fault() || matches!(e, TaskError::ChildQuarantined { .. }) =>
                {
                    meter.plugin_fault = Some(e.to_string());
                }
                Ok(_) => meter.plugin_fault = None,
                Err(_) => {}
            }
            match &result {
                Ok(Ok(_)) => meter.stats.ok += 1,
                Ok(Err(_)) => meter.stats.exceptions += 1,
                Err(TaskError::Protocol { .. }) => meter.stats.bad_replies += 1,
                Err(
                    TaskError::Panicked { .. }
                    | TaskError::Misbehaved { .. }
                    | TaskError::Quarantined { .. }
                    | TaskError::ChildFailed { .. }
                    | TaskError::ChildQuarantined { .. },
                ) => {
                    meter.stats.driver_faults += 1;
                }
                Err(_) => {}
            }
            let retry = matches!(
                result,
                Err(TaskError::NoReply { .. } | TaskError::Protocol { .. })
            );
            if matches!(result, Err(TaskError::NoReply { .. })) {
                // The estimate may have cut the window too short: give the next attempt the full window.
                meter.estimate.reset();
            }
            last = Some(result);
            if !retry {
                break;
            }
        }
        match last {
            Some(result) => result,
            None => Err(TaskError::Failed {
                plugin: self.meters[index].driver.clone(),
                entry: "open",
                message: self.meters[index]
                    .failure()
                    .unwrap_or_else(|| String::from("not opened")),
            }),
        }
    }
}
