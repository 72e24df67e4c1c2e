//! One money run: the block, the generator and the nemesis for a while, settling, then the checker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_system::{
    prereq, sibling_binary, unix_now, BrokerChoice, GatewayRun, HeadEndRun, Options, System,
};

use crate::checker::{self, Inputs};
use crate::clients::{self, MeterAt, Phone, Shared};
use crate::common::{
    customer_table, gateway_table, meter_table, meter_without_sim, sim_table, temp_dir,
    unplugged_bus_table, M, NO_FRIENDLY,
};
use crate::history::{eur, secs, History, OpKind, Outcome, Rng};
use crate::nemesis::{Nemesis, READ_BUS, UNPLUGGED_BUS};
use crate::observe::{final_states, settle_and_collect, wait_readings};

const GATEWAYS: [&str; 2] = ["gw-a", "gw-b"];
/// The tariff of `common::gateway_table`: 25 c/kWh in milli-cents.
pub const RATE: i64 = 25_000;
/// When the new meters (off the bus at the start: no account until their first reading) are
/// connected.
const NEW_METERS_AFTER: Duration = Duration::from_secs(20);

/// Per gateway: (meter, new: off the bus until it is connected). Customer C-1 has A1, A2, B3; C-2 has
/// B1, B2, A3.
pub fn meters() -> Vec<(usize, M, bool)> {
    let m = |number, address, load_w| M {
        number,
        address,
        load_w,
        opening_minor: 5_000,
    };
    vec![
        (0, m("A1", "000000000711", 6_000), false),
        (0, m("A2", "000000000712", 20_000), false),
        (0, m("A3", "000000000713", 3_000), true),
        (1, m("B1", "000000000721", 6_000), false),
        (1, m("B2", "000000000722", 20_000), false),
        (1, m("B3", "000000000723", 3_000), true),
    ]
}

fn spec(since: u64, unplugged_tty: &std::path::Path) -> String {
    let mut s = String::new();
    for (g, id) in GATEWAYS.iter().enumerate() {
        s.push_str(&gateway_table(id, NO_FRIENDLY, &[(READ_BUS, 1)]));
        s.push_str(&unplugged_bus_table(UNPLUGGED_BUS, unplugged_tty));
        for (_, m, new) in meters().iter().filter(|(mg, _, _)| *mg == g) {
            if *new {
                s.push_str(&meter_without_sim(id, UNPLUGGED_BUS, m));
            } else {
                s.push_str(&meter_table(id, READ_BUS, m, Some(since)));
            }
        }
    }
    s.push_str(&customer_table("C-1", 1, &["A1", "A2", "B3"]));
    s.push_str(&customer_table("C-2", 2, &["B1", "B2", "A3"]));
    s
}

fn seed() -> u64 {
    std::env::var("MONEY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// The whole run; panics with the checker's verdict when a promise broke.
pub fn money(name: &str, fault_time: Duration, settle: Duration) {
    if prereq::skip(prereq::mosquitto_missing()) {
        return;
    }
    let seed = seed();
    println!(
        "money test: seed {seed} (repeat with MONEY_SEED={seed}); {} of faults, settling up to {}",
        secs(fault_time),
        secs(settle)
    );
    let bin = |n: &str| sibling_binary(n).unwrap_or_else(|e| panic!("{e}"));
    let dir = temp_dir("money", name);
    let since = unix_now();
    let system = System::start(&Options {
        dir: dir.clone(),
        broker: BrokerChoice::Mosquitto,
        gateway: GatewayRun::Child {
            bin: bin("concentratord"),
        },
        headend: HeadEndRun::Child {
            bin: bin("concentrator-headend"),
        },
        spec: spec(since, &dir.join("unplugged-tty")),
        register: vec![
            ("C-1".into(), "alice".into(), "alice-pass-1".into()),
            ("C-2".into(), "bob".into(), "bob-pass-22".into()),
        ],
        key_lifetime_s: None,
        // Resend a top-up without a result after 10 s, reconcile pending ones every 15 s (the
        // defaults, 300 s and 900 s, are longer than the settling time).
        headend_settings: vec![
            ("reconcile".into(), "result_timeout_s".into(), 10),
            ("reconcile".into(), "interval_s".into(), 15),
        ],
        extra_acl: None,
    })
    .unwrap_or_else(|e| panic!("starting the system in {}: {e:#}", dir.display()));
    println!(
        "run directory: {} (history.txt, logs, stores)",
        dir.display()
    );

    let history = Arc::new(History::new(&dir.join("history.txt")));
    let phones: Vec<Phone> = [("alice", ["A1", "A2", "B3"]), ("bob", ["B1", "B2", "A3"])]
        .iter()
        .map(|(user, ms)| Phone {
            name: user.to_string(),
            server: system.phone_addr.to_string(),
            ca: system.ca.clone(),
            profile: system.profiles[*user].clone(),
            password: system.passwords[*user].clone(),
            meters: ms
                .iter()
                .map(|m| MeterAt {
                    meter: m.to_string(),
                    gateway: usize::from(m.starts_with('B')),
                })
                .collect(),
        })
        .collect();
    wait_readings(&phones, &system);

    let stop = Arc::new(AtomicBool::new(false));
    let store_locks = Arc::new(GATEWAYS.iter().map(|_| Mutex::new(())).collect::<Vec<_>>());
    let shared = Arc::new(Shared {
        gateway_configs: system.gateways.iter().map(|g| g.config.clone()).collect(),
        store_locks: store_locks.clone(),
        concentrator: bin("concentrator"),
        tokens_dir: dir.join("tokens"),
        history: history.clone(),
        stop: stop.clone(),
        inbox_percent: 25,
    });
    std::fs::create_dir_all(&shared.tokens_dir).unwrap();
    let system = Arc::new(Mutex::new(system));
    let mut nemesis = Nemesis {
        system: system.clone(),
        store_locks,
        history: history.clone(),
        rng: Rng::new(seed),
        kinds: Nemesis::kinds_from_env().unwrap_or_else(|e| panic!("{e:#}")),
        lost_stores: Vec::new(),
        counts: BTreeMap::new(),
        meters: (0..GATEWAYS.len())
            .map(|g| {
                meters()
                    .into_iter()
                    .filter(|(mg, _, new)| *mg == g && !new)
                    .map(|(_, m, _)| m.number.to_string())
                    .collect()
            })
            .collect(),
        new_meters: meters()
            .into_iter()
            .filter(|(_, _, new)| *new)
            .map(|(g, m, _)| (g, m.number.to_string()))
            .collect(),
        connect_at: Some(Instant::now() + NEW_METERS_AFTER),
        sims: meters()
            .into_iter()
            .map(|(_, m, _)| (m.number.to_string(), sim_table(&m, since)))
            .collect(),
    };
    let client_threads: Vec<_> = phones
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let (p, shared) = (p.clone(), shared.clone());
            std::thread::spawn(move || clients::run(p, seed.wrapping_add(n as u64 + 1), &shared))
        })
        .collect();
    let until = Instant::now() + fault_time;
    let nemesis_thread = std::thread::spawn(move || {
        let r = nemesis.run(until);
        (nemesis, r)
    });
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(15).min(until - Instant::now()));
        println!(
            "  {:>4} s: {} operations, {} faults",
            history.now_ms() / 1000,
            history.ops().len(),
            history.faults().len()
        );
    }
    stop.store(true, Ordering::SeqCst);
    for t in client_threads {
        if let Err(e) = t.join().unwrap() {
            panic!("a phone client could not run: {e}");
        }
    }
    let (mut nemesis, result) = nemesis_thread.join().unwrap();
    if let Err(e) = result.and_then(|()| nemesis.heal()) {
        panic!("the nemesis failed: {e:#}");
    }
    history.note("faults stopped; settling");
    let (mpc_history, repeats) = settle_and_collect(&phones, &system, settle);

    let mut system = system.lock().unwrap();
    for g in &mut system.gateways {
        g.stop(false).unwrap();
    }
    system.headend.stop(false).unwrap();
    let inputs = final_states(&system, &nemesis.lost_stores, mpc_history, history.ops());
    let verdict = checker::check(&inputs);
    report(&history, &nemesis, &inputs, &verdict, repeats, seed);
    if !verdict.violations.is_empty() {
        let lines: Vec<String> = verdict
            .violations
            .iter()
            .map(|v| format!("  meter {}: {}: {}", v.meter, v.check, v.detail))
            .collect();
        let all = dir.join("verdict.txt");
        let _ = std::fs::write(&all, lines.join("\n") + "\n");
        panic!(
            "the money checker found {} broken promises (seed {seed}; all of them in {}, the history in {}):\n{}",
            verdict.violations.len(),
            all.display(),
            dir.join("history.txt").display(),
            lines[..lines.len().min(40)].join("\n")
        );
    }
    drop(system);
    drop(nemesis);
    let _ = std::fs::remove_dir_all(&dir);
}

fn report(
    history: &History,
    nemesis: &Nemesis,
    inputs: &Inputs,
    verdict: &checker::Verdict,
    repeats: u64,
    seed: u64,
) {
    let mut out = Vec::new();
    let ops = history.ops();
    let count = |k: OpKind, o: fn(&Outcome) -> bool| {
        ops.iter().filter(|x| x.kind == k && o(&x.outcome)).count()
    };
    let retries: u32 = ops.iter().map(|o| o.retries).sum();
    let sends: u32 = inputs
        .tokens
        .values()
        .flatten()
        .map(|t| t.sends.saturating_sub(1))
        .sum();
    out.push(format!("\n=== money test, seed {seed}"));
    out.push(format!(
        "purchases: {} confirmed to phones, {} unknown (connection lost), {} recorded by the head-end for {}",
        count(OpKind::Buy, |o| *o == Outcome::Ok),
        count(OpKind::Buy, |o| *o != Outcome::Ok),
        verdict.purchases,
        eur(verdict.paid_minor)
    ));
    out.push(format!(
        "local inbox: {} tokens handed to `concentrator topup`, {} answered with a receipt",
        count(OpKind::Inbox, |_| true),
        count(OpKind::Inbox, |o| *o == Outcome::Ok)
    ));
    let total: u64 = nemesis.counts.values().sum();
    let by: Vec<String> = nemesis
        .counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    out.push(format!(
        "faults injected: {total} ({})",
        if by.is_empty() {
            "none".to_string()
        } else {
            by.join(", ")
        }
    ));
    out.push(format!("retries: {retries} phone retries, {sends} head-end resends, {repeats} commands the gateways answered as repeats since their last start"));
    out.push(format!(
        "applied: {} in the gateway ledgers; {} pending, {} refused at the head-end",
        eur(verdict.applied_minor),
        verdict.pending,
        verdict.refused
    ));
    out.push(format!(
        "store losses: {} stores replaced; {} tokens applied again in the newer store",
        nemesis.lost_stores.len(),
        verdict.reapplied_after_store_loss
    ));
    out.push(format!(
        "final differences: tokens {} (paid vs applied once), balances {}; {} broken promises",
        eur(verdict.token_difference_minor),
        eur(verdict.balance_difference_minor),
        verdict.violations.len()
    ));
    let mut by_check: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &verdict.violations {
        *by_check.entry(v.check).or_default() += 1;
    }
    for (c, n) in by_check {
        out.push(format!("  {n} x {c}"));
    }
    let text = out.join("\n");
    println!("{text}");
    // Also in target/money-report.txt: `cargo test` shows a passing test's output only with --nocapture.
    let file = prereq::target_file("money-report.txt");
    if let Err(e) = std::fs::write(&file, text + "\n") {
        eprintln!("cannot write {}: {e}", file.display());
    }
}
