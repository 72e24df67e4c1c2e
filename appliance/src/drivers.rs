//! The drivers the daemon runs meters with: the first-party drivers linked in (DL/T 645, Modbus) and
//! the signed plugins from `plugin_dir`, all behind the plugin host, so both are loaded, checked and
//! quarantined the same way.

use std::sync::Arc;

use concentrator_hal::LineSettings;
use concentrator_plugin_host::{
    Isolation, Plugin, PluginLoader, PluginPolicy, StaticDriver, TaskError, TrustedKeys,
    VersionStore,
};

use crate::config::{Config, MeterConfig};

/// The loaded drivers.
#[derive(Debug)]
pub struct Drivers {
    loader: PluginLoader,
}

impl Drivers {
    /// Registers the built-in drivers and loads the plugins of `config`. A plugin that is refused is
    /// logged with its reason and the others load; only a broken trusted key stops the start.
    pub fn load(config: &Config) -> Result<Drivers, String> {
        let gateway = &config.gateway;
        let trusted = trusted_keys(config)?;
        let policy = plugin_policy(config);
        let dir = gateway
            .plugin_dir
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default();
        let mut loader = PluginLoader::new(dir, trusted, policy);
        for driver in built_in() {
            match loader.register_static(driver) {
                Ok(plugin) => log::debug!(
                    "built-in driver {} {}",
                    plugin.name(),
                    plugin.info().version
                ),
                Err(e) => log::error!("built-in driver refused: {e}"),
            }
        }
        if gateway.plugin_dir.is_some() {
            match loader.load_all() {
                Ok(report) => {
                    for plugin in &report.loaded {
                        log::info!(
                            "loaded plugin {} {} ({:?})",
                            plugin.name(),
                            plugin.info().version,
                            plugin.info().origin
                        );
                    }
                    for refused in &report.refused {
                        log::error!("plugin refused: {refused}");
                    }
                }
                Err(e) => {
                    log::error!("cannot load plugins: {e}; running with the built-in drivers")
                }
            }
        }
        Ok(Drivers { loader })
    }

    /// The driver named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.loader.get(name)
    }

    /// Every driver, built-in and loaded.
    pub fn all(&self) -> &[Arc<Plugin>] {
        self.loader.plugins()
    }
}

/// The vendor keys plugins must be signed with, as `[gateway] trusted_keys` names them.
fn trusted_keys(config: &Config) -> Result<TrustedKeys, String> {
    let keys = &config.gateway.trusted_keys;
    if keys.is_empty() {
        return Ok(TrustedKeys::none());
    }
    let paths: Vec<_> = keys.iter().map(|k| k.get_ref().clone()).collect();
    TrustedKeys::from_pem_files(&paths).map_err(|e| e.to_string())
}

/// How the daemon loads plugins under `config`.
fn plugin_policy(config: &Config) -> PluginPolicy {
    let gateway = &config.gateway;
    PluginPolicy {
        max_faults: gateway.plugin_max_faults,
        require_root_owned: gateway.plugin_owner_check,
        isolation: config
            .plugins
            .iter()
            .filter_map(|p| Some((p.name.get_ref().clone(), p.child_options()?)))
            .collect(),
        versions: Some(VersionStore::new(gateway.store.join("plugin-versions"))),
        allow_downgrade: config
            .plugins
            .iter()
            .filter(|p| p.allow_downgrade)
            .map(|p| p.name.get_ref().clone())
            .collect(),
    }
}

/// A plugin file as the loader would take it: its plugin's name and version, or why it is refused.
pub type PluginFileCheck = Result<(String, String), String>;

/// The plugins the daemon would load from `plugin_dir` under `config`, checked as it checks them
/// (directory and file ownership, signature, downgrade) without loading or recording anything: each
/// file's plugin name and version, or why it would be refused. `Err`: the directory or the trusted
/// keys cannot be used at all.
pub fn check_plugins(config: &Config) -> Result<Vec<PluginFileCheck>, String> {
    let Some(dir) = &config.gateway.plugin_dir else {
        return Ok(Vec::new());
    };
    let loader = PluginLoader::new(dir.get_ref(), trusted_keys(config)?, plugin_policy(config));
    loader.check_dir().map_err(|e| e.to_string())?;
    let files = loader.candidate_files().map_err(|e| e.to_string())?;
    Ok(files
        .iter()
        .map(|f| loader.check_file(f).map_err(|e| e.to_string()))
        .collect())
}

/// Opens `meter` with its built-in driver as the daemon will at start, without a bus (sans-IO: a
/// session is opened and dropped, nothing is sent): `None` when its driver is not built in, else the
/// driver's reason for refusing the meter's address or settings.
pub fn check_built_in_meter_config(
    meter: &MeterConfig,
    line: Option<LineSettings>,
) -> Option<Result<(), String>> {
    let mut loader =
        PluginLoader::new("/nonexistent", TrustedKeys::none(), PluginPolicy::default());
    let plugin = built_in()
        .into_iter()
        .filter_map(|d| loader.register_static(d).ok())
        .find(|p| p.name() == meter.driver.get_ref())?;
    let address = match pack_address(meter.address.get_ref()) {
        Ok(address) => address,
        Err(e) => return Some(Err(e)),
    };
    Some(
        match plugin.open_meter(&address, &driver_config(meter, line, &plugin)) {
            Err(TaskError::ConfigRejected { reason, .. }) => Err(reason),
            // Anything else (a quarantined driver in a running daemon) says nothing of the settings.
            Ok(_) | Err(_) => Ok(()),
        },
    )
}

/// The drivers linked into the daemon. The only place the daemon names them: everything else reaches
/// a driver through the plugin host by its name.
fn built_in() -> [StaticDriver; 3] {
    concentrator_builtin_drivers::drivers()
}

/// Checks a built-in stream driver's configuration the way the driver will see it, by opening a
/// stream session (sans-IO: nothing is sent): `None` when `driver` is not built in, else the driver's
/// reason for refusing it.
pub fn check_built_in_stream_config(driver: &str, config: &str) -> Option<Result<(), String>> {
    let mut loader =
        PluginLoader::new("/nonexistent", TrustedKeys::none(), PluginPolicy::default());
    let plugin = built_in()
        .into_iter()
        .filter_map(|d| loader.register_static(d).ok())
        .find(|p| p.name() == driver)?;
    let clock = concentrator_hal::SystemClock::new();
    Some(match plugin.open_stream(config, &clock) {
        Ok(_) => Ok(()),
        Err(TaskError::ConfigRejected { reason, .. }) => Err(reason),
        Err(other) => Err(other.to_string()),
    })
}

/// A driver's line in the status: name, version, where it runs, its status, and what is wrong with it
/// (`acme-meter 1.2.0 (process; quarantined: until 15:32:05 UTC: 3 crashes …)`).
pub fn status_line(plugin: &Arc<Plugin>) -> String {
    let place = match plugin.isolation() {
        Isolation::Process => "process",
        Isolation::InProcess => "in-process",
    };
    let status = plugin.status();
    match plugin.problem() {
        Some(problem) if !problem.starts_with("quarantined") => format!(
            "{} {} ({place}; {status}; {problem})",
            plugin.name(),
            plugin.info().version
        ),
        _ => format!(
            "{} {} ({place}; {status})",
            plugin.name(),
            plugin.info().version
        ),
    }
}

/// Packs a meter address as the host passes it to drivers (docs/plugins.md, "Addresses"): a decimal
/// number up to 255 written with up to 3 digits is one byte (a Modbus slave id); an even number of
/// decimal digits is packed BCD in written order (`000000000001` → `00 00 00 00 00 01`); `0x` and hex
/// digits are raw bytes.
pub fn pack_address(text: &str) -> Result<Vec<u8>, String> {
    let bad = || {
        format!("`{text}` is not an address; write a slave id (`7`), 12 digits (`000000000001`) or hex bytes (`0x0A0B`)")
    };
    if let Some(hex) = text.strip_prefix("0x") {
        return hex::decode(hex).map_err(|_| bad());
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if text.len() <= 3 {
        return text.parse::<u8>().map(|b| vec![b]).map_err(|_| bad());
    }
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    Ok(text
        .as_bytes()
        .chunks(2)
        .map(|pair| ((pair[0] - b'0') << 4) | (pair[1] - b'0'))
        .collect())
}

/// The per-meter config handed to `plugin`: `model`, `password` and the `options` table, as TOML, and
/// the bus's line settings as `line` (`"9600 8N1"`) for every driver of API 1.2 or later and the
/// first-party drivers (an older plugin may refuse a key it does not know).
pub fn driver_config(meter: &MeterConfig, line: Option<LineSettings>, plugin: &Plugin) -> String {
    let mut table = meter.options.clone().unwrap_or_default();
    let api = plugin.info().api_version;
    let takes_line = (api.major, api.minor) >= (1, 2)
        || matches!(meter.driver.get_ref().as_str(), "dlt645" | "modbus");
    if let (Some(line), true) = (line, takes_line) {
        table.insert(
            "line".into(),
            toml::Value::String(format!("{} {}", line.baud, line.format())),
        );
    }
    if let Some(model) = &meter.model {
        table.insert("model".into(), toml::Value::String(model.get_ref().clone()));
    }
    if let Some(password) = &meter.password {
        table.insert(
            "password".into(),
            toml::Value::String(password.get_ref().clone()),
        );
    }
    toml::to_string(&table).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pack_as_documented() {
        assert_eq!(pack_address("7").unwrap(), vec![7]);
        assert_eq!(pack_address("247").unwrap(), vec![247]);
        assert_eq!(
            pack_address("000000000001").unwrap(),
            vec![0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            pack_address("123456789012").unwrap(),
            vec![0x12, 0x34, 0x56, 0x78, 0x90, 0x12]
        );
        assert_eq!(pack_address("0x0a0B").unwrap(), vec![0x0a, 0x0b]);
        assert!(pack_address("256").is_err());
        assert!(pack_address("12345").is_err());
        assert!(pack_address("abc").unwrap_err().contains("not an address"));
    }
}
