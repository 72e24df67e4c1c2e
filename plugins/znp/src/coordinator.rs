//! The ZNP driver behind the vendor-neutral coordinator API (`concentrator_plugin_api::coordinator`):
//! the daemon's commands become the driver's own, and its notices become typed coordinator events.
//!
//! Relay commands are Prepayment-cluster (0x0705) commands. The gateway's ledger is the authority for
//! money; the meter's own credit register is left alone. What the ledger decides is the supply:
//!
//! - trip → `set_cut_off` (ChangePaymentMode) with [`CUT_OFF_DISCONNECT`]: any credit is below it, so
//!   the meter disconnects;
//! - close (directly, or allowed: a Zigbee meter has no arming) → `set_cut_off` with
//!   [`CUT_OFF_RESTORE`]: no credit is below it, so the meter reconnects and never cuts by itself;
//! - a read of `relay-state` reads CreditRemaining and CutOffValue: the supply is open when the credit
//!   is below the cut-off, as the meter itself decides.

use std::collections::{HashMap, HashSet, VecDeque};

use concentrator_plugin_sdk::api::coordinator::{
    CommandRequest as HostRequest, CoordinatorCommand, CoordinatorEvent, DeviceAddress, DeviceInfo,
    WireReading,
};
use concentrator_plugin_sdk::api::values::{Quantity, Reading, RelayCommand, RelayState, Value};

use crate::devices::{DeviceEntry, DeviceTable};
use crate::driver::{Command, CommandRequest, CommandResult, Notice};
use crate::wire::IeeeAddress;
use crate::zcl::{prepayment, ReadRecord, ZclValue};

/// The cut-off value that disconnects: every credit is below it.
pub const CUT_OFF_DISCONNECT: i32 = i32::MAX;
/// The cut-off value that reconnects: no credit is below it (`i32::MIN` is ZCL's "invalid" value).
pub const CUT_OFF_RESTORE: i32 = -i32::MAX;

/// What a command of the host's is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The relay state from a prepayment read.
    RelayState,
    /// Nothing but success.
    Done,
    /// One of the driver's own `op`s: its result as the detail.
    Own,
}

/// Translates between the coordinator API and the driver.
#[derive(Debug, Default)]
pub struct Translator {
    pending: HashMap<u64, Expect>,
    known: HashSet<IeeeAddress>,
    interviewed: HashSet<IeeeAddress>,
    out: VecDeque<CoordinatorEvent>,
}

fn ieee(device: DeviceAddress) -> Result<IeeeAddress, String> {
    device
        .to_u64()
        .filter(|_| device.as_bytes().len() == 8)
        .map(IeeeAddress)
        .ok_or_else(|| format!("{device} is not an 8-byte IEEE address"))
}

/// The device's record in the coordinator API.
pub fn device_info(entry: &DeviceEntry) -> DeviceInfo {
    let mut clusters: Vec<u16> = entry
        .descriptors
        .iter()
        .flat_map(|d| d.in_clusters.iter().copied())
        .collect();
    clusters.sort_unstable();
    clusters.dedup();
    DeviceInfo {
        device: DeviceAddress::from_u64(entry.ieee.0),
        network_address: Some(entry.nwk),
        endpoints: entry.endpoints.clone().unwrap_or_default(),
        clusters,
        interviewed: entry.is_interviewed(),
        record: serde_json::to_value(entry).unwrap_or_default(),
    }
}

fn signed(records: &[ReadRecord], attribute: u16) -> Option<i64> {
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
pub fn relay_state(records: &[ReadRecord]) -> Result<RelayState, String> {
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

impl Translator {
    /// The driver's command for a host's command text: the coordinator API's, or one of the driver's
    /// own `op`s (tried second).
    pub fn command(&mut self, text: &str) -> Result<CommandRequest, String> {
        let request = match HostRequest::from_json(text) {
            Ok(request) => request,
            Err(api_error) => {
                let own: CommandRequest = serde_json::from_str(text).map_err(|e| {
                    format!(
                        "not a coordinator command ({api_error}) nor one of the ZNP driver's ({e})"
                    )
                })?;
                self.pending.insert(own.id, Expect::Own);
                return Ok(own);
            }
        };
        let (command, expect) = match request.command {
            CoordinatorCommand::LoadDevices { devices } => {
                let mut table = DeviceTable::new();
                for info in devices {
                    let entry = serde_json::from_value::<DeviceEntry>(info.record.clone())
                        .or_else(|_| {
                            ieee(info.device)
                                .map(|a| DeviceEntry::new(a, info.network_address.unwrap_or(0)))
                        })?;
                    self.known.insert(entry.ieee);
                    if entry.is_interviewed() {
                        self.interviewed.insert(entry.ieee);
                    }
                    table.insert(entry);
                }
                (Command::LoadDevices { table }, Expect::Done)
            }
            CoordinatorCommand::PermitJoin { seconds } => {
                (Command::PermitJoin { seconds }, Expect::Done)
            }
            CoordinatorCommand::Remove { device } => (
                Command::Leave {
                    device: ieee(device)?,
                },
                Expect::Done,
            ),
            CoordinatorCommand::Relay { device, relay } => {
                let cut_off_value = match RelayCommand::try_from_raw(relay) {
                    Ok(RelayCommand::Trip) => CUT_OFF_DISCONNECT,
                    Ok(RelayCommand::CloseDirect | RelayCommand::CloseAllowed) => CUT_OFF_RESTORE,
                    _ => return Err(format!("relay command {relay} has no Zigbee prepayment equivalent; a Zigbee meter takes supply cut and restore only")),
                };
                (
                    Command::SetCutOff {
                        device: ieee(device)?,
                        cut_off_value,
                        provider_id: 0,
                        issuer_event_id: 0,
                        proposed_configuration: 0,
                    },
                    Expect::Done,
                )
            }
            CoordinatorCommand::Read { device, quantities } => {
                if quantities
                    .iter()
                    .any(|q| q.parse::<Quantity>() != Ok(Quantity::RelayState))
                {
                    return Err(format!(
                        "a Zigbee meter reports its readings by itself; only `relay-state` is read on request, not {}",
                        quantities.join(", ")
                    ));
                }
                (
                    Command::Read {
                        device: ieee(device)?,
                        cluster: prepayment::CLUSTER,
                        attributes: vec![
                            prepayment::attr::CREDIT_REMAINING,
                            prepayment::attr::CUT_OFF_VALUE,
                        ],
                    },
                    Expect::RelayState,
                )
            }
        };
        self.pending.insert(request.id, expect);
        Ok(CommandRequest {
            id: request.id,
            command,
        })
    }

    /// A command the driver refused before carrying it out.
    pub fn forget(&mut self, id: u64) {
        self.pending.remove(&id);
    }

    /// Takes one of the driver's notices; the events it means are queued for [`Translator::next_event`].
    pub fn notice(&mut self, notice: Notice) {
        let event = match notice {
            Notice::CoordinatorUp {
                ieee,
                firmware,
                was_formed,
            } => CoordinatorEvent::LinkUp {
                coordinator: DeviceAddress::from_u64(ieee.0),
                firmware,
                restored: was_formed,
            },
            Notice::DeviceUpdated { device } => {
                let address = DeviceAddress::from_u64(device.ieee.0);
                if self.known.insert(device.ieee) {
                    self.out
                        .push_back(CoordinatorEvent::Joined { device: address });
                }
                let info = device_info(&device);
                let newly_interviewed = info.interviewed && self.interviewed.insert(device.ieee);
                self.out.push_back(CoordinatorEvent::Updated { info });
                if newly_interviewed {
                    self.out
                        .push_back(CoordinatorEvent::Interviewed { device: address });
                }
                return;
            }
            Notice::DeviceRemoved { ieee } => {
                self.known.remove(&ieee);
                self.interviewed.remove(&ieee);
                CoordinatorEvent::Left {
                    device: DeviceAddress::from_u64(ieee.0),
                }
            }
            Notice::CommandDone { id, result } => self.done(id, result),
            Notice::CommandRefused {
                id,
                status,
                status_name,
            } => {
                self.pending.remove(&id);
                CoordinatorEvent::CommandRefused {
                    id,
                    code: u32::from(status),
                    text: status_name,
                }
            }
            Notice::CommandFailed { id, reason } => {
                self.pending.remove(&id);
                CoordinatorEvent::CommandFailed { id, reason }
            }
        };
        self.out.push_back(event);
    }

    fn done(&mut self, id: u64, result: CommandResult) -> CoordinatorEvent {
        match self.pending.remove(&id).unwrap_or(Expect::Own) {
            Expect::RelayState => match &result {
                CommandResult::Attributes { records } => match relay_state(records) {
                    Ok(state) => CoordinatorEvent::CommandDone {
                        id,
                        readings: vec![WireReading::from(Reading::new(
                            Quantity::RelayState,
                            Value::Relay(state),
                        ))],
                        detail: None,
                    },
                    Err(reason) => CoordinatorEvent::CommandFailed { id, reason },
                },
                other => CoordinatorEvent::CommandFailed {
                    id,
                    reason: format!(
                        "the meter answered the read with {} instead of the relay attribute",
                        match other {
                            CommandResult::Accepted => "an acceptance",
                            CommandResult::Acknowledged => "a default response",
                            CommandResult::Attributes { .. } => "attributes",
                            CommandResult::Reporting { .. } => "a reporting configuration",
                            CommandResult::Prepayment { .. } => "a prepayment response",
                        }
                    ),
                },
            },
            Expect::Done => CoordinatorEvent::CommandDone {
                id,
                readings: Vec::new(),
                detail: None,
            },
            Expect::Own => CoordinatorEvent::CommandDone {
                id,
                readings: Vec::new(),
                detail: serde_json::to_value(result).ok(),
            },
        }
    }

    /// The next event for the host.
    pub fn next_event(&mut self) -> Option<CoordinatorEvent> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn relay_commands_become_cut_off_commands_and_reads_the_relay_state() {
        let mut t = Translator::default();
        let device = DeviceAddress::from_u64(0x0012_4b00_0000_0001);
        let trip = HostRequest {
            id: 1,
            command: CoordinatorCommand::relay(device, RelayCommand::Trip),
        };
        let own = t.command(&trip.to_json()).unwrap();
        assert!(matches!(
            own.command,
            Command::SetCutOff {
                cut_off_value: i32::MAX,
                ..
            }
        ));
        let close = HostRequest {
            id: 2,
            command: CoordinatorCommand::relay(device, RelayCommand::CloseAllowed),
        };
        let own = t.command(&close.to_json()).unwrap();
        assert!(
            matches!(own.command, Command::SetCutOff { cut_off_value, .. } if cut_off_value == -i32::MAX)
        );
        let alarm = HostRequest {
            id: 3,
            command: CoordinatorCommand::relay(device, RelayCommand::Alarm),
        };
        assert!(t.command(&alarm.to_json()).is_err());

        let read = HostRequest {
            id: 4,
            command: CoordinatorCommand::Read {
                device,
                quantities: vec![String::from("relay-state")],
            },
        };
        t.command(&read.to_json()).unwrap();
        t.notice(Notice::CommandDone {
            id: 4,
            result: CommandResult::Attributes {
                records: vec![record(1, 10), record(0x40, i64::from(CUT_OFF_DISCONNECT))],
            },
        });
        let Some(CoordinatorEvent::CommandDone { readings, .. }) = t.next_event() else {
            panic!("no event");
        };
        assert_eq!(
            readings[0].to_reading().unwrap().to_string(),
            Reading::new(Quantity::RelayState, Value::Relay(RelayState::Open)).to_string()
        );
    }

    #[test]
    fn a_new_device_is_joined_updated_then_interviewed() {
        let mut t = Translator::default();
        let entry = DeviceEntry::new(IeeeAddress(5), 0x1234);
        t.notice(Notice::DeviceUpdated {
            device: Box::new(entry),
        });
        assert!(matches!(
            t.next_event(),
            Some(CoordinatorEvent::Joined { .. })
        ));
        let Some(CoordinatorEvent::Updated { info }) = t.next_event() else {
            panic!("no update");
        };
        assert_eq!(info.network_address, Some(0x1234));
        assert!(!info.interviewed);
        assert!(t.next_event().is_none());
    }
}
