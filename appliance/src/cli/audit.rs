//! `concentrator audit verify|export`: checks the ledger's hash-chained audit log (and recomputes every
//! account from it), or writes it out as JSON lines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use concentrator_ledger::{audit, check};

use crate::cli::accounts::{open_existing, DEFAULT_LEDGER};
use crate::cli::CliError;

/// `concentrator audit …`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain, recompute every balance from the log and compare with the accounts.
    Verify {
        /// The ledger store directory (the daemon must not be running).
        #[arg(long, default_value = DEFAULT_LEDGER)]
        store: PathBuf,
    },
    /// Write every entry as one JSON object per line (verifying the chain on the way).
    Export {
        /// The ledger store directory (the daemon must not be running).
        #[arg(long, default_value = DEFAULT_LEDGER)]
        store: PathBuf,
    },
}

/// Runs an `audit` subcommand.
pub fn run(command: AuditCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        AuditCommand::Verify { store } => {
            let store = open_existing(&store)?;
            let report =
                check::check_store(&store).map_err(|e| CliError::Failed(anyhow::Error::new(e)))?;
            writeln!(
                out,
                "audit log OK: {} entries, head {}; {} meters recomputed from the log match their accounts",
                report.audit.entries,
                report.audit.head_hash,
                report.meters.len()
            )
            .context("writing the report")?;
            Ok(())
        }
        AuditCommand::Export { store } => {
            let store = open_existing(&store)?;
            audit::export(&store, out).map_err(|e| CliError::Failed(anyhow::Error::new(e)))?;
            Ok(())
        }
    }
}
