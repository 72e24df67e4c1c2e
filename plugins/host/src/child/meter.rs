//! A meter driver's entry points as the bridge calls them: directly (in-process) or as one
//! request/response frame each (isolated). Both fill the same host-owned buffers, so every check on
//! what the plugin wrote stays in the bridge, whichever side ran it.

use std::ffi::c_void;
use std::sync::Arc;

use concentrator_plugin_api::{
    BytesRef, RawOutcome, RawReading, RawReply, RawRequest, RawTask, RawTime, RawTiming, Status,
    StrRef,
};

use super::wire::{frame, Malformed, Reader, Writer};
use super::Supervisor;
use crate::declaration::MeterEntries;
use crate::error::TaskError;
use crate::plugin::{Message, Plugin};

/// How a meter driver is called.
#[derive(Debug, Clone)]
pub(crate) enum MeterCalls {
    /// In this process.
    Local(MeterEntries),
    /// In the plugin's child process.
    Child(Arc<Supervisor>),
}

/// A meter's handle on either side.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Handle {
    /// The plugin's pointer in this process.
    Local(*mut c_void),
    /// The child's id for it, and the child's generation that holds it.
    Remote { id: u64, generation: u64 },
}

/// A request's frame, timing and flag as the child reported them, written into the host's buffer.
fn take_request(
    r: &mut Reader<'_>,
    request: &mut RawRequest,
    buf: &mut [u8],
) -> Result<(), Malformed> {
    let len = r.u64("frame length")?;
    let bytes = r.bytes("frame")?;
    let n = bytes.len().min(buf.len());
    buf[..n].copy_from_slice(&bytes[..n]);
    request.frame_len = usize::try_from(len).unwrap_or(usize::MAX);
    request.timing = RawTiming {
        reply_timeout_micros: r.u32("timing")?,
        inter_byte_timeout_micros: r.u32("timing")?,
        min_idle_before_micros: r.u32("timing")?,
        turnaround_micros: r.u32("timing")?,
        preamble_byte: r.u8("timing")?,
        preamble_count: r.u8("timing")?,
        reserved: [0; 2],
    };
    request.expects_reply = r.u8("expects reply")?;
    Ok(())
}

fn take_message(r: &mut Reader<'_>, message: &mut Message) -> Result<(), Malformed> {
    let len = r.u64("message length")?;
    let bytes = r.bytes("message")?;
    message.set_reported(usize::try_from(len).unwrap_or(usize::MAX), bytes);
    Ok(())
}

fn time(w: Writer, t: RawTime) -> Writer {
    w.i64(t.unix_millis).u64(t.monotonic_micros)
}

fn cap(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl MeterCalls {
    fn remote(
        &self,
        plugin: &Plugin,
        entry: &'static str,
        request: Writer,
    ) -> Result<(u64, Vec<u8>), TaskError> {
        match self {
            MeterCalls::Child(child) => child.call(entry, &request.finish()),
            MeterCalls::Local(_) => {
                Err(plugin.misbehaved(entry, "a remote call on a local plugin"))
            }
        }
    }

    fn malformed(plugin: &Plugin, entry: &'static str, m: Malformed) -> TaskError {
        plugin.misbehaved(entry, format!("its child sent a malformed reply ({})", m.0))
    }

    /// `open`: the status and the new handle.
    pub(crate) fn open(
        &self,
        plugin: &Plugin,
        address: &[u8],
        config: &str,
        message: &mut Message,
    ) -> Result<(Status, Option<Handle>), TaskError> {
        if let MeterCalls::Local(entries) = self {
            let mut handle: *mut c_void = std::ptr::null_mut();
            // SAFETY: checked entry point; all pointers valid for the call.
            let status = unsafe {
                (entries.open)(
                    BytesRef::new(address),
                    StrRef::new(config),
                    &mut handle,
                    message.as_ptr(),
                )
            };
            return Ok((status, (!handle.is_null()).then_some(Handle::Local(handle))));
        }
        let request = Writer::new(frame::OPEN).bytes(address).str(config);
        let (generation, fields) = self.remote(plugin, "open", request)?;
        let mut r = Reader::new(&fields);
        let parse = |r: &mut Reader<'_>, message: &mut Message| {
            let status = Status(r.u32("status")?);
            let id = r.u64("handle")?;
            take_message(r, message)?;
            Ok((status, id))
        };
        let (status, id) =
            parse(&mut r, message).map_err(|m| Self::malformed(plugin, "open", m))?;
        Ok((
            status,
            (id != 0).then_some(Handle::Remote { id, generation }),
        ))
    }

    /// Opens the meter again when the child that held its handle has been replaced.
    pub(crate) fn refresh(
        &self,
        plugin: &Plugin,
        handle: &mut Handle,
        address: &[u8],
        config: &str,
    ) -> Result<(), TaskError> {
        let (MeterCalls::Child(child), Handle::Remote { generation, .. }) = (self, *handle) else {
            return Ok(());
        };
        if child.started_generation("begin")? == generation {
            return Ok(());
        }
        let mut message = Message::new();
        match self.open(plugin, address, config, &mut message)? {
            (Status::OK, Some(new)) => {
                *handle = new;
                Ok(())
            }
            (status, _) => Err(plugin.unexpected("open", status, &message)),
        }
    }

    /// `begin`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin(
        &self,
        plugin: &Plugin,
        handle: Handle,
        task: &RawTask,
        now: RawTime,
        request: &mut RawRequest,
        buf: &mut [u8],
        message: &mut Message,
    ) -> Result<Status, TaskError> {
        match (self, handle) {
            (MeterCalls::Local(entries), Handle::Local(h)) => {
                request.frame = buf.as_mut_ptr();
                request.frame_cap = buf.len();
                // SAFETY: checked entry point; the handle is ours; every pointer is valid for the call.
                Ok(unsafe { (entries.begin)(h, task, now, request, message.as_ptr()) })
            }
            (_, Handle::Remote { id, .. }) => {
                let w = Writer::new(frame::BEGIN)
                    .u64(id)
                    .u32(task.kind)
                    .u32(task.quantity)
                    .u32(task.relay)
                    .u32(task.reserved)
                    .i64(task.unix_time);
                let w = time(w, now).u32(cap(buf.len()));
                let (_, fields) = self.remote(plugin, "begin", w)?;
                let mut r = Reader::new(&fields);
                let mut parse = || {
                    let status = Status(r.u32("status")?);
                    take_message(&mut r, message)?;
                    take_request(&mut r, request, buf)?;
                    Ok(status)
                };
                parse().map_err(|m| Self::malformed(plugin, "begin", m))
            }
            _ => Err(plugin.misbehaved("begin", "a handle from the other mode")),
        }
    }

    /// `is_complete`: the status and the flag.
    pub(crate) fn is_complete(
        &self,
        plugin: &Plugin,
        handle: Handle,
        bytes: &[u8],
    ) -> Result<(Status, u8), TaskError> {
        match (self, handle) {
            (MeterCalls::Local(entries), Handle::Local(h)) => {
                let mut complete = 0u8;
                // SAFETY: checked entry point; our handle; the slice and output are valid for the call.
                let status =
                    unsafe { (entries.is_complete)(h, BytesRef::new(bytes), &mut complete) };
                Ok((status, complete))
            }
            (_, Handle::Remote { id, .. }) => {
                let w = Writer::new(frame::IS_COMPLETE).u64(id).bytes(bytes);
                let (_, fields) = self.remote(plugin, "is_complete", w)?;
                let mut r = Reader::new(&fields);
                let mut parse = || Ok((Status(r.u32("status")?), r.u8("complete")?));
                parse().map_err(|m| Self::malformed(plugin, "is_complete", m))
            }
            _ => Err(plugin.misbehaved("is_complete", "a handle from the other mode")),
        }
    }

    /// `finish`. `readings` and `frame_buf` are the host's buffers behind `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        &self,
        plugin: &Plugin,
        handle: Handle,
        reply: RawReply,
        reply_bytes: &[u8],
        now: RawTime,
        out: &mut RawOutcome,
        readings: &mut [RawReading],
        frame_buf: &mut [u8],
        message: &mut Message,
    ) -> Result<Status, TaskError> {
        match (self, handle) {
            (MeterCalls::Local(entries), Handle::Local(h)) => {
                out.readings = readings.as_mut_ptr();
                out.readings_cap = readings.len();
                out.next.frame = frame_buf.as_mut_ptr();
                out.next.frame_cap = frame_buf.len();
                // SAFETY: checked entry point; our handle; every pointer is valid for the call.
                Ok(unsafe { (entries.finish)(h, reply, now, out, message.as_ptr()) })
            }
            (_, Handle::Remote { id, .. }) => {
                let w = Writer::new(frame::FINISH)
                    .u64(id)
                    .u32(reply.kind)
                    .bytes(reply_bytes);
                let w = time(w, now)
                    .u32(cap(frame_buf.len()))
                    .u32(cap(readings.len()));
                let (_, fields) = self.remote(plugin, "finish", w)?;
                let mut r = Reader::new(&fields);
                let mut parse = || {
                    let status = Status(r.u32("status")?);
                    take_message(&mut r, message)?;
                    out.kind = r.u32("outcome")?;
                    out.exception_code = r.u32("exception code")?;
                    out.readings_len =
                        usize::try_from(r.u64("readings length")?).unwrap_or(usize::MAX);
                    let shown = r.u32("readings shown")? as usize;
                    for i in 0..shown {
                        let reading = RawReading {
                            quantity: r.u32("reading")?,
                            value_kind: r.u32("reading")?,
                            mantissa: r.i64("reading")?,
                            exponent: r.u32("reading")? as i32,
                            unit: r.u32("reading")?,
                        };
                        if let Some(slot) = readings.get_mut(i) {
                            *slot = reading;
                        }
                    }
                    take_request(&mut r, &mut out.next, frame_buf)?;
                    Ok(status)
                };
                parse().map_err(|m| Self::malformed(plugin, "finish", m))
            }
            _ => Err(plugin.misbehaved("finish", "a handle from the other mode")),
        }
    }

    /// `close`. A failure of the child is logged, not returned: the meter is gone either way.
    pub(crate) fn close(&self, plugin: &Plugin, handle: Handle) {
        match (self, handle) {
            (MeterCalls::Local(entries), Handle::Local(h)) => {
                // SAFETY: checked entry point; the handle came from `open` and is not used after this.
                unsafe { (entries.close)(h) };
            }
            (MeterCalls::Child(child), Handle::Remote { id, generation })
                if child.generation() == generation && child.quarantined().is_none() =>
            {
                let request = Writer::new(frame::CLOSE).u64(id).finish();
                if let Err(e) = child.call("close", &request) {
                    log::warn!(target: "concentrator::plugins", "closing a meter of `{}`: {e}", plugin.name());
                }
            }
            _ => {}
        }
    }
}
