//! The kernel's RS485 mode (`TIOCGRS485`/`TIOCSRS485`, linux/serial.h).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

// From linux/serial.h; the same on every architecture we build for (x86_64, aarch64, arm).
const TIOCGRS485: libc::c_ulong = 0x542E;
const TIOCSRS485: libc::c_ulong = 0x542F;
/// The kernel-internal "ioctl not supported", which some UART drivers leak to user space.
const ENOIOCTLCMD: i32 = 515;
const SER_RS485_ENABLED: u32 = 1 << 0;
const SER_RS485_RTS_ON_SEND: u32 = 1 << 1;
const SER_RS485_RTS_AFTER_SEND: u32 = 1 << 2;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SerialRs485 {
    flags: u32,
    delay_rts_before_send: u32,
    delay_rts_after_send: u32,
    padding: [u32; 5],
}

/// How the kernel's RS485 mode is used for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelRs485 {
    /// Use it when the UART supports it (the default).
    #[default]
    IfSupported,
    /// Require it; opening fails on a UART without it.
    Required,
    /// Never use it.
    Off,
}

/// Turns on the kernel's RS485 mode with RTS high while sending. Returns `Ok(false)` when the UART does
/// not support the mode (the ioctl is unknown to its driver).
pub(super) fn enable(port: &impl AsRawFd, turnaround: Duration) -> io::Result<bool> {
    let fd = port.as_raw_fd();
    let mut conf = SerialRs485::default();
    // SAFETY: TIOCGRS485 fills a struct serial_rs485, which SerialRs485 mirrors.
    let rc = unsafe { libc::ioctl(fd, TIOCGRS485 as _, &mut conf as *mut SerialRs485) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            // ENOSYS: qemu-user does not emulate these ioctls.
            Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(ENOIOCTLCMD) => {
                Ok(false)
            }
            _ => Err(err),
        };
    }
    conf.flags |= SER_RS485_ENABLED | SER_RS485_RTS_ON_SEND;
    conf.flags &= !SER_RS485_RTS_AFTER_SEND;
    conf.delay_rts_before_send = 0;
    conf.delay_rts_after_send = u32::try_from(turnaround.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: as above; the kernel reads the struct.
    let rc = unsafe { libc::ioctl(fd, TIOCSRS485 as _, &conf as *const SerialRs485) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::ENOSYS) => Ok(false),
            _ => Err(err),
        };
    }
    Ok(true)
}
