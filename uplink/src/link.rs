//! The data link: pppd, supervised as a child process, dialling over the modem's PPP port with a chat
//! script generated here. Why pppd rather than the modem's own network mode: docs/uplink.md.
//!
//! The AT port (supervised by [`crate::modem::Supervisor`]) and the PPP port are different ttys of the
//! modem (USB 3G modems expose several), so supervision goes on while PPP runs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::modem::DataLink;

/// Settings of the PPP link.
#[derive(Debug, Clone)]
pub struct PppdConfig {
    /// The pppd binary (Debian's `ppp` package).
    pub pppd: PathBuf,
    /// The chat binary (same package).
    pub chat: PathBuf,
    /// The modem's PPP (data) port, e.g. `/dev/ttyUSB3`; not the AT port.
    pub device: String,
    /// Port speed.
    pub baud: u32,
    /// The APN.
    pub apn: String,
    /// Where the chat script is written (e.g. `/run/concentrator`).
    pub run_dir: PathBuf,
    /// PPP unit: the interface is `ppp{unit}`.
    pub unit: u32,
    /// What exists while the link is up (normally `/sys/class/net/ppp{unit}`).
    pub up_marker: PathBuf,
}

impl PppdConfig {
    /// Debian paths, unit 0, on `device` with `apn`.
    pub fn new(device: impl Into<String>, apn: impl Into<String>) -> Self {
        PppdConfig {
            pppd: "/usr/sbin/pppd".into(),
            chat: "/usr/sbin/chat".into(),
            device: device.into(),
            baud: 115_200,
            apn: apn.into(),
            run_dir: "/run/concentrator".into(),
            unit: 0,
            up_marker: "/sys/class/net/ppp0".into(),
        }
    }
}

/// Why the link could not be started.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The APN would break the chat script.
    #[error("APN {0:?} is not valid: use 1 to 63 characters from A-Z, a-z, 0-9, '.', '-' and '_'")]
    BadApn(String),
    /// Writing the chat script or starting pppd failed.
    #[error("{doing} ({path}): {source}; check that the ppp package is installed and {path} is writable")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The chat script that attaches to the packet network and dials.
pub fn chat_script(apn: &str) -> Result<String, LinkError> {
    let ok = !apn.is_empty()
        && apn.len() <= 63
        && apn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(LinkError::BadApn(apn.to_string()));
    }
    Ok(format!(
        "ABORT BUSY\nABORT 'NO CARRIER'\nABORT ERROR\nABORT 'NO DIALTONE'\nTIMEOUT 30\n\
         '' AT\nOK ATE0\nOK 'AT+CGDCONT=1,\"IP\",\"{apn}\"'\nOK ATD*99#\nCONNECT ''\n"
    ))
}

/// pppd's arguments: in the foreground (we supervise it), our chat script, default route and DNS from
/// the peer, LCP echoes so a dead link is noticed in about two minutes, and no own retries (we decide).
pub fn pppd_args(cfg: &PppdConfig, chat_path: &str) -> Vec<String> {
    let chat = format!("{} -v -f {chat_path}", cfg.chat.display());
    [
        cfg.device.as_str(),
        &cfg.baud.to_string(),
        "nodetach",
        "noauth",
        "defaultroute",
        "replacedefaultroute",
        "usepeerdns",
        "noipdefault",
        "crtscts",
        "lock",
        "maxfail",
        "1",
        "lcp-echo-interval",
        "30",
        "lcp-echo-failure",
        "4",
        "unit",
        &cfg.unit.to_string(),
        "connect",
        &chat,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// pppd as a supervised child.
#[derive(Debug)]
pub struct Pppd {
    cfg: PppdConfig,
    child: Option<Child>,
    starts: u32,
}

impl Pppd {
    /// Not started yet.
    pub fn new(cfg: PppdConfig) -> Self {
        Pppd {
            cfg,
            child: None,
            starts: 0,
        }
    }

    /// How many times pppd was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Writes the chat script and starts pppd.
    pub fn start(&mut self) -> Result<(), LinkError> {
        self.stop();
        let script = chat_script(&self.cfg.apn)?;
        let path = self.cfg.run_dir.join("chat-uplink");
        let io = |doing, source| LinkError::Io {
            doing,
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.cfg.run_dir)
            .map_err(|e| io("creating the run directory", e))?;
        std::fs::write(&path, script).map_err(|e| io("writing the chat script", e))?;
        // A program named by its path is looked for first: the error then names it, also where the
        // spawn itself cannot tell (under qemu-user an exec that fails looks like a start).
        if self.cfg.pppd.components().count() > 1 && !self.cfg.pppd.is_file() {
            return Err(LinkError::Io {
                doing: "starting pppd",
                path: self.cfg.pppd.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such program (install ppp: apt-get install ppp)",
                ),
            });
        }
        let args = pppd_args(&self.cfg, &path.display().to_string());
        let child = Command::new(&self.cfg.pppd)
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| LinkError::Io {
                doing: "starting pppd",
                path: self.cfg.pppd.display().to_string(),
                source: e,
            })?;
        log::info!("pppd started (pid {}) on {}", child.id(), self.cfg.device);
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Whether pppd is still running (it exits when the link drops: `maxfail 1`).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                log::warn!("pppd exited: {status}");
                self.child = None;
                false
            }
            Some(Err(_)) | None => false,
        }
    }
}

impl DataLink for Pppd {
    fn is_up(&mut self) -> bool {
        self.running() && self.cfg.up_marker.exists()
    }

    fn restart(&mut self) -> Result<(), String> {
        self.start().map_err(|e| e.to_string())
    }

    /// SIGTERM (pppd hangs up cleanly), then SIGKILL after 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: signalling our own child, whose pid cannot have been reused before we reap it.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Pppd {
    fn drop(&mut self) {
        self.stop();
    }
}
