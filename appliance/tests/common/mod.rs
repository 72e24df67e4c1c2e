//! Shared by the prepayment tests: the setup (setup.rs) and the daemon as a child process.

#![allow(dead_code)]

use std::path::Path;

mod setup;
pub use setup::*;

/// `concentratord` as a child process with `--config`, its stderr lines collected as they come, each
/// with when it was read.
pub struct Daemon {
    child: std::process::Child,
    pub lines: Lines,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The daemon's stderr lines with their arrival times.
pub type Lines = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_concentratord"))
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Lines = Default::default();
        let stderr = child.stderr.take().unwrap();
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push((std::time::Instant::now(), line));
            }
        });
        Daemon {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, then waits for the exit and the last log lines; the exit must be a success.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        assert!(status.success(), "daemon exit {status}: {}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[uplink]` table for gateway `gw` with the broker's TLS files and a keys file for `meters` (TIDs
/// `tid(1..)`), keys from the uplink testkit (what its fake head-end uses).
pub fn uplink_section(
    dir: &Path,
    broker: &concentrator_uplink::testkit::broker::Broker,
    gw: &str,
    meters: &[&str],
) -> String {
    let issued = broker.pki.client(gw);
    let d = dir.join("uplink");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ca.pem"), broker.pki.ca_pem()).unwrap();
    std::fs::write(d.join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(d.join("key.pem"), &issued.key_pem).unwrap();
    std::fs::write(
        d.join("keys.toml"),
        concentrator_uplink::testkit::keys_toml(meters),
    )
    .unwrap();
    let p = d.display();
    format!(
        "\n[uplink]\nbroker = \"mqtts://localhost:{}\"\nca = \"{p}/ca.pem\"\ncert = \"{p}/cert.pem\"\nkey = \"{p}/key.pem\"\nkeys = \"{p}/keys.toml\"\n",
        broker.port
    )
}
