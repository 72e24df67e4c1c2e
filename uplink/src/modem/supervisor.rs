//! The modem supervisor: checks the modem (SIM, registration, signal, operator) and the data link every
//! cycle, and when something is wrong recovers in stages, each given `failures_per_stage` checks:
//!
//! 1. **reconnect**: re-register (`AT+COPS=0`) and restart the data link;
//! 2. **reset**: `AT+CFUN=1,1` (the modem reboots), then initialise again;
//! 3. **power cycle**: a pulse on the power-key GPIO (modems that no longer answer AT need this);
//! 4. **needs attention**: reported once (event and status); checks go on, and a later success clears it.
//!
//! A wrong or missing SIM PIN goes straight to *needs attention*: a refused PIN is never sent twice,
//! since three wrong tries block the SIM.

use std::time::Duration;

use concentrator_hal::gpio::OutputLine;
use concentrator_hal::SerialStream;

use super::at::AtFailure;
use super::parse::{self, Registration, SimState};
use super::{AtPort, ModemError};

/// The data link the supervisor keeps up (pppd, or nothing in tests).
pub trait DataLink: Send + std::fmt::Debug {
    /// Whether the link carries IP now.
    fn is_up(&mut self) -> bool;
    /// Starts (or restarts) the link; returns once started, not necessarily up.
    fn restart(&mut self) -> Result<(), String>;
    /// Stops the link (before a modem reset).
    fn stop(&mut self);
}

/// A data link that is always up: for modems whose data path is not ours to manage, and for tests.
#[derive(Debug, Default)]
pub struct NoDataLink;

impl DataLink for NoDataLink {
    fn is_up(&mut self) -> bool {
        true
    }
    fn restart(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn stop(&mut self) {}
}

/// Settings.
#[derive(Debug, Clone)]
pub struct ModemConfig {
    /// The SIM PIN, if the SIM has one.
    pub pin: Option<String>,
    /// The APN for `AT+CGDCONT=1,"IP","apn"`.
    pub apn: String,
    /// Timeout of ordinary commands.
    pub command_timeout: Duration,
    /// Timeout of `AT+COPS=0` (a network search takes long).
    pub register_timeout: Duration,
    /// How long the modem takes to boot after a reset or a power cycle.
    pub boot_time: Duration,
    /// How long the power key is held.
    pub power_pulse: Duration,
    /// Failed checks at each stage before the next.
    pub failures_per_stage: u32,
    /// Below this signal (dBm) a weak-signal event is raised.
    pub weak_signal_dbm: i16,
}

impl Default for ModemConfig {
    fn default() -> Self {
        ModemConfig {
            pin: None,
            apn: "internet".into(),
            command_timeout: Duration::from_secs(2),
            register_timeout: Duration::from_secs(180),
            boot_time: Duration::from_secs(20),
            power_pulse: Duration::from_millis(1200),
            failures_per_stage: 3,
            weak_signal_dbm: -105,
        }
    }
}

/// Where recovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// All good.
    Healthy,
    /// Re-registering and restarting the link.
    Reconnect,
    /// Resetting the modem with AT+CFUN.
    Reset,
    /// Pulsing the power key.
    PowerCycle,
    /// Staged recovery failed: someone must look.
    NeedsAttention,
}

/// What the supervisor knows, for the birth message, metrics and `concentrator status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemStatus {
    /// SIM state.
    pub sim: Option<SimState>,
    /// Packet-domain registration.
    pub registration: Option<Registration>,
    /// Signal, dBm.
    pub rssi_dbm: Option<i16>,
    /// Operator.
    pub operator: Option<String>,
    /// Access technology.
    pub technology: Option<&'static str>,
    /// ICCID.
    pub iccid: Option<String>,
    /// IMSI.
    pub imsi: Option<String>,
    /// Whether the data link is up.
    pub link_up: bool,
    /// Recovery stage.
    pub stage: Stage,
    /// Recovery actions taken since start.
    pub recoveries: u32,
    /// What the last failed check found.
    pub last_problem: Option<String>,
}

/// What one check reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A recovery action was taken.
    Recovery {
        /// The stage.
        stage: Stage,
        /// Why.
        problem: String,
    },
    /// Staged recovery failed (raised once until the modem is healthy again).
    NeedsAttention {
        /// The last problem found.
        problem: String,
    },
    /// Healthy again after a problem.
    Recovered,
    /// Signal below the configured threshold.
    WeakSignal {
        /// dBm.
        dbm: i16,
    },
}

/// The supervisor of one modem.
#[derive(Debug)]
pub struct Supervisor<S: SerialStream> {
    port: AtPort<S>,
    link: Box<dyn DataLink>,
    power_key: Option<Box<dyn OutputLine>>,
    config: ModemConfig,
    status: ModemStatus,
    failures: u32,
    initialised: bool,
    pin_refused: bool,
}

enum Problem {
    /// Staged recovery may fix it.
    Recoverable(String),
    /// Only a person can (SIM PIN/PUK).
    Attention(String),
}

impl<S: SerialStream> Supervisor<S> {
    /// A supervisor for the modem on `port`, keeping `link` up, with an optional power-key line.
    pub fn new(
        port: AtPort<S>,
        link: Box<dyn DataLink>,
        power_key: Option<Box<dyn OutputLine>>,
        config: ModemConfig,
    ) -> Self {
        Supervisor {
            port,
            link,
            power_key,
            config,
            status: ModemStatus {
                sim: None,
                registration: None,
                rssi_dbm: None,
                operator: None,
                technology: None,
                iccid: None,
                imsi: None,
                link_up: false,
                stage: Stage::Healthy,
                recoveries: 0,
                last_problem: None,
            },
            failures: 0,
            initialised: false,
            pin_refused: false,
        }
    }

    /// The current status.
    pub fn status(&self) -> &ModemStatus {
        &self.status
    }

    /// One supervision cycle: check, and recover one step if needed. Call every few tens of seconds.
    pub fn check(&mut self) -> Result<Vec<SupervisorEvent>, ModemError> {
        let mut events = Vec::new();
        match self.probe(&mut events)? {
            None => {
                if self.status.stage != Stage::Healthy {
                    events.push(SupervisorEvent::Recovered);
                }
                self.status.stage = Stage::Healthy;
                self.status.last_problem = None;
                self.failures = 0;
            }
            Some(Problem::Attention(p)) => self.attention(p, &mut events),
            Some(Problem::Recoverable(p)) => {
                log::warn!("modem: {p}");
                self.failures += 1;
                let per = self.config.failures_per_stage.max(1);
                let stage = match (self.failures - 1) / per {
                    0 => Stage::Reconnect,
                    1 => Stage::Reset,
                    2 if self.power_key.is_some() => Stage::PowerCycle,
                    _ => Stage::NeedsAttention,
                };
                if stage == Stage::NeedsAttention {
                    self.attention(p, &mut events);
                } else {
                    self.status.stage = stage;
                    self.status.last_problem = Some(p.clone());
                    self.status.recoveries += 1;
                    self.recover(stage)?;
                    events.push(SupervisorEvent::Recovery { stage, problem: p });
                }
            }
        }
        Ok(events)
    }

    fn attention(&mut self, problem: String, events: &mut Vec<SupervisorEvent>) {
        if self.status.stage != Stage::NeedsAttention {
            log::error!("modem needs attention: {problem}");
            events.push(SupervisorEvent::NeedsAttention {
                problem: problem.clone(),
            });
        }
        self.status.stage = Stage::NeedsAttention;
        self.status.last_problem = Some(problem);
    }

    fn cmd(&mut self, text: &str) -> Result<Result<Vec<String>, AtFailure>, ModemError> {
        let t = self.config.command_timeout;
        self.port.command(text, t)
    }

    fn recover(&mut self, stage: Stage) -> Result<(), ModemError> {
        match stage {
            Stage::Reconnect => {
                let t = self.config.register_timeout;
                let _ = self.port.command("AT+COPS=0", t)?;
                if let Err(e) = self.link.restart() {
                    log::warn!("modem: restarting the data link: {e}");
                }
            }
            Stage::Reset => {
                self.link.stop();
                let _ = self.cmd("AT+CFUN=1,1")?;
                self.initialised = false;
                self.port.reset(self.config.boot_time)?;
            }
            Stage::PowerCycle => {
                self.link.stop();
                if let Some(key) = self.power_key.as_mut() {
                    key.set_high()?;
                    self.port.clock().sleep(self.config.power_pulse);
                    key.set_low()?;
                }
                self.initialised = false;
                self.port.reset(self.config.boot_time)?;
            }
            Stage::Healthy | Stage::NeedsAttention => {}
        }
        Ok(())
    }

    /// Checks everything; `None` when healthy.
    fn probe(&mut self, events: &mut Vec<SupervisorEvent>) -> Result<Option<Problem>, ModemError> {
        if let Err(f) = self.cmd("AT")? {
            return Ok(Some(Problem::Recoverable(format!(
                "the modem does not answer AT ({f:?})"
            ))));
        }
        if !self.initialised {
            let _ = self.cmd("ATE0")?;
            let _ = self.cmd("AT+CMEE=2")?;
        }
        // SIM.
        let sim = match self.cmd("AT+CPIN?")? {
            Ok(lines) => lines.iter().find_map(|l| parse::cpin(l)),
            Err(AtFailure::Cme(text)) => {
                self.status.sim = None;
                return Ok(Some(Problem::Recoverable(format!(
                    "SIM: {text}; check that a SIM is inserted and seated"
                ))));
            }
            Err(f) => {
                return Ok(Some(Problem::Recoverable(format!(
                    "AT+CPIN? failed: {f:?}"
                ))))
            }
        };
        self.status.sim = sim.clone();
        match sim {
            Some(SimState::Ready) => {}
            Some(SimState::PinRequired) => {
                let Some(pin) = self.config.pin.clone().filter(|_| !self.pin_refused) else {
                    return Ok(Some(Problem::Attention(if self.pin_refused {
                        "the SIM refused the configured PIN; set the right PIN in the config (it is not retried: three wrong PINs block the SIM)".into()
                    } else {
                        "the SIM wants a PIN and none is configured; set modem.pin in the config"
                            .into()
                    })));
                };
                if self.cmd(&format!("AT+CPIN=\"{pin}\""))?.is_err() {
                    self.pin_refused = true;
                    return Ok(Some(Problem::Attention(
                        "the SIM refused the configured PIN; set the right PIN in the config (it is not retried: three wrong PINs block the SIM)".into(),
                    )));
                }
            }
            Some(SimState::PukRequired) => {
                return Ok(Some(Problem::Attention(
                    "the SIM is blocked (PUK required); unblock it with the PUK from the operator"
                        .into(),
                )))
            }
            Some(SimState::Other(s)) => {
                return Ok(Some(Problem::Attention(format!(
                    "the SIM is locked ({s}); unlock it or use another SIM"
                ))))
            }
            None => return Ok(Some(Problem::Recoverable("AT+CPIN? gave no state".into()))),
        }
        if !self.initialised {
            if let Ok(lines) = self.cmd("AT+CCID")? {
                self.status.iccid = lines.iter().find_map(|l| parse::iccid(l));
            }
            if let Ok(lines) = self.cmd("AT+CIMI")? {
                self.status.imsi = lines.iter().find_map(|l| parse::imsi(l));
            }
            let apn = format!("AT+CGDCONT=1,\"IP\",\"{}\"", self.config.apn);
            if let Err(f) = self.cmd(&apn)? {
                return Ok(Some(Problem::Recoverable(format!(
                    "the modem refused the APN ({f:?}); check modem.apn"
                ))));
            }
            self.initialised = true;
        }
        // Registration: the packet domain (3G CGREG or 4G CEREG) is what data needs.
        let mut reg = None;
        for q in ["AT+CGREG?", "AT+CEREG?", "AT+CREG?"] {
            if let Ok(lines) = self.cmd(q)? {
                let r = lines.iter().find_map(|l| parse::registration(l));
                if r.is_some_and(Registration::registered) {
                    reg = r;
                    break;
                }
                reg = reg.or(r);
            }
        }
        self.status.registration = reg;
        if let Ok(lines) = self.cmd("AT+CSQ")? {
            self.status.rssi_dbm = lines.iter().find_map(|l| parse::csq_dbm(l));
        }
        if let Some(dbm) = self
            .status
            .rssi_dbm
            .filter(|d| *d < self.config.weak_signal_dbm)
        {
            events.push(SupervisorEvent::WeakSignal { dbm });
        }
        match reg {
            Some(r) if r.registered() => {}
            Some(Registration::Denied) => {
                return Ok(Some(Problem::Recoverable(
                    "the network denies registration; check the SIM's data plan with the operator"
                        .into(),
                )))
            }
            other => {
                return Ok(Some(Problem::Recoverable(format!(
                    "not registered ({other:?}); signal {:?} dBm",
                    self.status.rssi_dbm
                ))))
            }
        }
        if let Ok(lines) = self.cmd("AT+COPS?")? {
            if let Some((op, act)) = lines.iter().find_map(|l| parse::cops(l)) {
                self.status.operator = Some(op);
                self.status.technology = act;
            }
        }
        self.status.link_up = self.link.is_up();
        if !self.status.link_up {
            return Ok(Some(Problem::Recoverable("the data link is down".into())));
        }
        Ok(None)
    }
}
