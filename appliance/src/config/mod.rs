//! The daemon's configuration: a TOML file, parsed with the position of every value kept, and validated
//! as a whole before anything starts, so that `concentratord validate` (systemd's `ExecStartPre`)
//! reports every mistake at once as `file:line:column` with what to write instead.

mod aka;
mod diagnostic;
mod ledger;
mod meter;
mod model;
mod modem;
mod plugins;
mod uplink;
mod uplink_keys;
mod validate;
pub mod web;
pub mod zigbee;

pub use aka::{AkaFile, Credentials, MeterCredentials};
pub(crate) use diagnostic::line_col;
pub use diagnostic::{ConfigError, Diagnostic};
pub use ledger::{LedgerSetup, LedgerSetupError};
pub use model::{
    Backend, BusConfig, Config, DirectionMode, GatewayConfig, LedgerSection, LogLevel, MeterConfig,
    SimMeterConfig, UplinkConfig,
};
pub use modem::{ModemBackend, ModemDevice, ModemSection, ModemSetup, ModemSetupError, SIM_PIN};
pub use plugins::{IsolationMode, PluginEntry};
pub use uplink::{Broker, Contexts, KeyFile, MeterKey, ScopeKey, UplinkSetup, UplinkSetupError};
pub use web::{Role, WebSection, WebSetup, WebUser};
pub use zigbee::{ZigbeeBackend, ZigbeeConfig};

use std::path::Path;

/// The example configuration with simulated buses, built into the binaries: `concentratord` with no
/// config runs on it.
pub const EMBEDDED_SIM_CONFIG: &str = include_str!("../../examples/sim.toml");

/// The name the embedded configuration goes by in messages.
pub const EMBEDDED_SIM_NAME: &str = "<embedded sim.toml>";

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates configuration text; `origin` names it in messages.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let diagnostic = Diagnostic::from_toml(&e);
            ConfigError::Invalid {
                origin: origin.to_string(),
                text: text.to_string(),
                diagnostics: vec![diagnostic],
            }
        })?;
        let mut diagnostics = config.normalise_zigbee();
        diagnostics.extend(validate::check(&config));
        diagnostics.extend(web::check(&config));
        diagnostics.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        if diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                text: text.to_string(),
                diagnostics,
            })
        }
    }

    /// The embedded example configuration with simulated buses.
    pub fn embedded_sim() -> Result<Config, ConfigError> {
        Self::parse(EMBEDDED_SIM_NAME, EMBEDDED_SIM_CONFIG)
    }
}
