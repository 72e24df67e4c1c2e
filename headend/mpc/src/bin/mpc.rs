//! `mpc`: a command-line stand-in for the customer's phone app (see the crate docs and
//! docs/protocol.md, *Phone client and payment server*).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use concentrator_mpc::backend::{HistoryEntry, HistoryKind, MeterView, Notice, Purchase};
use concentrator_mpc::client::{Client, ClientError, Keys, Step};
use concentrator_mpc::human::{self, from_now, local_time};
use concentrator_mpc::profile::{self, Profile};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "mpc",
    version,
    about = "The customer's phone client: register, log in, top up, balance, history, alerts"
)]
struct Cli {
    /// The profile file (default: $MPC_PROFILE, else ~/.config/mpc/profile.toml).
    #[arg(long, global = true, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Read the password from the first line of FILE (else $MPC_PASSWORD, else a prompt).
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Machine-readable output: one JSON value per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register with the authorization code from the bank counter and create the profile.
    Register {
        /// The payment server, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        server: String,
        /// The utility CA certificate (PEM); the only certificate authority trusted.
        #[arg(long, value_name = "CA.pem")]
        ca: PathBuf,
        /// The one-time authorization code.
        #[arg(long)]
        code: String,
        /// The user name to choose.
        #[arg(long)]
        user: String,
    },
    /// List the meters with their balances.
    Meters,
    /// One meter's balance (or every meter's).
    Balance {
        /// The meter number.
        meter: Option<String>,
    },
    /// Buy credit; waits for the gateway's receipt and prints the new balance.
    Topup {
        /// The meter number.
        meter: String,
        /// The amount as money, e.g. 20.00 (two decimals).
        #[arg(required_unless_present = "minor", conflicts_with = "minor")]
        amount: Option<String>,
        /// The amount in minor units (cents), instead of AMOUNT.
        #[arg(long, value_name = "MINOR")]
        minor: Option<u64>,
        /// Seconds to wait for the receipt (0: do not wait).
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        wait: u64,
    },
    /// Purchases and meter events, newest first.
    History {
        /// Only this meter.
        meter: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Print alerts and receipts as they come (until interrupted).
    Watch,
    /// List the tokens saved in the profile directory.
    Tokens,
    /// Write one token to a file for `concentrator topup --token FILE` (fetched again from the server if
    /// it is not saved here).
    Token {
        /// The token's serial.
        serial: u64,
        /// The meter, if serials of several meters match.
        #[arg(long)]
        meter: Option<String>,
        /// Where to write it (hex).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mpc: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn profile_path(cli: &Cli) -> Result<PathBuf> {
    match &cli.profile {
        Some(p) => Ok(p.clone()),
        None => Ok(profile::default_path()?),
    }
}

fn run(cli: &Cli) -> Result<()> {
    let path = profile_path(cli)?;
    match &cli.command {
        Command::Register {
            server,
            ca,
            code,
            user,
        } => register(cli, &path, server, ca, code, user),
        Command::Meters => {
            let mut s = Session::open(cli, &path)?;
            let meters = s.client.meters()?;
            print_meters(cli, &meters);
            Ok(())
        }
        Command::Balance { meter } => {
            let mut s = Session::open(cli, &path)?;
            let meters = s.client.balance(meter.as_deref())?;
            print_meters(cli, &meters);
            Ok(())
        }
        Command::Topup {
            meter,
            amount,
            minor,
            wait,
        } => {
            let amount_minor = match (amount, minor) {
                (_, Some(m)) => *m,
                (Some(a), None) => parse_money(a)?,
                (None, None) => bail!("give the amount as money (20.00) or with --minor"),
            };
            if amount_minor == 0 {
                bail!("the amount must be more than 0");
            }
            topup(cli, &path, meter, amount_minor, *wait)
        }
        Command::History { meter, limit } => {
            let mut s = Session::open(cli, &path)?;
            let entries = s.client.history(meter.as_deref(), *limit)?;
            let currencies = s
                .client
                .meters()?
                .into_iter()
                .map(|m| (m.meter, m.currency))
                .collect();
            print_history(cli, &entries, &currencies);
            Ok(())
        }
        Command::Watch => watch(cli, &path),
        Command::Tokens => tokens(cli, &path),
        Command::Token { serial, meter, out } => token(cli, &path, *serial, meter.as_deref(), out),
    }
}

/// The password: --password-file, $MPC_PASSWORD, or a prompt on the terminal without echo.
fn password(cli: &Cli, confirm: bool) -> Result<String> {
    if let Some(f) = &cli.password_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    if let Ok(p) = std::env::var("MPC_PASSWORD") {
        return Ok(p);
    }
    let first = prompt("Password: ")?;
    if confirm && prompt("Password again: ")? != first {
        bail!("the two passwords differ; run the command again");
    }
    Ok(first)
}

/// Reads a line from /dev/tty with echo off.
fn prompt(text: &str) -> Result<String> {
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the password: use --password-file FILE or MPC_PASSWORD")?;
    let fd = tty.as_raw_fd();
    // SAFETY: `fd` is an open terminal for the duration of these calls; `termios` is plain data.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        bail!("cannot read the terminal's settings: use --password-file FILE or MPC_PASSWORD");
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut out = &tty;
    let _ = write!(out, "{text}");
    let _ = out.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    // SAFETY: as above; restores what was there.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.context("cannot read the password from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn register(cli: &Cli, path: &Path, server: &str, ca: &Path, code: &str, user: &str) -> Result<()> {
    if path.exists() {
        bail!(
            "a profile exists at {}: registering again would replace its keys; give another --profile or remove it",
            path.display()
        );
    }
    let ca = std::fs::canonicalize(ca)
        .with_context(|| format!("cannot find the CA certificate {}", ca.display()))?;
    let pass = password(cli, true)?;
    let mut client = Client::connect(server, &ca)?;
    let keys = client.register(code, user, &pass)?;
    let profile = Profile::new(server, &ca, &keys);
    profile.save(path)?;
    if cli.json {
        println!(
            "{}",
            json!({"registered": true, "customer": keys.customer, "user": keys.user, "imsi": keys.imsi, "profile": path})
        );
    } else {
        println!(
            "registered {} (customer {}, IMSI {}); profile saved in {}",
            keys.user,
            keys.customer,
            keys.imsi,
            path.display()
        );
    }
    Ok(())
}

/// A logged-in connection and the profile it came from.
struct Session {
    client: Client,
    keys: Keys,
    password: String,
    profile: Profile,
    path: PathBuf,
}

impl Session {
    fn open(cli: &Cli, path: &Path) -> Result<Session> {
        let profile = Profile::load(path)?;
        let keys = profile.keys(path)?;
        let pass = password(cli, false)?;
        let client = Client::connect(&profile.server, &profile.ca)?;
        let mut s = Session {
            client,
            keys,
            password: pass,
            profile,
            path: path.to_owned(),
        };
        s.login()?;
        Ok(s)
    }

    fn login(&mut self) -> Result<()> {
        let (profile, path) = (&mut self.profile, &self.path);
        let mut save = |k: &Keys| -> std::io::Result<()> {
            profile.set_keys(k);
            profile.save(path).map_err(std::io::Error::other)
        };
        self.client
            .login(&mut self.keys, &self.password, &mut save)
            .map_err(|e| match e {
                ClientError::NotTheUtility => anyhow!("{e}"),
                other => anyhow!(other).context("login failed"),
            })?;
        Ok(())
    }
}

fn parse_money(text: &str) -> Result<u64> {
    let bad = || {
        anyhow!("amount {text:?} is not money: write e.g. 20 or 20.00 (two decimals at most), or use --minor")
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let frac: u64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", m / 100, m % 100)
}

fn money_u(minor: u64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, minor % 100)
}

fn meter_json(m: &MeterView) -> Value {
    json!({
        "meter": m.meter, "dwelling": m.dwelling, "currency": m.currency,
        "balance_minor": m.balance_minor, "balance_at": m.balance_at, "supply_on": m.supply_on,
        "last_reading_wh": m.last_reading_wh, "last_reading_at": m.last_reading_at,
        "pending_tokens": m.pending_tokens,
    })
}

fn print_meters(cli: &Cli, meters: &[MeterView]) {
    if cli.json {
        println!("{}", Value::Array(meters.iter().map(meter_json).collect()));
        return;
    }
    if meters.is_empty() {
        println!("no meters");
    }
    for m in meters {
        let balance = m
            .balance_minor
            .map_or("balance not reported yet".to_owned(), |b| {
                match m.balance_at {
                    Some(at) => format!("balance {} at {}", money(b, &m.currency), local_time(at)),
                    None => format!("balance {}", money(b, &m.currency)),
                }
            });
        let supply = match m.supply_on {
            Some(true) => ", supply on",
            Some(false) => ", supply OFF",
            None => "",
        };
        let pending = if m.pending_tokens > 0 {
            format!(", {} token(s) not yet applied", m.pending_tokens)
        } else {
            String::new()
        };
        println!("{}  {}  {balance}{supply}{pending}", m.meter, m.dwelling);
    }
}

fn kind_name(k: HistoryKind) -> &'static str {
    match k {
        HistoryKind::Purchased => "purchased",
        HistoryKind::Applied => "applied",
        HistoryKind::Refused => "refused",
        HistoryKind::LowCredit => "low credit",
        HistoryKind::SupplyCut => "supply cut",
        HistoryKind::SupplyRestored => "supply restored",
    }
}

fn print_history(cli: &Cli, entries: &[HistoryEntry], currencies: &HashMap<String, String>) {
    if cli.json {
        let v: Vec<Value> = entries
            .iter()
            .map(|h| json!({"at": h.at, "meter": h.meter, "what": kind_name(h.what), "serial": h.serial,
                "amount_minor": h.amount_minor, "balance_after_minor": h.balance_after_minor, "detail": h.detail}))
            .collect();
        println!("{}", Value::Array(v));
        return;
    }
    if entries.is_empty() {
        println!("no history");
    }
    for h in entries {
        let currency = currencies.get(&h.meter).map_or("", String::as_str);
        let mut line = format!("{}  {}  {}", local_time(h.at), h.meter, kind_name(h.what));
        if let Some(s) = h.serial {
            line += &format!("  token {s}");
        }
        if let Some(a) = h.amount_minor {
            line += &format!("  amount {}", money_u(a, currency).trim_end());
        }
        if let Some(b) = h.balance_after_minor {
            line += &format!("  balance {}", money(b, currency).trim_end());
        }
        if let Some(d) = &h.detail {
            line += &format!("  ({d})");
        }
        println!("{}", line.trim_end());
    }
}

fn notice_json(n: &Notice) -> Value {
    match n {
        Notice::Applied {
            meter,
            serial,
            amount_minor,
            balance_after_minor,
            at,
        } => json!({"notice": "applied",
            "meter": meter, "serial": serial, "amount_minor": amount_minor, "balance_after_minor": balance_after_minor, "at": at}),
        Notice::Refused {
            meter,
            serial,
            reason,
            at,
        } => {
            json!({"notice": "refused", "meter": meter, "serial": serial, "reason": reason, "at": at})
        }
        Notice::LowCredit {
            meter,
            balance_minor,
            at,
        } => {
            json!({"notice": "low credit", "meter": meter, "balance_minor": balance_minor, "at": at})
        }
        Notice::SupplyCut { meter, at } => {
            json!({"notice": "supply cut", "meter": meter, "at": at})
        }
        Notice::SupplyRestored { meter, at } => {
            json!({"notice": "supply restored", "meter": meter, "at": at})
        }
        Notice::Delivered { meter, serial, at } => {
            json!({"notice": "delivered", "meter": meter, "serial": serial, "at": at})
        }
        Notice::Delayed {
            meter,
            serial,
            reason,
            at,
        } => {
            json!({"notice": "delayed", "meter": meter, "serial": serial, "reason": reason, "at": at,
                "advice": human::advice(n)})
        }
        Notice::Missed { count, at } => {
            json!({"notice": "missed", "count": count, "at": at, "advice": human::advice(n)})
        }
    }
}

/// A notice for people; `currency` is the meter's (the notices carry amounts in minor units only).
fn notice_text(n: &Notice, currency: &str) -> String {
    match n {
        Notice::Applied {
            meter,
            serial,
            amount_minor,
            balance_after_minor,
            ..
        } => format!(
            "{meter}: token {serial} applied ({}), balance now {}",
            money_u(*amount_minor, currency).trim_end(),
            money(*balance_after_minor, currency).trim_end()
        ),
        Notice::Refused {
            meter,
            serial,
            reason,
            ..
        } => format!(
            "{meter}: token {serial} REFUSED by the gateway: {reason}. {}",
            human::advice(n).unwrap_or_default()
        ),
        Notice::LowCredit {
            meter,
            balance_minor,
            ..
        } => format!(
            "{meter}: LOW CREDIT, balance {}; top up soon",
            money(*balance_minor, currency).trim_end()
        ),
        Notice::SupplyCut { meter, .. } => format!("{meter}: SUPPLY CUT"),
        Notice::SupplyRestored { meter, .. } => format!("{meter}: supply restored"),
        Notice::Delivered { meter, serial, at } => format!(
            "{meter}: token {serial} delivered to the gateway at {}; waiting for the meter to apply it",
            local_time(*at)
        ),
        Notice::Delayed {
            meter,
            serial,
            reason,
            ..
        } => format!(
            "{meter}: the gateway cannot apply token {serial} yet: {reason}. {}",
            human::advice(n).unwrap_or_default()
        ),
        Notice::Missed { .. } => human::advice(n).unwrap_or_default(),
    }
}

/// How often `mpc topup` says it is still waiting when nothing else happens.
const HEARTBEAT: Duration = Duration::from_secs(10);

fn topup(cli: &Cli, path: &Path, meter: &str, amount_minor: u64, wait: u64) -> Result<()> {
    let mut s = Session::open(cli, path)?;
    if wait > 0 {
        s.client.watch()?;
    }
    let p: Purchase = s.client.top_up(meter, amount_minor)?;
    let saved = profile::save_token(path, &p.meter, p.serial, &p.token)?;
    let local = format!("concentrator topup --token {}", saved.display());
    if !cli.json {
        println!(
            "paid: {} for {} (token {}, valid until {}); token saved as {}",
            money_u(p.amount_minor, &p.currency),
            p.meter,
            p.serial,
            local_time(p.expires_at),
            saved.display()
        );
        if wait > 0 {
            println!(
                "waiting up to {wait} s for the gateway to apply it (Ctrl-C stops waiting; the token stays saved)..."
            );
        }
        let _ = std::io::stdout().flush();
    }
    let mut steps: Vec<Value> = Vec::new();
    let mut delayed = false;
    let outcome = if wait > 0 {
        let json = cli.json;
        s.client.follow_purchase(
            &p.meter,
            p.serial,
            Duration::from_secs(wait),
            HEARTBEAT,
            |step| {
                match step {
                    Step::Notice(n) => {
                        delayed |= matches!(n, Notice::Delayed { .. });
                        if json {
                            steps.push(notice_json(n));
                        } else {
                            println!("{}", notice_text(n, &p.currency));
                            if matches!(n, Notice::Delayed { .. }) {
                                println!("  meanwhile, at the gateway: {local}");
                            }
                        }
                    }
                    Step::StillWaiting(d) if !json => println!(
                        "still waiting for the gateway ({} s of {wait} s)...",
                        d.as_secs()
                    ),
                    Step::StillWaiting(_) => {}
                }
                let _ = std::io::stdout().flush();
            },
        )?
    } else {
        None
    };
    if cli.json {
        let o = outcome.as_ref().map(notice_json);
        println!(
            "{}",
            json!({"meter": p.meter, "serial": p.serial, "amount_minor": p.amount_minor, "currency": p.currency,
                "token_file": saved, "steps": steps, "outcome": o, "apply_locally": outcome.is_none().then_some(local)})
        );
    } else {
        match &outcome {
            Some(n) => println!("{}", notice_text(n, &p.currency)),
            None if wait == 0 => println!(
                "not waiting for the gateway; `mpc history {}` shows when it is applied. If the uplink is down, apply it at the gateway: {local}",
                p.meter
            ),
            None => println!(
                "no receipt from the gateway yet{}; the token is saved and the payment server keeps sending it, so you pay nothing more. `mpc history {}` shows when it is applied. If the gateway's uplink is down, apply it at the gateway: {local}",
                if delayed { " (see the reason above)" } else { "" },
                p.meter
            ),
        }
    }
    if matches!(outcome, Some(Notice::Refused { .. })) {
        bail!("the gateway refused the token");
    }
    Ok(())
}

fn watch(cli: &Cli, path: &Path) -> Result<()> {
    let mut s = Session::open(cli, path)?;
    // Each meter's currency, for the amounts in the notices.
    let currencies: HashMap<String, String> = s
        .client
        .meters()?
        .into_iter()
        .map(|m| (m.meter, m.currency))
        .collect();
    s.client.watch()?;
    if !cli.json {
        println!("watching {}'s meters (Ctrl-C to stop)", s.keys.user);
    }
    loop {
        match s.client.next_notice(None) {
            Ok(Some(n)) => {
                if cli.json {
                    println!("{}", notice_json(&n));
                } else {
                    let currency = currencies.get(n.meter()).map_or("", String::as_str);
                    println!("{}", notice_text(&n, currency));
                }
                let _ = std::io::stdout().flush();
            }
            Ok(None) => {}
            Err(e) if e.session_expired() => {
                s.login()?;
                s.client.watch()?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn tokens(cli: &Cli, path: &Path) -> Result<()> {
    let (saved, bad) = profile::list_tokens(path)?;
    for e in &bad {
        eprintln!("mpc: warning: {e}");
    }
    if cli.json {
        let v: Vec<Value> = saved
            .iter()
            .map(|t| json!({"meter": t.token.meter_id, "serial": t.token.serial, "amount_minor": t.token.amount_minor,
                "currency": String::from_utf8_lossy(&t.token.currency), "issued_at": t.token.issued_at,
                "expires_at": t.token.expires_at, "file": t.path}))
            .collect();
        println!("{}", Value::Array(v));
        return Ok(());
    }
    if saved.is_empty() {
        println!("no saved tokens in {}", profile::tokens_dir(path).display());
    }
    for t in &saved {
        println!(
            "{}  token {}  {}  valid until {} ({})  {}",
            t.token.meter_id,
            t.token.serial,
            money_u(
                t.token.amount_minor,
                &String::from_utf8_lossy(&t.token.currency)
            ),
            local_time(t.token.expires_at),
            from_now(now_unix(), t.token.expires_at),
            t.path.display()
        );
    }
    Ok(())
}

fn token(cli: &Cli, path: &Path, serial: u64, meter: Option<&str>, out: &Path) -> Result<()> {
    let (saved, _) = profile::list_tokens(path)?;
    let matching: Vec<_> = saved
        .iter()
        .filter(|t| t.token.serial == serial && meter.is_none_or(|m| t.token.meter_id == m))
        .collect();
    let octets = match matching.as_slice() {
        [one] => profile::read_token(&one.path)?.0,
        [] => {
            // Not saved here (another phone bought it, or the file was lost): ask the server.
            let mut s = Session::open(cli, path)?;
            let found: Vec<Purchase> = s
                .client
                .purchases(100)?
                .into_iter()
                .filter(|p| p.serial == serial && meter.is_none_or(|m| p.meter == m))
                .collect();
            match found.as_slice() {
                [p] => {
                    profile::save_token(path, &p.meter, p.serial, &p.token)?;
                    p.token.clone()
                }
                [] => bail!("no token with serial {serial} here or among the last 100 purchases"),
                _ => bail!("several meters have a token {serial}: add --meter METER"),
            }
        }
        _ => bail!("several meters have a token {serial}: add --meter METER"),
    };
    std::fs::write(out, format!("{}\n", hex::encode(&octets)))
        .with_context(|| format!("cannot write {}", out.display()))?;
    if cli.json {
        println!("{}", json!({"serial": serial, "file": out}));
    } else {
        println!(
            "token {serial} written to {}; apply it at the gateway with: concentrator topup --token {}",
            out.display(),
            out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_and_prints() {
        assert_eq!(parse_money("20.00").unwrap(), 2000);
        assert_eq!(parse_money("20").unwrap(), 2000);
        assert_eq!(parse_money("0.5").unwrap(), 50);
        for bad in [
            "",
            ".5",
            "1.234",
            "-1",
            "1e3",
            "1.x",
            "99999999999999999999",
        ] {
            assert!(parse_money(bad).is_err(), "{bad}");
        }
        assert_eq!(money(-250, "EUR"), "-2.50 EUR");
        assert_eq!(money_u(2000, "EUR"), "20.00 EUR");
    }
}
