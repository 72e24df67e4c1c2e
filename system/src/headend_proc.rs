//! The system's head-end: in this process (the demo, most tests: its store can be read while it runs)
//! or as the real `concentrator-headend run` child process (tests that kill it with SIGKILL).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use concentrator_headend::config::Config as HeadEndConfig;
use concentrator_headend::store::Store;
use concentrator_headend::{HeadEnd, HeadEndHandle, StartOptions};

/// How the head-end runs.
#[derive(Debug, Clone, Default)]
pub enum HeadEndRun {
    /// [`HeadEnd::start`] in this process.
    #[default]
    InProcess,
    /// `concentrator-headend run --config …` as a child process.
    Child {
        /// The `concentrator-headend` binary.
        bin: PathBuf,
    },
}

enum State {
    InProcess(HeadEndHandle),
    Child(Child),
    Stopped,
}

/// The head-end, running or stopped.
pub struct HeadEndProc {
    /// Its configuration file.
    pub config: PathBuf,
    /// Where a child head-end's stderr goes (appended across restarts).
    pub log: PathBuf,
    /// Where it serves phones.
    pub phone_addr: SocketAddr,
    run: HeadEndRun,
    state: State,
}

impl std::fmt::Debug for HeadEndProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadEndProc")
            .field("config", &self.config)
            .field("phone_addr", &self.phone_addr)
            .finish_non_exhaustive()
    }
}

impl HeadEndProc {
    /// A stopped head-end.
    pub fn new(config: PathBuf, log: PathBuf, phone_addr: SocketAddr, run: HeadEndRun) -> Self {
        HeadEndProc {
            config,
            log,
            phone_addr,
            run,
            state: State::Stopped,
        }
    }

    /// Starts it (nothing if it runs); `listener` is the phone listener to use in this process (a
    /// child binds the configured address itself). Returns once it serves phones.
    pub fn start(&mut self, listener: Option<TcpListener>) -> Result<()> {
        if !matches!(self.state, State::Stopped) {
            return Ok(());
        }
        match &self.run {
            HeadEndRun::InProcess => {
                let config = HeadEndConfig::load(&self.config)
                    .map_err(|e| anyhow!("{}: {e}", self.config.display()))?;
                let handle = HeadEnd::open(config)
                    .map_err(|e| anyhow!("{e}"))?
                    .start(StartOptions {
                        phone_listener: listener,
                        serve_phones: true,
                    })
                    .map_err(|e| anyhow!("starting the head-end: {e}"))?;
                self.state = State::InProcess(handle);
            }
            HeadEndRun::Child { bin } => {
                drop(listener);
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .with_context(|| format!("cannot open {}", self.log.display()))?;
                let child = Command::new(bin)
                    .arg("run")
                    .arg("--config")
                    .arg(&self.config)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("cannot start {}", bin.display()))?;
                self.state = State::Child(child);
                self.wait_serving(Duration::from_secs(30))?;
            }
        }
        Ok(())
    }

    /// Where the phone web app is served, when the head-end runs in this process and serves it.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::InProcess(h) => h.web_addr(),
            State::Child(_) | State::Stopped => None,
        }
    }

    fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        loop {
            if !self.running() {
                bail!("the head-end stopped at start; see {}", self.log.display());
            }
            if TcpStream::connect(self.phone_addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "the head-end does not serve phones on {} after {} s; see {}",
                    self.phone_addr,
                    timeout.as_secs(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it: orderly, or `hard` (SIGKILL; a child only).
    pub fn stop(&mut self, hard: bool) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::InProcess(h) => {
                if hard {
                    self.state = State::InProcess(h);
                    bail!("an in-process head-end cannot be killed; use HeadEndRun::Child");
                }
                h.stop()
                    .map_err(|e| anyhow!("stopping the head-end: {e}"))?;
            }
            State::Child(mut child) => {
                let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
                let signal = if hard { libc::SIGKILL } else { libc::SIGTERM };
                // SAFETY: kill(2) on our own child; no memory is passed.
                unsafe { libc::kill(pid, signal) };
                child.wait().context("waiting for the head-end")?;
            }
            State::Stopped => {}
        }
        Ok(())
    }

    /// Whether it runs.
    pub fn running(&mut self) -> bool {
        match &mut self.state {
            State::InProcess(h) => h.is_running(),
            State::Child(c) => matches!(c.try_wait(), Ok(None)),
            State::Stopped => false,
        }
    }

    /// The in-process head-end while it runs.
    pub fn handle(&self) -> Result<&HeadEndHandle> {
        match &self.state {
            State::InProcess(h) => Ok(h),
            State::Child(_) => bail!(
                "the head-end runs as a process and holds its store; stop it, then use HeadEndProc::open_store"
            ),
            State::Stopped => bail!("the head-end is stopped"),
        }
    }

    /// Opens the store of a stopped head-end (the checker's view after the run).
    pub fn open_store(&self) -> Result<Store> {
        if !matches!(self.state, State::Stopped) {
            bail!("the head-end runs and holds its store; stop it first");
        }
        open_store(&self.config)
    }
}

/// Opens the store of the head-end configured in `config` (it must not be running).
pub fn open_store(config: &Path) -> Result<Store> {
    let cfg = HeadEndConfig::load(config).map_err(|e| anyhow!("{}: {e}", config.display()))?;
    let path = cfg.path(&cfg.store.path);
    Store::open(&path)
        .and_then(|s| s.with_configured_kek(&cfg))
        .map_err(|e| anyhow!("opening the head-end's store {}: {e}", path.display()))
}

impl Drop for HeadEndProc {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::InProcess(h) => {
                let _ = h.stop();
            }
            State::Child(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            State::Stopped => {}
        }
    }
}
