//! Serial ports through the `serialport` crate, as RS485 buses and as full-duplex streams.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use serialport::{ClearBuffer, SerialPort, TTYPort};

use super::gpio::{GpioLineSpec, GpioOutput};
use super::rs485::{self, KernelRs485};
use crate::gpio::OutputLine;
use crate::half_duplex::{HalfDuplexBus, RawPort};
use crate::pty::PtyPair;
use crate::{DirectionControl, ErrorKind, HalError, LineSettings, Parity, SerialStream};

/// A serial port on Linux.
#[derive(Debug)]
pub struct TtyPort {
    port: TTYPort,
}

fn to_serialport(settings: LineSettings) -> (serialport::DataBits, serialport::Parity, serialport::StopBits) {
    let data = match settings.data_bits {
        5 => serialport::DataBits::Five,
        6 => serialport::DataBits::Six,
        7 => serialport::DataBits::Seven,
        _ => serialport::DataBits::Eight,
    };
    let parity = match settings.parity {
        Parity::None => serialport::Parity::None,
        Parity::Even => serialport::Parity::Even,
        Parity::Odd => serialport::Parity::Odd,
    };
    let stop = if settings.stop_bits == 2 { serialport::StopBits::Two } else { serialport::StopBits::One };
    (data, parity, stop)
}

fn sp_err(e: serialport::Error) -> io::Error {
    match e.kind {
        serialport::ErrorKind::Io(kind) => io::Error::new(kind, e.description),
        serialport::ErrorKind::NoDevice => io::Error::new(io::ErrorKind::NotFound, e.description),
        serialport::ErrorKind::InvalidInput => io::Error::new(io::ErrorKind::InvalidInput, e.description),
        serialport::ErrorKind::Unknown => io::Error::other(e.description),
    }
}

impl TtyPort {
    /// Opens the device at `path` with `settings`, exclusively.
    pub fn open(path: &str, settings: LineSettings) -> Result<Self, HalError> {
        let (data, parity, stop) = to_serialport(settings);
        let port = serialport::new(path, settings.baud)
            .data_bits(data)
            .parity(parity)
            .stop_bits(stop)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(|e| HalError::io(path, "opening the serial port", sp_err(e)))?;
        Ok(TtyPort { port })
    }

    /// Uses the master side of a pseudo-terminal as a port, so that a program holding the slave side
    /// (an external meter simulator, a protocol tool) is on the other end of the bus.
    pub fn attach_pty(pty: &PtyPair, settings: LineSettings) -> Result<Self, HalError> {
        let fd: RawFd = pty.master()?.into_raw_fd();
        // SAFETY: `fd` is a freshly duplicated descriptor that the TTYPort now owns and closes.
        let port = unsafe { <TTYPort as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut port = TtyPort { port };
        // Line settings on a pseudo-terminal are recorded but have no effect; ignore refusals.
        let _ = port.apply_settings(settings);
        Ok(port)
    }
}

impl AsRawFd for TtyPort {
    fn as_raw_fd(&self) -> RawFd {
        self.port.as_raw_fd()
    }
}

impl RawPort for TtyPort {
    fn apply_settings(&mut self, settings: LineSettings) -> io::Result<()> {
        let (data, parity, stop) = to_serialport(settings);
        self.port.set_baud_rate(settings.baud).map_err(sp_err)?;
        self.port.set_data_bits(data).map_err(sp_err)?;
        self.port.set_parity(parity).map_err(sp_err)?;
        self.port.set_stop_bits(stop).map_err(sp_err)
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.port, data)
    }

    fn drain(&mut self) -> io::Result<()> {
        Write::flush(&mut self.port)
    }

    fn discard_input(&mut self) -> io::Result<()> {
        self.port.clear(ClearBuffer::Input).map_err(sp_err)
    }

    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if !crate::pty::wait_readable(&self.port, timeout)? {
            return Ok(0);
        }
        match self.port.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// How to open an RS485 bus on a Linux serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialBusConfig {
    /// The bus's name, for logs and errors.
    pub name: String,
    /// The device (`/dev/ttyUSB0`, `/dev/serial/by-id/...`, `/dev/ttyAMA0`, a udev symlink).
    pub path: PathBuf,
    /// Line settings.
    pub settings: LineSettings,
    /// Whether to use the kernel's RS485 mode.
    pub kernel_rs485: KernelRs485,
    /// A GPIO line that enables the transceiver's driver, used when the kernel mode is not.
    pub direction_gpio: Option<GpioLineSpec>,
    /// The driver-disable delay after a frame (also the kernel mode's RTS-after-send delay).
    pub turnaround: Duration,
    /// The transceiver echoes our own bytes (receiver left on while sending).
    pub echo: bool,
}

/// An RS485 bus on a Linux serial port.
pub type SerialRs485Bus = HalfDuplexBus<TtyPort>;

impl SerialBusConfig {
    /// Opens the port and settles direction control: the kernel's RS485 mode when the UART has it (and it
    /// is not off), else the GPIO direction line, else the adapter's automatic switching.
    pub fn open(&self) -> Result<SerialRs485Bus, HalError> {
        let path = self.path.display().to_string();
        let port = TtyPort::open(&path, self.settings)?;
        let kernel = match self.kernel_rs485 {
            KernelRs485::Off => false,
            mode => {
                let on = rs485::enable(&port, self.turnaround)
                    .map_err(|e| HalError::io(path.clone(), "enabling the kernel's RS485 mode", e))?;
                if !on && mode == KernelRs485::Required {
                    return Err(HalError::new(
                        ErrorKind::Unsupported,
                        path,
                        "the UART has no kernel RS485 mode (TIOCSRS485); set kernel_rs485 = \"if-supported\" and give a direction_gpio line, or use an adapter with automatic direction control",
                    ));
                }
                on
            }
        };
        let (direction, line): (DirectionControl, Option<Box<dyn OutputLine>>) = match (&self.direction_gpio, kernel) {
            (_, true) => (DirectionControl::KernelRs485, None),
            (Some(spec), false) => {
                let line = GpioOutput::open(spec, &format!("concentrator {} direction", self.name), false)?;
                (DirectionControl::Gpio { line: spec.to_string() }, Some(Box::new(line)))
            }
            (None, false) => (DirectionControl::Automatic, None),
        };
        Ok(HalfDuplexBus::new(self.name.clone(), port, self.settings, direction, line, self.echo))
    }

    /// Attaches the master side of a pseudo-terminal as the bus (automatic direction, no echo).
    pub fn attach_pty(name: &str, pty: &PtyPair, settings: LineSettings) -> Result<SerialRs485Bus, HalError> {
        let port = TtyPort::attach_pty(pty, settings)?;
        Ok(HalfDuplexBus::new(name, port, settings, DirectionControl::Automatic, None, false))
    }
}

/// A serial port used as a full-duplex stream (Zigbee coordinator, modem).
#[derive(Debug)]
pub struct SerialStreamPort {
    name: String,
    port: TtyPort,
}

impl SerialStreamPort {
    /// Opens `path` at `settings` as a stream named `name`.
    pub fn open(name: &str, path: &str, settings: LineSettings) -> Result<Self, HalError> {
        Ok(SerialStreamPort { name: name.to_string(), port: TtyPort::open(path, settings)? })
    }

    /// Uses the master side of a pseudo-terminal (an emulator holds the slave side).
    pub fn attach_pty(name: &str, pty: &PtyPair) -> Result<Self, HalError> {
        Ok(SerialStreamPort {
            name: name.to_string(),
            port: TtyPort::attach_pty(pty, LineSettings::modbus_default())?,
        })
    }
}

impl SerialStream for SerialStreamPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), HalError> {
        RawPort::write_all(&mut self.port, data)
            .and_then(|()| self.port.drain())
            .map_err(|e| HalError::io(self.name.clone(), "writing", e))
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, HalError> {
        self.port.read_timeout(buf, timeout).map_err(|e| HalError::io(self.name.clone(), "reading", e))
    }
}
