//! The MT commands a coordinator driver speaks, typed: SYS (reset, ping, version), UTIL (device info),
//! AF (endpoint registration, data request and confirm, incoming messages) and ZDO (start-up, state
//! changes, permit-join, leave, announcements, endpoint discovery). Ids and field layouts follow TI's
//! Z-Stack Monitor and Test API (SWRA198); Z-Stack 3.x may append fields after the documented ones,
//! which are ignored (the length byte says where the frame ends).

use serde::Serialize;

use super::frame::{CommandType, MtFrame, Subsystem};
use super::types::{AfDataRequest, AfIncomingMsg, EndpointDescriptor, SimpleDescriptor};
use crate::wire::{FieldError, FieldReader, IeeeAddress, PutLe};

/// Command ids (`cmd1`) by subsystem.
pub mod id {
    /// SYS_RESET_REQ (AREQ).
    pub const SYS_RESET_REQ: u8 = 0x00;
    /// SYS_PING (SREQ).
    pub const SYS_PING: u8 = 0x01;
    /// SYS_VERSION (SREQ).
    pub const SYS_VERSION: u8 = 0x02;
    /// SYS_RESET_IND (AREQ).
    pub const SYS_RESET_IND: u8 = 0x80;
    /// UTIL_GET_DEVICE_INFO (SREQ).
    pub const UTIL_GET_DEVICE_INFO: u8 = 0x00;
    /// AF_REGISTER (SREQ).
    pub const AF_REGISTER: u8 = 0x00;
    /// AF_DATA_REQUEST (SREQ).
    pub const AF_DATA_REQUEST: u8 = 0x01;
    /// AF_DATA_CONFIRM (AREQ).
    pub const AF_DATA_CONFIRM: u8 = 0x80;
    /// AF_INCOMING_MSG (AREQ).
    pub const AF_INCOMING_MSG: u8 = 0x81;
    /// ZDO_SIMPLE_DESC_REQ (SREQ).
    pub const ZDO_SIMPLE_DESC_REQ: u8 = 0x04;
    /// ZDO_ACTIVE_EP_REQ (SREQ).
    pub const ZDO_ACTIVE_EP_REQ: u8 = 0x05;
    /// ZDO_MGMT_LEAVE_REQ (SREQ).
    pub const ZDO_MGMT_LEAVE_REQ: u8 = 0x34;
    /// ZDO_MGMT_PERMIT_JOIN_REQ (SREQ).
    pub const ZDO_MGMT_PERMIT_JOIN_REQ: u8 = 0x36;
    /// ZDO_STARTUP_FROM_APP (SREQ).
    pub const ZDO_STARTUP_FROM_APP: u8 = 0x40;
    /// ZDO_SIMPLE_DESC_RSP (AREQ).
    pub const ZDO_SIMPLE_DESC_RSP: u8 = 0x84;
    /// ZDO_ACTIVE_EP_RSP (AREQ).
    pub const ZDO_ACTIVE_EP_RSP: u8 = 0x85;
    /// ZDO_MGMT_LEAVE_RSP (AREQ).
    pub const ZDO_MGMT_LEAVE_RSP: u8 = 0xB4;
    /// ZDO_MGMT_PERMIT_JOIN_RSP (AREQ).
    pub const ZDO_MGMT_PERMIT_JOIN_RSP: u8 = 0xB6;
    /// ZDO_STATE_CHANGE_IND (AREQ).
    pub const ZDO_STATE_CHANGE_IND: u8 = 0xC0;
    /// ZDO_END_DEVICE_ANNCE_IND (AREQ).
    pub const ZDO_END_DEVICE_ANNCE_IND: u8 = 0xC1;
    /// ZDO_LEAVE_IND (AREQ).
    pub const ZDO_LEAVE_IND: u8 = 0xC9;
    /// ZDO_TC_DEV_IND (AREQ).
    pub const ZDO_TC_DEV_IND: u8 = 0xCA;
    /// ZDO_PERMIT_JOIN_IND (AREQ).
    pub const ZDO_PERMIT_JOIN_IND: u8 = 0xCB;
}

/// The device state a formed coordinator reports (`DEV_ZB_COORD`).
pub const DEV_ZB_COORD: u8 = 9;

/// One typed MT command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtCommand {
    /// Resets the coordinator (`hard` = 0 on the wire, soft = 1).
    SysResetReq { kind: u8 },
    /// The coordinator (re)started.
    SysResetInd {
        reason: u8,
        transport_rev: u8,
        product: u8,
        major: u8,
        minor: u8,
        hw_rev: u8,
    },
    /// Are you there?
    SysPing,
    /// The subsystems the firmware offers.
    SysPingRsp { capabilities: u16 },
    /// Which firmware?
    SysVersion,
    /// The firmware's version (Z-Stack 3.x appends a 32-bit revision).
    SysVersionRsp {
        transport_rev: u8,
        product: u8,
        major: u8,
        minor: u8,
        maint: u8,
        revision: Option<u32>,
    },
    /// The coordinator's addresses and network state.
    UtilGetDeviceInfo,
    /// Answer to [`MtCommand::UtilGetDeviceInfo`]; `device_state` 9 is a formed coordinator.
    UtilGetDeviceInfoRsp {
        status: u8,
        ieee: IeeeAddress,
        nwk: u16,
        device_type: u8,
        device_state: u8,
        children: Vec<u16>,
    },
    /// Starts the network (restores or forms it) after `delay_ms`.
    ZdoStartupFromApp { delay_ms: u16 },
    /// 0 restored, 1 new network, 2 not started.
    ZdoStartupFromAppRsp { state: u8 },
    /// The ZDO state changed (9: running as coordinator).
    ZdoStateChangeInd { state: u8 },
    /// Registers an application endpoint.
    AfRegister(EndpointDescriptor),
    /// Sends application data (a ZCL frame) to a device.
    AfDataRequest(AfDataRequest),
    /// The outcome of an [`MtCommand::AfDataRequest`] over the air.
    AfDataConfirm {
        status: u8,
        endpoint: u8,
        trans_id: u8,
    },
    /// Application data (a ZCL frame) from a device.
    AfIncomingMsg(AfIncomingMsg),
    /// Opens the network for joining for `duration` seconds (0 closes, 255 forever).
    ZdoMgmtPermitJoinReq {
        addr_mode: u8,
        dst: u16,
        duration: u8,
        tc_significance: u8,
    },
    /// Asks a device to leave the network.
    ZdoMgmtLeaveReq {
        dst: u16,
        device: IeeeAddress,
        flags: u8,
    },
    /// Asks a device for its active endpoints.
    ZdoActiveEpReq { dst: u16, nwk_of_interest: u16 },
    /// A device's active endpoints.
    ZdoActiveEpRsp {
        src: u16,
        status: u8,
        nwk: u16,
        endpoints: Vec<u8>,
    },
    /// Asks a device for one endpoint's simple descriptor.
    ZdoSimpleDescReq {
        dst: u16,
        nwk_of_interest: u16,
        endpoint: u8,
    },
    /// An endpoint's simple descriptor (absent when `status` is not 0).
    ZdoSimpleDescRsp {
        src: u16,
        status: u8,
        nwk: u16,
        descriptor: Option<SimpleDescriptor>,
    },
    /// A device joined or rejoined and announced itself.
    ZdoEndDeviceAnnceInd {
        src: u16,
        nwk: u16,
        ieee: IeeeAddress,
        capabilities: u8,
    },
    /// A device left.
    ZdoLeaveInd {
        src: u16,
        ieee: IeeeAddress,
        request: u8,
        remove: u8,
        rejoin: u8,
    },
    /// The trust centre let a device in.
    ZdoTcDevInd {
        nwk: u16,
        ieee: IeeeAddress,
        parent: u16,
    },
    /// Joining is now permitted for `duration` seconds (0: closed).
    ZdoPermitJoinInd { duration: u8 },
    /// A device's answer to a ZDO management request (permit-join, leave).
    ZdoMgmtRsp { src: u16, status: u8 },
    /// The one-byte status SRSP of an SREQ (registration, data request, ZDO requests).
    StatusRsp { status: u8 },
    /// The coordinator did not understand an SREQ (`code` 1 subsystem, 2 command id, 3 parameter, 4 length).
    RpcError { code: u8, cmd0: u8, cmd1: u8 },
    /// A command this codec does not type; the frame is kept as it came.
    Unknown,
}

/// Why a frame's data does not fit its command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {source}")]
pub struct CommandError {
    /// The command's name.
    pub command: &'static str,
    /// The field that failed (offsets count from the frame's SOF).
    #[source]
    pub source: FieldError,
}

/// The SWRA198 name of a command, or `None` when this codec does not know it.
pub fn command_name(kind: CommandType, subsystem: Subsystem, cmd: u8) -> Option<&'static str> {
    use CommandType::{Areq, Sreq, Srsp};
    Some(match (subsystem, kind, cmd) {
        (Subsystem::RPC_ERROR, Srsp, 0x00) => "RPC_ERROR",
        (Subsystem::SYS, Areq, id::SYS_RESET_REQ) => "SYS_RESET_REQ",
        (Subsystem::SYS, Areq, id::SYS_RESET_IND) => "SYS_RESET_IND",
        (Subsystem::SYS, Sreq | Srsp, id::SYS_PING) => "SYS_PING",
        (Subsystem::SYS, Sreq | Srsp, id::SYS_VERSION) => "SYS_VERSION",
        (Subsystem::UTIL, Sreq | Srsp, id::UTIL_GET_DEVICE_INFO) => "UTIL_GET_DEVICE_INFO",
        (Subsystem::AF, Sreq | Srsp, id::AF_REGISTER) => "AF_REGISTER",
        (Subsystem::AF, Sreq | Srsp, id::AF_DATA_REQUEST) => "AF_DATA_REQUEST",
        (Subsystem::AF, Areq, id::AF_DATA_CONFIRM) => "AF_DATA_CONFIRM",
        (Subsystem::AF, Areq, id::AF_INCOMING_MSG) => "AF_INCOMING_MSG",
        (Subsystem::ZDO, Sreq | Srsp, id::ZDO_SIMPLE_DESC_REQ) => "ZDO_SIMPLE_DESC_REQ",
        (Subsystem::ZDO, Sreq | Srsp, id::ZDO_ACTIVE_EP_REQ) => "ZDO_ACTIVE_EP_REQ",
        (Subsystem::ZDO, Sreq | Srsp, id::ZDO_MGMT_LEAVE_REQ) => "ZDO_MGMT_LEAVE_REQ",
        (Subsystem::ZDO, Sreq | Srsp, id::ZDO_MGMT_PERMIT_JOIN_REQ) => "ZDO_MGMT_PERMIT_JOIN_REQ",
        (Subsystem::ZDO, Sreq | Srsp, id::ZDO_STARTUP_FROM_APP) => "ZDO_STARTUP_FROM_APP",
        (Subsystem::ZDO, Areq, id::ZDO_SIMPLE_DESC_RSP) => "ZDO_SIMPLE_DESC_RSP",
        (Subsystem::ZDO, Areq, id::ZDO_ACTIVE_EP_RSP) => "ZDO_ACTIVE_EP_RSP",
        (Subsystem::ZDO, Areq, id::ZDO_MGMT_LEAVE_RSP) => "ZDO_MGMT_LEAVE_RSP",
        (Subsystem::ZDO, Areq, id::ZDO_MGMT_PERMIT_JOIN_RSP) => "ZDO_MGMT_PERMIT_JOIN_RSP",
        (Subsystem::ZDO, Areq, id::ZDO_STATE_CHANGE_IND) => "ZDO_STATE_CHANGE_IND",
        (Subsystem::ZDO, Areq, id::ZDO_END_DEVICE_ANNCE_IND) => "ZDO_END_DEVICE_ANNCE_IND",
        (Subsystem::ZDO, Areq, id::ZDO_LEAVE_IND) => "ZDO_LEAVE_IND",
        (Subsystem::ZDO, Areq, id::ZDO_TC_DEV_IND) => "ZDO_TC_DEV_IND",
        (Subsystem::ZDO, Areq, id::ZDO_PERMIT_JOIN_IND) => "ZDO_PERMIT_JOIN_IND",
        _ => return None,
    })
}

impl MtCommand {
    /// The frame for this command. [`MtCommand::Unknown`] has none.
    pub fn to_frame(&self) -> Option<MtFrame> {
        use CommandType::{Areq, Sreq, Srsp};
        let (kind, sub, cmd, data): (CommandType, Subsystem, u8, Vec<u8>) = match self {
            MtCommand::SysResetReq { kind } => {
                (Areq, Subsystem::SYS, id::SYS_RESET_REQ, vec![*kind])
            }
            MtCommand::SysResetInd {
                reason,
                transport_rev,
                product,
                major,
                minor,
                hw_rev,
            } => (
                Areq,
                Subsystem::SYS,
                id::SYS_RESET_IND,
                vec![*reason, *transport_rev, *product, *major, *minor, *hw_rev],
            ),
            MtCommand::SysPing => (Sreq, Subsystem::SYS, id::SYS_PING, vec![]),
            MtCommand::SysPingRsp { capabilities } => (
                Srsp,
                Subsystem::SYS,
                id::SYS_PING,
                capabilities.to_le_bytes().to_vec(),
            ),
            MtCommand::SysVersion => (Sreq, Subsystem::SYS, id::SYS_VERSION, vec![]),
            MtCommand::SysVersionRsp {
                transport_rev,
                product,
                major,
                minor,
                maint,
                revision,
            } => {
                let mut d = vec![*transport_rev, *product, *major, *minor, *maint];
                if let Some(r) = revision {
                    d.put_u32(*r);
                }
                (Srsp, Subsystem::SYS, id::SYS_VERSION, d)
            }
            MtCommand::UtilGetDeviceInfo => {
                (Sreq, Subsystem::UTIL, id::UTIL_GET_DEVICE_INFO, vec![])
            }
            MtCommand::UtilGetDeviceInfoRsp {
                status,
                ieee,
                nwk,
                device_type,
                device_state,
                children,
            } => {
                let mut d = vec![*status];
                d.put_uint(ieee.0, 8);
                d.put_u16(*nwk);
                d.extend_from_slice(&[*device_type, *device_state, children.len() as u8]);
                children.iter().for_each(|c| d.put_u16(*c));
                (Srsp, Subsystem::UTIL, id::UTIL_GET_DEVICE_INFO, d)
            }
            MtCommand::ZdoStartupFromApp { delay_ms } => (
                Sreq,
                Subsystem::ZDO,
                id::ZDO_STARTUP_FROM_APP,
                delay_ms.to_le_bytes().to_vec(),
            ),
            MtCommand::ZdoStartupFromAppRsp { state } => {
                (Srsp, Subsystem::ZDO, id::ZDO_STARTUP_FROM_APP, vec![*state])
            }
            MtCommand::ZdoStateChangeInd { state } => {
                (Areq, Subsystem::ZDO, id::ZDO_STATE_CHANGE_IND, vec![*state])
            }
            MtCommand::AfRegister(ep) => (Sreq, Subsystem::AF, id::AF_REGISTER, ep.encode()),
            MtCommand::AfDataRequest(r) => (Sreq, Subsystem::AF, id::AF_DATA_REQUEST, r.encode()),
            MtCommand::AfDataConfirm {
                status,
                endpoint,
                trans_id,
            } => (
                Areq,
                Subsystem::AF,
                id::AF_DATA_CONFIRM,
                vec![*status, *endpoint, *trans_id],
            ),
            MtCommand::AfIncomingMsg(m) => (Areq, Subsystem::AF, id::AF_INCOMING_MSG, m.encode()),
            MtCommand::ZdoMgmtPermitJoinReq {
                addr_mode,
                dst,
                duration,
                tc_significance,
            } => {
                let mut d = vec![*addr_mode];
                d.put_u16(*dst);
                d.extend_from_slice(&[*duration, *tc_significance]);
                (Sreq, Subsystem::ZDO, id::ZDO_MGMT_PERMIT_JOIN_REQ, d)
            }
            MtCommand::ZdoMgmtLeaveReq { dst, device, flags } => {
                let mut d = Vec::new();
                d.put_u16(*dst);
                d.put_uint(device.0, 8);
                d.push(*flags);
                (Sreq, Subsystem::ZDO, id::ZDO_MGMT_LEAVE_REQ, d)
            }
            MtCommand::ZdoActiveEpReq {
                dst,
                nwk_of_interest,
            } => {
                let mut d = Vec::new();
                d.put_u16(*dst);
                d.put_u16(*nwk_of_interest);
                (Sreq, Subsystem::ZDO, id::ZDO_ACTIVE_EP_REQ, d)
            }
            MtCommand::ZdoActiveEpRsp {
                src,
                status,
                nwk,
                endpoints,
            } => {
                let mut d = Vec::new();
                d.put_u16(*src);
                d.push(*status);
                d.put_u16(*nwk);
                d.push(endpoints.len() as u8);
                d.extend_from_slice(endpoints);
                (Areq, Subsystem::ZDO, id::ZDO_ACTIVE_EP_RSP, d)
            }
            MtCommand::ZdoSimpleDescReq {
                dst,
                nwk_of_interest,
                endpoint,
            } => {
                let mut d = Vec::new();
                d.put_u16(*dst);
                d.put_u16(*nwk_of_interest);
                d.push(*endpoint);
                (Sreq, Subsystem::ZDO, id::ZDO_SIMPLE_DESC_REQ, d)
            }
            MtCommand::ZdoSimpleDescRsp {
                src,
                status,
                nwk,
                descriptor,
            } => {
                let mut d = Vec::new();
                d.put_u16(*src);
                d.push(*status);
                d.put_u16(*nwk);
                match descriptor {
                    Some(desc) => {
                        let body = desc.encode();
                        d.push(body.len() as u8);
                        d.extend_from_slice(&body);
                    }
                    None => d.push(0),
                }
                (Areq, Subsystem::ZDO, id::ZDO_SIMPLE_DESC_RSP, d)
            }
            MtCommand::ZdoEndDeviceAnnceInd {
                src,
                nwk,
                ieee,
                capabilities,
            } => {
                let mut d = Vec::new();
                d.put_u16(*src);
                d.put_u16(*nwk);
                d.put_uint(ieee.0, 8);
                d.push(*capabilities);
                (Areq, Subsystem::ZDO, id::ZDO_END_DEVICE_ANNCE_IND, d)
            }
            MtCommand::ZdoLeaveInd {
                src,
                ieee,
                request,
                remove,
                rejoin,
            } => {
                let mut d = Vec::new();
                d.put_u16(*src);
                d.put_uint(ieee.0, 8);
                d.extend_from_slice(&[*request, *remove, *rejoin]);
                (Areq, Subsystem::ZDO, id::ZDO_LEAVE_IND, d)
            }
            MtCommand::ZdoTcDevInd { nwk, ieee, parent } => {
                let mut d = Vec::new();
                d.put_u16(*nwk);
                d.put_uint(ieee.0, 8);
                d.put_u16(*parent);
                (Areq, Subsystem::ZDO, id::ZDO_TC_DEV_IND, d)
            }
            MtCommand::ZdoPermitJoinInd { duration } => (
                Areq,
                Subsystem::ZDO,
                id::ZDO_PERMIT_JOIN_IND,
                vec![*duration],
            ),
            MtCommand::ZdoMgmtRsp { .. }
            | MtCommand::StatusRsp { .. }
            | MtCommand::RpcError { .. }
            | MtCommand::Unknown => return None,
        };
        Some(MtFrame::new(kind, sub, cmd, data))
    }

    /// The typed command in a frame. Commands this codec does not know are [`MtCommand::Unknown`];
    /// a known command whose data is too short is an error naming the field and offset.
    pub fn try_from_frame(frame: &MtFrame) -> Result<MtCommand, CommandError> {
        let name = command_name(frame.kind, frame.subsystem, frame.id).unwrap_or("MT command");
        decode(frame).map_err(|source| CommandError {
            command: name,
            source,
        })
    }
}

fn decode(frame: &MtFrame) -> Result<MtCommand, FieldError> {
    use CommandType::{Areq, Sreq, Srsp};
    let mut r = FieldReader::new(&frame.data, 4);
    let cmd = match (frame.subsystem, frame.kind, frame.id) {
        (Subsystem::RPC_ERROR, Srsp, 0x00) => MtCommand::RpcError {
            code: r.u8("ErrorCode")?,
            cmd0: r.u8("ReqCmd0")?,
            cmd1: r.u8("ReqCmd1")?,
        },
        (Subsystem::SYS, Areq, id::SYS_RESET_REQ) => MtCommand::SysResetReq {
            kind: r.u8("Type")?,
        },
        (Subsystem::SYS, Areq, id::SYS_RESET_IND) => MtCommand::SysResetInd {
            reason: r.u8("Reason")?,
            transport_rev: r.u8("TransportRev")?,
            product: r.u8("ProductId")?,
            major: r.u8("MajorRel")?,
            minor: r.u8("MinorRel")?,
            hw_rev: r.u8("HwRev")?,
        },
        (Subsystem::SYS, Sreq, id::SYS_PING) => MtCommand::SysPing,
        (Subsystem::SYS, Srsp, id::SYS_PING) => MtCommand::SysPingRsp {
            capabilities: r.u16("Capabilities")?,
        },
        (Subsystem::SYS, Sreq, id::SYS_VERSION) => MtCommand::SysVersion,
        (Subsystem::SYS, Srsp, id::SYS_VERSION) => MtCommand::SysVersionRsp {
            transport_rev: r.u8("TransportRev")?,
            product: r.u8("Product")?,
            major: r.u8("MajorRel")?,
            minor: r.u8("MinorRel")?,
            maint: r.u8("MaintRel")?,
            revision: (r.remaining().len() >= 4)
                .then(|| r.u32("Revision"))
                .transpose()?,
        },
        (Subsystem::UTIL, Sreq, id::UTIL_GET_DEVICE_INFO) => MtCommand::UtilGetDeviceInfo,
        (Subsystem::UTIL, Srsp, id::UTIL_GET_DEVICE_INFO) => MtCommand::UtilGetDeviceInfoRsp {
            status: r.u8("Status")?,
            ieee: r.ieee("IEEEAddr")?,
            nwk: r.u16("ShortAddr")?,
            device_type: r.u8("DeviceType")?,
            device_state: r.u8("DeviceState")?,
            children: r.u16_list("AssocDevicesList")?,
        },
        (Subsystem::ZDO, Sreq, id::ZDO_STARTUP_FROM_APP) => MtCommand::ZdoStartupFromApp {
            delay_ms: r.u16("StartDelay")?,
        },
        (Subsystem::ZDO, Srsp, id::ZDO_STARTUP_FROM_APP) => MtCommand::ZdoStartupFromAppRsp {
            state: r.u8("State")?,
        },
        (Subsystem::ZDO, Areq, id::ZDO_STATE_CHANGE_IND) => MtCommand::ZdoStateChangeInd {
            state: r.u8("State")?,
        },
        (Subsystem::AF, Sreq, id::AF_REGISTER) => {
            MtCommand::AfRegister(EndpointDescriptor::decode(&mut r)?)
        }
        (Subsystem::AF, Sreq, id::AF_DATA_REQUEST) => {
            MtCommand::AfDataRequest(AfDataRequest::decode(&mut r)?)
        }
        (Subsystem::AF, Areq, id::AF_DATA_CONFIRM) => MtCommand::AfDataConfirm {
            status: r.u8("Status")?,
            endpoint: r.u8("Endpoint")?,
            trans_id: r.u8("TransId")?,
        },
        (Subsystem::AF, Areq, id::AF_INCOMING_MSG) => {
            MtCommand::AfIncomingMsg(AfIncomingMsg::decode(&mut r)?)
        }
        (Subsystem::ZDO, Sreq, id::ZDO_MGMT_PERMIT_JOIN_REQ) => MtCommand::ZdoMgmtPermitJoinReq {
            addr_mode: r.u8("AddrMode")?,
            dst: r.u16("DstAddr")?,
            duration: r.u8("Duration")?,
            tc_significance: r.u8("TCSignificance")?,
        },
        (Subsystem::ZDO, Sreq, id::ZDO_MGMT_LEAVE_REQ) => MtCommand::ZdoMgmtLeaveReq {
            dst: r.u16("DstAddr")?,
            device: r.ieee("DeviceAddr")?,
            flags: r.u8("RemoveChildren_Rejoin")?,
        },
        (Subsystem::ZDO, Sreq, id::ZDO_ACTIVE_EP_REQ) => MtCommand::ZdoActiveEpReq {
            dst: r.u16("DstAddr")?,
            nwk_of_interest: r.u16("NWKAddrOfInterest")?,
        },
        (Subsystem::ZDO, Areq, id::ZDO_ACTIVE_EP_RSP) => {
            let src = r.u16("SrcAddr")?;
            let status = r.u8("Status")?;
            let nwk = r.u16("NwkAddr")?;
            let count = r.u8("ActiveEPCount")?;
            MtCommand::ZdoActiveEpRsp {
                src,
                status,
                nwk,
                endpoints: r.take(usize::from(count), "ActiveEPList")?.to_vec(),
            }
        }
        (Subsystem::ZDO, Sreq, id::ZDO_SIMPLE_DESC_REQ) => MtCommand::ZdoSimpleDescReq {
            dst: r.u16("DstAddr")?,
            nwk_of_interest: r.u16("NWKAddrOfInterest")?,
            endpoint: r.u8("Endpoint")?,
        },
        (Subsystem::ZDO, Areq, id::ZDO_SIMPLE_DESC_RSP) => {
            let src = r.u16("SrcAddr")?;
            let status = r.u8("Status")?;
            let nwk = r.u16("NwkAddr")?;
            let len = r.u8("Len")?;
            let descriptor = if status == 0 && len > 0 {
                let body = r.take(usize::from(len), "SimpleDescriptor")?;
                let mut inner = FieldReader::new(body, r.offset() - body.len());
                Some(SimpleDescriptor::decode(&mut inner)?)
            } else {
                None
            };
            MtCommand::ZdoSimpleDescRsp {
                src,
                status,
                nwk,
                descriptor,
            }
        }
        (Subsystem::ZDO, Areq, id::ZDO_END_DEVICE_ANNCE_IND) => MtCommand::ZdoEndDeviceAnnceInd {
            src: r.u16("SrcAddr")?,
            nwk: r.u16("NwkAddr")?,
            ieee: r.ieee("IEEEAddr")?,
            capabilities: r.u8("Capabilities")?,
        },
        (Subsystem::ZDO, Areq, id::ZDO_LEAVE_IND) => MtCommand::ZdoLeaveInd {
            src: r.u16("SrcAddr")?,
            ieee: r.ieee("ExtAddr")?,
            request: r.u8("Request")?,
            remove: r.u8("Remove")?,
            rejoin: r.u8("Rejoin")?,
        },
        (Subsystem::ZDO, Areq, id::ZDO_TC_DEV_IND) => MtCommand::ZdoTcDevInd {
            nwk: r.u16("SrcNwkAddr")?,
            ieee: r.ieee("SrcIEEEAddr")?,
            parent: r.u16("ParentNwkAddr")?,
        },
        (Subsystem::ZDO, Areq, id::ZDO_PERMIT_JOIN_IND) => MtCommand::ZdoPermitJoinInd {
            duration: r.u8("Duration")?,
        },
        (Subsystem::ZDO, Areq, id::ZDO_MGMT_LEAVE_RSP | id::ZDO_MGMT_PERMIT_JOIN_RSP) => {
            MtCommand::ZdoMgmtRsp {
                src: r.u16("SrcAddr")?,
                status: r.u8("Status")?,
            }
        }
        (Subsystem::AF, Srsp, id::AF_REGISTER | id::AF_DATA_REQUEST)
        | (
            Subsystem::ZDO,
            Srsp,
            id::ZDO_SIMPLE_DESC_REQ
            | id::ZDO_ACTIVE_EP_REQ
            | id::ZDO_MGMT_LEAVE_REQ
            | id::ZDO_MGMT_PERMIT_JOIN_REQ,
        ) => MtCommand::StatusRsp {
            status: r.u8("Status")?,
        },
        _ => MtCommand::Unknown,
    };
    Ok(cmd)
}

/// A status-only SRSP frame for an SREQ (what the emulator answers).
pub fn status_rsp(subsystem: Subsystem, cmd: u8, status: u8) -> MtFrame {
    MtFrame::new(CommandType::Srsp, subsystem, cmd, vec![status])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_typed_frame_round_trips() {
        let ieee = IeeeAddress(0x00124B0001020304);
        let commands = [
            MtCommand::SysResetReq { kind: 1 },
            MtCommand::SysPing,
            MtCommand::SysPingRsp {
                capabilities: 0x0659,
            },
            MtCommand::SysVersionRsp {
                transport_rev: 2,
                product: 1,
                major: 2,
                minor: 7,
                maint: 1,
                revision: Some(20240710),
            },
            MtCommand::UtilGetDeviceInfoRsp {
                status: 0,
                ieee,
                nwk: 0,
                device_type: 7,
                device_state: 9,
                children: vec![0x1234],
            },
            MtCommand::ZdoStateChangeInd { state: 9 },
            MtCommand::ZdoActiveEpRsp {
                src: 1,
                status: 0,
                nwk: 1,
                endpoints: vec![1, 2],
            },
            MtCommand::ZdoEndDeviceAnnceInd {
                src: 5,
                nwk: 5,
                ieee,
                capabilities: 0x8E,
            },
            MtCommand::ZdoLeaveInd {
                src: 5,
                ieee,
                request: 0,
                remove: 0,
                rejoin: 0,
            },
            MtCommand::ZdoTcDevInd {
                nwk: 5,
                ieee,
                parent: 0,
            },
        ];
        for c in commands {
            let frame = c.to_frame().unwrap();
            let bytes = frame.encode().unwrap();
            let back = MtFrame::decode(&bytes).unwrap();
            assert_eq!(MtCommand::try_from_frame(&back).unwrap(), c);
        }
    }

    #[test]
    fn short_data_names_the_field() {
        let frame = MtFrame::new(
            CommandType::Areq,
            Subsystem::ZDO,
            id::ZDO_LEAVE_IND,
            vec![1, 2, 3],
        );
        let e = MtCommand::try_from_frame(&frame).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ZDO_LEAVE_IND: byte 6: expected ExtAddr (8 byte(s)), but only 1 byte(s) are left"
        );
    }
}
