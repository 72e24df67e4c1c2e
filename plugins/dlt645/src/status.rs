//! Meter running status word 3 (`04000503`): the relay state and the prepaid meter type.
//!
//! Bit layout (DL/T 645-2007 Appendix A, with the State-Grid extension for bit 12): bit 0 current
//! time-period table, bits 1-2 power supply, bit 3 programming allowed, bit 4 relay state (0 closed,
//! 1 open), bit 5 current time-zone table, bit 6 relay command (0 close, 1 trip), bit 7 pre-trip alarm,
//! bits 8-9 meter type (00 not prepaid, 01 energy prepaid, 10 money prepaid), bit 10 current tariff
//! price table, bit 11 current step table, bit 12 guarantee power (保电).

/// A relay (contactor) position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Closed: the customer has power (通).
    Closed,
    /// Open: tripped (断).
    Open,
}

/// How a meter is prepaid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterType {
    /// Not a prepaid meter.
    NotPrepaid,
    /// Prepaid by energy (remaining kWh).
    EnergyPrepaid,
    /// Prepaid by money (remaining balance).
    MoneyPrepaid,
    /// The reserved value 11.
    Reserved,
}

/// The power source the meter runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSupply {
    /// Mains.
    Main,
    /// Auxiliary supply.
    Auxiliary,
    /// Battery.
    Battery,
    /// The reserved value 11.
    Reserved,
}

/// Running status word 3, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RunningStatus3 {
    /// The word as read.
    pub raw: u16,
    /// Where the relay actually is (bit 4).
    pub relay: RelayState,
    /// Where the last relay command told it to be (bit 6).
    pub relay_command: RelayState,
    /// A pre-trip alarm is active (bit 7).
    pub pre_trip_alarm: bool,
    /// Guarantee-power (no trip) is in force (bit 12).
    pub guarantee_power: bool,
    /// Programming is allowed (bit 3).
    pub programming_allowed: bool,
    /// The power source (bits 1-2).
    pub power_supply: PowerSupply,
    /// The prepaid type (bits 8-9).
    pub meter_type: MeterType,
}

impl RunningStatus3 {
    /// Bit 4: the relay is open.
    pub const RELAY_OPEN: u16 = 1 << 4;
    /// Bit 6: the relay command is trip.
    pub const COMMAND_TRIP: u16 = 1 << 6;
    /// Bit 7: pre-trip alarm.
    pub const PRE_TRIP_ALARM: u16 = 1 << 7;
    /// Bit 12: guarantee power.
    pub const GUARANTEE_POWER: u16 = 1 << 12;

    /// Decodes the word (the two data bytes, low byte first, as a `u16`).
    pub fn from_word(raw: u16) -> Self {
        let relay = |bit: u16| {
            if raw & bit != 0 {
                RelayState::Open
            } else {
                RelayState::Closed
            }
        };
        RunningStatus3 {
            raw,
            relay: relay(Self::RELAY_OPEN),
            relay_command: relay(Self::COMMAND_TRIP),
            pre_trip_alarm: raw & Self::PRE_TRIP_ALARM != 0,
            guarantee_power: raw & Self::GUARANTEE_POWER != 0,
            programming_allowed: raw & (1 << 3) != 0,
            power_supply: match (raw >> 1) & 0b11 {
                0 => PowerSupply::Main,
                1 => PowerSupply::Auxiliary,
                2 => PowerSupply::Battery,
                _ => PowerSupply::Reserved,
            },
            meter_type: match (raw >> 8) & 0b11 {
                0 => MeterType::NotPrepaid,
                1 => MeterType::EnergyPrepaid,
                2 => MeterType::MoneyPrepaid,
                _ => MeterType::Reserved,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_bits() {
        let s = RunningStatus3::from_word(0x0250);
        assert_eq!(s.relay, RelayState::Open);
        assert_eq!(s.relay_command, RelayState::Open);
        assert!(!s.pre_trip_alarm);
        assert_eq!(s.meter_type, MeterType::MoneyPrepaid);
        let s = RunningStatus3::from_word(0x1080);
        assert_eq!(s.relay, RelayState::Closed);
        assert!(s.pre_trip_alarm && s.guarantee_power);
    }
}
