//! The safe traits a driver implements, and the values it exchanges with the host.

use std::time::Duration;

use concentrator_plugin_api::values::{DeviceException, Reading, StreamEvent, Task};
use concentrator_plugin_api::{RawTime, RawTiming};

/// Why a driver refuses something (a meter's config, a task). Any error type converts into it with `?`
/// or `.into()`, and so do `&str` and `String`; the host shows its `Display` text.
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// The time the host passes into a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_millis: i64,
    /// The host's monotonic time since its start.
    pub monotonic: Duration,
}

impl Now {
    /// Wall-clock time in whole Unix seconds.
    pub fn unix_seconds(&self) -> i64 {
        self.unix_millis.div_euclid(1000)
    }

    pub(crate) fn from_raw(raw: RawTime) -> Self {
        Now {
            unix_millis: raw.unix_millis,
            monotonic: Duration::from_micros(raw.monotonic_micros),
        }
    }
}

/// Timing hints for one exchange. `None` leaves the host's default (DL/T 645-like: 500 ms for the first
/// byte, 50 ms between bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// How long to wait for the first byte of the reply.
    pub reply_timeout: Option<Duration>,
    /// Longest gap between two bytes of the reply.
    pub inter_byte_timeout: Option<Duration>,
    /// Silence the line needs before the request (Modbus's 3.5 characters).
    pub min_idle_before: Option<Duration>,
    /// Delay after the request before listening.
    pub turnaround: Option<Duration>,
    /// Wake-up bytes sent before the frame: (byte, count), e.g. `(0xFE, 4)` for DL/T 645.
    pub preamble: Option<(u8, u8)>,
}

impl Timing {
    pub(crate) fn to_raw(self) -> RawTiming {
        let micros =
            |d: Option<Duration>| d.map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        let (preamble_byte, preamble_count) = self.preamble.unwrap_or((0, 0));
        RawTiming {
            reply_timeout_micros: micros(self.reply_timeout),
            inter_byte_timeout_micros: micros(self.inter_byte_timeout),
            min_idle_before_micros: micros(self.min_idle_before),
            turnaround_micros: micros(self.turnaround),
            preamble_byte,
            preamble_count,
            reserved: [0; 2],
        }
    }
}

/// A frame for the host to put on the bus.
#[cfg(feature = "hal")]
impl From<&concentrator_hal::Rs485Timing> for Timing {
    /// The hints for a HAL timing; zero durations are left to the host's defaults.
    fn from(timing: &concentrator_hal::Rs485Timing) -> Self {
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        Timing {
            reply_timeout: some(timing.first_byte_timeout),
            inter_byte_timeout: some(timing.inter_byte_timeout),
            min_idle_before: some(timing.min_idle_before),
            turnaround: some(timing.turnaround),
            preamble: timing.preamble.map(|p| (p.byte, p.count)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The bytes, without any wake-up preamble (put that in [`Timing::preamble`]).
    pub frame: Vec<u8>,
    /// Timing hints.
    pub timing: Timing,
    /// False for a broadcast that no meter answers.
    pub expects_reply: bool,
}

impl Request {
    /// A request that expects a reply, with the host's default timing.
    pub fn new(frame: Vec<u8>) -> Self {
        Request {
            frame,
            timing: Timing::default(),
            expects_reply: true,
        }
    }

    /// A broadcast: no reply is expected.
    pub fn broadcast(frame: Vec<u8>) -> Self {
        Request {
            frame,
            timing: Timing::default(),
            expects_reply: false,
        }
    }

    /// The same request with these timing hints.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }
}

/// What came back for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The driver's [`MeterDriver::is_complete`] accepted these bytes.
    Complete(&'a [u8]),
    /// These bytes came, then the line went silent before they were complete.
    Silence(&'a [u8]),
    /// Nothing came within the reply timeout.
    Timeout,
    /// The request was a broadcast and has been sent.
    Sent,
}

/// What a driver makes of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task is done with these readings (none for a relay command or a clock set).
    Done(Vec<Reading>),
    /// The meter answered that it cannot do it. Not a transport failure.
    DeviceException(DeviceException),
    /// Another exchange is needed (a follow-up frame, the next register block); `readings` so far are
    /// kept by the host and returned with the final ones.
    NeedAnotherExchange {
        /// Readings decoded so far.
        readings: Vec<Reading>,
        /// The next request.
        next: Request,
    },
    /// The reply could not be understood (bad checksum, wrong length, a timeout the driver cannot
    /// recover from).
    ProtocolError(String),
}

/// An RS485 meter driver: one value of this type per meter, made by [`MeterDriver::open`].
///
/// The host calls [`begin`](MeterDriver::begin) for a task, puts the request on the bus, calls
/// [`is_complete`](MeterDriver::is_complete) as reply bytes arrive, and hands the reply to
/// [`finish`](MeterDriver::finish); while `finish` returns [`Outcome::NeedAnotherExchange`] it repeats
/// the exchange with the next request. Retries, scheduling and statistics are the host's.
pub trait MeterDriver: Sized + Send + 'static {
    /// Called once when the plugin is loaded, before any meter is opened. The default does nothing.
    fn init() -> Result<(), Rejection> {
        Ok(())
    }

    /// Makes the per-meter state from the meter's address (as bytes: 6 BCD bytes for DL/T 645, 1 byte
    /// for Modbus) and its config, a TOML fragment from the appliance's config (may be empty).
    fn open(address: &[u8], config: &str) -> Result<Self, Rejection>;

    /// Starts a task and returns the first request, or refuses a task this meter cannot do.
    fn begin(&mut self, task: &Task, now: Now) -> Result<Request, Rejection>;

    /// Whether the bytes received so far form a whole reply.
    fn is_complete(&mut self, reply: &[u8]) -> bool;

    /// Takes the reply to the last request.
    fn finish(&mut self, reply: Reply<'_>, now: Now) -> Outcome;
}

/// A stream driver (a Zigbee coordinator, a modem): bytes in, bytes out, ticks of time, events out.
pub trait StreamDriver: Sized + Send + 'static {
    /// Called once when the plugin is loaded. The default does nothing.
    fn init() -> Result<(), Rejection> {
        Ok(())
    }

    /// Makes the per-stream state from its config (a TOML fragment, may be empty).
    fn open(config: &str, now: Now) -> Result<Self, Rejection>;

    /// Bytes received from the device.
    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), Rejection>;

    /// The next bytes to send to the device, if any.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;

    /// Time has passed (the host calls this at least every few hundred milliseconds).
    fn on_tick(&mut self, now: Now) -> Result<(), Rejection>;

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<StreamEvent>;

    /// A command from the host for a device behind the stream (API 1.1), as text. A coordinator
    /// receives the coordinator API's JSON (`api::coordinator::CommandRequest`, API 1.2) and may accept
    /// further commands of its own. Accepting it means its result comes later as a notice. The default
    /// refuses every command.
    fn on_command(&mut self, command: &str, now: Now) -> Result<(), Rejection> {
        let _ = (command, now);
        Err("this stream driver takes no commands".into())
    }

    /// The next notice (API 1.1): text. A coordinator writes `api::coordinator::CoordinatorEvent`s
    /// as JSON (`to_json`, API 1.2): a command's outcome, a device joined, interviewed, updated or left. The default has none.
    fn poll_notice(&mut self) -> Option<String> {
        None
    }
}
