//! The nemesis: a seeded schedule of faults against the running system, one at a time, each written to
//! the history. Every fault ends healed (processes started again, stalls continued) except a clock
//! skew, which stays until the next skew of that gateway, as a Pi's clock does until NTP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use concentrator_system::System;

use crate::history::{secs, History, Rng};

/// The kinds of fault, with their weights in the schedule.
pub const FAULTS: &[(&str, u64)] = &[
    ("gateway-kill", 3),
    ("headend-kill", 2),
    ("broker-restart", 2),
    ("link-cut", 2),
    ("clock-skew", 2),
    ("ledger-stall", 1),
    ("store-wipe", 1),
    ("meter-off-bus", 1),
];

/// The bus of the meters that are read, and the bus whose port never opens.
pub const READ_BUS: &str = "rs485-1";
pub const UNPLUGGED_BUS: &str = "rs485-off";

pub struct Nemesis {
    pub system: Arc<Mutex<System>>,
    pub store_locks: Arc<Vec<Mutex<()>>>,
    pub history: Arc<History>,
    pub rng: Rng,
    /// The kinds to draw from (all of [`FAULTS`] unless `MONEY_FAULTS` names some).
    pub kinds: Vec<(&'static str, u64)>,
    /// Stores moved away by `store-wipe`: (gateway index, directory), oldest first.
    pub lost_stores: Vec<(usize, PathBuf)>,
    /// Faults injected, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// Per gateway, the meters `meter-off-bus` may unplug.
    pub meters: Vec<Vec<String>>,
    /// New meters, off the bus at the start (no account until their first reading), and when they
    /// are connected.
    pub new_meters: Vec<(usize, String)>,
    pub connect_at: Option<Instant>,
    /// Every meter's `[meter.sim]` table, for putting it back on the simulated bus.
    pub sims: BTreeMap<String, toml::Table>,
}

impl Nemesis {
    /// The fault kinds named by `MONEY_FAULTS` (comma-separated), or all.
    pub fn kinds_from_env() -> Result<Vec<(&'static str, u64)>> {
        let Ok(names) = std::env::var("MONEY_FAULTS") else {
            return Ok(FAULTS.to_vec());
        };
        names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                FAULTS
                    .iter()
                    .find(|(k, _)| *k == n)
                    .copied()
                    .ok_or_else(|| {
                        let all: Vec<&str> = FAULTS.iter().map(|f| f.0).collect();
                        anyhow!(
                            "MONEY_FAULTS: no fault `{n}`; choose from {}",
                            all.join(", ")
                        )
                    })
            })
            .collect()
    }

    /// Injects faults until `until`, a pause of 0.2 to 1.2 s between them.
    pub fn run(&mut self, until: Instant) -> Result<()> {
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(self.rng.range(200, 1_200)));
            if Instant::now() >= until {
                break;
            }
            if self.connect_at.is_some_and(|at| Instant::now() >= at) {
                self.connect_new_meters()?;
                continue;
            }
            if self.kinds.is_empty() {
                continue;
            }
            let total: u64 = self.kinds.iter().map(|k| k.1).sum();
            let mut draw = self.rng.range(0, total - 1);
            let mut kind = self.kinds[0].0;
            for (k, w) in &self.kinds {
                if draw < *w {
                    kind = k;
                    break;
                }
                draw -= w;
            }
            self.inject(kind)?;
            *self.counts.entry(kind).or_default() += 1;
        }
        Ok(())
    }

    fn inject(&mut self, kind: &'static str) -> Result<()> {
        let gateways = lock(&self.system)?.gateways.len() as u64;
        let g = self.rng.range(0, gateways - 1) as usize;
        let pause = Duration::from_millis(self.rng.range(0, 2_000));
        let began = self.history.now_ms();
        match kind {
            "gateway-kill" => {
                let _store = self.store_locks[g].lock();
                let mut s = lock(&self.system)?;
                s.gateways[g].stop(true)?;
                std::thread::sleep(pause);
                s.gateways[g].start()?;
                self.history.fault(
                    began,
                    kind,
                    format!(
                        "kill -9 {}, started again after {pause:?}",
                        s.gateways[g].id
                    ),
                );
            }
            "headend-kill" => {
                let mut s = lock(&self.system)?;
                s.headend.stop(true)?;
                std::thread::sleep(pause);
                s.headend.start(None)?;
                self.history.fault(
                    began,
                    kind,
                    format!("kill -9 the head-end, started again after {}", secs(pause)),
                );
            }
            "broker-restart" => {
                let mut s = lock(&self.system)?;
                s.broker.stop()?;
                s.broker.start_again()?;
                self.history
                    .fault(began, kind, "Mosquitto stopped and started".into());
            }
            "link-cut" => {
                let cut = Duration::from_millis(self.rng.range(2_000, 6_000));
                let mut s = lock(&self.system)?;
                s.broker.stop()?;
                std::thread::sleep(cut);
                s.broker.start_again()?;
                self.history
                    .fault(began, kind, format!("no broker for {}", secs(cut)));
            }
            "clock-skew" => {
                let offset = self.rng.range(0, 240) as i64 - 120;
                let _store = self.store_locks[g].lock();
                let mut s = lock(&self.system)?;
                let gw = &mut s.gateways[g];
                gw.env = vec![("CONCENTRATOR_CLOCK_OFFSET_S".into(), offset.to_string())];
                gw.stop(false)?;
                gw.start()?;
                self.history.fault(
                    began,
                    kind,
                    format!(
                        "{}'s clock set {offset:+} s from true time (restarted)",
                        gw.id
                    ),
                );
            }
            "ledger-stall" => {
                let stall = Duration::from_millis(self.rng.range(2_000, 12_000));
                let _store = self.store_locks[g].lock();
                let s = lock(&self.system)?;
                s.gateways[g].signal(libc::SIGSTOP)?;
                std::thread::sleep(stall);
                s.gateways[g].signal(libc::SIGCONT)?;
                self.history.fault(
                    began,
                    kind,
                    format!("{} stopped (SIGSTOP) for {}", s.gateways[g].id, secs(stall)),
                );
            }
            "store-wipe" => {
                let _store = self.store_locks[g].lock();
                let mut s = lock(&self.system)?;
                let gw = &mut s.gateways[g];
                gw.stop(false)?;
                let lost = gw
                    .store
                    .with_extension(format!("lost-{}", self.lost_stores.len() + 1));
                std::fs::rename(&gw.store, &lost).with_context(|| {
                    format!("moving {} to {}", gw.store.display(), lost.display())
                })?;
                gw.start()?;
                self.history.fault(
                    began,
                    kind,
                    format!(
                        "{}'s store replaced by an empty one (the old one kept in {})",
                        gw.id,
                        lost.display()
                    ),
                );
                self.lost_stores.push((g, lost));
            }
            "meter-off-bus" => {
                let meter = self.rng.pick(&self.meters[g]).clone();
                let off = Duration::from_millis(self.rng.range(2_000, 8_000));
                let _store = self.store_locks[g].lock();
                let mut s = lock(&self.system)?;
                let gw = &mut s.gateways[g];
                gw.set_meter_bus(&meter, UNPLUGGED_BUS, None)?;
                gw.stop(false)?;
                gw.start()?;
                std::thread::sleep(off);
                gw.set_meter_bus(&meter, READ_BUS, self.sims.get(&meter))?;
                gw.stop(false)?;
                gw.start()?;
                self.history.fault(
                    began,
                    kind,
                    format!("meter {meter} of {} unplugged for {}", gw.id, secs(off)),
                );
            }
            other => return Err(anyhow!("no fault {other}")),
        }
        Ok(())
    }

    /// Connects the new meters to the read bus (each gateway restarted once), as an installer does.
    pub fn connect_new_meters(&mut self) -> Result<()> {
        self.connect_at = None;
        let gateways: std::collections::BTreeSet<usize> =
            self.new_meters.iter().map(|m| m.0).collect();
        for g in gateways {
            let _store = self.store_locks[g].lock();
            let mut s = lock(&self.system)?;
            let gw = &mut s.gateways[g];
            let mut names = Vec::new();
            for (_, meter) in self.new_meters.iter().filter(|m| m.0 == g) {
                gw.set_meter_bus(meter, READ_BUS, self.sims.get(meter))?;
                names.push(meter.as_str());
            }
            gw.stop(false)?;
            gw.start()?;
            self.history.note(&format!(
                "new meters {} connected to {} (restarted)",
                names.join(", "),
                gw.id
            ));
        }
        Ok(())
    }

    /// After the schedule: every process runs (a gateway that exited on its own is started again and
    /// noted).
    pub fn heal(&mut self) -> Result<()> {
        if self.connect_at.is_some() {
            self.connect_new_meters()?;
        }
        let mut s = lock(&self.system)?;
        s.broker.start_again()?;
        if !s.headend.running() {
            self.history
                .note("heal: the head-end was not running; started");
            s.headend.stop(false)?;
            s.headend.start(None)?;
        }
        for g in &mut s.gateways {
            let _ = g.signal(libc::SIGCONT);
            if !g.running() {
                self.history
                    .note(&format!("heal: gateway {} was not running; started", g.id));
                g.stop(false)?;
                g.start()?;
            }
        }
        Ok(())
    }
}

fn lock(system: &Mutex<System>) -> Result<std::sync::MutexGuard<'_, System>> {
    system
        .lock()
        .map_err(|_| anyhow!("the system's lock is poisoned"))
}
