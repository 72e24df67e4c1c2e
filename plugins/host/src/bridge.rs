//! Running a meter driver's task over an RS485 bus: the host side of the sans-IO contract.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use concentrator_hal::{Clock, Preamble, ReplyEnd, Rs485Bus, Rs485Timing};
use concentrator_plugin_api::codes::{outcome, reply as reply_kind};
use concentrator_plugin_api::values::{DeviceException, Reading, Task};
use concentrator_plugin_api::{
    BytesRef, RawOutcome, RawReading, RawReply, RawRequest, RawTime, RawTiming, Status,
};

use crate::child::{Handle, MeterCalls};
use crate::declaration::{DriverKind, Entries};
use crate::error::TaskError;
use crate::plugin::{Message, Plugin};

/// Largest request frame a driver may produce.
pub const MAX_FRAME: usize = 1024;
/// Most readings one `finish` may return.
pub const MAX_READINGS: usize = 64;
/// Most exchanges one task may take before the driver is taken to be looping.
pub const MAX_EXCHANGES: usize = 32;
/// Longest timeout a driver may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// The result of a task: readings, or the meter's exception; or why the task failed.
pub type TaskResult = Result<Result<Vec<Reading>, DeviceException>, TaskError>;

/// The time to pass into a plugin call.
pub(crate) fn raw_time(clock: &dyn Clock) -> RawTime {
    let unix_millis = clock
        .wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let monotonic_micros = u64::try_from(clock.monotonic().as_micros()).unwrap_or(u64::MAX);
    RawTime {
        unix_millis,
        monotonic_micros,
    }
}

fn hex_address(address: &[u8]) -> String {
    if address.is_empty() {
        String::from("(no address)")
    } else {
        address.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One meter driven by a plugin: the plugin's per-meter state, opened from the meter's address and
/// config. Closed (the plugin frees its state) when dropped.
#[derive(Debug)]
pub struct MeterSession {
    plugin: Arc<Plugin>,
    calls: MeterCalls,
    handle: Handle,
    address: Vec<u8>,
    config: String,
    label: String,
    reply_timeout_cap: Option<Duration>,
    exchanges: Vec<Exchange>,
}

/// What the bus saw of one exchange of a task, for the scheduler's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// How the reply ended (`None` for a broadcast, which expects none).
    pub end: Option<ReplyEnd>,
    /// From the end of the request to the first reply byte.
    pub latency: Option<Duration>,
}

// SAFETY: the plugin's per-meter state is `Send` (the SDK requires `MeterDriver: Send`), and a session is
// used by one thread at a time (`&mut self` for every call).
unsafe impl Send for MeterSession {}

impl Plugin {
    /// Opens a meter: the driver builds its per-meter state from `address` and `config` (a TOML
    /// fragment, may be empty).
    pub fn open_meter(
        self: &Arc<Self>,
        address: &[u8],
        config: &str,
    ) -> Result<MeterSession, TaskError> {
        let calls = match &self.entries {
            Entries::Meter(entries) => MeterCalls::Local(*entries),
            Entries::Child(child) => MeterCalls::Child(Arc::clone(child)),
            Entries::Stream(_) => {
                return Err(TaskError::WrongKind {
                    plugin: self.name().to_owned(),
                    expected: DriverKind::Rs485Meter.name(),
                    found: self.info().kind.name(),
                })
            }
        };
        self.ensure_active()?;
        let label = hex_address(address);
        let mut message = Message::new();
        let (status, handle) = calls.open(self, address, config, &mut message)?;
        match (status, handle) {
            (Status::OK, Some(handle)) => Ok(MeterSession {
                plugin: Arc::clone(self),
                calls,
                handle,
                address: address.to_vec(),
                config: config.to_owned(),
                label,
                reply_timeout_cap: None,
                exchanges: Vec::new(),
            }),
            (Status::OK, None) => {
                Err(self.misbehaved("open", "returned OK without a meter handle"))
            }
            (Status::CONFIG_REJECTED, _) => Err(TaskError::ConfigRejected {
                plugin: self.name().to_owned(),
                meter: label,
                reason: message.text(self, "open")?,
            }),
            (other, _) => Err(self.unexpected("open", other, &message)),
        }
    }
}

/// A request checked and converted for the bus.
struct CheckedRequest {
    frame: Vec<u8>,
    timing: Rs485Timing,
    expects_reply: bool,
}

impl MeterSession {
    /// The plugin that drives this meter.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The meter's address.
    pub fn address(&self) -> &[u8] {
        &self.address
    }

    /// Caps the reply (first-byte) timeout the driver asks for: the scheduler lowers it to what this
    /// meter's measured latency justifies, so a silent meter costs the bus less time. `None`: the
    /// driver's own timeout.
    pub fn set_reply_timeout_cap(&mut self, cap: Option<Duration>) {
        self.reply_timeout_cap = cap;
    }

    /// The exchanges of the last task run, in order.
    pub fn last_exchanges(&self) -> &[Exchange] {
        &self.exchanges
    }

    /// Runs `task` to completion on `bus`: asks the driver for each request, puts it on the bus, lets
    /// the driver say when a reply is complete, and hands the reply back, until the driver is done.
    ///
    /// Returns the readings, or `Ok(Err(_))` when the meter answered with an exception (a healthy meter),
    /// or why the task failed. A panic or a broken rule in the plugin counts towards its quarantine; a
    /// quarantined plugin fails fast with [`TaskError::Quarantined`].
    pub fn run(&mut self, bus: &mut dyn Rs485Bus, clock: &dyn Clock, task: Task) -> TaskResult {
        self.exchanges.clear();
        self.plugin.ensure_active()?;
        let raw_task = task.to_raw();
        let mut frame_buf = vec![0u8; MAX_FRAME];
        let mut request = RawRequest {
            frame: frame_buf.as_mut_ptr(),
            frame_cap: frame_buf.len(),
            frame_len: 0,
            timing: RawTiming::default(),
            expects_reply: 0,
        };
        let mut message = Message::new();
        self.calls
            .refresh(&self.plugin, &mut self.handle, &self.address, &self.config)?;
        let status = self.calls.begin(
            &self.plugin,
            self.handle,
            &raw_task,
            raw_time(clock),
            &mut request,
            &mut frame_buf,
            &mut message,
        )?;
        match status {
            Status::OK => {}
            Status::TASK_REJECTED => {
                return Err(TaskError::TaskRejected {
                    plugin: self.plugin.name().to_owned(),
                    meter: self.label.clone(),
                    task: task.to_string(),
                    reason: message.text(&self.plugin, "begin")?,
                })
            }
            other => return Err(self.plugin.unexpected("begin", other, &message)),
        }
        let mut next = self.check_request("begin", &request, &frame_buf)?;
        let mut readings = Vec::new();
        for _ in 0..MAX_EXCHANGES {
            let (kind, reply) = self.exchange(bus, &next)?;
            match self.finish(kind, &reply, clock, bus.name(), &mut readings)? {
                Step::Done => {
                    for reading in &readings {
                        log::debug!(target: "concentrator::readings", "bus {} meter {}: {reading}", bus.name(), self.label);
                    }
                    return Ok(Ok(readings));
                }
                Step::Exception(exception) => return Ok(Err(exception)),
                Step::Next(request) => next = request,
            }
        }
        Err(self.plugin.misbehaved(
            "finish",
            format!("asked for more than {MAX_EXCHANGES} exchanges for one task"),
        ))
    }

    /// Puts a request on the bus; returns the reply kind and bytes.
    fn exchange(
        &mut self,
        bus: &mut dyn Rs485Bus,
        request: &CheckedRequest,
    ) -> Result<(u32, Vec<u8>), TaskError> {
        if !request.expects_reply {
            bus.send(&request.frame, &request.timing)?;
            self.exchanges.push(Exchange {
                end: None,
                latency: None,
            });
            return Ok((reply_kind::SENT, Vec::new()));
        }
        let mut timing = request.timing.clone();
        if let Some(cap) = self.reply_timeout_cap {
            timing.first_byte_timeout = timing.first_byte_timeout.min(cap);
        }
        let mut reply = Vec::new();
        let mut fault: Option<TaskError> = None;
        let (plugin, calls, handle) = (&self.plugin, &self.calls, self.handle);
        let info = bus.transact(
            &request.frame,
            &timing,
            &mut reply,
            &mut |bytes: &[u8]| {
                if fault.is_some() {
                    return true;
                }
                let (status, complete) = match calls.is_complete(plugin, handle, bytes) {
                    Ok(answer) => answer,
                    Err(error) => {
                        fault = Some(error);
                        return true;
                    }
                };
                match (status, complete) {
                    (Status::OK, 0) => false,
                    (Status::OK, 1) => true,
                    (Status::OK, other) => {
                        fault = Some(
                            plugin
                                .misbehaved("is_complete", format!("answered {other}, not 0 or 1")),
                        );
                        true
                    }
                    (Status::PANICKED, _) => {
                        fault = Some(plugin.panicked(
                            "is_complete",
                            String::from("see the plugin's log record above"),
                        ));
                        true
                    }
                    (other, _) => {
                        fault = Some(plugin.misbehaved(
                            "is_complete",
                            format!("returned status {} ({})", other.0, other.name()),
                        ));
                        true
                    }
                }
            },
        )?;
        self.exchanges.push(Exchange {
            end: Some(info.end),
            latency: info.latency,
        });
        if let Some(fault) = fault {
            return Err(fault);
        }
        let kind = match info.end {
            ReplyEnd::Complete => reply_kind::COMPLETE,
            ReplyEnd::Silence => reply_kind::SILENCE,
            ReplyEnd::NoReply => reply_kind::TIMEOUT,
        };
        if kind == reply_kind::TIMEOUT {
            log::debug!(target: "concentrator::plugins", "meter {} on bus {}: no reply", self.label, bus.name());
        }
        Ok((kind, reply))
    }

    fn finish(
        &mut self,
        kind: u32,
        reply: &[u8],
        clock: &dyn Clock,
        bus: &str,
        readings: &mut Vec<Reading>,
    ) -> Result<Step, TaskError> {
        let mut frame_buf = vec![0u8; MAX_FRAME];
        let mut reading_buf = vec![RawReading::default(); MAX_READINGS];
        let mut out = RawOutcome {
            kind: 0,
            exception_code: 0,
            readings: reading_buf.as_mut_ptr(),
            readings_cap: reading_buf.len(),
            readings_len: 0,
            next: RawRequest {
                frame: frame_buf.as_mut_ptr(),
                frame_cap: frame_buf.len(),
                frame_len: 0,
                timing: RawTiming::default(),
                expects_reply: 0,
            },
        };
        let mut message = Message::new();
        let raw_reply = RawReply {
            kind,
            bytes: BytesRef::new(reply),
        };
        let status = self.calls.finish(
            &self.plugin,
            self.handle,
            raw_reply,
            reply,
            raw_time(clock),
            &mut out,
            &mut reading_buf,
            &mut frame_buf,
            &mut message,
        )?;
        if status != Status::OK {
            return Err(self.plugin.unexpected("finish", status, &message));
        }
        let Some(raw_readings) = reading_buf.get(..out.readings_len) else {
            return Err(self.plugin.misbehaved(
                "finish",
                format!(
                    "reported {} readings in a buffer of {}",
                    out.readings_len,
                    reading_buf.len()
                ),
            ));
        };
        for raw in raw_readings {
            match Reading::try_from_raw(raw) {
                Ok(reading) => readings.push(reading),
                Err(e) => {
                    return Err(self
                        .plugin
                        .misbehaved("finish", format!("returned an invalid reading: {e}")))
                }
            }
        }
        let timed_out = kind == reply_kind::TIMEOUT;
        match out.kind {
            outcome::DONE => Ok(Step::Done),
            outcome::DEVICE_EXCEPTION => Ok(Step::Exception(DeviceException {
                code: out.exception_code,
                text: message.text(&self.plugin, "finish")?,
            })),
            outcome::NEED_ANOTHER_EXCHANGE => Ok(Step::Next(
                self.check_request("finish", &out.next, &frame_buf)?,
            )),
            outcome::PROTOCOL_ERROR if timed_out => Err(TaskError::NoReply {
                meter: self.label.clone(),
                bus: bus.to_owned(),
            }),
            outcome::PROTOCOL_ERROR => Err(TaskError::Protocol {
                plugin: self.plugin.name().to_owned(),
                meter: self.label.clone(),
                message: message.text(&self.plugin, "finish")?,
            }),
            other => Err(self.plugin.misbehaved(
                "finish",
                format!("returned outcome code {other}, which is not defined"),
            )),
        }
    }

    /// Checks the lengths and timing a plugin wrote and copies the frame out of the host's buffer.
    fn check_request(
        &self,
        entry: &'static str,
        request: &RawRequest,
        buf: &[u8],
    ) -> Result<CheckedRequest, TaskError> {
        let Some(frame) = buf.get(..request.frame_len) else {
            return Err(self.plugin.misbehaved(
                entry,
                format!(
                    "reported a {}-byte frame in a {}-byte buffer",
                    request.frame_len,
                    buf.len()
                ),
            ));
        };
        if frame.is_empty() {
            return Err(self
                .plugin
                .misbehaved(entry, "produced an empty request frame"));
        }
        let timing = convert_timing(&request.timing)
            .map_err(|reason| self.plugin.misbehaved(entry, reason))?;
        let expects_reply = match request.expects_reply {
            0 => false,
            1 => true,
            other => {
                return Err(self
                    .plugin
                    .misbehaved(entry, format!("set expects_reply to {other}, not 0 or 1")))
            }
        };
        Ok(CheckedRequest {
            frame: frame.to_vec(),
            timing,
            expects_reply,
        })
    }
}

enum Step {
    Done,
    Exception(DeviceException),
    Next(CheckedRequest),
}

fn convert_timing(raw: &RawTiming) -> Result<Rs485Timing, String> {
    let default = Rs485Timing::default();
    let duration = |micros: u32, name: &str, default: Duration| {
        let d = Duration::from_micros(u64::from(micros));
        if d > MAX_TIMEOUT {
            Err(format!(
                "asked for a {name} of {d:?}; at most {MAX_TIMEOUT:?} is allowed"
            ))
        } else if micros == 0 {
            Ok(default)
        } else {
            Ok(d)
        }
    };
    Ok(Rs485Timing {
        preamble: (raw.preamble_count > 0).then_some(Preamble {
            byte: raw.preamble_byte,
            count: raw.preamble_count,
        }),
        min_idle_before: duration(
            raw.min_idle_before_micros,
            "minimum idle time",
            default.min_idle_before,
        )?,
        turnaround: duration(raw.turnaround_micros, "turnaround", default.turnaround)?,
        first_byte_timeout: duration(
            raw.reply_timeout_micros,
            "reply timeout",
            default.first_byte_timeout,
        )?,
        inter_byte_timeout: duration(
            raw.inter_byte_timeout_micros,
            "inter-byte timeout",
            default.inter_byte_timeout,
        )?,
    })
}

impl Drop for MeterSession {
    fn drop(&mut self) {
        // A quarantined plugin is not called again, not even to free its state.
        if !self.plugin.is_quarantined() {
            self.calls.close(&self.plugin, self.handle);
        }
    }
}
