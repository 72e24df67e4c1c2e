//! One gateway of the system: `concentratord` run from its bundle, as a thread of this process (the
//! demo) or as a child process that tests can kill, stall and start again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};

/// How a gateway runs.
#[derive(Debug, Clone)]
pub enum GatewayRun {
    /// `concentratord` as a thread of this process (the demo: one process, one Ctrl-C).
    InProcess,
    /// `concentratord --config …` as a child process (tests: it can be killed and started again).
    Child {
        /// The `concentratord` binary.
        bin: PathBuf,
    },
}

enum State {
    Thread {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<std::result::Result<(), String>>,
    },
    Child(Child),
    Stopped,
}

/// A gateway of the system, running or stopped.
pub struct GatewayProc {
    /// The gateway's id.
    pub id: String,
    /// Its configuration (from its bundle).
    pub config: PathBuf,
    /// Its store directory, as the configuration names it (ledger, outbox, `status.json`).
    pub store: PathBuf,
    /// Where a child gateway's stdout and stderr go (appended across restarts).
    pub log: PathBuf,
    /// Environment added at the next start of a child (tests: `CONCENTRATOR_CLOCK_OFFSET_S`).
    pub env: Vec<(String, String)>,
    run: GatewayRun,
    state: State,
}

impl std::fmt::Debug for GatewayProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayProc")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GatewayProc {
    /// A stopped gateway from its bundle's configuration; its log goes to `<dir>/gateway-<id>.log`.
    pub fn new(dir: &Path, id: &str, config: PathBuf, run: GatewayRun) -> Result<GatewayProc> {
        let store = concentrator_appliance::config::Config::load(&config)
            .map_err(|e| anyhow!("the bundle of gateway {id}: {e}"))?
            .gateway
            .store;
        Ok(GatewayProc {
            id: id.to_string(),
            config,
            store,
            log: dir.join(format!("gateway-{id}.log")),
            env: Vec::new(),
            run,
            state: State::Stopped,
        })
    }

    /// Starts the gateway (nothing if it runs).
    pub fn start(&mut self) -> Result<()> {
        if !matches!(self.state, State::Stopped) {
            return Ok(());
        }
        self.state = match &self.run {
            GatewayRun::InProcess => {
                let config = concentrator_appliance::config::Config::load(&self.config)
                    .map_err(|e| anyhow!("the bundle of gateway {}: {e}", self.id))?;
                let stop = Arc::new(AtomicBool::new(false));
                let flag = stop.clone();
                let thread = std::thread::Builder::new()
                    .name("concentratord".into())
                    .spawn(move || {
                        let notifier = concentrator_appliance::notify::Notifier::from_env();
                        concentrator_appliance::daemon::run(&config, &flag, &notifier)
                    })
                    .context("cannot start the gateway's thread")?;
                State::Thread { stop, thread }
            }
            GatewayRun::Child { bin } => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .with_context(|| format!("cannot open {}", self.log.display()))?;
                let child = Command::new(bin)
                    .arg("--config")
                    .arg(&self.config)
                    .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("cannot start {}", bin.display()))?;
                State::Child(child)
            }
        };
        Ok(())
    }

    /// Stops the gateway: orderly (SIGTERM / the stop flag), or `hard` (SIGKILL: a power cut for the
    /// store). A stalled (SIGSTOPped) child is continued first so that it can exit.
    pub fn stop(&mut self, hard: bool) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Thread { stop, thread } => {
                if hard {
                    bail!("an in-process gateway cannot be killed; use GatewayRun::Child");
                }
                stop.store(true, Ordering::SeqCst);
                thread
                    .join()
                    .map_err(|_| anyhow!("the thread of gateway {} panicked", self.id))?
                    .map_err(|e| anyhow!("gateway {}: {e}", self.id))?;
            }
            State::Child(mut child) => {
                let signal = if hard { libc::SIGKILL } else { libc::SIGTERM };
                signal_child(&child, signal)?;
                signal_child(&child, libc::SIGCONT)?;
                child
                    .wait()
                    .with_context(|| format!("waiting for gateway {}", self.id))?;
            }
            State::Stopped => {}
        }
        Ok(())
    }

    /// Sends `signal` to a child gateway (tests: SIGSTOP and SIGCONT stall and resume it).
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        match &self.state {
            State::Child(child) => signal_child(child, signal),
            State::Thread { .. } => bail!("an in-process gateway cannot be signalled"),
            State::Stopped => bail!("gateway {} is stopped", self.id),
        }
    }

    /// Whether the gateway process or thread still runs (a daemon that exited on its own has not).
    pub fn running(&mut self) -> bool {
        match &mut self.state {
            State::Thread { thread, .. } => !thread.is_finished(),
            State::Child(c) => matches!(c.try_wait(), Ok(None)),
            State::Stopped => false,
        }
    }

    /// Puts meter `meter_id` on bus `bus` in the gateway's configuration (taken into account at the
    /// next start), with its `[meter.sim]` table for a simulated bus or none: tests take a meter off
    /// the bus this way, onto a bus whose port does not open.
    pub fn set_meter_bus(
        &self,
        meter_id: &str,
        bus: &str,
        sim: Option<&toml::Table>,
    ) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)
            .with_context(|| format!("cannot read {}", self.config.display()))?;
        let mut doc: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not TOML", self.config.display()))?;
        let meter = doc
            .get_mut("meter")
            .and_then(toml::Value::as_array_mut)
            .and_then(|ms| {
                ms.iter_mut()
                    .find(|m| m.get("meter_id").and_then(toml::Value::as_str) == Some(meter_id))
            })
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| anyhow!("no meter {meter_id} in {}", self.config.display()))?;
        meter.insert("bus".into(), toml::Value::String(bus.into()));
        match sim {
            Some(sim) => meter.insert("sim".into(), toml::Value::Table(sim.clone())),
            None => meter.remove("sim"),
        };
        std::fs::write(&self.config, doc.to_string())
            .with_context(|| format!("cannot write {}", self.config.display()))
    }

    /// The last `lines` lines of a child gateway's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn signal_child(child: &Child, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: kill(2) on our own child; no memory is passed.
    unsafe { libc::kill(pid, signal) };
    Ok(())
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        match &mut self.state {
            State::Child(child) => {
                let _ = signal_child(child, libc::SIGKILL);
                let _ = child.wait();
            }
            State::Thread { stop, .. } => stop.store(true, Ordering::SeqCst),
            State::Stopped => {}
        }
    }
}
