//! The start-up sequence: soft reset (wait for SYS_RESET_IND, or go on without it), ping, version,
//! network state (UTIL_GET_DEVICE_INFO), ZDO_STARTUP_FROM_APP only when the coordinator has not formed
//! its network yet (then wait for ZDO_STATE_CHANGE_IND to the coordinator state), and registration of
//! our endpoint (an "already registered" status counts as done). A failed step waits
//! `retry_backoff_ms` and starts again from the top.

use std::time::Duration;

use concentrator_plugin_sdk::StreamEvent;

use super::{LinkState, Notice, Purpose, ZnpDriver};
use crate::mt::{EndpointDescriptor, MtCommand, SimpleDescriptor, DEV_ZB_COORD};
use crate::wire::IeeeAddress;
use crate::zcl::{metering, prepayment};

/// AF_REGISTER's status when the endpoint is registered already.
const ZAPS_DUPLICATE_ENTRY: u8 = 0xB8;
/// Start attempts before the driver says so in the log at warning level.
const QUIET_ATTEMPTS: u32 = 3;

/// A step of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Waiting for SYS_RESET_IND.
    Reset,
    /// SYS_PING.
    Ping,
    /// SYS_VERSION.
    Version,
    /// UTIL_GET_DEVICE_INFO.
    DeviceInfo,
    /// ZDO_STARTUP_FROM_APP.
    Start,
    /// Waiting for ZDO_STATE_CHANGE_IND(coordinator).
    WaitFormed,
    /// AF_REGISTER.
    Register,
    /// Up.
    Done,
}

/// What the coordinator said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CoordinatorInfo {
    pub ieee: IeeeAddress,
    pub firmware: String,
    pub was_formed: bool,
}

impl ZnpDriver {
    /// Starts (again) from the top; `reset` first sends a soft reset.
    pub(super) fn begin_startup(&mut self, reset: bool) {
        self.state = LinkState::Starting;
        self.coordinator = CoordinatorInfo::default();
        if reset {
            self.step = Step::Reset;
            self.send_areq(MtCommand::SysResetReq { kind: 1 });
            self.step_deadline =
                Some(self.now + Duration::from_millis(self.config.reset_timeout_ms));
        } else {
            self.step_to(Step::Ping);
        }
    }

    fn step_to(&mut self, step: Step) {
        self.step = step;
        self.step_deadline = None;
        let command = match step {
            Step::Ping => MtCommand::SysPing,
            Step::Version => MtCommand::SysVersion,
            Step::DeviceInfo => MtCommand::UtilGetDeviceInfo,
            Step::Start => MtCommand::ZdoStartupFromApp { delay_ms: 100 },
            Step::Register => MtCommand::AfRegister(EndpointDescriptor {
                descriptor: SimpleDescriptor {
                    endpoint: self.config.endpoint,
                    profile: self.config.profile,
                    device_id: 0x0005,
                    device_version: 0,
                    in_clusters: vec![0x0000],
                    out_clusters: vec![metering::CLUSTER, prepayment::CLUSTER],
                },
                latency: 0,
            }),
            Step::WaitFormed => {
                self.step_deadline =
                    Some(self.now + Duration::from_millis(self.config.formation_timeout_ms));
                return;
            }
            Step::Reset => return,
            Step::Done => {
                self.link_up();
                return;
            }
        };
        self.send_sreq(command, Purpose::Startup(step));
    }

    pub(super) fn startup_tick(&mut self) {
        let Some(deadline) = self.step_deadline else {
            return;
        };
        if self.now < deadline {
            return;
        }
        self.step_deadline = None;
        match (self.state, self.step) {
            (LinkState::Backoff, _) => self.begin_startup(self.config.reset_on_start),
            (LinkState::Starting, Step::Reset) => {
                log::info!("ZNP: no SYS_RESET_IND after the reset; going on with a ping");
                self.step_to(Step::Ping);
            }
            (LinkState::Starting, Step::WaitFormed) => {
                self.startup_failed(Step::WaitFormed, "the network did not come up in time")
            }
            _ => {}
        }
    }

    pub(super) fn startup_srsp(&mut self, step: Step, command: MtCommand) {
        if self.state != LinkState::Starting || step != self.step {
            return;
        }
        match (step, command) {
            (Step::Ping, MtCommand::SysPingRsp { capabilities }) => {
                log::debug!("ZNP: ping answered, capabilities {capabilities:#06x}");
                self.step_to(Step::Version);
            }
            (
                Step::Version,
                MtCommand::SysVersionRsp {
                    major,
                    minor,
                    maint,
                    revision,
                    ..
                },
            ) => {
                self.coordinator.firmware = match revision {
                    Some(r) => format!("{major}.{minor}.{maint} ({r})"),
                    None => format!("{major}.{minor}.{maint}"),
                };
                self.step_to(Step::DeviceInfo);
            }
            (
                Step::DeviceInfo,
                MtCommand::UtilGetDeviceInfoRsp {
                    ieee, device_state, ..
                },
            ) => {
                self.coordinator.ieee = ieee;
                if device_state == DEV_ZB_COORD {
                    self.coordinator.was_formed = true;
                    self.step_to(Step::Register);
                } else {
                    self.step_to(Step::Start);
                }
            }
            (Step::Start, MtCommand::ZdoStartupFromAppRsp { state: 0 | 1 }) => {
                self.step_to(Step::WaitFormed)
            }
            (Step::Start, MtCommand::ZdoStartupFromAppRsp { state }) => self.startup_failed(
                step,
                &format!("ZDO_STARTUP_FROM_APP answered state {state} (not started)"),
            ),
            (
                Step::Register,
                MtCommand::StatusRsp {
                    status: 0 | ZAPS_DUPLICATE_ENTRY,
                },
            ) => self.step_to(Step::Done),
            (_, other) => self.startup_failed(step, &format!("unexpected answer {other:?}")),
        }
    }

    /// ZDO_STATE_CHANGE_IND during start-up.
    pub(super) fn startup_state_change(&mut self, state: u8) {
        if self.state == LinkState::Starting
            && self.step == Step::WaitFormed
            && state == DEV_ZB_COORD
        {
            self.step_to(Step::Register);
        }
    }

    /// SYS_RESET_IND: expected after our reset; otherwise the coordinator restarted by itself.
    pub(super) fn on_reset_ind(&mut self, reason: u8) {
        if self.state == LinkState::Starting && self.step == Step::Reset {
            self.step_to(Step::Ping);
            return;
        }
        log::warn!("ZNP: the coordinator reset (reason {reason}); starting again");
        if self.state == LinkState::Up {
            self.stats.resets += 1;
        }
        self.link_lost(&format!("the coordinator reset (reason {reason})"));
        self.reader.clear();
        self.begin_startup(false);
    }

    pub(super) fn startup_failed(&mut self, step: Step, reason: &str) {
        self.attempts += 1;
        if self.attempts > QUIET_ATTEMPTS {
            log::warn!(
                "ZNP: start-up failed at {step:?}: {reason}; attempt {}",
                self.attempts
            );
        } else {
            log::info!("ZNP: start-up failed at {step:?}: {reason}");
        }
        self.link_lost(reason);
        self.state = LinkState::Backoff;
        self.step_deadline = Some(self.now + Duration::from_millis(self.config.retry_backoff_ms));
    }

    fn link_up(&mut self) {
        self.state = LinkState::Up;
        self.attempts = 0;
        self.events.push_back(StreamEvent::LinkUp);
        self.notices.push_back(Notice::CoordinatorUp {
            ieee: self.coordinator.ieee,
            firmware: self.coordinator.firmware.clone(),
            was_formed: self.coordinator.was_formed,
        });
        let unfinished: Vec<u16> = self
            .devices
            .iter()
            .filter(|d| !d.is_interviewed() || d.meter.format.is_none())
            .map(|d| d.nwk)
            .collect();
        for nwk in unfinished {
            self.continue_interview(nwk);
        }
    }
}
