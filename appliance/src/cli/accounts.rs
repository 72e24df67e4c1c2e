//! `concentrator accounts`: balance, state, last top-up and debt of every meter's account, read from the
//! ledger store.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use concentrator_ledger::money::format_minor;
use concentrator_ledger::{load_accounts, stored_config, SledStore};

use crate::cli::CliError;

/// Where the daemon keeps the ledger.
pub const DEFAULT_LEDGER: &str = "/var/lib/concentrator/ledger";

/// `concentrator accounts`
#[derive(Debug, clap::Args)]
pub struct AccountsArgs {
    /// The ledger store directory (the daemon must not be running: the store is locked while it runs).
    #[arg(long, default_value = DEFAULT_LEDGER)]
    pub store: PathBuf,
    /// Print one JSON object per account instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Opens an existing ledger store; a missing directory is a usage error (sled would create one).
pub fn open_existing(path: &Path) -> Result<SledStore, CliError> {
    if !path.is_dir() {
        return Err(CliError::usage(format!(
            "no ledger store at {}: give the daemon's store with --store DIR",
            path.display()
        )));
    }
    SledStore::open(path).map_err(|e| CliError::Failed(anyhow::Error::new(e)))
}

/// Runs `accounts`.
pub fn run(args: AccountsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let store = open_existing(&args.store)?;
    let accounts = load_accounts(&store).map_err(|e| CliError::Failed(anyhow::Error::new(e)))?;
    let emergency = stored_config(&store)
        .map_err(|e| CliError::Failed(anyhow::Error::new(e)))?
        .map_or(0, |c| c.emergency.amount_minor);
    if args.json {
        for a in accounts.values() {
            let line = serde_json::json!({
                "meter": a.meter_id,
                "dwelling": a.dwelling,
                "account_no": a.account_no,
                "state": a.state(emergency),
                "balance_minor": a.balance_minor(),
                "debt_minor": a.total_debt_minor(),
                "last_topup": a.last_topup,
                "register_wh": a.register.wh,
            });
            writeln!(out, "{line}").context("writing the accounts")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<14} {:<12} {:<13} {:>12} {:>10}  LAST TOP-UP",
        "METER", "DWELLING", "STATE", "BALANCE", "DEBT"
    )
    .context("writing the accounts")?;
    for a in accounts.values() {
        let last = a.last_topup.as_ref().map_or_else(
            || "-".to_string(),
            |t| format!("#{} {} at {}", t.serial, format_minor(t.amount_minor), t.at),
        );
        writeln!(
            out,
            "{:<14} {:<12} {:<13} {:>12} {:>10}  {last}",
            a.meter_id,
            a.dwelling,
            a.state(emergency).name(),
            format_minor(a.balance_minor()),
            format_minor(a.total_debt_minor()),
        )
        .context("writing the accounts")?;
    }
    writeln!(out, "{} accounts", accounts.len()).context("writing the accounts")?;
    Ok(())
}
