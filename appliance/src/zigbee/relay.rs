//! The ledger's relay jobs for meters behind a coordinator, as coordinator-API commands.
//!
//! The gateway's ledger is the authority for money; what it decides is the supply. A relay job becomes
//! a `relay` command and a read of the relay state a `read` of `relay-state`; how the coordinator's
//! driver carries them out is its own (the ZNP driver: Prepayment-cluster cut-off values, in its
//! `coordinator` module).
//!
//! The jobs arrive through the same `SchedulerHandle` the RS485 buses register, so the ledger's relay
//! driver (`crate::prepay::relay`) and the head-end's commands need no Zigbee case.

use std::sync::mpsc::Sender;

use concentrator_plugin_host::{
    CoordinatorCommand, DeviceAddress, DeviceException, Quantity, Reading, Task,
};
use serde_json::{json, Value};

use crate::scheduler::JobOutcome;

/// What a command that was carried out produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    /// Readings (a relay state read back).
    pub readings: Vec<Reading>,
    /// The driver's own account, when it gave one.
    pub detail: Option<Value>,
}

/// Who waits for a command's notice.
#[derive(Debug)]
pub enum Waiting {
    /// A control-socket request.
    Control(Sender<Result<Value, String>>),
    /// `permit_join` from the control socket, with its seconds.
    PermitJoin(Sender<Result<Value, String>>, u8),
    /// A relay command of the ledger or the head-end.
    RelayCommand(Sender<JobOutcome>),
    /// The read-back of a relay's state.
    RelayRead(Sender<JobOutcome>),
    /// The worker itself (what, for the log).
    Internal(&'static str),
}

/// How a command went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The device answered a ZCL status (a healthy meter saying no).
    Refused(u8, String),
    /// Not delivered, not answered, or refused by the driver.
    Failed(String),
}

/// The coordinator command for a job on the meter at `address`, and how its answer is awaited.
#[allow(clippy::type_complexity)]
pub fn command_for(
    address: &str,
    task: &Task,
) -> Result<(CoordinatorCommand, fn(Sender<JobOutcome>) -> Waiting), String> {
    let device: DeviceAddress = address.parse()?;
    match task {
        Task::Relay(command) => Ok((
            CoordinatorCommand::relay(device, *command),
            Waiting::RelayCommand,
        )),
        Task::Read(Quantity::RelayState) => Ok((
            CoordinatorCommand::Read {
                device,
                quantities: vec![Quantity::RelayState.to_string()],
            },
            Waiting::RelayRead,
        )),
        other => Err(format!(
            "{other} is not done on request behind a coordinator; its meters report their readings by themselves and take relay commands and relay-state reads"
        )),
    }
}

/// Hands a command's outcome to whoever waits for it.
pub fn answer(coordinator: &str, waiting: Waiting, outcome: Result<Done, Failure>) {
    let text = |f: &Failure| match f {
        Failure::Refused(status, name) => format!("the device refused it: {name} ({status:#04x})"),
        Failure::Failed(reason) => reason.clone(),
    };
    let exception = |status: u8, name: String| DeviceException {
        code: u32::from(status),
        text: name,
    };
    match waiting {
        Waiting::Control(reply) | Waiting::PermitJoin(reply, _) => {
            let _ = reply.send(match outcome {
                Ok(done) => Ok(done.detail.unwrap_or_else(|| json!({"kind": "accepted"}))),
                Err(f) => Err(text(&f)),
            });
        }
        Waiting::RelayCommand(reply) => {
            let _ = reply.send(match outcome {
                Ok(_) => Ok(Ok(Vec::new())),
                Err(Failure::Refused(s, n)) => Ok(Err(exception(s, n))),
                Err(Failure::Failed(r)) => Err(r),
            });
        }
        Waiting::RelayRead(reply) => {
            let _ = reply.send(match outcome {
                Ok(done)
                    if done
                        .readings
                        .iter()
                        .any(|r| r.quantity == Quantity::RelayState) =>
                {
                    Ok(Ok(done.readings))
                }
                Ok(_) => Err(String::from(
                    "the coordinator's driver answered the relay-state read without a relay state",
                )),
                Err(Failure::Refused(s, n)) => Ok(Err(exception(s, n))),
                Err(Failure::Failed(r)) => Err(r),
            });
        }
        Waiting::Internal(what) => match outcome {
            Ok(_) => log::debug!("zigbee {coordinator}: {what}: done"),
            Err(f) => log::warn!("zigbee {coordinator}: {what}: {}", text(&f)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_plugin_host::{CoordinatorRequest, RelayCommand};

    #[test]
    fn relay_tasks_become_coordinator_commands() {
        let (cmd, _) = command_for("00124b0000000001", &Task::Relay(RelayCommand::Trip)).unwrap();
        let text = CoordinatorRequest {
            id: 1,
            command: cmd,
        }
        .to_json();
        assert_eq!(
            text,
            r#"{"id":1,"op":"relay","device":"00124b0000000001","relay":1}"#
        );
        let (cmd, _) = command_for("00124b0000000001", &Task::Read(Quantity::RelayState)).unwrap();
        assert!(
            matches!(cmd, CoordinatorCommand::Read { quantities, .. } if quantities == ["relay-state"])
        );
        assert!(command_for("00124b0000000001", &Task::Read(Quantity::EnergyImportTotal)).is_err());
        assert!(command_for("x", &Task::Relay(RelayCommand::Trip)).is_err());
    }
}
