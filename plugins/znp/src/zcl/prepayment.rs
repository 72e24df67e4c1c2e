//! The Smart Energy Prepayment cluster 0x0705 (SE 1.4 / ZCL8 §10.8): its attributes, the commands a
//! concentrator sends a meter, and the meter's responses.

use serde::{Deserialize, Serialize};

use super::frame::{Direction, FrameType, ZclError, ZclFrame, ZclHeader};
use super::global::finish;
use crate::wire::{FieldReader, PutLe};

/// The cluster id.
pub const CLUSTER: u16 = 0x0705;

/// Attribute ids (server side).
pub mod attr {
    /// PaymentControlConfiguration (bitmap16).
    pub const PAYMENT_CONTROL_CONFIGURATION: u16 = 0x0000;
    /// CreditRemaining (int32).
    pub const CREDIT_REMAINING: u16 = 0x0001;
    /// EmergencyCreditRemaining (int32).
    pub const EMERGENCY_CREDIT_REMAINING: u16 = 0x0002;
    /// CreditStatus (bitmap8).
    pub const CREDIT_STATUS: u16 = 0x0003;
    /// AccumulatedDebt (int32).
    pub const ACCUMULATED_DEBT: u16 = 0x0005;
    /// LowCreditWarningLevel (uint32).
    pub const LOW_CREDIT_WARNING_LEVEL: u16 = 0x0031;
    /// CutOffValue (int32).
    pub const CUT_OFF_VALUE: u16 = 0x0040;
}

/// Client-to-server command ids.
pub mod command {
    /// SelectAvailableEmergencyCredit.
    pub const SELECT_AVAILABLE_EMERGENCY_CREDIT: u8 = 0x00;
    /// ChangeDebt.
    pub const CHANGE_DEBT: u8 = 0x02;
    /// ConsumerTopUp.
    pub const CONSUMER_TOP_UP: u8 = 0x04;
    /// ChangePaymentMode.
    pub const CHANGE_PAYMENT_MODE: u8 = 0x06;
    /// SetLowCreditWarningLevel.
    pub const SET_LOW_CREDIT_WARNING_LEVEL: u8 = 0x09;
    /// ChangePaymentModeResponse (server to client).
    pub const CHANGE_PAYMENT_MODE_RESPONSE: u8 = 0x02;
    /// ConsumerTopUpResponse (server to client).
    pub const CONSUMER_TOP_UP_RESPONSE: u8 = 0x03;
}

/// A ChangeDebt command's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDebt {
    /// The issuer's event id (newer replaces older).
    pub issuer_event_id: u32,
    /// The debt's label (octet string).
    #[serde(default)]
    pub debt_label: Vec<u8>,
    /// The amount.
    pub debt_amount: u32,
    /// 0 time-based, 1 percentage-based, 2 catch-up.
    pub recovery_method: u8,
    /// 0/1 debt 1 absolute/incremental, 2/3 debt 2, 4/5 debt 3.
    pub amount_type: u8,
    /// UTC time recovery starts (0: now).
    pub recovery_start: u32,
    /// Minutes after midnight of the collection.
    pub recovery_collection_time: u16,
    /// 0 per hour, 1 per day, 2 per week, 3 per month, 4 per quarter.
    pub recovery_frequency: u8,
    /// Amount collected per period.
    pub recovery_amount: u32,
    /// Percentage of each top-up taken for the debt, in hundredths.
    pub recovery_balance_percentage: u16,
}

/// A command from the concentrator to a prepayment meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", content = "fields", rename_all = "kebab-case")]
pub enum PrepaymentCommand {
    /// Use the emergency credit now.
    SelectAvailableEmergencyCredit {
        /// UTC time the command was issued (seconds since 2000-01-01).
        issued_at: u32,
        /// 0 energy service interface, 1 meter, 2 in-home display.
        originating_device: u8,
    },
    /// Change a debt and its recovery.
    ChangeDebt(ChangeDebt),
    /// Add credit with a top-up code.
    ConsumerTopUp {
        /// 0 energy service interface, 1 meter, 2 in-home display.
        originating_device: u8,
        /// The top-up code (octet string, up to 25 bytes).
        code: Vec<u8>,
    },
    /// Change the payment mode; this crate uses it to set the cut-off value.
    ChangePaymentMode {
        /// The supplier.
        provider_id: u32,
        /// The issuer's event id.
        issuer_event_id: u32,
        /// UTC time it takes effect (0: now).
        implementation_time: u32,
        /// The proposed PaymentControlConfiguration bits.
        proposed_configuration: u16,
        /// Credit level at which the supply is cut (may be negative).
        cut_off_value: i32,
    },
    /// Warn the customer below this credit.
    SetLowCreditWarningLevel {
        /// The level.
        level: u32,
    },
}

/// A prepayment meter's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", content = "fields", rename_all = "kebab-case")]
pub enum PrepaymentResponse {
    /// The answer to ChangePaymentMode.
    ChangePaymentModeResponse {
        /// Friendly-credit bits.
        friendly_credit: u8,
        /// The friendly-credit calendar.
        friendly_credit_calendar_id: u32,
        /// Emergency credit limit.
        emergency_credit_limit: u32,
        /// Emergency credit threshold.
        emergency_credit_threshold: u32,
    },
    /// The answer to ConsumerTopUp.
    ConsumerTopUpResponse {
        /// 0 accepted, 1 rejected (invalid), 2 rejected (duplicate), 3 rejected (error),
        /// 4 rejected (max credit reached), 5 rejected (keypad lock), 6 rejected (too large),
        /// 0x10 accepted (supply enabled), 0x11 accepted (supply disabled), 0x12 accepted (armed).
        result: u8,
        /// Credit added.
        top_up_value: i32,
        /// 0 ESI, 1 meter, 2 in-home display.
        source: u8,
        /// Credit after the top-up.
        credit_remaining: i32,
    },
}

impl PrepaymentCommand {
    /// The command id.
    pub fn id(&self) -> u8 {
        match self {
            PrepaymentCommand::SelectAvailableEmergencyCredit { .. } => {
                command::SELECT_AVAILABLE_EMERGENCY_CREDIT
            }
            PrepaymentCommand::ChangeDebt(_) => command::CHANGE_DEBT,
            PrepaymentCommand::ConsumerTopUp { .. } => command::CONSUMER_TOP_UP,
            PrepaymentCommand::ChangePaymentMode { .. } => command::CHANGE_PAYMENT_MODE,
            PrepaymentCommand::SetLowCreditWarningLevel { .. } => {
                command::SET_LOW_CREDIT_WARNING_LEVEL
            }
        }
    }

    /// Whether the meter answers with its own response command rather than a default response.
    pub fn has_response(&self) -> bool {
        matches!(
            self,
            PrepaymentCommand::ConsumerTopUp { .. } | PrepaymentCommand::ChangePaymentMode { .. }
        )
    }

    /// The frame, with sequence number `tsn`.
    pub fn to_frame(&self, tsn: u8) -> ZclFrame {
        let mut d = Vec::new();
        match self {
            PrepaymentCommand::SelectAvailableEmergencyCredit {
                issued_at,
                originating_device,
            } => {
                d.put_u32(*issued_at);
                d.push(*originating_device);
            }
            PrepaymentCommand::ChangeDebt(c) => {
                d.put_u32(c.issuer_event_id);
                d.push(c.debt_label.len().min(0xFE) as u8);
                d.extend_from_slice(
                    c.debt_label
                        .get(..c.debt_label.len().min(0xFE))
                        .unwrap_or_default(),
                );
                d.put_u32(c.debt_amount);
                d.extend_from_slice(&[c.recovery_method, c.amount_type]);
                d.put_u32(c.recovery_start);
                d.put_u16(c.recovery_collection_time);
                d.push(c.recovery_frequency);
                d.put_u32(c.recovery_amount);
                d.put_u16(c.recovery_balance_percentage);
            }
            PrepaymentCommand::ConsumerTopUp {
                originating_device,
                code,
            } => {
                d.push(*originating_device);
                d.push(code.len().min(0xFE) as u8);
                d.extend_from_slice(code.get(..code.len().min(0xFE)).unwrap_or_default());
            }
            PrepaymentCommand::ChangePaymentMode {
                provider_id,
                issuer_event_id,
                implementation_time,
                proposed_configuration,
                cut_off_value,
            } => {
                d.put_u32(*provider_id);
                d.put_u32(*issuer_event_id);
                d.put_u32(*implementation_time);
                d.put_u16(*proposed_configuration);
                d.put_u32(*cut_off_value as u32);
            }
            PrepaymentCommand::SetLowCreditWarningLevel { level } => d.put_u32(*level),
        }
        ZclFrame::new(
            ZclHeader::client(FrameType::ClusterSpecific, tsn, self.id()),
            d,
        )
    }

    /// The command in a client-to-server prepayment frame; `None` for a command id not typed here.
    pub fn decode(frame: &ZclFrame) -> Result<Option<PrepaymentCommand>, ZclError> {
        let mut r = frame.payload_reader();
        let cmd = match frame.header.command {
            command::SELECT_AVAILABLE_EMERGENCY_CREDIT => {
                PrepaymentCommand::SelectAvailableEmergencyCredit {
                    issued_at: r.u32("CommandIssueDateTime")?,
                    originating_device: r.u8("OriginatingDevice")?,
                }
            }
            command::CHANGE_DEBT => PrepaymentCommand::ChangeDebt(ChangeDebt {
                issuer_event_id: r.u32("IssuerEventID")?,
                debt_label: octets(&mut r, "DebtLabel")?,
                debt_amount: r.u32("DebtAmount")?,
                recovery_method: r.u8("DebtRecoveryMethod")?,
                amount_type: r.u8("DebtAmountType")?,
                recovery_start: r.u32("DebtRecoveryStartTime")?,
                recovery_collection_time: r.u16("DebtRecoveryCollectionTime")?,
                recovery_frequency: r.u8("DebtRecoveryFrequency")?,
                recovery_amount: r.u32("DebtRecoveryAmount")?,
                recovery_balance_percentage: r.u16("DebtRecoveryBalancePercentage")?,
            }),
            command::CONSUMER_TOP_UP => PrepaymentCommand::ConsumerTopUp {
                originating_device: r.u8("OriginatingDevice")?,
                code: octets(&mut r, "TopUpCode")?,
            },
            command::CHANGE_PAYMENT_MODE => PrepaymentCommand::ChangePaymentMode {
                provider_id: r.u32("ProviderID")?,
                issuer_event_id: r.u32("IssuerEventID")?,
                implementation_time: r.u32("ImplementationDateTime")?,
                proposed_configuration: r.u16("ProposedPaymentControlConfiguration")?,
                cut_off_value: r.u32("CutOffValue")? as i32,
            },
            command::SET_LOW_CREDIT_WARNING_LEVEL => PrepaymentCommand::SetLowCreditWarningLevel {
                level: r.u32("LowCreditWarningLevel")?,
            },
            _ => return Ok(None),
        };
        finish(&r, "prepayment command")?;
        Ok(Some(cmd))
    }
}

fn octets(r: &mut FieldReader<'_>, field: &'static str) -> Result<Vec<u8>, ZclError> {
    let len = r.u8(field)?;
    if len == 0xFF {
        return Ok(Vec::new());
    }
    Ok(r.take(usize::from(len), field)?.to_vec())
}

impl PrepaymentResponse {
    /// The frame, answering sequence number `tsn`.
    pub fn to_frame(&self, tsn: u8) -> ZclFrame {
        let mut d = Vec::new();
        let id = match self {
            PrepaymentResponse::ChangePaymentModeResponse {
                friendly_credit,
                friendly_credit_calendar_id,
                emergency_credit_limit,
                emergency_credit_threshold,
            } => {
                d.push(*friendly_credit);
                d.put_u32(*friendly_credit_calendar_id);
                d.put_u32(*emergency_credit_limit);
                d.put_u32(*emergency_credit_threshold);
                command::CHANGE_PAYMENT_MODE_RESPONSE
            }
            PrepaymentResponse::ConsumerTopUpResponse {
                result,
                top_up_value,
                source,
                credit_remaining,
            } => {
                d.push(*result);
                d.put_u32(*top_up_value as u32);
                d.push(*source);
                d.put_u32(*credit_remaining as u32);
                command::CONSUMER_TOP_UP_RESPONSE
            }
        };
        ZclFrame::new(ZclHeader::server(FrameType::ClusterSpecific, tsn, id), d)
    }

    /// The response in a server-to-client prepayment frame; `None` for one not typed here.
    pub fn decode(frame: &ZclFrame) -> Result<Option<PrepaymentResponse>, ZclError> {
        if frame.header.direction != Direction::ServerToClient {
            return Ok(None);
        }
        let mut r = frame.payload_reader();
        let rsp = match frame.header.command {
            command::CHANGE_PAYMENT_MODE_RESPONSE => {
                PrepaymentResponse::ChangePaymentModeResponse {
                    friendly_credit: r.u8("FriendlyCredit")?,
                    friendly_credit_calendar_id: r.u32("FriendlyCreditCalendarID")?,
                    emergency_credit_limit: r.u32("EmergencyCreditLimit")?,
                    emergency_credit_threshold: r.u32("EmergencyCreditThreshold")?,
                }
            }
            command::CONSUMER_TOP_UP_RESPONSE => PrepaymentResponse::ConsumerTopUpResponse {
                result: r.u8("ResultType")?,
                top_up_value: r.u32("TopUpValue")? as i32,
                source: r.u8("SourceOfTopUp")?,
                credit_remaining: r.u32("CreditRemaining")? as i32,
            },
            _ => return Ok(None),
        };
        finish(&r, "prepayment response")?;
        Ok(Some(rsp))
    }
}
