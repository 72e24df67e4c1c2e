//! Liveness of the daemon's threads, which the systemd watchdog is fed from: a thread that stops making
//! progress (a hung driver, a wedged port) stops the feeding, and systemd restarts the daemon.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a worker serves: the summary counts buses and coordinators apart, and names each worker by
/// its kind and device (`bus rs485-1`, `zigbee zb-1`, `modem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    /// An RS485 bus's poll worker.
    Bus,
    /// A Zigbee coordinator's worker.
    Coordinator,
    /// The cellular modem's supervisor.
    Modem,
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerState {
    /// Starting up.
    Starting = 0,
    /// Working normally.
    Running = 1,
    /// Its device could not be opened; it retries with backoff (alive, but degraded).
    Retrying = 2,
    /// Finished (stopped on request).
    Stopped = 3,
}

/// One worker's heartbeat and state.
#[derive(Debug)]
pub struct Worker {
    kind: WorkerKind,
    name: String,
    beat_ms: AtomicU64,
    state: AtomicU8,
    epoch: Instant,
}

impl Worker {
    /// Records progress.
    pub fn beat(&self) {
        self.beat_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    /// Records progress and a state.
    pub fn set_state(&self, state: WorkerState) {
        self.state.store(state as u8, Ordering::SeqCst);
        self.beat();
    }

    /// The worker's state.
    pub fn state(&self) -> WorkerState {
        match self.state.load(Ordering::SeqCst) {
            0 => WorkerState::Starting,
            1 => WorkerState::Running,
            2 => WorkerState::Retrying,
            _ => WorkerState::Stopped,
        }
    }

    /// The worker's name: its kind and device (`bus rs485-1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it serves.
    pub fn kind(&self) -> WorkerKind {
        self.kind
    }

    fn silent_for(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.beat_ms.load(Ordering::SeqCst)))
    }
}

/// Every worker's heartbeat.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    workers: Mutex<Vec<Arc<Worker>>>,
    stall_limit: Duration,
}

impl Health {
    /// A registry in which a worker silent for longer than `stall_limit` counts as hung.
    pub fn new(stall_limit: Duration) -> Self {
        Health {
            epoch: Instant::now(),
            workers: Mutex::new(Vec::new()),
            stall_limit,
        }
    }

    /// Registers the worker of `kind` serving `device` (the bus's or the coordinator's name; unused for
    /// the modem, of which there is one).
    pub fn register(&self, kind: WorkerKind, device: &str) -> Arc<Worker> {
        let name = match kind {
            WorkerKind::Bus => format!("bus {device}"),
            WorkerKind::Coordinator => format!("zigbee {device}"),
            WorkerKind::Modem => "modem".to_string(),
        };
        let worker = Arc::new(Worker {
            kind,
            name,
            beat_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            state: AtomicU8::new(WorkerState::Starting as u8),
            epoch: self.epoch,
        });
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&worker));
        worker
    }

    /// The workers that are hung (silent past the limit while not stopped).
    pub fn hung(&self) -> Vec<String> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|w| w.state() != WorkerState::Stopped && w.silent_for() > self.stall_limit)
            .map(|w| w.name.clone())
            .collect()
    }

    /// A one-line summary for `systemctl status`.
    pub fn summary(&self) -> String {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let running = workers
            .iter()
            .filter(|w| w.state() == WorkerState::Running && w.kind == WorkerKind::Bus)
            .count();
        let coordinators = workers
            .iter()
            .filter(|w| w.state() == WorkerState::Running && w.kind == WorkerKind::Coordinator)
            .count();
        let running = if coordinators > 0 {
            format!("{running} buses running, {coordinators} Zigbee coordinators running")
        } else {
            format!("{running} buses running")
        };
        let retrying: Vec<&str> = workers
            .iter()
            .filter(|w| w.state() == WorkerState::Retrying)
            .map(|w| w.name())
            .collect();
        if retrying.is_empty() {
            running
        } else {
            format!("{running}; retrying {}", retrying.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_worker_is_hung_a_stopped_one_is_not() {
        let health = Health::new(Duration::from_millis(30));
        let a = health.register(WorkerKind::Bus, "a");
        let b = health.register(WorkerKind::Bus, "b");
        a.set_state(WorkerState::Running);
        b.set_state(WorkerState::Running);
        std::thread::sleep(Duration::from_millis(50));
        a.beat();
        assert_eq!(health.hung(), vec!["bus b".to_string()]);
        b.set_state(WorkerState::Stopped);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(health.hung(), vec!["bus a".to_string()]);
        assert_eq!(health.summary(), "1 buses running");
    }

    #[test]
    fn the_summary_counts_workers_by_kind() {
        let health = Health::new(Duration::from_secs(30));
        for (kind, name) in [
            (WorkerKind::Bus, "rs485-1"),
            (WorkerKind::Bus, "rs485-2"),
            (WorkerKind::Coordinator, "zb-1"),
            (WorkerKind::Modem, ""),
        ] {
            health.register(kind, name).set_state(WorkerState::Running);
        }
        health
            .register(WorkerKind::Bus, "rs485-3")
            .set_state(WorkerState::Retrying);
        assert_eq!(
            health.summary(),
            "2 buses running, 1 Zigbee coordinators running; retrying bus rs485-3"
        );
    }
}
