//! The recorded history of a money run (as Jepsen records one): every client operation with its
//! outcome and every fault, stamped with the time since the start, kept in memory for the checker and
//! written line by line to `history.txt` for people.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// A seeded pseudo-random generator (SplitMix64): the same seed gives the same fault schedule and the
/// same purchases.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent` %.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// What a client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Bought a top-up through the phone server.
    Buy,
    /// Handed a saved token to the gateway's local inbox (`concentrator topup --token`).
    Inbox,
}

/// How it ended: `Ok` (the answer came), `Fail` (refused: it did not happen), `Info` (unknown: the
/// connection broke; it may or may not have happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail(String),
    Info(String),
}

/// One completed client operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub at_ms: u128,
    pub client: String,
    pub kind: OpKind,
    pub meter: String,
    pub amount_minor: u64,
    /// The token serial, once known.
    pub serial: Option<u64>,
    pub outcome: Outcome,
    /// Attempts after the first (reconnections, resends with the same request id).
    pub retries: u32,
}

/// The history of one run.
pub struct History {
    started: Instant,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<(u128, String, String)>>,
    file: Mutex<Option<std::fs::File>>,
}

impl History {
    pub fn new(path: &Path) -> History {
        History {
            started: Instant::now(),
            ops: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            file: Mutex::new(std::fs::File::create(path).ok()),
        }
    }

    pub fn now_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    fn line(&self, text: &str) {
        if let Ok(mut f) = self.file.lock() {
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "{text}");
            }
        }
    }

    pub fn op(&self, op: Op) {
        let serial = op
            .serial
            .map(|s| format!(" serial {s}"))
            .unwrap_or_default();
        self.line(&format!(
            "{:>8} ms  {:<6} {} {} {}{serial} -> {} (retries {})",
            op.at_ms,
            op.client,
            op.kind,
            op.meter,
            eur(op.amount_minor as i64),
            op.outcome,
            op.retries
        ));
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    /// A fault that began at `at` (ms): its type (the counts group by it) and what exactly.
    pub fn fault(&self, at: u128, kind: &str, detail: String) {
        self.line(&format!("{at:>8} ms  nemesis {kind}: {detail}"));
        if let Ok(mut f) = self.faults.lock() {
            f.push((at, kind.to_string(), detail));
        }
    }

    pub fn note(&self, text: &str) {
        let at = self.now_ms();
        self.line(&format!("{at:>8} ms  {text}"));
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    pub fn faults(&self) -> Vec<(u128, String, String)> {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// A duration for people: `1.5 s`.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpKind::Buy => "buy",
            OpKind::Inbox => "local inbox",
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Fail(why) => write!(f, "failed: {why}"),
            Outcome::Info(why) => write!(f, "unknown: {why}"),
        }
    }
}

/// Minor units as euros for people: `17.34 EUR`.
pub fn eur(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:02} EUR",
        minor.unsigned_abs() / 100,
        minor.unsigned_abs() % 100
    )
}
