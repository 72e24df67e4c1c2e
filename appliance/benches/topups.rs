//! Durable top-ups per second through the daemon's own path: the ledger thread ([`Prepay::start`], as
//! `concentratord` starts it) fed [`ToLedger::Token`] requests the way the uplink's command handler sends
//! them (`appliance/src/uplink/commands.rs`), each sender waiting for its answer, which the ledger thread
//! gives only after the store has flushed the top-up. 1,024 accounts on sled in a temporary directory of
//! the machine's disk; `CLIENTS` senders at once, each with its own meters and serials.
//!
//! Run: `cargo bench -p concentrator-appliance --bench topups` (`BENCH_TOPUPS` tokens per run, default
//! 2,000; `BENCH_CLIENTS` a comma-separated list of concurrencies, default `1,16,64`). Prints a text line
//! and a JSON line (`{"figure":...}`, read by tests/bench/peers.sh) per concurrency. Where the time goes
//! (fsyncs and their latency) tests/bench/peers.sh measures around this bench with `strace -c`.
//!
//! Not included: the MQTT hop and the envelope's decryption before the command handler (docs/uplink.md).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concentrator_appliance::config::{Config, LedgerSetup};
use concentrator_appliance::prepay::{
    Prepay, SchedulerHandles, ToLedger, TokenReply, TokenRequest,
};
use concentrator_appliance::status::StatusBoard;
use concentrator_ledger::archive::ArchivePolicy;
use concentrator_ledger::testkit::TestPki;
use concentrator_ledger::{Ledger, LedgerConfig, NewAccount, SledStore};

const METERS: usize = 1_024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn meter(i: usize) -> String {
    format!("M{i:04}")
}

/// The daemon's configuration for the book of meters (one simulated bus; the bus is not started).
fn config() -> Config {
    let mut text = String::from(
        "[gateway]\nid = \"gw-bench\"\nstore = \"/nonexistent\"\n\n[[bus]]\nname = \"rs485-1\"\nbackend = \"sim\"\nbaud = 9600\nformat = \"8E1\"\n",
    );
    for i in 0..METERS {
        text.push_str(&format!(
            "\n[[meter]]\nbus = \"rs485-1\"\naddress = \"{:012}\"\nmeter_id = \"{}\"\ndriver = \"dlt645\"\ndwelling = \"D{i:04}\"\npassword = \"02123456\"\n",
            i + 1,
            meter(i)
        ));
    }
    Config::parse("<topups bench>", &text).unwrap_or_else(|e| panic!("bench configuration: {e}"))
}

/// Top-ups per second with `clients` senders at once, `n` tokens in all.
fn run(pki: &TestPki, config: &Config, clients: usize, n: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!(
        "concentrator-topups-bench-{}-{clients}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut ledger_config = LedgerConfig::example("gw-bench");
    ledger_config.emergency.auto_select = true;
    {
        let mut l = Ledger::open(
            SledStore::open(&dir).unwrap_or_else(|e| panic!("bench store: {e}")),
            ledger_config.clone(),
            pki.verifier(),
            pki.gateway_signer().unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("bench ledger: {e}"));
        for i in 0..METERS {
            l.open_account(
                NewAccount {
                    meter_id: meter(i),
                    dwelling: format!("D{i:04}"),
                    model: None,
                    protected: false,
                    opening_balance_minor: 1_000_000,
                    opening_debt_minor: 0,
                    register_wh: 1_000_000,
                    meter_serial: Some(format!("{:012}", i + 1)),
                },
                concentrator_appliance::clock::unix_now(),
            )
            .unwrap_or_else(|e| panic!("bench account: {e}"));
        }
        l.flush().unwrap_or_else(|e| panic!("{e}"));
    }
    let now = concentrator_appliance::clock::unix_now();
    // Client c tops up meters c, c + clients, ... in turn; serials count up per meter.
    let tokens: Vec<Vec<(String, Vec<u8>)>> = (0..clients)
        .map(|c| {
            (0..n / clients)
                .map(|k| {
                    let m = (c + k * clients) % METERS;
                    let serial = 1 + ((c + k * clients) / METERS) as u64;
                    let t = pki
                        .token(&meter(m), serial, 500, now - 60, now + 86_400)
                        .unwrap_or_else(|e| panic!("{e}"));
                    (meter(m), t)
                })
                .collect()
        })
        .collect();
    let setup = LedgerSetup {
        config: ledger_config,
        verifier: pki.verifier(),
        signer: pki.gateway_signer().unwrap_or_else(|e| panic!("{e}")),
        store: dir.clone(),
        checkpoint: Duration::from_secs(900),
        inbox: None,
        restore_from_headend: false,
        audit_online_s: 7 * 86_400,
        archive: ArchivePolicy::default(),
    };
    let store = Prepay::open_store(&setup).unwrap_or_else(|e| panic!("{e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let prepay = Prepay::start(
        setup,
        store,
        config,
        Arc::new(StatusBoard::new("gw-bench", Vec::new())),
        stop.clone(),
        SchedulerHandles::default(),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let threads: Vec<_> = tokens
        .into_iter()
        .map(|mine| {
            let tx = prepay.sender();
            std::thread::spawn(move || {
                for (meter, token) in mine {
                    let (reply, answer) = channel();
                    tx.send(ToLedger::Token(TokenRequest {
                        meter,
                        token,
                        reply,
                    }))
                    .unwrap_or_else(|_| panic!("the ledger thread stopped"));
                    match answer.recv_timeout(Duration::from_secs(60)) {
                        Ok(TokenReply::Applied(_)) => {}
                        Ok(other) => panic!("a bench token was not applied: {other:?}"),
                        Err(e) => panic!("no answer from the ledger thread: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|_| panic!("a sender panicked"));
    }
    let rate = (n / clients * clients) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    prepay.join();
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = env_or("BENCH_TOPUPS", 2_000usize).max(1);
    let clients: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .filter(|c| *c > 0)
        .collect();
    let pki = TestPki::generate().unwrap_or_else(|e| panic!("{e}"));
    let config = config();
    for c in clients {
        let rate = run(&pki, &config, c, n.max(c));
        println!(
            "durable top-ups/s through the ledger thread, {c} senders at once, flushed before each answer: {rate:.0}"
        );
        println!("{{\"figure\":\"daemon_topups_per_s_{c}_senders\",\"value\":{rate:.1}}}");
    }
}
