//! `concentrator zigbee permit-join|devices|remove`: pairing and removing Zigbee meters while the daemon
//! runs, through its control socket (`control.sock` in the store directory; see [`crate::control`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::CliError;
use crate::config::Config;
use crate::control::{self, ControlError};

/// How long the CLI waits for the daemon's answer (a permit-join waits for the coordinator).
const ANSWER_WITHIN: Duration = Duration::from_secs(40);

/// Subcommands of `concentrator zigbee`.
#[derive(Debug, clap::Subcommand)]
pub enum ZigbeeCommand {
    /// Open the Zigbee network so that a new meter can join (then power the meter up or press its
    /// pairing button).
    PermitJoin {
        /// How long joining stays open, 1 to 254 seconds (0 closes it now).
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        #[command(flatten)]
        target: Target,
    },
    /// The devices each coordinator knows: IEEE and network address, endpoints, clusters, the meter
    /// they are mapped to, and when they were last heard.
    Devices {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a device to leave the network; the daemon forgets it.
    Remove {
        /// The device's IEEE address (16 hex digits, as `devices` shows it).
        ieee: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which daemon and coordinator.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The daemon's configuration (to find its control socket in the store directory).
    #[arg(
        long,
        short,
        default_value = "/etc/concentrator/concentrator.toml",
        conflicts_with = "socket"
    )]
    config: PathBuf,
    /// The daemon's control socket instead.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The coordinator, when the daemon has more than one.
    #[arg(long)]
    coordinator: Option<String>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf, CliError> {
        match &self.socket {
            Some(path) => Ok(path.clone()),
            None => {
                let config =
                    Config::load(&self.config).map_err(|e| CliError::usage(e.to_string()))?;
                Ok(control::socket_path(&config.gateway.store))
            }
        }
    }

    fn args(&self, mut args: Value) -> Value {
        if let Some(c) = &self.coordinator {
            args["coordinator"] = c.clone().into();
        }
        args
    }
}

fn ask(target: &Target, op: &str, args: Value) -> Result<Value, CliError> {
    let socket = target.socket()?;
    control::request(&socket, op, target.args(args), ANSWER_WITHIN).map_err(|e| match e {
        ControlError::Refused(why) => CliError::Failed(anyhow::anyhow!(why)),
        other => CliError::Failed(anyhow::anyhow!(other)),
    })
}

/// Runs `concentrator zigbee ...`.
pub fn run(command: ZigbeeCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ZigbeeCommand::PermitJoin { seconds, target } => {
            if seconds > 254 {
                return Err(CliError::usage(format!(
                    "--seconds {seconds}: joining must close by itself; write 1 to 254 (0 closes the network now)"
                )));
            }
            ask(&target, "zigbee.permit_join", json!({"seconds": seconds}))?;
            if seconds == 0 {
                writeln!(out, "joining closed").context("writing")?;
            } else {
                writeln!(
                    out,
                    "joining permitted for {seconds} s: power the meter up (or press its pairing button); `concentrator zigbee devices` shows it once it has joined"
                )
                .context("writing")?;
            }
        }
        ZigbeeCommand::Devices { target, json } => {
            let answer = ask(&target, "zigbee.devices", Value::Null)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &answer).context("writing JSON")?;
                writeln!(out).context("writing")?;
            } else {
                render(&answer, out).context("writing")?;
            }
        }
        ZigbeeCommand::Remove { ieee, target } => {
            let parsed = crate::config::zigbee::normalise_ieee(&ieee).map_err(CliError::usage)?;
            ask(&target, "zigbee.remove", json!({"ieee": parsed}))?;
            writeln!(
                out,
                "{parsed} was asked to leave; it is forgotten once the coordinator reports it gone"
            )
            .context("writing")?;
        }
    }
    Ok(())
}

fn render(answer: &Value, out: &mut dyn Write) -> std::io::Result<()> {
    let now = crate::prepay::unix_now();
    for coordinator in answer.as_array().into_iter().flatten() {
        let name = coordinator["coordinator"].as_str().unwrap_or("?");
        let devices = coordinator["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        writeln!(
            out,
            "coordinator {name}: link {}, {} devices",
            if coordinator["link_up"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            },
            devices.len()
        )?;
        if devices.is_empty() {
            writeln!(
                out,
                "  (none: `concentrator zigbee permit-join` lets a meter join)"
            )?;
            continue;
        }
        writeln!(
            out,
            "  {:<16} {:<6} {:<9} {:<22} {:<16} last seen",
            "ieee", "nwk", "endpoints", "clusters", "meter"
        )?;
        for d in devices {
            let list = |key: &str| {
                d[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            };
            let meter = match (d["meter_id"].as_str(), d["dwelling"].as_str()) {
                (Some(id), Some(dwelling)) if id != d["ieee"].as_str().unwrap_or("") => {
                    format!("{id} ({dwelling})")
                }
                (Some(_), Some(dwelling)) => dwelling.to_string(),
                _ => "(not mapped)".into(),
            };
            let seen = d["last_seen_unix"].as_u64().map_or("-".to_string(), |t| {
                format!("{} s ago", now.saturating_sub(t))
            });
            let interviewed = if d["interviewed"].as_bool() == Some(true) {
                ""
            } else {
                " (interview running)"
            };
            writeln!(
                out,
                "  {:<16} {:<6} {:<9} {:<22} {:<16} {seen}{interviewed}",
                d["ieee"].as_str().unwrap_or("?"),
                d["nwk"].as_str().unwrap_or("?"),
                list("endpoints"),
                list("clusters"),
                meter
            )?;
        }
    }
    Ok(())
}
