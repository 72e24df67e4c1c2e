//! The modem supervisor: checks the modem (SIM, registration, signal, operator) and the data link every
//! cycle, and when something is wrong recovers in stages, each given `failures_per_stage` checks:
//!
//! 1. **reconnect**: re-register (`AT+COPS=0`) and restart the data link;
//! 2. **reset**: `AT+CFUN=1,1` (the modem reboots), then initialise again;
//! 3. **power cycle**: a pulse on the power-key GPIO (modems that no longer answer AT need this);
//! 4. **needs attention**: reported once (event and status); checks go on, a later success clears it,
//!    and after `ATTENTION_ROUNDS` stages' worth of failed checks the ladder starts again from the
//!    reconnect (a gateway in a basement must not give up for good on a modem that crashed twice).
//!
//! A wrong or missing SIM PIN goes straight to *needs attention*: a refused PIN is never sent twice,
//! since three wrong tries block the SIM.
//!
//! The data link is started (without counting as a recovery) the first time the modem is healthy and
//! again after a reset or a power cycle; while it dials ([`DataLink::connecting`]) a check neither
//! passes nor fails.

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
    /// Whether the link is being brought up (dialling, negotiating) and should be given time.
    fn connecting(&mut self) -> bool {
        false
    }
    /// Why the link is down, for the status and the log, when the link knows.
    fn problem(&mut self) -> Option<String> {
        None
    }
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
    /// Whether the SIM's memory was listed for messages since the modem was (re)initialised: messages
    /// that arrived while nobody listened (the daemon stopped, the modem rebooting) have no `+CMTI`.
    sms_swept: bool,
    pin_refused: bool,
    /// Whether the modem answered `AT` in this check.
    answered: bool,
    /// Whether the data link was started since the modem last (re)booted.
    link_started: bool,
}

/// Stages' worth of failed checks spent in *needs attention* before the ladder starts again.
const ATTENTION_ROUNDS: u32 = 4;

/// What one probe found.
enum Outcome {
    /// All good.
    Healthy,
    /// The modem is fine and the link is coming up: neither a pass nor a failure.
    Pending,
    /// Something is wrong.
    Problem(Problem),
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
            sms_swept: false,
            pin_refused: false,
            answered: false,
            link_started: false,
        }
    }

    /// The current status.
    pub fn status(&self) -> &ModemStatus {
        &self.status
    }

    /// The mobile network's time (NITZ) as the modem keeps it, Unix seconds (UTC): `AT+CTZU=1` (the
    /// modem updates its clock from the network; modems without it answer an error, which is fine),
    /// then `AT+CCLK?`. `None` while not registered, or when the modem has no network time.
    pub fn network_time(&mut self) -> Result<Option<u64>, ModemError> {
        if !self
            .status
            .registration
            .is_some_and(Registration::registered)
        {
            return Ok(None);
        }
        let _ = self.cmd("AT+CTZU=1")?;
        Ok(match self.cmd("AT+CCLK?")? {
            Ok(lines) => lines.iter().find_map(|l| parse::cclk(l)),
            Err(_) => None,
        })
    }

    /// Whether the modem is registered on a network (home or roaming) at the last check: SMS can go.
    pub fn registered(&self) -> bool {
        self.status
            .registration
            .is_some_and(Registration::registered)
    }

    /// Sends a text-mode SMS (`AT+CMGF=1`, then `AT+CMGS="number"`, the `> ` prompt, the text and
    /// Ctrl-Z); the message reference the network gave it. The text must be in the GSM default
    /// alphabet's ASCII part and at most 160 characters (the caller's forms are).
    pub fn send_sms(
        &mut self,
        number: &str,
        text: &str,
    ) -> Result<Result<u32, AtFailure>, ModemError> {
        if let Err(e) = self.cmd("AT+CMGF=1")? {
            return Ok(Err(e));
        }
        // Sending waits for the network: up to the registration timeout, at least a minute.
        let t = self.config.register_timeout.max(Duration::from_secs(60));
        let command = format!("AT+CMGS=\"{number}\"");
        Ok(self
            .port
            .command_with_payload(&command, text.as_bytes(), t)?
            .map(|lines| lines.iter().find_map(|l| parse::cmgs(l)).unwrap_or(0)))
    }

    /// Messages that arrived: listens `wait` for `+CMTI` notifications (and takes those that came during
    /// other commands), reads each with `AT+CMGR` and deletes it with `AT+CMGD`. Slots that cannot be read
    /// are deleted too, so a malformed message never blocks the SIM's memory.
    pub fn receive_sms(&mut self, wait: Duration) -> Result<Vec<parse::TextMessage>, ModemError> {
        self.port.listen(wait)?;
        let mut slots: Vec<u32> = self
            .port
            .take_urcs()
            .iter()
            .filter_map(|u| parse::cmti(u))
            .collect();
        let mut out = Vec::new();
        if slots.is_empty() && self.sms_swept {
            return Ok(out);
        }
        if self.cmd("AT+CMGF=1")?.is_err() {
            return Ok(out);
        }
        if !self.sms_swept {
            if let Ok(lines) = self.cmd("AT+CMGL=\"ALL\"")? {
                slots.extend(lines.iter().filter_map(|l| parse::cmgl(l)));
            }
            self.sms_swept = true;
        }
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            if let Ok(lines) = self.cmd(&format!("AT+CMGR={slot}"))? {
                out.extend(parse::cmgr(&lines));
            }
            let _ = self.cmd(&format!("AT+CMGD={slot}"))?;
        }
        Ok(out)
    }

    /// One supervision cycle: check, and recover one step if needed. Call every few tens of seconds.
    pub fn check(&mut self) -> Result<Vec<SupervisorEvent>, ModemError> {
        let mut events = Vec::new();
        match self.probe(&mut events)? {
            Outcome::Pending => {}
            Outcome::Healthy => {
                if self.status.stage != Stage::Healthy {
                    events.push(SupervisorEvent::Recovered);
                }
                self.status.stage = Stage::Healthy;
                self.status.last_problem = None;
                self.failures = 0;
            }
            Outcome::Problem(Problem::Attention(p)) => self.attention(p, &mut events),
            Outcome::Problem(Problem::Recoverable(p)) => {
                log::warn!("modem: {p}");
                self.failures += 1;
                let per = self.config.failures_per_stage.max(1);
                if self.failures > (3 + ATTENTION_ROUNDS) * per {
                    // Long enough in "needs attention": climb the ladder again (the status keeps
                    // saying "needs attention" until a check passes).
                    self.failures = 1;
                }
                let stage = match (self.failures - 1) / per {
                    0 => Stage::Reconnect,
                    1 => Stage::Reset,
                    2 if self.power_key.is_some() => Stage::PowerCycle,
                    _ => Stage::NeedsAttention,
                };
                if stage == Stage::NeedsAttention {
                    self.attention(p, &mut events);
                } else {
                    if self.status.stage != Stage::NeedsAttention {
                        self.status.stage = stage;
                    }
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
                // A network search on a modem that does not answer would only wait out its timeout.
                if self.answered {
                    let t = self.config.register_timeout;
                    let _ = self.port.command("AT+COPS=0", t)?;
                }
                self.link_started = true;
                if let Err(e) = self.link.restart() {
                    log::warn!("modem: restarting the data link: {e}");
                }
            }
            Stage::Reset => {
                self.link.stop();
                self.link_started = false;
                let _ = self.cmd("AT+CFUN=1,1")?;
                self.initialised = false;
                self.sms_swept = false;
                self.port.reset(self.config.boot_time)?;
            }
            Stage::PowerCycle => {
                self.link.stop();
                self.link_started = false;
                if let Some(key) = self.power_key.as_mut() {
                    key.set_high()?;
                    self.port.clock().sleep(self.config.power_pulse);
                    key.set_low()?;
                }
                self.initialised = false;
                self.sms_swept = false;
                self.port.reset(self.config.boot_time)?;
            }
            Stage::Healthy | Stage::NeedsAttention => {}
        }
        Ok(())
    }

    /// Checks everything.
    fn probe(&mut self, events: &mut Vec<SupervisorEvent>) -> Result<Outcome, ModemError> {
        Ok(match self.probe_modem(events)? {
            Some(problem) => Outcome::Problem(problem),
            None => self.probe_link(),
        })
    }

    /// The data link, once the modem is healthy: started if it was not, given time while it dials.
    fn probe_link(&mut self) -> Outcome {
        if !self.link_started {
            self.link_started = true;
            log::info!("modem ready: starting the data link");
            if let Err(e) = self.link.restart() {
                self.status.link_up = false;
                return Outcome::Problem(Problem::Recoverable(format!(
                    "the data link could not be started: {e}"
                )));
            }
        }
        self.status.link_up = self.link.is_up();
        if self.status.link_up {
            Outcome::Healthy
        } else if self.link.connecting() {
            Outcome::Pending
        } else {
            let why = self
                .link
                .problem()
                .map_or_else(String::new, |p| format!(": {p}"));
            Outcome::Problem(Problem::Recoverable(format!("the data link is down{why}")))
        }
    }

    /// The modem itself; `None` when healthy.
    fn probe_modem(
        &mut self,
        events: &mut Vec<SupervisorEvent>,
    ) -> Result<Option<Problem>, ModemError> {
        self.answered = false;
        if let Err(f) = self.cmd("AT")? {
            return Ok(Some(Problem::Recoverable(format!(
                "the modem does not answer AT ({})",
                describe(&f)
            ))));
        }
        self.answered = true;
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
                    "AT+CPIN? failed: {}",
                    describe(&f)
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
                    "the modem refused the APN ({}); check modem.apn",
                    describe(&f)
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
                    "not registered ({}); signal {}",
                    match other {
                        Some(Registration::Searching) => "searching",
                        Some(Registration::Idle) => "not searching",
                        _ => "no registration state",
                    },
                    self.status
                        .rssi_dbm
                        .map_or_else(|| "unknown".to_string(), |d| format!("{d} dBm"))
                ))))
            }
        }
        if let Ok(lines) = self.cmd("AT+COPS?")? {
            if let Some((op, act)) = lines.iter().find_map(|l| parse::cops(l)) {
                self.status.operator = Some(op);
                self.status.technology = act;
            }
        }
        Ok(None)
    }
}

/// An AT failure in words, for the status and the log.
fn describe(f: &AtFailure) -> String {
    f.to_string()
}
