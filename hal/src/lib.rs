//! Hardware abstraction for the concentrator.
//!
//! Everything above this crate (the bus scheduler, driver plugins' host, the modem supervisor) talks to
//! hardware only through the traits defined here, so the same code runs on a Raspberry Pi, on any Linux
//! machine with USB-RS485 adapters, and on simulated buses in tests and demos.
//!
//! - [`Rs485Bus`]: a half-duplex, shared RS485 bus: one request out, at most one reply back, under the
//!   protocol's timeouts. The bus is shared by many meters; a meter driver never owns the port.
//! - [`SerialStream`]: a full-duplex byte stream (Zigbee coordinators, cellular modems).
//! - GPIO lines: the `embedded-hal` 1.0 digital traits, re-exported in [`gpio`].
//! - [`Clock`]: monotonic and wall time, and sleeping; the simulated clock advances by the wire time
//!   of every byte, so tests can state how long a poll cycle takes on the wire.
//!
//! Backends:
//! - [`sim`]: virtual buses with pluggable virtual devices, fault injection, and a virtual clock. A sim
//!   bus can be served on a pseudo-terminal for external tools.
//! - `linux` (feature `linux`, on by default): serial ports with the kernel's RS485 mode where the UART
//!   has it, a GPIO direction line otherwise; GPIO through the character device; pseudo-terminals.
//! - `rpi` (feature `rpi`): Raspberry Pi board detection, UART and GPIO through rppal.
//!
//! No meter protocol is known here.
//!
//! ```
//! use std::time::Duration;
//! use concentrator_hal::sim::{ScriptedDevice, SimBus, SimClock};
//! use concentrator_hal::{LineSettings, Rs485Bus, Rs485Timing, ReplyEnd};
//!
//! let clock = SimClock::new_virtual();
//! let mut bus = SimBus::new("demo", LineSettings::dlt645_default(), clock.clone());
//! bus.attach(ScriptedDevice::new("echo").answer(b"ping", b"pong", Duration::from_millis(30)));
//! let mut reply = Vec::new();
//! let info = bus.transact(b"ping", &Rs485Timing::default(), &mut reply, &mut |r| r.len() == 4).unwrap();
//! assert_eq!(info.end, ReplyEnd::Complete);
//! assert_eq!(reply, b"pong");
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod bus;
mod clock;
mod error;
pub mod gpio;
#[cfg(feature = "linux")]
mod half_duplex;
mod line;
pub mod power_fail;
mod stream;

pub mod sim;

#[cfg(feature = "linux")]
pub mod linux;
pub mod pty;
#[cfg(feature = "rpi")]
pub mod rpi;

pub use bus::{DirectionControl, Preamble, ReplyEnd, ReplyInfo, Rs485Bus, Rs485Timing};
pub use clock::{Clock, SystemClock};
pub use error::{os_words, without_errno, ErrorKind, HalError};
pub use line::{LineSettings, LineSettingsError, Parity, STANDARD_BAUD_RATES};
pub use stream::SerialStream;
