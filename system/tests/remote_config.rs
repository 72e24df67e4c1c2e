//! Issue #19, item 4, end to end with the real parts: Mosquitto, the head-end as its own process
//! (`concentrator-headend run`), `concentratord` on a simulated meter. A tariff issued with
//! `concentrator-headend tariff set` reaches the gateway, is answered with what changes and when
//! (`concentrator-headend commands`), survives a restart of the gateway across its in-force time, and
//! takes effect at its time: in the gateway's audit log every
//! charge before it is at the configured 25 c/kWh, every one after it at the new 40 c/kWh, and the
//! interval that straddles it is split at it. A configuration change of the log level is applied and
//! named; one of the uplink's keys is refused.
//!
//! Where Mosquitto is not installed the test fails with the install command, unless
//! `CONCENTRATOR_ALLOW_SKIP=1`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use concentrator_ledger::audit::{self, AuditEvent};
use concentrator_ledger::SledStore;
use concentrator_system::{
    prereq, sibling_binary, BrokerChoice, GatewayRun, HeadEndRun, Options, System,
};

mod common;

use common::{customer_table, gateway_table, meter_table, temp_dir, M, NO_FRIENDLY};

fn unix_now() -> u64 {
    concentrator_protocol::unix_now()
}

/// `concentrator-headend ARGS…`: its standard output, or the failure with its standard error.
fn headend_cli(args: &[&str]) -> String {
    let bin = sibling_binary("concentrator-headend").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "concentrator-headend {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `YYYY-MM-DD HH:MM:SS` of unix time `t` in UTC (the block's local time).
fn civil(t: u64) -> String {
    let date = concentrator_ledger::calendar::Date((t / 86_400) as i64);
    let s = t % 86_400;
    format!(
        "{date} {:02}:{:02}:{:02}",
        s / 3_600,
        s % 3_600 / 60,
        s % 60
    )
}

/// Every energy charge of `meter` in a stopped gateway's ledger: (interval start, end, Wh, micro).
fn charges(ledger: &Path, meter: &str) -> Vec<(u64, u64, u64, i64)> {
    let db = SledStore::open(ledger).unwrap();
    let mut out = Vec::new();
    let mut last_at = None;
    audit::walk(&db, |e| {
        if e.meter != meter {
            return Ok(());
        }
        match &e.event {
            AuditEvent::AccountOpened { .. }
            | AuditEvent::AccountRestored { .. }
            | AuditEvent::Rebaselined { .. } => last_at = Some(e.at),
            AuditEvent::Charge {
                from_wh,
                to_wh,
                micro,
                ..
            } => {
                out.push((last_at.unwrap_or(e.at), e.at, to_wh - from_wh, *micro));
                last_at = Some(e.at);
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    out
}

/// The charge of `wh` over `[from, to)` at `old` before `at` and `new` from it (milli-minor per kWh):
/// the straddling interval split by time, the part before rounded down.
fn expected(from: u64, to: u64, wh: u64, at: u64, old: i64, new: i64) -> i64 {
    let wh = wh as i64;
    if to <= at {
        wh * old
    } else if from >= at {
        wh * new
    } else {
        let before = wh * (at - from) as i64 / (to - from) as i64;
        before * old + (wh - before) * new
    }
}

fn wait_commands(
    config: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let until = Instant::now() + timeout;
    loop {
        let out = headend_cli(&["commands", "--config", config]);
        if done(&out) {
            return out;
        }
        assert!(Instant::now() < until, "{what}; commands shows:\n{out}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The block: one gateway, meter R1 at 360 kW (100 Wh a second, so every checkpoint, 5 s, charges),
/// its simulated register counting from `since` so it goes on across a restart of the gateway.
fn spec(since: u64) -> String {
    let m = M {
        number: "R1",
        address: "000000000501",
        load_w: 360_000,
        opening_minor: 1_000_000,
    };
    let mut s = gateway_table("gw-remote", NO_FRIENDLY, &[("rs485-1", 1)]);
    s.push_str(&meter_table("gw-remote", "rs485-1", &m, Some(since)));
    s.push_str(&customer_table("C-1", 1, &["R1"]));
    s
}

#[test]
fn a_tariff_issued_at_the_head_end_takes_effect_at_its_time_and_config_changes_are_answered() {
    if prereq::skip(prereq::mosquitto_missing()) {
        return;
    }
    let bin = |n: &str| sibling_binary(n).unwrap_or_else(|e| panic!("{e}"));
    let dir = temp_dir("e2e", "remote-config");
    let mut system = System::start(&Options {
        dir: dir.clone(),
        broker: BrokerChoice::Mosquitto,
        gateway: GatewayRun::Child {
            bin: bin("concentratord"),
        },
        headend: HeadEndRun::Child {
            bin: bin("concentrator-headend"),
        },
        spec: spec(unix_now()),
        register: vec![],
        key_lifetime_s: None,
        headend_settings: vec![("reconcile".into(), "result_timeout_s".into(), 10)],
        extra_acl: None,
    })
    .unwrap_or_else(|e| panic!("starting the system in {}: {e:#}", dir.display()));
    let config = system.headend_config.display().to_string();

    // Configuration first (it also waits for the gateway to attach): the log level is changed and
    // named; an uplink key is refused.
    headend_cli(&[
        "config",
        "set",
        "--config",
        &config,
        "--gateway",
        "gw-remote",
        "gateway.log_level=debug",
    ]);
    headend_cli(&[
        "config",
        "set",
        "--config",
        &config,
        "--gateway",
        "gw-remote",
        "uplink.keys=/tmp/other-keys.toml",
    ]);
    let shown = wait_commands(
        &config,
        "the configuration changes' answers",
        Duration::from_secs(90),
        |o| o.contains("DONE") && o.contains("REFUSED"),
    );
    assert!(
        shown.contains("→ \"debug\"; in effect now: gateway.log_level"),
        "{shown}"
    );
    assert!(
        shown.contains("uplink.keys cannot be changed remotely"),
        "{shown}"
    );

    // The operator's time sync: sent by the running head-end, answered with what the gateway did with
    // the head-end's clock (kept its own synchronised time, or stepped to the head-end's).
    headend_cli(&[
        "time",
        "sync",
        "--config",
        &config,
        "--gateway",
        "gw-remote",
    ]);
    // `commands` shows each command on one line and its state on the next.
    let answer = |o: &str| {
        let lines: Vec<&str> = o.lines().collect();
        lines
            .iter()
            .position(|l| l.contains("time sync"))
            .and_then(|i| lines.get(i + 1))
            .map(|l| l.to_string())
    };
    let shown = wait_commands(
        &config,
        "the time sync's answer",
        Duration::from_secs(60),
        |o| answer(o).is_some_and(|a| a.contains("DONE")),
    );
    let line = answer(&shown).unwrap_or_default();
    assert!(
        line.contains("clock"),
        "the gateway says what it did: {line}"
    );

    // Tariff 7: 40 c/kWh every day from 25 s from now (the block's local time is UTC).
    let in_force = unix_now() + 25;
    let tariff = dir.join("tariff.toml");
    std::fs::write(
        &tariff,
        format!(
            "tariff_id = 7\nin_force_from = \"{}\"\nutc_offset_minutes = 0\nstanding_charge_minor_per_day = 0\n\n[[rate]]\nid = 1\nminor_per_kwh = \"40\"\n\n[[switch]]\ndays = [\"every_day\"]\nfrom = \"00:00\"\nrate = 1\n",
            civil(in_force)
        ),
    )
    .unwrap();
    let issued = headend_cli(&[
        "tariff",
        "set",
        "--config",
        &config,
        "--gateway",
        "gw-remote",
        "--file",
        &tariff.display().to_string(),
    ]);
    assert!(
        issued.contains("issued for gateway gw-remote: tariff 7"),
        "{issued}"
    );
    let shown = wait_commands(
        &config,
        "the tariff's answer",
        Duration::from_secs(30),
        // log_level, the time sync and the tariff.
        |o| o.matches("DONE").count() == 3,
    );
    assert!(
        !shown.contains("received later") && unix_now() < in_force,
        "the tariff was answered after its in-force time; the test cannot tell the prices apart:\n{shown}"
    );
    assert!(
        shown.contains(&format!(
            "tariff 7 in force from {} local time (UTC+00:00), replacing the configured tariff",
            &civil(in_force)[..16]
        )),
        "{shown}"
    );

    // The gateway is down across the in-force time and starts again with the tariff scheduled: the
    // first charge after the start covers an interval that straddles it.
    while unix_now() + 6 < in_force {
        std::thread::sleep(Duration::from_millis(200));
    }
    system.stop_gateway(false).unwrap();
    while unix_now() < in_force + 2 {
        std::thread::sleep(Duration::from_millis(200));
    }
    system.start_gateway().unwrap();

    // Charges well past the in-force time, then the gateway's audit log.
    while unix_now() < in_force + 20 {
        std::thread::sleep(Duration::from_millis(500));
    }
    system.stop_gateway(false).unwrap();
    let charges = charges(&system.gateway_store.join("ledger"), "R1");
    let before = charges.iter().filter(|c| c.1 <= in_force).count();
    let after = charges.iter().filter(|c| c.0 >= in_force).count();
    assert!(before >= 2 && after >= 2, "{charges:?}");
    assert!(
        charges.iter().any(|c| c.0 < in_force && c.1 > in_force),
        "no charge straddles the change although the gateway was down across it: {charges:?}"
    );
    for &(from, to, wh, micro) in &charges {
        assert_eq!(
            micro,
            expected(from, to, wh, in_force, 25_000, 40_000),
            "charge of {wh} Wh over {from}..{to} (tariff 7 from {in_force})"
        );
    }
    system.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
