//! From the daemon's values to wire bodies: a poll's readings, the ledger's events, relay read-backs,
//! the modem's report.

use concentrator_ledger::{AccountState, LedgerEvent, RelayState};
use concentrator_plugin_host::{Phase, Quantity, Reading, Unit, Value};
use concentrator_protocol::{
    event_code, Event, ModemReport, Quantity as Wire, Reading as WireReading, Severity,
};

/// The birth message's modem report from the status board's view.
pub fn modem_report(view: &crate::status::ModemView) -> ModemReport {
    ModemReport {
        rssi_dbm: view.rssi_dbm,
        operator: view.operator.clone(),
        technology: view.technology.clone(),
        iccid: view.iccid.clone(),
        recoveries: view.recoveries,
    }
}

/// The wire quantity of a driver quantity, with the unit it must come in. Quantities the protocol has no
/// code for (other phases, tariff registers, the meter's clock, the relay state) are not sent.
fn wire_quantity(q: Quantity) -> Option<(Wire, Unit)> {
    Some(match q {
        Quantity::EnergyImportTotal => (Wire::EnergyImportWh, Unit::WattHour),
        Quantity::EnergyExportTotal => (Wire::EnergyExportWh, Unit::WattHour),
        Quantity::Voltage(Phase::A) => (Wire::Voltage, Unit::Volt),
        Quantity::Current(Phase::A) => (Wire::Current, Unit::Ampere),
        Quantity::ActivePower(Phase::Total) => (Wire::PowerW, Unit::Watt),
        Quantity::PrepaidRemainingMoney => (Wire::CreditMinor, Unit::Currency),
        _ => return None,
    })
}

/// The wire readings of one poll of one meter, taken at `at` (unix seconds).
pub fn readings(at: u64, polled: &[Reading]) -> Vec<WireReading> {
    polled
        .iter()
        .filter_map(|r| {
            let (quantity, unit) = wire_quantity(r.quantity)?;
            match r.value {
                Value::Decimal(d) if d.unit == unit => Some(WireReading {
                    at,
                    quantity,
                    value: d.mantissa,
                    exponent: d.exponent,
                }),
                _ => None,
            }
        })
        .collect()
}

fn event(at: u64, code: u16, severity: Severity, detail: String, values: Vec<i64>) -> Event {
    let mut detail = detail;
    detail.truncate(detail.floor_char_boundary(256));
    Event {
        at,
        code,
        severity,
        detail: Some(detail),
        values,
    }
}

/// The wire event of a ledger event and the meter it is about; `None` for events that only the log
/// needs (a state change other than into emergency credit, a new register baseline).
pub fn ledger_event(at: u64, e: &LedgerEvent) -> Option<(String, Event)> {
    let wh = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Some(match e {
        LedgerEvent::LowCredit {
            meter,
            level_minor,
            balance_minor,
        } => (
            meter.clone(),
            event(
                at,
                event_code::LOW_CREDIT,
                Severity::Warning,
                format!("balance below {level_minor}"),
                vec![*balance_minor],
            ),
        ),
        LedgerEvent::StateChanged { meter, to, .. } if *to == AccountState::InEmergencyCredit => (
            meter.clone(),
            event(
                at,
                event_code::EMERGENCY_CREDIT,
                Severity::Warning,
                "emergency credit taken".into(),
                vec![],
            ),
        ),
        LedgerEvent::FriendlyCredit {
            meter,
            balance_minor,
        } => (
            meter.clone(),
            event(
                at,
                event_code::LOW_CREDIT,
                Severity::Warning,
                "credit exhausted; supply kept on (friendly credit or protected dwelling)".into(),
                vec![*balance_minor],
            ),
        ),
        LedgerEvent::RegisterAnomaly {
            meter,
            held_wh,
            read_wh,
        } => (
            meter.clone(),
            event(
                at,
                event_code::REGISTER_ANOMALY,
                Severity::Warning,
                "register backwards or implausible jump; not charged".into(),
                vec![wh(*held_wh), wh(*read_wh)],
            ),
        ),
        LedgerEvent::RelayMismatch {
            meter,
            target,
            observed,
        } => (
            meter.clone(),
            event(
                at,
                relay_code(*observed),
                Severity::Warning,
                format!(
                    "relay read back {observed}, the ledger wants it {target}; command sent again"
                ),
                vec![],
            ),
        ),
        LedgerEvent::RelayAlarm {
            meter,
            action,
            attempts,
            observed,
        } => (
            meter.clone(),
            event(
                at,
                observed.map_or(event_code::RELAY_OPENED, relay_code),
                Severity::Alarm,
                format!(
                    "relay did not obey {action} after {attempts} attempts ({})",
                    observed.map_or_else(
                        || "nothing read back".to_string(),
                        |o| format!("read back {o}")
                    )
                ),
                vec![],
            ),
        ),
        LedgerEvent::StateChanged { .. } | LedgerEvent::Rebaselined { .. } => return None,
    })
}

fn relay_code(state: RelayState) -> u16 {
    match state {
        RelayState::Open => event_code::RELAY_OPENED,
        RelayState::Closed => event_code::RELAY_CLOSED,
        RelayState::Armed => event_code::RELAY_ARMED,
    }
}

/// The event of a relay state read back after a command (a change the head-end must know of).
pub fn relay_event(at: u64, state: RelayState) -> Event {
    event(
        at,
        relay_code(state),
        Severity::Info,
        format!("relay read back {state}"),
        vec![],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_plugin_host::Decimal;

    #[test]
    fn readings_map_to_wire_codes_and_skip_the_rest() {
        let polled = vec![
            Reading::new(
                Quantity::EnergyImportTotal,
                Value::Decimal(Decimal::new(12_345, 1, Unit::WattHour)),
            ),
            Reading::new(
                Quantity::Voltage(Phase::B),
                Value::Decimal(Decimal::new(230, 0, Unit::Volt)),
            ),
            Reading::new(
                Quantity::Voltage(Phase::A),
                Value::Decimal(Decimal::new(2301, -1, Unit::Volt)),
            ),
        ];
        let w = readings(7, &polled);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].quantity, w[0].value, w[0].exponent),
            (Wire::EnergyImportWh, 12_345, 1)
        );
        assert_eq!(
            (w[1].quantity, w[1].value, w[1].exponent, w[1].at),
            (Wire::Voltage, 2301, -1, 7)
        );
    }
}
