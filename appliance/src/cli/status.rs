//! `concentrator status`: what the running daemon sees, at a glance — every bus and meter with its
//! state, the last readings and the bus statistics, and with `[ledger]` every prepayment account
//! (balance, state, relay read back), read from the daemon's status file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use concentrator_ledger::money::format_minor;

use super::CliError;
use crate::config::Config;
use crate::status::Status;

/// Arguments of `concentrator status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The daemon's configuration (to find its status file).
    #[arg(
        long,
        short,
        default_value = "/etc/concentrator/concentrator.toml",
        conflicts_with = "file"
    )]
    config: PathBuf,
    /// Read this status file instead (`status.json` in the store directory by default).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

/// A configured meter: bus, address, dwelling (a bus whose adapter is missing has none on the board).
pub type Configured = (String, String, String);

/// Runs `concentrator status`. Exits 1 (after printing them) when problems are listed, so that
/// scripts and monitoring can tell.
pub fn run(args: StatusArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut configured: Vec<Configured> = Vec::new();
    let path = match args.file {
        Some(path) => path,
        None => {
            let config = Config::load(&args.config).map_err(|e| CliError::usage(e.to_string()))?;
            configured = config
                .meters
                .iter()
                .map(|m| {
                    (
                        m.bus.get_ref().clone(),
                        m.address.get_ref().clone(),
                        m.dwelling.get_ref().clone(),
                    )
                })
                .collect();
            config
                .gateway
                .status_file
                .clone()
                .unwrap_or_else(|| config.gateway.store.join("status.json"))
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::usage(format!(
            "cannot read the daemon's status file {}: {e}; is concentratord running with this configuration? (`systemctl status concentrator`)",
            path.display()
        ))
    })?;
    let status: Status = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{} is not a status file: {e}", path.display())))?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &status).context("writing JSON")?;
        writeln!(out).context("writing")?;
        return Ok(());
    }
    let problems = render(&status, &configured, out).context("writing the status")?;
    if problems > 0 {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{}, listed above",
            crate::words::count(problems, "problem", "problems")
        )));
    }
    Ok(())
}

/// Prints the status; returns how many problems it listed.
pub(crate) fn render(
    status: &Status,
    configured: &[Configured],
    out: &mut dyn Write,
) -> std::io::Result<usize> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    writeln!(
        out,
        "gateway {}, status {} s old",
        status.gateway,
        now.saturating_sub(status.updated_unix)
    )?;
    if now.saturating_sub(status.updated_unix) > 30 {
        writeln!(
            out,
            "WARNING: the status is stale; the daemon may not be running"
        )?;
    }
    let mut problems = Vec::new();
    for (name, bus) in &status.buses {
        let zigbee = status.zigbee.contains_key(name);
        let kind = if zigbee { "zigbee" } else { "bus" };
        writeln!(out, "\n{kind} {name}: {} ({})", bus.state, bus.detail)?;
        // A coordinator that is not up: one problem naming the stick, not "pair it" for each meter.
        let stick_down = status.zigbee.get(name).filter(|z| !z.link_up);
        if let Some(z) = stick_down {
            let dwellings: Vec<&str> = bus.meters.iter().map(|m| m.dwelling.as_str()).collect();
            problems.push(format!(
                "Zigbee coordinator {name} is not up ({}): plug the Zigbee stick in or check its `path` (`ls /dev/serial/by-id`); not read meanwhile: {}",
                z.last_error.as_deref().unwrap_or("no answer from the stick"),
                if dwellings.is_empty() { "no meter".to_string() } else { dwellings.join(", ") }
            ));
        }
        if bus.state != "running" && stick_down.is_none() {
            problems.push(format!("{kind} {name} is {}: {}", bus.state, bus.detail));
            if bus.meters.is_empty() {
                // Its meters are not on the board: name each dwelling left unread, from the
                // configuration, else from the accounts.
                let mut affected: Vec<(String, String)> = configured
                    .iter()
                    .filter(|(b, _, _)| b == name)
                    .map(|(_, a, d)| (a.clone(), d.clone()))
                    .collect();
                if affected.is_empty() {
                    affected = status
                        .accounts
                        .values()
                        .filter(|a| &a.bus == name)
                        .map(|a| (a.address.clone(), a.dwelling.clone()))
                        .collect();
                }
                for (address, dwelling) in affected {
                    writeln!(
                        out,
                        "  {address:<14} {dwelling:<10} not read: the {kind} is {}",
                        bus.state
                    )?;
                    problems.push(format!(
                        "dwelling {dwelling} (meter {address} on {kind} {name}) is not read while the {kind} is {}: plug its adapter back in or fix the device path",
                        bus.state
                    ));
                }
            }
        }
        if bus.meters.is_empty() {
            continue;
        }
        writeln!(
            out,
            "  {:<14} {:<10} {:<8} {:<8} {:>6} {:>6} {:>7} {:>4} {:>4} {:>8}  last reading",
            "meter", "dwelling", "driver", "state", "req", "ok", "timeout", "bad", "exc", "lat ms"
        )?;
        for m in &bus.meters {
            let latency = m
                .stats
                .last_latency_ms
                .map_or("-".to_string(), |l| format!("{l:.1}"));
            let reading = m
                .readings
                .first()
                .cloned()
                .unwrap_or_else(|| m.error.clone().unwrap_or_default());
            writeln!(
                out,
                "  {:<14} {:<10} {:<8} {:<8} {:>6} {:>6} {:>7} {:>4} {:>4} {:>8}  {}",
                m.address,
                m.dwelling,
                m.driver,
                m.state,
                m.stats.requests,
                m.stats.ok,
                m.stats.timeouts,
                m.stats.bad_replies,
                m.stats.exceptions,
                latency,
                reading
            )?;
            match m.state.as_str() {
                _ if stick_down.is_some() => {}
                "offline" | "not-joined" if zigbee => problems.push(format!(
                    "Zigbee meter {} ({}) behind {name}: {}",
                    m.address,
                    m.dwelling,
                    m.error.clone().unwrap_or_default()
                )),
                // A driver that panics or breaks its rules (and is then quarantined) is a software
                // fault: no one should go up a ladder to check the wiring for it.
                "offline" if m.stats.driver_faults > 0 => problems.push(format!(
                    "meter {} ({}) on bus {name} is not read because its driver `{}` failed {} (a panic or a broken rule; after `plugin_max_faults` the plugin is quarantined): a software fault, not the wiring: install a fixed driver plugin and restart the daemon",
                    m.address, m.dwelling, m.driver, crate::words::count(m.stats.driver_faults, "time", "times")
                )),
                "offline" => problems.push(format!(
                    "meter {} ({}) on bus {name} does not answer: check its wiring, address and the bus's baud rate",
                    m.address, m.dwelling
                )),
                // Its driver plugin is quarantined: the same software fault, said as one.
                "failed"
                    if m
                        .error
                        .as_deref()
                        .is_some_and(|e| e.contains("quarantined")) =>
                {
                    problems.push(format!(
                        "meter {} ({}) on bus {name} is not read because its driver plugin `{}` is quarantined ({}): a software fault, not the wiring: install a fixed version of the plugin (with its signature) in the plugin directory and restart the daemon (`sudo systemctl restart concentrator`)",
                        m.address,
                        m.dwelling,
                        m.driver,
                        m.error.as_deref().and_then(|e| e.split_once("quarantined: ")).map_or("see the drivers line", |(_, why)| why)
                    ))
                }
                "failed" => problems.push(format!(
                    "meter {} ({}) on bus {name} cannot be driven: {}",
                    m.address,
                    m.dwelling,
                    m.error.clone().unwrap_or_default()
                )),
                _ => {}
            }
        }
    }
    render_accounts(status, out)?;
    for (meter, a) in &status.accounts {
        if let Some(by) = &a.held_by {
            problems.push(format!(
                "dwelling {} (meter {meter}) is cut off: its supply is held off by {by}; `concentrator relay {meter} close` when the work is done",
                a.dwelling
            ));
        } else if a.state == "disconnected" || a.state == "exhausted" {
            problems.push(format!(
                "dwelling {} (meter {meter}) is cut off: no credit ({} {}); the customer must top up (`concentrator topup`)",
                a.dwelling,
                format_minor(a.balance_minor),
                a.currency
            ));
        }
    }
    if let Some(u) = &status.uplink {
        render_uplink(u, now, out)?;
        for a in &u.aka {
            if let Some(p) = &a.problem {
                problems.push(format!("AKA of {}: {p}", a.scope));
            }
        }
        if !u.connected {
            problems.push(format!(
                "the uplink to {} is disconnected ({}); {} messages wait in the outbox and are sent when it returns: check the network, the modem and the broker",
                u.broker,
                u.last_error.as_deref().unwrap_or("not connected yet"),
                u.outbox
            ));
        }
    }
    if let Some(t) = &status.time {
        render_time(t, out, &mut problems)?;
    }
    if let Some(b) = &status.balance {
        render_balance(b, out, &mut problems)?;
    }
    if let Some(m) = &status.modem {
        render_modem(m, out)?;
        if let Some(p) = modem_problem(m) {
            problems.push(p);
        }
    }
    if !status.drivers.is_empty() {
        writeln!(out, "\ndrivers:")?;
        for line in &status.drivers {
            writeln!(out, "  {line}")?;
            if line.contains("quarantined") {
                let name = line.split(' ').next().unwrap_or_default();
                problems.push(format!(
                    "driver plugin `{name}` is quarantined, out of service until the daemon restarts: {line}; its meters are not read: install a fixed version (with its signature) and restart the daemon"
                ));
            }
        }
    }
    if problems.is_empty() {
        writeln!(out, "\nall buses and meters are working")?;
    } else {
        writeln!(
            out,
            "\n{}:",
            crate::words::count(problems.len(), "problem", "problems")
        )?;
        for p in &problems {
            writeln!(out, "- {p}")?;
        }
    }
    Ok(problems.len())
}

/// The gateway's clock and each meter's, in words; a meter clock past the limit or that refused the
/// time is a problem.
fn render_time(
    t: &crate::timekeeper::TimeView,
    out: &mut dyn Write,
    problems: &mut Vec<String>,
) -> std::io::Result<()> {
    use crate::timekeeper::drift_words;
    use concentrator_mpc::human::local_time;
    writeln!(
        out,
        "\ntime: the gateway's clock is {}; meter clocks are set daily at {:02}:00, drift limit {} s{}",
        t.detail,
        t.sync_hour,
        t.drift_limit_s,
        t.last_sync_unix
            .map_or(String::new(), |at| format!(", last set {}", local_time(at)))
    )?;
    if t.meters.is_empty() {
        return Ok(());
    }
    writeln!(out, "  {:<20} {:<10} clock", "meter", "dwelling")?;
    for (key, m) in &t.meters {
        let clock = match (m.state.as_str(), m.drift_s) {
            ("no-clock", _) => "no clock to read".to_string(),
            ("unread", _) => "not read (no answer)".to_string(),
            ("not-judged", _) => {
                "read, not judged: the gateway's clock is not trustworthy".to_string()
            }
            ("refused", Some(d)) => format!("{}: did not take the gateway's time", drift_words(d)),
            ("drifted", Some(d)) => format!("{}: past the limit", drift_words(d)),
            (_, Some(d)) => drift_words(d),
            (_, None) => "not read yet".to_string(),
        };
        let read = m
            .read_unix
            .map_or(String::new(), |at| format!(" (read {})", local_time(at)));
        writeln!(out, "  {key:<20} {:<10} {clock}{read}", m.dwelling)?;
        if matches!(m.state.as_str(), "drifted" | "refused") {
            if let Some(p) = &m.problem {
                problems.push(format!("meter {key} ({}): {p}", m.dwelling));
            }
        }
    }
    Ok(())
}

/// The block balance: each group's last interval in words; a group whose alarm is raised is a problem.
fn render_balance(
    b: &crate::balance::BalanceView,
    out: &mut dyn Write,
    problems: &mut Vec<String>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "\nblock balance: every {}, {} % plus {} allowed for losses, an alarm after {} over",
        crate::timekeeper::duration_words(b.interval_s),
        b.loss_percent,
        crate::balance::kwh(i64::try_from(b.loss_wh).unwrap_or(i64::MAX)),
        crate::words::count(b.intervals, "interval", "intervals")
    )?;
    for (name, g) in &b.groups {
        let s = &g.state;
        writeln!(
            out,
            "  group {name}: feeder {} and {}; {} judged, {} over, {} incomplete, {} skipped (register reset){}",
            g.feeder,
            crate::words::count(g.dwellings, "dwelling meter", "dwelling meters"),
            crate::words::count(s.judged, "interval", "intervals"),
            s.over,
            s.incomplete,
            s.skipped,
            if s.alarm { "; ALARM raised" } else { "" }
        )?;
        match &s.last {
            Some(j) => writeln!(out, "    last: {}", crate::balance::judgement_words(j))?,
            None => writeln!(out, "    no interval judged yet")?,
        }
        if let Some(why) = &s.last_not_judged {
            writeln!(out, "    last not judged: {why}")?;
        }
        if let Some(p) = g.problem(name) {
            problems.push(p);
        }
    }
    Ok(())
}

fn render_uplink(
    u: &crate::status::UplinkView,
    now: u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let last_ack = u.last_ack_unix.map_or("never".to_string(), |t| {
        format!("{} s ago", now.saturating_sub(t))
    });
    writeln!(
        out,
        "
uplink {}: {}, outbox {} waiting, last acknowledgement {last_ack}",
        u.broker,
        if u.connected {
            "connected"
        } else {
            "disconnected"
        },
        u.outbox
    )?;
    writeln!(
        out,
        "  connections {}, failures {}, sent {}, acknowledged {}, in flight {}, commands run {}, repeats {}, refused {}",
        u.connections, u.failures, u.sent, u.acked, u.in_flight, u.executed, u.repeats, u.refused
    )?;
    for a in &u.aka {
        let expires = a.expires.map_or("-".to_string(), |t| {
            if t > now {
                format!("in {} s", t - now)
            } else {
                "expired".to_string()
            }
        });
        writeln!(
            out,
            "  AKA {}: {}, TID {}, keys expire {expires}",
            a.scope,
            a.state,
            a.tid.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

fn render_modem(m: &crate::status::ModemView, out: &mut dyn Write) -> std::io::Result<()> {
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(
        out,
        "\nmodem {}: {}, SIM {}, registration {}, operator {}, signal {}, {}",
        m.port,
        m.stage,
        or(&m.sim),
        or(&m.registration),
        or(&m.operator),
        m.rssi_dbm.map_or("-".into(), |d| format!("{d} dBm")),
        or(&m.technology),
    )?;
    writeln!(
        out,
        "  ICCID {}, link {}, recoveries {}{}",
        or(&m.iccid),
        if m.link_up { "up" } else { "down" },
        m.recoveries,
        m.last_problem
            .as_ref()
            .map_or(String::new(), |p| format!(", last problem: {p}"))
    )?;
    if let Some(s) = &m.sms {
        let data = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
        writeln!(
            out,
            "  SMS {}: {} of {} sent ({} events, {} BAL answered, {} refused), data {} of {}{}",
            s.month,
            s.sms_sent,
            s.sms_budget,
            s.events_sent,
            s.bal_answered,
            s.bal_refused,
            data(s.data_bytes),
            s.data_budget_bytes.map_or("no limit".into(), data),
            if s.sending_events {
                "; the data link is down: urgent events go by SMS"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

/// The modem as a problem: needing attention (staged recovery failed), or an AT port that fails.
fn modem_problem(m: &crate::status::ModemView) -> Option<String> {
    let problem = m.last_problem.as_deref().unwrap_or("no answer");
    if m.stage == "needs-attention" {
        Some(format!(
            "the modem on {} needs attention: {problem}; staged recovery (reconnect, reset, power key) did not help: check the modem's power and USB cable, the antenna and the SIM on site; the daemon keeps checking and reports when it recovers",
            m.port
        ))
    } else if m.stage != "healthy" || m.last_problem.is_some() {
        Some(format!(
            "the modem on {} is not working ({}): {problem}; the daemon is recovering it in stages",
            m.port, m.stage
        ))
    } else {
        None
    }
}

fn render_accounts(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    if status.accounts.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nprepayment accounts:")?;
    writeln!(
        out,
        "  {:<14} {:<10} {:<10} {:<14} {:<13} {:>12} {:>10} {:<7} {:>6}",
        "meter", "dwelling", "bus", "address", "state", "balance", "debt", "relay", "serial"
    )?;
    for (meter, a) in &status.accounts {
        writeln!(
            out,
            "  {:<14} {:<10} {:<10} {:<14} {:<13} {:>12} {:>10} {:<7} {:>6}",
            meter,
            a.dwelling,
            a.bus,
            a.address,
            a.state,
            format!("{} {}", format_minor(a.balance_minor), a.currency),
            format_minor(a.debt_minor),
            a.relay_read_back.as_deref().unwrap_or("-"),
            a.last_serial.map_or("-".to_string(), |s| s.to_string()),
        )?;
        if let Some(by) = &a.held_by {
            writeln!(
                out,
                "  {:<14} supply held off by {by}: credit does not reconnect it until a close order",
                ""
            )?;
        }
    }
    Ok(())
}
