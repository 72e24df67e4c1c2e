//! AREQs from the coordinator: resets, state changes, devices joining and leaving, discovery answers,
//! data confirms and incoming ZCL frames.

use concentrator_plugin_sdk::StreamEvent;

use super::exchange::Owner;
use super::{LinkState, Notice, Purpose, ZnpDriver};
use crate::devices::Change;
use crate::mt::{AfIncomingMsg, MtCommand, DEV_ZB_COORD};
use crate::wire::IeeeAddress;
use crate::zcl::{
    self, metering, prepayment, Direction, GlobalCommand, ReportingConfig, ZclCluster, ZclCommand,
    ZclFrame, ZclHeader, ZclValue,
};

impl ZnpDriver {
    pub(super) fn on_areq(&mut self, command: MtCommand) {
        match command {
            MtCommand::SysResetInd { reason, .. } => self.on_reset_ind(reason),
            MtCommand::ZdoStateChangeInd { state } => {
                self.startup_state_change(state);
                if self.state == LinkState::Up && state != DEV_ZB_COORD {
                    log::warn!("ZNP: the coordinator's ZDO state changed to {state} while up");
                }
            }
            MtCommand::ZdoEndDeviceAnnceInd {
                nwk,
                ieee,
                capabilities,
                ..
            } => self.on_announce(ieee, nwk, capabilities),
            MtCommand::ZdoTcDevInd { nwk, ieee, .. } => {
                let capabilities = self.devices.get(ieee).map_or(0, |d| d.capabilities);
                self.on_announce(ieee, nwk, capabilities)
            }
            MtCommand::ZdoLeaveInd { ieee, rejoin, .. } => {
                if rejoin != 0 {
                    log::info!("ZNP: device {ieee} left to rejoin");
                } else if self.devices.on_leave(ieee).is_some() {
                    self.events.push_back(StreamEvent::DeviceLost {
                        address: ieee.to_bytes().to_vec(),
                    });
                    self.notices.push_back(Notice::DeviceRemoved { ieee });
                }
            }
            MtCommand::ZdoActiveEpRsp {
                status: 0,
                nwk,
                endpoints,
                ..
            } => {
                if let Some(ieee) = self.devices.on_active_endpoints(nwk, &endpoints) {
                    self.device_changed(ieee);
                    self.continue_interview(nwk);
                }
            }
            MtCommand::ZdoSimpleDescRsp {
                status: 0,
                nwk,
                descriptor: Some(descriptor),
                ..
            } => {
                if let Some(ieee) = self.devices.on_simple_descriptor(nwk, descriptor) {
                    self.device_changed(ieee);
                    self.continue_interview(nwk);
                }
            }
            MtCommand::AfDataConfirm {
                status, trans_id, ..
            } => self.on_data_confirm(status, trans_id),
            MtCommand::AfIncomingMsg(msg) => self.on_incoming(&msg),
            _ => {}
        }
    }

    fn on_announce(&mut self, ieee: IeeeAddress, nwk: u16, capabilities: u8) {
        let change = self.devices.on_announce(ieee, nwk, capabilities);
        self.events.push_back(StreamEvent::DeviceSeen {
            address: ieee.to_bytes().to_vec(),
        });
        if change != Change::Unchanged {
            self.device_changed(ieee);
        }
        if self.state == LinkState::Up {
            self.continue_interview(nwk);
        }
    }

    pub(super) fn device_changed(&mut self, ieee: IeeeAddress) {
        if let Some(entry) = self.devices.get(ieee) {
            self.notices.push_back(Notice::DeviceUpdated {
                device: Box::new(entry.clone()),
            });
        }
    }

    /// The next discovery step for a device: endpoints, descriptors, then the meter's formatting and
    /// reporting.
    pub(super) fn continue_interview(&mut self, nwk: u16) {
        let Some(device) = self.devices.by_nwk(nwk) else {
            return;
        };
        if device.endpoints.is_none() {
            self.send_sreq(
                MtCommand::ZdoActiveEpReq {
                    dst: nwk,
                    nwk_of_interest: nwk,
                },
                Purpose::Internal,
            );
            return;
        }
        let missing = device.missing_descriptors();
        if !missing.is_empty() {
            for endpoint in missing {
                self.send_sreq(
                    MtCommand::ZdoSimpleDescReq {
                        dst: nwk,
                        nwk_of_interest: nwk,
                        endpoint,
                    },
                    Purpose::Internal,
                );
            }
            return;
        }
        let ieee = device.ieee;
        let meter = device.meter;
        if let (Some(ep), None) = (meter.metering_endpoint, meter.format) {
            let read = GlobalCommand::ReadAttributes(vec![
                metering::attr::UNIT_OF_MEASURE,
                metering::attr::MULTIPLIER,
                metering::attr::DIVISOR,
            ]);
            self.send_global(Owner::Internal, ieee, nwk, ep, metering::CLUSTER, read);
            if self.config.configure_reporting {
                let configs = vec![
                    self.reporting(metering::attr::CURRENT_SUMMATION_DELIVERED, 0x25, 1),
                    self.reporting(metering::attr::INSTANTANEOUS_DEMAND, 0x2A, 1),
                ];
                let cmd = GlobalCommand::ConfigureReporting(configs);
                self.send_global(Owner::Internal, ieee, nwk, ep, metering::CLUSTER, cmd);
            }
        }
        if let (Some(ep), None, true) = (
            meter.prepayment_endpoint,
            meter.format,
            self.config.configure_reporting,
        ) {
            let configs = vec![self.reporting(prepayment::attr::CREDIT_REMAINING, 0x2B, 1)];
            let cmd = GlobalCommand::ConfigureReporting(configs);
            self.send_global(Owner::Internal, ieee, nwk, ep, prepayment::CLUSTER, cmd);
        }
    }

    fn reporting(&self, attribute: u16, data_type: u8, change: u64) -> ReportingConfig {
        ReportingConfig {
            attribute,
            data_type,
            min_interval: self.config.report_min_s,
            max_interval: self.config.report_max_s,
            reportable_change: Some(change),
        }
    }

    fn on_incoming(&mut self, msg: &AfIncomingMsg) {
        let (frame, command) = match zcl::decode(msg.cluster, &msg.data) {
            Ok(decoded) => decoded,
            Err(e) => {
                log::warn!(
                    "ZNP: a ZCL frame from {:#06x} on cluster {:#06x} is broken: {e}",
                    msg.src_addr,
                    msg.cluster
                );
                return;
            }
        };
        match &command {
            ZclCommand::Global(GlobalCommand::ReportAttributes(values)) => {
                self.apply_values(msg.src_addr, msg.cluster, values);
                if !frame.header.disable_default_response {
                    self.send_default_response(msg, &frame);
                }
            }
            ZclCommand::Global(GlobalCommand::ReadAttributesResponse(records)) => {
                let values: Vec<(u16, ZclValue)> = records
                    .iter()
                    .filter_map(|r| r.value.clone().map(|v| (r.attribute, v)))
                    .collect();
                self.apply_values(msg.src_addr, msg.cluster, &values);
            }
            _ => {}
        }
        if frame.header.direction == Direction::ServerToClient {
            self.on_zcl_answer(msg.src_addr, msg.cluster, &frame, command);
        }
    }

    fn send_default_response(&mut self, msg: &AfIncomingMsg, frame: &ZclFrame) {
        if self.devices.by_nwk(msg.src_addr).is_none() {
            return;
        }
        let answer = GlobalCommand::DefaultResponse {
            command: frame.header.command,
            status: 0,
        };
        let mut header = ZclHeader::client(zcl::FrameType::Global, frame.header.tsn, 0);
        header.disable_default_response = true;
        let out = answer.to_frame(header);
        self.send_af(msg.src_addr, msg.src_endpoint, msg.cluster, out.encode());
    }

    /// Attribute values from a report or a read: formatting goes to the device table, the rest
    /// becomes readings.
    fn apply_values(&mut self, nwk: u16, cluster: u16, values: &[(u16, ZclValue)]) {
        let Some(ieee) = self.devices.by_nwk(nwk).map(|d| d.ieee) else {
            log::warn!("ZNP: attribute values from {nwk:#06x}, which is not in the device table");
            return;
        };
        let cluster = ZclCluster::from_id(cluster);
        if cluster == ZclCluster::Metering {
            let find = |id: u16| {
                values
                    .iter()
                    .find(|(a, _)| *a == id)
                    .and_then(|(_, v)| v.as_i128())
            };
            let unit = find(metering::attr::UNIT_OF_MEASURE).map(|v| v as u8);
            let multiplier = find(metering::attr::MULTIPLIER).map(|v| v as u32);
            let divisor = find(metering::attr::DIVISOR).map(|v| v as u32);
            if unit.is_some() || multiplier.is_some() || divisor.is_some() {
                if let Some(ieee) = self
                    .devices
                    .on_metering_format(nwk, unit, multiplier, divisor)
                {
                    self.device_changed(ieee);
                }
            }
        }
        let format = self
            .devices
            .get(ieee)
            .and_then(|d| d.meter.format)
            .unwrap_or_default();
        for (attribute, value) in values {
            let reading = metering::reading(
                cluster,
                *attribute,
                value,
                &format,
                self.config.credit_exponent,
            );
            if let Some(reading) = reading {
                self.stats.readings += 1;
                self.events.push_back(StreamEvent::Reading {
                    address: ieee.to_bytes().to_vec(),
                    reading,
                });
            }
        }
    }
}
