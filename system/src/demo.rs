//! The demo: the block of `system/demo-block.toml` with Alice and Bob registered, and a view of it every
//! few seconds until Ctrl-C.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::{BrokerChoice, GatewayRun, HeadEndRun, Options, System};

/// The demo block (provisioning file).
pub const BLOCK: &str = include_str!("../demo-block.toml");

/// The demo's customers: (customer id, user name, password).
pub fn customers() -> Vec<(String, String, String)> {
    vec![
        ("C-0001".into(), "alice".into(), "demo-alice".into()),
        ("C-0002".into(), "bob".into(), "demo-bob".into()),
    ]
}

/// The demo's options for `dir` and `broker`.
pub fn options(dir: &Path, broker: BrokerChoice) -> Options {
    Options {
        dir: dir.to_path_buf(),
        broker,
        gateway: GatewayRun::InProcess,
        headend: HeadEndRun::InProcess,
        spec: BLOCK.to_string(),
        register: customers(),
        key_lifetime_s: None,
        headend_settings: Vec::new(),
        extra_acl: None,
    }
}

fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:02}",
        minor.unsigned_abs() / 100,
        minor.unsigned_abs() % 100
    )
}

/// Writes what to try, for people.
pub fn instructions(system: &System, out: &mut dyn Write) -> Result<()> {
    let alice = system
        .profiles
        .get("alice")
        .ok_or_else(|| anyhow!("alice is not registered"))?;
    let bob = system
        .profiles
        .get("bob")
        .ok_or_else(|| anyhow!("bob is not registered"))?;
    writeln!(
        out,
        "\nThe system runs:\n\
         - broker: {}\n\
         - head-end (payment server): {}, phones on {}; the customers' web app: https://{}/ (\"Use this profile\" with a profile below)\n\
         - gateway {} on simulated RS485 and Zigbee meters: {}\n\
         - customers registered with their authorization codes: alice (MTR-0001, MTR-0002, ZB-0005), bob (MTR-0003, MTR-0004, ZB-0006)\n\
         \n\
         In another terminal, as Alice:\n\
         \x20 export MPC_PROFILE={} MPC_PASSWORD={}\n\
         \x20 alias mpc='cargo run -q -p concentrator-mpc --bin mpc --'\n\
         \x20 mpc meters                   # her meters: balance, supply, last reading\n\
         \x20 mpc topup MTR-0002 5.00      # MTR-0002 runs out of credit within a minute and is cut off; this brings it back\n\
         \x20 mpc watch                    # low-credit alerts and receipts, pushed as the gateway reports them\n\
         \x20 mpc history\n\
         Or in a browser on this machine, the customers' web app: {} (accept the pilot's certificate once; \"Use this profile\" with Alice's profile file above and her password)\n\
         As Bob: MPC_PROFILE={} MPC_PASSWORD={}\n\
         The gateway: cargo run -q --bin concentrator -- status --store {}\n\
         Everything is under {}; Ctrl-C stops it.\n",
        system.broker.description,
        system.headend_config.display(),
        system.phone_addr,
        system.headend.web_addr().map_or("(not started)".into(), |a| a.to_string()),
        system.gateway_id,
        system.gateway_config.display(),
        alice.display(),
        system.passwords.get("alice").map_or("", String::as_str),
        system
            .headend
            .web_addr()
            .map_or("(not started)".into(), |a| format!("https://{a}/")),
        bob.display(),
        system.passwords.get("bob").map_or("", String::as_str),
        system.gateway_store.display(),
        system.dir.display(),
    )?;
    Ok(())
}

/// One line per meter from the head-end's view: what the gateway reported.
pub fn view(system: &System, out: &mut dyn Write) -> Result<()> {
    let store = system.store()?;
    let mut meters = store.meters().map_err(|e| anyhow!("{e}"))?;
    meters.sort_by(|a, b| a.meter.cmp(&b.meter));
    let now = crate::unix_now();
    writeln!(
        out,
        "{:<9} {:<6} {:>9} {:<7} {:>13}  last report",
        "meter", "flat", "balance", "supply", "import kWh"
    )?;
    for m in meters {
        let v = &m.view;
        writeln!(
            out,
            "{:<9} {:<6} {:>9} {:<7} {:>13}  {}",
            m.meter,
            m.dwelling,
            v.balance_minor.map_or("?".into(), money),
            match v.supply_on {
                Some(true) => "on",
                Some(false) => "CUT",
                None => "?",
            },
            v.last_reading_wh
                .map_or("?".into(), |wh| format!("{}.{:03}", wh / 1000, wh % 1000)),
            v.last_reading_at
                .or(v.balance_at)
                .map_or("none yet (attaching)".into(), |t| format!(
                    "{} s ago",
                    now.saturating_sub(t)
                )),
        )?;
    }
    Ok(())
}

/// Runs the demo until `stop` is set.
pub fn run(dir: &Path, broker: BrokerChoice, stop: &Arc<AtomicBool>) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(
        out,
        "concentrator-system: setting up a pilot in {} ...",
        dir.display()
    )?;
    let mut system = System::start(&options(dir, broker))?;
    instructions(&system, &mut out)?;
    let started = Instant::now();
    let mut attached = false;
    let mut last = Instant::now() - Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) {
        if !system.gateway_running() {
            return Err(anyhow!("the gateway stopped; its log is above"));
        }
        if !attached && system.unattached()?.is_empty() {
            attached = true;
            writeln!(
                out,
                "\nevery meter attached (AKA with the head-end, TIDs assigned) after {} s; readings flow",
                started.elapsed().as_secs()
            )?;
        }
        if last.elapsed() >= Duration::from_secs(10) {
            writeln!(out)?;
            view(&system, &mut out)?;
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    writeln!(out, "stopping ...")?;
    system.stop()
}
