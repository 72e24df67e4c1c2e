//! The typed values every driver speaks, as Rust types, with checked conversions to and from the raw
//! codes that cross the boundary.
//!
//! The SDK re-exports these for vendors; the host returns them to the daemon. One definition on both
//! sides keeps the conversions symmetric.

use std::fmt;

use crate::codes::{quantity, relay_command, relay_state, task, unit, value_kind};
use crate::{RawReading, RawStreamEvent, RawTask};

/// Why a raw value from the other side of the boundary is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawValueError {
    /// A quantity id this API version does not define.
    #[error("quantity id {0} is not defined in plugin API 1.x; use a defined id or a vendor id (0x8000_0000 | n)")]
    Quantity(u32),
    /// A unit code this API version does not define.
    #[error("unit code {0} is not defined in plugin API 1.x")]
    Unit(u32),
    /// A value kind this API version does not define.
    #[error("value kind {0} is not defined in plugin API 1.x")]
    ValueKind(u32),
    /// A relay-state or relay-command code this API version does not define.
    #[error("relay code {0} is not defined in plugin API 1.x")]
    Relay(u32),
    /// A task kind this API version does not define.
    #[error("task kind {0} is not defined in plugin API 1.x")]
    Task(u32),
    /// A decimal exponent outside -20..=20.
    #[error("decimal exponent {0} is outside -20..=20")]
    Exponent(i32),
    /// An address of another length than 1 to 8 bytes.
    #[error("an address reading of {0} bytes; 1 to 8 are allowed")]
    AddressLength(i32),
}

/// A phase of a three-phase supply, or the total over the phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Phase A (L1).
    A,
    /// Phase B (L2).
    B,
    /// Phase C (L3).
    C,
    /// All phases together.
    Total,
}

impl Phase {
    const ALL: [Phase; 4] = [Phase::A, Phase::B, Phase::C, Phase::Total];

    fn offset(self) -> u32 {
        match self {
            Phase::A => 0,
            Phase::B => 1,
            Phase::C => 2,
            Phase::Total => 3,
        }
    }
}

/// What a reading measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// Active energy imported, all tariffs.
    EnergyImportTotal,
    /// Active energy imported in one tariff (1 to 4).
    EnergyImportTariff(u8),
    /// Active energy exported, all tariffs.
    EnergyExportTotal,
    /// Voltage.
    Voltage(Phase),
    /// Current.
    Current(Phase),
    /// Active power.
    ActivePower(Phase),
    /// The meter's own date and time.
    MeterDateTime,
    /// The supply relay's state.
    RelayState,
    /// Prepaid credit left, as money.
    PrepaidRemainingMoney,
    /// Prepaid credit left, as energy.
    PrepaidRemainingEnergy,
    /// The device's own address (a DL/T 645 meter's, found by `DiscoverAddress`), as `Value::Address`.
    DeviceAddress,
    /// A vendor's own quantity (0 to 2^31 - 1).
    Vendor(u32),
}

impl Quantity {
    /// The raw id. A tariff outside 1..=4 or a vendor number above 2^31 - 1 is clamped into range.
    pub fn to_raw(self) -> u32 {
        match self {
            Quantity::EnergyImportTotal => quantity::ENERGY_IMPORT_TOTAL,
            Quantity::EnergyImportTariff(t) => {
                quantity::ENERGY_IMPORT_TARIFF_1 + u32::from(t.clamp(1, 4)) - 1
            }
            Quantity::EnergyExportTotal => quantity::ENERGY_EXPORT_TOTAL,
            Quantity::Voltage(p) => quantity::VOLTAGE_A + p.offset(),
            Quantity::Current(p) => quantity::CURRENT_A + p.offset(),
            Quantity::ActivePower(p) => quantity::ACTIVE_POWER_A + p.offset(),
            Quantity::MeterDateTime => quantity::METER_DATE_TIME,
            Quantity::RelayState => quantity::RELAY_STATE,
            Quantity::PrepaidRemainingMoney => quantity::PREPAID_REMAINING_MONEY,
            Quantity::PrepaidRemainingEnergy => quantity::PREPAID_REMAINING_ENERGY,
            Quantity::DeviceAddress => quantity::DEVICE_ADDRESS,
            Quantity::Vendor(n) => quantity::VENDOR_BIT | (n & !quantity::VENDOR_BIT),
        }
    }

    /// The quantity for a raw id.
    pub fn try_from_raw(raw: u32) -> Result<Self, RawValueError> {
        if raw & quantity::VENDOR_BIT != 0 {
            return Ok(Quantity::Vendor(raw & !quantity::VENDOR_BIT));
        }
        let phase = |base: u32| Phase::ALL.get((raw - base) as usize).copied();
        let q = match raw {
            quantity::ENERGY_IMPORT_TOTAL => Quantity::EnergyImportTotal,
            2..=5 => Quantity::EnergyImportTariff((raw - 1) as u8),
            quantity::ENERGY_EXPORT_TOTAL => Quantity::EnergyExportTotal,
            10..=13 => {
                Quantity::Voltage(phase(quantity::VOLTAGE_A).ok_or(RawValueError::Quantity(raw))?)
            }
            20..=23 => {
                Quantity::Current(phase(quantity::CURRENT_A).ok_or(RawValueError::Quantity(raw))?)
            }
            30..=33 => Quantity::ActivePower(
                phase(quantity::ACTIVE_POWER_A).ok_or(RawValueError::Quantity(raw))?,
            ),
            quantity::METER_DATE_TIME => Quantity::MeterDateTime,
            quantity::RELAY_STATE => Quantity::RelayState,
            quantity::PREPAID_REMAINING_MONEY => Quantity::PrepaidRemainingMoney,
            quantity::PREPAID_REMAINING_ENERGY => Quantity::PrepaidRemainingEnergy,
            quantity::DEVICE_ADDRESS => Quantity::DeviceAddress,
            other => return Err(RawValueError::Quantity(other)),
        };
        Ok(q)
    }
}

impl std::str::FromStr for Quantity {
    type Err = String;

    /// Parses the names that `Display` prints (`energy-import-total`, `voltage-a`, `vendor-17`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let phase = |p: &str| match p {
            "a" => Some(Phase::A),
            "b" => Some(Phase::B),
            "c" => Some(Phase::C),
            "total" => Some(Phase::Total),
            _ => None,
        };
        let parsed = match s {
            "energy-import-total" => Some(Quantity::EnergyImportTotal),
            "energy-export-total" => Some(Quantity::EnergyExportTotal),
            "meter-date-time" => Some(Quantity::MeterDateTime),
            "relay-state" => Some(Quantity::RelayState),
            "prepaid-remaining-money" => Some(Quantity::PrepaidRemainingMoney),
            "prepaid-remaining-energy" => Some(Quantity::PrepaidRemainingEnergy),
            "device-address" => Some(Quantity::DeviceAddress),
            _ => {
                if let Some(t) = s.strip_prefix("energy-import-tariff-") {
                    t.parse::<u8>()
                        .ok()
                        .filter(|t| (1..=4).contains(t))
                        .map(Quantity::EnergyImportTariff)
                } else if let Some(p) = s.strip_prefix("voltage-") {
                    phase(p).map(Quantity::Voltage)
                } else if let Some(p) = s.strip_prefix("current-") {
                    phase(p).map(Quantity::Current)
                } else if let Some(p) = s.strip_prefix("active-power-") {
                    phase(p).map(Quantity::ActivePower)
                } else if let Some(n) = s.strip_prefix("vendor-") {
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| *n < 1 << 31)
                        .map(Quantity::Vendor)
                } else {
                    None
                }
            }
        };
        parsed.ok_or_else(|| {
            format!(
                "`{s}` is not a quantity; use energy-import-total, energy-import-tariff-1..4, energy-export-total, \
                 voltage-a|b|c, current-a|b|c, active-power-a|b|c|total, meter-date-time, relay-state, \
                 prepaid-remaining-money, prepaid-remaining-energy, device-address or vendor-N"
            )
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::EnergyImportTotal => f.write_str("energy-import-total"),
            Quantity::EnergyImportTariff(t) => write!(f, "energy-import-tariff-{t}"),
            Quantity::EnergyExportTotal => f.write_str("energy-export-total"),
            Quantity::Voltage(p) => write!(f, "voltage-{}", phase_name(*p)),
            Quantity::Current(p) => write!(f, "current-{}", phase_name(*p)),
            Quantity::ActivePower(p) => write!(f, "active-power-{}", phase_name(*p)),
            Quantity::MeterDateTime => f.write_str("meter-date-time"),
            Quantity::RelayState => f.write_str("relay-state"),
            Quantity::PrepaidRemainingMoney => f.write_str("prepaid-remaining-money"),
            Quantity::PrepaidRemainingEnergy => f.write_str("prepaid-remaining-energy"),
            Quantity::DeviceAddress => f.write_str("device-address"),
            Quantity::Vendor(n) => write!(f, "vendor-{n}"),
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::A => "a",
        Phase::B => "b",
        Phase::C => "c",
        Phase::Total => "total",
    }
}

/// The unit of a decimal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// No unit.
    None,
    /// Watt-hour.
    WattHour,
    /// Watt.
    Watt,
    /// Volt.
    Volt,
    /// Ampere.
    Ampere,
    /// Volt-ampere-reactive hour.
    VarHour,
    /// Volt-ampere-reactive.
    Var,
    /// Hertz.
    Hertz,
    /// Money in the meter's currency.
    Currency,
    /// Second.
    Second,
}

impl Unit {
    const TABLE: [(Unit, u32, &'static str); 10] = [
        (Unit::None, unit::NONE, ""),
        (Unit::WattHour, unit::WATT_HOUR, "Wh"),
        (Unit::Watt, unit::WATT, "W"),
        (Unit::Volt, unit::VOLT, "V"),
        (Unit::Ampere, unit::AMPERE, "A"),
        (Unit::VarHour, unit::VAR_HOUR, "varh"),
        (Unit::Var, unit::VAR, "var"),
        (Unit::Hertz, unit::HERTZ, "Hz"),
        (Unit::Currency, unit::CURRENCY, "money"),
        (Unit::Second, unit::SECOND, "s"),
    ];

    /// The raw code.
    pub fn to_raw(self) -> u32 {
        Self::TABLE
            .iter()
            .find(|(u, _, _)| *u == self)
            .map_or(unit::NONE, |(_, code, _)| *code)
    }

    /// The unit for a raw code.
    pub fn try_from_raw(raw: u32) -> Result<Self, RawValueError> {
        Self::TABLE
            .iter()
            .find(|(_, code, _)| *code == raw)
            .map(|(u, _, _)| *u)
            .ok_or(RawValueError::Unit(raw))
    }

    /// The unit's symbol ("Wh", "V"; empty for none).
    pub fn symbol(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(u, _, _)| *u == self)
            .map_or("", |(_, _, s)| *s)
    }
}

/// The state of a meter's supply relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayState {
    /// Supply cut.
    Open,
    /// Supply on.
    Closed,
    /// Open, closes when the customer presses the meter's button.
    ArmedForClose,
}

impl RelayState {
    /// The raw code.
    pub fn to_raw(self) -> u32 {
        match self {
            RelayState::Open => relay_state::OPEN,
            RelayState::Closed => relay_state::CLOSED,
            RelayState::ArmedForClose => relay_state::ARMED_FOR_CLOSE,
        }
    }

    /// The state for a raw code.
    pub fn try_from_raw(raw: u32) -> Result<Self, RawValueError> {
        match raw {
            relay_state::OPEN => Ok(RelayState::Open),
            relay_state::CLOSED => Ok(RelayState::Closed),
            relay_state::ARMED_FOR_CLOSE => Ok(RelayState::ArmedForClose),
            other => Err(RawValueError::Relay(other)),
        }
    }
}

/// A decimal number: `mantissa × 10^exponent` of `unit`. Exact, so energy registers never pick up
/// binary rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// The digits.
    pub mantissa: i64,
    /// Power of ten (-20..=20).
    pub exponent: i8,
    /// The unit.
    pub unit: Unit,
}

impl Decimal {
    /// `mantissa × 10^exponent` of `unit`.
    pub fn new(mantissa: i64, exponent: i8, unit: Unit) -> Self {
        Decimal {
            mantissa,
            exponent,
            unit,
        }
    }

    /// The value as a float, for display and plausibility checks (not for money).
    pub fn to_f64(self) -> f64 {
        self.mantissa as f64 * 10f64.powi(i32::from(self.exponent))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let number = if self.mantissa == 0 && self.exponent >= 0 {
            "0".to_string()
        } else if self.exponent >= 0 {
            format!("{sign}{digits}{}", "0".repeat(self.exponent as usize))
        } else {
            let places = usize::from(self.exponent.unsigned_abs());
            let padded = format!("{digits:0>width$}", width = places + 1);
            let (int, frac) = padded.split_at(padded.len() - places);
            format!("{sign}{int}.{frac}")
        };
        match self.unit.symbol() {
            "" => f.write_str(&number),
            symbol => write!(f, "{number} {symbol}"),
        }
    }
}

/// A value read from a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Value {
    /// A number with a unit.
    Decimal(Decimal),
    /// A point in time, Unix seconds (the meter's clock).
    Timestamp(i64),
    /// A relay state.
    Relay(RelayState),
    /// An address of 1 to 8 bytes (API 1.2).
    Address(crate::coordinator::DeviceAddress),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Decimal(d) => d.fmt(f),
            Value::Timestamp(t) => write!(f, "unix {t}"),
            Value::Relay(r) => write!(f, "{r:?}"),
            Value::Address(a) => write!(f, "address {a}"),
        }
    }
}

/// One quantity with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reading {
    /// What was measured.
    pub quantity: Quantity,
    /// The value.
    pub value: Value,
}

impl Reading {
    /// A reading.
    pub fn new(quantity: Quantity, value: Value) -> Self {
        Reading { quantity, value }
    }

    /// The raw form.
    pub fn to_raw(self) -> RawReading {
        let quantity = self.quantity.to_raw();
        match self.value {
            Value::Decimal(d) => RawReading {
                quantity,
                value_kind: value_kind::DECIMAL,
                mantissa: d.mantissa,
                exponent: i32::from(d.exponent),
                unit: d.unit.to_raw(),
            },
            Value::Timestamp(t) => RawReading {
                quantity,
                value_kind: value_kind::TIMESTAMP,
                mantissa: t,
                exponent: 0,
                unit: unit::SECOND,
            },
            Value::Relay(r) => RawReading {
                quantity,
                value_kind: value_kind::RELAY,
                mantissa: i64::from(r.to_raw()),
                exponent: 0,
                unit: unit::NONE,
            },
            Value::Address(a) => {
                // Longer than 8 bytes does not fit a reading; such an address is cut to its last 8.
                let bytes = a.as_bytes();
                let bytes = &bytes[bytes.len().saturating_sub(8)..];
                RawReading {
                    quantity,
                    value_kind: value_kind::ADDRESS,
                    mantissa: bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) as i64,
                    exponent: bytes.len() as i32,
                    unit: unit::NONE,
                }
            }
        }
    }

    /// The reading for a raw form, checked.
    pub fn try_from_raw(raw: &RawReading) -> Result<Self, RawValueError> {
        let quantity = Quantity::try_from_raw(raw.quantity)?;
        let value = match raw.value_kind {
            value_kind::DECIMAL => {
                let exponent = i8::try_from(raw.exponent)
                    .ok()
                    .filter(|e| (-20..=20).contains(e))
                    .ok_or(RawValueError::Exponent(raw.exponent))?;
                Value::Decimal(Decimal {
                    mantissa: raw.mantissa,
                    exponent,
                    unit: Unit::try_from_raw(raw.unit)?,
                })
            }
            value_kind::TIMESTAMP => Value::Timestamp(raw.mantissa),
            value_kind::RELAY => {
                let code =
                    u32::try_from(raw.mantissa).map_err(|_| RawValueError::Relay(u32::MAX))?;
                Value::Relay(RelayState::try_from_raw(code)?)
            }
            value_kind::ADDRESS => {
                let len = usize::try_from(raw.exponent)
                    .ok()
                    .filter(|n| (1..=8).contains(n))
                    .ok_or(RawValueError::AddressLength(raw.exponent))?;
                let bytes = (raw.mantissa as u64).to_be_bytes();
                let address = crate::coordinator::DeviceAddress::new(&bytes[8 - len..])
                    .ok_or(RawValueError::AddressLength(raw.exponent))?;
                Value::Address(address)
            }
            other => return Err(RawValueError::ValueKind(other)),
        };
        Ok(Reading { quantity, value })
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.quantity, self.value)
    }
}

/// A command for a meter's supply relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayCommand {
    /// Open the relay (cut the supply).
    Trip,
    /// Allow the customer to close it with the meter's button.
    CloseAllowed,
    /// Close it now.
    CloseDirect,
    /// Sound or show the low-credit alarm.
    Alarm,
    /// Keep the supply on whatever the credit.
    GuaranteePower,
}

impl RelayCommand {
    const TABLE: [(RelayCommand, u32); 5] = [
        (RelayCommand::Trip, relay_command::TRIP),
        (RelayCommand::CloseAllowed, relay_command::CLOSE_ALLOWED),
        (RelayCommand::CloseDirect, relay_command::CLOSE_DIRECT),
        (RelayCommand::Alarm, relay_command::ALARM),
        (RelayCommand::GuaranteePower, relay_command::GUARANTEE_POWER),
    ];

    /// The raw code.
    pub fn to_raw(self) -> u32 {
        Self::TABLE
            .iter()
            .find(|(c, _)| *c == self)
            .map_or(0, |(_, code)| *code)
    }

    /// The command for a raw code.
    pub fn try_from_raw(raw: u32) -> Result<Self, RawValueError> {
        Self::TABLE
            .iter()
            .find(|(_, code)| *code == raw)
            .map(|(c, _)| *c)
            .ok_or(RawValueError::Relay(raw))
    }
}

/// What the host asks a meter driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Read one quantity.
    Read(Quantity),
    /// Control the relay.
    Relay(RelayCommand),
    /// Set the meter's clock to this Unix time (seconds).
    SetClock(i64),
    /// Find the address of the one meter on the bus.
    DiscoverAddress,
    /// Read record `n` (1 = the newest) of the meter's own stored interval history (API 1.3): the
    /// driver answers with the record's time as [`Quantity::MeterDateTime`] (a
    /// [`Value::Timestamp`], Unix seconds) and the registers the meter froze then (at least
    /// [`Quantity::EnergyImportTotal`]); a meter that keeps no history is a rejection that says so, a
    /// record the meter does not have (yet) a device exception.
    ReadHistory(u32),
}

impl Task {
    /// The raw form.
    pub fn to_raw(self) -> RawTask {
        let mut raw = RawTask::default();
        match self {
            Task::Read(q) => {
                raw.kind = task::READ;
                raw.quantity = q.to_raw();
            }
            Task::Relay(c) => {
                raw.kind = task::RELAY;
                raw.relay = c.to_raw();
            }
            Task::SetClock(t) => {
                raw.kind = task::SET_CLOCK;
                raw.unix_time = t;
            }
            Task::DiscoverAddress => raw.kind = task::DISCOVER_ADDRESS,
            Task::ReadHistory(n) => {
                raw.kind = task::READ_HISTORY;
                raw.reserved = n;
            }
        }
        raw
    }

    /// The task for a raw form, checked.
    pub fn try_from_raw(raw: &RawTask) -> Result<Self, RawValueError> {
        match raw.kind {
            task::READ => Ok(Task::Read(Quantity::try_from_raw(raw.quantity)?)),
            task::RELAY => Ok(Task::Relay(RelayCommand::try_from_raw(raw.relay)?)),
            task::SET_CLOCK => Ok(Task::SetClock(raw.unix_time)),
            task::DISCOVER_ADDRESS => Ok(Task::DiscoverAddress),
            task::READ_HISTORY => Ok(Task::ReadHistory(raw.reserved)),
            other => Err(RawValueError::Task(other)),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Read(q) => write!(f, "read {q}"),
            Task::Relay(c) => write!(f, "relay {c:?}"),
            Task::SetClock(t) => write!(f, "set clock to unix {t}"),
            Task::DiscoverAddress => f.write_str("discover address"),
            Task::ReadHistory(n) => write!(f, "read stored history record {n} (1 = the newest)"),
        }
    }
}

/// A meter's answer that it cannot do what was asked ("no such data", "wrong password"). Not a
/// transport failure: the meter is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceException {
    /// The protocol's exception code.
    pub code: u32,
    /// The driver's description of it.
    pub text: String,
}

impl fmt::Display for DeviceException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device exception {:#x}: {}", self.code, self.text)
    }
}

impl std::error::Error for DeviceException {}

/// An event from a stream driver (a Zigbee coordinator, a modem).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamEvent {
    /// A reading from a device on the stream's network.
    Reading {
        /// The device's address (at most [`crate::MAX_EVENT_ADDRESS`] bytes).
        address: Vec<u8>,
        /// The reading.
        reading: Reading,
    },
    /// A device joined or answered.
    DeviceSeen {
        /// The device's address.
        address: Vec<u8>,
    },
    /// A device left or stopped answering.
    DeviceLost {
        /// The device's address.
        address: Vec<u8>,
    },
    /// The coordinator or modem is ready.
    LinkUp,
    /// The coordinator or modem is not ready.
    LinkDown,
}

/// Why a raw stream event is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawEventError {
    /// An event kind this API version does not define.
    #[error("stream event kind {0} is not defined in plugin API 1.x")]
    Kind(u32),
    /// An address longer than the event's address field.
    #[error("stream event address length {0} is longer than the {max} bytes an event holds", max = crate::MAX_EVENT_ADDRESS)]
    AddressLength(u32),
    /// The reading is not valid.
    #[error("stream event reading: {0}")]
    Reading(#[from] RawValueError),
    /// An address longer than an event holds, from the driver's side.
    #[error("a device address of {0} bytes does not fit in a stream event (at most {max})", max = crate::MAX_EVENT_ADDRESS)]
    AddressTooLong(usize),
}

impl StreamEvent {
    /// The raw form, or an error when the address does not fit.
    pub fn try_to_raw(&self) -> Result<RawStreamEvent, RawEventError> {
        use crate::codes::stream_event as kind;
        let mut raw = RawStreamEvent::default();
        let address = match self {
            StreamEvent::Reading { address, reading } => {
                raw.kind = kind::READING;
                raw.reading = reading.to_raw();
                Some(address)
            }
            StreamEvent::DeviceSeen { address } => {
                raw.kind = kind::DEVICE_SEEN;
                Some(address)
            }
            StreamEvent::DeviceLost { address } => {
                raw.kind = kind::DEVICE_LOST;
                Some(address)
            }
            StreamEvent::LinkUp => {
                raw.kind = kind::LINK_UP;
                None
            }
            StreamEvent::LinkDown => {
                raw.kind = kind::LINK_DOWN;
                None
            }
        };
        if let Some(address) = address {
            let slot = raw
                .address
                .get_mut(..address.len())
                .ok_or(RawEventError::AddressTooLong(address.len()))?;
            slot.copy_from_slice(address);
            raw.address_len = address.len() as u32;
        }
        Ok(raw)
    }

    /// The event for a raw form, checked.
    pub fn try_from_raw(raw: &RawStreamEvent) -> Result<Self, RawEventError> {
        use crate::codes::stream_event as kind;
        let address = || {
            raw.address
                .get(..raw.address_len as usize)
                .map(<[u8]>::to_vec)
                .ok_or(RawEventError::AddressLength(raw.address_len))
        };
        match raw.kind {
            kind::READING => Ok(StreamEvent::Reading {
                address: address()?,
                reading: Reading::try_from_raw(&raw.reading)?,
            }),
            kind::DEVICE_SEEN => Ok(StreamEvent::DeviceSeen {
                address: address()?,
            }),
            kind::DEVICE_LOST => Ok(StreamEvent::DeviceLost {
                address: address()?,
            }),
            kind::LINK_UP => Ok(StreamEvent::LinkUp),
            kind::LINK_DOWN => Ok(StreamEvent::LinkDown),
            other => Err(RawEventError::Kind(other)),
        }
    }
}

#[cfg(test)]
mod quantity_names {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        let all = [
            Quantity::EnergyImportTotal,
            Quantity::EnergyImportTariff(3),
            Quantity::EnergyExportTotal,
            Quantity::Voltage(Phase::B),
            Quantity::Current(Phase::C),
            Quantity::ActivePower(Phase::Total),
            Quantity::MeterDateTime,
            Quantity::RelayState,
            Quantity::PrepaidRemainingMoney,
            Quantity::PrepaidRemainingEnergy,
            Quantity::Vendor(17),
        ];
        for q in all {
            assert_eq!(q.to_string().parse::<Quantity>(), Ok(q));
        }
        assert!("energy-import-tariff-5"
            .parse::<Quantity>()
            .unwrap_err()
            .contains("not a quantity"));
        assert!("voltage-d".parse::<Quantity>().is_err());
    }

    #[test]
    fn zero_with_a_positive_exponent_is_zero() {
        assert_eq!(Decimal::new(0, 1, Unit::WattHour).to_string(), "0 Wh");
        assert_eq!(Decimal::new(12, 1, Unit::WattHour).to_string(), "120 Wh");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_trip() {
        let mut all = vec![
            Quantity::EnergyImportTotal,
            Quantity::EnergyExportTotal,
            Quantity::MeterDateTime,
            Quantity::RelayState,
            Quantity::PrepaidRemainingMoney,
            Quantity::PrepaidRemainingEnergy,
            Quantity::Vendor(0),
            Quantity::Vendor(0x7fff_ffff),
        ];
        for t in 1..=4 {
            all.push(Quantity::EnergyImportTariff(t));
        }
        for p in Phase::ALL {
            all.extend([
                Quantity::Voltage(p),
                Quantity::Current(p),
                Quantity::ActivePower(p),
            ]);
        }
        for q in all {
            assert_eq!(Quantity::try_from_raw(q.to_raw()), Ok(q), "{q}");
        }
        assert_eq!(Quantity::try_from_raw(7), Err(RawValueError::Quantity(7)));
        assert_eq!(Quantity::try_from_raw(14), Err(RawValueError::Quantity(14)));
    }

    #[test]
    fn readings_round_trip_and_reject_garbage() {
        let readings = [
            Reading::new(
                Quantity::EnergyImportTotal,
                Value::Decimal(Decimal::new(12345, 1, Unit::WattHour)),
            ),
            Reading::new(Quantity::MeterDateTime, Value::Timestamp(1_767_225_600)),
            Reading::new(
                Quantity::RelayState,
                Value::Relay(RelayState::ArmedForClose),
            ),
        ];
        for r in readings {
            assert_eq!(Reading::try_from_raw(&r.to_raw()), Ok(r));
        }
        let mut bad = readings[0].to_raw();
        bad.exponent = 99;
        assert_eq!(
            Reading::try_from_raw(&bad),
            Err(RawValueError::Exponent(99))
        );
        bad.exponent = 0;
        bad.unit = 77;
        assert_eq!(Reading::try_from_raw(&bad), Err(RawValueError::Unit(77)));
        let mut relay = readings[2].to_raw();
        relay.mantissa = -1;
        assert!(Reading::try_from_raw(&relay).is_err());
    }

    #[test]
    fn decimals_display_exactly() {
        assert_eq!(Decimal::new(12345, -2, Unit::Volt).to_string(), "123.45 V");
        assert_eq!(Decimal::new(-5, -3, Unit::Ampere).to_string(), "-0.005 A");
        assert_eq!(Decimal::new(12, 3, Unit::WattHour).to_string(), "12000 Wh");
        assert_eq!(Decimal::new(7, 0, Unit::None).to_string(), "7");
    }

    #[test]
    fn tasks_round_trip() {
        for t in [
            Task::Read(Quantity::Voltage(Phase::B)),
            Task::Relay(RelayCommand::GuaranteePower),
            Task::SetClock(-1),
            Task::DiscoverAddress,
            Task::ReadHistory(168),
        ] {
            assert_eq!(Task::try_from_raw(&t.to_raw()), Ok(t));
        }
        assert!(Task::try_from_raw(&RawTask {
            kind: 9,
            ..RawTask::default()
        })
        .is_err());
    }

    #[test]
    fn stream_events_round_trip_and_reject_long_addresses() {
        let event = StreamEvent::Reading {
            address: vec![1, 2, 3, 4, 5, 6, 7, 8],
            reading: Reading::new(
                Quantity::ActivePower(Phase::Total),
                Value::Decimal(Decimal::new(5, 0, Unit::Watt)),
            ),
        };
        assert_eq!(
            StreamEvent::try_from_raw(&event.try_to_raw().unwrap()),
            Ok(event)
        );
        assert!(StreamEvent::DeviceSeen {
            address: vec![0; 17]
        }
        .try_to_raw()
        .is_err());
        let mut raw = StreamEvent::LinkUp.try_to_raw().unwrap();
        raw.kind = crate::codes::stream_event::DEVICE_LOST;
        raw.address_len = 1000;
        assert_eq!(
            StreamEvent::try_from_raw(&raw),
            Err(RawEventError::AddressLength(1000))
        );
    }
}
