//! An emulated Zigbee prepayment meter: Metering (0x0702) and Prepayment (0x0705) servers on endpoint 1,
//! answering reads and reporting configurations, sending reports, and taking prepayment commands that
//! change its credit.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::mt::SimpleDescriptor;
use crate::wire::IeeeAddress;
use crate::zcl::{
    self, metering, prepayment, ConfigureStatus, Direction, FrameType, GlobalCommand,
    PrepaymentCommand, PrepaymentResponse, ReadRecord, ZclCommand, ZclFrame, ZclHeader, ZclValue,
};

/// The meter's endpoint.
pub const METER_ENDPOINT: u8 = 1;

/// An emulated meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedMeter {
    /// Its IEEE address.
    pub ieee: IeeeAddress,
    /// Its network address.
    pub nwk: u16,
    /// CurrentSummationDelivered, in units of 1/divisor kWh.
    pub summation: u64,
    /// InstantaneousDemand, in units of 1/divisor kW.
    pub demand: i32,
    /// Divisor (multiplier is 1, unit kWh).
    pub divisor: u32,
    /// CreditRemaining, in cents.
    pub credit: i32,
    /// EmergencyCreditRemaining, in cents.
    pub emergency_credit: i32,
    /// CreditStatus bits (bit 0 credit OK, bit 2 emergency credit selected).
    pub credit_status: u8,
    /// AccumulatedDebt, in cents.
    pub debt: i32,
    /// LowCreditWarningLevel.
    pub low_credit_warning: u32,
    /// CutOffValue.
    pub cut_off: i32,
    /// Top-up codes used already.
    pub used_codes: BTreeSet<Vec<u8>>,
    /// Whether reporting was configured.
    pub reporting_configured: bool,
    /// When false, frames to it are not acknowledged (it is out of range).
    pub reachable: bool,
    /// Constant consumption in watts while the supply is on (0: the register stands still).
    pub load_w: u32,
    /// The longest reporting interval the coordinator configured (its periodic reports), if any.
    pub report_every: Option<Duration>,
    /// Energy consumed and not yet on the register, milli-watt-hours.
    pending_mwh: u64,
    tsn: u8,
}

impl EmulatedMeter {
    /// A meter with 123.456 kWh on it, 500 W demand and 10.00 of credit.
    pub fn new(ieee: IeeeAddress, nwk: u16) -> Self {
        EmulatedMeter {
            ieee,
            nwk,
            summation: 123_456,
            demand: 500,
            divisor: 1000,
            credit: 1000,
            emergency_credit: 500,
            credit_status: 0x01,
            debt: 0,
            low_credit_warning: 200,
            cut_off: 0,
            used_codes: BTreeSet::new(),
            reporting_configured: false,
            reachable: true,
            load_w: 0,
            report_every: None,
            pending_mwh: 0,
            tsn: 0x80,
        }
    }

    /// Whether the supply is connected: the credit has not fallen below the cut-off value. The gateway
    /// cuts a meter by raising its cut-off above any credit, and restores it by lowering it again.
    pub fn supply_on(&self) -> bool {
        self.credit >= self.cut_off
    }

    /// Time passes: with the supply on, the load adds to the register (whole units of 1/divisor kWh).
    pub fn advance(&mut self, dt: Duration) {
        if !self.supply_on() || self.load_w == 0 {
            return;
        }
        // W × ms = mWh × 3600.
        let consumed = u64::from(self.load_w).saturating_mul(dt.as_millis() as u64) / 3600;
        self.pending_mwh = self.pending_mwh.saturating_add(consumed);
        // One unit of the register is 1e6 / divisor mWh (1 Wh at divisor 1000).
        let unit = 1_000_000 / u64::from(self.divisor.max(1));
        let units = self.pending_mwh / unit.max(1);
        self.pending_mwh -= units * unit.max(1);
        self.summation = self.summation.saturating_add(units);
    }

    /// Its endpoint's simple descriptor.
    pub fn descriptor(&self) -> SimpleDescriptor {
        SimpleDescriptor {
            endpoint: METER_ENDPOINT,
            profile: 0x0109,
            device_id: 0x0501,
            device_version: 1,
            in_clusters: vec![0x0000, metering::CLUSTER, prepayment::CLUSTER],
            out_clusters: vec![],
        }
    }

    fn attribute(&self, cluster: u16, attribute: u16) -> Option<ZclValue> {
        Some(match (cluster, attribute) {
            (metering::CLUSTER, metering::attr::CURRENT_SUMMATION_DELIVERED) => {
                ZclValue::Unsigned(0x25, self.summation)
            }
            (metering::CLUSTER, metering::attr::UNIT_OF_MEASURE) => ZclValue::Enum(0x30, 0),
            (metering::CLUSTER, metering::attr::MULTIPLIER) => ZclValue::Unsigned(0x22, 1),
            (metering::CLUSTER, metering::attr::DIVISOR) => {
                ZclValue::Unsigned(0x22, u64::from(self.divisor))
            }
            (metering::CLUSTER, metering::attr::INSTANTANEOUS_DEMAND) => {
                ZclValue::Signed(0x2A, i64::from(self.demand))
            }
            (prepayment::CLUSTER, prepayment::attr::CREDIT_REMAINING) => {
                ZclValue::Signed(0x2B, i64::from(self.credit))
            }
            (prepayment::CLUSTER, prepayment::attr::EMERGENCY_CREDIT_REMAINING) => {
                ZclValue::Signed(0x2B, i64::from(self.emergency_credit))
            }
            (prepayment::CLUSTER, prepayment::attr::CREDIT_STATUS) => {
                ZclValue::Bits(0x18, u64::from(self.credit_status))
            }
            (prepayment::CLUSTER, prepayment::attr::ACCUMULATED_DEBT) => {
                ZclValue::Signed(0x2B, i64::from(self.debt))
            }
            (prepayment::CLUSTER, prepayment::attr::LOW_CREDIT_WARNING_LEVEL) => {
                ZclValue::Unsigned(0x23, u64::from(self.low_credit_warning))
            }
            (prepayment::CLUSTER, prepayment::attr::CUT_OFF_VALUE) => {
                ZclValue::Signed(0x2B, i64::from(self.cut_off))
            }
            _ => return None,
        })
    }

    /// The meter's answer to a ZCL frame from the coordinator on `cluster`, if it sends one.
    pub fn handle(&mut self, cluster: u16, bytes: &[u8]) -> Option<ZclFrame> {
        let (frame, command) = zcl::decode(cluster, bytes).ok()?;
        if frame.header.direction != Direction::ClientToServer {
            return None;
        }
        let tsn = frame.header.tsn;
        let global = |c: GlobalCommand| c.to_frame(ZclHeader::server(FrameType::Global, tsn, 0));
        let default = |status: u8| {
            (!frame.header.disable_default_response).then(|| {
                global(GlobalCommand::DefaultResponse {
                    command: frame.header.command,
                    status,
                })
            })
        };
        match command {
            ZclCommand::Global(GlobalCommand::ReadAttributes(ids)) => {
                let records = ids
                    .into_iter()
                    .map(|attribute| match self.attribute(cluster, attribute) {
                        Some(value) => ReadRecord {
                            attribute,
                            status: 0,
                            value: Some(value),
                        },
                        None => ReadRecord {
                            attribute,
                            status: 0x86,
                            value: None,
                        },
                    })
                    .collect();
                Some(global(GlobalCommand::ReadAttributesResponse(records)))
            }
            ZclCommand::Global(GlobalCommand::ConfigureReporting(configs)) => {
                self.reporting_configured = true;
                let longest = configs
                    .iter()
                    .filter(|c| c.max_interval != 0xFFFF && c.max_interval > 0)
                    .map(|c| c.max_interval)
                    .min();
                if let Some(s) = longest {
                    self.report_every = Some(Duration::from_secs(u64::from(s)));
                }
                Some(global(GlobalCommand::ConfigureReportingResponse(vec![
                    ConfigureStatus {
                        status: 0,
                        attribute: None,
                    },
                ])))
            }
            ZclCommand::Global(_) => default(0x82),
            ZclCommand::Prepayment(command) => self.prepayment(command, tsn, default),
            _ => default(0x81),
        }
    }

    fn prepayment(
        &mut self,
        command: PrepaymentCommand,
        tsn: u8,
        default: impl Fn(u8) -> Option<ZclFrame>,
    ) -> Option<ZclFrame> {
        match command {
            PrepaymentCommand::ConsumerTopUp { code, .. } => {
                let (result, value) = self.top_up(code);
                Some(
                    PrepaymentResponse::ConsumerTopUpResponse {
                        result,
                        top_up_value: value,
                        source: 0,
                        credit_remaining: self.credit,
                    }
                    .to_frame(tsn),
                )
            }
            PrepaymentCommand::SelectAvailableEmergencyCredit { .. } => {
                if self.emergency_credit <= 0 {
                    return default(0x01);
                }
                self.credit_status |= 0x04;
                default(0)
            }
            PrepaymentCommand::ChangeDebt(debt) => {
                self.debt = i32::try_from(debt.debt_amount).unwrap_or(i32::MAX);
                default(0)
            }
            PrepaymentCommand::ChangePaymentMode { cut_off_value, .. } => {
                self.cut_off = cut_off_value;
                Some(
                    PrepaymentResponse::ChangePaymentModeResponse {
                        friendly_credit: 0,
                        friendly_credit_calendar_id: 0,
                        emergency_credit_limit: 500,
                        emergency_credit_threshold: 100,
                    }
                    .to_frame(tsn),
                )
            }
            PrepaymentCommand::SetLowCreditWarningLevel { level } => {
                self.low_credit_warning = level;
                default(0)
            }
        }
    }

    /// A code of digits is worth its last six digits in cents and works once.
    fn top_up(&mut self, code: Vec<u8>) -> (u8, i32) {
        if code.is_empty() || !code.iter().all(u8::is_ascii_digit) {
            return (1, 0);
        }
        if self.used_codes.contains(&code) {
            return (2, 0);
        }
        let tail = &code[code.len().saturating_sub(6)..];
        let value: i32 = tail.iter().fold(0, |acc, d| acc * 10 + i32::from(d - b'0'));
        self.credit = self.credit.saturating_add(value);
        self.used_codes.insert(code);
        (0, value)
    }

    /// An attribute report of the meter's energy and demand (0x0702) or its credit (0x0705).
    pub fn report(&mut self, cluster: u16) -> ZclFrame {
        self.tsn = self.tsn.wrapping_add(1);
        let ids: &[u16] = if cluster == prepayment::CLUSTER {
            &[
                prepayment::attr::CREDIT_REMAINING,
                prepayment::attr::EMERGENCY_CREDIT_REMAINING,
            ]
        } else {
            &[
                metering::attr::CURRENT_SUMMATION_DELIVERED,
                metering::attr::INSTANTANEOUS_DEMAND,
            ]
        };
        let values = ids
            .iter()
            .filter_map(|a| self.attribute(cluster, *a).map(|v| (*a, v)))
            .collect();
        GlobalCommand::ReportAttributes(values).to_frame(ZclHeader::server(
            FrameType::Global,
            self.tsn,
            0,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_turns_the_register_while_the_supply_is_on() {
        let mut m = EmulatedMeter::new(IeeeAddress(1), 0x1001);
        m.load_w = 3600;
        m.advance(Duration::from_millis(1500));
        assert_eq!(m.summation, 123_456 + 1, "3600 W for 1.5 s is 1.5 Wh");
        m.advance(Duration::from_millis(500));
        assert_eq!(m.summation, 123_458);
        m.cut_off = i32::MAX;
        assert!(!m.supply_on());
        m.advance(Duration::from_secs(10));
        assert_eq!(m.summation, 123_458, "no consumption while cut off");
    }
}
