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
pub mod gateway;
pub mod headend_proc;
pub mod prereq;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use concentrator_headend::config::Config as HeadEndConfig;
use concentrator_headend::provision::{self, BundlePaths, ProvisionOptions};
use concentrator_headend::spec::Spec;
use concentrator_headend::store::{Store, SubscriberRef};
use concentrator_headend::{init, HeadEnd, HeadEndHandle};
use concentrator_mpc::client::Client;
use concentrator_mpc::profile::Profile;

pub use broker::{BrokerChoice, RunningBroker};
pub use gateway::{GatewayProc, GatewayRun};
pub use headend_proc::{HeadEndProc, HeadEndRun};

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Everything the system writes: the pilot, the bundles, the gateways' stores, the phone profiles.
    /// Emptied first.
    pub dir: PathBuf,
    /// Which broker.
    pub broker: BrokerChoice,
    /// How the gateways run.
    pub gateway: GatewayRun,
    /// How the head-end runs.
    pub headend: HeadEndRun,
    /// The provisioning file's text (docs/install.md, *Running a pilot*); one gateway or more.
    pub spec: String,
    /// Customers to register: (customer id, user name, password).
    pub register: Vec<(String, String, String)>,
    /// The head-end's AKA key lifetime, seconds (None: its default).
    pub key_lifetime_s: Option<u64>,
    /// Other integer settings of `headend.toml`: (table, key, value), e.g. `("reconcile",
    /// "result_timeout_s", 10)`.
    pub headend_settings: Vec<(String, String, i64)>,
    /// Lines added to the broker's ACL (tests: an eavesdropper with its own certificate).
    pub extra_acl: Option<String>,
}

/// The running system.
pub struct System {
    /// The system's directory.
    pub dir: PathBuf,
    /// The head-end's configuration file.
    pub headend_config: PathBuf,
    /// The first gateway's id.
    pub gateway_id: String,
    /// The first gateway's configuration (from its bundle).
    pub gateway_config: PathBuf,
    /// The first gateway's store directory, as its configuration names it (ledger, outbox,
    /// `status.json`).
    pub gateway_store: PathBuf,
    /// Every gateway of the block, in the order of the provisioning file.
    pub gateways: Vec<GatewayProc>,
    /// The head-end.
    pub headend: HeadEndProc,
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
    /// The broker (last: dropped after the gateways and the head-end are stopped).
    pub broker: RunningBroker,
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

/// Sets integer settings `(table, key, value)` in `headend.toml`.
fn set_headend_settings(headend_config: &Path, settings: &[(String, String, i64)]) -> Result<()> {
    let text = std::fs::read_to_string(headend_config)?;
    let mut doc: toml::Table = text.parse().context("reading headend.toml back")?;
    for (table, key, value) in settings {
        let t = doc
            .entry(table.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = t {
            t.insert(key.clone(), toml::Value::Integer(*value));
        }
    }
    std::fs::write(headend_config, doc.to_string())?;
    Ok(())
}

impl System {
    /// Builds and starts everything; returns once the head-end and the gateways run (not yet
    /// attached: see [`System::wait_attached`]).
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
        let mut settings = o.headend_settings.clone();
        if let Some(lifetime) = o.key_lifetime_s {
            let lifetime = i64::try_from(lifetime).unwrap_or(i64::MAX);
            settings.push(("aka".into(), "key_lifetime_s".into(), lifetime));
        }
        set_headend_settings(&headend_config, &settings)?;
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
        if spec.gateways.is_empty() {
            bail!("the block names no gateway; add a [[gateway]] table");
        }
        // Provisioning writes the head-end's store; it is closed again before the head-end starts.
        let report = {
            let headend = HeadEnd::open(config.clone()).map_err(|e| anyhow!("{e}"))?;
            provision::run(
                &config,
                &headend.store(),
                &spec,
                &ProvisionOptions {
                    out: dir.join("bundles"),
                    rekey: false,
                    paths: BundlePaths::Local,
                    // The gateway's own check of every bundle, with the daemon built beside us.
                    validator: sibling_binary("concentratord").ok(),
                },
            )
            .map_err(|e| anyhow!("provisioning: {e}"))?
        };
        let mut gateways = Vec::new();
        for g in &spec.gateways {
            let bundle = report
                .bundles
                .iter()
                .find(|(id, _)| *id == g.id)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| anyhow!("provisioning wrote no bundle for {}", g.id))?;
            gateways.push(GatewayProc::new(
                &dir,
                &g.id,
                bundle.join("concentrator.toml"),
                o.gateway.clone(),
            )?);
        }
        let mut headend = HeadEndProc::new(
            headend_config.clone(),
            dir.join("headend.log"),
            phone_addr,
            o.headend.clone(),
        );
        headend.start(Some(phone))?;

        let first = &gateways[0];
        let mut system = System {
            dir: dir.clone(),
            broker,
            headend_config,
            gateway_id: first.id.clone(),
            gateway_config: first.config.clone(),
            gateway_store: first.store.clone(),
            gateways,
            headend,
            phone_addr,
            ca,
            profiles: BTreeMap::new(),
            passwords: BTreeMap::new(),
            codes: report.codes.clone(),
        };
        for (customer, user, password) in &o.register {
            system.register(customer, user, password)?;
        }
        for g in &mut system.gateways {
            g.start()?;
        }
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

    /// The head-end while it runs in this process.
    pub fn headend(&self) -> Result<&HeadEndHandle> {
        self.headend.handle()
    }

    /// The head-end's store (in-process head-end).
    pub fn store(&self) -> Result<Arc<Store>> {
        Ok(self.headend()?.store())
    }

    /// Starts the first gateway (again).
    pub fn start_gateway(&mut self) -> Result<()> {
        self.gateways[0].start()
    }

    /// Stops the first gateway: orderly (SIGTERM / the stop flag), or `hard` (SIGKILL: a power cut
    /// for the store).
    pub fn stop_gateway(&mut self, hard: bool) -> Result<()> {
        self.gateways[0].stop(hard)
    }

    /// Whether the first gateway's process or thread still runs.
    pub fn gateway_running(&mut self) -> bool {
        self.gateways[0].running()
    }

    /// Waits until every enrolled meter has a security context at the (in-process) head-end (AKA done
    /// and a TID assigned), or fails after `timeout` naming the meters still missing.
    pub fn wait_attached(&mut self, timeout: Duration) -> Result<()> {
        let until = Instant::now() + timeout;
        loop {
            let missing = self.unattached()?;
            if missing.is_empty() {
                return Ok(());
            }
            if let Some(g) = self
                .gateways
                .iter_mut()
                .find_map(|g| (!g.running()).then_some(g))
            {
                bail!(
                    "gateway {} stopped before {} attached; see {}",
                    g.id,
                    missing.join(", "),
                    g.log.display()
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

    /// The enrolled meters without a current TID at the (in-process) head-end.
    pub fn unattached(&self) -> Result<Vec<String>> {
        let store = self.store()?;
        let mut missing = Vec::new();
        for m in store.meters().map_err(|e| anyhow!("{e}"))? {
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

    /// Stops the gateways (orderly), then the head-end; the broker stops when the system is dropped.
    pub fn stop(mut self) -> Result<()> {
        for g in &mut self.gateways {
            g.stop(false)?;
        }
        self.headend.stop(false)
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

/// Now, unix seconds (the workspace's one wall clock).
pub use concentrator_protocol::unix_now;
