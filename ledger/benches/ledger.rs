//! Ledger figures (run with `cargo bench -p concentrator-ledger --bench ledger`): durable top-ups per
//! second with and without group commit, charge checkpoints per second for 1,024 meters, and the store
//! size after a simulated year of 15-minute readings for 1,024 meters (measured over `BENCH_DAYS`
//! simulated days, default 3, and extrapolated linearly: the store holds one audit entry per checkpoint
//! plus one account record per meter, so it grows linearly with readings), and the same with the audit
//! log archived daily below the previous day's anchor (`BENCH_ARCHIVE_DAYS` simulated days, default 14:
//! the store's size each day and its growth once it settles, and what the live data in it is).
//!
//! Besides the text, every figure tests/bench/peers.sh tabulates is printed once more as one JSON object
//! on a line of its own (`{"figure":...,"value":...}`). `BENCH_ONLY=topups,archived` (any of `topups`,
//! `checkpoints`, `size`, `archived`) runs only those parts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use concentrator_ledger::testkit::TestPki;
use concentrator_ledger::{Ledger, LedgerConfig, NewAccount, Reading, SledStore, Store};

const METERS: usize = 1_024;
const T0: u64 = 1_717_416_000; // 2024-06-03 12:00 UTC

/// One figure as a JSON line for tests/bench/peers.sh.
fn json(figure: &str, value: f64) {
    println!("{{\"figure\":\"{figure}\",\"value\":{value:.3}}}");
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ledger-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn du(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn ledger(path: &Path, pki: &TestPki, meters: usize) -> Ledger<SledStore> {
    let mut config = LedgerConfig::example("gw-bench");
    config.emergency.auto_select = true;
    let mut l = Ledger::open(
        SledStore::open(path).unwrap(),
        config,
        pki.verifier(),
        pki.gateway_signer().unwrap(),
    )
    .unwrap();
    for i in 0..meters {
        l.open_account(
            NewAccount {
                meter_id: format!("M{i:04}"),
                dwelling: format!("D{i:04}"),
                model: None,
                protected: false,
                opening_balance_minor: 1_000_000,
                opening_debt_minor: 0,
                register_wh: 1_000_000,
                meter_serial: Some(format!("SN{i:04}")),
            },
            T0,
        )
        .unwrap();
    }
    l
}

fn topups(pki: &TestPki) {
    let n = 400;
    let tokens: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            pki.token(
                &format!("M{:04}", i % 64),
                1 + i as u64 / 64,
                500,
                T0 - 60,
                T0 + 86_400,
            )
            .unwrap()
        })
        .collect();
    let p = dir("topup-single");
    let mut l = ledger(&p, pki, 64);
    let start = Instant::now();
    for t in &tokens {
        l.apply_token(t, T0).unwrap();
    }
    let single = n as f64 / start.elapsed().as_secs_f64();
    drop(l);
    let _ = std::fs::remove_dir_all(&p);

    let p = dir("topup-group");
    let mut l = ledger(&p, pki, 64);
    let start = Instant::now();
    for chunk in tokens.chunks(16) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        for r in l.apply_tokens(&refs, T0) {
            r.unwrap();
        }
    }
    let group = n as f64 / start.elapsed().as_secs_f64();
    drop(l);
    let _ = std::fs::remove_dir_all(&p);
    println!("durable top-ups/s, one flush each:            {single:>10.0}");
    println!("durable top-ups/s, group commit of 16:        {group:>10.0}");
    json("ledger_topups_per_s_one_flush_each", single);
    json("ledger_topups_per_s_group_of_16", group);
}

fn readings(slot: u64) -> Vec<Reading> {
    (0..METERS)
        .map(|i| Reading {
            meter: format!("M{i:04}"),
            meter_serial: format!("SN{i:04}"),
            // 100-400 W average: 25-100 Wh per 15 minutes.
            register_wh: 1_000_000 + slot * (25 + (i as u64 * 7) % 75),
            at: T0 + slot * 900,
        })
        .collect()
}

fn checkpoints(pki: &TestPki) {
    let p = dir("checkpoints");
    let mut l = ledger(&p, pki, METERS);
    let rounds = 10;
    let start = Instant::now();
    for slot in 1..=rounds {
        l.on_readings(&readings(slot)).unwrap();
    }
    let batched = (rounds as usize * METERS) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for slot in rounds + 1..=2 * rounds {
        for r in readings(slot) {
            l.on_register(&r.meter, &r.meter_serial, r.register_wh, r.at)
                .unwrap();
        }
    }
    let single = (rounds as usize * METERS) as f64 / start.elapsed().as_secs_f64();
    drop(l);
    let _ = std::fs::remove_dir_all(&p);
    println!("charge checkpoints/s, 1,024 meters, one commit per cycle: {batched:>8.0}");
    println!("charge checkpoints/s, 1,024 meters, one commit each:      {single:>8.0}");
}

fn store_size(pki: &TestPki) {
    let days: u64 = std::env::var("BENCH_DAYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let p = dir("year");
    let mut l = ledger(&p, pki, METERS);
    let start = Instant::now();
    for slot in 1..=days * 96 {
        l.on_readings(&readings(slot)).unwrap();
        if slot % 96 == 0 {
            l.tick(T0 + slot * 900).unwrap();
        }
    }
    l.flush().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let mut audit_bytes = 0u64;
    let mut entries = 0u64;
    concentrator_ledger::store::for_each(
        l.store(),
        concentrator_ledger::store::Keyspace::Audit,
        |k, v| {
            audit_bytes += (k.len() + v.len()) as u64;
            entries += 1;
            Ok(())
        },
    )
    .unwrap();
    let sled_size = l.store().size_on_disk().unwrap();
    drop(l);
    let on_disk = du(&p);
    let checkpoints = days * 96 * METERS as u64;
    let per = on_disk as f64 / checkpoints as f64;
    println!(
        "simulated {days} days x 96 readings x 1,024 meters = {checkpoints} checkpoints in {elapsed:.1} s"
    );
    println!(
        "  audit log: {entries} entries, {:.1} bytes/entry (key + body + hash) before sled overhead",
        audit_bytes as f64 / entries as f64
    );
    println!(
        "  store on disk: {:.1} MiB (sled reports {:.1} MiB), {per:.1} bytes per checkpoint",
        on_disk as f64 / 1_048_576.0,
        sled_size as f64 / 1_048_576.0
    );
    println!(
        "  extrapolated to a year (35,040 readings per meter): {:.2} GiB",
        per * 35_040.0 * METERS as f64 / 1_073_741_824.0
    );
    json(
        "store_mib_per_year_unarchived",
        per * 35_040.0 * METERS as f64 / 1_048_576.0,
    );
    let _ = std::fs::remove_dir_all(&p);
}

fn store_growth_archived(pki: &TestPki) {
    use concentrator_ledger::anchor::AuditAnchor;
    use concentrator_ledger::archive::ArchivePolicy;
    let days: u64 = std::env::var("BENCH_ARCHIVE_DAYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14)
        .max(4);
    let p = dir("archived");
    let mut l = ledger(&p, pki, METERS);
    let policy = ArchivePolicy {
        dir: None,
        ..ArchivePolicy::default()
    };
    let mut acknowledged: Option<AuditAnchor> = None;
    let mut sizes = Vec::new();
    let start = Instant::now();
    let mut archived = 0u64;
    for day in 1..=days {
        for q in 1..=96 {
            let slot = (day - 1) * 96 + q;
            l.on_readings(&readings(slot)).unwrap();
        }
        l.tick(T0 + day * 96 * 900).unwrap();
        l.flush().unwrap();
        // The head-end acknowledged yesterday's summary, with yesterday's anchor: archive below it.
        if let Some(anchor) = acknowledged {
            loop {
                let r = l
                    .archive_through(&anchor, &policy, T0 + day * 86_400)
                    .unwrap();
                archived += r.entries;
                if r.entries == 0 {
                    break;
                }
            }
        }
        acknowledged = Some(AuditAnchor::of(&l.audit_head()));
        sizes.push(du(&p));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "archived daily below the previous day's anchor, {days} days x 96 readings x 1,024 meters in {elapsed:.1} s ({archived} entries archived)"
    );
    let line: Vec<String> = sizes.iter().map(|b| format!("{:.1}", mib(*b))).collect();
    println!(
        "  store on disk at the end of each day, MiB: {}",
        line.join(" ")
    );
    // Growth once settled: the least-squares slope of the daily sizes over the second half of the run
    // (sled frees log segments lazily, so the size steps up and down; two end points alone swing).
    let half = sizes.len() / 2;
    let window: Vec<(f64, f64)> = sizes[half - 1..]
        .iter()
        .enumerate()
        .map(|(d, b)| (d as f64, *b as f64))
        .collect();
    let n = window.len() as f64;
    let (mx, my) = (
        window.iter().map(|w| w.0).sum::<f64>() / n,
        window.iter().map(|w| w.1).sum::<f64>() / n,
    );
    let per_day = window.iter().map(|w| (w.0 - mx) * (w.1 - my)).sum::<f64>()
        / window.iter().map(|w| (w.0 - mx).powi(2)).sum::<f64>();
    let to = sizes[sizes.len() - 1];
    let (low, high) = window
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), w| (l.min(w.1), h.max(w.1)));
    println!(
        "  growth over days {half}-{days} (least-squares slope): {:.2} MiB/day, extrapolated {:.0} MiB a year; the store between {:.1} and {:.1} MiB in those days, {:.1} MiB at the end",
        per_day / 1_048_576.0,
        per_day * 365.0 / 1_048_576.0,
        low / 1_048_576.0,
        high / 1_048_576.0,
        mib(to)
    );
    json("store_mib_per_year_archived", per_day * 365.0 / 1_048_576.0);
    json("store_mib_low_archived", low / 1_048_576.0);
    json("store_mib_high_archived", high / 1_048_576.0);
    json("store_mib_at_end_archived", mib(to));
    // What the store holds at the end: the live keys and values per keyspace, against the files.
    let mut live_total = 0u64;
    let mut parts = Vec::new();
    for ks in concentrator_ledger::store::Keyspace::ALL {
        let (mut bytes, mut n) = (0u64, 0u64);
        concentrator_ledger::store::for_each(l.store(), ks, |k, v| {
            bytes += (k.len() + v.len()) as u64;
            n += 1;
            Ok(())
        })
        .unwrap();
        live_total += bytes;
        parts.push(format!("{} {n} keys {:.2} MiB", ks.name(), mib(bytes)));
        json(&format!("store_live_mib_{}", ks.name()), mib(bytes));
    }
    drop(l);
    println!(
        "  live data at the end: {:.2} MiB ({}); on disk {:.1} MiB: the rest is sled's log (old versions not yet reclaimed, page headers)",
        mib(live_total),
        parts.join(", "),
        mib(du(&p))
    );
    json("store_live_mib_total", mib(live_total));
    let _ = std::fs::remove_dir_all(&p);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let pki = TestPki::generate().unwrap();
    if run("topups") {
        topups(&pki);
    }
    if run("checkpoints") {
        checkpoints(&pki);
    }
    if run("size") {
        store_size(&pki);
    }
    if run("archived") {
        store_growth_archived(&pki);
    }
}
