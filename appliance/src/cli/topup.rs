//! `concentrator topup --token FILE`: applies a credit token locally (for example while the uplink is
//! down). The token is verified exactly as the daemon verifies it; the signed receipt goes into the outbox
//! and reaches the head-end when the uplink is back.
//!
//! With `--config` the store, the CA and the gateway's key come from the daemon's configuration. While
//! the daemon runs it holds the store, so the token goes through the daemon's token inbox instead
//! (`[ledger] token_inbox`) and the command waits for the daemon's receipt.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use concentrator_ledger::money::format_minor;
use concentrator_ledger::{Ledger, LedgerError, TopUpError};
use concentrator_security::signed::DocumentSigner;
use concentrator_security::TokenVerifier;
use openssl::pkey::PKey;
use openssl::x509::X509;

use crate::cli::accounts::{open_existing, DEFAULT_LEDGER};
use crate::cli::CliError;
use crate::config::{Config, LedgerSetup};

/// `concentrator topup`
#[derive(Debug, clap::Args)]
pub struct TopupArgs {
    /// The token file: the signed token's octets, raw or as hex.
    #[arg(long)]
    pub token: PathBuf,
    /// The meter the token is for (refused if the token names another); default: the token's meter.
    #[arg(long)]
    pub meter: Option<String>,
    /// The daemon's configuration: the store, the CA and the gateway's key come from it (the options
    /// below are then ignored), and while the daemon runs the token goes through its token inbox.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With `--config` and a running daemon: how long to wait for its receipt, seconds.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    /// The ledger store directory (the daemon must not be running).
    #[arg(long, default_value = DEFAULT_LEDGER)]
    pub store: PathBuf,
    /// The utility CA certificate(s) (PEM) that head-end keys must chain to.
    #[arg(
        long = "ca",
        value_name = "PEM",
        default_value = "/etc/concentrator/utility-ca.pem"
    )]
    pub ca: Vec<PathBuf>,
    /// This gateway's certificate (PEM), for signing the receipt.
    #[arg(
        long = "gateway-cert",
        value_name = "PEM",
        default_value = "/etc/concentrator/gateway.pem"
    )]
    pub gateway_cert: PathBuf,
    /// This gateway's private key (PEM).
    #[arg(
        long = "gateway-key",
        value_name = "PEM",
        default_value = "/etc/concentrator/gateway.key"
    )]
    pub gateway_key: PathBuf,
    /// The time to verify at, unix seconds (default: now).
    #[arg(long)]
    pub now: Option<u64>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::usage(format!("cannot read the {what} {}: {e}", path.display())))
}

pub use crate::prepay::inbox::token_octets;

/// Runs `topup`.
pub fn run(args: TopupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let token = token_octets(&read(&args.token, "token file")?);
    let now = args.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    if let Some(path) = &args.config {
        return with_config(&args, path, &token, now, out);
    }
    let mut cas = Vec::new();
    for path in &args.ca {
        let pem = read(path, "utility CA certificate")?;
        cas.push(X509::from_pem(&pem).map_err(|e| {
            CliError::usage(format!("{} is not a PEM certificate: {e}", path.display()))
        })?);
    }
    let cert = X509::from_pem(&read(&args.gateway_cert, "gateway certificate")?).map_err(|e| {
        CliError::usage(format!(
            "{} is not a PEM certificate: {e}",
            args.gateway_cert.display()
        ))
    })?;
    let key =
        PKey::private_key_from_pem(&read(&args.gateway_key, "gateway key")?).map_err(|e| {
            CliError::usage(format!(
                "{} is not a PEM private key: {e}",
                args.gateway_key.display()
            ))
        })?;
    let signer = DocumentSigner::new(key, &[cert]).map_err(|e| CliError::usage(e.to_string()))?;
    let store = open_existing(&args.store)?;
    apply_local(
        store,
        TokenVerifier::new(cas),
        signer,
        &args.meter,
        &token,
        now,
        out,
    )
}

/// Applies `token` in the ledger of `store` (the daemon is not running).
fn apply_local(
    store: concentrator_ledger::SledStore,
    verifier: TokenVerifier,
    signer: DocumentSigner,
    meter: &Option<String>,
    token: &[u8],
    now: u64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut ledger = Ledger::open_stored(store, verifier, signer).map_err(|e| match e {
        LedgerError::NoStoredConfig => CliError::usage(e.to_string()),
        other => CliError::Failed(anyhow::Error::new(other)),
    })?;
    let result = match meter {
        Some(meter) => ledger.apply_token_for(meter, token, now),
        None => ledger.apply_token(token, now),
    };
    match result {
        Ok(r) => {
            writeln!(
                out,
                "applied token {} to meter {}: {} {}, balance {}; the signed receipt waits in the outbox for the head-end",
                r.receipt.serial,
                r.receipt.meter_id,
                format_minor(r.receipt.amount_minor as i64),
                String::from_utf8_lossy(&r.receipt.currency),
                format_minor(r.receipt.balance_after_minor)
            )
            .context("writing the receipt")?;
            Ok(())
        }
        Err(TopUpError::Ledger(e)) => Err(CliError::Failed(anyhow::Error::new(e))),
        Err(e) => Err(CliError::usage(e.to_string())),
    }
}

/// `--config`: the files from the daemon's configuration; through the token inbox while it runs.
fn with_config(
    args: &TopupArgs,
    path: &Path,
    token: &[u8],
    now: u64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let config = Config::load(path).map_err(|e| CliError::usage(e.to_string()))?;
    let setup = LedgerSetup::load(&config)
        .map_err(|e| CliError::usage(e.to_string()))?
        .ok_or_else(|| {
            CliError::usage(format!(
                "{} has no [ledger] table: this gateway keeps no credit accounts",
                path.display()
            ))
        })?;
    if !setup.store.is_dir() {
        return Err(CliError::usage(format!(
            "no ledger store at {}: the daemon creates it at its first start with {}",
            setup.store.display(),
            path.display()
        )));
    }
    match concentrator_ledger::SledStore::open(&setup.store) {
        Ok(store) => apply_local(
            store,
            setup.verifier,
            setup.signer,
            &args.meter,
            token,
            now,
            out,
        ),
        Err(e) if is_locked(&e.to_string()) => match &setup.inbox {
            Some(inbox) => through_inbox(inbox, token, Duration::from_secs(args.wait), out),
            None => Err(CliError::usage(format!(
                "the daemon is running and holds the store {}; set `token_inbox` in [ledger] of {} (and restart the daemon) to top up while it runs, or stop it first",
                setup.store.display(),
                path.display()
            ))),
        },
        Err(e) => Err(CliError::Failed(anyhow::Error::new(e))),
    }
}

/// Whether opening the store failed because another process (the daemon) holds its lock.
fn is_locked(message: &str) -> bool {
    message.contains("lock")
}

/// Hands `token` to the running daemon through its inbox and waits for the receipt or the refusal.
fn through_inbox(
    inbox: &Path,
    token: &[u8],
    wait: Duration,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("cli-{stamp}-{}", std::process::id());
    let temp = inbox.join(format!(".{name}.partial"));
    let file = inbox.join(format!("{name}.token"));
    std::fs::write(&temp, hex::encode(token))
        .and_then(|()| std::fs::rename(&temp, &file))
        .map_err(|e| {
            CliError::usage(format!(
                "cannot write into the daemon's token inbox {}: {e}; run as the daemon's user or root",
                inbox.display()
            ))
        })?;
    let receipt = inbox.join("done").join(format!("{name}.receipt"));
    let error = inbox.join("failed").join(format!("{name}.error"));
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if receipt.exists() {
            let octets = token_octets(&read(&receipt, "receipt")?);
            let summary = concentrator_security::signed::SignedDocument::decode(&octets)
                .ok()
                .and_then(|d| concentrator_security::receipt::Receipt::decode(&d.body).ok());
            match summary {
                Some(r) => writeln!(
                    out,
                    "the daemon applied token {} to meter {}: {} {}, balance {}; receipt {}",
                    r.serial,
                    r.meter_id,
                    format_minor(r.amount_minor as i64),
                    String::from_utf8_lossy(&r.currency),
                    format_minor(r.balance_after_minor),
                    receipt.display()
                ),
                None => writeln!(
                    out,
                    "the daemon applied the token; receipt {}",
                    receipt.display()
                ),
            }
            .context("writing the receipt")?;
            return Ok(());
        }
        if error.exists() {
            let why = std::fs::read_to_string(&error).unwrap_or_default();
            return Err(CliError::usage(format!(
                "the daemon refused the token: {}",
                why.trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CliError::usage(format!(
        "the daemon has not taken the token within {} s; it stays in {} and is applied when the daemon scans its inbox (`concentrator status` shows whether it runs)",
        wait.as_secs(),
        file.display()
    )))
}
