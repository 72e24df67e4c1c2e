//! The Raspberry Pi backend (feature `rpi`): board detection, the on-board UART as an RS485 bus with a
//! GPIO direction line, and GPIO outputs (direction line, modem power key, status LED), through rppal.
//!
//! rppal is in maintenance mode, so it stays behind this module: the rest of the appliance sees only the
//! HAL traits, and the `linux` backend (kernel RS485 mode, GPIO character device) does the same work on
//! any board. Everything here compiles on any architecture; off a Pi, [`RpiBoard::detect`] returns an
//! [`ErrorKind::Unsupported`] error that says so.
//!
//! ```no_run
//! use concentrator_hal::rpi::RpiBoard;
//! let board = RpiBoard::detect()?;
//! println!("running on {}", board.model());
//! let mut led = board.output(27, "status LED")?;
//! # Ok::<(), concentrator_hal::HalError>(())
//! ```

use std::io;
use std::time::Duration;

use embedded_hal::digital::{ErrorType, OutputPin};
use rppal::gpio::Gpio;
use rppal::system::DeviceInfo;
use rppal::uart::{Queue, Uart};

use crate::half_duplex::{HalfDuplexBus, RawPort};
use crate::{DirectionControl, ErrorKind, HalError, LineSettings, Parity};

/// The Raspberry Pi this process runs on.
#[derive(Debug)]
pub struct RpiBoard {
    info: DeviceInfo,
}

impl RpiBoard {
    /// Detects the board; fails with [`ErrorKind::Unsupported`] when this is not a Raspberry Pi.
    pub fn detect() -> Result<Self, HalError> {
        DeviceInfo::new().map(|info| RpiBoard { info }).map_err(|e| {
            HalError::new(
                ErrorKind::Unsupported,
                "rpi",
                format!("this is not a Raspberry Pi that rppal recognises ({e}); use backend = \"linux\" for other boards, or backend = \"sim\" for simulated hardware"),
            )
        })
    }

    /// The board model, e.g. `Raspberry Pi 4 B`.
    pub fn model(&self) -> String {
        self.info.model().to_string()
    }

    /// The system-on-chip, e.g. `BCM2711`.
    pub fn soc(&self) -> String {
        self.info.soc().to_string()
    }

    /// A GPIO output by its BCM number, initially low.
    pub fn output(&self, bcm: u8, role: &str) -> Result<RpiOutput, HalError> {
        let device = format!("rpi gpio{bcm} ({role})");
        let gpio = Gpio::new().map_err(|e| rppal_err(&device, "opening the GPIO controller", e))?;
        let pin = gpio
            .get(bcm)
            .map_err(|e| rppal_err(&device, "claiming the pin", e))?;
        Ok(RpiOutput {
            device,
            pin: pin.into_output_low(),
        })
    }

    /// The on-board UART at `path` (usually `/dev/serial0`) as an RS485 bus, with the transceiver's
    /// driver enable on GPIO `direction_bcm`.
    pub fn rs485_uart(
        &self,
        name: &str,
        path: &str,
        settings: LineSettings,
        direction_bcm: u8,
    ) -> Result<HalfDuplexBus<RpiUart>, HalError> {
        let uart = RpiUart::open(path, settings)?;
        let line = self.output(direction_bcm, &format!("{name} direction"))?;
        let direction = DirectionControl::Gpio {
            line: format!("bcm{direction_bcm}"),
        };
        Ok(HalfDuplexBus::new(
            name,
            uart,
            settings,
            direction,
            Some(Box::new(line)),
            false,
        ))
    }
}

fn rppal_err(device: &str, doing: &str, e: impl std::fmt::Display) -> HalError {
    let text = e.to_string();
    let kind = if text.contains("ermission") {
        ErrorKind::PermissionDenied
    } else if text.contains("busy") {
        ErrorKind::Busy
    } else {
        ErrorKind::Other
    };
    HalError::new(kind, device, format!("{doing}: {text}"))
}

/// A GPIO output on the Pi.
#[derive(Debug)]
pub struct RpiOutput {
    device: String,
    pin: rppal::gpio::OutputPin,
}

impl RpiOutput {
    /// The pin and its role, for logs.
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl ErrorType for RpiOutput {
    type Error = HalError;
}

impl OutputPin for RpiOutput {
    fn set_low(&mut self) -> Result<(), HalError> {
        self.pin.set_low();
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), HalError> {
        self.pin.set_high();
        Ok(())
    }
}

/// The Pi's UART through rppal.
#[derive(Debug)]
pub struct RpiUart {
    uart: Uart,
}

fn rppal_parity(parity: Parity) -> rppal::uart::Parity {
    match parity {
        Parity::None => rppal::uart::Parity::None,
        Parity::Even => rppal::uart::Parity::Even,
        Parity::Odd => rppal::uart::Parity::Odd,
    }
}

fn to_io(e: rppal::uart::Error) -> io::Error {
    match e {
        rppal::uart::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl RpiUart {
    /// Opens the UART at `path`.
    pub fn open(path: &str, settings: LineSettings) -> Result<Self, HalError> {
        let uart = Uart::with_path(
            path,
            settings.baud,
            rppal_parity(settings.parity),
            settings.data_bits,
            settings.stop_bits,
        )
        .map_err(|e| HalError::io(path, "opening the UART", to_io(e)))?;
        Ok(RpiUart { uart })
    }
}

impl RawPort for RpiUart {
    fn apply_settings(&mut self, settings: LineSettings) -> io::Result<()> {
        self.uart.set_baud_rate(settings.baud).map_err(to_io)?;
        self.uart
            .set_parity(rppal_parity(settings.parity))
            .map_err(to_io)?;
        self.uart.set_data_bits(settings.data_bits).map_err(to_io)?;
        self.uart.set_stop_bits(settings.stop_bits).map_err(to_io)
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.uart.set_write_mode(true).map_err(to_io)?;
        while !data.is_empty() {
            let n = self.uart.write(data).map_err(to_io)?;
            data = &data[n..];
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        self.uart.drain().map_err(to_io)
    }

    fn discard_input(&mut self) -> io::Result<()> {
        self.uart.flush(Queue::Input).map_err(to_io)
    }

    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        // VMIN=0 with VTIME: returns what is there as soon as a byte arrives, or 0 after the timeout
        // (termios counts in tenths of a second, so round up and never wait less than asked).
        let timeout = Duration::from_millis(timeout.as_millis().div_ceil(100) as u64 * 100);
        self.uart.set_read_mode(0, timeout).map_err(to_io)?;
        self.uart.read(buf).map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_pi_detection_says_so() {
        // The build and test machines are not Raspberry Pis; on a Pi this test is skipped by its result.
        if let Err(err) = RpiBoard::detect() {
            assert_eq!(err.kind(), ErrorKind::Unsupported);
            assert!(err.to_string().contains("not a Raspberry Pi"), "{err}");
        }
    }
}
