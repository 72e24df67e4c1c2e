//! The ledger's relay decisions for Zigbee meters, as Prepayment-cluster (0x0705) commands.
//!
//! The gateway's ledger is the authority for money; the meter's own credit register is left alone
//! (no top-up codes are sent: the ledger's tokens are not the meter's codes, and two credit registers
//! run by two tariffs would drift apart). What the ledger decides is the supply:
//!
//! - cut → `set_cut_off` (ChangePaymentMode) with the cut-off value [`CUT_OFF_DISCONNECT`]: any credit
//!   is below it, so the meter disconnects;
//! - reconnect (direct, or armed: a Zigbee meter has no arming) → `set_cut_off` with
//!   [`CUT_OFF_RESTORE`]: no credit is below it, so the meter reconnects and never cuts by itself;
//! - the read-back reads CreditRemaining and CutOffValue: the supply is open when the credit is below
//!   the cut-off, as the meter itself decides.
//!
//! The jobs arrive through the same `SchedulerHandle` the RS485 buses register, so the ledger's relay
//! driver (`crate::prepay::relay`) and the head-end's commands need no Zigbee case.

use std::sync::mpsc::Sender;

use concentrator_driver_znp::zcl::prepayment;
use concentrator_driver_znp::{CommandResult, ZclValue};
use concentrator_plugin_host::{
    DeviceException, Quantity, Reading, RelayCommand, RelayState, Task, Value as MeterValue,
};
use serde_json::{json, Value};

use crate::scheduler::JobOutcome;

/// The cut-off value that disconnects: every credit is below it.
pub const CUT_OFF_DISCONNECT: i32 = i32::MAX;
/// The cut-off value that reconnects: no credit is below it (`i32::MIN` is ZCL's "invalid" value).
pub const CUT_OFF_RESTORE: i32 = -i32::MAX;

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

/// The driver command for a job on the meter at `address`, and how its answer is awaited.
#[allow(clippy::type_complexity)]
pub fn command_for(
    address: &str,
    task: &Task,
) -> Result<(Value, fn(Sender<JobOutcome>) -> Waiting), String> {
    let cut_off =
        |value: i32| json!({"op": "set_cut_off", "device": address, "cut_off_value": value});
    match task {
        Task::Relay(RelayCommand::Trip) => Ok((cut_off(CUT_OFF_DISCONNECT), Waiting::RelayCommand)),
        Task::Relay(RelayCommand::CloseDirect | RelayCommand::CloseAllowed) => {
            Ok((cut_off(CUT_OFF_RESTORE), Waiting::RelayCommand))
        }
        Task::Read(Quantity::RelayState) => Ok((
            json!({
                "op": "read",
                "device": address,
                "cluster": prepayment::CLUSTER,
                "attributes": [prepayment::attr::CREDIT_REMAINING, prepayment::attr::CUT_OFF_VALUE],
            }),
            Waiting::RelayRead,
        )),
        other => Err(format!(
            "{other:?} has no Zigbee prepayment equivalent; a Zigbee meter reports its readings by itself and takes supply cut and restore only"
        )),
    }
}

/// Hands a command's outcome to whoever waits for it.
pub fn answer(coordinator: &str, waiting: Waiting, outcome: Result<CommandResult, Failure>) {
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
                Ok(result) => serde_json::to_value(result).map_err(|e| e.to_string()),
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
                Ok(CommandResult::Attributes { records }) => relay_state(&records).map(|state| {
                    Ok(vec![Reading::new(
                        Quantity::RelayState,
                        MeterValue::Relay(state),
                    )])
                }),
                Ok(other) => Err(format!("the meter answered the read with {other:?}")),
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

fn signed(records: &[concentrator_driver_znp::zcl::ReadRecord], attribute: u16) -> Option<i64> {
    records
        .iter()
        .find(|r| r.attribute == attribute && r.status == 0)
        .and_then(|r| match &r.value {
            Some(ZclValue::Signed(_, v)) => Some(*v),
            Some(ZclValue::Unsigned(_, v)) => i64::try_from(*v).ok(),
            _ => None,
        })
}

/// The supply's state from CreditRemaining and CutOffValue: open when the credit is below the cut-off.
pub fn relay_state(
    records: &[concentrator_driver_znp::zcl::ReadRecord],
) -> Result<RelayState, String> {
    let credit = signed(records, prepayment::attr::CREDIT_REMAINING)
        .ok_or("the meter did not return CreditRemaining (0x0705/0x0001)")?;
    let cut_off = signed(records, prepayment::attr::CUT_OFF_VALUE)
        .ok_or("the meter did not return CutOffValue (0x0705/0x0040)")?;
    Ok(if credit < cut_off {
        RelayState::Open
    } else {
        RelayState::Closed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_driver_znp::zcl::ReadRecord;

    fn record(attribute: u16, v: i64) -> ReadRecord {
        ReadRecord {
            attribute,
            status: 0,
            value: Some(ZclValue::Signed(0x2B, v)),
        }
    }

    #[test]
    fn supply_state_follows_credit_and_cut_off() {
        let open = [
            record(0x0001, 1000),
            record(0x0040, i64::from(CUT_OFF_DISCONNECT)),
        ];
        assert_eq!(relay_state(&open), Ok(RelayState::Open));
        let closed = [
            record(0x0001, -5000),
            record(0x0040, i64::from(CUT_OFF_RESTORE)),
        ];
        assert_eq!(relay_state(&closed), Ok(RelayState::Closed));
        let e = relay_state(&closed[..1]).unwrap_err();
        assert!(e.contains("CutOffValue"), "{e}");
    }

    #[test]
    fn relay_tasks_become_cut_off_commands() {
        let (cmd, _) = command_for("00124b0000000001", &Task::Relay(RelayCommand::Trip)).unwrap();
        assert_eq!(cmd["op"], "set_cut_off");
        assert_eq!(cmd["cut_off_value"], i64::from(i32::MAX));
        let (cmd, _) =
            command_for("00124b0000000001", &Task::Relay(RelayCommand::CloseAllowed)).unwrap();
        assert_eq!(cmd["cut_off_value"], -i64::from(i32::MAX));
        assert!(command_for("x", &Task::Relay(RelayCommand::Alarm)).is_err());
    }
}
