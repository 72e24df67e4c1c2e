//! The AT engine driven over a HAL serial stream with a HAL clock: blocking calls, one command at a time.

use std::sync::Arc;
use std::time::Duration;

use concentrator_hal::{Clock, SerialStream};

use super::at::{AtCommand, AtEngine, AtEvent, AtFailure};
use super::ModemError;

/// Longest single wait on the stream, so deadlines are checked often.
const SLICE: Duration = Duration::from_millis(20);

/// An AT port: a serial stream, the engine, the clock, and the URCs seen so far.
#[derive(Debug)]
pub struct AtPort<S: SerialStream> {
    stream: S,
    engine: AtEngine,
    clock: Arc<dyn Clock>,
    urcs: Vec<String>,
}

impl<S: SerialStream> AtPort<S> {
    /// Drives the modem on `stream`, timing with `clock`.
    pub fn new(stream: S, clock: Arc<dyn Clock>) -> Self {
        AtPort {
            stream,
            engine: AtEngine::new(),
            clock,
            urcs: Vec::new(),
        }
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Sends `text` and waits for its final result: the information lines, or how it failed.
    /// The outer error is the serial port's (unplugged adapter, closed pty).
    pub fn command(
        &mut self,
        text: &str,
        timeout: Duration,
    ) -> Result<Result<Vec<String>, AtFailure>, ModemError> {
        self.run(AtCommand::new(text, timeout))
    }

    /// Sends `text` and, after the modem's `> ` prompt, `payload` and Ctrl-Z; waits for the final result.
    pub fn command_with_payload(
        &mut self,
        text: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Result<Vec<String>, AtFailure>, ModemError> {
        self.run(AtCommand::with_payload(text, payload, timeout))
    }

    fn run(&mut self, command: AtCommand) -> Result<Result<Vec<String>, AtFailure>, ModemError> {
        self.engine.submit(command);
        let mut buf = [0u8; 256];
        loop {
            let now = self.clock.monotonic();
            if let Some(bytes) = self.engine.poll_transmit(now) {
                log::trace!(
                    "{} <- {:?}",
                    self.stream.name(),
                    String::from_utf8_lossy(&bytes)
                );
                self.stream.write_all(&bytes)?;
            }
            self.engine.tick(now);
            while let Some(ev) = self.engine.poll_event() {
                match ev {
                    AtEvent::Urc(u) => {
                        log::debug!("{}: URC {u}", self.stream.name());
                        self.urcs.push(u);
                    }
                    AtEvent::Done { result, .. } => return Ok(result),
                }
            }
            let wait = self
                .engine
                .deadline()
                .map_or(SLICE, |d| d.saturating_sub(now).min(SLICE))
                .max(Duration::from_millis(1));
            let n = self.stream.read(&mut buf, wait)?;
            if n > 0 {
                self.engine.feed(&buf[..n]);
            } else if self.clock.monotonic() == now {
                // The clock did not move while we waited: a virtual clock. Let it advance by the wait.
                self.clock.sleep(wait);
            }
        }
    }

    /// Waits up to `wait` for input (URCs such as `+CMTI`) without sending anything.
    pub fn listen(&mut self, wait: Duration) -> Result<(), ModemError> {
        let until = self.clock.monotonic() + wait;
        let mut buf = [0u8; 256];
        loop {
            let now = self.clock.monotonic();
            if now >= until {
                break;
            }
            let slice = (until - now).min(SLICE);
            let n = self.stream.read(&mut buf, slice)?;
            if n > 0 {
                self.engine.feed(&buf[..n]);
            } else if self.clock.monotonic() == now {
                self.clock.sleep(slice);
            }
        }
        while let Some(ev) = self.engine.poll_event() {
            if let AtEvent::Urc(u) = ev {
                self.urcs.push(u);
            }
        }
        Ok(())
    }

    /// URCs received since the last call.
    pub fn take_urcs(&mut self) -> Vec<String> {
        std::mem::take(&mut self.urcs)
    }

    /// Forgets queued commands and partial input (after a reset), and drops what the modem sends within
    /// `quiet` (boot messages).
    pub fn reset(&mut self, quiet: Duration) -> Result<(), ModemError> {
        self.engine.reset();
        let until = self.clock.monotonic() + quiet;
        let mut buf = [0u8; 256];
        loop {
            let now = self.clock.monotonic();
            if now >= until {
                return Ok(());
            }
            let wait = (until - now).min(SLICE);
            if self.stream.read(&mut buf, wait)? == 0 && self.clock.monotonic() == now {
                self.clock.sleep(wait);
            }
        }
    }
}
