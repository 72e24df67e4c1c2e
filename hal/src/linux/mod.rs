//! The Linux backend: serial ports (USB-RS485 adapters, on-board UARTs, pseudo-terminals) and GPIO lines
//! through the character device.
//!
//! Direction control on a serial bus is chosen once, at open: the kernel's RS485 mode (`TIOCSRS485`) when
//! the UART driver has it, else the configured GPIO direction line, else the adapter's own automatic
//! switching (most USB-RS485 adapters).

mod gpio;
mod rs485;
mod tty;

pub use gpio::{GpioInput, GpioLineSpec, GpioOutput};
pub use rs485::KernelRs485;
pub use tty::{SerialBusConfig, SerialRs485Bus, SerialStreamPort, TtyPort};
