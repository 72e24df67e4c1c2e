//! The emulated Z-Stack 3.x coordinator, sans-IO: MT bytes from the host in, MT bytes out. It answers
//! SREQs with SRSPs and raises the AREQs a real coordinator raises (reset, state changes, announcements,
//! leaves, data confirms, incoming messages), with the emulated meters behind it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::mt::commands::{id, status_rsp};
use crate::mt::{
    AfIncomingMsg, CommandType, FrameReader, MtCommand, MtFrame, Read, Subsystem, DEV_ZB_COORD,
};
use crate::wire::IeeeAddress;
use crate::zcl::ZclFrame;

use super::meter::{EmulatedMeter, METER_ENDPOINT};
use super::nv::{NetworkSettings, NvMemory};

/// The emulated coordinator.
#[derive(Debug)]
pub struct ZnpEmulator {
    /// Its IEEE address.
    pub ieee: IeeeAddress,
    /// Whether the network was formed (kept across resets, like NV memory).
    pub formed: bool,
    /// Whether the network is running now.
    pub started: bool,
    /// Registered endpoints (cleared by a reset).
    pub endpoints: Vec<u8>,
    /// Meters on the network.
    pub meters: Vec<EmulatedMeter>,
    /// Meters waiting for permit-join to join.
    pub waiting: Vec<EmulatedMeter>,
    /// Whether joining is permitted.
    pub permit_join: bool,
    /// When true, nothing is answered (a hung coordinator).
    pub silent: bool,
    /// Frames received from the host, for assertions.
    pub received: Vec<MtFrame>,
    /// Meters on the network announce themselves once the host's endpoint is registered (as meters
    /// do when they rejoin after a power cut); cleared after they have.
    pub announce_on_register: bool,
    /// NV memory: the formed network as a host stack reads it (see [`NvMemory`]).
    pub nv: NvMemory,
    /// When each meter last reported, by the emulator's clock ([`ZnpEmulator::tick`]).
    last_report: Vec<(IeeeAddress, Duration)>,
    /// The emulator's clock.
    now: Duration,
    reader: FrameReader,
    out: VecDeque<u8>,
}

impl ZnpEmulator {
    /// A coordinator that has never formed a network (`formed` false) or one that has.
    pub fn new(formed: bool) -> Self {
        let ieee = IeeeAddress(0x0012_4B00_2A3B_4C5D);
        ZnpEmulator {
            ieee,
            formed,
            started: formed,
            endpoints: Vec::new(),
            meters: Vec::new(),
            waiting: Vec::new(),
            permit_join: false,
            silent: false,
            received: Vec::new(),
            announce_on_register: false,
            nv: NvMemory::new(NetworkSettings::default(), ieee, formed),
            last_report: Vec::new(),
            now: Duration::ZERO,
            reader: FrameReader::new(),
            out: VecDeque::new(),
        }
    }

    /// Bytes from the host.
    pub fn on_bytes(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
        while let Some(read) = self.reader.next_frame() {
            if let Read::Frame(frame) = read {
                self.received.push(frame.clone());
                if !self.silent {
                    self.on_frame(&frame);
                }
            }
        }
    }

    /// Bytes for the host.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.out.drain(..).collect()
    }

    /// Sends raw bytes to the host (garbage, broken frames).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.out.extend(bytes);
    }

    fn send(&mut self, command: MtCommand) {
        if let Some(bytes) = command.to_frame().and_then(|f| f.encode().ok()) {
            self.out.extend(bytes);
        }
    }

    fn send_frame(&mut self, frame: MtFrame) {
        if let Ok(bytes) = frame.encode() {
            self.out.extend(bytes);
        }
    }

    /// The coordinator restarts by itself (a watchdog): endpoints are lost, the network restores.
    pub fn reset(&mut self, reason: u8) {
        self.endpoints.clear();
        self.started = self.formed;
        self.reader.clear();
        self.send(MtCommand::SysResetInd {
            reason,
            transport_rev: 2,
            product: 1,
            major: 2,
            minor: 7,
            hw_rev: 1,
        });
    }

    /// A meter that is on the network already (paired before); with [`announce_on_register`] it
    /// announces itself when the host has registered its endpoint.
    ///
    /// [`announce_on_register`]: ZnpEmulator::announce_on_register
    pub fn add_paired_meter(&mut self, meter: EmulatedMeter) {
        self.meters.retain(|m| m.ieee != meter.ieee);
        self.meters.push(meter);
    }

    /// Time passes (monotonic `now`): meters consume, and each meter whose reporting the coordinator
    /// configured reports its energy and credit once per configured interval.
    pub fn tick(&mut self, now: Duration) {
        let dt = now.saturating_sub(self.now);
        self.now = self.now.max(now);
        if dt.is_zero() {
            return;
        }
        let mut due = Vec::new();
        for meter in &mut self.meters {
            meter.advance(dt);
            let Some(every) = meter.report_every.filter(|_| meter.reporting_configured) else {
                continue;
            };
            match self.last_report.iter_mut().find(|(i, _)| *i == meter.ieee) {
                Some((_, last)) if now.saturating_sub(*last) < every => {}
                Some((_, last)) => {
                    *last = now;
                    due.push(meter.ieee);
                }
                // Reporting was just configured: a first report at once, as meters do.
                None => {
                    self.last_report.push((meter.ieee, now));
                    due.push(meter.ieee);
                }
            }
        }
        if !self.started || self.silent {
            return;
        }
        for ieee in due {
            self.report(ieee, crate::zcl::metering::CLUSTER);
            self.report(ieee, crate::zcl::prepayment::CLUSTER);
        }
    }

    /// A meter asks to join: it joins now when joining is permitted, otherwise when it next is.
    pub fn add_meter(&mut self, meter: EmulatedMeter) {
        if self.permit_join {
            self.join(meter);
        } else {
            self.waiting.push(meter);
        }
    }

    fn join(&mut self, meter: EmulatedMeter) {
        self.send(MtCommand::ZdoTcDevInd {
            nwk: meter.nwk,
            ieee: meter.ieee,
            parent: 0,
        });
        self.send(MtCommand::ZdoEndDeviceAnnceInd {
            src: meter.nwk,
            nwk: meter.nwk,
            ieee: meter.ieee,
            capabilities: 0x8E,
        });
        self.meters.retain(|m| m.ieee != meter.ieee);
        self.meters.push(meter);
    }

    /// A meter leaves by itself.
    pub fn remove_meter(&mut self, ieee: IeeeAddress) {
        if let Some(pos) = self.meters.iter().position(|m| m.ieee == ieee) {
            let meter = self.meters.remove(pos);
            self.send(MtCommand::ZdoLeaveInd {
                src: meter.nwk,
                ieee,
                request: 0,
                remove: 0,
                rejoin: 0,
            });
        }
    }

    /// A meter by address.
    pub fn meter_mut(&mut self, ieee: IeeeAddress) -> Option<&mut EmulatedMeter> {
        self.meters.iter_mut().find(|m| m.ieee == ieee)
    }

    /// A meter reports its energy and demand (`cluster` 0x0702) or its credit (0x0705).
    pub fn report(&mut self, ieee: IeeeAddress, cluster: u16) {
        let Some(meter) = self.meter_mut(ieee) else {
            return;
        };
        let nwk = meter.nwk;
        let frame = meter.report(cluster);
        self.incoming(nwk, cluster, &frame);
    }

    fn incoming(&mut self, nwk: u16, cluster: u16, frame: &ZclFrame) {
        let endpoint = self.endpoints.first().copied().unwrap_or(1);
        self.send(MtCommand::AfIncomingMsg(AfIncomingMsg {
            group: 0,
            cluster,
            src_addr: nwk,
            src_endpoint: METER_ENDPOINT,
            dst_endpoint: endpoint,
            was_broadcast: 0,
            lqi: 110,
            security_use: 0,
            timestamp: 0x0001_2345,
            trans_seq: 0,
            data: frame.encode(),
            trailer: vec![nwk as u8, (nwk >> 8) as u8, 0x1D],
        }));
    }

    fn on_frame(&mut self, frame: &MtFrame) {
        if let Some(answers) = self.nv.answer(frame, self.ieee) {
            for answer in answers {
                self.send_frame(answer);
            }
            return;
        }
        let Ok(command) = MtCommand::try_from_frame(frame) else {
            self.send_frame(MtFrame::new(
                CommandType::Srsp,
                Subsystem::RPC_ERROR,
                0,
                vec![4, frame.cmd0(), frame.id],
            ));
            return;
        };
        match command {
            MtCommand::SysResetReq { .. } => self.reset(0),
            MtCommand::SysPing => self.send(MtCommand::SysPingRsp {
                capabilities: 0x0659,
            }),
            MtCommand::SysVersion => self.send(MtCommand::SysVersionRsp {
                transport_rev: 2,
                product: 1,
                major: 2,
                minor: 7,
                maint: 1,
                revision: Some(20_230_507),
            }),
            MtCommand::UtilGetDeviceInfo => self.send(MtCommand::UtilGetDeviceInfoRsp {
                status: 0,
                ieee: self.ieee,
                nwk: 0,
                device_type: 7,
                device_state: if self.started { DEV_ZB_COORD } else { 0 },
                children: self.meters.iter().map(|m| m.nwk).collect(),
            }),
            MtCommand::ZdoStartupFromApp { .. } => {
                let state = if self.formed { 0 } else { 1 };
                self.send(MtCommand::ZdoStartupFromAppRsp { state });
                self.formed = true;
                self.started = true;
                self.send(MtCommand::ZdoStateChangeInd { state: 8 });
                self.send(MtCommand::ZdoStateChangeInd {
                    state: DEV_ZB_COORD,
                });
            }
            MtCommand::AfRegister(ep) => {
                let status = if self.endpoints.contains(&ep.descriptor.endpoint) {
                    0xB8
                } else {
                    self.endpoints.push(ep.descriptor.endpoint);
                    0
                };
                self.send_frame(status_rsp(Subsystem::AF, id::AF_REGISTER, status));
                if self.announce_on_register {
                    self.announce_on_register = false;
                    let announcing: Vec<(u16, IeeeAddress)> =
                        self.meters.iter().map(|m| (m.nwk, m.ieee)).collect();
                    for (nwk, ieee) in announcing {
                        self.send(MtCommand::ZdoEndDeviceAnnceInd {
                            src: nwk,
                            nwk,
                            ieee,
                            capabilities: 0x8E,
                        });
                    }
                }
            }
            MtCommand::ZdoMgmtPermitJoinReq { duration, .. } => {
                self.send_frame(status_rsp(Subsystem::ZDO, id::ZDO_MGMT_PERMIT_JOIN_REQ, 0));
                self.send(MtCommand::ZdoPermitJoinInd { duration });
                self.permit_join = duration > 0;
                if self.permit_join {
                    for meter in std::mem::take(&mut self.waiting) {
                        self.join(meter);
                    }
                }
            }
            MtCommand::ZdoMgmtLeaveReq { device, .. } => {
                self.send_frame(status_rsp(Subsystem::ZDO, id::ZDO_MGMT_LEAVE_REQ, 0));
                self.remove_meter(device);
            }
            MtCommand::ZdoActiveEpReq { dst, .. } => {
                self.send_frame(status_rsp(Subsystem::ZDO, id::ZDO_ACTIVE_EP_REQ, 0));
                if dst == 0 {
                    self.send(MtCommand::ZdoActiveEpRsp {
                        src: 0,
                        status: 0,
                        nwk: 0,
                        endpoints: self.endpoints.clone(),
                    });
                } else if self.meters.iter().any(|m| m.nwk == dst) {
                    self.send(MtCommand::ZdoActiveEpRsp {
                        src: dst,
                        status: 0,
                        nwk: dst,
                        endpoints: vec![METER_ENDPOINT],
                    });
                }
            }
            MtCommand::ZdoSimpleDescReq { dst, endpoint, .. } => {
                self.send_frame(status_rsp(Subsystem::ZDO, id::ZDO_SIMPLE_DESC_REQ, 0));
                let descriptor = self
                    .meters
                    .iter()
                    .find(|m| m.nwk == dst)
                    .map(EmulatedMeter::descriptor)
                    .filter(|d| d.endpoint == endpoint);
                if let Some(descriptor) = descriptor {
                    self.send(MtCommand::ZdoSimpleDescRsp {
                        src: dst,
                        status: 0,
                        nwk: dst,
                        descriptor: Some(descriptor),
                    });
                }
            }
            MtCommand::AfDataRequest(request) => {
                self.send_frame(status_rsp(Subsystem::AF, id::AF_DATA_REQUEST, 0));
                let reachable = self
                    .meters
                    .iter()
                    .any(|m| m.nwk == request.dst_addr && m.reachable);
                self.send(MtCommand::AfDataConfirm {
                    status: if reachable { 0 } else { 0xE9 },
                    endpoint: request.src_endpoint,
                    trans_id: request.trans_id,
                });
                let answer = self
                    .meters
                    .iter_mut()
                    .find(|m| m.nwk == request.dst_addr && m.reachable)
                    .and_then(|m| m.handle(request.cluster, &request.data));
                if let Some(answer) = answer {
                    self.incoming(request.dst_addr, request.cluster, &answer);
                }
            }
            MtCommand::Unknown | MtCommand::StatusRsp { .. } if frame.kind == CommandType::Sreq => {
                self.send_frame(MtFrame::new(
                    CommandType::Srsp,
                    Subsystem::RPC_ERROR,
                    0,
                    vec![2, frame.cmd0(), frame.id],
                ));
            }
            _ => {}
        }
    }
}
