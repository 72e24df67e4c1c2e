//! The `[uplink] aka` file: the subscriber credentials the gateway runs AKA with (docs/protocol.md,
//! *Attach, AKA and security mode over MQTT*), for itself and on each meter's behalf. Format (TOML,
//! every table `deny_unknown_fields`; keep it `chmod 600`):
//!
//! ```toml
//! home_network_key_id = 1
//! profile = "b"                      # SUCI profile: "a" X25519 or "b" P-256
//! home_network_public_key = "02ab…"  # hex: 32 octets (a) or 33 compressed (b)
//! modes = ["aes", "kasumi"]          # pairs this gateway offers, preferred first
//! [gateway]
//! imsi = "001010000000001"           # 6–15 digits
//! k = "000102…0f"                    # 32 hex digits
//! opc = "…"                          # 32 hex digits
//! [[meter]]
//! meter = "MTR-103"                  # the meter number: meter_id, else the address as written
//! imsi = "001010000000103"
//! k = "…"
//! opc = "…"
//! ```
//!
//! Every mistake is reported as `FILE:LINE:COLUMN: what` with what to write instead.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use concentrator_security::suci::{self, Profile};
use concentrator_security::SecurityMode;
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::{line_col, Diagnostic};
use super::model::Config;

pub use concentrator_uplink::contexts::{AkaFile, Credentials, MeterCredentials};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    home_network_key_id: Spanned<i64>,
    profile: Spanned<String>,
    home_network_public_key: Spanned<String>,
    modes: Option<Spanned<Vec<Spanned<String>>>>,
    gateway: SubscriberToml,
    #[serde(default, rename = "meter")]
    meters: Vec<MeterToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriberToml {
    imsi: Spanned<String>,
    k: Spanned<String>,
    opc: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterToml {
    meter: Spanned<String>,
    imsi: Spanned<String>,
    k: Spanned<String>,
    opc: Spanned<String>,
}

/// A mistake in the file: where (byte range), what, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkaMistake {
    /// Byte range in the file.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: String,
}

fn mistake(span: Range<usize>, message: impl Into<String>, help: impl Into<String>) -> AkaMistake {
    AkaMistake {
        span: Some(span),
        message: message.into(),
        help: help.into(),
    }
}

fn key16(field: &str, v: &Spanned<String>, out: &mut Vec<AkaMistake>) -> Option<[u8; 16]> {
    let text = v.get_ref().trim();
    match hex::decode(text) {
        Ok(b) => match <[u8; 16]>::try_from(b.as_slice()) {
            Ok(k) => Some(k),
            Err(_) => {
                out.push(mistake(
                    v.span(),
                    format!("`{field}` is {} octets, not 16", b.len()),
                    format!("write `{field}` as 32 hex digits (16 octets), as the utility's SIM data gives it"),
                ));
                None
            }
        },
        Err(e) => {
            out.push(mistake(
                v.span(),
                format!("`{field}` is not hex: {e}"),
                format!("write `{field}` as 32 hex digits (0-9, a-f)"),
            ));
            None
        }
    }
}

fn imsi(v: &Spanned<String>, out: &mut Vec<AkaMistake>) -> Option<String> {
    let s = v.get_ref();
    if (6..=15).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit()) {
        Some(s.clone())
    } else {
        out.push(mistake(
            v.span(),
            format!("imsi `{s}` is not 6 to 15 digits"),
            "write the subscriber's IMSI, digits only (MCC, MNC and MSIN), e.g. \"001010000000103\"",
        ));
        None
    }
}

fn credentials(
    i: &Spanned<String>,
    k: &Spanned<String>,
    opc: &Spanned<String>,
    out: &mut Vec<AkaMistake>,
) -> Option<Credentials> {
    let imsi = imsi(i, out);
    let k = key16("k", k, out);
    let opc = key16("opc", opc, out);
    Some(Credentials {
        imsi: imsi?,
        k: k?,
        opc: opc?,
    })
}

/// Parses the file's text and checks it against the configured meters (`meter_ok` says whether a meter
/// number is configured). No file access.
pub fn parse(text: &str, meter_ok: &dyn Fn(&str) -> bool) -> Result<AkaFile, Vec<AkaMistake>> {
    let f: FileToml = toml::from_str(text).map_err(|e| {
        let d = Diagnostic::from_toml(&e);
        vec![AkaMistake {
            span: d.span,
            message: d.message,
            help: d
                .help
                .unwrap_or_else(|| "docs/install.md, *AKA credentials*, shows the format".into()),
        }]
    })?;
    let mut out = Vec::new();
    let key_id = match u8::try_from(*f.home_network_key_id.get_ref()) {
        Ok(id) => Some(id),
        Err(_) => {
            out.push(mistake(
                f.home_network_key_id.span(),
                format!(
                    "home_network_key_id {} is not 0..=255",
                    f.home_network_key_id.get_ref()
                ),
                "write the key id the head-end publishes with its public key (0 to 255)",
            ));
            None
        }
    };
    let profile = match f.profile.get_ref().as_str() {
        "a" | "A" => Some(Profile::A),
        "b" | "B" => Some(Profile::B),
        other => {
            out.push(mistake(
                f.profile.span(),
                format!("profile \"{other}\" is not a SUCI profile"),
                "write profile = \"a\" (X25519) or \"b\" (P-256), as the head-end's key is",
            ));
            None
        }
    };
    let pk_span = f.home_network_public_key.span();
    let pk = match hex::decode(f.home_network_public_key.get_ref().trim()) {
        Ok(b) => Some(b),
        Err(e) => {
            out.push(mistake(
                pk_span.clone(),
                format!("home_network_public_key is not hex: {e}"),
                "write the head-end's public key in hex: 64 digits (profile a) or 66 digits, compressed (profile b)",
            ));
            None
        }
    };
    if let (Some(profile), Some(pk)) = (profile, &pk) {
        let want = profile.public_key_len();
        if pk.len() != want {
            out.push(mistake(
                pk_span.clone(),
                format!(
                    "home_network_public_key is {} octets; profile {profile:?} needs {want}",
                    pk.len()
                ),
                format!("write the head-end's {want}-octet public key ({} hex digits), or the profile its key is for", 2 * want),
            ));
        } else if let Err(e) = suci::conceal(profile, pk, &[0x10]) {
            out.push(mistake(
                pk_span.clone(),
                format!("home_network_public_key cannot be used: {e}"),
                "copy the key again from the head-end's published key file",
            ));
        }
    }
    let modes = match &f.modes {
        None => vec![SecurityMode::AES, SecurityMode::KASUMI],
        Some(list) => {
            let mut modes = Vec::new();
            for m in list.get_ref() {
                match m.get_ref().as_str() {
                    "aes" => modes.push(SecurityMode::AES),
                    "kasumi" => modes.push(SecurityMode::KASUMI),
                    other => out.push(mistake(
                        m.span(),
                        format!("mode \"{other}\" is not an algorithm pair"),
                        "write \"aes\" (128-EIA2/EEA2) or \"kasumi\" (UIA1/UEA1)",
                    )),
                }
            }
            if list.get_ref().is_empty() {
                out.push(mistake(
                    list.span(),
                    "modes is empty: no security mode could be agreed",
                    "write modes = [\"aes\", \"kasumi\"] or leave the key out",
                ));
            }
            modes.dedup();
            modes
        }
    };
    let gateway = credentials(&f.gateway.imsi, &f.gateway.k, &f.gateway.opc, &mut out);
    let mut imsis: HashMap<String, String> = HashMap::new();
    imsis.insert(f.gateway.imsi.get_ref().clone(), "[gateway]".into());
    let mut meters = Vec::new();
    let mut names = HashMap::new();
    for m in &f.meters {
        let name = m.meter.get_ref();
        if !meter_ok(name) {
            out.push(mistake(
                m.meter.span(),
                format!("meter `{name}` is not configured"),
                "name a [[meter]] of the configuration by its meter_id (else its address as written), or remove this entry",
            ));
        }
        if names.insert(name.clone(), ()).is_some() {
            out.push(mistake(
                m.meter.span(),
                format!("meter `{name}` is listed twice"),
                "keep one [[meter]] entry per meter",
            ));
        }
        if let Some(c) = credentials(&m.imsi, &m.k, &m.opc, &mut out) {
            if let Some(first) = imsis.insert(c.imsi.clone(), format!("meter `{name}`")) {
                out.push(mistake(
                    m.imsi.span(),
                    format!("imsi {} is also given to {first}", c.imsi),
                    "every subscriber has its own IMSI; copy this meter's from the utility's SIM data",
                ));
            }
            meters.push(MeterCredentials {
                meter: name.clone(),
                credentials: c,
            });
        }
    }
    match (key_id, profile, pk, gateway) {
        (Some(key_id), Some(profile), Some(pk), Some(gateway)) if out.is_empty() => Ok(AkaFile {
            key_id,
            profile,
            home_network_public_key: pk,
            modes,
            gateway,
            meters,
        }),
        _ => Err(out),
    }
}

/// Renders a mistake as `FILE:LINE:COLUMN: what`.
pub fn locate(file: &Path, text: &str, m: &AkaMistake) -> String {
    match &m.span {
        Some(s) => {
            let (line, col) = line_col(text, s.start);
            format!("{}:{line}:{col}: {}", file.display(), m.message)
        }
        None => format!("{}: {}", file.display(), m.message),
    }
}

/// Reads and checks the `aka` file named at `path` (its mistakes reported at the `aka` key of the
/// configuration, each with its own place in the file).
pub(super) fn load(config: &Config, path: &Spanned<PathBuf>) -> Result<AkaFile, Vec<Diagnostic>> {
    let file = path.get_ref();
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![Diagnostic::at(path.span(), format!("cannot read the AKA credentials {}: {e}", file.display()))
            .help("write the path of the credentials file the utility provisioned for this gateway (docs/install.md, *AKA credentials*)")]
    })?;
    let meter_ok = |m: &str| config.meters.iter().any(|c| c.ledger_id() == m);
    let aka = parse(&text, &meter_ok).map_err(|ms| {
        ms.iter()
            .map(|m| Diagnostic::at(path.span(), locate(file, &text, m)).help(m.help.clone()))
            .collect::<Vec<_>>()
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            log::warn!(
                "the AKA credentials {} can be read by other users; `chmod 600` it",
                file.display()
            );
        }
    }
    Ok(aka)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "000102030405060708090a0b0c0d0e0f";
    const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
    // A P-256 point (the generator), compressed.
    const PK: &str = "036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";

    fn file(extra: &str) -> String {
        format!(
            "home_network_key_id = 1\nprofile = \"b\"\nhome_network_public_key = \"{PK}\"\n{extra}\n[gateway]\nimsi = \"001010000000001\"\nk = \"{K}\"\nopc = \"{OPC}\"\n[[meter]]\nmeter = \"M1\"\nimsi = \"001010000000103\"\nk = \"{K}\"\nopc = \"{OPC}\"\n"
        )
    }

    fn ok(m: &str) -> bool {
        m == "M1" || m == "M2"
    }

    fn first(text: &str) -> (usize, usize, String) {
        let ms = parse(text, &ok).unwrap_err();
        let m = &ms[0];
        let (l, c) = line_col(text, m.span.clone().unwrap().start);
        (l, c, m.message.clone())
    }

    #[test]
    fn a_good_file_parses_with_default_modes() {
        let a = parse(&file(""), &ok).unwrap();
        assert_eq!(a.profile, Profile::B);
        assert_eq!(a.modes, vec![SecurityMode::AES, SecurityMode::KASUMI]);
        assert_eq!(a.meters[0].credentials.k[15], 0x0f);
        let a = parse(&file("modes = [\"kasumi\"]"), &ok).unwrap();
        assert_eq!(a.modes, vec![SecurityMode::KASUMI]);
    }

    #[test]
    fn mistakes_are_located() {
        let t = file("").replacen(&format!("k = \"{K}\""), "k = \"zz\"", 1);
        let (l, c, m) = first(&t);
        assert_eq!((l, c), (7, 5));
        assert!(m.contains("not hex"), "{m}");
        let t = file("").replacen(&format!("opc = \"{OPC}\""), "opc = \"0011\"", 1);
        let (l, _, m) = first(&t);
        assert_eq!(l, 8);
        assert!(m.contains("2 octets, not 16"), "{m}");
        let (l, _, m) = first(&file("").replace("meter = \"M1\"", "meter = \"M9\""));
        assert_eq!(l, 10);
        assert!(m.contains("`M9` is not configured"), "{m}");
        let (l, _, m) = first(&file("").replace("000000103", "000000001"));
        assert_eq!(l, 11);
        assert!(m.contains("also given to [gateway]"), "{m}");
        let (l, _, m) = first(&file("colour = 1"));
        assert_eq!(l, 4);
        assert!(m.contains("unknown field"), "{m}");
        let (l, _, m) = first(&file("").replace("profile = \"b\"", "profile = \"a\""));
        assert_eq!(l, 3);
        assert!(m.contains("33 octets; profile A needs 32"), "{m}");
        let (l, _, _) = first(&file("").replace("001010000000001", "0010"));
        assert_eq!(l, 6);
        let (l, _, m) = first(&file("modes = [\"des\"]"));
        assert_eq!(l, 4);
        assert!(m.contains("\"des\""), "{m}");
    }
}
