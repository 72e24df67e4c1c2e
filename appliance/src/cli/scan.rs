//! `concentrator scan --bus NAME`: find the meters on a bus and print a config snippet for them.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::CliError;
use crate::buses;
use crate::config::Config;
use crate::scan::{
    config_snippet, human_duration, modbus_candidates, modbus_worst_case, probe_time, scan_dlt645,
    scan_modbus, Found, Step, TimeLeft,
};

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
    let lines = if args.only_bus_settings {
        vec![bus_line]
    } else {
        modbus_candidates(bus_line)
    };
    let dlt645 = matches!(args.protocol, Protocol::Dlt645 | Protocol::All);
    let modbus = matches!(args.protocol, Protocol::Modbus | Protocol::All);
    let modbus_left = if modbus {
        modbus_worst_case(&lines, &ids, timeout)
    } else {
        Duration::ZERO
    };
    let tty = std::io::stderr().is_terminal();
    let mut found: Vec<Found> = Vec::new();
    let mut error = None;
    if dlt645 {
        let eta = TimeLeft::new(probe_time(bus_line, timeout, 16, 0), modbus_left);
        let mut show = Shower::new("DL/T 645", tty, eta);
        if let Err(e) = scan_dlt645(open.bus.as_mut(), timeout, &mut found, &mut |s| {
            show.step(s)
        }) {
            error = Some(format!(
                "the DL/T 645 scan of bus {} stopped: {e}",
                args.bus
            ));
        }
        show.end();
    }
    if modbus && error.is_none() {
        let eta = TimeLeft::new(
            modbus_worst_case(&lines, &ids, timeout)
                / (lines.len() * ids.clone().count()).max(1) as u32,
            Duration::ZERO,
        );
        let mut show = Shower::new("Modbus", tty, eta);
        show.seen = found.len();
        if let Err(e) = scan_modbus(
            open.bus.as_mut(),
            &lines,
            ids,
            timeout,
            &mut found,
            &mut |s| show.step(s),
        ) {
            error = Some(format!("the Modbus scan of bus {} stopped: {e}", args.bus));
        }
        show.end();
    }
    let heading = match &error {
        None => format!(
            "# {} found on bus {} ({bus_line}) by `concentrator scan`",
            crate::words::count(found.len(), "meter", "meters"),
            args.bus
        ),
        Some(_) => format!(
            "# {} found on bus {} ({bus_line}) by `concentrator scan` before it stopped (see the error below); scan again for the rest",
            crate::words::count(found.len(), "meter", "meters"),
            args.bus
        ),
    };
    writeln!(out, "{heading}").context("writing")?;
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
    match error {
        None => Ok(()),
        Some(e) => Err(CliError::from(anyhow::anyhow!(
            "{e}; the {} found before are printed above (check the adapter and its cable, then scan again)",
            crate::words::count(found.len(), "meter", "meters")
        ))),
    }
}

/// Shows a scan phase's progress on stderr: a bar with the time left on a terminal, a line every 10 %
/// otherwise, and each meter on a line of its own as it is found.
struct Shower {
    phase: &'static str,
    tty: bool,
    eta: TimeLeft,
    last_percent: usize,
    seen: usize,
}

impl Shower {
    fn new(phase: &'static str, tty: bool, eta: TimeLeft) -> Self {
        Shower {
            phase,
            tty,
            eta,
            last_percent: usize::MAX,
            seen: 0,
        }
    }

    fn step(&mut self, s: &Step<'_>) {
        for meter in &s.found[self.seen.min(s.found.len())..] {
            if self.tty {
                eprint!("\r{:78}\r", "");
            }
            eprintln!(
                "{}: found {} ({}{}) at {}",
                self.phase,
                meter.address,
                meter.driver,
                meter.model.map(|m| format!(", {m}")).unwrap_or_default(),
                meter.line
            );
        }
        self.seen = s.found.len();
        let percent = (s.done * 100).checked_div(s.total).unwrap_or(100);
        let left = human_duration(self.eta.left(s.done, s.total));
        if self.tty {
            let filled = percent / 5;
            eprint!(
                "\r{} [{}{}] {percent:3}% {:<24} {} found, about {left} left",
                self.phase,
                "#".repeat(filled),
                " ".repeat(20 - filled),
                s.what,
                s.found.len()
            );
        } else if percent / 10 != self.last_percent / 10 {
            eprintln!(
                "{}: {percent}% ({}), {} found, about {left} left",
                self.phase,
                s.what,
                s.found.len()
            );
        }
        self.last_percent = percent;
    }

    fn end(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
