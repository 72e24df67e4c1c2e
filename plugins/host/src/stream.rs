//! Driving a stream driver (Zigbee coordinator, modem): the host side of bytes in, bytes out, ticks,
//! events out. The stream's I/O (a `SerialStream` from the HAL) stays with the caller.

use std::ffi::c_void;
use std::sync::Arc;

use concentrator_hal::Clock;
use concentrator_plugin_api::values::StreamEvent;
use concentrator_plugin_api::{BytesRef, RawStreamEvent, Status, StrRef};

use crate::bridge::raw_time;
use crate::declaration::{Entries, StreamEntries};
use crate::error::TaskError;
use crate::plugin::{Message, Plugin};

/// Largest frame a stream driver may hand over in one `poll_transmit`.
pub const MAX_STREAM_FRAME: usize = 64 * 1024;

/// One stream driven by a plugin. Closed when dropped.
#[derive(Debug)]
pub struct StreamSession {
    plugin: Arc<Plugin>,
    entries: StreamEntries,
    handle: *mut c_void,
}

// SAFETY: the plugin's per-stream state is `Send` (the SDK requires `StreamDriver: Send`); a session is
// used by one thread at a time (`&mut self`).
unsafe impl Send for StreamSession {}

impl Plugin {
    /// Opens a stream driver with its config (a TOML fragment, may be empty).
    pub fn open_stream(
        self: &Arc<Self>,
        config: &str,
        clock: &dyn Clock,
    ) -> Result<StreamSession, TaskError> {
        let Entries::Stream(entries) = &self.entries else {
            return Err(TaskError::WrongKind {
                plugin: self.name().to_owned(),
                expected: "stream",
                found: self.info().kind.name(),
            });
        };
        self.ensure_active()?;
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut message = Message::new();
        // SAFETY: checked entry point; pointers valid for the call.
        let status = unsafe {
            (entries.open)(
                StrRef::new(config),
                raw_time(clock),
                &mut handle,
                message.as_ptr(),
            )
        };
        match status {
            Status::OK if !handle.is_null() => Ok(StreamSession {
                plugin: Arc::clone(self),
                entries: *entries,
                handle,
            }),
            Status::OK => Err(self.misbehaved("open", "returned OK without a stream handle")),
            Status::CONFIG_REJECTED => Err(TaskError::ConfigRejected {
                plugin: self.name().to_owned(),
                meter: String::from("(stream)"),
                reason: message.text(self, "open")?,
            }),
            other => Err(self.unexpected("open", other, &message)),
        }
    }
}

impl StreamSession {
    /// The plugin that drives this stream.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    fn status(
        &self,
        entry: &'static str,
        status: Status,
        message: &Message,
    ) -> Result<(), TaskError> {
        match status {
            Status::OK => Ok(()),
            Status::FAILED => Err(TaskError::Failed {
                plugin: self.plugin.name().to_owned(),
                entry,
                message: message.text(&self.plugin, entry)?,
            }),
            other => Err(self.plugin.unexpected(entry, other, message)),
        }
    }

    /// Hands the driver bytes received from the device.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        self.plugin.ensure_active()?;
        let mut message = Message::new();
        // SAFETY: checked entry point; our handle; the slice is valid for the call.
        let status =
            unsafe { (self.entries.on_bytes)(self.handle, BytesRef::new(bytes), message.as_ptr()) };
        self.status("on_bytes", status, &message)
    }

    /// Time has passed.
    pub fn on_tick(&mut self, clock: &dyn Clock) -> Result<(), TaskError> {
        self.plugin.ensure_active()?;
        let mut message = Message::new();
        // SAFETY: checked entry point; our handle.
        let status =
            unsafe { (self.entries.on_tick)(self.handle, raw_time(clock), message.as_ptr()) };
        self.status("on_tick", status, &message)
    }

    /// The next bytes the driver wants sent, if any.
    pub fn poll_transmit(&mut self) -> Result<Option<Vec<u8>>, TaskError> {
        self.plugin.ensure_active()?;
        let mut cap = 1024;
        loop {
            let mut buf = vec![0u8; cap];
            let mut len = 0usize;
            let mut message = Message::new();
            // SAFETY: checked entry point; our handle; the buffer holds `cap` bytes.
            let status = unsafe {
                (self.entries.poll_transmit)(
                    self.handle,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut len,
                    message.as_ptr(),
                )
            };
            if status == Status::BUFFER_TOO_SMALL && cap < MAX_STREAM_FRAME {
                cap = MAX_STREAM_FRAME;
                continue;
            }
            self.status("poll_transmit", status, &message)?;
            return match buf.get(..len) {
                Some([]) => Ok(None),
                Some(frame) => Ok(Some(frame.to_vec())),
                None => Err(self.plugin.misbehaved(
                    "poll_transmit",
                    format!("reported a {len}-byte frame in a {cap}-byte buffer"),
                )),
            };
        }
    }

    /// The next event the driver reports, if any.
    pub fn poll_event(&mut self) -> Result<Option<StreamEvent>, TaskError> {
        self.plugin.ensure_active()?;
        let mut raw = RawStreamEvent::default();
        let mut has = 0u8;
        let mut message = Message::new();
        // SAFETY: checked entry point; our handle; outputs valid for the call.
        let status =
            unsafe { (self.entries.poll_event)(self.handle, &mut raw, &mut has, message.as_ptr()) };
        self.status("poll_event", status, &message)?;
        match has {
            0 => Ok(None),
            1 => StreamEvent::try_from_raw(&raw).map(Some).map_err(|e| {
                self.plugin
                    .misbehaved("poll_event", format!("returned an invalid event: {e}"))
            }),
            other => Err(self.plugin.misbehaved(
                "poll_event",
                format!("set has-event to {other}, not 0 or 1"),
            )),
        }
    }
}

impl StreamSession {
    /// Hands the driver a command for a device behind the stream (API 1.1), as text in the driver's
    /// documented command language (JSON for `znp`). Its result comes later from
    /// [`poll_notice`](Self::poll_notice). A driver that refuses it, or a plugin built against API 1.0
    /// (which has no commands), gives [`TaskError::TaskRejected`].
    pub fn command(&mut self, command: &str, clock: &dyn Clock) -> Result<(), TaskError> {
        self.plugin.ensure_active()?;
        let rejected = |reason: String| TaskError::TaskRejected {
            plugin: self.plugin.name().to_owned(),
            meter: String::from("(stream)"),
            task: String::from("run a stream command"),
            reason,
        };
        let Some(entry) = self.entries.command else {
            return Err(rejected(String::from(
                "the plugin was built against plugin API 1.0, which has no stream commands",
            )));
        };
        let mut message = Message::new();
        // SAFETY: checked entry point; our handle; the string is valid for the call.
        let status = unsafe {
            entry(
                self.handle,
                StrRef::new(command),
                raw_time(clock),
                message.as_ptr(),
            )
        };
        match status {
            Status::TASK_REJECTED => Err(rejected(message.text(&self.plugin, "command")?)),
            other => self.status("command", other, &message),
        }
    }

    /// The driver's next notice (API 1.1): a command's result or a change to its device table, as
    /// text in the driver's documented form. Always `None` for a plugin built against API 1.0.
    pub fn poll_notice(&mut self) -> Result<Option<String>, TaskError> {
        self.plugin.ensure_active()?;
        let Some(entry) = self.entries.poll_notice else {
            return Ok(None);
        };
        let mut cap = 1024;
        loop {
            let mut buf = vec![0u8; cap];
            let mut len = 0usize;
            let mut message = Message::new();
            // SAFETY: checked entry point; our handle; the buffer holds `cap` bytes.
            let status = unsafe {
                entry(
                    self.handle,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut len,
                    message.as_ptr(),
                )
            };
            if status == Status::BUFFER_TOO_SMALL && cap < MAX_STREAM_FRAME {
                cap = MAX_STREAM_FRAME;
                continue;
            }
            self.status("poll_notice", status, &message)?;
            return match buf.get(..len) {
                Some([]) => Ok(None),
                Some(text) => String::from_utf8(text.to_vec()).map(Some).map_err(|_| {
                    self.plugin
                        .misbehaved("poll_notice", "returned a notice that is not UTF-8")
                }),
                None => Err(self.plugin.misbehaved(
                    "poll_notice",
                    format!("reported a {len}-byte notice in a {cap}-byte buffer"),
                )),
            };
        }
    }
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        if !self.plugin.is_quarantined() {
            // SAFETY: checked entry point; the handle came from `open` and is not used after this.
            unsafe { (self.entries.close)(self.handle) };
        }
    }
}
