//! `concentrator topup --token FILE`: applies a credit token locally (for example while the uplink is
//! down). The token is verified exactly as the daemon verifies it; the signed receipt goes into the outbox
//! and reaches the head-end when the uplink is back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use concentrator_ledger::money::format_minor;
use concentrator_ledger::{Ledger, LedgerError, TopUpError};
use concentrator_security::signed::DocumentSigner;
use concentrator_security::TokenVerifier;
use openssl::pkey::PKey;
use openssl::x509::X509;

use crate::cli::accounts::{open_existing, DEFAULT_LEDGER};
use crate::cli::CliError;

/// `concentrator topup`
#[derive(Debug, clap::Args)]
pub struct TopupArgs {
    /// The token file: the signed token's octets, raw or as hex.
    #[arg(long)]
    pub token: PathBuf,
    /// The meter the token is for (refused if the token names another); default: the token's meter.
    #[arg(long)]
    pub meter: Option<String>,
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

/// The token's octets: hex if the file is hex text, else the raw bytes.
pub fn token_octets(content: &[u8]) -> Vec<u8> {
    let text: String = String::from_utf8_lossy(content)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    match hex::decode(&text) {
        Ok(bytes) if !text.is_empty() => bytes,
        _ => content.to_vec(),
    }
}

/// Runs `topup`.
pub fn run(args: TopupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let token = token_octets(&read(&args.token, "token file")?);
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
    let mut ledger =
        Ledger::open_stored(store, TokenVerifier::new(cas), signer).map_err(|e| match e {
            LedgerError::NoStoredConfig => CliError::usage(e.to_string()),
            other => CliError::Failed(anyhow::Error::new(other)),
        })?;
    let now = args.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let result = match &args.meter {
        Some(meter) => ledger.apply_token_for(meter, &token, now),
        None => ledger.apply_token(&token, now),
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
