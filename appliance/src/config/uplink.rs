//! The `[uplink]` table: the broker address, the TLS files (read and parsed as PEM at validate time) and
//! the provisioned security contexts (`keys`), each mistake reported at the key that names it.
//!
//! **The keys file is the provisioning stand-in until AKA runs.** The protocol seals every message in the
//! security context of its scope (the gateway's own, or a meter's by TID), which AKA with the head-end
//! will establish. Until the head-end issue builds AKA, the contexts (TID, CK, IK per meter, and the
//! gateway's CK, IK) are provisioned in a TOML file that the head-end holds too; no key is built in.

use std::path::PathBuf;

use concentrator_uplink::mqtt::{Limits, TlsIdentity};
use openssl::pkey::PKey;
use openssl::x509::X509;
use toml::Spanned;

use super::diagnostic::Diagnostic;
use super::model::{Config, UplinkConfig};

/// The broker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address (must match the broker's certificate with TLS).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://` (always, except loopback tests).
    pub tls: bool,
}

pub use concentrator_uplink::contexts::{KeyFile, MeterKey, ScopeKey};

/// Where the security contexts come from: provisioned (`keys`) or AKA with the head-end (`aka`).
#[derive(Debug, Clone)]
pub enum Contexts {
    /// The provisioned contexts of the `keys` file.
    Keys(KeyFile),
    /// The subscriber credentials of the `aka` file.
    Aka(super::aka::AkaFile),
}

/// Everything the daemon needs to run the uplink, loaded and checked.
#[derive(Debug, Clone)]
pub struct UplinkSetup {
    /// Where to connect.
    pub broker: Broker,
    /// The TLS material (`None` only for `mqtt://` on loopback).
    pub tls: Option<TlsIdentity>,
    /// Where the security contexts come from.
    pub contexts: Contexts,
    /// The outbox bound.
    pub limits: Limits,
    /// Least time between two account summaries of a meter whose balance changes, seconds.
    pub account_every_s: u64,
}

/// The `[uplink]` files can no longer be loaded (they changed after validation).
#[derive(Debug, thiserror::Error)]
#[error("the [uplink] table cannot be used: {}; fix the files it names and run `concentratord validate`", .problems.join("; "))]
pub struct UplinkSetupError {
    /// Each problem, with the file and the fix.
    pub problems: Vec<String>,
}

impl UplinkSetup {
    /// Loads the `[uplink]` table of a (validated) configuration; `Ok(None)` without one.
    pub fn load(config: &Config) -> Result<Option<UplinkSetup>, UplinkSetupError> {
        let Some(section) = &config.uplink else {
            return Ok(None);
        };
        load_section(config, section)
            .map(Some)
            .map_err(|d| UplinkSetupError {
                problems: d.iter().map(Diagnostic::summary).collect(),
            })
    }
}

/// The diagnostics of the `[uplink]` table (empty when it is usable or absent).
pub(super) fn check(config: &Config) -> Vec<Diagnostic> {
    match &config.uplink {
        Some(section) => load_section(config, section).err().unwrap_or_default(),
        None => Vec::new(),
    }
}

/// Parses `mqtts://HOST[:PORT]` or `mqtt://HOST:PORT`.
pub fn parse_broker(url: &str) -> Result<Broker, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(format!("`{url}` is not a broker address"));
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(format!("`{url}`: no `]`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(format!("`{url}`: `{p}` is not a port"))?,
        None if tls => 8883,
        None => 1883,
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("`{url}` names no host"));
    }
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
    })
}

fn loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn load_section(config: &Config, s: &UplinkConfig) -> Result<UplinkSetup, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let broker = match parse_broker(s.broker.get_ref()) {
        Ok(b) if !b.tls && !loopback(&b.host) => {
            out.push(Diagnostic::at(s.broker.span(), format!("`{}` would send meter data without TLS", s.broker.get_ref()))
                .help(format!("write `broker = \"mqtts://{}:8883\"`; `mqtt://` is only for tests with a broker on this machine (127.0.0.1)", b.host)));
            None
        }
        Ok(b) => Some(b),
        Err(e) => {
            out.push(Diagnostic::at(s.broker.span(), e).help(
                "write `mqtts://HOST:8883` (TLS) or `mqtt://127.0.0.1:1883` (loopback tests only)",
            ));
            None
        }
    };
    let tls = match &broker {
        Some(b) if b.tls => tls_identity(s, &mut out),
        _ => None,
    };
    if *s.outbox_mib.get_ref() == 0 {
        out.push(
            Diagnostic::at(
                s.outbox_mib.span(),
                "an outbox of 0 MiB would drop every reading",
            )
            .help("write `outbox_mib = 64` (the default: days of readings from 1 000 meters)"),
        );
    }
    let contexts = match (&s.keys, &s.aka) {
        (Some(_), Some(aka)) => {
            out.push(Diagnostic::at(aka.span(), "both `keys` and `aka` are given: the security contexts come from one of them")
                .help("keep `aka` (the gateway runs AKA with the head-end) and remove `keys`, or the other way round for provisioned contexts"));
            None
        }
        (Some(path), None) => super::uplink_keys::load(config, path)
            .map_err(|d| out.push(d))
            .ok()
            .map(Contexts::Keys),
        (None, Some(path)) => super::aka::load(config, path)
            .map_err(|d| out.extend(d))
            .ok()
            .map(Contexts::Aka),
        (None, None) => {
            out.push(Diagnostic::at(s.broker.span(), "the uplink has no security contexts: every message is sealed and could not be sent")
                .help("add `aka = \"/var/lib/concentrator/secrets/aka.toml\"` (AKA with the head-end, docs/install.md, *AKA credentials*) or `keys = \"/etc/concentrator/uplink-keys.toml\"` (provisioned contexts, *Uplink keys*)"));
            None
        }
    };
    match (broker, contexts) {
        (Some(broker), Some(contexts)) if out.is_empty() => Ok(UplinkSetup {
            broker,
            tls,
            contexts,
            limits: Limits {
                max_bytes: u64::from(*s.outbox_mib.get_ref()) * 1024 * 1024,
                ..Limits::default()
            },
            account_every_s: *s.account_every_s.get_ref(),
        }),
        _ => Err(out),
    }
}

fn tls_identity(s: &UplinkConfig, out: &mut Vec<Diagnostic>) -> Option<TlsIdentity> {
    let file = |p: &Option<Spanned<PathBuf>>, key: &str, what: &str, out: &mut Vec<Diagnostic>| {
        match p {
            Some(p) => match std::fs::read(p.get_ref()) {
                Ok(b) => Some((p.clone(), b)),
                Err(e) => {
                    out.push(Diagnostic::at(p.span(), format!("cannot read {what} {}: {e}", p.get_ref().display()))
                    .help("write the file's path; the installer puts the gateway's files in /etc/concentrator/"));
                    None
                }
            },
            None => {
                out.push(
                    Diagnostic::at(s.broker.span(), format!("`mqtts://` needs {what}")).help(
                        format!("add `{key} = \"/etc/concentrator/{key}.pem\"` to [uplink]"),
                    ),
                );
                None
            }
        }
    };
    let ca = file(&s.ca, "ca", "the utility CA certificate", out);
    let cert = file(&s.cert, "cert", "the gateway's client certificate", out);
    let key = file(&s.key, "key", "the gateway's private key", out);
    let mut ok = true;
    for (f, what) in [
        (&ca, "the utility CA"),
        (&cert, "the gateway's certificate"),
    ] {
        if let Some((p, pem)) = f {
            if !X509::stack_from_pem(pem).is_ok_and(|c| !c.is_empty()) {
                ok = false;
                out.push(
                    Diagnostic::at(
                        p.span(),
                        format!("{} holds no PEM certificate", p.get_ref().display()),
                    )
                    .help(format!(
                        "give a PEM file with {what} (`-----BEGIN CERTIFICATE-----`)"
                    )),
                );
            }
        }
    }
    if let Some((p, pem)) = &key {
        if let Err(e) = PKey::private_key_from_pem(pem) {
            ok = false;
            out.push(Diagnostic::at(p.span(), format!("{} is not a PEM private key: {e}", p.get_ref().display()))
                .help("give the gateway's TLS key (PEM, `-----BEGIN PRIVATE KEY-----` or `EC PRIVATE KEY`)"));
        }
    }
    let (Some((_, ca_pem)), Some((cert_path, cert_pem)), Some((_, key_pem))) = (ca, cert, key)
    else {
        return None;
    };
    let identity = TlsIdentity {
        ca_pem,
        cert_pem,
        key_pem,
    };
    if ok {
        if let Err(e) = identity.connector() {
            out.push(
                Diagnostic::at(cert_path.span(), e.to_string())
                    .help("`cert` and `key` must be the same gateway's certificate and its key"),
            );
            return None;
        }
    }
    ok.then_some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse() {
        let b = parse_broker("mqtts://broker.example").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.example", 8883, true)
        );
        let b = parse_broker("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 1884, false));
        let b = parse_broker("mqtts://[::1]:9").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 9));
        assert!(parse_broker("tcp://x:1").is_err());
        assert!(parse_broker("mqtts://:1").is_err());
        assert!(parse_broker("mqtts://x:0").is_err());
        assert!(loopback("localhost") && loopback("::1") && !loopback("10.0.0.1"));
    }
}
