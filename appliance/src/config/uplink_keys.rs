//! The `[uplink] keys` file: provisioned security contexts, the stand-in for AKA (see
//! [`super::uplink`]). Format (TOML, every table `deny_unknown_fields`):
//!
//! ```toml
//! mode = "aes"                 # or "kasumi"; default "aes"
//! valid_until = 1900000000     # unix seconds; default: ten years after the daemon starts
//! [gateway]
//! ck = "32 hex digits"
//! ik = "32 hex digits"
//! [[meter]]
//! meter = "FAST-1"             # the meter number: meter_id, else the address as written
//! tid = "3c91000000000001"     # 16 hex digits, assigned by the head-end
//! ck = "32 hex digits"
//! ik = "32 hex digits"
//! ```

use std::collections::HashSet;
use std::path::PathBuf;

use concentrator_protocol::Tid;
use concentrator_security::SecurityMode;
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Diagnostic;
use super::model::Config;
use concentrator_uplink::contexts::{KeyFile, MeterKey, ScopeKey};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    mode: Option<String>,
    valid_until: Option<u64>,
    gateway: ScopeToml,
    #[serde(default, rename = "meter")]
    meters: Vec<MeterToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeToml {
    ck: String,
    ik: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterToml {
    meter: String,
    tid: String,
    ck: String,
    ik: String,
}

fn key16(what: &str, hex_text: &str) -> Result<[u8; 16], String> {
    hex::decode(hex_text.trim())
        .ok()
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or(format!("{what} is not 32 hex digits"))
}

fn scope(what: &str, s: &ScopeToml) -> Result<ScopeKey, String> {
    Ok(ScopeKey {
        ck: key16(&format!("{what} ck"), &s.ck)?,
        ik: key16(&format!("{what} ik"), &s.ik)?,
    })
}

/// Parses key-file text (no file access; `origin` names it in messages).
pub fn parse(text: &str) -> Result<KeyFile, String> {
    let f: FileToml = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
    let mode = match f.mode.as_deref() {
        None | Some("aes") => SecurityMode::AES,
        Some("kasumi") => SecurityMode::KASUMI,
        Some(other) => return Err(format!("mode = \"{other}\": write \"aes\" or \"kasumi\"")),
    };
    let gateway = scope("[gateway]", &f.gateway)?;
    let meters = f
        .meters
        .iter()
        .map(|m| {
            let what = format!("meter `{}`", m.meter);
            let tid = hex::decode(m.tid.trim())
                .ok()
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .ok_or(format!("{what}: tid is not 16 hex digits"))?;
            Ok(MeterKey {
                meter: m.meter.clone(),
                tid: Tid(tid),
                key: scope(
                    &what,
                    &ScopeToml {
                        ck: m.ck.clone(),
                        ik: m.ik.clone(),
                    },
                )?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(KeyFile {
        mode,
        valid_until: f.valid_until,
        gateway,
        meters,
    })
}

/// Reads and checks the keys file named at `path`.
pub(super) fn load(config: &Config, path: &Spanned<PathBuf>) -> Result<KeyFile, Diagnostic> {
    let file = path.get_ref();
    let text = std::fs::read_to_string(file).map_err(|e| {
        Diagnostic::at(path.span(), format!("cannot read the uplink keys {}: {e}", file.display()))
            .help("write the path of the keys file the head-end provisioned for this gateway (docs/install.md, *Uplink keys*)")
    })?;
    let keys = parse(&text)
        .and_then(|k| check_meters(config, &k.meters).map(|()| k))
        .map_err(|e| {
            Diagnostic::at(path.span(), format!("{}: {e}", file.display()))
                .help("docs/install.md, *Uplink keys*, shows the format")
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            log::warn!(
                "the uplink keys {} can be read by other users; `chmod 600` it",
                file.display()
            );
        }
    }
    Ok(keys)
}

/// Checks that the TIDs of a key file are unique and its meters configured.
fn check_meters(config: &Config, meters: &[MeterKey]) -> Result<(), String> {
    let mut tids = HashSet::new();
    let mut names = HashSet::new();
    for m in meters {
        if !config.meters.iter().any(|c| c.ledger_id() == m.meter) {
            return Err(format!("meter `{}` is not configured (name meters by their `meter_id`, else their address as written)", m.meter));
        }
        if !tids.insert(m.tid) {
            return Err(format!(
                "TID {} is given to two meters",
                hex::encode(m.tid.0)
            ));
        }
        if !names.insert(m.meter.as_str()) {
            return Err(format!("meter `{}` is listed twice", m.meter));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn key_files_parse_and_refuse_mistakes() {
        let text = format!(
            "[gateway]\nck = \"{K}\"\nik = \"{K}\"\n[[meter]]\nmeter = \"M1\"\ntid = \"3c91000000000001\"\nck = \"{K}\"\nik = \"{K}\"\n"
        );
        let k = parse(&text).unwrap();
        assert_eq!(k.mode, SecurityMode::AES);
        assert_eq!(k.meters[0].tid.0[7], 1);
        assert!(parse(&text.replace("3c91000000000001", "3c91")).is_err());
        assert!(parse(&text.replacen(K, "zz", 1)).is_err());
        assert!(parse(&format!("mode = \"des\"\n{text}")).is_err());
        assert!(parse(&format!("extra = 1\n{text}")).is_err());
    }
}
