//! The kill -9 loop against `concentratord` itself: the daemon runs prepayment on simulated DL/T 645
//! meters (two buses, meters that consume fast), a stream of top-up tokens is dropped into its token
//! inbox while it runs (with now and then a re-delivery of a token already applied), and it is killed
//! with SIGKILL at a random moment, restarted, killed again. After every kill, from the store alone:
//! - the store opens, the audit chain verifies, every balance and charge recomputes from the log and the
//!   registers, and every serial is applied once (`testkit::check_after_crash`, shared with the ledger's
//!   own harness);
//! - every receipt the daemon wrote (`inbox/done/*.receipt`, which it writes only after the flush) is a
//!   token in the store with its amount: no acknowledged top-up is lost;
//! - no register checkpoint is ahead of what the meter can have counted.
//!
//! The emulated meters count as if they had run since the test started (`running_since_unix`), so their
//! registers survive the daemon's restarts as a real meter's do.
//!
//! `CRASH_KILLS` (default 200) sets the number of kills, `CRASH_SEED` the seed (printed either way).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{drop_token, temp_dir, unix_now, write_setup, TestMeter};
use concentrator_ledger::audit::{self, AuditEvent};
use concentrator_ledger::testkit::{check_after_crash, Acknowledged, TestPki};
use concentrator_ledger::{load_accounts, RelayAction, SledStore, TopUpReceipt};

/// 2.50 a kWh: with the meters' hundreds of kW, credit moves by tens of cents a second.
const RATE: u64 = 250_000;

/// A small seeded generator (xorshift64*), so a failing run replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn meters() -> Vec<TestMeter> {
    (0..4)
        .map(|i| TestMeter {
            bus: if i < 2 { "a" } else { "b" },
            address: format!("0000000003{i:02}"),
            meter_id: format!("K-{i}"),
            load_w: 400_000 + 100_000 * i as u32,
            start_kwh: 1_000.0 * f64::from(i + 1),
            opening_minor: 20,
        })
        .collect()
}

fn spawn(config: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_concentratord"))
        .arg("--config")
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn concentratord");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The head-end's side: the next serial per meter, the tokens signed so far (for re-deliveries).
struct HeadEnd {
    pki: TestPki,
    next: BTreeMap<String, u64>,
    issued: Vec<(String, u64, Vec<u8>)>,
    redeliveries: u64,
}

impl HeadEnd {
    fn drop_one(&mut self, rng: &mut Rng, inbox: &Path, meters: &[TestMeter]) {
        if !self.issued.is_empty() && rng.range(0, 8) == 0 {
            let (meter, serial, token) =
                &self.issued[rng.range(0, self.issued.len() as u64) as usize];
            self.redeliveries += 1;
            drop_token(
                inbox,
                &format!("{meter}-{serial:06}-again{}", self.redeliveries),
                token,
            );
            return;
        }
        let meter = &meters[rng.range(0, meters.len() as u64) as usize].meter_id;
        let serial = self.next.entry(meter.clone()).or_insert(0);
        *serial += 1;
        let now = unix_now();
        let amount = rng.range(20, 160);
        let token = self
            .pki
            .token(meter, *serial, amount, now - 3_600, now + 86_400)
            .unwrap();
        drop_token(inbox, &format!("{meter}-{serial:06}"), &token);
        self.issued.push((meter.clone(), *serial, token));
    }
}

/// Reads the receipts written since the last call into `acked`.
fn collect_receipts(done: &Path, seen: &mut HashSet<String>, acked: &mut Acknowledged) {
    let Ok(entries) = std::fs::read_dir(done) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".receipt") || !seen.insert(name.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let r = TopUpReceipt::from_signed(hex::decode(text.trim()).unwrap())
            .unwrap_or_else(|e| panic!("receipt {name} does not decode: {e}"));
        let previous = acked.insert(
            (r.receipt.meter_id.clone(), r.receipt.serial),
            r.receipt.amount_minor,
        );
        assert!(
            previous.is_none_or(|a| a == r.receipt.amount_minor),
            "receipt {name} disagrees with an earlier one"
        );
    }
}

#[test]
fn kill_9_of_the_daemon_never_loses_or_doubles_money() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| unix_now() ^ u64::from(std::process::id()) << 20);
    println!("concentratord kill -9 loop: {kills} kills, CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = temp_dir(&format!("kill9-{seed}"));
    let meters = meters();
    let epoch = unix_now();
    let (config, pki) = write_setup(&dir, &meters, RATE, 1, Some(epoch));
    let inbox = dir.join("inbox");
    let mut head_end = HeadEnd {
        pki,
        next: BTreeMap::new(),
        issued: Vec::new(),
        redeliveries: 0,
    };
    let mut acked = Acknowledged::new();
    let mut seen = HashSet::new();
    let mut entries = 0;
    let started = Instant::now();
    for kill in 0..kills {
        let (mut child, lines) = spawn(&config);
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ready = false;
        while !ready && Instant::now() < deadline {
            match lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    ready = line.contains("ledger ready");
                    log.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Tokens arrive while it runs; the kill comes 20 ms to 1.5 s after the ledger is up.
        let kill_at = Instant::now() + Duration::from_millis(rng.range(20, 1_500));
        while ready && Instant::now() < kill_at {
            if rng.range(0, 5) == 0 {
                head_end.drop_one(&mut rng, &inbox, &meters);
            }
            std::thread::sleep(
                Duration::from_millis(rng.range(20, 150))
                    .min(kill_at.saturating_duration_since(Instant::now())),
            );
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        log.extend(lines.try_iter());
        let log = log.join("\n");
        assert!(
            ready && std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
            "kill {kill} (seed {seed}): the daemon did not run until killed ({status:?}):\n{log}"
        );
        assert!(
            !log.contains(" ERROR ") && !log.contains("panicked"),
            "kill {kill} (seed {seed}): errors logged:\n{log}"
        );

        collect_receipts(&inbox.join("done"), &mut seen, &mut acked);
        let store = SledStore::open(&dir.join("store/ledger"))
            .unwrap_or_else(|e| panic!("kill {kill} (seed {seed}): the store does not open: {e}"));
        let report = check_after_crash(&store, &acked)
            .unwrap_or_else(|e| panic!("kill {kill} (seed {seed}): {e}"));
        entries = report.audit.entries;
        let now = unix_now() + 1;
        for (meter, account) in load_accounts(&store).unwrap() {
            let m = meters.iter().find(|m| m.meter_id == meter).unwrap();
            let most = (m.start_kwh * 1_000.0) as u64 + u64::from(m.load_w) * (now - epoch) / 3_600;
            assert!(account.register.wh <= most, "kill {kill} (seed {seed}): {meter} checkpoint {} Wh is ahead of its meter ({most} Wh at most)", account.register.wh);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let store = SledStore::open(&dir.join("store/ledger")).unwrap();
    let (mut cuts, mut reconnects) = (0, 0);
    audit::walk(&store, |e| {
        if let AuditEvent::RelayResult {
            action, ok: true, ..
        } = e.event
        {
            match action {
                RelayAction::Cut => cuts += 1,
                RelayAction::Reconnect => reconnects += 1,
                RelayAction::Arm => {}
            }
        }
        Ok(())
    })
    .unwrap();
    let pending = std::fs::read_dir(&inbox)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "token"))
        .count();
    println!(
        "concentratord kill -9 loop: {kills} kills in {elapsed:.1} s, {} tokens dropped ({} re-deliveries), {} top-ups acknowledged by receipt, {pending} still in the inbox, {entries} audit entries, {cuts} cut-offs and {reconnects} reconnections read back; all invariants held",
        head_end.issued.len() as u64 + head_end.redeliveries,
        head_end.redeliveries,
        acked.len()
    );
    assert!(
        !acked.is_empty(),
        "no top-up was ever acknowledged: the kills came too early"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
