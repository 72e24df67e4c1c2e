//! Serial ports through termios, as RS485 buses and as full-duplex streams.
//!
//! The port is configured with the classic termios calls and the standard `Bxxxx` rates (every rate a
//! config may name is one), not termios2: qemu-user does not emulate `TCSETS2`, and the cross-compiled
//! tests run under it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use super::gpio::{GpioLineSpec, GpioOutput};
use super::rs485::{self, KernelRs485};
use crate::gpio::OutputLine;
use crate::half_duplex::{HalfDuplexBus, RawPort};
use crate::pty::PtyPair;
use crate::{DirectionControl, ErrorKind, HalError, LineSettings, Parity, SerialStream};

/// A serial port on Linux.
#[derive(Debug)]
pub struct TtyPort {
    file: File,
}

fn speed(baud: u32) -> io::Result<libc::speed_t> {
    Ok(match baud {
        300 => libc::B300,
        600 => libc::B600,
        1200 => libc::B1200,
        2400 => libc::B2400,
        4800 => libc::B4800,
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        921600 => libc::B921600,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} baud is not a standard rate"),
            ))
        }
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl TtyPort {
    /// Opens the device at `path` with `settings`, exclusively (no other process may open it after us).
    pub fn open(path: &str, settings: LineSettings) -> Result<Self, HalError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| HalError::io(path, "opening the serial port", e))?;
        // SAFETY: ioctl and fcntl on a descriptor we own.
        unsafe {
            if libc::ioctl(file.as_raw_fd(), libc::TIOCEXCL as _) != 0 {
                return Err(HalError::io(
                    path,
                    "locking the serial port",
                    io::Error::last_os_error(),
                ));
            }
            // Back to blocking mode; every read waits in poll() with a timeout first.
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if flags < 0
                || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) != 0
            {
                return Err(HalError::io(
                    path,
                    "configuring the serial port",
                    io::Error::last_os_error(),
                ));
            }
        }
        let mut port = TtyPort { file };
        port.apply_settings(settings)
            .map_err(|e| HalError::io(path, "setting the line", e))?;
        Ok(port)
    }

    /// Uses the master side of a pseudo-terminal as a port, so that a program holding the slave side
    /// (an external meter simulator, a protocol tool) is on the other end of the bus. Keep `pty` alive
    /// as long as the port.
    pub fn attach_pty(pty: &PtyPair, _settings: LineSettings) -> Result<Self, HalError> {
        // Line settings on a pseudo-terminal have no effect; the pair is already raw.
        Ok(TtyPort {
            file: pty.master()?,
        })
    }
}

impl AsRawFd for TtyPort {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl RawPort for TtyPort {
    fn apply_settings(&mut self, settings: LineSettings) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let rate = speed(settings.baud)?;
        // SAFETY: termios calls on a descriptor we own, with a struct filled by tcgetattr.
        unsafe {
            let mut tio: libc::termios = std::mem::zeroed();
            check(libc::tcgetattr(fd, &mut tio))?;
            libc::cfmakeraw(&mut tio);
            tio.c_cflag &=
                !(libc::CSIZE | libc::PARENB | libc::PARODD | libc::CSTOPB | libc::CRTSCTS);
            tio.c_cflag |= libc::CLOCAL | libc::CREAD;
            tio.c_cflag |= match settings.data_bits {
                5 => libc::CS5,
                6 => libc::CS6,
                7 => libc::CS7,
                _ => libc::CS8,
            };
            match settings.parity {
                Parity::None => {}
                Parity::Even => tio.c_cflag |= libc::PARENB,
                Parity::Odd => tio.c_cflag |= libc::PARENB | libc::PARODD,
            }
            if settings.stop_bits == 2 {
                tio.c_cflag |= libc::CSTOPB;
            }
            tio.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
            tio.c_cc[libc::VMIN] = 1;
            tio.c_cc[libc::VTIME] = 0;
            check(libc::cfsetispeed(&mut tio, rate))?;
            check(libc::cfsetospeed(&mut tio, rate))?;
            check(libc::tcsetattr(fd, libc::TCSANOW, &tio))
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)
    }

    fn drain(&mut self) -> io::Result<()> {
        // SAFETY: tcdrain on a descriptor we own.
        check(unsafe { libc::tcdrain(self.file.as_raw_fd()) })
    }

    fn discard_input(&mut self) -> io::Result<()> {
        // SAFETY: tcflush on a descriptor we own.
        check(unsafe { libc::tcflush(self.file.as_raw_fd(), libc::TCIFLUSH) })
    }

    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if !crate::pty::wait_readable(&self.file, timeout)? {
            return Ok(0);
        }
        match self.file.read(buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the port closed",
            )),
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                Ok(0)
            }
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
                let on = rs485::enable(&port, self.turnaround).map_err(|e| {
                    HalError::io(path.clone(), "enabling the kernel's RS485 mode", e)
                })?;
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
        let (direction, line): (DirectionControl, Option<Box<dyn OutputLine>>) =
            match (&self.direction_gpio, kernel) {
                (_, true) => (DirectionControl::KernelRs485, None),
                (Some(spec), false) => {
                    let line = GpioOutput::open(
                        spec,
                        &format!("concentrator {} direction", self.name),
                        false,
                    )?;
                    (
                        DirectionControl::Gpio {
                            line: spec.to_string(),
                        },
                        Some(Box::new(line)),
                    )
                }
                (None, false) => (DirectionControl::Automatic, None),
            };
        Ok(HalfDuplexBus::new(
            self.name.clone(),
            port,
            self.settings,
            direction,
            line,
            self.echo,
        ))
    }

    /// Attaches the master side of a pseudo-terminal as the bus (automatic direction, no echo).
    pub fn attach_pty(
        name: &str,
        pty: &PtyPair,
        settings: LineSettings,
    ) -> Result<SerialRs485Bus, HalError> {
        let port = TtyPort::attach_pty(pty, settings)?;
        Ok(HalfDuplexBus::new(
            name,
            port,
            settings,
            DirectionControl::Automatic,
            None,
            false,
        ))
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
        Ok(SerialStreamPort {
            name: name.to_string(),
            port: TtyPort::open(path, settings)?,
        })
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
        self.port
            .read_timeout(buf, timeout)
            .map_err(|e| HalError::io(self.name.clone(), "reading", e))
    }
}
