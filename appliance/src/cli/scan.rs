//! `concentrator scan --bus NAME`: find the meters on a bus and print a config snippet for them.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::CliError;
use crate::buses;
use crate::config::Config;
use crate::scan::{config_snippet, modbus_candidates, scan_dlt645, scan_modbus, Found};

/// Which protocols to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// DL/T 645-2007 meters (read address with the wildcard, then a search of address ranges).
    Dlt645,
    /// Modbus RTU devices (every slave id, across line settings).
    Modbus,
    /// Both.
    All,
}

/// Arguments of `concentrator scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// The bus to scan, by its name in the configuration. Stop the daemon first: it holds the port.
    #[arg(long)]
    bus: String,
    /// The daemon's configuration.
    #[arg(long, short, default_value = "/etc/concentrator/concentrator.toml")]
    config: PathBuf,
    /// What to look for.
    #[arg(long, value_enum, default_value = "all")]
    protocol: Protocol,
    /// Modbus slave ids to try, like `1-247` or `1-32`.
    #[arg(long, default_value = "1-247")]
    ids: String,
    /// Try only the bus's own line settings for Modbus (not the other usual baud rates).
    #[arg(long)]
    only_bus_settings: bool,
    /// How long to wait for each answer, in milliseconds.
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
}

fn parse_ids(text: &str) -> Result<std::ops::RangeInclusive<u8>, CliError> {
    let bad = || {
        CliError::usage(format!(
            "--ids {text}: write a range of slave ids like `1-247` or `5-5`"
        ))
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let (a, b): (u8, u8) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || b > 247 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// Runs `concentrator scan`.
pub fn run(args: ScanArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let config = Config::load(&args.config).map_err(|e| CliError::usage(e.to_string()))?;
    let Some(bus) = config.buses.iter().find(|b| b.name.get_ref() == &args.bus) else {
        let names: Vec<&str> = config
            .buses
            .iter()
            .map(|b| b.name.get_ref().as_str())
            .collect();
        return Err(CliError::usage(format!(
            "{} has no bus named `{}`; its buses: {}",
            args.config.display(),
            args.bus,
            names.join(", ")
        )));
    };
    let ids = parse_ids(&args.ids)?;
    let mut open = buses::open_with(&config, bus, false).map_err(|e| {
        CliError::usage(format!(
            "cannot open bus {}: {e} (if the daemon is running, stop it first: it holds the port)",
            args.bus
        ))
    })?;
    let bus_line = open.bus.settings();
    let timeout = Duration::from_millis(args.timeout_ms);
    let tty = std::io::stderr().is_terminal();
    let mut last_percent = usize::MAX;
    let mut show = |phase: &str, done: usize, total: usize, what: &str| {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        if tty {
            let filled = percent / 5;
            eprint!(
                "\r{phase} [{}{}] {percent:3}% {what:<32}",
                "#".repeat(filled),
                " ".repeat(20 - filled)
            );
        } else if percent / 10 != last_percent / 10 {
            eprintln!("{phase}: {percent}% ({what})");
        }
        last_percent = percent;
    };
    let mut found: Vec<Found> = Vec::new();
    if matches!(args.protocol, Protocol::Dlt645 | Protocol::All) {
        let mut progress = |d: usize, t: usize, w: &str| show("DL/T 645", d, t, w);
        found.extend(
            scan_dlt645(open.bus.as_mut(), timeout, &mut progress)
                .context("scanning for DL/T 645 meters")?,
        );
        if tty {
            eprintln!();
        }
    }
    if matches!(args.protocol, Protocol::Modbus | Protocol::All) {
        let lines = if args.only_bus_settings {
            vec![bus_line]
        } else {
            modbus_candidates(bus_line)
        };
        let mut progress = |d: usize, t: usize, w: &str| show("Modbus", d, t, w);
        found.extend(
            scan_modbus(open.bus.as_mut(), &lines, ids, timeout, &mut progress)
                .context("scanning for Modbus devices")?,
        );
        if tty {
            eprintln!();
        }
    }
    writeln!(
        out,
        "# {} meter(s) found on bus {} ({bus_line}) by `concentrator scan`",
        found.len(),
        args.bus
    )
    .context("writing")?;
    for meter in &found {
        writeln!(
            out,
            "#   {:<14} {:<7} {:<8} at {}",
            meter.address,
            meter.driver,
            meter.model.unwrap_or("-"),
            meter.line
        )
        .context("writing")?;
    }
    writeln!(out).context("writing")?;
    write!(out, "{}", config_snippet(&args.bus, bus_line, &found)).context("writing")?;
    Ok(())
}
