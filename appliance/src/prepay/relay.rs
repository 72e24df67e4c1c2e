//! Carrying out the ledger's relay commands through the bus schedulers: the command goes to the meter's
//! bus at [`Priority::Command`], then the relay state is read back at [`Priority::TopUp`] and handed back
//! to the ledger, which retries or raises an alarm by its own policy. Nothing here blocks: jobs are
//! polled from the ledger's thread.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_ledger::{RelayAction, RelayCommand as LedgerRelayCommand, RelayState};
use concentrator_plugin_host::{
    Quantity, RelayCommand, RelayState as MeterRelayState, Task, Value,
};

use crate::scheduler::{JobOutcome, Priority, SchedulerHandle};

/// How long a command waits for its bus to be opened before it is dropped (the ledger sends it again
/// after `verify_after_s`).
const WAIT_FOR_BUS: Duration = Duration::from_secs(30);

/// The running schedulers' handles by bus name; a bus worker registers its scheduler whenever it opens
/// (or reopens) the bus.
#[derive(Debug, Clone, Default)]
pub struct SchedulerHandles(Arc<Mutex<HashMap<String, SchedulerHandle>>>);

impl SchedulerHandles {
    /// Registers (or replaces) the handle of bus `bus`.
    pub fn register(&self, bus: &str, handle: SchedulerHandle) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bus.to_string(), handle);
    }

    /// The handle of bus `bus`, while its scheduler runs.
    pub fn get(&self, bus: &str) -> Option<SchedulerHandle> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bus)
            .cloned()
    }
}

/// Where a meter is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The bus's name.
    pub bus: String,
    /// The address as written.
    pub address: String,
}

enum Stage {
    Command(Receiver<JobOutcome>),
    ReadBack(Receiver<JobOutcome>),
}

struct Job {
    meter: String,
    place: Place,
    action: RelayAction,
    stage: Stage,
}

/// The relay jobs in flight.
pub(super) struct RelayDriver {
    handles: SchedulerHandles,
    jobs: Vec<Job>,
    waiting: Vec<(LedgerRelayCommand, Place, Instant)>,
}

impl std::fmt::Debug for RelayDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayDriver")
            .field("jobs", &self.jobs.len())
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

/// The meter's relay command for a ledger action.
pub fn meter_command(action: RelayAction) -> RelayCommand {
    match action {
        RelayAction::Cut => RelayCommand::Trip,
        RelayAction::Reconnect => RelayCommand::CloseDirect,
        RelayAction::Arm => RelayCommand::CloseAllowed,
    }
}

fn ledger_state(state: MeterRelayState) -> RelayState {
    match state {
        MeterRelayState::Open => RelayState::Open,
        MeterRelayState::Closed => RelayState::Closed,
        MeterRelayState::ArmedForClose => RelayState::Armed,
    }
}

impl RelayDriver {
    pub(super) fn new(handles: SchedulerHandles) -> Self {
        RelayDriver {
            handles,
            jobs: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// Sends a command to the meter's bus (or keeps it until the bus is open).
    pub(super) fn submit(&mut self, command: LedgerRelayCommand, place: Place) {
        let Some(handle) = self.handles.get(&place.bus) else {
            self.waiting.push((command, place, Instant::now()));
            return;
        };
        log::info!(
            "meter {}: relay {:?} (attempt {}) on bus {} address {}",
            command.meter,
            command.action,
            command.attempt,
            place.bus,
            place.address
        );
        let rx = handle.submit(
            &place.address,
            Task::Relay(meter_command(command.action)),
            Priority::Command,
        );
        self.jobs.push(Job {
            meter: command.meter,
            place,
            action: command.action,
            stage: Stage::Command(rx),
        });
    }

    /// Advances every job; returns the relay states read back, for [`concentrator_ledger::Ledger::relay_observed`].
    pub(super) fn poll(&mut self) -> Vec<(String, RelayState)> {
        let waiting = std::mem::take(&mut self.waiting);
        for (command, place, since) in waiting {
            if self.handles.get(&place.bus).is_some() {
                self.submit(command, place);
            } else if since.elapsed() < WAIT_FOR_BUS {
                self.waiting.push((command, place, since));
            } else {
                log::warn!(
                    "meter {}: relay {:?} not sent: bus {} is not open; the ledger will send it again",
                    command.meter,
                    command.action,
                    place.bus
                );
            }
        }
        let mut observed = Vec::new();
        let jobs = std::mem::take(&mut self.jobs);
        for mut job in jobs {
            let rx = match &job.stage {
                Stage::Command(rx) | Stage::ReadBack(rx) => rx,
            };
            let outcome = match rx.try_recv() {
                Ok(outcome) => outcome,
                Err(TryRecvError::Empty) => {
                    self.jobs.push(job);
                    continue;
                }
                Err(TryRecvError::Disconnected) => Err("the bus scheduler stopped".into()),
            };
            match job.stage {
                Stage::Command(_) => {
                    match outcome {
                        Ok(Ok(_)) => {}
                        Ok(Err(exception)) => log::warn!(
                            "meter {}: relay command {} refused by the meter: {exception}",
                            job.meter,
                            job.action
                        ),
                        Err(e) => {
                            log::warn!(
                                "meter {}: relay command {} failed: {e}",
                                job.meter,
                                job.action
                            )
                        }
                    }
                    // Read back whatever happened: the ledger decides whether to try again.
                    let Some(handle) = self.handles.get(&job.place.bus) else {
                        continue;
                    };
                    job.stage = Stage::ReadBack(handle.submit(
                        &job.place.address,
                        Task::Read(Quantity::RelayState),
                        Priority::TopUp,
                    ));
                    self.jobs.push(job);
                }
                Stage::ReadBack(_) => {
                    let state = outcome.ok().and_then(Result::ok).and_then(|readings| {
                        readings.iter().find_map(|r| match r.value {
                            Value::Relay(state) => Some(ledger_state(state)),
                            _ => None,
                        })
                    });
                    match state {
                        Some(state) => observed.push((job.meter, state)),
                        None => log::warn!(
                            "meter {}: the relay state could not be read back after {:?}; the ledger will retry",
                            job.meter,
                            job.action
                        ),
                    }
                }
            }
        }
        observed
    }
}
