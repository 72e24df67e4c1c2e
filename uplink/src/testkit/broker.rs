//! A real Mosquitto on a free loopback port with a TLS listener, client certificates required, the
//! certificate's CN as user name, and the per-gateway ACL of docs/uplink.md. Stopped (and its directory
//! removed) on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::Pki;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "concentrator-uplink-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
pub struct Broker {
    /// The host name gateways connect to (matches the server certificate).
    pub host: String,
    pub port: u16,
    pub pki: Pki,
    dir: TempDir,
    child: Option<Child>,
}

/// Whether the calling test is to return without running because Mosquitto is missing: it fails with
/// the install command instead, unless `CONCENTRATOR_ALLOW_SKIP=1` (then the skip is printed and counted;
/// see the `concentrator-test-prerequisite` crate, re-exported as `testkit::prerequisite`).
#[track_caller]
pub fn skip_without_mosquitto() -> bool {
    concentrator_test_prerequisite::skip(mosquitto_missing())
}

/// What is missing when this machine has no Mosquitto, with the command that installs it.
pub fn mosquitto_missing() -> Option<concentrator_test_prerequisite::Missing> {
    concentrator_test_prerequisite::program(MOSQUITTO, "Mosquitto", INSTALL_MOSQUITTO)
}

/// How to install Mosquitto on Debian or Ubuntu.
pub const INSTALL_MOSQUITTO: &str = "sudo apt-get install mosquitto (or: bash tests/setup.sh)";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with(None)
    }

    /// A broker that also listens on `extra` (an address of this host, such as the host side of a
    /// [`super::netns::LinkCut`]); gateways are told to connect there.
    pub fn start_on(extra: &str) -> Broker {
        Self::start_with(Some(extra))
    }

    fn start_with(extra: Option<&str>) -> Broker {
        let dir = TempDir::new("broker");
        let pki = Pki::new();
        let server = pki.server();
        let d = dir.path();
        std::fs::write(d.join("ca.pem"), pki.ca_pem()).unwrap();
        std::fs::write(d.join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(d.join("server.key"), &server.key_pem).unwrap();
        std::fs::write(d.join("acl"), concentrator_protocol::MOSQUITTO_ACL).unwrap();
        let port = free_port();
        let conf = format!(
            "per_listener_settings false\n\
             user root\n\
             allow_anonymous false\n\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             max_queued_messages 0\n\
             max_inflight_messages 100\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type all\n\
             acl_file {dir}/acl\n\
             {listeners}",
            dir = d.display(),
            listeners = [Some("127.0.0.1"), extra]
                .into_iter()
                .flatten()
                .map(|addr| format!(
                    "listener {port} {addr}\n\
                     cafile {dir}/ca.pem\n\
                     certfile {dir}/server.pem\n\
                     keyfile {dir}/server.key\n\
                     tls_version tlsv1.2\n\
                     require_certificate true\n\
                     use_identity_as_username true\n",
                    dir = d.display()
                ))
                .collect::<String>()
        );
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
        let mut b = Broker {
            host: extra.unwrap_or("localhost").to_string(),
            port,
            pki,
            dir,
            child: None,
        };
        b.resume();
        b
    }

    /// Starts the (stopped) broker again on the same port with the same state.
    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MOSQUITTO}: {e} ({INSTALL_MOSQUITTO})"));
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "mosquitto did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it gracefully (SIGTERM: it saves its persistent state), as a broker restart does.
    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > until {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
