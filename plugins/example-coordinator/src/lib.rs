//! An example vendor coordinator driver: the coordinator API of `concentrator_plugin_api::coordinator`
//! (API 1.2) over a toy radio that speaks lines of text, to show what a vendor writes for a coordinator
//! of their own. The radio says `JOIN <address>`, `REPORT <address> <Wh>`, `LEAVE <address>` and
//! `DONE <id>` / `FAIL <id> <reason>`; the driver sends `PERMIT <seconds>`, `KICK <address>` and
//! `RELAY <id> <address> <code>`.
//!
//! Everything the daemon needs is typed: stream events for the link, devices and readings, and
//! coordinator events (JSON through `poll_notice`) for joins, interviews, records to store, leaves and
//! the outcome of each command.

use std::collections::VecDeque;

use concentrator_plugin_sdk::api::coordinator::{
    CommandRequest, CoordinatorCommand, CoordinatorEvent, DeviceAddress, DeviceInfo,
};
use concentrator_plugin_sdk::{
    Decimal, Now, Quantity, Reading, Rejection, StreamDriver, StreamEvent, Unit, Value,
};

/// The radio's own address, reported when the link comes up.
pub const RADIO: u64 = 0x00ee_0000_0000_0001;

/// One radio.
#[derive(Debug, Default)]
pub struct ExampleCoordinator {
    inbox: Vec<u8>,
    outbox: VecDeque<Vec<u8>>,
    events: VecDeque<StreamEvent>,
    notices: VecDeque<CoordinatorEvent>,
    up: bool,
}

fn address(word: Option<&str>) -> Option<DeviceAddress> {
    word?.parse().ok()
}

impl ExampleCoordinator {
    fn line(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        match (words.next(), address(words.next())) {
            (Some("JOIN"), Some(device)) => {
                self.events.push_back(StreamEvent::DeviceSeen {
                    address: device.as_bytes().to_vec(),
                });
                self.notices.push_back(CoordinatorEvent::Joined { device });
                self.notices.push_back(CoordinatorEvent::Updated {
                    info: DeviceInfo {
                        device,
                        network_address: None,
                        endpoints: vec![1],
                        clusters: vec![0x0702],
                        interviewed: true,
                        record: Default::default(),
                    },
                });
                self.notices
                    .push_back(CoordinatorEvent::Interviewed { device });
            }
            (Some("REPORT"), Some(device)) => {
                if let Some(wh) = words.next().and_then(|w| w.parse::<i64>().ok()) {
                    self.events.push_back(StreamEvent::Reading {
                        address: device.as_bytes().to_vec(),
                        reading: Reading::new(
                            Quantity::EnergyImportTotal,
                            Value::Decimal(Decimal::new(wh, 0, Unit::WattHour)),
                        ),
                    });
                }
            }
            (Some("LEAVE"), Some(device)) => {
                self.events.push_back(StreamEvent::DeviceLost {
                    address: device.as_bytes().to_vec(),
                });
                self.notices.push_back(CoordinatorEvent::Left { device });
            }
            _ => self.outcome(line),
        }
    }

    /// `DONE <id>` or `FAIL <id> <reason>`.
    fn outcome(&mut self, line: &str) {
        let mut words = line.splitn(3, ' ');
        let (kind, id) = (words.next(), words.next().and_then(|w| w.parse().ok()));
        match (kind, id) {
            (Some("DONE"), Some(id)) => self.notices.push_back(CoordinatorEvent::CommandDone {
                id,
                readings: Vec::new(),
                detail: None,
            }),
            (Some("FAIL"), Some(id)) => self.notices.push_back(CoordinatorEvent::CommandFailed {
                id,
                reason: words.next().unwrap_or("the radio failed").to_owned(),
            }),
            _ => {}
        }
    }
}

impl StreamDriver for ExampleCoordinator {
    fn open(_config: &str, _now: Now) -> Result<Self, Rejection> {
        Ok(ExampleCoordinator::default())
    }

    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), Rejection> {
        self.inbox.extend_from_slice(bytes);
        while let Some(end) = self.inbox.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.inbox.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line).trim().to_owned();
            self.line(&text);
        }
        if self.inbox.len() > 4096 {
            self.inbox.clear();
        }
        Ok(())
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    fn on_tick(&mut self, _now: Now) -> Result<(), Rejection> {
        if !self.up {
            self.up = true;
            self.events.push_back(StreamEvent::LinkUp);
            self.notices.push_back(CoordinatorEvent::LinkUp {
                coordinator: DeviceAddress::from_u64(RADIO),
                firmware: String::from("example radio 1.0"),
                restored: false,
            });
        }
        Ok(())
    }

    fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    fn on_command(&mut self, command: &str, _now: Now) -> Result<(), Rejection> {
        let request = CommandRequest::from_json(command).map_err(Rejection::from)?;
        let id = request.id;
        let line = match request.command {
            CoordinatorCommand::PermitJoin { seconds } => format!("PERMIT {seconds} {id}"),
            CoordinatorCommand::Remove { device } => format!("KICK {device} {id}"),
            CoordinatorCommand::Relay { device, relay } => format!("RELAY {id} {device} {relay}"),
            CoordinatorCommand::LoadDevices { .. } => {
                // The radio keeps its own table; nothing to restore.
                self.outcome(&format!("DONE {id}"));
                return Ok(());
            }
            CoordinatorCommand::Read { .. } => {
                return Err(Rejection::from(
                    "this radio's meters report by themselves; nothing is read on request",
                ))
            }
        };
        self.outbox.push_back(format!("{line}\n").into_bytes());
        Ok(())
    }

    fn poll_notice(&mut self) -> Option<String> {
        self.notices.pop_front().map(|n| n.to_json())
    }
}

concentrator_plugin_sdk::declare_stream_driver!(
    ExampleCoordinator,
    kind = coordinator,
    name = "example-coordinator",
    version = env!("CARGO_PKG_VERSION")
);
#[cfg(feature = "export")]
concentrator_plugin_sdk::export_plugin!();
