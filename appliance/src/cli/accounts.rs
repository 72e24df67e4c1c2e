//! `concentrator accounts`: balance, state, last top-up and debt of every meter's account. While the
//! daemon runs it holds the ledger store, so the accounts come from it through its control socket (the
//! `status` operation, as the web UI reads them); otherwise from the store itself. Times are local.

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
    /// The ledger store directory (`ledger/` in the daemon's store). While the daemon runs, the accounts
    /// come from it through its control socket (`control.sock` beside the ledger directory).
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

/// Refuses a directory that holds no ledger: sled would create an empty one inside it (the daemon's
/// own store directory, given by mistake, would get a second, empty database).
fn holds_ledger(path: &Path) -> Result<(), CliError> {
    if !path.is_dir() || (path.join("db").exists() && path.join("conf").exists()) {
        return Ok(()); // a missing directory is open_existing's to report
    }
    let inside = path.join("ledger");
    let hint = if inside.join("db").exists() {
        format!("the ledger is in {0}: write --store {0}", inside.display())
    } else {
        "give the `ledger` directory inside the daemon's store ([gateway] store)".to_string()
    };
    Err(CliError::usage(format!(
        "{} holds no ledger (no `db` and `conf` files), and nothing was created there; {hint}",
        path.display()
    )))
}

/// The accounts from the running daemon, when one answers on the control socket beside `store`.
fn from_daemon(store: &Path) -> Option<crate::status::Status> {
    let socket = crate::control::socket_path(store.parent()?);
    if !socket.exists() {
        return None;
    }
    let v = crate::control::request(
        &socket,
        "status",
        serde_json::Value::Null,
        crate::control::IO_TIMEOUT,
    )
    .ok()?;
    serde_json::from_value(v).ok()
}

fn render_daemon(
    status: &crate::status::Status,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if json {
        for (meter, a) in &status.accounts {
            let line = serde_json::json!({
                "meter": meter,
                "dwelling": a.dwelling,
                "state": a.state,
                "balance_minor": a.balance_minor,
                "currency": a.currency,
                "debt_minor": a.debt_minor,
                "held_by": a.held_by,
                "last_topup": a.last_topup_unix.map(|at| serde_json::json!({"serial": a.last_serial, "amount_minor": a.last_topup_minor, "at": at})),
            });
            writeln!(out, "{line}").context("writing the accounts")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<14} {:<12} {:<13} {:>14} {:>10}  LAST TOP-UP",
        "METER", "DWELLING", "STATE", "BALANCE", "DEBT"
    )
    .context("writing the accounts")?;
    for (meter, a) in &status.accounts {
        let last = match (a.last_serial, a.last_topup_minor, a.last_topup_unix) {
            (Some(serial), Some(amount), Some(at)) => format!(
                "#{serial} {} {} on {}",
                format_minor(amount),
                a.currency,
                local_time(at)
            ),
            _ => "-".to_string(),
        };
        let state = match &a.held_by {
            Some(by) => format!("{} (held off by {by})", a.state),
            None => a.state.clone(),
        };
        writeln!(
            out,
            "{:<14} {:<12} {:<13} {:>14} {:>10}  {last}",
            meter,
            a.dwelling,
            state,
            format!("{} {}", format_minor(a.balance_minor), a.currency),
            format_minor(a.debt_minor),
        )
        .context("writing the accounts")?;
    }
    writeln!(
        out,
        "{} accounts (from the running daemon)",
        status.accounts.len()
    )
    .context("writing the accounts")?;
    Ok(())
}

use concentrator_mpc::human::local_time;

/// Runs `accounts`.
pub fn run(args: AccountsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(status) = from_daemon(&args.store) {
        return render_daemon(&status, args.json, out);
    }
    holds_ledger(&args.store)?;
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
            |t| {
                format!(
                    "#{} {} on {}",
                    t.serial,
                    format_minor(t.amount_minor),
                    local_time(t.at)
                )
            },
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
