//! The child's side of the isolated mode: load the plugin the parent verified, say hello, restrict
//! itself, then run one entry-point call per request frame until the parent closes the socket.
//!
//! The child is as sans-IO as the plugin: it never opens a device. It calls the entry points with
//! buffers of the capacities the parent names and sends back what the plugin wrote, reported lengths
//! included; every check (lengths, codes, timing bounds) is the parent's, in the same code as in-process.

use std::collections::HashMap;
use std::ffi::c_void;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use concentrator_plugin_api::{
    BytesRef, DeclarationRef, PluginDeclaration, RawOutcome, RawReading, RawReply, RawRequest,
    RawTask, RawTime, RawTiming, Status, StrRef, DECLARATION_SYMBOL,
};

use super::wire::{frame, read_frame, Malformed, Reader, Writer, PROTOCOL_VERSION};
use super::{sandbox, CHILD_LIBRARY_FD, CHILD_SOCKET_FD};
use crate::declaration::{self, DriverKind, Entries, MeterEntries};
use crate::loader::initialise;
use crate::plugin::{Message, PluginOrigin};

/// Largest buffer the child allocates for the parent (frames and readings).
const MAX_CAP: usize = 64 * 1024;

struct ChildLogger {
    out: Mutex<UnixStream>,
}

impl log::Log for ChildLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let frame = Writer::new(frame::LOG)
            .u32(record.level() as u32)
            .str(record.target())
            .str(&record.args().to_string());
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = frame.send(&mut *out);
    }
    fn flush(&self) {}
}

fn refuse(out: &mut UnixStream, reason: &str) -> i32 {
    let _ = Writer::new(frame::REFUSED).str(reason).send(out);
    3
}

/// The child's main: `label` names the plugin file in messages. Returns the process's exit code.
pub fn serve_child(label: &str) -> i32 {
    // SAFETY: the parent put the socket at this descriptor before exec (`sandbox::before_exec`).
    let mut socket = unsafe { UnixStream::from_raw_fd(CHILD_SOCKET_FD) };
    let Ok(writer) = socket.try_clone() else {
        return 2;
    };
    let logger = Box::new(ChildLogger {
        out: Mutex::new(writer),
    });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    // Everything that needs a descriptor or a file comes before the filter.
    let Ok(mut reader) = socket
        .try_clone()
        .map(|s| std::io::BufReader::with_capacity(64 * 1024, s))
    else {
        return 2;
    };
    let entries = match load(label) {
        Ok(loaded) => loaded,
        Err(reason) => return refuse(&mut socket, &reason),
    };
    if let Err(e) = sandbox::restrict_self() {
        return refuse(
            &mut socket,
            &format!("cannot install the seccomp filter: {e}"),
        );
    }
    let (name, version, api) = (entries.1, entries.2, entries.3);
    let hello = Writer::new(frame::HELLO)
        .u32(PROTOCOL_VERSION)
        .str(&name)
        .str(&version)
        .u32(api.0.into())
        .u32(api.1.into())
        .u32(api.2.into())
        .str("seccomp allow-list, no new privileges, RLIMIT_AS");
    if hello.send(&mut socket).is_err() {
        return 2;
    }
    let mut server = Server {
        entries: entries.0,
        handles: HashMap::new(),
        next: 1,
    };
    loop {
        let (kind, fields) = match read_frame(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(_) => return 2,
        };
        let reply = match server.dispatch(kind, &fields) {
            Ok(reply) => reply,
            // The parent is trusted; a frame we cannot read means the two sides disagree: stop.
            Err(_) => return 2,
        };
        if socket.write_all(&reply.finish()).is_err() {
            return 2;
        }
    }
}

type Loaded = (MeterEntries, String, String, (u16, u16, u16));

fn load(label: &str) -> Result<Loaded, String> {
    let path = format!("/proc/self/fd/{CHILD_LIBRARY_FD}");
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: the parent verified the signature of exactly these bytes (a sealed memory file).
    let library = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }
        .map_err(|e| format!("dlopen: {}", e.to_string().replace(&path, label)))?;
    // SAFETY: the symbol's type is fixed by the ABI (see the loader).
    let symbol = unsafe { library.get::<*const DeclarationRef>(DECLARATION_SYMBOL) }
        .map_err(|e| format!("does not export the declaration: {e}"))?;
    // SAFETY: as in the loader; the library is leaked below and never unloaded.
    let declaration = unsafe {
        if symbol.is_null() {
            std::ptr::null()
        } else {
            symbol.read_unaligned().0 as *const PluginDeclaration
        }
    };
    std::mem::forget(library);
    // SAFETY: the declaration lives in a library that is never unloaded.
    let checked = unsafe { declaration::check(declaration) }.map_err(|e| e.to_string())?;
    if checked.kind != DriverKind::Rs485Meter {
        return Err(format!(
            "is a {} driver; the isolated mode runs RS485 meter drivers only",
            checked.kind
        ));
    }
    let origin = PluginOrigin::File {
        path: label.into(),
        key_id: String::new(),
    };
    let plugin = initialise(checked, origin, label, u32::MAX).map_err(|e| e.to_string())?;
    let info = plugin.info();
    let api = (
        info.api_version.major,
        info.api_version.minor,
        info.api_version.patch,
    );
    match &plugin.entries {
        Entries::Meter(entries) => Ok((*entries, info.name.clone(), info.version.clone(), api)),
        _ => Err(String::from("is not an RS485 meter driver")),
    }
}

struct Server {
    entries: MeterEntries,
    handles: HashMap<u64, usize>,
    next: u64,
}

/// Reads a `RawTime`.
pub(crate) fn read_time(r: &mut Reader<'_>) -> Result<RawTime, Malformed> {
    Ok(RawTime {
        unix_millis: r.i64("time")?,
        monotonic_micros: r.u64("time")?,
    })
}

fn cap(r: &mut Reader<'_>, what: &'static str) -> Result<usize, Malformed> {
    Ok((r.u32(what)? as usize).min(MAX_CAP))
}

/// Appends a request the plugin wrote: its reported length, the bytes within the buffer, the timing.
fn put_request(w: Writer, request: &RawRequest, buf: &[u8]) -> Writer {
    let t = &request.timing;
    w.u64(request.frame_len as u64)
        .bytes(buf.get(..request.frame_len).unwrap_or(buf))
        .u32(t.reply_timeout_micros)
        .u32(t.inter_byte_timeout_micros)
        .u32(t.min_idle_before_micros)
        .u32(t.turnaround_micros)
        .u8(t.preamble_byte)
        .u8(t.preamble_count)
        .u8(request.expects_reply)
}

fn put_message(w: Writer, message: &Message) -> Writer {
    let (len, bytes) = message.reported();
    w.u64(len as u64).bytes(bytes)
}

fn new_request(buf: &mut [u8]) -> RawRequest {
    RawRequest {
        frame: buf.as_mut_ptr(),
        frame_cap: buf.len(),
        frame_len: 0,
        timing: RawTiming::default(),
        expects_reply: 0,
    }
}

impl Server {
    fn handle(&self, r: &mut Reader<'_>) -> Result<*mut c_void, Malformed> {
        let id = r.u64("handle")?;
        self.handles
            .get(&id)
            .map(|h| *h as *mut c_void)
            .ok_or(Malformed("unknown handle"))
    }

    fn dispatch(&mut self, kind: u8, fields: &[u8]) -> Result<Writer, Malformed> {
        let mut r = Reader::new(fields);
        let reply = Writer::new(frame::REPLY);
        let mut message = Message::new();
        match kind {
            frame::OPEN => {
                let address = r.bytes("address")?;
                let config = String::from_utf8_lossy(r.bytes("config")?).into_owned();
                let mut handle: *mut c_void = std::ptr::null_mut();
                // SAFETY: checked entry point; all pointers valid for the call.
                let status = unsafe {
                    (self.entries.open)(
                        BytesRef::new(address),
                        StrRef::new(&config),
                        &mut handle,
                        message.as_ptr(),
                    )
                };
                let id = if handle.is_null() {
                    0
                } else {
                    self.next += 1;
                    self.handles.insert(self.next, handle as usize);
                    self.next
                };
                Ok(put_message(reply.u32(status.0).u64(id), &message))
            }
            frame::BEGIN => {
                let handle = self.handle(&mut r)?;
                let task = RawTask {
                    kind: r.u32("task")?,
                    quantity: r.u32("task")?,
                    relay: r.u32("task")?,
                    reserved: r.u32("task")?,
                    unix_time: r.i64("task")?,
                };
                let time = read_time(&mut r)?;
                let mut buf = vec![0u8; cap(&mut r, "frame cap")?];
                let mut request = new_request(&mut buf);
                // SAFETY: checked entry point; our handle; every pointer is valid for the call.
                let status = unsafe {
                    (self.entries.begin)(handle, &task, time, &mut request, message.as_ptr())
                };
                let reply = put_message(reply.u32(status.0), &message);
                Ok(put_request(reply, &request, &buf))
            }
            frame::IS_COMPLETE => {
                let handle = self.handle(&mut r)?;
                let bytes = r.bytes("reply bytes")?;
                let mut complete = 0u8;
                // SAFETY: checked entry point; our handle; valid pointers.
                let status = unsafe {
                    (self.entries.is_complete)(handle, BytesRef::new(bytes), &mut complete)
                };
                Ok(reply.u32(status.0).u8(complete))
            }
            frame::FINISH => self.finish(&mut r, reply, &mut message),
            frame::CLOSE => {
                let id = r.u64("handle")?;
                if let Some(handle) = self.handles.remove(&id) {
                    // SAFETY: checked entry point; the handle came from `open` and is forgotten here.
                    unsafe { (self.entries.close)(handle as *mut c_void) };
                }
                Ok(reply.u32(Status::OK.0))
            }
            _ => Err(Malformed("unknown frame type")),
        }
    }

    fn finish(
        &mut self,
        r: &mut Reader<'_>,
        reply: Writer,
        message: &mut Message,
    ) -> Result<Writer, Malformed> {
        let handle = self.handle(r)?;
        let kind = r.u32("reply kind")?;
        let bytes = r.bytes("reply bytes")?.to_vec();
        let time = read_time(r)?;
        let mut frame_buf = vec![0u8; cap(r, "frame cap")?];
        let mut readings = vec![RawReading::default(); cap(r, "readings cap")?.min(1024)];
        let mut out = RawOutcome {
            kind: 0,
            exception_code: 0,
            readings: readings.as_mut_ptr(),
            readings_cap: readings.len(),
            readings_len: 0,
            next: new_request(&mut frame_buf),
        };
        let raw_reply = RawReply {
            kind,
            bytes: BytesRef::new(&bytes),
        };
        // SAFETY: checked entry point; our handle; every pointer is valid for the call.
        let status =
            unsafe { (self.entries.finish)(handle, raw_reply, time, &mut out, message.as_ptr()) };
        let mut w = put_message(reply.u32(status.0), message)
            .u32(out.kind)
            .u32(out.exception_code)
            .u64(out.readings_len as u64);
        let shown = readings.get(..out.readings_len).unwrap_or(&readings);
        w = w.u32(u32::try_from(shown.len()).unwrap_or(0));
        for reading in shown {
            w = w
                .u32(reading.quantity)
                .u32(reading.value_kind)
                .i64(reading.mantissa)
                .u32(reading.exponent as u32)
                .u32(reading.unit);
        }
        Ok(put_request(w, &out.next, &frame_buf))
    }
}
