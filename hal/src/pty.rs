//! Pseudo-terminal pairs, so that external simulators and tools can sit on either end of a bus.
//!
//! The master side stays with us; the slave's path (`/dev/pts/N`) is what the other program opens as if
//! it were a serial adapter. The pair keeps its own handle on the slave open, so the master never sees a
//! hang-up while the other program reconnects.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::HalError;

/// A pseudo-terminal pair in raw mode.
#[derive(Debug)]
pub struct PtyPair {
    master: OwnedFd,
    _slave_keeper: File,
    slave_path: PathBuf,
}

impl PtyPair {
    /// Opens a new pair, in raw mode (no echo, no line editing, 8-bit clean).
    pub fn open() -> Result<Self, HalError> {
        let err = |doing: &str| HalError::io("pty", doing, io::Error::last_os_error());
        // SAFETY: plain libc calls on a descriptor we own; every result is checked.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(err("opening /dev/ptmx"));
            }
            let master = OwnedFd::from_raw_fd(fd);
            if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
                return Err(err("unlocking the pseudo-terminal"));
            }
            let mut name = [0 as libc::c_char; 128];
            if libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0 {
                return Err(err("naming the pseudo-terminal"));
            }
            let slave_path =
                PathBuf::from(CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned());
            let slave = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags_noctty()
                .open(&slave_path)
                .map_err(|e| {
                    HalError::io(slave_path.display().to_string(), "opening the pty slave", e)
                })?;
            let mut tio: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(slave.as_raw_fd(), &mut tio) != 0 {
                return Err(err("reading the pty's terminal settings"));
            }
            libc::cfmakeraw(&mut tio);
            if libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &tio) != 0 {
                return Err(err("setting the pty to raw mode"));
            }
            Ok(PtyPair {
                master,
                _slave_keeper: slave,
                slave_path,
            })
        }
    }

    /// The path another program opens (`/dev/pts/N`).
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// A new handle on the master side.
    pub fn master(&self) -> Result<File, HalError> {
        let fd = self
            .master
            .try_clone()
            .map_err(|e| HalError::io("pty", "duplicating the pty master", e))?;
        Ok(File::from(fd))
    }
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}

/// Waits until `fd` is readable or `timeout` passes; true when readable.
pub(crate) fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> Result<bool, io::Error> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "descriptor error",
            ));
        }
        return Ok(rc > 0);
    }
}
