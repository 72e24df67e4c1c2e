//! The request/reply engine shared by the real-hardware backends (Linux serial ports, the Pi's UART).
//!
//! A backend provides a [`RawPort`]; [`HalfDuplexBus`] adds what RS485 needs on top: the silent interval
//! before a request, the wake-up preamble, the direction line, echo removal, and the first-byte and
//! inter-byte timeouts with a completion check.

use std::io;
use std::time::{Duration, Instant};

use crate::gpio::OutputLine;
use crate::{DirectionControl, HalError, LineSettings, ReplyEnd, ReplyInfo, Rs485Bus, Rs485Timing};

/// The few operations a serial port must offer.
pub trait RawPort: Send {
    /// Applies line settings.
    fn apply_settings(&mut self, settings: LineSettings) -> io::Result<()>;
    /// Writes all bytes.
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Waits until every written byte has left the UART.
    fn drain(&mut self) -> io::Result<()>;
    /// Drops whatever input has arrived and not been read.
    fn discard_input(&mut self) -> io::Result<()>;
    /// Reads what is available, waiting up to `timeout` for the first byte; 0 when nothing came.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
}

/// A half-duplex RS485 bus over any [`RawPort`].
pub struct HalfDuplexBus<P: RawPort> {
    name: String,
    port: P,
    settings: LineSettings,
    direction: DirectionControl,
    direction_line: Option<Box<dyn OutputLine>>,
    echo: bool,
    last_activity: Option<Instant>,
}

impl<P: RawPort> std::fmt::Debug for HalfDuplexBus<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HalfDuplexBus")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("direction", &self.direction)
            .field("echo", &self.echo)
            .finish_non_exhaustive()
    }
}

impl<P: RawPort> HalfDuplexBus<P> {
    /// Wraps a port. `direction_line`, when given, is driven high while sending; `echo` says the
    /// transceiver's receiver stays on while sending, so our own bytes come back and must be skipped.
    pub fn new(
        name: impl Into<String>,
        port: P,
        settings: LineSettings,
        direction: DirectionControl,
        direction_line: Option<Box<dyn OutputLine>>,
        echo: bool,
    ) -> Self {
        HalfDuplexBus {
            name: name.into(),
            port,
            settings,
            direction,
            direction_line,
            echo,
            last_activity: None,
        }
    }

    fn err(&self, doing: &str, e: io::Error) -> HalError {
        HalError::io(self.name.clone(), doing, e)
    }

    /// Sends the frame with the direction line around it; returns when the last bit has left.
    fn put_on_wire(&mut self, frame: &[u8], timing: &Rs485Timing) -> Result<(), HalError> {
        if let Some(last) = self.last_activity {
            let idle = last.elapsed();
            if idle < timing.min_idle_before {
                std::thread::sleep(timing.min_idle_before - idle);
            }
        }
        self.port
            .discard_input()
            .map_err(|e| self.err("discarding stale input", e))?;
        let mut wire = Vec::with_capacity(frame.len() + 4);
        if let Some(p) = timing.preamble {
            wire.extend(std::iter::repeat_n(p.byte, usize::from(p.count)));
        }
        wire.extend_from_slice(frame);
        if let Some(line) = self.direction_line.as_mut() {
            line.set_high().map_err(|e| {
                HalError::new(
                    e.kind(),
                    self.name.clone(),
                    format!("raising the direction line: {e}"),
                )
            })?;
        }
        let sent = self.port.write_all(&wire).and_then(|()| self.port.drain());
        if let Some(line) = self.direction_line.as_mut() {
            if !timing.turnaround.is_zero() {
                std::thread::sleep(timing.turnaround);
            }
            line.set_low().map_err(|e| {
                HalError::new(
                    e.kind(),
                    self.name.clone(),
                    format!("lowering the direction line: {e}"),
                )
            })?;
        }
        sent.map_err(|e| self.err("sending a frame", e))?;
        if self.echo {
            self.skip_echo(wire.len())?;
        }
        self.last_activity = Some(Instant::now());
        Ok(())
    }

    fn skip_echo(&mut self, mut len: usize) -> Result<(), HalError> {
        let mut buf = [0u8; 256];
        while len > 0 {
            let want = len.min(buf.len());
            let n = self
                .port
                .read_timeout(
                    &mut buf[..want],
                    self.settings.wire_time(4) + Duration::from_millis(20),
                )
                .map_err(|e| self.err("reading back the echo of our frame", e))?;
            if n == 0 {
                break;
            }
            len -= n;
        }
        Ok(())
    }
}

impl<P: RawPort> Rs485Bus for HalfDuplexBus<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn settings(&self) -> LineSettings {
        self.settings
    }

    fn set_settings(&mut self, settings: LineSettings) -> Result<(), HalError> {
        settings.validate().map_err(|e| {
            HalError::new(
                crate::ErrorKind::InvalidSettings,
                self.name.clone(),
                e.to_string(),
            )
        })?;
        self.port
            .apply_settings(settings)
            .map_err(|e| self.err("changing line settings", e))?;
        self.settings = settings;
        Ok(())
    }

    fn direction(&self) -> DirectionControl {
        self.direction.clone()
    }

    fn send(&mut self, frame: &[u8], timing: &Rs485Timing) -> Result<(), HalError> {
        self.put_on_wire(frame, timing)?;
        if self.direction_line.is_none() && !timing.turnaround.is_zero() {
            std::thread::sleep(timing.turnaround);
        }
        Ok(())
    }

    fn transact(
        &mut self,
        request: &[u8],
        timing: &Rs485Timing,
        reply: &mut Vec<u8>,
        is_complete: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<ReplyInfo, HalError> {
        reply.clear();
        self.put_on_wire(request, timing)?;
        let sent_at = Instant::now();
        let mut buf = [0u8; 256];
        let first_wait = timing.first_byte_timeout
            + if self.direction_line.is_some() {
                Duration::ZERO
            } else {
                timing.turnaround
            };
        let n = self
            .port
            .read_timeout(&mut buf, first_wait)
            .map_err(|e| self.err("waiting for a reply", e))?;
        if n == 0 {
            return Ok(ReplyInfo {
                end: ReplyEnd::NoReply,
                latency: None,
            });
        }
        let latency = Some(sent_at.elapsed());
        reply.extend_from_slice(&buf[..n]);
        loop {
            self.last_activity = Some(Instant::now());
            if is_complete(reply) {
                return Ok(ReplyInfo {
                    end: ReplyEnd::Complete,
                    latency,
                });
            }
            let n = self
                .port
                .read_timeout(&mut buf, timing.inter_byte_timeout)
                .map_err(|e| self.err("reading a reply", e))?;
            if n == 0 {
                return Ok(ReplyInfo {
                    end: ReplyEnd::Silence,
                    latency,
                });
            }
            reply.extend_from_slice(&buf[..n]);
        }
    }
}
