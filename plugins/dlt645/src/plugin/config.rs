//! A DL/T 645 meter's settings: its packed address and the TOML fragment the host passes, checked
//! before the first exchange.

use std::time::Duration;

use concentrator_hal::LineSettings;
use concentrator_plugin_sdk::Timing;

use crate::request::{OperatorCode, Password};
use crate::timing::{default_line, exchange_timing};
use crate::Dlt645Address;

/// The keys a meter's config may hold, for error messages.
pub const KNOWN_KEYS: &str =
    "password, operator, line, reply_timeout_ms, utc_offset_minutes, relay_valid_minutes, models_dir";

/// Why a DL/T 645 meter cannot be opened with the address and config given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The address is not six BCD bytes.
    #[error("a DL/T 645 address is 6 BCD bytes, most significant first (the host packs the 12 digits \"000000000001\" as 00 00 00 00 00 01); got {given}")]
    Address {
        /// The bytes, in hex.
        given: String,
    },
    /// The broadcast address was given as a meter's own.
    #[error("999999999999 is the broadcast address, not a meter's; use the address on the meter's nameplate")]
    BroadcastAddress,
    /// The fragment is not TOML.
    #[error("the meter's config is not TOML: {0}")]
    Toml(String),
    /// A key the driver does not know.
    #[error("unknown key `{key}` in the DL/T 645 meter's config; known keys: {KNOWN_KEYS}")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A known key with a value the driver cannot use.
    #[error("`{key} = {value}` in the DL/T 645 meter's config: {fix}")]
    Value {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What to write instead.
        fix: &'static str,
    },
}

/// A meter's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The relay password, if configured (relay control needs it).
    pub password: Option<Password>,
    /// The operator code sent with controls.
    pub operator: OperatorCode,
    /// Exchange timing (preamble, reply window, wait before the next request).
    pub timing: Timing,
    /// Seconds the meter's clock is ahead of UTC (meters keep local time).
    pub utc_offset_s: i64,
    /// How long a relay command stays valid, in seconds.
    pub relay_valid_s: i64,
}

/// The meter's address from the host's packed bytes (most significant first) in wire order.
pub fn address(packed: &[u8]) -> Result<Dlt645Address, ConfigError> {
    let hex: String = packed.iter().map(|b| format!("{b:02x}")).collect();
    let bad = || ConfigError::Address {
        given: if hex.is_empty() {
            String::from("no bytes")
        } else {
            hex.clone()
        },
    };
    let bytes: [u8; 6] = packed.try_into().map_err(|_| bad())?;
    if bytes.iter().any(|&b| crate::bcd::byte_value(b).is_none()) {
        return Err(bad());
    }
    let mut wire = bytes;
    wire.reverse();
    let address = Dlt645Address(wire);
    if address.is_broadcast() {
        return Err(ConfigError::BroadcastAddress);
    }
    Ok(address)
}

fn value_error(key: &'static str, value: &toml::Value, fix: &'static str) -> ConfigError {
    ConfigError::Value {
        key,
        value: value.to_string(),
        fix,
    }
}

fn integer_in(
    key: &'static str,
    value: &toml::Value,
    range: std::ops::RangeInclusive<i64>,
    fix: &'static str,
) -> Result<i64, ConfigError> {
    value
        .as_integer()
        .filter(|n| range.contains(n))
        .ok_or_else(|| value_error(key, value, fix))
}

/// Parses the config fragment.
pub fn settings(config: &str) -> Result<Settings, ConfigError> {
    let table: toml::Table = config
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml(e.message().to_string()))?;
    let mut password = None;
    let mut operator = OperatorCode::default();
    let mut line = default_line();
    let mut reply_timeout = None;
    let mut utc_offset_s = 0;
    let mut relay_valid_s = 10 * 60;
    for (key, value) in &table {
        match key.as_str() {
            "password" => {
                const FIX: &str =
                    "write 8 hex digits, the level then the 6-digit code: \"02123456\"";
                let text = value
                    .as_str()
                    .ok_or_else(|| value_error("password", value, FIX))?;
                password = Some(
                    text.parse::<Password>()
                        .map_err(|_| value_error("password", value, FIX))?,
                );
            }
            "operator" => {
                const FIX: &str = "write 8 hex digits: \"00000001\"";
                operator = value
                    .as_str()
                    .filter(|t| t.len() == 8)
                    .and_then(|t| u32::from_str_radix(t, 16).ok())
                    .map(OperatorCode::new)
                    .ok_or_else(|| value_error("operator", value, FIX))?;
            }
            "line" => {
                line = value
                    .as_str()
                    .and_then(|text| text.parse::<LineSettings>().ok())
                    .ok_or_else(|| {
                        value_error(
                            "line",
                            value,
                            "write the baud rate and the frame format: \"2400 8E1\"",
                        )
                    })?;
            }
            "reply_timeout_ms" => {
                let ms = integer_in(
                    "reply_timeout_ms",
                    value,
                    20..=5000,
                    "give milliseconds from 20 to 5000 (the standard's window is 500)",
                )?;
                reply_timeout = Some(Duration::from_millis(ms.unsigned_abs()));
            }
            "utc_offset_minutes" => {
                utc_offset_s = 60
                    * integer_in(
                        "utc_offset_minutes",
                        value,
                        -14 * 60..=14 * 60,
                        "give the meters' clock offset from UTC in minutes, -840 to 840 (480 for China)",
                    )?;
            }
            "relay_valid_minutes" => {
                relay_valid_s = 60
                    * integer_in(
                        "relay_valid_minutes",
                        value,
                        1..=24 * 60,
                        "give minutes from 1 to 1440",
                    )?;
            }
            // The host may give every meter the Modbus models directory; it means nothing here.
            "models_dir" => {}
            other => {
                return Err(ConfigError::UnknownKey {
                    key: other.to_string(),
                })
            }
        }
    }
    let mut timing = Timing::from(&exchange_timing(&line));
    if let Some(reply_timeout) = reply_timeout {
        timing.reply_timeout = Some(reply_timeout);
    }
    Ok(Settings {
        password,
        operator,
        timing,
        utc_offset_s,
        relay_valid_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_reversed_to_wire_order() {
        let a = address(&[0, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(a.to_wire(), [1, 0, 0, 0, 0, 0]);
        assert_eq!(a.to_string(), "000000000001");
        assert!(matches!(
            address(&[0, 0, 0, 0, 0, 0x1A]),
            Err(ConfigError::Address { .. })
        ));
        assert!(matches!(address(&[7]), Err(ConfigError::Address { .. })));
        assert_eq!(address(&[0x99; 6]), Err(ConfigError::BroadcastAddress));
    }

    #[test]
    fn config_keys_are_checked() {
        let s = settings("password = \"02123456\"\noperator = \"0000000A\"\nline = \"9600 8E1\"")
            .unwrap();
        assert_eq!(s.password, Some(Password::new(2, 123_456)));
        assert_eq!(s.operator, OperatorCode::new(10));
        assert_eq!(s.timing.preamble, Some((0xFE, 4)));
        assert_eq!(s.timing.reply_timeout, Some(Duration::from_millis(500)));
        assert_eq!(s.timing.min_idle_before, Some(Duration::from_millis(20)));
        let err = settings("colour = 1").unwrap_err().to_string();
        assert!(err.starts_with("unknown key `colour`"), "{err}");
        let err = settings("password = \"12\"").unwrap_err().to_string();
        assert!(err.contains("8 hex digits"), "{err}");
        assert!(settings("line = \"fast\"").is_err());
        assert!(settings("not toml").is_err());
    }
}
