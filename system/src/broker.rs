//! The MQTT broker of the all-in-one system: the machine's Mosquitto when it has one (TLS with client
//! certificates and the ACL of a pilot, exactly as in production), else rumqttd embedded in this
//! process, listening on loopback only without TLS (the daemon and the head-end accept plain MQTT only
//! for a loopback broker).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Debian's package puts the broker; `PATH` is searched too.
const MOSQUITTO_PATHS: &[&str] = &["/usr/sbin/mosquitto", "/usr/bin/mosquitto"];

/// Which broker to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerChoice {
    /// Mosquitto if installed, else the embedded broker.
    Auto,
    /// The machine's Mosquitto (fails when it is not installed).
    Mosquitto,
    /// rumqttd in this process, plain MQTT on loopback.
    Embedded,
}

/// The TLS files of a Mosquitto listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running broker; stopped when dropped (Mosquitto) or with the process (embedded).
#[derive(Debug)]
pub struct RunningBroker {
    /// What the clients connect to: `mqtts://localhost:PORT` or `mqtt://127.0.0.1:PORT`.
    pub url: String,
    /// For people: which broker this is.
    pub description: String,
    child: Option<Child>,
    /// Mosquitto's binary and configuration, to start it again after [`RunningBroker::stop`].
    restart: Option<(PathBuf, PathBuf, u16)>,
}

impl RunningBroker {
    /// Stops Mosquitto as an operator would (SIGTERM: it writes its persistence and exits), so the
    /// gateways and the head-end lose their connections. The embedded broker cannot be stopped.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("the embedded broker runs until the process ends; stop needs Mosquitto");
        };
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: kill(2) with a pid we own; no memory is passed.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        child.wait().context("waiting for Mosquitto to stop")?;
        Ok(())
    }

    /// Starts Mosquitto again on the same port with the same configuration and persistence.
    pub fn start_again(&mut self) -> Result<()> {
        let Some((bin, conf, port)) = self.restart.clone() else {
            bail!("the embedded broker cannot be restarted");
        };
        if self.child.is_some() {
            return Ok(());
        }
        self.child = Some(spawn_mosquitto(&bin, &conf, port)?);
        Ok(())
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Mosquitto binary of this machine, if any.
pub fn find_mosquitto() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("mosquitto"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    MOSQUITTO_PATHS
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file())
}

/// A free TCP port on loopback (bound and released: another process could take it in between, which
/// the caller notices as a failed start).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// The broker to run for `choice`: `Some(binary)` for Mosquitto, `None` for the embedded one.
pub fn resolve(choice: BrokerChoice) -> Result<Option<PathBuf>> {
    match (choice, find_mosquitto()) {
        (BrokerChoice::Auto | BrokerChoice::Mosquitto, Some(bin)) => Ok(Some(bin)),
        (BrokerChoice::Mosquitto, None) => bail!(
            "no Mosquitto on this machine ({} or on PATH); install it (`sudo apt install mosquitto`) or run with `--broker embedded`",
            MOSQUITTO_PATHS.join(", ")
        ),
        (BrokerChoice::Auto | BrokerChoice::Embedded, _) => Ok(None),
    }
}

/// The URL clients use for a broker on `port`: TLS for Mosquitto, plain for the embedded one.
pub fn url(mosquitto: bool, port: u16) -> String {
    if mosquitto {
        format!("mqtts://localhost:{port}")
    } else {
        format!("mqtt://127.0.0.1:{port}")
    }
}

/// Starts the broker [`resolve`] chose on `port`. `dir` holds Mosquitto's config, log and persistence;
/// `tls` its listener's files (the head-end's pilot set-up writes them); `acl` the ACL file to use.
pub fn start(
    mosquitto: Option<&Path>,
    port: u16,
    dir: &Path,
    tls: &TlsFiles,
    acl: &Path,
) -> Result<RunningBroker> {
    match mosquitto {
        Some(bin) => start_mosquitto(bin, port, dir, tls, acl),
        None => start_embedded(port),
    }
}

fn start_mosquitto(
    bin: &Path,
    port: u16,
    dir: &Path,
    tls: &TlsFiles,
    acl: &Path,
) -> Result<RunningBroker> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let conf = dir.join("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    // Mosquitto started as root switches to `user`: the owner of the key files, or it cannot read them.
    let owner = concentrator_headend::init::owner_name(&tls.key);
    // The log and the persistence file are written after the switch: give `dir` to that user.
    if let Some((uid, gid)) = owner
        .as_deref()
        .filter(|u| *u != "root")
        .and_then(concentrator_headend::init::user_ids)
    {
        if let Err(e) = std::os::unix::fs::chown(dir, Some(uid), Some(gid)) {
            log::warn!("cannot give {} to the broker's user: {e}", dir.display());
        }
    }
    let user = owner.map(|u| format!("user {u}\n")).unwrap_or_default();
    let text = format!(
        "# Written by concentrator-system: a pilot broker on loopback.\n\
         {user}\
         per_listener_settings false\n\
         set_tcp_nodelay true\n\
         persistence true\n\
         persistence_location {persist}/\n\
         log_dest file {log}\n\
         log_type error\nlog_type warning\nlog_type notice\n\
         listener {port} 127.0.0.1\n\
         cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         tls_version tlsv1.2\n\
         acl_file {acl}\n",
        persist = dir.display(),
        log = log.display(),
        ca = tls.ca.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        acl = acl.display(),
    );
    fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;
    let child = spawn_mosquitto(bin, &conf, port)?;
    Ok(RunningBroker {
        url: url(true, port),
        description: format!(
            "Mosquitto ({}) on 127.0.0.1:{port}, TLS with client certificates and the pilot's ACL; log {}",
            bin.display(),
            log.display()
        ),
        child: Some(child),
        restart: Some((bin.to_path_buf(), conf, port)),
    })
}

/// Runs `bin -c conf` and waits until it listens on `port`.
fn spawn_mosquitto(bin: &Path, conf: &Path, port: u16) -> Result<Child> {
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(e) = child.stderr.take() {
                for line in BufReader::new(e).lines().map_while(Result::ok) {
                    err.push_str(&line);
                    err.push('\n');
                }
            }
            bail!(
                "{} exited at start ({status}): {err}see its log and {}",
                bin.display(),
                conf.display()
            );
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "{} did not listen on 127.0.0.1:{port} within 10 s; see its log (configuration {})",
        bin.display(),
        conf.display()
    )
}

fn start_embedded(port: u16) -> Result<RunningBroker> {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    use std::collections::HashMap;

    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = ServerSettings {
        name: "loopback".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            // Frames are at most 256 KiB (docs/protocol.md) plus the envelope.
            max_payload_size: 300 * 1024,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 500,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .context("cannot start the embedded broker's thread")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        if Instant::now() > deadline {
            bail!("the embedded broker did not listen on {listen} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(RunningBroker {
        url: url(false, port),
        description: format!(
            "the embedded broker (rumqttd) on {listen}, plain MQTT on loopback only (install Mosquitto for TLS and the ACL)"
        ),
        child: None,
        restart: None,
    })
}
