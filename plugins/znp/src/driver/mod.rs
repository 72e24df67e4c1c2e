//! The coordinator driver as a sans-IO state machine: bytes from the UART in, bytes to send out, ticks of
//! time, events and notices out. It runs the start-up sequence, pairs each SREQ with its SRSP (one at
//! a time, as MT requires) under a timeout, handles the AREQs, keeps the device table, and carries the
//! host's commands to the devices as ZCL over AF.

pub mod api;
pub mod config;
mod exchange;
mod incoming;
mod startup;

use std::collections::VecDeque;
use std::time::Duration;

use concentrator_plugin_sdk::StreamEvent;

use crate::devices::DeviceTable;
use crate::mt::{FrameReader, MtCommand, MtFrame, Read};
pub use api::{Command, CommandRequest, CommandResult, Notice};
pub use config::{ConfigError, ZnpConfig};
use exchange::PendingZcl;
use startup::Step;

/// How long a partial frame may wait for its next byte before its SOF is taken as garbage.
const STALE_PARTIAL: Duration = Duration::from_millis(100);

/// Why a command was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRejected {
    /// The coordinator is not up.
    #[error("the Zigbee coordinator is not ready ({0}); try again when the link is up")]
    NotReady(&'static str),
    /// The device is not in the table.
    #[error("device {0} is not in the coordinator's device table; let it join first")]
    UnknownDevice(String),
    /// The device has no endpoint with the cluster.
    #[error("device {device} has no endpoint with cluster {cluster:#06x} (discovery may not be finished)")]
    NoCluster {
        /// The device.
        device: String,
        /// The cluster.
        cluster: u16,
    },
    /// A value the command cannot carry.
    #[error("{0}")]
    Invalid(&'static str),
    /// The text is not a command.
    #[error("not a ZNP command: {0}")]
    Parse(String),
}

/// What the current SREQ is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    /// A step of the start-up sequence.
    Startup(Step),
    /// A host command answered by the SRSP alone (permit-join, leave).
    Command(u64),
    /// The AF data request of a ZCL exchange (its trans id).
    Zcl(u8),
    /// Discovery and other housekeeping.
    Internal,
}

#[derive(Debug, Clone)]
struct Sreq {
    frame: MtFrame,
    purpose: Purpose,
}

#[derive(Debug, Clone)]
struct InFlight {
    sreq: Sreq,
    deadline: Duration,
}

/// Where the driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Running the start-up sequence.
    Starting,
    /// Up: the network runs and commands are carried.
    Up,
    /// Waiting before starting again after a failed start-up.
    Backoff,
}

/// Counters for tests and status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZnpStats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Candidate frames rejected (bad FCS, bad length) plus bytes skipped as garbage.
    pub garbage: u64,
    /// SRSPs that did not come in time.
    pub srsp_timeouts: u64,
    /// Coordinator resets seen while up.
    pub resets: u64,
    /// Attribute values turned into readings.
    pub readings: u64,
}

/// The ZNP coordinator driver.
#[derive(Debug)]
pub struct ZnpDriver {
    config: ZnpConfig,
    reader: FrameReader,
    last_rx: Duration,
    now: Duration,
    unix_millis: i64,
    state: LinkState,
    step: Step,
    step_deadline: Option<Duration>,
    attempts: u32,
    tx: VecDeque<Vec<u8>>,
    queue: VecDeque<Sreq>,
    in_flight: Option<InFlight>,
    srsp_timeouts_in_row: u32,
    events: VecDeque<StreamEvent>,
    notices: VecDeque<Notice>,
    devices: DeviceTable,
    pending: Vec<PendingZcl>,
    tsn: u8,
    trans_id: u8,
    coordinator: startup::CoordinatorInfo,
    stats: ZnpStats,
}

impl ZnpDriver {
    /// A driver with `config`, starting at monotonic time `now`; the start-up sequence begins at once.
    pub fn new(config: ZnpConfig, now: Duration, unix_millis: i64) -> Self {
        let mut driver = ZnpDriver {
            config,
            reader: FrameReader::new(),
            last_rx: now,
            now,
            unix_millis,
            state: LinkState::Starting,
            step: Step::Reset,
            step_deadline: None,
            attempts: 0,
            tx: VecDeque::new(),
            queue: VecDeque::new(),
            in_flight: None,
            srsp_timeouts_in_row: 0,
            events: VecDeque::new(),
            notices: VecDeque::new(),
            devices: DeviceTable::new(),
            pending: Vec::new(),
            tsn: 0,
            trans_id: 0,
            coordinator: startup::CoordinatorInfo::default(),
            stats: ZnpStats::default(),
        };
        driver.begin_startup(driver.config.reset_on_start);
        driver
    }

    /// Bytes received from the coordinator.
    pub fn on_bytes(&mut self, bytes: &[u8]) {
        self.last_rx = self.now;
        self.reader.push(bytes);
        self.read_frames();
        self.pump();
    }

    fn read_frames(&mut self) {
        while let Some(read) = self.reader.next_frame() {
            match read {
                Read::Frame(frame) => {
                    self.stats.frames_in += 1;
                    self.on_frame(frame);
                }
                Read::Rejected(e) => {
                    self.stats.garbage += 1;
                    log::debug!("ZNP: dropped a candidate frame: {e}");
                }
            }
        }
    }

    /// Time has passed: timeouts of SRSPs, start-up steps and ZCL exchanges.
    pub fn on_tick(&mut self, now: Duration, unix_millis: i64) {
        self.now = self.now.max(now);
        self.unix_millis = unix_millis;
        // A partial frame with the line quiet since: its SOF was garbage (a whole frame takes a few
        // milliseconds at 115200 baud). Search again after it.
        if self.reader.pending() > 0 && self.now.saturating_sub(self.last_rx) >= STALE_PARTIAL {
            while self.reader.pending() > 0 && self.reader.skip_partial() {
                self.read_frames();
            }
        }
        if let Some(flight) = &self.in_flight {
            if self.now >= flight.deadline {
                self.on_srsp_timeout();
            }
        }
        self.startup_tick();
        self.expire_zcl();
        self.pump();
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// The next notice.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// The device table.
    pub fn devices(&self) -> &DeviceTable {
        &self.devices
    }

    /// Where the driver is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> ZnpStats {
        let mut stats = self.stats;
        stats.garbage += self.reader.skipped();
        stats
    }

    /// The configuration.
    pub fn config(&self) -> &ZnpConfig {
        &self.config
    }

    /// Queues an SREQ; it is sent when the one before it has its SRSP.
    fn send_sreq(&mut self, command: MtCommand, purpose: Purpose) {
        if let Some(frame) = command.to_frame() {
            self.queue.push_back(Sreq { frame, purpose });
        }
    }

    /// Sends an AREQ (no SRSP follows) at once.
    fn send_areq(&mut self, command: MtCommand) {
        if let Some(bytes) = command.to_frame().and_then(|f| f.encode().ok()) {
            self.stats.frames_out += 1;
            self.tx.push_back(bytes);
        }
    }

    /// Moves the next SREQ onto the wire when none is in flight.
    fn pump(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        while let Some(sreq) = self.queue.pop_front() {
            match sreq.frame.encode() {
                Ok(bytes) => {
                    self.stats.frames_out += 1;
                    self.tx.push_back(bytes);
                    self.in_flight = Some(InFlight {
                        sreq,
                        deadline: self.now + self.config.srsp_timeout(),
                    });
                    return;
                }
                Err(e) => log::warn!("ZNP: cannot encode an SREQ: {e}"),
            }
        }
    }

    fn on_frame(&mut self, frame: MtFrame) {
        let command = match MtCommand::try_from_frame(&frame) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("ZNP: ignored a malformed frame: {e}");
                return;
            }
        };
        if frame.kind == crate::mt::CommandType::Srsp {
            let matches = self.in_flight.as_ref().is_some_and(|f| {
                (f.sreq.frame.subsystem == frame.subsystem && f.sreq.frame.id == frame.id)
                    || matches!(command, MtCommand::RpcError { cmd0, cmd1, .. }
                        if cmd0 == f.sreq.frame.cmd0() && cmd1 == f.sreq.frame.id)
            });
            match self.in_flight.take() {
                Some(flight) if matches => {
                    self.srsp_timeouts_in_row = 0;
                    self.on_srsp(flight.sreq.purpose, command);
                }
                other => {
                    self.in_flight = other;
                    log::debug!("ZNP: an SRSP nobody waits for: {frame:?}");
                }
            }
        } else {
            self.on_areq(command);
        }
    }

    fn on_srsp(&mut self, purpose: Purpose, command: MtCommand) {
        match purpose {
            Purpose::Startup(step) => self.startup_srsp(step, command),
            Purpose::Command(id) => {
                let notice = match command {
                    MtCommand::StatusRsp { status: 0 } => Notice::CommandDone {
                        id,
                        result: CommandResult::Accepted,
                    },
                    other => Notice::CommandFailed {
                        id,
                        reason: format!("the coordinator refused it: {}", describe_status(&other)),
                    },
                };
                self.notices.push_back(notice);
            }
            Purpose::Zcl(trans_id) => {
                if !matches!(command, MtCommand::StatusRsp { status: 0 }) {
                    let reason = format!(
                        "the coordinator refused AF_DATA_REQUEST: {}",
                        describe_status(&command)
                    );
                    self.fail_zcl_by_trans(trans_id, &reason);
                }
            }
            Purpose::Internal => {}
        }
    }

    fn on_srsp_timeout(&mut self) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        self.stats.srsp_timeouts += 1;
        self.srsp_timeouts_in_row += 1;
        let what = crate::mt::command_name(
            flight.sreq.frame.kind,
            flight.sreq.frame.subsystem,
            flight.sreq.frame.id,
        )
        .unwrap_or("an SREQ");
        log::warn!(
            "ZNP: no SRSP to {what} within {} ms",
            self.config.srsp_timeout_ms
        );
        match flight.sreq.purpose {
            Purpose::Startup(step) => self.startup_failed(step, "no SRSP in time"),
            Purpose::Command(id) => self.notices.push_back(Notice::CommandFailed {
                id,
                reason: format!("the coordinator did not answer {what}"),
            }),
            Purpose::Zcl(trans_id) => {
                self.fail_zcl_by_trans(trans_id, "the coordinator did not answer AF_DATA_REQUEST")
            }
            Purpose::Internal => {}
        }
        if self.state == LinkState::Up && self.srsp_timeouts_in_row >= self.config.max_srsp_timeouts
        {
            self.link_lost("the coordinator stopped answering");
        }
    }

    /// The coordinator went away or reset: fail everything under way and start again.
    fn link_lost(&mut self, reason: &str) {
        if self.state == LinkState::Up {
            self.events.push_back(StreamEvent::LinkDown);
        }
        self.in_flight = None;
        for sreq in std::mem::take(&mut self.queue) {
            if let Purpose::Command(id) = sreq.purpose {
                self.notices.push_back(Notice::CommandFailed {
                    id,
                    reason: reason.to_string(),
                });
            }
        }
        self.fail_all_zcl(reason);
        self.srsp_timeouts_in_row = 0;
    }

    fn next_tsn(&mut self) -> u8 {
        self.tsn = self.tsn.wrapping_add(1);
        self.tsn
    }

    fn next_trans_id(&mut self) -> u8 {
        self.trans_id = self.trans_id.wrapping_add(1);
        self.trans_id
    }
}

/// A short description of an SRSP that is not a plain success.
fn describe_status(command: &MtCommand) -> String {
    match command {
        MtCommand::StatusRsp { status } => format!("status {status:#04x}"),
        MtCommand::RpcError { code, .. } => format!(
            "RPC error {code} ({})",
            match code {
                1 => "subsystem not supported",
                2 => "command id not supported",
                3 => "bad parameter",
                4 => "bad length",
                _ => "unknown",
            }
        ),
        other => format!("{other:?}"),
    }
}
