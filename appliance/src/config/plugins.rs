//! `[[plugin]]` tables: per driver plugin, where it runs (`isolation = "process"` or `"in-process"`), the
//! limits of its child process, and whether it may be downgraded. Plugins without a table run
//! in-process with no downgrade allowed. Built-in drivers always run in the daemon.

use std::collections::HashMap;
use std::time::Duration;

use concentrator_plugin_host::ChildOptions;
use serde::Deserialize;
use toml::Spanned;

use super::{Config, Diagnostic};

/// Where a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum IsolationMode {
    /// In the daemon's process (the default).
    #[default]
    #[serde(rename = "in-process")]
    InProcess,
    /// In a child process of its own, with a seccomp filter, no network and a memory limit.
    #[serde(rename = "process")]
    Process,
}

/// `[[plugin]]`: one driver plugin's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The plugin's declared name (what meters name as their `driver`).
    pub name: Spanned<String>,
    /// `"process"` or `"in-process"` (the default).
    #[serde(default)]
    pub isolation: IsolationMode,
    /// The child's memory limit (`RLIMIT_AS`), MiB; default 256.
    pub memory_limit_mb: Option<Spanned<u32>>,
    /// The watchdog: the longest one call into the plugin may take, ms; default 2000.
    pub call_timeout_ms: Option<Spanned<u32>>,
    /// Crashes within `crash_window_minutes` that quarantine the plugin; default 3.
    pub crash_limit: Option<Spanned<u32>>,
    /// The window for `crash_limit`, minutes; default 10.
    pub crash_window_minutes: Option<Spanned<u32>>,
    /// How long a quarantine lasts, minutes; default 60.
    pub quarantine_minutes: Option<Spanned<u32>>,
    /// Log records a second before the rest are dropped and the plugin reported as flooding; default 200.
    pub log_rate: Option<Spanned<u32>>,
    /// Load a lower version than the highest this appliance has run (default false).
    #[serde(default)]
    pub allow_downgrade: bool,
}

impl PluginEntry {
    /// The child's options, in the isolated mode.
    pub fn child_options(&self) -> Option<ChildOptions> {
        if self.isolation != IsolationMode::Process {
            return None;
        }
        let defaults = ChildOptions::default();
        let get = |v: &Option<Spanned<u32>>| v.as_ref().map(|v| u64::from(*v.get_ref()));
        Some(ChildOptions {
            memory_limit: get(&self.memory_limit_mb).map_or(defaults.memory_limit, |mb| mb << 20),
            call_deadline: get(&self.call_timeout_ms)
                .map_or(defaults.call_deadline, Duration::from_millis),
            crash_limit: self
                .crash_limit
                .as_ref()
                .map_or(defaults.crash_limit, |v| *v.get_ref()),
            crash_window: get(&self.crash_window_minutes)
                .map_or(defaults.crash_window, |m| Duration::from_secs(m * 60)),
            quarantine: get(&self.quarantine_minutes)
                .map_or(defaults.quarantine, |m| Duration::from_secs(m * 60)),
            log_rate: self
                .log_rate
                .as_ref()
                .map_or(defaults.log_rate, |v| *v.get_ref()),
            ..defaults
        })
    }
}

/// The limits' keys and their allowed ranges.
fn limits(entry: &PluginEntry) -> [(&'static str, &Option<Spanned<u32>>, u32, u32); 6] {
    [
        ("memory_limit_mb", &entry.memory_limit_mb, 16, 4096),
        ("call_timeout_ms", &entry.call_timeout_ms, 10, 60_000),
        ("crash_limit", &entry.crash_limit, 1, 100),
        ("crash_window_minutes", &entry.crash_window_minutes, 1, 1440),
        ("quarantine_minutes", &entry.quarantine_minutes, 1, 10_080),
        ("log_rate", &entry.log_rate, 1, 100_000),
    ]
}

/// Checks the `[[plugin]]` tables.
pub(crate) fn check(config: &Config, built_in: &[&str], out: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for entry in &config.plugins {
        let name = entry.name.get_ref().as_str();
        if seen.insert(name, ()).is_some() {
            out.push(
                Diagnostic::at(
                    entry.name.span(),
                    format!("plugin `{name}` has a second [[plugin]] table"),
                )
                .help("keep one table per plugin"),
            );
        }
        if built_in.contains(&name) {
            out.push(
                Diagnostic::at(entry.name.span(), format!("`{name}` is a built-in driver; it runs in the daemon and has no [[plugin]] settings"))
                    .help("remove this table; isolation applies to signed plugin files in plugin_dir"),
            );
            continue;
        }
        if config.gateway.plugin_dir.is_none() {
            out.push(
                Diagnostic::at(
                    entry.name.span(),
                    format!("plugin `{name}` is configured but no plugin directory is set"),
                )
                .help("set [gateway] plugin_dir, or remove this table"),
            );
        }
        let isolated = entry.isolation == IsolationMode::Process;
        for (key, value, min, max) in limits(entry) {
            let Some(value) = value else { continue };
            if !isolated {
                out.push(
                    Diagnostic::at(
                        value.span(),
                        format!("`{key}` applies only to a plugin in its own process"),
                    )
                    .help("add `isolation = \"process\"` to this table, or remove the key"),
                );
            } else if !(min..=max).contains(value.get_ref()) {
                out.push(
                    Diagnostic::at(
                        value.span(),
                        format!("`{key} = {}` is out of range", value.get_ref()),
                    )
                    .help(format!("write a value from {min} to {max}")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> PluginEntry {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn process_isolation_takes_the_limits_and_defaults_the_rest() {
        let e = entry("name = \"acme\"\nisolation = \"process\"\nmemory_limit_mb = 64\ncall_timeout_ms = 500\n");
        let options = e.child_options().unwrap();
        assert_eq!(options.memory_limit, 64 << 20);
        assert_eq!(options.call_deadline, Duration::from_millis(500));
        assert_eq!(options.crash_limit, ChildOptions::default().crash_limit);
        assert!(entry("name = \"acme\"").child_options().is_none());
        assert!(toml::from_str::<PluginEntry>("name = \"a\"\nisolation = \"jail\"").is_err());
    }
}
