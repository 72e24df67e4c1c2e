//! The `[ledger]` table: loading the ledger's own TOML (tariff, credit rules, relay policy) and the PKI
//! files it names, with every mistake reported as a diagnostic at the key that names the file, and the
//! file's own mistakes as `file:line:column`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use concentrator_ledger::LedgerConfig;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::TokenVerifier;
use openssl::pkey::PKey;
use openssl::x509::X509;
use toml::Spanned;

use super::diagnostic::{line_col, Diagnostic};
use super::model::{Config, LedgerSection};

/// Everything the daemon needs to run the ledger, loaded and checked.
#[derive(Debug)]
pub struct LedgerSetup {
    /// Tariff and rules (with `gateway_id` = `[gateway] id` unless the file names it).
    pub config: LedgerConfig,
    /// Verifies token signatures against the utility CA(s).
    pub verifier: TokenVerifier,
    /// Signs receipts with the gateway's key.
    pub signer: DocumentSigner,
    /// The ledger's sled store: `ledger/` in `[gateway] store`.
    pub store: PathBuf,
    /// How often a register is committed as a charge checkpoint.
    pub checkpoint: Duration,
    /// The token inbox, if configured.
    pub inbox: Option<PathBuf>,
    /// Accounts missing from the store are restored from the head-end (`restore = "headend"`).
    pub restore_from_headend: bool,
    /// Seconds of audit log kept in the store once the head-end has confirmed an anchor.
    pub audit_online_s: u64,
    /// Where archived audit entries go, and the budget of that directory.
    pub archive: concentrator_ledger::archive::ArchivePolicy,
}

/// `[ledger] restore`: `Ok(true)` for the head-end, `Ok(false)` for none; the default follows `[uplink]`.
fn restore_mode(config: &Config, s: &LedgerSection) -> Result<bool, Diagnostic> {
    let Some(value) = &s.restore else {
        return Ok(config.uplink.is_some());
    };
    match value.get_ref().as_str() {
        "headend" if config.uplink.is_none() => Err(Diagnostic::at(
            value.span(),
            "restore = \"headend\" but there is no [uplink] to reach the head-end",
        )
        .help("configure [uplink], or write `restore = \"none\"` (accounts missing from the store open at `opening_balance_minor`)")),
        "headend" => Ok(true),
        "none" => Ok(false),
        other => Err(Diagnostic::at(
            value.span(),
            format!("restore = {other:?} is not a restore source"),
        )
        .help("write `restore = \"headend\"` (ask the head-end for a lost account's state; needs [uplink]) or `restore = \"none\"`")),
    }
}

/// The `[ledger]` files can no longer be loaded (they changed after validation).
#[derive(Debug, thiserror::Error)]
#[error("the [ledger] table cannot be used: {}", .problems.join("; "))]
pub struct LedgerSetupError {
    /// Each problem, with the file and the fix.
    pub problems: Vec<String>,
}

impl LedgerSetup {
    /// Loads the `[ledger]` table of a (validated) configuration; `Ok(None)` without one.
    pub fn load(config: &Config) -> Result<Option<LedgerSetup>, LedgerSetupError> {
        let Some(section) = &config.ledger else {
            return Ok(None);
        };
        load_section(config, section)
            .map(Some)
            .map_err(|d| LedgerSetupError {
                problems: d.iter().map(Diagnostic::summary).collect(),
            })
    }
}

/// The diagnostics of the `[ledger]` table (empty when it is usable or absent).
pub(super) fn check(config: &Config) -> Vec<Diagnostic> {
    match &config.ledger {
        Some(section) => load_section(config, section).err().unwrap_or_default(),
        None => Vec::new(),
    }
}

fn load_section(config: &Config, s: &LedgerSection) -> Result<LedgerSetup, Vec<Diagnostic>> {
    let mut out = Vec::new();
    if *s.checkpoint_s.get_ref() == 0 {
        out.push(
            Diagnostic::at(s.checkpoint_s.span(), "a checkpoint interval of 0 s")
                .help("write `checkpoint_s = 3600` (hourly, the default); charges come from the register, so any interval charges the same energy"),
        );
    }
    let restore = restore_mode(config, s).map_err(|d| out.push(d));
    let ledger = ledger_config(config.gateway.id.get_ref(), &s.config).map_err(|d| out.push(d));
    let cas = read_certs(&s.utility_ca, "the utility CA certificate(s)").map_err(|d| out.push(d));
    let chain = read_certs(&s.gateway_cert_chain, "the gateway's certificate chain")
        .map_err(|d| out.push(d));
    let key = read(&s.gateway_key, "the gateway's private key").and_then(|pem| {
        PKey::private_key_from_pem(&pem).map_err(|e| {
            Diagnostic::at(s.gateway_key.span(), format!("{} is not a PEM private key: {e}", s.gateway_key.get_ref().display()))
                .help("give the gateway's device key (PEM, `-----BEGIN PRIVATE KEY-----` or `EC PRIVATE KEY`)")
        })
    });
    let key = key.map_err(|d| out.push(d));
    let signer = match (key, &chain) {
        (Ok(key), Ok(chain)) => DocumentSigner::new(key, chain)
            .map_err(|e| {
                out.push(
                    Diagnostic::at(s.gateway_cert_chain.span(), format!("the gateway's key and certificate chain do not go together: {e}"))
                        .help("put the gateway's own certificate first, then intermediates, and give the key of that certificate"),
                )
            })
            .ok(),
        _ => None,
    };
    match (ledger, cas, signer) {
        (Ok(ledger), Ok(cas), Some(signer)) if out.is_empty() => Ok(LedgerSetup {
            config: ledger,
            verifier: TokenVerifier::new(cas),
            signer,
            store: config.gateway.store.join("ledger"),
            checkpoint: Duration::from_secs(u64::from(*s.checkpoint_s.get_ref())),
            inbox: s.token_inbox.as_ref().map(|p| p.get_ref().clone()),
            restore_from_headend: restore.unwrap_or(false),
            audit_online_s: u64::from(s.audit_online_days) * 86_400,
            archive: concentrator_ledger::archive::ArchivePolicy {
                dir: (s.audit_archive_mib > 0).then(|| {
                    s.audit_archive_dir.as_ref().map_or_else(
                        || config.gateway.store.join("audit-archive"),
                        |d| d.get_ref().clone(),
                    )
                }),
                keep_bytes: u64::from(s.audit_archive_mib) * 1024 * 1024,
                ..Default::default()
            },
        }),
        _ => Err(out),
    }
}

fn read(path: &Spanned<PathBuf>, what: &str) -> Result<Vec<u8>, Diagnostic> {
    std::fs::read(path.get_ref()).map_err(|e| {
        Diagnostic::at(path.span(), format!("cannot read {what} {}: {e}", path.get_ref().display()))
            .help("write the file's path (relative paths are relative to the daemon's working directory); `concentrator demo init DIR` makes a throwaway set for trying the daemon out")
    })
}

fn read_certs(path: &Spanned<PathBuf>, what: &str) -> Result<Vec<X509>, Diagnostic> {
    let pem = read(path, what)?;
    match X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(Diagnostic::at(
            path.span(),
            format!("{} holds no certificate", path.get_ref().display()),
        )
        .help(format!(
            "give a PEM file with {what} (`-----BEGIN CERTIFICATE-----`)"
        ))),
        Err(e) => Err(Diagnostic::at(
            path.span(),
            format!(
                "{} is not a PEM certificate file: {e}",
                path.get_ref().display()
            ),
        )
        .help(format!("give a PEM file with {what}"))),
    }
}

/// Parses the ledger's TOML. `gateway_id` defaults to the gateway's id; a different one is refused
/// (receipts would name another gateway).
fn ledger_config(gateway_id: &str, path: &Spanned<PathBuf>) -> Result<LedgerConfig, Diagnostic> {
    let text = String::from_utf8(read(path, "the ledger configuration")?).map_err(|_| {
        Diagnostic::at(
            path.span(),
            format!("{} is not UTF-8 text", path.get_ref().display()),
        )
    })?;
    let file = path.get_ref();
    let table: toml::Table = toml::from_str(&text).map_err(|e| nested(path, file, &text, &e, 0))?;
    let parsed = match table.get("gateway_id") {
        Some(toml::Value::String(id)) if id != gateway_id => {
            return Err(Diagnostic::at(
                path.span(),
                format!("{}: gateway_id = \"{id}\" but [gateway] id = \"{gateway_id}\"", file.display()),
            )
            .help("remove `gateway_id` from the ledger file (the gateway's id is used) or make them the same"));
        }
        Some(_) => {
            toml::from_str::<LedgerConfig>(&text).map_err(|e| nested(path, file, &text, &e, 0))
        }
        None => {
            let prefix = format!(
                "gateway_id = {}\n",
                toml::Value::String(gateway_id.to_string())
            );
            toml::from_str::<LedgerConfig>(&format!("{prefix}{text}"))
                .map_err(|e| nested(path, file, &text, &e, prefix.len()))
        }
    }?;
    parsed.validate().map_err(|e| {
        Diagnostic::at(path.span(), format!("{}: {e}", file.display()))
            .help("docs/ledger.md explains each rule; appliance/examples/prepaid-ledger.toml is a complete example")
    })?;
    Ok(parsed)
}

/// A mistake inside the ledger file, reported at the key naming the file, with its own line and column.
fn nested(
    key: &Spanned<PathBuf>,
    file: &Path,
    text: &str,
    e: &toml::de::Error,
    shift: usize,
) -> Diagnostic {
    let place = match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start.saturating_sub(shift));
            format!("{}:{line}:{col}", file.display())
        }
        None => file.display().to_string(),
    };
    Diagnostic::at(key.span(), format!("{place}: {}", e.message().trim())).help(
        "fix the ledger file; appliance/examples/prepaid-ledger.toml lists every key with an example",
    )
}
