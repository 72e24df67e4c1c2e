//! Configuration changes from the head-end (the wire's configuration change, 0x88): dotted keys
//! (`gateway.log_level`) set in the daemon's configuration file, all or none.
//!
//! A change is refused whole when one key is one a remote party must not change (the uplink's broker
//! and credentials, plugin loading and its keys, the gateway's identity and store, the ledger's keys,
//! the web UI's users and keys, the modem's port, APN and PIN, buses and meters), or when the file
//! with the new values does not pass the checks `concentratord validate` makes. Otherwise the new text
//! (comments and layout kept) is written to a temporary file beside the old one, synced and renamed
//! over it, so a power cut leaves either file whole. Settings the daemon can take while it runs
//! (`gateway.log_level`) take effect at once; the others at the next restart, and the answer says so.

use std::path::{Path, PathBuf};

use concentrator_protocol::{ConfigSetting, ConfigValue};

use super::model::Config;

/// How a remote change went, in words for the head-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// Written (and applied where it can be): `key: old → new` for each, and when it takes effect.
    Changed(String),
    /// Every key already had its value: nothing was written.
    Unchanged(String),
}

/// Why a remote change was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteRefusal {
    /// A key a remote party must not change.
    #[error("{key} cannot be changed remotely: {why}")]
    Forbidden {
        /// The key.
        key: String,
        /// Why, and where it is changed instead.
        why: &'static str,
    },
    /// The key or the value is not usable: the file would not validate, or the key is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The file cannot be read or written (a temporary trouble, or the daemon runs without a file).
    #[error("{0}")]
    NotNow(String),
}

/// Keys (a whole section, or `section.key`) a remote party must not change, with the reason.
const FORBIDDEN: &[(&str, &str)] = &[
    ("uplink", "the uplink's broker, credentials and keys decide whether the gateway can reach the head-end at all; they are changed on site"),
    ("plugin", "plugin loading decides which code runs on the gateway; it is changed on site"),
    ("gateway.plugin_dir", "plugin loading decides which code runs on the gateway; it is changed on site"),
    ("gateway.trusted_keys", "the plugin signing keys decide which code runs on the gateway; they are changed on site"),
    ("gateway.plugin_owner_check", "plugin file checks decide which code runs on the gateway; they are changed on site"),
    ("gateway.id", "the gateway's identity is fixed at installation"),
    ("gateway.store", "the gateway's store (credit ledger, outbox) is fixed at installation"),
    ("ledger.config", "the ledger's rules file is changed on site; tariffs come as tariff updates (0x86)"),
    ("ledger.utility_ca", "the ledger's keys and certificates are changed on site"),
    ("ledger.gateway_key", "the ledger's keys and certificates are changed on site"),
    ("ledger.gateway_cert_chain", "the ledger's keys and certificates are changed on site"),
    ("ledger.token_inbox", "where tokens are taken from is changed on site"),
    ("web", "the installer UI's address, users and keys are changed on site"),
    ("modem.port", "the modem's port, APN and PIN decide whether the gateway can reach the head-end; they are changed on site"),
    ("modem.ppp_port", "the modem's port, APN and PIN decide whether the gateway can reach the head-end; they are changed on site"),
    ("modem.apn", "the modem's port, APN and PIN decide whether the gateway can reach the head-end; they are changed on site"),
    ("modem.pin_file", "the modem's port, APN and PIN decide whether the gateway can reach the head-end; they are changed on site"),
    ("modem.backend", "the modem's port, APN and PIN decide whether the gateway can reach the head-end; they are changed on site"),
    ("bus", "buses and meters are commissioned on site (the web UI or the configuration file)"),
    ("meter", "buses and meters are commissioned on site (the web UI or the configuration file)"),
    ("zigbee", "buses and meters are commissioned on site (the web UI or the configuration file)"),
];

/// Settings the daemon applies while it runs.
const LIVE: &[&str] = &["gateway.log_level"];

/// The configuration file the daemon was started with (`--config FILE` or `-c FILE`); `None` on the
/// built-in example.
pub fn started_with() -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "--config" | "-c" => args.get(i + 1).map(PathBuf::from),
        _ => a.strip_prefix("--config=").map(PathBuf::from),
    })
}

fn forbidden(key: &str) -> Option<&'static str> {
    FORBIDDEN
        .iter()
        .find(|(k, _)| key == *k || key.strip_prefix(k).is_some_and(|r| r.starts_with('.')))
        .map(|(_, why)| *why)
}

fn shown(v: &ConfigValue) -> String {
    match v {
        ConfigValue::Int(i) => i.to_string(),
        ConfigValue::Text(t) => format!("{t:?}"),
        ConfigValue::Bool(b) => b.to_string(),
    }
}

/// The configuration text with `settings` set, and for each `key: old → new` (only the keys whose
/// value changes). Checks the keys but not the values (see [`apply`]).
pub fn edit(
    text: &str,
    settings: &[ConfigSetting],
) -> Result<(String, Vec<String>), RemoteRefusal> {
    if settings.is_empty() {
        return Err(RemoteRefusal::Invalid(
            "the change lists no settings; send at least one key and value".into(),
        ));
    }
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| {
        RemoteRefusal::NotNow(format!(
            "the configuration file does not parse ({e}); fix it on site"
        ))
    })?;
    let mut changes = Vec::new();
    for s in settings {
        if let Some(why) = forbidden(&s.key) {
            return Err(RemoteRefusal::Forbidden {
                key: s.key.clone(),
                why,
            });
        }
        let parts: Vec<&str> = s.key.split('.').collect();
        let [section, key] = parts.as_slice() else {
            return Err(RemoteRefusal::Invalid(format!(
                "key {:?} is not SECTION.KEY (e.g. gateway.log_level)",
                s.key
            )));
        };
        if section.is_empty() || key.is_empty() {
            return Err(RemoteRefusal::Invalid(format!(
                "key {:?} is not SECTION.KEY (e.g. gateway.log_level)",
                s.key
            )));
        }
        let Some(table) = doc.get_mut(section).and_then(|t| t.as_table_like_mut()) else {
            return Err(RemoteRefusal::Invalid(format!(
                "{}: this gateway's configuration has no [{section}] table; a remote change sets keys of tables that exist",
                s.key
            )));
        };
        let mut new: toml_edit::Value = match &s.value {
            ConfigValue::Int(i) => (*i).into(),
            ConfigValue::Text(t) => t.as_str().into(),
            ConfigValue::Bool(b) => (*b).into(),
        };
        let current = table.get(key).and_then(|i| i.as_value());
        let old = current.map(|v| match v {
            toml_edit::Value::String(t) => format!("{:?}", t.value()),
            toml_edit::Value::Integer(i) => i.value().to_string(),
            toml_edit::Value::Boolean(b) => b.value().to_string(),
            other => other.clone().decorated("", "").to_string(),
        });
        let new_shown = shown(&s.value);
        if old.as_deref() == Some(new_shown.as_str()) {
            continue;
        }
        if let Some(v) = current {
            // Keep the spacing and the comment after the value.
            *new.decor_mut() = v.decor().clone();
        }
        table.insert(key, toml_edit::Item::Value(new));
        changes.push(format!(
            "{}: {} → {new_shown}",
            s.key,
            old.unwrap_or_else(|| "(not set)".into())
        ));
    }
    Ok((doc.to_string(), changes))
}

/// Applies a remote change to the configuration file at `path`: all or none, validated as
/// `concentratord validate` does, written durably, live settings applied.
pub fn apply(path: &Path, settings: &[ConfigSetting]) -> Result<RemoteOutcome, RemoteRefusal> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RemoteRefusal::NotNow(format!(
            "cannot read the configuration {}: {e}",
            path.display()
        ))
    })?;
    let (new, changes) = edit(&text, settings)?;
    if changes.is_empty() {
        let keys: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
        return Ok(RemoteOutcome::Unchanged(format!(
            "no change: {} already had these values",
            keys.join(", ")
        )));
    }
    let origin = path.display().to_string();
    let config = Config::parse_checked(&origin, &new).map_err(|e| {
        let lines: Vec<&str> = new.lines().collect();
        let why = e
            .positions()
            .into_iter()
            .map(|(line, _, message)| match lines.get(line.wrapping_sub(1)) {
                Some(l) => format!("`{}`: {message}", l.trim()),
                None => message,
            })
            .collect::<Vec<_>>()
            .join("; ");
        RemoteRefusal::Invalid(format!(
            "the configuration would not validate with these values, nothing was changed: {why}"
        ))
    })?;
    write_durably(path, &new).map_err(|e| {
        RemoteRefusal::NotNow(format!(
            "the new configuration is valid but cannot be written to {}: {e}",
            path.display()
        ))
    })?;
    let mut live = Vec::new();
    let mut later = Vec::new();
    for s in settings {
        if !changes
            .iter()
            .any(|c| c.starts_with(&format!("{}:", s.key)))
        {
            continue;
        }
        if LIVE.contains(&s.key.as_str()) {
            if s.key == "gateway.log_level" {
                log::set_max_level(config.gateway.log_level.into());
            }
            live.push(s.key.as_str());
        } else {
            later.push(s.key.as_str());
        }
    }
    let mut words = changes.join("; ");
    if !live.is_empty() {
        words.push_str(&format!("; in effect now: {}", live.join(", ")));
    }
    if !later.is_empty() {
        words.push_str(&format!("; takes effect at restart: {}", later.join(", ")));
    }
    log::info!("configuration change from the head-end: {words}");
    Ok(RemoteOutcome::Changed(words))
}

/// Writes `text` over `path`: a synced temporary file beside it, renamed over it, the directory synced.
/// The file keeps its permissions; on the appliance a symbolic link is followed to the real file.
fn write_durably(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let path = std::fs::canonicalize(path)?;
    let tmp = path.with_extension("toml.remote");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::metadata(&path)?.permissions())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: ConfigValue) -> ConfigSetting {
        ConfigSetting {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn edits_keep_comments_and_name_old_and_new_values() {
        let text =
            "# site A\n[gateway]\nid = \"gw\" # the id\nstore = \"/tmp/s\"\nlog_level = \"info\"\n";
        let (new, changes) = edit(
            text,
            &[set("gateway.log_level", ConfigValue::Text("debug".into()))],
        )
        .unwrap();
        assert!(
            new.contains("# site A") && new.contains("# the id"),
            "{new}"
        );
        assert!(new.contains("log_level = \"debug\""), "{new}");
        assert_eq!(changes, vec!["gateway.log_level: \"info\" → \"debug\""]);
    }

    #[test]
    fn forbidden_keys_and_malformed_keys_are_refused() {
        let text = "[gateway]\nid = \"gw\"\nstore = \"/tmp/s\"\n";
        for key in [
            "uplink.broker",
            "gateway.trusted_keys",
            "plugin",
            "web.users",
        ] {
            let e = edit(text, &[set(key, ConfigValue::Bool(true))]).unwrap_err();
            assert!(matches!(e, RemoteRefusal::Forbidden { .. }), "{key}: {e}");
        }
        let e = edit(text, &[set("gateway", ConfigValue::Bool(true))]).unwrap_err();
        assert!(e.to_string().contains("SECTION.KEY"), "{e}");
        let e = edit(text, &[set("modem.check_interval_s", ConfigValue::Int(5))]).unwrap_err();
        assert!(e.to_string().contains("no [modem] table"), "{e}");
    }
}
