//! `ledger-soak`: runs the ledger the way the daemon will, for the kill -9 harness
//! (`ledger/tests/crash_kill9.rs`) and for manual soak runs.
//!
//! Simulated meters consume energy as a pure function of wall time (so a restarted process reads the
//! registers a real meter would show); the head-end's token stream (a file of tokens signed once by the
//! harness, as the head-end keeps every token until it has the receipt) is delivered from the serial after
//! the last applied one, now and then re-delivering an applied token as a head-end does after a lost
//! acknowledgement; relay commands are obeyed at once. Every receipt is printed as
//! `ACK <meter> <serial> <amount> <balance>` *after* `apply_tokens` returned it, which is after the flush.
//!
//! Usage: `ledger-soak <store-dir> <pki-dir> <tokens-file> <epoch-ms> [<meters> [<max-seconds>]]`
//!
//! Tokens file: repeated `u8 meter length, meter, u64 serial, u32 length, signed token` (big-endian),
//! written by [`concentrator_ledger::testkit::write_token_stream`].

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow_free::{fail, Result};
use concentrator_ledger::testkit::{read_token_stream, SimMeter, TestPki};
use concentrator_ledger::{
    Ledger, LedgerConfig, NewAccount, Output, Reading, RelayAction, RelayState, SledStore,
    TopUpError,
};

/// Simulated seconds per real second.
pub const SPEED: u64 = 600;

mod anyhow_free {
    pub type Result<T> = std::result::Result<T, String>;
    pub fn fail<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
        move |e| format!("{what}: {e}")
    }
}

/// The simulated meters of a soak run (the harness uses the same list).
pub fn meters(n: usize) -> Vec<SimMeter> {
    (0..n)
        .map(|i| SimMeter {
            meter_id: format!("SOAK-{i:03}"),
            serial: format!("SN-{i:03}"),
            start_wh: 1_000_000 + i as u64 * 12_345,
            power_w: 300 + (i as u64 * 577) % 2_500,
        })
        .collect()
}

/// The soak configuration.
pub fn soak_config() -> LedgerConfig {
    let mut c = LedgerConfig::example("gw-soak");
    c.emergency.auto_select = true;
    c
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ledger-soak: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: ledger-soak <store-dir> <pki-dir> <tokens-file> <epoch-ms> [<meters> [<max-seconds>]]".into());
    }
    let store_dir = PathBuf::from(&args[0]);
    let pki = TestPki::load(&PathBuf::from(&args[1])).map_err(fail("loading the PKI"))?;
    let stream = read_token_stream(&std::fs::read(&args[2]).map_err(fail("reading the tokens"))?)
        .map_err(fail("tokens file"))?;
    let epoch_ms: u64 = args[3].parse().map_err(fail("epoch-ms"))?;
    let n: usize = args
        .get(4)
        .map_or(Ok(8), |s| s.parse())
        .map_err(fail("meters"))?;
    let max_s: u64 = args
        .get(5)
        .map_or(Ok(30), |s| s.parse())
        .map_err(fail("max-seconds"))?;
    let sims = meters(n);

    let store = SledStore::open(&store_dir).map_err(fail("opening the store"))?;
    let signer = pki.gateway_signer().map_err(fail("gateway key"))?;
    let mut ledger = Ledger::open(store, soak_config(), pki.verifier(), signer)
        .map_err(fail("opening the ledger"))?;
    let now = now_ms();
    for m in &sims {
        if ledger.account(&m.meter_id).is_none() {
            let spec = NewAccount {
                meter_id: m.meter_id.clone(),
                dwelling: format!("flat-{}", m.meter_id),
                model: None,
                protected: false,
                opening_balance_minor: 1_000,
                opening_debt_minor: 500,
                register_wh: m.register_at(epoch_ms, now, SPEED),
                meter_serial: Some(m.serial.clone()),
            };
            ledger
                .open_account(spec, now / 1_000)
                .map_err(fail("opening an account"))?;
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY").map_err(fail("stdout"))?;
    out.flush().map_err(fail("stdout"))?;

    let mut rng = now ^ u64::from(std::process::id()).rotate_left(32) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let started = now;
    while now_ms().saturating_sub(started) < max_s * 1_000 {
        let t_ms = now_ms();
        let t = t_ms / 1_000;
        let readings: Vec<Reading> = sims
            .iter()
            .map(|m| Reading {
                meter: m.meter_id.clone(),
                meter_serial: m.serial.clone(),
                register_wh: m.register_at(epoch_ms, t_ms, SPEED),
                at: t,
            })
            .collect();
        ledger.on_readings(&readings).map_err(fail("charging"))?;
        ledger.tick(t).map_err(fail("tick"))?;

        // The head-end's stream: 1-3 tokens, sometimes a re-delivery of one already applied.
        let mut batch = Vec::new();
        for _ in 0..1 + next() % 3 {
            let m = &sims[(next() % sims.len() as u64) as usize];
            let last = ledger
                .account(&m.meter_id)
                .and_then(|a| a.last_serial)
                .unwrap_or(0);
            let serial = if last > 0 && next() % 5 == 0 {
                last
            } else {
                last + 1
            };
            if let Some(token) = stream.get(&(m.meter_id.clone(), serial)) {
                if !batch.contains(&token) {
                    batch.push(token);
                }
            }
        }
        let refs: Vec<&[u8]> = batch.iter().map(|t| t.as_slice()).collect();
        for result in ledger.apply_tokens(&refs, t) {
            match result {
                Ok(r) => {
                    writeln!(
                        out,
                        "ACK {} {} {} {}",
                        r.receipt.meter_id,
                        r.receipt.serial,
                        r.receipt.amount_minor,
                        r.receipt.balance_after_minor
                    )
                    .map_err(fail("stdout"))?;
                    out.flush().map_err(fail("stdout"))?;
                }
                Err(TopUpError::Replayed { .. }) => {}
                Err(e) => return Err(format!("top-up failed: {e}")),
            }
        }
        // The meters obey relay commands.
        while let Some(o) = ledger.poll_output() {
            if let Output::Relay(c) = o {
                let state = match c.action {
                    RelayAction::Cut => RelayState::Open,
                    RelayAction::Reconnect => RelayState::Closed,
                    RelayAction::Arm => RelayState::Armed,
                };
                ledger
                    .relay_observed(&c.meter, state, t)
                    .map_err(fail("relay read-back"))?;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
