//! `concentrator decode znp HEX`: an MT frame, and the ZCL frame inside it, as JSON, or exactly what is
//! wrong with it.

use serde_json::{json, Value as Json};

use crate::mt::{command_name, CommandError, FrameError, MtCommand, MtFrame};
use crate::zcl::{self, ZclError};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an MT frame (offsets from the SOF).
    #[error("MT frame: {0}")]
    Frame(#[from] FrameError),
    /// A known MT command whose data does not fit it.
    #[error("MT data: {0}")]
    Command(#[from] CommandError),
    /// The ZCL frame inside AF data is broken (offsets from the ZCL frame's first byte).
    #[error("the ZCL frame at byte {at} of the MT frame (cluster {cluster:#06x}): {source}")]
    Zcl {
        /// Offset of the ZCL frame in the MT frame.
        at: usize,
        /// The cluster.
        cluster: u16,
        /// What is wrong.
        #[source]
        source: ZclError,
    },
}

/// Decodes one MT frame (bytes after its FCS are an error) and, for AF data, the ZCL frame inside it.
pub fn decode_to_json(bytes: &[u8]) -> Result<Json, DecodeError> {
    let frame = MtFrame::decode(bytes)?;
    let command = MtCommand::try_from_frame(&frame)?;
    let name = command_name(frame.kind, frame.subsystem, frame.id);
    let mut out = json!({
        "frame": {
            "type": frame.kind.name(),
            "subsystem": frame.subsystem.to_string(),
            "cmd0": format!("{:#04x}", frame.cmd0()),
            "cmd1": format!("{:#04x}", frame.id),
            "command": name,
            "length": frame.data.len(),
            "fcs": format!("{:#04x}", bytes.last().copied().unwrap_or_default()),
        },
    });
    let fields = match &command {
        MtCommand::Unknown => json!({ "data": hex(&frame.data) }),
        other => serde_json::to_value(other).unwrap_or(Json::Null),
    };
    out["fields"] = fields;
    // The ZCL payload sits after a fixed header: 10 bytes into AF_DATA_REQUEST's data, 17 into
    // AF_INCOMING_MSG's; plus 4 for SOF, length and the command bytes.
    let zcl = match &command {
        MtCommand::AfDataRequest(r) => Some((r.cluster, &r.data, 4 + 10)),
        MtCommand::AfIncomingMsg(m) => Some((m.cluster, &m.data, 4 + 17)),
        _ => None,
    };
    if let Some((cluster, data, at)) = zcl {
        out["zcl"] = zcl_json(cluster, data).map_err(|source| DecodeError::Zcl {
            at,
            cluster,
            source,
        })?;
    }
    Ok(out)
}

/// A bare ZCL frame on `cluster` as JSON.
pub fn zcl_json(cluster: u16, bytes: &[u8]) -> Result<Json, ZclError> {
    let (frame, command) = zcl::decode(cluster, bytes)?;
    let mut header = serde_json::to_value(frame.header).unwrap_or(Json::Null);
    header["frame_control"] = json!(format!("{:#04x}", frame.header.frame_control()));
    Ok(json!({
        "cluster": format!("{cluster:#06x}"),
        "header": header,
        "command": serde_json::to_value(&command).unwrap_or(Json::Null),
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_and_its_faults() {
        let j = decode_to_json(&[0xFE, 0x02, 0x61, 0x01, 0x59, 0x06, 0x3D]).unwrap();
        assert_eq!(j["frame"]["command"], "SYS_PING");
        assert_eq!(j["fields"]["capabilities"], 0x0659);
        let e = decode_to_json(&[0xFE, 0x02, 0x61, 0x01, 0x59, 0x06, 0x3E]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MT frame: byte 6: FCS 0x3e, expected 0x3d (XOR of bytes 1..6)"
        );
        let e = decode_to_json(&[0xFE, 0x01, 0x61, 0x01, 0x59, 0x38]).unwrap_err();
        assert!(e.to_string().contains("SYS_PING: byte 4"), "{e}");
    }
}
