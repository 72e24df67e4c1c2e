//! Every TI-ZNP-MT, ZCL and ZCL-Prepayment vector of `meters.json` (a copy of the shared vectors file),
//! one test each: the bytes decode, re-encode byte for byte, survive being split at every byte, and
//! carry the fields the vector names; `decode_to_json` prints them.

use concentrator_driver_znp::mt::{
    CommandType, FrameReader, MtCommand, MtFrame, Read, SimpleDescriptor, Subsystem,
};
use concentrator_driver_znp::zcl::{
    self, FrameType, GlobalCommand, PrepaymentCommand, ZclCommand, ZclFrame, ZclValue,
};
use concentrator_driver_znp::{decode_to_json, zcl_json};
use serde_json::Value as Json;

fn vectors() -> Vec<Json> {
    let root: Json = serde_json::from_str(include_str!("fixtures/meters.json")).unwrap();
    root["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            let p = v["protocol"].as_str().unwrap();
            p == "TI-ZNP-MT" || p.starts_with("ZCL")
        })
        .cloned()
        .collect()
}

fn bytes_of(v: &Json) -> Vec<u8> {
    hex::decode(v["hex"].as_str().unwrap().replace(' ', "")).unwrap()
}

/// The MT vector `index` (among the ZNP and ZCL ones), after the checks every MT vector gets.
fn mt(index: usize, description_start: &str) -> (MtFrame, MtCommand) {
    let v = &vectors()[index];
    let description = v["description"].as_str().unwrap();
    assert!(
        description.starts_with(description_start),
        "vector {index} is `{description}`"
    );
    let bytes = bytes_of(v);
    let frame = MtFrame::decode(&bytes).unwrap_or_else(|e| panic!("{description}: {e}"));
    assert_eq!(frame.encode().unwrap(), bytes, "{description}: re-encoding");
    for cut in 0..=bytes.len() {
        let mut reader = FrameReader::new();
        reader.push(&[0x00, 0xFE]);
        reader.push(&bytes[..cut]);
        let early = std::iter::from_fn(|| reader.next_frame())
            .filter(|r| matches!(r, Read::Frame(_)))
            .count();
        reader.push(&bytes[cut..]);
        let late: Vec<Read> = std::iter::from_fn(|| reader.next_frame()).collect();
        let found = early
            + late
                .iter()
                .filter(|r| matches!(r, Read::Frame(f) if *f == frame))
                .count();
        assert_eq!(found, 1, "{description}: cut at {cut}");
    }
    let command = MtCommand::try_from_frame(&frame).unwrap();
    assert_ne!(command, MtCommand::Unknown, "{description}");
    if let Some(again) = command.to_frame() {
        assert_eq!(again, frame, "{description}: typed re-encoding");
    }
    let json = decode_to_json(&bytes).unwrap();
    assert!(
        json["frame"]["command"].is_string(),
        "{description}: {json}"
    );
    (frame, command)
}

fn zcl_vector(index: usize, cluster: u16, description_start: &str) -> (ZclFrame, ZclCommand) {
    let v = &vectors()[index];
    let description = v["description"].as_str().unwrap();
    assert!(
        description.starts_with(description_start),
        "vector {index} is `{description}`"
    );
    let bytes = bytes_of(v);
    let (frame, command) = zcl::decode(cluster, &bytes).unwrap();
    assert_eq!(frame.encode(), bytes, "{description}");
    let d = &v["decoded"];
    if let Some(fc) = d["fc"].as_str() {
        assert_eq!(format!("{:#04x}", frame.header.frame_control()), fc);
    }
    if let Some(tsn) = d["tsn"].as_u64() {
        assert_eq!(u64::from(frame.header.tsn), tsn);
    }
    if let Some(cmd) = d["cmd"].as_u64() {
        assert_eq!(u64::from(frame.header.command), cmd);
    }
    zcl_json(cluster, &bytes).unwrap();
    (frame, command)
}

#[test]
fn the_file_has_20_znp_and_zcl_vectors() {
    assert_eq!(vectors().len(), 20);
}

#[test]
fn v00_sys_ping_sreq() {
    let (frame, command) = mt(0, "SYS_PING SREQ");
    assert_eq!(
        (frame.kind, frame.subsystem, frame.cmd0()),
        (CommandType::Sreq, Subsystem::SYS, 0x21)
    );
    assert_eq!(command, MtCommand::SysPing);
}

#[test]
fn v01_sys_ping_srsp_zstack3() {
    let (_, command) = mt(1, "SYS_PING SRSP, Z-Stack 3.x");
    assert_eq!(
        command,
        MtCommand::SysPingRsp {
            capabilities: 0x0659
        }
    );
}

#[test]
fn v02_sys_ping_srsp_swra198_example() {
    let (_, command) = mt(2, "SYS_PING SRSP worked example");
    assert_eq!(
        command,
        MtCommand::SysPingRsp {
            capabilities: 0x0011
        }
    );
}

#[test]
fn v03_sys_version_sreq() {
    assert_eq!(mt(3, "SYS_VERSION SREQ").1, MtCommand::SysVersion);
}

#[test]
fn v04_sys_reset_req_soft() {
    let (frame, command) = mt(4, "SYS_RESET_REQ AREQ");
    assert_eq!(frame.kind, CommandType::Areq);
    assert_eq!(command, MtCommand::SysResetReq { kind: 1 });
}

#[test]
fn v05_zdo_startup_from_app() {
    assert_eq!(
        mt(5, "ZDO_STARTUP_FROM_APP SREQ").1,
        MtCommand::ZdoStartupFromApp { delay_ms: 100 }
    );
}

#[test]
fn v06_zdo_startup_from_app_restored() {
    assert_eq!(
        mt(6, "ZDO_STARTUP_FROM_APP SRSP").1,
        MtCommand::ZdoStartupFromAppRsp { state: 0 }
    );
}

#[test]
fn v07_af_register() {
    let MtCommand::AfRegister(ep) = mt(7, "AF_REGISTER SREQ").1 else {
        panic!()
    };
    assert_eq!(
        ep.descriptor,
        SimpleDescriptor {
            endpoint: 1,
            profile: 0x0104,
            device_id: 5,
            device_version: 0,
            in_clusters: vec![0x0000],
            out_clusters: vec![0x0702, 0x0705],
        }
    );
    assert_eq!(ep.latency, 0);
}

#[test]
fn v08_af_register_srsp() {
    assert_eq!(
        mt(8, "AF_REGISTER SRSP").1,
        MtCommand::StatusRsp { status: 0 }
    );
}

#[test]
fn v09_af_data_request_read_attributes() {
    let MtCommand::AfDataRequest(r) = mt(9, "AF_DATA_REQUEST SREQ").1 else {
        panic!()
    };
    assert_eq!(
        (
            r.dst_addr,
            r.dst_endpoint,
            r.src_endpoint,
            r.cluster,
            r.trans_id,
            r.options,
            r.radius
        ),
        (0x1234, 1, 1, 0x0702, 1, 0, 30)
    );
    let (frame, command) = zcl::decode(r.cluster, &r.data).unwrap();
    assert_eq!((frame.header.frame_control(), frame.header.tsn), (0x00, 1));
    assert_eq!(
        command,
        ZclCommand::Global(GlobalCommand::ReadAttributes(vec![
            0x0000, 0x0301, 0x0302, 0x0300, 0x0400
        ]))
    );
    let json = decode_to_json(&bytes_of(&vectors()[9])).unwrap();
    assert_eq!(json["zcl"]["command"]["command"], "read-attributes");
}

#[test]
fn v10_af_data_request_srsp() {
    assert_eq!(
        mt(10, "AF_DATA_REQUEST SRSP").1,
        MtCommand::StatusRsp { status: 0 }
    );
}

#[test]
fn v11_af_data_confirm() {
    assert_eq!(
        mt(11, "AF_DATA_CONFIRM AREQ").1,
        MtCommand::AfDataConfirm {
            status: 0,
            endpoint: 1,
            trans_id: 1
        }
    );
}

#[test]
fn v12_af_incoming_msg_read_attributes_response() {
    let MtCommand::AfIncomingMsg(m) = mt(12, "AF_INCOMING_MSG AREQ").1 else {
        panic!()
    };
    assert_eq!(
        (
            m.group,
            m.cluster,
            m.src_addr,
            m.src_endpoint,
            m.dst_endpoint,
            m.was_broadcast
        ),
        (0, 0x0702, 0x1234, 1, 1, 0)
    );
    assert_eq!(
        (m.lqi, m.security_use, m.timestamp, m.trans_seq),
        (110, 0, 0x0001_2345, 0)
    );
    assert_eq!(m.data.len(), 13);
    // Z-Stack 3.x's undocumented trailer: MAC source 0x1234, radius 29.
    assert_eq!(m.trailer, [0x34, 0x12, 0x1D]);
    let (frame, command) = zcl::decode(m.cluster, &m.data).unwrap();
    assert_eq!((frame.header.frame_control(), frame.header.tsn), (0x18, 5));
    let ZclCommand::Global(GlobalCommand::ReadAttributesResponse(records)) = command else {
        panic!()
    };
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].attribute, records[0].status), (0x0000, 0));
    assert_eq!(records[0].value, Some(ZclValue::Unsigned(0x25, 123_456)));
    let json = decode_to_json(&bytes_of(&vectors()[12])).unwrap();
    assert_eq!(json["fields"]["trailer"], "34121d");
    assert_eq!(json["zcl"]["header"]["tsn"], 5);
}

#[test]
fn v13_zdo_mgmt_permit_join_req() {
    assert_eq!(
        mt(13, "ZDO_MGMT_PERMIT_JOIN_REQ SREQ").1,
        MtCommand::ZdoMgmtPermitJoinReq {
            addr_mode: 0x0F,
            dst: 0xFFFC,
            duration: 254,
            tc_significance: 0
        }
    );
}

#[test]
fn v14_zdo_mgmt_permit_join_srsp() {
    assert_eq!(
        mt(14, "ZDO_MGMT_PERMIT_JOIN_REQ SRSP").1,
        MtCommand::StatusRsp { status: 0 }
    );
}

#[test]
fn v15_zcl_metering_read_attributes() {
    let (frame, command) = zcl_vector(15, 0x0702, "Metering 0x0702 Read Attributes request");
    assert_eq!(frame.header.frame_type, FrameType::Global);
    assert_eq!(
        command,
        ZclCommand::Global(GlobalCommand::ReadAttributes(vec![
            0x0000, 0x0301, 0x0302, 0x0300, 0x0400
        ]))
    );
}

#[test]
fn v16_zcl_metering_read_attributes_response() {
    let (_, command) = zcl_vector(16, 0x0702, "Metering Read Attributes Response");
    let ZclCommand::Global(GlobalCommand::ReadAttributesResponse(records)) = command else {
        panic!()
    };
    assert_eq!(records[0].value, Some(ZclValue::Unsigned(0x25, 123_456)));
}

#[test]
fn v17_prepayment_consumer_top_up() {
    let (_, command) = zcl_vector(17, 0x0705, "ConsumerTopUp");
    assert_eq!(
        command,
        ZclCommand::Prepayment(PrepaymentCommand::ConsumerTopUp {
            originating_device: 0,
            code: b"12345678901234567890".to_vec(),
        })
    );
    let built = PrepaymentCommand::ConsumerTopUp {
        originating_device: 0,
        code: b"12345678901234567890".to_vec(),
    }
    .to_frame(16)
    .encode();
    assert_eq!(built, bytes_of(&vectors()[17]));
}

#[test]
fn v18_prepayment_select_emergency_credit() {
    let (_, command) = zcl_vector(18, 0x0705, "SelectAvailableEmergencyCredit");
    let expected = PrepaymentCommand::SelectAvailableEmergencyCredit {
        issued_at: 0x2D1E_1F40,
        originating_device: 2,
    };
    assert_eq!(expected.to_frame(0x11).encode(), bytes_of(&vectors()[18]));
    assert_eq!(command, ZclCommand::Prepayment(expected));
}

#[test]
fn v19_prepayment_set_low_credit_warning_level() {
    let (_, command) = zcl_vector(19, 0x0705, "SetLowCreditWarningLevel");
    let expected = PrepaymentCommand::SetLowCreditWarningLevel { level: 500 };
    assert_eq!(expected.to_frame(0x12).encode(), bytes_of(&vectors()[19]));
    assert_eq!(command, ZclCommand::Prepayment(expected));
}
