//! `concentrator audit verify|export`: checks the ledger's hash-chained audit log (and recomputes every
//! account from it), optionally against an outside anchor (the head the head-end recorded), or writes it
//! out as JSON lines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use concentrator_ledger::anchor::{self, AuditAnchor};
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
        /// The chain's outside anchor, `LEN:HEXHEAD` (entries and the hash of the last), as the head-end
        /// prints it for this gateway: the log must reach it. Without it, a log with entries cut off the
        /// end verifies as a whole one would.
        #[arg(long, value_name = "LEN:HEXHEAD")]
        anchor: Option<String>,
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
        AuditCommand::Verify { store, anchor } => {
            let anchor = anchor
                .map(|a| {
                    AuditAnchor::parse(&a).map_err(|e| CliError::usage(format!("--anchor: {e}")))
                })
                .transpose()?;
            let store = open_existing(&store)?;
            let failed = |e| CliError::Failed(anyhow::Error::new(e));
            let report = check::check_store(&store).map_err(failed)?;
            let reach = match &anchor {
                Some(a) => {
                    anchor::check_against(&store, &report.audit, a).map_err(failed)?;
                    format!("it reaches the anchor {} entries", a.len)
                }
                None => "no anchor given (--anchor LEN:HEXHEAD), so entries cut off the end would not show".to_string(),
            };
            writeln!(
                out,
                "audit log OK: {} entries, head {}; {reach}; {} meters recomputed from the log match their accounts",
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
