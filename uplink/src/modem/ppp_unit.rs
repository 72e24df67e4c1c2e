//! The data link as the appliance runs it: pppd in its own privileged systemd unit, asked for by the
//! unprivileged daemon through one file (docs/ARCHITECTURE.md, *The 3G data link*).
//!
//! The daemon writes a **request** (`/run/concentrator/ppp-request`: a sequence number, the modem's data
//! port, its speed and the APN) and renames it into place; `concentrator-ppp.path` sees the change and
//! starts `concentrator-ppp.service`, whose root helper (`/usr/libexec/concentrator/ppp-link`) checks
//! every field against a fixed pattern and runs pppd with the package's own options. A new sequence
//! number re-dials, a removed request hangs up. The helper reports in its own directory
//! (`/run/concentrator-ppp/state`: the sequence it serves, `dialling`, `up` or `exited`, and pppd's exit
//! code), which the daemon only reads. pppd never re-dials on its own (`maxfail 1`): when the link drops
//! the helper exits and the supervisor decides, as its recovery stages say.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::link::{chat_script, LinkError};

use super::DataLink;

/// Where the request, the helper's report and the interface are.
#[derive(Debug, Clone)]
pub struct PppUnitConfig {
    /// The request the daemon writes (in its runtime directory).
    pub request: PathBuf,
    /// The helper's report (in the helper's runtime directory).
    pub state: PathBuf,
    /// What exists while the link carries IP (`/sys/class/net/ppp0`).
    pub interface: PathBuf,
    /// The modem's PPP (data) port, e.g. `/dev/modem-ppp`.
    pub device: String,
    /// Its speed.
    pub baud: u32,
    /// The APN.
    pub apn: String,
    /// How long a dial may take before the link counts as down (chat's 30 s per step, LCP, IPCP).
    pub dial_timeout: Duration,
    /// How long [`DataLink::stop`] waits for the helper to hang up.
    pub stop_timeout: Duration,
}

impl PppUnitConfig {
    /// The appliance's paths (image/files/concentrator-ppp.*), unit 0, on `device` with `apn`.
    pub fn new(device: impl Into<String>, apn: impl Into<String>) -> Self {
        PppUnitConfig {
            request: "/run/concentrator/ppp-request".into(),
            state: "/run/concentrator-ppp/state".into(),
            interface: "/sys/class/net/ppp0".into(),
            device: device.into(),
            baud: 115_200,
            apn: apn.into(),
            dial_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// What the helper last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelperState {
    /// The request it serves.
    pub seq: u64,
    /// `dialling`, `up`, `exited` or `stopped`.
    pub state: String,
    /// pppd's exit code, once it exited.
    pub exit: Option<i32>,
}

impl HelperState {
    /// Parses the helper's `KEY=value` lines; unknown keys are ignored.
    pub fn parse(text: &str) -> HelperState {
        let mut s = HelperState::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("SEQ", v)) => s.seq = v.trim().parse().unwrap_or(0),
                Some(("STATE", v)) => s.state = v.trim().to_string(),
                Some(("EXIT", v)) => s.exit = v.trim().parse().ok(),
                _ => {}
            }
        }
        s
    }
}

/// What pppd's exit code means (pppd(8), *EXIT STATUS*), for the status and the log.
pub fn pppd_exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "hung up as asked",
        1 => "a fatal error (see pppd's lines in the journal)",
        2 => "an error in its options",
        3 => "not run as root",
        4 => "the kernel has no PPP support",
        5 => "stopped by a signal",
        6 => "the serial port is locked by another process",
        7 => "the serial port could not be opened",
        8 => "the modem did not answer the dial script (chat failed)",
        10 => "PPP negotiation failed",
        11 => "the peer refused to authenticate",
        12 => "the link was idle",
        13 => "the connect time limit was reached",
        15 => "the peer stopped answering LCP echoes",
        16 => "the modem hung up",
        19 => "authentication failed (check the APN's user and password)",
        _ => "an unexpected exit",
    }
}

/// The data link through `concentrator-ppp.service`.
#[derive(Debug)]
pub struct PppUnit {
    cfg: PppUnitConfig,
    seq: u64,
    requested_at: Option<Instant>,
}

impl PppUnit {
    /// Not requested yet. Sequence numbers start from the time, so a restarted daemon never repeats one
    /// the helper may still be serving.
    pub fn new(cfg: PppUnitConfig) -> Self {
        let seq = concentrator_protocol::unix_now().max(1);
        PppUnit {
            cfg,
            seq,
            requested_at: None,
        }
    }

    /// The sequence number of the last request.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What the helper reports now (default when it has not written yet).
    pub fn helper(&self) -> HelperState {
        std::fs::read_to_string(&self.cfg.state)
            .map(|t| HelperState::parse(&t))
            .unwrap_or_default()
    }

    /// Writes a new request (a new sequence number: the helper dials again).
    pub fn request(&mut self) -> Result<(), LinkError> {
        chat_script(&self.cfg.apn)?; // the same APN check as the chat script's
        self.seq += 1;
        let text = format!(
            "# concentratord's request for the 3G data link (concentrator-ppp.service reads it)\n\
             SEQ={}\nDEVICE={}\nBAUD={}\nAPN={}\n",
            self.seq, self.cfg.device, self.cfg.baud, self.cfg.apn
        );
        let path = &self.cfg.request;
        let io = |doing, source| LinkError::Io {
            doing,
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("new");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating the request's directory", e))?;
        }
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("writing the link request", e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| io("writing the link request", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| io("renaming the link request into place", e))?;
        self.requested_at = Some(Instant::now());
        log::info!(
            "data link: asked concentrator-ppp.service to dial (request {}, {} at {} baud, APN {})",
            self.seq,
            self.cfg.device,
            self.cfg.baud,
            self.cfg.apn
        );
        Ok(())
    }
}

impl DataLink for PppUnit {
    fn is_up(&mut self) -> bool {
        self.requested_at.is_some() && self.cfg.interface.exists() && {
            let h = self.helper();
            h.seq == self.seq && h.state == "up"
        }
    }

    fn connecting(&mut self) -> bool {
        let Some(at) = self.requested_at else {
            return false;
        };
        if at.elapsed() >= self.cfg.dial_timeout {
            return false;
        }
        let h = self.helper();
        // Not yet picked up (the path unit starts the helper within a second), or dialling.
        h.seq != self.seq || h.state == "dialling"
    }

    fn problem(&mut self) -> Option<String> {
        if self.requested_at.is_none() {
            return Some("the data link was not requested yet".into());
        }
        let h = self.helper();
        if h.seq != self.seq {
            return Some(format!(
                "concentrator-ppp.service did not take request {} (it serves {}); check `systemctl status concentrator-ppp.path concentrator-ppp.service`",
                self.seq, h.seq
            ));
        }
        match (h.state.as_str(), h.exit) {
            ("exited", Some(code)) => Some(format!(
                "pppd exited with code {code}: {}",
                pppd_exit_meaning(code)
            )),
            ("refused", _) => Some(
                "concentrator-ppp.service refused the request (see its lines in the journal)"
                    .into(),
            ),
            (state, _) => Some(format!("the data link is {state}")),
        }
    }

    fn restart(&mut self) -> Result<(), String> {
        self.request().map_err(|e| e.to_string())
    }

    fn stop(&mut self) {
        if self.requested_at.take().is_none() && !self.cfg.request.exists() {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.cfg.request) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!(
                    "data link: cannot withdraw the request {}: {e}",
                    self.cfg.request.display()
                );
            }
        }
        let until = Instant::now() + self.cfg.stop_timeout;
        while Instant::now() < until {
            let h = self.helper();
            if h.seq != self.seq || matches!(h.state.as_str(), "stopped" | "exited" | "refused") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        log::info!("data link: hung up (request {} withdrawn)", self.seq);
    }
}
