//! One error type for every backend, with a [`kind`](HalError::kind) that generic code can act on.

use std::fmt;
use std::io;

/// What went wrong, independent of the backend (in the manner of `embedded_hal::digital::ErrorKind`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The device does not exist (wrong path, adapter not plugged in).
    NotFound,
    /// The process may not open the device (not in the `dialout` or `gpio` group).
    PermissionDenied,
    /// Another process holds the device.
    Busy,
    /// The device went away while in use (USB adapter unplugged, pseudo-terminal closed).
    Disconnected,
    /// The port refused the line settings (baud, parity, stop bits) or a timing value.
    InvalidSettings,
    /// The hardware this backend needs is not there (for example, not running on a Raspberry Pi).
    Unsupported,
    /// A parity, framing or overrun error on the line.
    Line,
    /// A write did not complete in time.
    Timeout,
    /// Anything else; the message says what.
    Other,
}

impl ErrorKind {
    fn from_io(kind: io::ErrorKind) -> Self {
        match kind {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => ErrorKind::Disconnected,
            io::ErrorKind::InvalidInput => ErrorKind::InvalidSettings,
            io::ErrorKind::ResourceBusy => ErrorKind::Busy,
            _ => ErrorKind::Other,
        }
    }
}

/// An error from a HAL backend: which device, what it was doing, what happened, and the kind.
#[derive(Debug)]
pub struct HalError {
    kind: ErrorKind,
    device: String,
    message: String,
    source: Option<io::Error>,
}

impl HalError {
    /// A new error on `device` (a bus name or a path) with a message that says what failed and how to fix it.
    pub fn new(kind: ErrorKind, device: impl Into<String>, message: impl Into<String>) -> Self {
        HalError {
            kind,
            device: device.into(),
            message: message.into(),
            source: None,
        }
    }

    /// An error from an OS call; the kind is derived from the errno, and a remedy is added for the
    /// errors an installer can fix.
    pub fn io(device: impl Into<String>, doing: &str, err: io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::EBUSY) => ErrorKind::Busy,
            Some(libc::ENXIO) | Some(libc::ENODEV) => ErrorKind::Disconnected,
            Some(libc::EIO) => ErrorKind::Disconnected,
            _ => ErrorKind::from_io(err.kind()),
        };
        let hint = match kind {
            ErrorKind::PermissionDenied => {
                " (add the daemon's user to the dialout and gpio groups)"
            }
            ErrorKind::NotFound => {
                " (check the device path in the config; `ls /dev/serial/by-id` lists adapters)"
            }
            ErrorKind::Busy => " (another process holds it; `fuser -v DEVICE` names it)",
            _ => "",
        };
        HalError {
            kind,
            device: device.into(),
            message: format!("{doing}: {}{hint}", os_words(&err)),
            source: Some(err),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The device (bus name or path) the error happened on.
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl fmt::Display for HalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.device, self.message)
    }
}

impl std::error::Error for HalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl embedded_hal::digital::Error for HalError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

/// An OS error in words, without the errno Rust appends (`No such file or directory`, not
/// `No such file or directory (os error 2)`): the installer reads this.
pub fn os_words(err: &io::Error) -> String {
    without_errno(&err.to_string()).to_string()
}

/// `text` without the ` (os error N)` that Rust's I/O errors end with (other libraries' errors
/// carry it inside theirs: rumqttc's `I/O: Connection refused (os error 111)`).
pub fn without_errno(text: &str) -> &str {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_without_their_errno() {
        let e = HalError::io(
            "/dev/ttyUSB7",
            "opening the serial port",
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        let text = e.to_string();
        assert!(text.contains("/dev/ttyUSB7"), "{text}");
        assert!(
            text.contains(
                "opening the serial port: No such file or directory (check the device path"
            ),
            "{text}"
        );
        assert!(!text.contains("os error"), "{text}");
        assert_eq!(os_words(&io::Error::other("plain")), "plain");
        assert_eq!(
            without_errno("I/O: Connection refused (os error 111)"),
            "I/O: Connection refused"
        );
    }
}
