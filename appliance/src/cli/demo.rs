//! `concentrator demo`: a throwaway utility PKI and credit tokens for trying prepayment on simulated
//! meters (`appliance/examples/prepaid-sim.toml`) without a head-end.
//!
//! `demo init DIR` writes a fresh utility CA, a head-end key that signs tokens and a gateway key that
//! signs receipts (the ledger crate's test PKI, generated now; nothing secret is shipped). `demo token`
//! signs a token with that head-end key and writes it (as hex) where you say, typically into the
//! daemon's token inbox. These keys are for demonstrations and tests only: a real gateway gets its keys
//! and the utility CA from the head-end (docs/install.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use concentrator_ledger::testkit::TestPki;

use crate::cli::CliError;

/// `concentrator demo ...`
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Write a throwaway utility CA, head-end and gateway keys into DIR (ca.pem, head-end.pem/.key,
    /// gateway.pem/.key).
    Init {
        /// The directory to write (created if needed; existing files are replaced).
        dir: PathBuf,
    },
    /// Sign a credit token with the demo head-end key and write it as hex.
    Token {
        /// The directory written by `demo init`.
        #[arg(long)]
        pki: PathBuf,
        /// The meter number the token is for (`meter_id`, else the meter's address).
        #[arg(long)]
        meter: String,
        /// The token's serial: per meter, each new token needs a higher one.
        #[arg(long)]
        serial: u64,
        /// The amount in minor units (cents).
        #[arg(long)]
        amount_minor: u64,
        /// Where to write it, e.g. `target/demo-prepaid/inbox/METER-000001.token` (written under a
        /// temporary name and renamed, so a watching daemon never reads half of it).
        #[arg(long)]
        out: PathBuf,
    },
}

use concentrator_protocol::unix_now;

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Runs `demo`.
pub fn run(command: DemoCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        DemoCommand::Init { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let pki = TestPki::generate().map_err(|e| CliError::Failed(e.into()))?;
            pki.save(&dir).map_err(|e| CliError::Failed(e.into()))?;
            writeln!(
                out,
                "wrote a throwaway utility CA ({0}/ca.pem), head-end key ({0}/head-end.pem, .key) and gateway key ({0}/gateway.pem, .key); for demonstrations only",
                dir.display()
            )
            .context("writing")?;
            Ok(())
        }
        DemoCommand::Token {
            pki,
            meter,
            serial,
            amount_minor,
            out: path,
        } => {
            let keys = TestPki::load(&pki).map_err(|e| {
                CliError::usage(format!(
                    "{e}; run `concentrator demo init {}` first",
                    pki.display()
                ))
            })?;
            let now = unix_now();
            let token = keys
                .token(
                    &meter,
                    serial,
                    amount_minor,
                    now.saturating_sub(60),
                    now + 30 * 86_400,
                )
                .map_err(|e| CliError::usage(e.to_string()))?;
            write_whole(&path, format!("{}\n", hex::encode(token)).as_bytes())?;
            writeln!(
                out,
                "token {serial} for meter {meter}, {amount_minor} minor units, written to {}",
                path.display()
            )
            .context("writing")?;
            Ok(())
        }
    }
}
