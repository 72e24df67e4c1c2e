//! The ZCL frame (ZCL 07-5123 §2.4): frame control, optional manufacturer code, transaction sequence
//! number, command id, payload.

use serde::Serialize;

use crate::wire::{FieldError, FieldReader, PutLe};

/// Global (profile-wide) or cluster-specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrameType {
    /// A command of every cluster (read attributes, reports, default response).
    Global,
    /// A command of the frame's cluster (a prepayment top-up).
    ClusterSpecific,
}

/// Which side sent the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From the client (us) to the server (the meter).
    ClientToServer,
    /// From the server (the meter) to the client.
    ServerToClient,
}

/// The header of a ZCL frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ZclHeader {
    /// Global or cluster-specific.
    pub frame_type: FrameType,
    /// The manufacturer code of a manufacturer-specific command.
    pub manufacturer: Option<u16>,
    /// Who sent it.
    pub direction: Direction,
    /// Whether the receiver must not send a default response.
    pub disable_default_response: bool,
    /// Transaction sequence number, echoed in the answer.
    pub tsn: u8,
    /// The command id.
    pub command: u8,
    /// Frame-control bits 5–7, reserved: kept as they came so the frame re-encodes to its bytes.
    #[serde(skip_serializing_if = "is_zero")]
    pub reserved: u8,
}

fn is_zero(bits: &u8) -> bool {
    *bits == 0
}

impl ZclHeader {
    /// A header for a command from us (the client) to a meter.
    pub fn client(frame_type: FrameType, tsn: u8, command: u8) -> Self {
        ZclHeader {
            frame_type,
            manufacturer: None,
            direction: Direction::ClientToServer,
            disable_default_response: false,
            tsn,
            command,
            reserved: 0,
        }
    }

    /// A header for a meter's answer.
    pub fn server(frame_type: FrameType, tsn: u8, command: u8) -> Self {
        ZclHeader {
            direction: Direction::ServerToClient,
            disable_default_response: true,
            ..Self::client(frame_type, tsn, command)
        }
    }

    /// The frame-control byte.
    pub fn frame_control(&self) -> u8 {
        let mut fc = match self.frame_type {
            FrameType::Global => 0,
            FrameType::ClusterSpecific => 1,
        };
        if self.manufacturer.is_some() {
            fc |= 0x04;
        }
        if self.direction == Direction::ServerToClient {
            fc |= 0x08;
        }
        if self.disable_default_response {
            fc |= 0x10;
        }
        fc | (self.reserved & 0xE0)
    }
}

/// A ZCL frame: header and the command's payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZclFrame {
    /// The header.
    pub header: ZclHeader,
    /// The payload after the command id.
    pub payload: Vec<u8>,
    /// Offset of the payload in the bytes decoded (3, or 5 with a manufacturer code).
    pub payload_offset: usize,
}

/// Why bytes are not a ZCL frame, or a payload does not fit its command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZclError {
    /// A field is missing or wrong.
    #[error("ZCL: {0}")]
    Field(#[from] FieldError),
    /// The reserved frame types 2 and 3.
    #[error("ZCL byte 0: frame control {0:#04x} has the reserved frame type {ty} (expected 0 global or 1 cluster-specific)", ty = .0 & 3)]
    FrameType(u8),
    /// A data type whose length this codec cannot tell, so the rest cannot be read.
    #[error("ZCL byte {offset}: data type {data_type:#04x} is not supported (arrays, structures and sets are not used by metering and prepayment)")]
    DataType {
        /// Where the type byte is.
        offset: usize,
        /// The type.
        data_type: u8,
    },
    /// Bytes after a complete payload.
    #[error("ZCL byte {offset}: {extra} byte(s) after the end of the {command} payload")]
    Trailing {
        /// Where the payload ended.
        offset: usize,
        /// How many bytes follow.
        extra: usize,
        /// The command.
        command: &'static str,
    },
}

impl ZclFrame {
    /// A frame.
    pub fn new(header: ZclHeader, payload: Vec<u8>) -> Self {
        let payload_offset = if header.manufacturer.is_some() { 5 } else { 3 };
        ZclFrame {
            header,
            payload,
            payload_offset,
        }
    }

    /// The bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.payload.len());
        out.push(self.header.frame_control());
        if let Some(code) = self.header.manufacturer {
            out.put_u16(code);
        }
        out.extend_from_slice(&[self.header.tsn, self.header.command]);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a frame (the payload is interpreted later, knowing the cluster).
    pub fn decode(bytes: &[u8]) -> Result<ZclFrame, ZclError> {
        let mut r = FieldReader::new(bytes, 0);
        let fc = r.u8("frame control")?;
        let frame_type = match fc & 0x03 {
            0 => FrameType::Global,
            1 => FrameType::ClusterSpecific,
            _ => return Err(ZclError::FrameType(fc)),
        };
        let manufacturer = if fc & 0x04 != 0 {
            Some(r.u16("manufacturer code")?)
        } else {
            None
        };
        let tsn = r.u8("transaction sequence number")?;
        let command = r.u8("command id")?;
        let payload_offset = r.offset();
        Ok(ZclFrame {
            header: ZclHeader {
                frame_type,
                manufacturer,
                direction: if fc & 0x08 != 0 {
                    Direction::ServerToClient
                } else {
                    Direction::ClientToServer
                },
                disable_default_response: fc & 0x10 != 0,
                tsn,
                command,
                reserved: fc & 0xE0,
            },
            payload: r.remaining().to_vec(),
            payload_offset,
        })
    }

    /// A reader over the payload whose offsets count from the frame's first byte.
    pub fn payload_reader(&self) -> FieldReader<'_> {
        FieldReader::new(&self.payload, self.payload_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        for bytes in [
            &[0x00u8, 0x01, 0x00, 0x00, 0x00][..],
            &[0x18, 0x05, 0x01],
            &[0x05, 0x34, 0x12, 0x07, 0x04],
            &[0x40, 0x29, 0x0A],
        ] {
            let frame = ZclFrame::decode(bytes).unwrap();
            assert_eq!(frame.encode(), bytes);
        }
        assert_eq!(ZclFrame::decode(&[0x03, 0, 0]), Err(ZclError::FrameType(3)));
        assert!(ZclFrame::decode(&[0x04, 0x12]).is_err());
    }
}
