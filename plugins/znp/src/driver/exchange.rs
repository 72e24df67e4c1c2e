//! The host's commands, and ZCL exchanges with devices: an AF data request, its confirm, and the
//! device's answer matched by network address and transaction sequence number, under a timeout.

use std::time::Duration;

use super::{
    Command, CommandRejected, CommandRequest, CommandResult, LinkState, Notice, Purpose, ZnpDriver,
};
use crate::mt::{AfDataRequest, MtCommand};
use crate::wire::IeeeAddress;
use crate::zcl::{
    status_name, FrameType, GlobalCommand, PrepaymentCommand, ReportingConfig, ZclCommand,
    ZclFrame, ZclHeader,
};

/// Seconds between the Unix epoch and the Zigbee epoch (2000-01-01 UTC).
const ZIGBEE_EPOCH_UNIX: i64 = 946_684_800;
/// Longest top-up code a ConsumerTopUp carries.
const MAX_TOP_UP_CODE: usize = 25;

/// Who waits for a ZCL exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A host command.
    Command(u64),
    /// Discovery and housekeeping.
    Internal,
}

/// A ZCL request waiting for its answer.
#[derive(Debug, Clone)]
pub(super) struct PendingZcl {
    owner: Owner,
    ieee: IeeeAddress,
    nwk: u16,
    cluster: u16,
    tsn: u8,
    trans_id: u8,
    deadline: Duration,
}

impl ZnpDriver {
    /// Takes a host command. Refusals happen here; the result of an accepted command comes as a notice.
    pub fn command(&mut self, request: CommandRequest) -> Result<(), CommandRejected> {
        let id = request.id;
        if let Command::LoadDevices { table } = request.command {
            self.devices.replace(table);
            self.notices.push_back(Notice::CommandDone {
                id,
                result: CommandResult::Accepted,
            });
            if self.state == LinkState::Up {
                let nwks: Vec<u16> = self.devices.iter().map(|d| d.nwk).collect();
                nwks.into_iter().for_each(|n| self.continue_interview(n));
            }
            return Ok(());
        }
        match self.state {
            LinkState::Up => {}
            LinkState::Starting => return Err(CommandRejected::NotReady("starting up")),
            LinkState::Backoff => {
                return Err(CommandRejected::NotReady("waiting to retry the start-up"))
            }
        }
        let owner = Owner::Command(id);
        let device = request.command.device();
        let target = match device {
            Some(ieee) => Some(
                self.devices
                    .get(ieee)
                    .map(|d| d.nwk)
                    .ok_or_else(|| CommandRejected::UnknownDevice(ieee.to_string()))?,
            ),
            None => None,
        };
        let ieee = device.unwrap_or_default();
        let nwk = target.unwrap_or_default();
        match request.command {
            Command::LoadDevices { .. } => {}
            Command::PermitJoin { seconds } => {
                if seconds == 255 {
                    return Err(CommandRejected::Invalid(
                        "permit-join needs a time limit: 1 to 254 seconds (0 closes the network)",
                    ));
                }
                self.send_sreq(
                    MtCommand::ZdoMgmtPermitJoinReq {
                        addr_mode: 0x0F,
                        dst: 0xFFFC,
                        duration: seconds,
                        tc_significance: 0,
                    },
                    Purpose::Command(id),
                );
            }
            Command::Leave { device } => self.send_sreq(
                MtCommand::ZdoMgmtLeaveReq {
                    dst: nwk,
                    device,
                    flags: 0,
                },
                Purpose::Command(id),
            ),
            Command::Read {
                cluster,
                attributes,
                ..
            } => {
                if attributes.is_empty() || attributes.len() > 40 {
                    return Err(CommandRejected::Invalid("read 1 to 40 attributes at once"));
                }
                let ep = self.endpoint(ieee, cluster)?;
                let cmd = GlobalCommand::ReadAttributes(attributes);
                self.send_global(owner, ieee, nwk, ep, cluster, cmd);
            }
            Command::ConfigureReporting {
                cluster,
                attribute,
                data_type,
                min_interval,
                max_interval,
                reportable_change,
                ..
            } => {
                let ep = self.endpoint(ieee, cluster)?;
                let cmd = GlobalCommand::ConfigureReporting(vec![ReportingConfig {
                    attribute,
                    data_type,
                    min_interval,
                    max_interval,
                    reportable_change,
                }]);
                self.send_global(owner, ieee, nwk, ep, cluster, cmd);
            }
            Command::TopUp {
                code,
                originating_device,
                ..
            } => {
                if code.is_empty() || code.len() > MAX_TOP_UP_CODE {
                    return Err(CommandRejected::Invalid(
                        "a top-up code is 1 to 25 characters",
                    ));
                }
                let cmd = PrepaymentCommand::ConsumerTopUp {
                    originating_device,
                    code: code.into_bytes(),
                };
                self.send_prepayment(owner, ieee, nwk, cmd)?;
            }
            Command::SelectEmergencyCredit {
                issued_at_unix,
                originating_device,
                ..
            } => {
                let unix = issued_at_unix.unwrap_or(self.unix_millis.div_euclid(1000));
                let issued_at = u32::try_from(unix - ZIGBEE_EPOCH_UNIX).map_err(|_| {
                    CommandRejected::Invalid("issued_at_unix must lie between 2000 and 2136")
                })?;
                let cmd = PrepaymentCommand::SelectAvailableEmergencyCredit {
                    issued_at,
                    originating_device,
                };
                self.send_prepayment(owner, ieee, nwk, cmd)?;
            }
            Command::ChangeDebt { debt, .. } => {
                self.send_prepayment(owner, ieee, nwk, PrepaymentCommand::ChangeDebt(debt))?
            }
            Command::SetCutOff {
                cut_off_value,
                provider_id,
                issuer_event_id,
                proposed_configuration,
                ..
            } => {
                let cmd = PrepaymentCommand::ChangePaymentMode {
                    provider_id,
                    issuer_event_id,
                    implementation_time: 0,
                    proposed_configuration,
                    cut_off_value,
                };
                self.send_prepayment(owner, ieee, nwk, cmd)?;
            }
            Command::SetLowCreditWarning { level, .. } => {
                let cmd = PrepaymentCommand::SetLowCreditWarningLevel { level };
                self.send_prepayment(owner, ieee, nwk, cmd)?;
            }
        }
        self.pump();
        Ok(())
    }

    fn endpoint(&self, ieee: IeeeAddress, cluster: u16) -> Result<u8, CommandRejected> {
        self.devices
            .get(ieee)
            .and_then(|d| d.endpoint_for(cluster))
            .ok_or(CommandRejected::NoCluster {
                device: ieee.to_string(),
                cluster,
            })
    }

    fn send_prepayment(
        &mut self,
        owner: Owner,
        ieee: IeeeAddress,
        nwk: u16,
        command: PrepaymentCommand,
    ) -> Result<(), CommandRejected> {
        let cluster = crate::zcl::prepayment::CLUSTER;
        let ep = self.endpoint(ieee, cluster)?;
        let tsn = self.next_tsn();
        let frame = command.to_frame(tsn);
        self.send_zcl(owner, ieee, nwk, ep, cluster, frame);
        Ok(())
    }

    pub(super) fn send_global(
        &mut self,
        owner: Owner,
        ieee: IeeeAddress,
        nwk: u16,
        endpoint: u8,
        cluster: u16,
        command: GlobalCommand,
    ) {
        let tsn = self.next_tsn();
        let frame = command.to_frame(ZclHeader::client(FrameType::Global, tsn, 0));
        self.send_zcl(owner, ieee, nwk, endpoint, cluster, frame);
    }

    fn send_zcl(
        &mut self,
        owner: Owner,
        ieee: IeeeAddress,
        nwk: u16,
        endpoint: u8,
        cluster: u16,
        frame: ZclFrame,
    ) {
        let trans_id = self.send_af(nwk, endpoint, cluster, frame.encode());
        self.pending.push(PendingZcl {
            owner,
            ieee,
            nwk,
            cluster,
            tsn: frame.header.tsn,
            trans_id,
            deadline: self.now + self.config.zcl_timeout(),
        });
    }

    /// Queues an AF data request; returns its trans id.
    pub(super) fn send_af(&mut self, nwk: u16, endpoint: u8, cluster: u16, data: Vec<u8>) -> u8 {
        let trans_id = self.next_trans_id();
        let request = AfDataRequest {
            dst_addr: nwk,
            dst_endpoint: endpoint,
            src_endpoint: self.config.endpoint,
            cluster,
            trans_id,
            options: 0,
            radius: self.config.radius,
            data,
        };
        self.send_sreq(MtCommand::AfDataRequest(request), Purpose::Zcl(trans_id));
        trans_id
    }

    pub(super) fn on_data_confirm(&mut self, status: u8, trans_id: u8) {
        if status != 0 {
            let reason = format!(
                "not delivered: AF_DATA_CONFIRM status {status:#04x}{}",
                match status {
                    0xE9 => " (MAC no acknowledgement)",
                    0xCD => " (no route)",
                    0xF0 => " (MAC transaction expired)",
                    0xB7 => " (APS no acknowledgement)",
                    _ => "",
                }
            );
            self.fail_zcl_by_trans(trans_id, &reason);
        }
    }

    /// A device's answer: completes the exchange with the same address and sequence number.
    pub(super) fn on_zcl_answer(
        &mut self,
        nwk: u16,
        cluster: u16,
        frame: &ZclFrame,
        command: ZclCommand,
    ) {
        let Some(index) = self
            .pending
            .iter()
            .position(|p| p.nwk == nwk && p.tsn == frame.header.tsn && p.cluster == cluster)
        else {
            return;
        };
        let pending = self.pending.remove(index);
        let Owner::Command(id) = pending.owner else {
            return;
        };
        let notice = match command {
            ZclCommand::Global(GlobalCommand::DefaultResponse { status: 0, .. }) => {
                Notice::CommandDone {
                    id,
                    result: CommandResult::Acknowledged,
                }
            }
            ZclCommand::Global(GlobalCommand::DefaultResponse { status, .. }) => {
                Notice::CommandRefused {
                    id,
                    status,
                    status_name: status_name(status).to_string(),
                }
            }
            ZclCommand::Global(GlobalCommand::ReadAttributesResponse(records)) => {
                Notice::CommandDone {
                    id,
                    result: CommandResult::Attributes { records },
                }
            }
            ZclCommand::Global(GlobalCommand::ConfigureReportingResponse(statuses)) => {
                Notice::CommandDone {
                    id,
                    result: CommandResult::Reporting { statuses },
                }
            }
            ZclCommand::PrepaymentResponse(response) => Notice::CommandDone {
                id,
                result: CommandResult::Prepayment { response },
            },
            other => Notice::CommandFailed {
                id,
                reason: format!("device {} answered with {other:?}", pending.ieee),
            },
        };
        self.notices.push_back(notice);
    }

    pub(super) fn expire_zcl(&mut self) {
        let now = self.now;
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| now >= p.deadline);
        self.pending = kept;
        for p in expired {
            self.fail_pending(
                p.owner,
                format!(
                    "device {} did not answer within {} ms",
                    p.ieee, self.config.zcl_timeout_ms
                ),
            );
        }
    }

    pub(super) fn fail_zcl_by_trans(&mut self, trans_id: u8, reason: &str) {
        let (failed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.trans_id == trans_id);
        self.pending = kept;
        for p in failed {
            self.fail_pending(p.owner, format!("device {}: {reason}", p.ieee));
        }
    }

    pub(super) fn fail_all_zcl(&mut self, reason: &str) {
        for p in std::mem::take(&mut self.pending) {
            self.fail_pending(p.owner, reason.to_string());
        }
    }

    fn fail_pending(&mut self, owner: Owner, reason: String) {
        match owner {
            Owner::Command(id) => self.notices.push_back(Notice::CommandFailed { id, reason }),
            Owner::Internal => log::info!("ZNP: housekeeping exchange failed: {reason}"),
        }
    }
}
