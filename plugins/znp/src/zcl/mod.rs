//! ZCL on top of AF: the frame, data types, the global commands, the Metering cluster 0x0702 and the
//! Smart Energy Prepayment cluster 0x0705.

pub mod frame;
pub mod global;
pub mod metering;
pub mod prepayment;
pub mod types;

use serde::Serialize;

pub use frame::{Direction, FrameType, ZclError, ZclFrame, ZclHeader};
pub use global::{status_name, ConfigureStatus, GlobalCommand, ReadRecord, ReportingConfig};
pub use metering::MeteringFormat;
pub use prepayment::{ChangeDebt, PrepaymentCommand, PrepaymentResponse};
pub use types::ZclValue;

/// The clusters this crate interprets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZclCluster {
    /// Metering 0x0702.
    Metering,
    /// Prepayment 0x0705.
    Prepayment,
    /// Any other cluster: only its global commands are typed.
    Other(u16),
}

impl ZclCluster {
    /// The cluster for an id.
    pub fn from_id(id: u16) -> Self {
        match id {
            metering::CLUSTER => ZclCluster::Metering,
            prepayment::CLUSTER => ZclCluster::Prepayment,
            other => ZclCluster::Other(other),
        }
    }

    /// The id.
    pub fn id(self) -> u16 {
        match self {
            ZclCluster::Metering => metering::CLUSTER,
            ZclCluster::Prepayment => prepayment::CLUSTER,
            ZclCluster::Other(id) => id,
        }
    }
}

/// A ZCL frame's command, interpreted for its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ZclCommand {
    /// A global command.
    Global(GlobalCommand),
    /// A prepayment command to a meter.
    Prepayment(PrepaymentCommand),
    /// A prepayment meter's response.
    PrepaymentResponse(PrepaymentResponse),
    /// A cluster-specific command this crate does not type.
    ClusterSpecific {
        /// The command id.
        command: u8,
    },
}

/// Decodes a ZCL frame and its command, knowing the cluster it came on.
pub fn decode(cluster: u16, bytes: &[u8]) -> Result<(ZclFrame, ZclCommand), ZclError> {
    let frame = ZclFrame::decode(bytes)?;
    let command = match (frame.header.frame_type, ZclCluster::from_id(cluster)) {
        (FrameType::Global, _) => ZclCommand::Global(GlobalCommand::decode(&frame)?),
        (FrameType::ClusterSpecific, ZclCluster::Prepayment)
            if frame.header.direction == Direction::ClientToServer =>
        {
            match PrepaymentCommand::decode(&frame)? {
                Some(c) => ZclCommand::Prepayment(c),
                None => ZclCommand::ClusterSpecific {
                    command: frame.header.command,
                },
            }
        }
        (FrameType::ClusterSpecific, ZclCluster::Prepayment) => {
            match PrepaymentResponse::decode(&frame)? {
                Some(r) => ZclCommand::PrepaymentResponse(r),
                None => ZclCommand::ClusterSpecific {
                    command: frame.header.command,
                },
            }
        }
        (FrameType::ClusterSpecific, _) => ZclCommand::ClusterSpecific {
            command: frame.header.command,
        },
    };
    Ok((frame, command))
}
