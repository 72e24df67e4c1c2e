//! A loaded plugin: what it is, where it came from, its health, and the guarded way of calling it.

use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use concentrator_plugin_api::codes::log_level;
use concentrator_plugin_api::{ApiVersion, MessageBuf, Status, StrRef};

use crate::declaration::{DriverKind, Entries};
use crate::error::TaskError;

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOrigin {
    /// A signed file in the plugin directory.
    File {
        /// The file.
        path: PathBuf,
        /// The id of the vendor key that signed it.
        key_id: String,
    },
    /// Linked into the appliance.
    Static,
}

impl fmt::Display for PluginOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginOrigin::File { path, .. } => write!(f, "{}", path.display()),
            PluginOrigin::Static => f.write_str("built in"),
        }
    }
}

/// What a plugin declared about itself, after the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its kind.
    pub kind: DriverKind,
    /// The API version it was built against.
    pub api_version: ApiVersion,
    /// Where it came from.
    pub origin: PluginOrigin,
}

/// Whether a plugin may still be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStatus {
    /// In service; `faults` panics or misbehaviours so far.
    Active {
        /// Faults so far.
        faults: u32,
    },
    /// Out of service for the life of the process.
    Quarantined {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginStatus::Active { faults: 0 } => f.write_str("active"),
            PluginStatus::Active { faults } => write!(f, "active ({faults} faults)"),
            PluginStatus::Quarantined { reason } => write!(f, "quarantined: {reason}"),
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    faults: u32,
    quarantined: Option<String>,
}

/// A loaded, checked and initialised plugin. Shared (`Arc`) by every meter or stream that uses it.
#[derive(Debug)]
pub struct Plugin {
    info: PluginInfo,
    pub(crate) entries: Entries,
    max_faults: u32,
    health: Mutex<Health>,
}

impl Plugin {
    pub(crate) fn new(info: PluginInfo, entries: Entries, max_faults: u32) -> Self {
        Plugin {
            info,
            entries,
            max_faults: max_faults.max(1),
            health: Mutex::new(Health::default()),
        }
    }

    /// What the plugin declared.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Where it runs.
    pub fn isolation(&self) -> crate::Isolation {
        match self.entries {
            Entries::Child(_) => crate::Isolation::Process,
            _ => crate::Isolation::InProcess,
        }
    }

    /// Its child process's supervisor, in the isolated mode.
    pub fn child(&self) -> Option<&crate::child::Supervisor> {
        match &self.entries {
            Entries::Child(child) => Some(child),
            _ => None,
        }
    }

    /// What is wrong with it, for status: why it is quarantined, or (isolated) its child's last crash,
    /// its watchdog kill, its memory limit or its log flood. `None` when all is well.
    pub fn problem(&self) -> Option<String> {
        if let PluginStatus::Quarantined { reason } = self.status() {
            return Some(format!("quarantined: {reason}"));
        }
        self.child().and_then(|c| c.problem())
    }

    /// Its current status.
    pub fn status(&self) -> PluginStatus {
        if let Some((until, reason)) = self.child().and_then(|c| c.quarantined()) {
            return PluginStatus::Quarantined {
                reason: format!("until {}: {reason}", crate::child::utc_time(until)),
            };
        }
        let health = self.health();
        match &health.quarantined {
            Some(reason) => PluginStatus::Quarantined {
                reason: reason.clone(),
            },
            None => PluginStatus::Active {
                faults: health.faults,
            },
        }
    }

    /// Whether it is quarantined (for its faults, or, isolated, for its child's crashes).
    pub fn is_quarantined(&self) -> bool {
        self.health().quarantined.is_some()
            || self.child().is_some_and(|c| c.quarantined().is_some())
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // The health record is two plain fields; a panic elsewhere cannot leave it inconsistent.
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails fast when the plugin is quarantined.
    pub(crate) fn ensure_active(&self) -> Result<(), TaskError> {
        if let Some((until, reason)) = self.child().and_then(|c| c.quarantined()) {
            return Err(TaskError::ChildQuarantined {
                plugin: self.info.name.clone(),
                until: crate::child::utc_time(until),
                reason,
            });
        }
        match &self.health().quarantined {
            Some(reason) => Err(TaskError::Quarantined {
                plugin: self.info.name.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Counts a fault, quarantines the plugin at the limit, and returns the error to report.
    pub(crate) fn fault(&self, error: TaskError) -> TaskError {
        let mut health = self.health();
        health.faults += 1;
        log::warn!(target: "concentrator::plugins", "{error} (fault {} of {} allowed)", health.faults, self.max_faults);
        if health.faults >= self.max_faults && health.quarantined.is_none() {
            let reason = format!("{} faults, the last: {error}", health.faults);
            log::error!(
                target: "concentrator::plugins",
                "plugin `{}` from {} is quarantined after {reason}; its meters are reported as failed, other buses keep running",
                self.info.name,
                self.info.origin
            );
            health.quarantined = Some(reason);
        }
        error
    }

    /// A `Panicked` fault.
    pub(crate) fn panicked(&self, entry: &'static str, message: String) -> TaskError {
        self.fault(TaskError::Panicked {
            plugin: self.info.name.clone(),
            entry,
            message,
        })
    }

    /// A `Misbehaved` fault.
    pub(crate) fn misbehaved(&self, entry: &'static str, reason: impl Into<String>) -> TaskError {
        self.fault(TaskError::Misbehaved {
            plugin: self.info.name.clone(),
            entry,
            reason: reason.into(),
        })
    }

    /// Maps a status other than OK that the caller does not handle itself: a panic, or misbehaviour.
    pub(crate) fn unexpected(
        &self,
        entry: &'static str,
        status: Status,
        message: &Message,
    ) -> TaskError {
        match message.text(self, entry) {
            Err(error) => error,
            Ok(text) if status == Status::PANICKED => self.panicked(entry, text),
            Ok(text) => self.misbehaved(
                entry,
                format!("returned status {} ({}): {text}", status.0, status.name()),
            ),
        }
    }
}

/// Capacity of the message buffer the host passes into every call.
pub(crate) const MESSAGE_CAP: usize = 1024;

/// A host-owned message buffer for one call.
pub(crate) struct Message {
    buf: Vec<u8>,
    raw: MessageBuf,
}

impl Message {
    pub(crate) fn new() -> Self {
        let mut buf = vec![0u8; MESSAGE_CAP];
        let raw = MessageBuf {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        Message { buf, raw }
    }

    /// The pointer to pass to the plugin; valid while `self` lives and is not moved.
    pub(crate) fn as_ptr(&mut self) -> *mut MessageBuf {
        self.raw.ptr = self.buf.as_mut_ptr();
        self.raw.cap = self.buf.len();
        &mut self.raw
    }

    /// The text the plugin wrote, checked: a length beyond the buffer is misbehaviour.
    pub(crate) fn text(&self, plugin: &Plugin, entry: &'static str) -> Result<String, TaskError> {
        match self.buf.get(..self.raw.len) {
            Some(bytes) => Ok(String::from_utf8_lossy(bytes).into_owned()),
            None => Err(plugin.misbehaved(
                entry,
                format!(
                    "reported a {}-byte message in a {}-byte buffer",
                    self.raw.len,
                    self.buf.len()
                ),
            )),
        }
    }

    /// The length the plugin reported and the bytes within the buffer (the child sends both).
    pub(crate) fn reported(&self) -> (usize, &[u8]) {
        let len = self.raw.len;
        (len, self.buf.get(..len).unwrap_or(&self.buf))
    }

    /// Fills the buffer as the plugin in a child did: its bytes and its reported length, which
    /// [`Message::text`] checks as for an in-process plugin.
    pub(crate) fn set_reported(&mut self, len: usize, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&bytes[..n]);
        self.raw.len = len;
    }

    /// The text without counting a fault (for load errors, where the plugin is refused anyway).
    pub(crate) fn text_unchecked(&self) -> String {
        match self.buf.get(..self.raw.len) {
            Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            None => format!(
                "(a {}-byte message in a {}-byte buffer)",
                self.raw.len,
                self.buf.len()
            ),
        }
    }
}

/// What the host's log callback knows about the plugin that calls it.
#[derive(Debug)]
pub(crate) struct LogContext {
    pub target: String,
}

/// Longest log message taken from a plugin; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 4096;

/// The log callback passed to dynamically loaded plugins.
///
/// # Safety
/// `context` is the `&'static LogContext` the host passed in `init`; the strings are valid for the call.
pub(crate) unsafe extern "C" fn host_log(
    context: *const c_void,
    level: u32,
    target: StrRef,
    message: StrRef,
) {
    // Never unwind into the plugin, whatever the logger does.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host made `context` from a leaked `LogContext` (see `loader`).
        let Some(context) = (unsafe { context.cast::<LogContext>().as_ref() }) else {
            return;
        };
        let read = |s: StrRef| {
            let len = s.len.min(MAX_LOG_MESSAGE);
            // SAFETY: the plugin passes strings valid for the call; we read at most `len <= s.len` bytes.
            let bytes = unsafe { StrRef { ptr: s.ptr, len }.as_bytes() }.unwrap_or(&[]);
            String::from_utf8_lossy(bytes).into_owned()
        };
        let level = match level {
            log_level::ERROR => log::Level::Error,
            log_level::WARN => log::Level::Warn,
            log_level::INFO => log::Level::Info,
            log_level::DEBUG => log::Level::Debug,
            _ => log::Level::Trace,
        };
        let (target, message) = (read(target), read(message));
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(&context.target)
                .args(format_args!("[{target}] {message}"))
                .build(),
        );
    }));
}
