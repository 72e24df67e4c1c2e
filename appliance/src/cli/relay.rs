//! `concentrator relay METER open|close`: an installer's relay test through the running daemon's
//! ledger (its relay authority, never around it), answered with the state read back from the meter.
//! The order lands in the ledger's audit log as "installer NAME".

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use super::CliError;
use crate::config::Config;
use crate::control::{self, ControlError};

/// What to do with the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Supply off (held off until closed again).
    Open,
    /// Supply on, if the credit rules allow.
    Close,
}

/// `concentrator relay`
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// The meter number (as `concentrator accounts` lists it).
    pub meter: String,
    /// `open` (supply off) or `close` (supply on).
    #[arg(value_enum)]
    pub action: Action,
    /// Who orders it, for the audit log; default: the login name ($SUDO_USER, else $USER, else the user id).
    #[arg(long)]
    pub by: Option<String>,
    /// The daemon's configuration (to find its control socket in the store directory).
    #[arg(
        long,
        short,
        default_value = "/etc/concentrator/concentrator.toml",
        conflicts_with = "socket"
    )]
    pub config: PathBuf,
    /// The daemon's control socket instead.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// Who runs this command, as the audit log names installers.
pub fn installer_name(by: Option<&str>) -> String {
    let name = by
        .map(str::to_string)
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.is_empty())
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
    format!("installer {name}")
}

/// Runs `concentrator relay`.
pub fn run(args: RelayArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => {
            let config = Config::load(&args.config).map_err(|e| CliError::usage(e.to_string()))?;
            control::socket_path(&config.gateway.store)
        }
    };
    let action = match args.action {
        Action::Open => "open",
        Action::Close => "close",
    };
    let by = installer_name(args.by.as_deref());
    // The read-back waits for the meter's bus: longer than the socket's usual answer time.
    let wait = crate::ops::RELAY_WAIT + std::time::Duration::from_secs(5);
    let answer = control::request(
        &socket,
        "ledger.relay",
        json!({"meter": args.meter, "action": action, "by": by}),
        wait,
    )
    .map_err(|e| match e {
        ControlError::Refused(why) => CliError::Failed(anyhow::anyhow!(why)),
        other => CliError::Failed(anyhow::anyhow!(other)),
    })?;
    let read_back = answer["read_back"].as_str().unwrap_or("unknown");
    writeln!(
        out,
        "meter {}: relay ordered {action} by {by}; read back from the meter: {read_back}",
        args.meter
    )
    .context("writing")?;
    if (action == "open") != (read_back == "open" || read_back == "armed") {
        return Err(CliError::Failed(anyhow::anyhow!(
            "meter {}: the relay reads back {read_back} after `{action}`; check the meter's relay (or its breaker) on site",
            args.meter
        )));
    }
    Ok(())
}
