//! The isolated mode: a plugin in a child process of its own (docs/plugins.md §2.8).
//!
//! The parent verifies the file's signature, copies the verified bytes into a sealed memory file and
//! starts the child program (`concentratord --plugin-child`, or `concentrator-plugin-child`) with that
//! file at descriptor 4 and one end of a socket pair at descriptor 3. The child loads the library,
//! initialises it, installs its seccomp filter and says hello (protocol version, name, version, API);
//! then every entry-point call is one request frame and one reply frame, with the plugin's log records
//! as frames in between. The [`Supervisor`] owns the child: a per-call deadline (the watchdog), a
//! restart with backoff after a crash, and a quarantine after repeated crashes.

mod meter;
mod process;
pub(crate) mod sandbox;
mod serve;
mod supervisor;
pub(crate) mod wire;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use meter::{Handle, MeterCalls};
pub use serve::serve_child;
pub use supervisor::Supervisor;

/// The child's socket descriptor.
pub(crate) const CHILD_SOCKET_FD: i32 = 3;
/// The child's descriptor of the plugin's verified, sealed memory file.
pub(crate) const CHILD_LIBRARY_FD: i32 = 4;

/// Where a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// In the daemon's process (first-party drivers; panics are still caught).
    #[default]
    InProcess,
    /// In a child process of its own.
    Process,
}

impl Isolation {
    /// The configuration's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::InProcess => "in-process",
            Isolation::Process => "process",
        }
    }
}

/// How an isolated plugin's child is run and supervised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildOptions {
    /// The program to run and its arguments before the plugin's path (by default this executable
    /// with `--plugin-child`).
    pub program: PathBuf,
    /// Arguments before the plugin's path.
    pub args: Vec<String>,
    /// The child's address-space limit (`RLIMIT_AS`), in bytes.
    pub memory_limit: u64,
    /// The watchdog: the longest one entry-point call may take before the child is killed.
    pub call_deadline: Duration,
    /// Crashes within `crash_window` that quarantine the plugin.
    pub crash_limit: u32,
    /// The window in which crashes are counted.
    pub crash_window: Duration,
    /// How long a quarantine lasts.
    pub quarantine: Duration,
    /// The wait before the first restart; doubled after each further crash in the window (at most a
    /// minute).
    pub restart_backoff: Duration,
    /// Log records (and stderr lines) a second the child may write; more are dropped and the plugin is
    /// reported as flooding its log.
    pub log_rate: u32,
}

impl Default for ChildOptions {
    fn default() -> Self {
        ChildOptions {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("concentratord")),
            args: vec![String::from("--plugin-child")],
            memory_limit: 256 << 20,
            call_deadline: Duration::from_secs(2),
            crash_limit: 3,
            crash_window: Duration::from_secs(600),
            quarantine: Duration::from_secs(3600),
            restart_backoff: Duration::from_secs(1),
            log_rate: 200,
        }
    }
}

/// `HH:MM:SS UTC` of a wall-clock time, for status lines.
pub fn utc_time(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        (day % 3600) / 60,
        day % 60
    )
}

/// A signal's name, for "crashed with signal 11 (SIGSEGV)".
pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => "another signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_signals_read_as_people_write_them() {
        let at = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 15 * 3600 + 32 * 60 + 5);
        assert_eq!(utc_time(at), "15:32:05 UTC");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(6), "SIGABRT");
    }
}
