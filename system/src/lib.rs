//! The whole concentrator system on one machine: a broker, the payment server (head-end), one gateway
//! on simulated meters, and registered phone-client profiles. `concentrator-system` (the README's first
//! command) runs the demo block; the end-to-end tests build their own blocks with [`System::start`].
//!
//! What runs is the real thing, wired the way a pilot is (docs/install.md, *Running a pilot*): the
//! head-end's `init` makes the pilot's keys, `provision` enrols the block and writes the gateway's
//! bundle, the gateway runs from that bundle and attaches every meter with AKA over MQTT, and the
//! customers register through the phone-facing server with their authorization codes.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod broker;
pub mod demo;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use concentrator_headend::config::Config as HeadEndConfig;
use concentrator_headend::provision::{self, BundlePaths, ProvisionOptions};
use concentrator_headend::spec::Spec;
use concentrator_headend::store::{Store, SubscriberRef};
use concentrator_headend::{init, HeadEnd, HeadEndHandle, StartOptions};
use concentrator_mpc::client::Client;
use concentrator_mpc::profile::Profile;

pub use broker::{BrokerChoice, RunningBroker};

/// How the gateway runs.
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

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Everything the system writes: the pilot, the bundles, the gateway's store, the phone profiles.
    /// Emptied first.
    pub dir: PathBuf,
    /// Which broker.
    pub broker: BrokerChoice,
    /// How the gateway runs.
    pub gateway: GatewayRun,
    /// The provisioning file's text (docs/install.md, *Running a pilot*); one gateway.
    pub spec: String,
    /// Customers to register: (customer id, user name, password).
    pub register: Vec<(String, String, String)>,
    /// The head-end's AKA key lifetime, seconds (None: its default).
    pub key_lifetime_s: Option<u64>,
    /// Lines added to the broker's ACL (tests: an eavesdropper with its own certificate).
    pub extra_acl: Option<String>,
}

/// A gateway that is running.
enum Gateway {
    Thread {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<std::result::Result<(), String>>,
    },
    Child(Child),
    Stopped,
}

/// The running system.
pub struct System {
    /// The system's directory.
    pub dir: PathBuf,
    /// The broker.
    pub broker: RunningBroker,
    /// The head-end's configuration file.
    pub headend_config: PathBuf,
    /// The gateway's id.
    pub gateway_id: String,
    /// The gateway's configuration (from its bundle).
    pub gateway_config: PathBuf,
    /// The gateway's store directory, as its configuration names it (ledger, outbox, `status.json`).
    pub gateway_store: PathBuf,
    /// The phone-facing server.
    pub phone_addr: SocketAddr,
    /// The utility CA the phone client trusts.
    pub ca: PathBuf,
    /// Phone profiles by user name.
    pub profiles: BTreeMap<String, PathBuf>,
    /// Passwords by user name (the demo prints them; tests log in with them).
    pub passwords: BTreeMap<String, String>,
    /// Authorization codes issued and not used here: (customer id, code).
    pub codes: Vec<(String, String)>,
    headend: Option<HeadEndHandle>,
    gateway: Gateway,
    run: GatewayRun,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("dir", &self.dir)
            .field("broker", &self.broker.url)
            .field("gateway", &self.gateway_id)
            .finish_non_exhaustive()
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("no current directory")?
            .join(p))
    }
}

impl System {
    /// Builds and starts everything; returns once the head-end and the gateway run (not yet attached:
    /// see [`System::wait_attached`]).
    pub fn start(o: &Options) -> Result<System> {
        let dir = absolute(&o.dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;

        // The broker's kind decides the URL the pilot is set up with.
        let mosquitto = broker::resolve(o.broker)?;
        let port = broker::free_port()?;
        let url = broker::url(mosquitto.is_some(), port);
        let phone = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("cannot listen for phones on 127.0.0.1")?;
        let phone_addr = phone.local_addr()?;

        let pilot = dir.join("headend");
        let headend_config = init::run(
            &pilot,
            &init::InitOptions {
                broker_url: Some(url.clone()),
                broker_port: port,
                phone_listen: phone_addr.to_string(),
                phone_web_listen: Some("127.0.0.1:0".into()),
                ..init::InitOptions::default()
            },
        )
        .map_err(|e| anyhow!("setting up the pilot in {}: {e}", pilot.display()))?;
        if let Some(lifetime) = o.key_lifetime_s {
            let text = std::fs::read_to_string(&headend_config)?;
            let mut doc: toml::Table = text.parse().context("reading headend.toml back")?;
            let aka = doc
                .entry("aka")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = aka {
                t.insert(
                    "key_lifetime_s".into(),
                    toml::Value::Integer(lifetime as i64),
                );
            }
            std::fs::write(&headend_config, doc.to_string())?;
        }
        let config = HeadEndConfig::load(&headend_config)
            .map_err(|e| anyhow!("{}: {e}", headend_config.display()))?;
        let ca = config.path(&config.pki.ca_cert);

        if let Some(extra) = &o.extra_acl {
            let acl = pilot.join("acl");
            let mut text = std::fs::read_to_string(&acl)
                .with_context(|| format!("cannot read {}", acl.display()))?;
            text.push('\n');
            text.push_str(extra);
            text.push('\n');
            std::fs::write(&acl, text)
                .with_context(|| format!("cannot write {}", acl.display()))?;
        }
        let broker = broker::start(
            mosquitto.as_deref(),
            port,
            &dir.join("broker"),
            &broker::TlsFiles {
                ca: ca.clone(),
                cert: pilot.join("pki/broker.pem"),
                key: pilot.join("pki/broker.key"),
            },
            &pilot.join("acl"),
        )?;

        let spec_path = dir.join("block.toml");
        std::fs::write(&spec_path, &o.spec)?;
        let spec = Spec::load(&spec_path).map_err(|e| anyhow!("{}: {e}", spec_path.display()))?;
        let [gateway] = spec.gateways.as_slice() else {
            bail!(
                "the system runs exactly one gateway; the block names {}",
                spec.gateways.len()
            );
        };
        let gateway_id = gateway.id.clone();
        let headend = HeadEnd::open(config.clone()).map_err(|e| anyhow!("{e}"))?;
        let report = provision::run(
            &config,
            &headend.store(),
            &spec,
            &ProvisionOptions {
                out: dir.join("bundles"),
                rekey: false,
                paths: BundlePaths::Local,
            },
        )
        .map_err(|e| anyhow!("provisioning: {e}"))?;
        let bundle = report
            .bundles
            .iter()
            .find(|(g, _)| *g == gateway_id)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| anyhow!("provisioning wrote no bundle for {gateway_id}"))?;
        let gateway_config = bundle.join("concentrator.toml");
        let gateway_store = concentrator_appliance::config::Config::load(&gateway_config)
            .map_err(|e| anyhow!("the gateway's bundle: {e}"))?
            .gateway
            .store;

        let handle = headend
            .start(StartOptions {
                phone_listener: Some(phone),
                serve_phones: true,
            })
            .map_err(|e| anyhow!("starting the head-end: {e}"))?;

        let mut system = System {
            dir: dir.clone(),
            broker,
            headend_config,
            gateway_id,
            gateway_config,
            gateway_store,
            phone_addr,
            ca,
            profiles: BTreeMap::new(),
            passwords: BTreeMap::new(),
            codes: report.codes.clone(),
            headend: Some(handle),
            gateway: Gateway::Stopped,
            run: o.gateway.clone(),
        };
        for (customer, user, password) in &o.register {
            system.register(customer, user, password)?;
        }
        system.start_gateway()?;
        Ok(system)
    }

    /// Registers `customer` through the phone-facing server with its authorization code, as the
    /// customer's phone would, and writes the phone's profile to `<dir>/mpc/<user>.toml`.
    pub fn register(&mut self, customer: &str, user: &str, password: &str) -> Result<PathBuf> {
        let at = self
            .codes
            .iter()
            .position(|(c, _)| c == customer)
            .ok_or_else(|| anyhow!("no authorization code for customer {customer}"))?;
        let (_, code) = self.codes.remove(at);
        let server = self.phone_addr.to_string();
        let mut client = Client::connect(&server, &self.ca)?;
        let keys = client.register(&code, user, password)?;
        let path = self.dir.join("mpc").join(format!("{user}.toml"));
        Profile::new(&server, &self.ca, &keys)
            .save(&path)
            .map_err(|e| anyhow!("{e}"))?;
        self.profiles.insert(user.to_string(), path.clone());
        self.passwords
            .insert(user.to_string(), password.to_string());
        Ok(path)
    }

    /// The head-end while it runs.
    pub fn headend(&self) -> Result<&HeadEndHandle> {
        self.headend
            .as_ref()
            .ok_or_else(|| anyhow!("the head-end is stopped"))
    }

    /// The head-end's store.
    pub fn store(&self) -> Result<Arc<Store>> {
        Ok(self.headend()?.store())
    }

    /// Starts the gateway (again).
    pub fn start_gateway(&mut self) -> Result<()> {
        if !matches!(self.gateway, Gateway::Stopped) {
            return Ok(());
        }
        self.gateway = match &self.run {
            GatewayRun::InProcess => {
                let config = concentrator_appliance::config::Config::load(&self.gateway_config)
                    .map_err(|e| anyhow!("the gateway's bundle: {e}"))?;
                let stop = Arc::new(AtomicBool::new(false));
                let flag = stop.clone();
                let thread = std::thread::Builder::new()
                    .name("concentratord".into())
                    .spawn(move || {
                        let notifier = concentrator_appliance::notify::Notifier::from_env();
                        concentrator_appliance::daemon::run(&config, &flag, &notifier)
                    })
                    .context("cannot start the gateway's thread")?;
                Gateway::Thread { stop, thread }
            }
            GatewayRun::Child { bin } => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("gateway.log"))?;
                let child = Command::new(bin)
                    .arg("--config")
                    .arg(&self.gateway_config)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("cannot start {}", bin.display()))?;
                Gateway::Child(child)
            }
        };
        Ok(())
    }

    /// Stops the gateway: orderly (SIGTERM / the stop flag), or `hard` (SIGKILL: a power cut for
    /// the store).
    pub fn stop_gateway(&mut self, hard: bool) -> Result<()> {
        match std::mem::replace(&mut self.gateway, Gateway::Stopped) {
            Gateway::Thread { stop, thread } => {
                if hard {
                    bail!("an in-process gateway cannot be killed; use GatewayRun::Child");
                }
                stop.store(true, Ordering::SeqCst);
                thread
                    .join()
                    .map_err(|_| anyhow!("the gateway's thread panicked"))?
                    .map_err(|e| anyhow!("the gateway: {e}"))?;
            }
            Gateway::Child(mut child) => {
                let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
                let signal = if hard { libc::SIGKILL } else { libc::SIGTERM };
                // SAFETY: kill(2) on our own child; no memory is passed.
                unsafe { libc::kill(pid, signal) };
                child.wait().context("waiting for the gateway")?;
            }
            Gateway::Stopped => {}
        }
        Ok(())
    }

    /// Whether the gateway process or thread still runs (a daemon that exited on its own has not).
    pub fn gateway_running(&mut self) -> bool {
        match &mut self.gateway {
            Gateway::Thread { thread, .. } => !thread.is_finished(),
            Gateway::Child(c) => matches!(c.try_wait(), Ok(None)),
            Gateway::Stopped => false,
        }
    }

    /// Waits until every enrolled meter of the gateway has a security context at the head-end (AKA
    /// done and a TID assigned), or fails after `timeout` naming the meters still missing.
    pub fn wait_attached(&mut self, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        loop {
            let missing = self.unattached()?;
            if missing.is_empty() {
                return Ok(());
            }
            if !self.gateway_running() {
                bail!(
                    "the gateway stopped before {} attached; see {}",
                    missing.join(", "),
                    self.dir.join("gateway.log").display()
                );
            }
            if Instant::now() > until {
                bail!(
                    "meters not attached after {timeout:?}: {}",
                    missing.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gateway's meters without a current TID at the head-end.
    pub fn unattached(&self) -> Result<Vec<String>> {
        let store = self.store()?;
        let mut missing = Vec::new();
        for m in store.meters().map_err(|e| anyhow!("{e}"))? {
            if m.gateway != self.gateway_id {
                continue;
            }
            let contexts = store
                .contexts(&SubscriberRef::Meter(m.meter.clone()))
                .map_err(|e| anyhow!("{e}"))?;
            let attached = contexts
                .current
                .is_some_and(|c| c.tid.is_some() && c.confirmed && c.expires_at() > unix_now());
            if !attached {
                missing.push(m.meter.clone());
            }
        }
        Ok(missing)
    }

    /// Stops the gateway (orderly), then the head-end; the broker stops when the system is dropped.
    pub fn stop(mut self) -> Result<()> {
        self.stop_gateway(false)?;
        if let Some(h) = self.headend.take() {
            h.stop()
                .map_err(|e| anyhow!("stopping the head-end: {e}"))?;
        }
        Ok(())
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Gateway::Child(child) = &mut self.gateway {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Gateway::Thread { stop, .. } = &self.gateway {
            stop.store(true, Ordering::SeqCst);
        }
        if let Some(h) = self.headend.take() {
            let _ = h.stop();
        }
    }
}

/// The `concentratord` binary next to the running executable (`target/<profile>/`), as cargo builds
/// it for the workspace's tests and `cargo run`.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    // Test executables live one level deeper, in `deps/`.
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
        if dir
            .as_ref()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
        {
            break;
        }
    }
    bail!(
        "no {name} binary beside {}; build it first: cargo build -p concentrator-appliance --bin {name}",
        exe.display()
    )
}

/// Now, unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
