//! The Metering cluster 0x0702 (ZCL8 §10.4): the attributes a concentrator reads, and the conversion of
//! metering and prepayment attributes into exact readings.

use concentrator_plugin_sdk::{Decimal, Phase, Quantity, Reading, Unit, Value};
use serde::{Deserialize, Serialize};

use super::types::ZclValue;
use super::{prepayment, ZclCluster};

/// The cluster id.
pub const CLUSTER: u16 = 0x0702;

/// Attribute ids.
pub mod attr {
    /// CurrentSummationDelivered (uint48).
    pub const CURRENT_SUMMATION_DELIVERED: u16 = 0x0000;
    /// CurrentSummationReceived (uint48).
    pub const CURRENT_SUMMATION_RECEIVED: u16 = 0x0001;
    /// Status (bitmap8).
    pub const STATUS: u16 = 0x0200;
    /// UnitOfMeasure (enum8; 0 kWh).
    pub const UNIT_OF_MEASURE: u16 = 0x0300;
    /// Multiplier (uint24).
    pub const MULTIPLIER: u16 = 0x0301;
    /// Divisor (uint24).
    pub const DIVISOR: u16 = 0x0302;
    /// InstantaneousDemand (int24).
    pub const INSTANTANEOUS_DEMAND: u16 = 0x0400;
}

/// A meter's formatting of its energy and demand: value × multiplier / divisor in the unit of measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeteringFormat {
    /// UnitOfMeasure (0: kWh and kW).
    pub unit: u8,
    /// Multiplier (0 is taken as 1).
    pub multiplier: u32,
    /// Divisor (0 is taken as 1).
    pub divisor: u32,
}

impl Default for MeteringFormat {
    fn default() -> Self {
        MeteringFormat {
            unit: 0,
            multiplier: 1,
            divisor: 1,
        }
    }
}

/// The vendor quantity for a ZCL attribute that has no standard quantity: `cluster << 16 | attribute`
/// (`Vendor(0x0705_0002)` is the prepayment cluster's EmergencyCreditRemaining).
pub fn vendor_quantity(cluster: u16, attribute: u16) -> Quantity {
    Quantity::Vendor((u32::from(cluster) << 16 | u32::from(attribute)) & 0x7FFF_FFFF)
}

/// `raw × multiplier / divisor` kilo-units as an exact decimal in units (Wh, W): exact when the divisor
/// is a power of ten, otherwise to a thousandth of a unit.
fn scaled(raw: i128, format: &MeteringFormat, unit: Unit) -> Option<Decimal> {
    let multiplier = i128::from(format.multiplier.max(1));
    let divisor = format.divisor.max(1);
    let product = raw.checked_mul(multiplier)?;
    let mut power = 0i8;
    let mut d = divisor;
    while d.is_multiple_of(10) {
        d /= 10;
        power += 1;
    }
    let (mantissa, exponent) = if d == 1 {
        (product, 3 - power)
    } else {
        (product.checked_mul(1_000_000)? / i128::from(divisor), -3)
    };
    Some(Decimal::new(i64::try_from(mantissa).ok()?, exponent, unit))
}

/// The reading for one attribute value of a metering or prepayment cluster, `None` for attributes that
/// are not readings (formatting) or values that do not fit. Prepayment money is in the meter's
/// currency with `credit_exponent` (−2: the values count cents).
pub fn reading(
    cluster: ZclCluster,
    attribute: u16,
    value: &ZclValue,
    format: &MeteringFormat,
    credit_exponent: i8,
) -> Option<Reading> {
    let raw = value.as_i128()?;
    let money = |q: Quantity| {
        Some(Reading::new(
            q,
            Value::Decimal(Decimal::new(
                i64::try_from(raw).ok()?,
                credit_exponent,
                Unit::Currency,
            )),
        ))
    };
    match (cluster, attribute) {
        (ZclCluster::Metering, attr::CURRENT_SUMMATION_DELIVERED) if format.unit == 0 => {
            let d = scaled(raw, format, Unit::WattHour)?;
            Some(Reading::new(Quantity::EnergyImportTotal, Value::Decimal(d)))
        }
        (ZclCluster::Metering, attr::CURRENT_SUMMATION_RECEIVED) if format.unit == 0 => {
            let d = scaled(raw, format, Unit::WattHour)?;
            Some(Reading::new(Quantity::EnergyExportTotal, Value::Decimal(d)))
        }
        (ZclCluster::Metering, attr::INSTANTANEOUS_DEMAND) if format.unit == 0 => {
            let d = scaled(raw, format, Unit::Watt)?;
            Some(Reading::new(
                Quantity::ActivePower(Phase::Total),
                Value::Decimal(d),
            ))
        }
        (ZclCluster::Metering, attr::UNIT_OF_MEASURE | attr::MULTIPLIER | attr::DIVISOR) => None,
        (ZclCluster::Prepayment, prepayment::attr::CREDIT_REMAINING) => {
            money(Quantity::PrepaidRemainingMoney)
        }
        (
            ZclCluster::Prepayment,
            prepayment::attr::EMERGENCY_CREDIT_REMAINING
            | prepayment::attr::ACCUMULATED_DEBT
            | prepayment::attr::CUT_OFF_VALUE
            | prepayment::attr::LOW_CREDIT_WARNING_LEVEL,
        ) => money(vendor_quantity(prepayment::CLUSTER, attribute)),
        (ZclCluster::Metering | ZclCluster::Prepayment, _) => Some(Reading::new(
            vendor_quantity(cluster.id(), attribute),
            Value::Decimal(Decimal::new(i64::try_from(raw).ok()?, 0, Unit::None)),
        )),
        (ZclCluster::Other(_), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_is_exact_with_power_of_ten_divisors() {
        let format = MeteringFormat {
            unit: 0,
            multiplier: 1,
            divisor: 1000,
        };
        let r = reading(
            ZclCluster::Metering,
            0,
            &ZclValue::Unsigned(0x25, 123_456),
            &format,
            -2,
        )
        .unwrap();
        assert_eq!(r.to_string(), "energy-import-total = 123456 Wh");
        let odd = MeteringFormat {
            unit: 0,
            multiplier: 1,
            divisor: 3,
        };
        let r = reading(
            ZclCluster::Metering,
            0x0400,
            &ZclValue::Signed(0x2A, 1),
            &odd,
            -2,
        )
        .unwrap();
        assert_eq!(r.to_string(), "active-power-total = 333.333 W");
    }

    #[test]
    fn credit_is_money() {
        let r = reading(
            ZclCluster::Prepayment,
            1,
            &ZclValue::Signed(0x2B, -150),
            &MeteringFormat::default(),
            -2,
        )
        .unwrap();
        assert_eq!(r.to_string(), "prepaid-remaining-money = -1.50 money");
    }
}
