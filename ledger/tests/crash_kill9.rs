//! The kill -9 harness: runs `ledger-soak` (the engine as the daemon will run it, on sled, with simulated
//! meters and a stream of top-ups), kills it with SIGKILL at a random moment 5–60 ms after it is ready,
//! restarts it, and after every kill checks from the store alone that:
//! - the store opens and the audit chain verifies;
//! - every receipt the child printed (acknowledged) is in the store, with its amount: nothing lost;
//! - every serial is applied exactly once (audit log and token records agree): nothing applied twice;
//! - each balance equals opening + Σ tokens − Σ charges recomputed from the audit log, every energy charge's
//!   rounding re-derived, the register checkpoints joined up, and no checkpoint ahead of the meter.
//!
//! `CRASH_KILLS` (default 200) sets the number of kills, `CRASH_SEED` the seed (printed either way).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use concentrator_ledger::testkit::{
    check_after_crash, write_token_stream, Acknowledged, SimMeter, TestPki,
};
use concentrator_ledger::{load_accounts, SledStore};
use rand::{Rng, SeedableRng};

const METERS: usize = 8;
const SPEED: u64 = 600;

fn sims() -> Vec<SimMeter> {
    // Must match ledger-soak's `meters`.
    (0..METERS)
        .map(|i| SimMeter {
            meter_id: format!("SOAK-{i:03}"),
            serial: format!("SN-{i:03}"),
            start_wh: 1_000_000 + i as u64 * 12_345,
            power_w: 300 + (i as u64 * 577) % 2_500,
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Run {
    acks: Vec<(String, u64, u64)>,
    ready: bool,
    killed: bool,
    stderr: String,
    lines: usize,
}

fn run_once(dir: &Path, pki_dir: &Path, epoch_ms: u64, kill_after: Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-soak"))
        .arg(dir.join("store"))
        .arg(pki_dir)
        .arg(dir.join("tokens.bin"))
        .arg(epoch_ms.to_string())
        .arg(METERS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledger-soak");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut lines = Vec::new();
    let mut ready = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) if l == "READY" => {
                ready = true;
                break;
            }
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if ready {
        std::thread::sleep(kill_after);
    }
    let _ = child.kill(); // SIGKILL
    let status = child.wait().expect("wait for ledger-soak");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let acks = lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.first() == Some(&"ACK")).then(|| {
                (
                    f[1].to_string(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                )
            })
        })
        .collect();
    Run {
        acks,
        ready,
        killed: std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
        stderr: err_reader.join().unwrap(),
        lines: lines.len(),
    }
}

#[test]
fn kill_9_at_random_moments_never_loses_or_doubles_money() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_ms);
    println!("kill -9 harness: {kills} kills, CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ledger-kill9-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    let pki = TestPki::generate().unwrap();
    pki.save(&dir.join("pki")).unwrap();
    // The head-end's tokens, signed once (it keeps every token until it has the receipt).
    let ids: Vec<String> = sims().iter().map(|s| s.meter_id.clone()).collect();
    let per_meter = (kills as u64 / 2).max(64);
    write_token_stream(
        &pki,
        &ids,
        per_meter,
        now_ms() / 1_000 - 3_600,
        &dir.join("tokens.bin"),
    )
    .unwrap();
    let epoch_ms = now_ms();
    let sims = sims();
    let mut acked = Acknowledged::new();
    let mut total_entries = 0;
    let started = Instant::now();
    for kill in 0..kills {
        let after = Duration::from_millis(rng.gen_range(5..=60));
        let run = run_once(&dir, &dir.join("pki"), epoch_ms, after);
        assert!(
            run.ready && run.killed && run.stderr.is_empty(),
            "kill {kill} (seed {seed}): the child did not run until killed (ready {}, killed {}, {} lines): {}",
            run.ready,
            run.killed,
            run.lines,
            run.stderr
        );
        for (meter, serial, amount) in run.acks {
            let previous = acked.insert((meter.clone(), serial), amount);
            assert!(
                previous.is_none(),
                "kill {kill} (seed {seed}): {meter} serial {serial} acknowledged twice"
            );
        }
        // The store opens, and everything acknowledged is in it, exactly once.
        let store = SledStore::open(&dir.join("store"))
            .unwrap_or_else(|e| panic!("kill {kill} (seed {seed}): store does not open: {e}"));
        let report = check_after_crash(&store, &acked)
            .unwrap_or_else(|e| panic!("kill {kill} (seed {seed}): {e}"));
        total_entries = report.audit.entries;
        let now = now_ms();
        for (meter, a) in load_accounts(&store).unwrap() {
            let sim = sims.iter().find(|s| s.meter_id == meter).unwrap();
            assert!(
                a.register.wh <= sim.register_at(epoch_ms, now, SPEED),
                "kill {kill} (seed {seed}): {meter} charged beyond its register"
            );
        }
    }
    println!(
        "kill -9 harness: {kills} kills in {:.1} s, {} acknowledged top-ups, {total_entries} audit entries, all invariants held",
        started.elapsed().as_secs_f64(),
        acked.len()
    );
    assert!(
        !acked.is_empty(),
        "no top-up was ever acknowledged: the kills came too early"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
