//! The generator: phone clients (the `mpc` library, as the phone app uses it) buying top-ups of random
//! amounts for random meters of their customer, retrying with the same request id when the head-end
//! goes away, and handing some saved tokens to the gateway's local inbox
//! (`concentrator topup --config … --token FILE`), as a customer does when the uplink is down.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concentrator_mpc::backend::{HistoryEntry, MeterView};
use concentrator_mpc::client::{Client, ClientError, Keys};
use concentrator_mpc::profile::Profile;

use crate::history::{secs, History, Op, OpKind, Outcome, Rng};

/// A meter a client may buy for, and the gateway that serves it.
#[derive(Debug, Clone)]
pub struct MeterAt {
    pub meter: String,
    /// Index of the gateway in the system.
    pub gateway: usize,
}

/// What a phone client needs.
#[derive(Clone)]
pub struct Phone {
    pub name: String,
    pub server: String,
    pub ca: PathBuf,
    pub profile: PathBuf,
    pub password: String,
    pub meters: Vec<MeterAt>,
}

/// What the clients share: the gateways' configurations, a lock per gateway held while its store is
/// handed over (the nemesis restarting it, or `concentrator topup` opening it while it is down), the
/// `concentrator` binary, and where saved tokens go.
pub struct Shared {
    pub gateway_configs: Vec<PathBuf>,
    pub store_locks: Arc<Vec<Mutex<()>>>,
    pub concentrator: PathBuf,
    pub tokens_dir: PathBuf,
    pub history: Arc<History>,
    pub stop: Arc<AtomicBool>,
    /// Percent of purchases also handed to the local inbox.
    pub inbox_percent: u64,
}

/// A logged-in phone, connecting again after any error.
pub struct Session {
    phone: Phone,
    keys: Keys,
    client: Option<Client>,
}

impl Session {
    pub fn new(phone: Phone) -> Result<Session, String> {
        let profile = Profile::load(&phone.profile).map_err(|e| format!("{e}"))?;
        let keys = profile.keys(&phone.profile).map_err(|e| format!("{e}"))?;
        Ok(Session {
            phone,
            keys,
            client: None,
        })
    }

    fn client(&mut self) -> Result<&mut Client, ClientError> {
        if self.client.is_none() {
            let mut c = Client::connect(&self.phone.server, &self.phone.ca)?;
            c.set_timeout(Duration::from_secs(10));
            c.login(&mut self.keys, &self.phone.password, &mut |_| Ok(()))?;
            self.client = Some(c);
        }
        self.client.as_mut().ok_or(ClientError::NotLoggedIn)
    }

    /// Runs `call` until it succeeds or `attempts` are used, connecting again between attempts.
    /// Returns the result and the number of retries.
    pub fn retrying<T>(
        &mut self,
        attempts: u32,
        mut call: impl FnMut(&mut Client) -> Result<T, ClientError>,
    ) -> (Result<T, String>, u32) {
        let mut last = String::new();
        for attempt in 0..attempts {
            match self.client().and_then(&mut call) {
                Ok(v) => return (Ok(v), attempt),
                Err(e) => {
                    last = e.to_string();
                    self.client = None;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        (Err(last), attempts.saturating_sub(1))
    }

    /// The customer's history and meters, for the checker (after the system settled).
    pub fn collect(&mut self) -> Result<(Vec<HistoryEntry>, Vec<MeterView>), String> {
        let (history, _) = self.retrying(20, |c| c.history(None, 1000));
        let (meters, _) = self.retrying(20, |c| c.meters());
        Ok((history?, meters?))
    }
}

/// Buys until `shared.stop` is set; each operation goes into the history.
pub fn run(phone: Phone, seed: u64, shared: &Shared) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mut session = Session::new(phone.clone())?;
    while !shared.stop.load(Ordering::SeqCst) {
        let at = rng.pick(&phone.meters).clone();
        // 1.00 to 40.00 EUR.
        let amount = rng.range(100, 4_000);
        let mut request_id = [0u8; 16];
        request_id[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        request_id[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        let at_ms = shared.history.now_ms();
        let (result, retries) =
            session.retrying(12, |c| c.top_up_with_id(&at.meter, amount, request_id));
        let (outcome, token) = match result {
            Ok(p) => (Outcome::Ok, Some((p.serial, p.token))),
            Err(e) => (Outcome::Info(e), None),
        };
        shared.history.op(Op {
            at_ms,
            client: phone.name.clone(),
            kind: OpKind::Buy,
            meter: at.meter.clone(),
            amount_minor: amount,
            serial: token.as_ref().map(|t| t.0),
            outcome,
            retries,
        });
        if let Some((serial, token)) = token {
            if rng.chance(shared.inbox_percent) {
                inbox(shared, &phone.name, &at, amount, serial, &token);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.range(100, 1_200)));
    }
    Ok(())
}

/// Hands the saved token to the gateway: `concentrator topup --config … --token FILE` (through the
/// daemon's inbox while it runs, into the store directly while it is down).
fn inbox(shared: &Shared, client: &str, at: &MeterAt, amount: u64, serial: u64, token: &[u8]) {
    let file = shared
        .tokens_dir
        .join(format!("{}-{serial}.token", at.meter));
    let at_ms = shared.history.now_ms();
    let outcome = match std::fs::write(&file, hex::encode(token)) {
        Err(e) => Outcome::Fail(format!("cannot write {}: {e}", file.display())),
        Ok(()) => {
            let _guard = shared.store_locks[at.gateway].lock();
            let started = Instant::now();
            let out = Command::new(&shared.concentrator)
                .arg("topup")
                .arg("--config")
                .arg(&shared.gateway_configs[at.gateway])
                .arg("--token")
                .arg(&file)
                .arg("--wait")
                .arg("8")
                .output();
            match out {
                Err(e) => Outcome::Fail(format!("cannot run concentrator topup: {e}")),
                Ok(o) if o.status.success() => Outcome::Ok,
                Ok(o) => {
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    );
                    let last = text.lines().last().unwrap_or("").to_string();
                    Outcome::Info(format!("after {}: {last}", secs(started.elapsed())))
                }
            }
        }
    };
    shared.history.op(Op {
        at_ms,
        client: client.to_string(),
        kind: OpKind::Inbox,
        meter: at.meter.clone(),
        amount_minor: amount,
        serial: Some(serial),
        outcome,
        retries: 0,
    });
}
