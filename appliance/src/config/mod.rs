//! The daemon's configuration: a TOML file, parsed with the position of every value kept, and validated
//! as a whole before anything starts, so that `concentratord validate` (systemd's `ExecStartPre`)
//! reports every mistake at once as `file:line:column` with what to write instead.

mod aka;
pub mod balance;
mod diagnostic;
mod driver_checks;
mod ledger;
mod meter;
mod model;
mod modem;
mod plugins;
mod power;
pub mod remote;
mod sections;
pub mod time;
mod update;
mod uplink;
mod uplink_keys;
mod validate;
pub mod web;
pub mod zigbee;

pub use aka::{AkaFile, Credentials, MeterCredentials};
pub(crate) use diagnostic::line_col;
pub use diagnostic::{render_warnings, ConfigError, Diagnostic};
pub use ledger::{LedgerSetup, LedgerSetupError};
pub use model::{
    Backend, BusConfig, Config, DirectionMode, GatewayConfig, LedgerSection, LogLevel, MeterConfig,
    SimMeterConfig, UplinkConfig,
};
pub use modem::{
    ModemBackend, ModemDevice, ModemSection, ModemSetup, ModemSetupError, SmsConfig, SIM_PIN,
};
pub use plugins::{IsolationMode, PluginEntry};
pub use power::{PowerSection, PowerSetup};
pub use update::UpdateSection;
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

    /// Parses and validates configuration text; `origin` names it in messages. Every mistake is
    /// reported at once: unknown keys and wrong types in every section, and the checks across the
    /// whole configuration when the rest deserialises.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with(origin, text, false)
    }

    /// [`Config::parse`], and the checks the daemon makes when it starts: each meter's settings as
    /// its built-in driver reads them, and the vendor keys (see also [`Config::plugin_warnings`]). What `concentratord validate`, the daemon and the web UI's
    /// commissioning use.
    pub fn parse_checked(origin: &str, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with(origin, text, true)
    }

    fn parse_with(origin: &str, text: &str, drivers: bool) -> Result<Config, ConfigError> {
        let invalid = |diagnostics: Vec<Diagnostic>| ConfigError::Invalid {
            origin: origin.to_string(),
            text: text.to_string(),
            diagnostics: sorted(diagnostics),
        };
        let read = sections::read(text);
        let mut diagnostics = read.diagnostics;
        let Some(mut config) = read.config else {
            return Err(invalid(diagnostics));
        };
        diagnostics.extend(config.normalise_zigbee());
        diagnostics.extend(validate::check(&config));
        diagnostics.extend(web::check(&config));
        diagnostics.extend(time::check(&config));
        diagnostics.extend(balance::check(&config));
        if drivers {
            let found = driver_checks::check(&config, &diagnostics);
            diagnostics.extend(found);
        }
        if diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(invalid(diagnostics))
        }
    }

    /// What the daemon will not be able to do at start on this configuration without it being a
    /// mistake in it: a meter whose driver plugin file the loader will refuse (unsigned, changed,
    /// not root-owned, a downgrade) or that is not installed. The daemon starts, the meter is reported
    /// as failed. `concentratord validate` and the web UI show these as warnings.
    pub fn plugin_warnings(&self) -> Vec<Diagnostic> {
        driver_checks::plugin_warnings(self)
    }

    /// [`Config::load`] with [`Config::parse_checked`]'s checks.
    pub fn load_checked(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse_checked(&path.display().to_string(), &text)
    }

    /// The embedded example configuration with simulated buses.
    pub fn embedded_sim() -> Result<Config, ConfigError> {
        Self::parse(EMBEDDED_SIM_NAME, EMBEDDED_SIM_CONFIG)
    }
}

fn sorted(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    diagnostics.dedup();
    diagnostics
}
