//! The global ZCL commands a concentrator uses (ZCL 07-5123 §2.5): read attributes and their
//! response, configure reporting and its response, attribute reports, and the default response.

use serde::{Deserialize, Serialize};

use super::frame::{FrameType, ZclError, ZclFrame, ZclHeader};
use super::types::{is_analog, ZclValue};
use crate::wire::{FieldReader, PutLe};

/// Global command ids.
pub mod command {
    /// Read Attributes.
    pub const READ_ATTRIBUTES: u8 = 0x00;
    /// Read Attributes Response.
    pub const READ_ATTRIBUTES_RESPONSE: u8 = 0x01;
    /// Configure Reporting.
    pub const CONFIGURE_REPORTING: u8 = 0x06;
    /// Configure Reporting Response.
    pub const CONFIGURE_REPORTING_RESPONSE: u8 = 0x07;
    /// Report Attributes.
    pub const REPORT_ATTRIBUTES: u8 = 0x0A;
    /// Default Response.
    pub const DEFAULT_RESPONSE: u8 = 0x0B;
}

/// One attribute of a Read Attributes Response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRecord {
    /// The attribute id.
    pub attribute: u16,
    /// 0 success; otherwise the ZCL status (0x86 unsupported attribute).
    pub status: u8,
    /// The value when the status is 0.
    pub value: Option<ZclValue>,
}

/// One attribute's reporting configuration (direction 0: the meter reports to us).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportingConfig {
    /// The attribute id.
    pub attribute: u16,
    /// Its type.
    pub data_type: u8,
    /// Shortest interval between reports, seconds.
    pub min_interval: u16,
    /// Longest interval between reports, seconds (0xFFFF: no periodic reports).
    pub max_interval: u16,
    /// For analog types: the change that triggers a report, as a value of the attribute's type.
    pub reportable_change: Option<u64>,
}

/// One status of a Configure Reporting Response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigureStatus {
    /// 0 success.
    pub status: u8,
    /// The attribute, absent when one success status stands for all.
    pub attribute: Option<u16>,
}

/// A global command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", content = "fields", rename_all = "kebab-case")]
pub enum GlobalCommand {
    /// Read these attributes.
    ReadAttributes(Vec<u16>),
    /// Their values or statuses.
    ReadAttributesResponse(Vec<ReadRecord>),
    /// Configure reporting of these attributes.
    ConfigureReporting(Vec<ReportingConfig>),
    /// The outcome of configuring.
    ConfigureReportingResponse(Vec<ConfigureStatus>),
    /// Attribute values the meter reports by itself.
    ReportAttributes(Vec<(u16, ZclValue)>),
    /// The generic answer to a command: which command and its status.
    DefaultResponse {
        /// The command answered.
        command: u8,
        /// Its ZCL status.
        status: u8,
    },
    /// A global command this crate does not type.
    Other {
        /// Its id.
        command: u8,
    },
}

impl GlobalCommand {
    /// The command id.
    pub fn id(&self) -> u8 {
        match self {
            GlobalCommand::ReadAttributes(_) => command::READ_ATTRIBUTES,
            GlobalCommand::ReadAttributesResponse(_) => command::READ_ATTRIBUTES_RESPONSE,
            GlobalCommand::ConfigureReporting(_) => command::CONFIGURE_REPORTING,
            GlobalCommand::ConfigureReportingResponse(_) => command::CONFIGURE_REPORTING_RESPONSE,
            GlobalCommand::ReportAttributes(_) => command::REPORT_ATTRIBUTES,
            GlobalCommand::DefaultResponse { .. } => command::DEFAULT_RESPONSE,
            GlobalCommand::Other { command } => *command,
        }
    }

    /// The payload bytes.
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut d = Vec::new();
        match self {
            GlobalCommand::ReadAttributes(ids) => ids.iter().for_each(|a| d.put_u16(*a)),
            GlobalCommand::ReadAttributesResponse(records) => {
                for rec in records {
                    d.put_u16(rec.attribute);
                    d.push(rec.status);
                    if let (0, Some(v)) = (rec.status, &rec.value) {
                        d.push(v.data_type());
                        v.encode_into(&mut d);
                    }
                }
            }
            GlobalCommand::ConfigureReporting(configs) => {
                for c in configs {
                    d.push(0);
                    d.put_u16(c.attribute);
                    d.push(c.data_type);
                    d.put_u16(c.min_interval);
                    d.put_u16(c.max_interval);
                    if is_analog(c.data_type) {
                        let size = super::types::fixed_size(c.data_type).unwrap_or(0);
                        d.put_uint(c.reportable_change.unwrap_or(0), size);
                    }
                }
            }
            GlobalCommand::ConfigureReportingResponse(statuses) => {
                for s in statuses {
                    d.push(s.status);
                    if let Some(a) = s.attribute {
                        d.push(0);
                        d.put_u16(a);
                    }
                }
            }
            GlobalCommand::ReportAttributes(values) => {
                for (a, v) in values {
                    d.put_u16(*a);
                    d.push(v.data_type());
                    v.encode_into(&mut d);
                }
            }
            GlobalCommand::DefaultResponse { command, status } => {
                d.extend_from_slice(&[*command, *status])
            }
            GlobalCommand::Other { .. } => {}
        }
        d
    }

    /// A whole frame for this command with `header`'s direction and sequence number.
    pub fn to_frame(&self, mut header: ZclHeader) -> ZclFrame {
        header.frame_type = FrameType::Global;
        header.command = self.id();
        ZclFrame::new(header, self.encode_payload())
    }

    /// The command in a global frame.
    pub fn decode(frame: &ZclFrame) -> Result<GlobalCommand, ZclError> {
        let mut r = frame.payload_reader();
        let cmd = match frame.header.command {
            command::READ_ATTRIBUTES => {
                let mut ids = Vec::new();
                while !r.is_empty() {
                    ids.push(r.u16("attribute id")?);
                }
                GlobalCommand::ReadAttributes(ids)
            }
            command::READ_ATTRIBUTES_RESPONSE => {
                let mut records = Vec::new();
                while !r.is_empty() {
                    let attribute = r.u16("attribute id")?;
                    let status = r.u8("status")?;
                    let value = if status == 0 {
                        Some(typed_value(&mut r)?)
                    } else {
                        None
                    };
                    records.push(ReadRecord {
                        attribute,
                        status,
                        value,
                    });
                }
                GlobalCommand::ReadAttributesResponse(records)
            }
            command::CONFIGURE_REPORTING => {
                let mut configs = Vec::new();
                while !r.is_empty() {
                    let direction_offset = r.offset();
                    let direction = r.u8("direction")?;
                    let attribute = r.u16("attribute id")?;
                    if direction != 0 {
                        return Err(crate::wire::FieldError::Value {
                            offset: direction_offset,
                            field: "direction",
                            value: u64::from(direction),
                            expected: "this codec configures reports sent to us (direction 0) only",
                        }
                        .into());
                    }
                    let data_type = r.u8("data type")?;
                    let min_interval = r.u16("minimum reporting interval")?;
                    let max_interval = r.u16("maximum reporting interval")?;
                    let reportable_change = if is_analog(data_type) {
                        let size = super::types::fixed_size(data_type).unwrap_or(0);
                        Some(r.uint(size, "reportable change")?)
                    } else {
                        None
                    };
                    configs.push(ReportingConfig {
                        attribute,
                        data_type,
                        min_interval,
                        max_interval,
                        reportable_change,
                    });
                }
                GlobalCommand::ConfigureReporting(configs)
            }
            command::CONFIGURE_REPORTING_RESPONSE => {
                let mut statuses = Vec::new();
                if frame.payload.len() == 1 {
                    statuses.push(ConfigureStatus {
                        status: r.u8("status")?,
                        attribute: None,
                    });
                }
                while !r.is_empty() {
                    let status = r.u8("status")?;
                    let _direction = r.u8("direction")?;
                    statuses.push(ConfigureStatus {
                        status,
                        attribute: Some(r.u16("attribute id")?),
                    });
                }
                GlobalCommand::ConfigureReportingResponse(statuses)
            }
            command::REPORT_ATTRIBUTES => {
                let mut values = Vec::new();
                while !r.is_empty() {
                    let attribute = r.u16("attribute id")?;
                    values.push((attribute, typed_value(&mut r)?));
                }
                GlobalCommand::ReportAttributes(values)
            }
            command::DEFAULT_RESPONSE => {
                let command = r.u8("command id")?;
                let status = r.u8("status")?;
                finish(&r, "Default Response")?;
                GlobalCommand::DefaultResponse { command, status }
            }
            other => GlobalCommand::Other { command: other },
        };
        Ok(cmd)
    }
}

fn typed_value(r: &mut FieldReader<'_>) -> Result<ZclValue, ZclError> {
    let offset = r.offset();
    let data_type = r.u8("data type")?;
    ZclValue::decode(data_type, offset, r)
}

/// Fails when bytes are left after a fixed payload.
pub(crate) fn finish(r: &FieldReader<'_>, command: &'static str) -> Result<(), ZclError> {
    match r.remaining().len() {
        0 => Ok(()),
        extra => Err(ZclError::Trailing {
            offset: r.offset(),
            extra,
            command,
        }),
    }
}

/// The name of a ZCL status code.
pub fn status_name(status: u8) -> &'static str {
    match status {
        0x00 => "SUCCESS",
        0x01 => "FAILURE",
        0x7E => "NOT_AUTHORIZED",
        0x80 => "MALFORMED_COMMAND",
        0x81 => "UNSUP_COMMAND",
        0x82 => "UNSUP_GENERAL_COMMAND",
        0x85 => "INVALID_FIELD",
        0x86 => "UNSUPPORTED_ATTRIBUTE",
        0x87 => "INVALID_VALUE",
        0x88 => "READ_ONLY",
        0x89 => "INSUFFICIENT_SPACE",
        0x8C => "UNREPORTABLE_ATTRIBUTE",
        0x8D => "INVALID_DATA_TYPE",
        0x8E => "INVALID_SELECTOR",
        0x94 => "TIMEOUT",
        0xC3 => "UNSUPPORTED_CLUSTER",
        _ => "unknown status",
    }
}
