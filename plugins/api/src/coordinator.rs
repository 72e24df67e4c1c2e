//! The coordinator API (API 1.2): what a daemon and any stream coordinator driver (Zigbee, or another
//! mesh) say to each other through the stream table's `command` and `poll_notice` entries, as typed
//! values with one JSON encoding defined here, so the daemon never parses one vendor's notices.
//!
//! - Commands ([`CommandRequest`]: the host's id and a [`CoordinatorCommand`]): load the stored device
//!   records, permit joining, remove a device, a relay command, a read of quantities. A driver may accept
//!   its own further `op`s beside these (the ZNP driver's ZCL commands); the host sends only these.
//! - Events ([`CoordinatorEvent`]): the coordinator up, a device joined, interviewed, updated (its
//!   record to persist), left, and the outcome of each command. Readings a device reports by itself are
//!   `StreamEvent::Reading`s, typed by the C ABI already.
//! - [`DeviceAddress`]: the address value type, 1–16 bytes, written as hex most significant first
//!   (a Zigbee IEEE address is 8 bytes: `00124b0001a2b3c4`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::values::{Reading, RelayCommand};
use crate::RawReading;

/// A device's address: 1–16 bytes, most significant first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddress {
    len: u8,
    bytes: [u8; 16],
}

impl DeviceAddress {
    /// An address of 1–16 bytes.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || bytes.len() > 16 {
            return None;
        }
        let mut out = [0u8; 16];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(DeviceAddress {
            len: bytes.len() as u8,
            bytes: out,
        })
    }

    /// An 8-byte address (a Zigbee IEEE address) from its number.
    pub fn from_u64(value: u64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&value.to_be_bytes());
        DeviceAddress { len: 8, bytes }
    }

    /// The number of an address of at most 8 bytes.
    pub fn to_u64(self) -> Option<u64> {
        (self.len <= 8).then(|| {
            self.as_bytes()
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        })
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_bytes()
            .iter()
            .try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceAddress({self})")
    }
}

impl std::str::FromStr for DeviceAddress {
    type Err = String;

    /// Hex digits, two per byte, optionally with `:` or `-` between bytes and a `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("`{s}` is not a device address: write 2 to 32 hex digits, most significant first (00124b0001a2b3c4)")
        };
        let digits: String = s
            .trim()
            .trim_start_matches("0x")
            .chars()
            .filter(|c| *c != ':' && *c != '-')
            .collect();
        if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.is_ascii() {
            return Err(bad());
        }
        let bytes: Result<Vec<u8>, _> = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
            .collect();
        DeviceAddress::new(&bytes.map_err(|_| bad())?).ok_or_else(bad)
    }
}

impl Serialize for DeviceAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DeviceAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the daemon knows of one device, and keeps for the driver: the fields any Zigbee stack has,
/// and the driver's own `record` (opaque to the daemon), handed back at start with `load_devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its address.
    pub device: DeviceAddress,
    /// Its network (short) address, when it has one.
    #[serde(default)]
    pub network_address: Option<u16>,
    /// Its endpoints.
    #[serde(default)]
    pub endpoints: Vec<u8>,
    /// The server clusters on its endpoints.
    #[serde(default)]
    pub clusters: Vec<u16>,
    /// Whether the driver has finished asking it what it is.
    #[serde(default)]
    pub interviewed: bool,
    /// The driver's own record of it.
    #[serde(default)]
    pub record: serde_json::Value,
}

/// A command for the coordinator or a device behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CoordinatorCommand {
    /// The device records the daemon stored (at start).
    LoadDevices {
        /// The records.
        devices: Vec<DeviceInfo>,
    },
    /// Open the network for joining for 1–254 seconds (0 closes it).
    PermitJoin {
        /// Seconds.
        seconds: u8,
    },
    /// Ask a device to leave and forget it.
    Remove {
        /// The device.
        device: DeviceAddress,
    },
    /// A command for a meter's supply (the relay codes of the C ABI: 1 trip, 2 close allowed, 3 close
    /// directly, 4 alarm, 5 guarantee power).
    Relay {
        /// The meter.
        device: DeviceAddress,
        /// The relay command's code.
        relay: u32,
    },
    /// Read quantities (their names, as `relay-state`) from a meter.
    Read {
        /// The meter.
        device: DeviceAddress,
        /// The quantities.
        quantities: Vec<String>,
    },
}

impl CoordinatorCommand {
    /// A relay command.
    pub fn relay(device: DeviceAddress, command: RelayCommand) -> Self {
        CoordinatorCommand::Relay {
            device,
            relay: command.to_raw(),
        }
    }
}

/// A command with the host's id, echoed in the event that ends it: `{"id": 7, "op": "permit_join", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The host's id.
    pub id: u64,
    /// The command.
    #[serde(flatten)]
    pub command: CoordinatorCommand,
}

impl CommandRequest {
    /// As JSON, for `command`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From JSON; `Err` for anything that is not one of these commands.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// A reading as it travels in JSON: the C ABI's raw fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReading {
    /// The quantity code.
    pub quantity: u32,
    /// The value kind code.
    pub kind: u32,
    /// The mantissa (or code).
    pub mantissa: i64,
    /// The exponent.
    pub exponent: i32,
    /// The unit code.
    pub unit: u32,
}

impl From<Reading> for WireReading {
    fn from(r: Reading) -> Self {
        let raw = r.to_raw();
        WireReading {
            quantity: raw.quantity,
            kind: raw.value_kind,
            mantissa: raw.mantissa,
            exponent: raw.exponent,
            unit: raw.unit,
        }
    }
}

impl WireReading {
    /// The checked reading.
    pub fn to_reading(self) -> Result<Reading, String> {
        Reading::try_from_raw(&RawReading {
            quantity: self.quantity,
            value_kind: self.kind,
            mantissa: self.mantissa,
            exponent: self.exponent,
            unit: self.unit,
        })
        .map_err(|e| e.to_string())
    }
}

/// Something the coordinator driver tells the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CoordinatorEvent {
    /// The coordinator is up.
    LinkUp {
        /// Its own address.
        coordinator: DeviceAddress,
        /// Its firmware.
        firmware: String,
        /// Whether it restored a network formed before (rather than forming one now).
        restored: bool,
    },
    /// A device joined (or announced itself again).
    Joined {
        /// The device.
        device: DeviceAddress,
    },
    /// The driver finished asking a device what it is.
    Interviewed {
        /// The device.
        device: DeviceAddress,
    },
    /// A device's record changed: store it.
    Updated {
        /// The record.
        info: DeviceInfo,
    },
    /// A device left the network: forget it.
    Left {
        /// The device.
        device: DeviceAddress,
    },
    /// A command was carried out.
    CommandDone {
        /// The command's id.
        id: u64,
        /// Readings it produced (a `read`, the relay state after a `relay`).
        #[serde(default)]
        readings: Vec<WireReading>,
        /// The driver's own account of it (for its own `op`s).
        #[serde(default)]
        detail: Option<serde_json::Value>,
    },
    /// The device answered that it will not do it: a healthy device saying no.
    CommandRefused {
        /// The command's id.
        id: u64,
        /// The device's status code.
        code: u32,
        /// Its meaning.
        text: String,
    },
    /// The command could not be carried out (not delivered, no answer, not supported).
    CommandFailed {
        /// The command's id.
        id: u64,
        /// Why.
        reason: String,
    },
}

impl CoordinatorEvent {
    /// As JSON, for `poll_notice`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From JSON; `Err` for text that is not one of these events.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Quantity, RelayState, Value};

    #[test]
    fn addresses_read_and_write_as_hex() {
        let a: DeviceAddress = "00:12:4b:00:01:a2:b3:c4".parse().unwrap();
        assert_eq!(a.to_string(), "00124b0001a2b3c4");
        assert_eq!(a.to_u64(), Some(0x0012_4b00_01a2_b3c4));
        assert_eq!(DeviceAddress::from_u64(0x0012_4b00_01a2_b3c4), a);
        assert!("123".parse::<DeviceAddress>().is_err());
        assert!("zz"
            .parse::<DeviceAddress>()
            .unwrap_err()
            .contains("hex digits"));
        assert!(DeviceAddress::new(&[0; 17]).is_none());
    }

    #[test]
    fn commands_and_events_round_trip_as_json() {
        let device = DeviceAddress::from_u64(1);
        let request = CommandRequest {
            id: 7,
            command: CoordinatorCommand::relay(device, RelayCommand::Trip),
        };
        let text = request.to_json();
        assert_eq!(
            text,
            r#"{"id":7,"op":"relay","device":"0000000000000001","relay":1}"#
        );
        assert_eq!(CommandRequest::from_json(&text).unwrap(), request);
        assert!(
            CommandRequest::from_json(r#"{"id":1,"op":"read","device":"01","cluster":1794}"#)
                .is_err()
        );

        let reading = Reading::new(Quantity::RelayState, Value::Relay(RelayState::Open));
        let event = CoordinatorEvent::CommandDone {
            id: 7,
            readings: vec![reading.into()],
            detail: None,
        };
        let back = CoordinatorEvent::from_json(&event.to_json()).unwrap();
        let CoordinatorEvent::CommandDone { readings, .. } = back else {
            panic!("{back:?}");
        };
        assert_eq!(readings[0].to_reading().unwrap(), reading);
    }
}

#[cfg(test)]
mod address_reading_tests {
    use super::*;
    use crate::values::{Quantity, Value};

    #[test]
    fn an_address_reading_crosses_the_abi_and_a_bad_length_is_refused() {
        let address: DeviceAddress = "201800001234".parse().unwrap();
        let reading = Reading::new(Quantity::DeviceAddress, Value::Address(address));
        let raw = reading.to_raw();
        assert_eq!((raw.exponent, raw.mantissa), (6, 0x2018_0000_1234));
        assert_eq!(Reading::try_from_raw(&raw).unwrap(), reading);
        assert_eq!(reading.to_string(), "device-address = address 201800001234");
        let mut bad = raw;
        bad.exponent = 9;
        assert!(Reading::try_from_raw(&bad).is_err());
        assert_eq!(
            "device-address".parse::<Quantity>(),
            Ok(Quantity::DeviceAddress)
        );
    }
}
