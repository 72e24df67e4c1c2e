//! Between the plugin API's quantities and units and the register maps' vocabulary.

use concentrator_plugin_sdk::{Phase, Quantity, Unit};

/// Map quantities the API has no name for, read as `Quantity::Vendor(n)`.
pub const VENDOR_QUANTITIES: [(u32, &str); 11] = [
    (1, "total_active_energy"),
    (2, "frequency"),
    (3, "power_factor_l1"),
    (4, "power_factor_l2"),
    (5, "power_factor_l3"),
    (6, "power_factor_total"),
    (7, "import_reactive_energy"),
    (8, "export_reactive_energy"),
    (9, "reactive_power_l1"),
    (10, "reactive_power_l2"),
    (11, "reactive_power_l3"),
];

/// The register a user map gives for the relay state (0 open, 1 closed, 2 armed for closing).
pub const RELAY_STATE: &str = "relay_state";
/// The holding register a user map gives for relay commands (see the plugin's docs for the codes).
pub const RELAY_CONTROL: &str = "relay_control";
/// The register of the meter's clock, Unix seconds.
pub const METER_DATE_TIME: &str = "meter_date_time";

fn phase_suffix(phase: Phase) -> Option<u8> {
    match phase {
        Phase::A => Some(1),
        Phase::B => Some(2),
        Phase::C => Some(3),
        Phase::Total => None,
    }
}

/// The map's name for a quantity.
pub fn map_name(quantity: Quantity) -> Option<String> {
    let phased = |base: &str, phase: Phase| match phase_suffix(phase) {
        Some(n) => Some(format!("{base}_l{n}")),
        None => Some(format!("{base}_total")),
    };
    match quantity {
        Quantity::EnergyImportTotal => Some("import_active_energy".into()),
        Quantity::EnergyImportTariff(t) => Some(format!("import_active_energy_t{t}")),
        Quantity::EnergyExportTotal => Some("export_active_energy".into()),
        Quantity::Voltage(p) => phase_suffix(p).map(|n| format!("voltage_l{n}")),
        Quantity::Current(p) => phased("current", p),
        Quantity::ActivePower(p) => phased("active_power", p),
        Quantity::MeterDateTime => Some(METER_DATE_TIME.into()),
        Quantity::RelayState => Some(RELAY_STATE.into()),
        Quantity::PrepaidRemainingMoney => Some("prepaid_remaining_money".into()),
        Quantity::PrepaidRemainingEnergy => Some("prepaid_remaining_energy".into()),
        // A Modbus slave id is configured, never read from the meter.
        Quantity::DeviceAddress => None,
        Quantity::Vendor(n) => VENDOR_QUANTITIES
            .iter()
            .find(|(id, _)| *id == n)
            .map(|(_, name)| (*name).to_string()),
    }
}

/// The API quantity of a map name, if it has one.
pub fn from_map_name(name: &str) -> Option<Quantity> {
    let every = [
        Quantity::EnergyImportTotal,
        Quantity::EnergyExportTotal,
        Quantity::MeterDateTime,
        Quantity::RelayState,
        Quantity::PrepaidRemainingMoney,
        Quantity::PrepaidRemainingEnergy,
    ]
    .into_iter()
    .chain((1..=4).map(Quantity::EnergyImportTariff))
    .chain(
        [Phase::A, Phase::B, Phase::C, Phase::Total]
            .into_iter()
            .flat_map(|p| {
                [
                    Quantity::Voltage(p),
                    Quantity::Current(p),
                    Quantity::ActivePower(p),
                ]
            }),
    )
    .chain(VENDOR_QUANTITIES.iter().map(|(n, _)| Quantity::Vendor(*n)));
    every
        .into_iter()
        .find(|q| map_name(*q).as_deref() == Some(name))
}

/// The API unit and the power of ten to add to the exponent, for a map's unit.
pub fn api_unit(unit: &str) -> Option<(Unit, i8)> {
    Some(match unit {
        "" => (Unit::None, 0),
        "Wh" => (Unit::WattHour, 0),
        "kWh" => (Unit::WattHour, 3),
        "MWh" => (Unit::WattHour, 6),
        "W" => (Unit::Watt, 0),
        "kW" => (Unit::Watt, 3),
        "V" => (Unit::Volt, 0),
        "A" => (Unit::Ampere, 0),
        "Hz" => (Unit::Hertz, 0),
        "var" => (Unit::Var, 0),
        "kvar" => (Unit::Var, 3),
        "varh" => (Unit::VarHour, 0),
        "kvarh" => (Unit::VarHour, 3),
        "s" => (Unit::Second, 0),
        "currency" => (Unit::Currency, 0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "voltage_l2",
            "active_power_total",
            "import_active_energy_t3",
            "frequency",
            "relay_state",
        ] {
            let quantity = from_map_name(name).unwrap();
            assert_eq!(map_name(quantity).as_deref(), Some(name));
        }
        assert_eq!(from_map_name("apparent_power_l1"), None);
        assert_eq!(map_name(Quantity::Voltage(Phase::Total)), None);
        assert_eq!(map_name(Quantity::Vendor(99)), None);
    }
}
