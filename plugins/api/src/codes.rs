//! The numeric codes that travel across the boundary in place of Rust enums.
//!
//! Codes are never reused; new ones are added with a minor API version. [`crate::values`] converts them
//! to Rust enums and rejects unknown ones.

/// Driver kinds ([`crate::PluginDeclaration::kind`]).
pub mod driver_kind {
    /// A half-duplex RS485 meter driver (DL/T 645, Modbus): uses [`crate::MeterDriverVTable`].
    pub const RS485_METER: u32 = 1;
    /// A serial-stream coordinator driver (a Zigbee coordinator): uses [`crate::StreamDriverVTable`].
    pub const STREAM_COORDINATOR: u32 = 2;
    /// A modem driver (AT commands over a serial stream): uses [`crate::StreamDriverVTable`].
    pub const MODEM: u32 = 3;
}

/// Panic strategies ([`crate::PluginDeclaration::panic_strategy`]).
pub mod panic_strategy {
    /// Panics unwind and the SDK's shims catch them. The only strategy the host accepts.
    pub const UNWIND: u32 = 1;
    /// Panics abort the process; the host refuses such a plugin.
    pub const ABORT: u32 = 2;
}

/// Log levels for [`crate::LogFn`] (the `log` crate's levels).
pub mod log_level {
    /// Error.
    pub const ERROR: u32 = 1;
    /// Warning.
    pub const WARN: u32 = 2;
    /// Information.
    pub const INFO: u32 = 3;
    /// Debug.
    pub const DEBUG: u32 = 4;
    /// Trace.
    pub const TRACE: u32 = 5;
}

/// Quantity ids ([`crate::RawReading::quantity`], [`crate::RawTask::quantity`]).
pub mod quantity {
    /// Active energy imported, all tariffs.
    pub const ENERGY_IMPORT_TOTAL: u32 = 1;
    /// Active energy imported in tariff 1; tariffs 2 to 4 follow (2, 3, 4 are `+1`, `+2`, `+3`).
    pub const ENERGY_IMPORT_TARIFF_1: u32 = 2;
    /// Active energy exported, all tariffs.
    pub const ENERGY_EXPORT_TOTAL: u32 = 6;
    /// Voltage of phase A; B, C and total follow.
    pub const VOLTAGE_A: u32 = 10;
    /// Current of phase A; B, C and total follow.
    pub const CURRENT_A: u32 = 20;
    /// Active power of phase A; B, C and total follow.
    pub const ACTIVE_POWER_A: u32 = 30;
    /// The meter's own date and time.
    pub const METER_DATE_TIME: u32 = 40;
    /// The state of the meter's supply relay.
    pub const RELAY_STATE: u32 = 41;
    /// Prepaid credit left, as money.
    pub const PREPAID_REMAINING_MONEY: u32 = 50;
    /// Prepaid credit left, as energy.
    pub const PREPAID_REMAINING_ENERGY: u32 = 51;
    /// The device's own address, as [`super::value_kind::ADDRESS`] (API 1.2).
    pub const DEVICE_ADDRESS: u32 = 60;
    /// Vendor-specific quantities: this bit set, the vendor's own number in the low 31 bits.
    pub const VENDOR_BIT: u32 = 0x8000_0000;
}

/// Units ([`crate::RawReading::unit`]). Values are `mantissa × 10^exponent` of the unit.
pub mod unit {
    /// No unit (a count, a ratio).
    pub const NONE: u32 = 0;
    /// Watt-hour (active energy).
    pub const WATT_HOUR: u32 = 1;
    /// Watt (active power).
    pub const WATT: u32 = 2;
    /// Volt.
    pub const VOLT: u32 = 3;
    /// Ampere.
    pub const AMPERE: u32 = 4;
    /// Volt-ampere-reactive hour (reactive energy).
    pub const VAR_HOUR: u32 = 5;
    /// Volt-ampere-reactive (reactive power).
    pub const VAR: u32 = 6;
    /// Hertz.
    pub const HERTZ: u32 = 7;
    /// Money in the meter's currency (the exponent gives the minor unit).
    pub const CURRENCY: u32 = 8;
    /// Second.
    pub const SECOND: u32 = 9;
}

/// Value kinds ([`crate::RawReading::value_kind`]).
pub mod value_kind {
    /// A decimal number: `mantissa × 10^exponent` of `unit`.
    pub const DECIMAL: u32 = 1;
    /// A point in time: `mantissa` is Unix seconds.
    pub const TIMESTAMP: u32 = 2;
    /// A relay state: `mantissa` is a [`super::relay_state`] code.
    pub const RELAY: u32 = 3;
    /// An address (API 1.2): `exponent` bytes (1–8) of `mantissa`, most significant first, the last
    /// byte in the lowest bits.
    pub const ADDRESS: u32 = 4;
}

/// Relay states (a reading's value).
pub mod relay_state {
    /// Open: supply cut.
    pub const OPEN: u32 = 1;
    /// Closed: supply on.
    pub const CLOSED: u32 = 2;
    /// Open, but armed: closes when the customer presses the meter's button.
    pub const ARMED_FOR_CLOSE: u32 = 3;
}

/// Relay commands ([`crate::RawTask::relay`]).
pub mod relay_command {
    /// Open the relay (cut the supply).
    pub const TRIP: u32 = 1;
    /// Allow closing: the customer closes it with the meter's button.
    pub const CLOSE_ALLOWED: u32 = 2;
    /// Close the relay now.
    pub const CLOSE_DIRECT: u32 = 3;
    /// Sound or show the meter's low-credit alarm.
    pub const ALARM: u32 = 4;
    /// Keep the supply on whatever the credit (guarantee-power mode).
    pub const GUARANTEE_POWER: u32 = 5;
}

/// Task kinds ([`crate::RawTask::kind`]).
pub mod task {
    /// Read one quantity.
    pub const READ: u32 = 1;
    /// Control the relay.
    pub const RELAY: u32 = 2;
    /// Set the meter's clock.
    pub const SET_CLOCK: u32 = 3;
    /// Find the address of the one meter on a bus (a broadcast read).
    pub const DISCOVER_ADDRESS: u32 = 4;
    /// Read one record of the meter's stored interval history (API 1.3): `reserved` is the record,
    /// 1 = the newest.
    pub const READ_HISTORY: u32 = 5;
}

/// How a reply ended ([`crate::RawReply::kind`]).
pub mod reply {
    /// The driver's completion check accepted the bytes.
    pub const COMPLETE: u32 = 1;
    /// Bytes came, then the line went silent before the completion check accepted them.
    pub const SILENCE: u32 = 2;
    /// Nothing came within the timeout.
    pub const TIMEOUT: u32 = 3;
    /// The request expected no reply (a broadcast) and has been sent.
    pub const SENT: u32 = 4;
}

/// Outcomes of `finish` ([`crate::RawOutcome::kind`]).
pub mod outcome {
    /// The task is done; the readings (possibly none) are its result.
    pub const DONE: u32 = 1;
    /// The meter answered with an exception (`exception_code`, text in the message buffer).
    pub const DEVICE_EXCEPTION: u32 = 2;
    /// Another exchange is needed: the next request is in `next`; readings so far are kept.
    pub const NEED_ANOTHER_EXCHANGE: u32 = 3;
    /// The reply could not be understood (text in the message buffer).
    pub const PROTOCOL_ERROR: u32 = 4;
}

/// Stream event kinds ([`crate::RawStreamEvent::kind`]).
pub mod stream_event {
    /// A reading from a device on the stream's network (`address`, `reading`).
    pub const READING: u32 = 1;
    /// A device joined or answered (`address`).
    pub const DEVICE_SEEN: u32 = 2;
    /// A device left or stopped answering (`address`).
    pub const DEVICE_LOST: u32 = 3;
    /// The coordinator or modem is ready.
    pub const LINK_UP: u32 = 4;
    /// The coordinator or modem is not ready (reset, lost network).
    pub const LINK_DOWN: u32 = 5;
}
