//! The half-duplex RS485 bus contract.

use std::time::Duration;

use crate::{HalError, LineSettings};

/// Bytes sent before a frame to wake a meter's UART (DL/T 645 meters use `FE FE FE FE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// The byte sent.
    pub byte: u8,
    /// How many times.
    pub count: u8,
}

/// Timing of one exchange on the bus; the protocol driver's host fills it from the protocol's rules and
/// the meter's measured latency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rs485Timing {
    /// Sent before the frame, if the protocol or meter needs it.
    pub preamble: Option<Preamble>,
    /// The line must have been silent this long before we transmit (Modbus's 3.5 characters, DL/T 645's
    /// wait before the next request). The backend waits out what is left of it.
    pub min_idle_before: Duration,
    /// After the last bit of the request, the time before the host listens (the transceiver's
    /// driver-disable delay). A reply cannot start earlier.
    pub turnaround: Duration,
    /// How long to wait, after the turnaround, for the first byte of a reply.
    pub first_byte_timeout: Duration,
    /// Once a reply has started, the longest gap between two bytes before the reply is taken as ended.
    pub inter_byte_timeout: Duration,
}

impl Default for Rs485Timing {
    /// DL/T 645-2007's reply window (up to 500 ms) with a generous inter-byte gap.
    fn default() -> Self {
        Rs485Timing {
            preamble: None,
            min_idle_before: Duration::ZERO,
            turnaround: Duration::ZERO,
            first_byte_timeout: Duration::from_millis(500),
            inter_byte_timeout: Duration::from_millis(50),
        }
    }
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyEnd {
    /// The completion check accepted the bytes received (a whole frame by the protocol's rules).
    Complete,
    /// Bytes came, then the line was silent for the inter-byte timeout before the completion check
    /// accepted them (a truncated or malformed reply, or a protocol framed by silence).
    Silence,
    /// Nothing came within the first-byte timeout.
    NoReply,
}

/// What the backend observed about one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyInfo {
    /// How the reply ended.
    pub end: ReplyEnd,
    /// From the end of the request to the first reply byte, when one came.
    pub latency: Option<Duration>,
}

/// How the transceiver's driver is switched between sending and receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectionControl {
    /// The adapter switches by itself (most USB-RS485 adapters), or the bus is simulated.
    Automatic,
    /// The kernel's RS485 mode drives RTS around each transmission (`TIOCSRS485`).
    KernelRs485,
    /// The host drives a GPIO line: high while sending.
    Gpio {
        /// Which line, as named in the config (e.g. `gpiochip0:17`).
        line: String,
    },
}

/// A half-duplex RS485 bus shared by many devices.
///
/// The bus owner (one scheduler thread per bus) is the only caller; drivers never see the bus. Every
/// method either completes or returns an error that names the bus; a device that does not answer is not
/// an error (it is [`ReplyEnd::NoReply`]).
pub trait Rs485Bus: Send {
    /// The bus's name from the config.
    fn name(&self) -> &str;

    /// Current line settings.
    fn settings(&self) -> LineSettings;

    /// Changes the line settings (a scan across baud rates does this).
    fn set_settings(&mut self, settings: LineSettings) -> Result<(), HalError>;

    /// How the direction is controlled on this bus.
    fn direction(&self) -> DirectionControl;

    /// Sends a frame that expects no reply (a broadcast), and returns once it has left the wire and the
    /// turnaround has passed.
    fn send(&mut self, frame: &[u8], timing: &Rs485Timing) -> Result<(), HalError>;

    /// Sends `request` and receives the reply into `reply` (cleared first).
    ///
    /// `is_complete` is asked after every received chunk whether the bytes so far form a whole reply;
    /// the exchange ends as soon as it says yes, so a poll cycle does not pay an inter-byte timeout per
    /// reply. Input that arrived before the request (stray bytes, a late reply to an earlier request) is
    /// discarded.
    fn transact(
        &mut self,
        request: &[u8],
        timing: &Rs485Timing,
        reply: &mut Vec<u8>,
        is_complete: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<ReplyInfo, HalError>;
}

impl<B: Rs485Bus + ?Sized> Rs485Bus for Box<B> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn settings(&self) -> LineSettings {
        (**self).settings()
    }
    fn set_settings(&mut self, settings: LineSettings) -> Result<(), HalError> {
        (**self).set_settings(settings)
    }
    fn direction(&self) -> DirectionControl {
        (**self).direction()
    }
    fn send(&mut self, frame: &[u8], timing: &Rs485Timing) -> Result<(), HalError> {
        (**self).send(frame, timing)
    }
    fn transact(
        &mut self,
        request: &[u8],
        timing: &Rs485Timing,
        reply: &mut Vec<u8>,
        is_complete: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<ReplyInfo, HalError> {
        (**self).transact(request, timing, reply, is_complete)
    }
}
