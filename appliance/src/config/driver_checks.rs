//! The checks the daemon makes when it starts on a configuration, made before it starts: each meter's
//! settings as its built-in driver reads them (a DL/T 645 password of 7 digits, an unknown key in
//! `options`) and the vendor keys are mistakes, with their place; a plugin file the loader will
//! refuse, leaving a meter without its driver, is a warning (the daemon runs on without it).

use std::collections::BTreeMap;

use super::diagnostic::Diagnostic;
use super::model::{Config, MeterConfig};

/// Every mistake the drivers and the plugin loader would find in `config`; a meter with a mistake
/// already in `found` at its bus, address or driver is left to that one.
pub(super) fn check(config: &Config, found: &[Diagnostic]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    check_keys(config, &mut out);
    let rs485: Vec<&MeterConfig> = config
        .meters
        .iter()
        .filter(|m| !super::zigbee::is_zigbee(m))
        .filter(|m| {
            let spans = [m.bus.span(), m.address.span(), m.driver.span()];
            !found
                .iter()
                .any(|d| d.span.as_ref().is_some_and(|s| spans.contains(s)))
        })
        .collect();
    for meter in &rs485 {
        let line = config
            .buses
            .iter()
            .find(|b| b.name.get_ref() == meter.bus.get_ref())
            .and_then(|b| crate::buses::line_settings(b).ok());
        if let Some(Err(reason)) = crate::drivers::check_built_in_meter_config(meter, line) {
            let span = field_span(meter, &reason);
            out.push(
                Diagnostic::at(span, format!("the `{}` driver refuses this meter (dwelling `{}`): {reason}", meter.driver.get_ref(), meter.dwelling.get_ref()))
                    .help("correct the value in this [[meter]] table; docs/install.md lists each driver's keys"),
            );
        }
    }
    out
}

/// What the plugin loader will refuse at start that leaves a configured meter without its driver:
/// the daemon starts regardless (the other meters run; this one is reported as failed), so these are
/// warnings, not mistakes: a plugin file is the vendor's, not the configuration's.
pub(super) fn plugin_warnings(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let keys_usable = check_keys(config, &mut Vec::new());
    if keys_usable {
        let meters: Vec<&MeterConfig> = config
            .meters
            .iter()
            .filter(|m| !super::zigbee::is_zigbee(m))
            .collect();
        check_plugin_drivers(config, &meters, &mut out);
    }
    out
}

/// The field a driver's reason names, else the meter's `driver`.
fn field_span(meter: &MeterConfig, reason: &str) -> std::ops::Range<usize> {
    let named =
        |key: &str| reason.contains(&format!("`{key}")) || reason.contains(&format!("{key} "));
    if let (Some(p), true) = (&meter.password, named("password")) {
        return p.span();
    }
    if let (Some(m), true) = (&meter.model, named("model")) {
        return m.span();
    }
    if reason.contains("address") {
        return meter.address.span();
    }
    meter.driver.span()
}

/// Each vendor key must read as one: the daemon does not start otherwise. Returns whether all do.
fn check_keys(config: &Config, out: &mut Vec<Diagnostic>) -> bool {
    let mut usable = true;
    for key in &config.gateway.trusted_keys {
        if !key.get_ref().is_absolute() {
            usable = false;
            continue; // reported by validate
        }
        // As for plugin files: a key the daemon's user could replace would let it trust its own
        // plugins (the daemon may rewrite its configuration when commissioning).
        if config.gateway.plugin_owner_check {
            if let Some(why) = not_root_owned(key.get_ref()) {
                out.push(
                    Diagnostic::at(key.span(), format!("vendor key {} {why}", key.get_ref().display()))
                        .help("keep vendor keys root-owned and not writable by others: `sudo chown root: FILE && sudo chmod 644 FILE`"),
                );
                usable = false;
                continue;
            }
        }
        if let Err(e) = concentrator_plugin_host::TrustedKeys::from_pem_files(&[key.get_ref()]) {
            out.push(
                Diagnostic::at(key.span(), format!("vendor key {} cannot be used: {e}", key.get_ref().display()))
                    .help("install the vendor's public key (PEM) at this path, or remove it from `trusted_keys`"),
            );
            usable = false;
        }
    }
    usable
}

/// A meter whose driver is a plugin needs a plugin file that the daemon will accept.
fn check_plugin_drivers(config: &Config, meters: &[&MeterConfig], out: &mut Vec<Diagnostic>) {
    let Some(dir) = &config.gateway.plugin_dir else {
        return; // a driver that is not built in is reported by validate
    };
    let built_in = super::validate::BUILT_IN_DRIVERS;
    let wanted: Vec<&&MeterConfig> = meters
        .iter()
        .filter(|m| !built_in.contains(&m.driver.get_ref().as_str()))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let files = match crate::drivers::check_plugins(config) {
        Ok(files) => files,
        Err(e) => {
            out.push(
                Diagnostic::at(dir.span(), format!("no plugin can be loaded from {}: {e}", dir.get_ref().display()))
                    .help("create the directory, root-owned and not writable by group or others (`sudo install -d -o root -g root -m 755 DIR`)"),
            );
            return;
        }
    };
    let mut loadable: BTreeMap<String, String> = BTreeMap::new();
    let mut refused = Vec::new();
    for file in files {
        match file {
            Ok((name, version)) => {
                loadable.insert(name, version);
            }
            Err(reason) => refused.push(reason),
        }
    }
    for meter in wanted {
        let driver = meter.driver.get_ref();
        if loadable.contains_key(driver) {
            continue;
        }
        let help = if refused.is_empty() {
            format!("install the vendor's signed `{driver}` plugin (the .so and its .sig) in {}, or correct `driver`", dir.get_ref().display())
        } else {
            format!("files refused there: {}", refused.join("; "))
        };
        out.push(
            Diagnostic::at(
                meter.driver.span(),
                format!(
                    "no plugin named `{driver}` would load from {} (dwelling `{}`)",
                    dir.get_ref().display(),
                    meter.dwelling.get_ref()
                ),
            )
            .help(help),
        );
    }
}

/// Why `path` is not a root-owned file that only root can write, if it is not (and it exists: a
/// missing file is reported by the key check itself).
fn not_root_owned(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.uid() != 0 {
        return Some(format!("is owned by uid {}, not root", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "has mode {:o}: group or others can write it",
            meta.mode() & 0o7777
        ));
    }
    None
}
