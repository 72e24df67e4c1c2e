//! A Modbus meter's settings: its slave address and the TOML fragment the host passes, checked before
//! the first exchange. The register map is chosen here, from the built-in models or `models_dir`.

use std::path::Path;
use std::time::Duration;

use concentrator_hal::LineSettings;
use concentrator_plugin_sdk::Timing;

use crate::model::{ModelRegistry, RegisterMap};
use crate::timing::{default_line, exchange_timing, DEFAULT_REPLY_TIMEOUT};

/// The keys a meter's config may hold, for error messages.
pub const KNOWN_KEYS: &str = "model, models_dir, line, reply_timeout_ms";

/// Why a Modbus meter cannot be opened with the address and config given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The address is not one byte from 1 to 247.
    #[error("a Modbus address is one byte, the slave id 1 to 247 (the host packs \"7\" as 07); got {given}")]
    Address {
        /// The bytes, in hex.
        given: String,
    },
    /// The fragment is not TOML.
    #[error("the meter's config is not TOML: {0}")]
    Toml(String),
    /// A key the driver does not know.
    #[error("unknown key `{key}` in the Modbus meter's config; known keys: {KNOWN_KEYS}")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A known key with a value the driver cannot use.
    #[error("`{key} = {value}` in the Modbus meter's config: {fix}")]
    Value {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What to write instead.
        fix: &'static str,
    },
    /// No `model` key.
    #[error("the Modbus meter's config has no `model`; set it to one of: {known}")]
    NoModel {
        /// The models available.
        known: String,
    },
    /// A model that neither the built-in maps nor `models_dir` define.
    #[error("model `{model}` is not known; known models: {known} (add a map file to `models_dir` for another)")]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// The models available.
        known: String,
    },
    /// A register map that cannot be used.
    #[error("register maps: {0}")]
    Map(String),
}

/// A meter's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The meter's register map.
    pub map: RegisterMap,
    /// Exchange timing (the 3.5-character silence before a request, the reply timeout).
    pub timing: Timing,
}

/// The slave id from the host's packed address.
pub fn slave(packed: &[u8]) -> Result<u8, ConfigError> {
    match packed {
        [slave @ 1..=247] => Ok(*slave),
        other => Err(ConfigError::Address {
            given: if other.is_empty() {
                String::from("no bytes")
            } else {
                other.iter().map(|b| format!("{b:02x}")).collect()
            },
        }),
    }
}

fn value_error(key: &'static str, value: &toml::Value, fix: &'static str) -> ConfigError {
    ConfigError::Value {
        key,
        value: value.to_string(),
        fix,
    }
}

fn known(registry: &ModelRegistry) -> String {
    registry.models().collect::<Vec<_>>().join(", ")
}

/// Parses the config fragment and picks the register map.
pub fn settings(config: &str) -> Result<Settings, ConfigError> {
    let table: toml::Table = config
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml(e.message().to_string()))?;
    let mut model = None;
    let mut models_dir = None;
    let mut line = default_line();
    let mut reply_timeout = DEFAULT_REPLY_TIMEOUT;
    for (key, value) in &table {
        match key.as_str() {
            "model" => {
                model = Some(value.as_str().ok_or_else(|| {
                    value_error(
                        "model",
                        value,
                        "write the model's name as a string: \"sdm630\"",
                    )
                })?);
            }
            "models_dir" => {
                models_dir = Some(value.as_str().ok_or_else(|| {
                    value_error(
                        "models_dir",
                        value,
                        "write the directory of register-map files as a string",
                    )
                })?);
            }
            "line" => {
                line = value
                    .as_str()
                    .and_then(|text| text.parse::<LineSettings>().ok())
                    .ok_or_else(|| {
                        value_error(
                            "line",
                            value,
                            "write the baud rate and the frame format: \"9600 8N1\"",
                        )
                    })?;
            }
            "reply_timeout_ms" => {
                let ms = value
                    .as_integer()
                    .filter(|ms| (1..=5000).contains(ms))
                    .ok_or_else(|| {
                        value_error(
                            "reply_timeout_ms",
                            value,
                            "give milliseconds from 1 to 5000",
                        )
                    })?;
                reply_timeout = Duration::from_millis(ms.unsigned_abs());
            }
            other => {
                return Err(ConfigError::UnknownKey {
                    key: other.to_string(),
                })
            }
        }
    }
    let mut registry = ModelRegistry::builtin().map_err(|e| ConfigError::Map(e.to_string()))?;
    if let Some(dir) = models_dir {
        registry
            .load_dir(Path::new(dir))
            .map_err(|e| ConfigError::Map(e.to_string()))?;
    }
    let model = model.ok_or_else(|| ConfigError::NoModel {
        known: known(&registry),
    })?;
    let map = registry
        .get(model)
        .cloned()
        .ok_or_else(|| ConfigError::UnknownModel {
            model: model.to_string(),
            known: known(&registry),
        })?;
    Ok(Settings {
        map,
        timing: Timing::from(&exchange_timing(&line, reply_timeout)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_keys_are_checked() {
        assert_eq!(slave(&[7]), Ok(7));
        assert!(matches!(slave(&[0]), Err(ConfigError::Address { .. })));
        assert!(matches!(slave(&[1, 2]), Err(ConfigError::Address { .. })));
        let s = settings("model = \"sdm630\"\nline = \"38400 8N1\"").unwrap();
        assert_eq!(s.map.model, "sdm630");
        assert_eq!(s.timing.preamble, None);
        assert_eq!(s.timing.min_idle_before, Some(Duration::from_micros(1750)));
        assert_eq!(s.timing.reply_timeout, Some(DEFAULT_REPLY_TIMEOUT));
        let err = settings("model = \"sdm630\"\npassword = \"02000000\"")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown key `password`"), "{err}");
        let err = settings("").unwrap_err().to_string();
        assert!(err.contains("dds238, sdm120, sdm630"), "{err}");
        let err = settings("model = \"acme\"").unwrap_err().to_string();
        assert!(err.starts_with("model `acme` is not known"), "{err}");
        assert!(settings("model = \"sdm630\"\nmodels_dir = \"/nonexistent\"").is_err());
    }
}
