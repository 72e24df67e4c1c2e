//! The C entry points generated for a driver type, and the declaration that points at them.
//!
//! Every entry point runs the driver inside `catch_unwind`: a panic becomes [`Status::PANICKED`] with
//! the panic message in the host's message buffer and in the log. Nothing here trusts the host's
//! pointers beyond the documented contract; null outputs are refused with
//! [`Status::INVALID_ARGUMENT`].

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use concentrator_plugin_api::codes::{driver_kind, outcome, reply as reply_kind};
use concentrator_plugin_api::values::{Reading, Task};
use concentrator_plugin_api::{
    BytesRef, HostServices, MessageBuf, MeterDriverVTable, PluginDeclaration, RawOutcome, RawReply,
    RawRequest, RawStreamEvent, RawTask, RawTime, Status, StrRef, StreamDriverVTable, ABI_VERSION,
    API_VERSION, BUILD_PANIC_STRATEGY, BUILD_TARGET,
};

use crate::driver::{MeterDriver, Now, Outcome, Reply, Request, StreamDriver};
use crate::logger;

/// The entry-point table of meter driver `D`.
pub const fn meter_vtable<D: MeterDriver>() -> MeterDriverVTable {
    MeterDriverVTable {
        size: size_of::<MeterDriverVTable>(),
        open: Some(meter_open::<D>),
        close: Some(meter_close::<D>),
        begin: Some(meter_begin::<D>),
        is_complete: Some(meter_is_complete::<D>),
        finish: Some(meter_finish::<D>),
    }
}

/// The declaration of meter driver `D` with its table.
pub const fn meter_declaration<D: MeterDriver>(
    name: &'static str,
    version: &'static str,
    table: &'static MeterDriverVTable,
) -> PluginDeclaration {
    PluginDeclaration {
        abi_version: ABI_VERSION,
        kind: driver_kind::RS485_METER,
        api_version: API_VERSION,
        panic_strategy: BUILD_PANIC_STRATEGY,
        target: StrRef::from_static(BUILD_TARGET),
        name: StrRef::from_static(name),
        version: StrRef::from_static(version),
        init: Some(init::<MeterInit<D>>),
        meter: table,
        stream: std::ptr::null(),
    }
}

/// The entry-point table of stream driver `D`.
pub const fn stream_vtable<D: StreamDriver>() -> StreamDriverVTable {
    StreamDriverVTable {
        size: size_of::<StreamDriverVTable>(),
        open: Some(stream_open::<D>),
        close: Some(stream_close::<D>),
        on_bytes: Some(stream_on_bytes::<D>),
        poll_transmit: Some(stream_poll_transmit::<D>),
        on_tick: Some(stream_on_tick::<D>),
        poll_event: Some(stream_poll_event::<D>),
        command: Some(stream_command::<D>),
        poll_notice: Some(stream_poll_notice::<D>),
    }
}

/// The declaration of stream driver `D` of `kind` ([`driver_kind`]) with its table.
pub const fn stream_declaration<D: StreamDriver>(
    kind: u32,
    name: &'static str,
    version: &'static str,
    table: &'static StreamDriverVTable,
) -> PluginDeclaration {
    PluginDeclaration {
        abi_version: ABI_VERSION,
        kind,
        api_version: API_VERSION,
        panic_strategy: BUILD_PANIC_STRATEGY,
        target: StrRef::from_static(BUILD_TARGET),
        name: StrRef::from_static(name),
        version: StrRef::from_static(version),
        init: Some(init::<StreamInit<D>>),
        meter: std::ptr::null(),
        stream: table,
    }
}

// ---------------------------------------------------------------------------------------------------
// Helpers

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(a panic without a message)")
    }
}

/// Writes `text` into the host's message buffer, truncated at a character boundary.
fn write_message(message: *mut MessageBuf, text: &str) {
    // SAFETY: the host passes either null or a valid, exclusive `MessageBuf` for the call.
    let Some(buf) = (unsafe { message.as_mut() }) else {
        return;
    };
    if buf.ptr.is_null() {
        buf.len = 0;
        return;
    }
    let mut len = text.len().min(buf.cap);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    // SAFETY: `buf.ptr` points to `buf.cap` writable bytes (host contract) and `len <= buf.cap`; the
    // source is a different allocation.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf.ptr, len) };
    buf.len = len;
}

/// Runs `body`, turning a panic into [`Status::PANICKED`] with the message logged and written.
fn guard(entry: &str, message: *mut MessageBuf, body: impl FnOnce() -> Status) -> Status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(payload) => {
            let mut text = panic_text(&*payload);
            // Dropping a payload could itself panic in theory; forget it instead (a few bytes, once).
            std::mem::forget(payload);
            if let Some(location) = logger::take_panic_location() {
                text = format!("{text} (at {location})");
            }
            let _ = catch_unwind(AssertUnwindSafe(
                || log::error!(target: "panic", "driver panicked in `{entry}`: {text}"),
            ));
            write_message(message, &text);
            Status::PANICKED
        }
    }
}

fn reject(message: *mut MessageBuf, status: Status, text: &str) -> Status {
    write_message(message, text);
    status
}

/// Copies a request into the host's buffer.
fn write_request(out: &mut RawRequest, request: &Request, message: *mut MessageBuf) -> Status {
    if out.frame.is_null() || request.frame.len() > out.frame_cap {
        return reject(
            message,
            Status::BUFFER_TOO_SMALL,
            &format!(
                "the request frame is {} bytes; the host's buffer holds {}",
                request.frame.len(),
                out.frame_cap
            ),
        );
    }
    // SAFETY: `out.frame` points to `frame_cap` writable bytes (host contract), checked above to be enough.
    unsafe {
        std::ptr::copy_nonoverlapping(request.frame.as_ptr(), out.frame, request.frame.len())
    };
    out.frame_len = request.frame.len();
    out.timing = request.timing.to_raw();
    out.expects_reply = u8::from(request.expects_reply);
    Status::OK
}

fn write_readings(out: &mut RawOutcome, readings: &[Reading], message: *mut MessageBuf) -> Status {
    if readings.is_empty() {
        out.readings_len = 0;
        return Status::OK;
    }
    if out.readings.is_null() || readings.len() > out.readings_cap {
        return reject(
            message,
            Status::BUFFER_TOO_SMALL,
            &format!(
                "{} readings; the host's buffer holds {}",
                readings.len(),
                out.readings_cap
            ),
        );
    }
    for (i, reading) in readings.iter().enumerate() {
        // SAFETY: `out.readings` points to `readings_cap` writable items (host contract), `i < cap`.
        unsafe { out.readings.add(i).write(reading.to_raw()) };
    }
    out.readings_len = readings.len();
    Status::OK
}

// ---------------------------------------------------------------------------------------------------
// init

/// How `init` reaches a driver type's own `init`, whatever its kind.
pub trait DriverInit {
    /// Runs the driver's `init`.
    fn run() -> Result<(), crate::Rejection>;
}

/// [`DriverInit`] for a meter driver.
#[derive(Debug)]
pub struct MeterInit<D>(std::marker::PhantomData<D>);
impl<D: MeterDriver> DriverInit for MeterInit<D> {
    fn run() -> Result<(), crate::Rejection> {
        D::init()
    }
}

/// [`DriverInit`] for a stream driver.
#[derive(Debug)]
pub struct StreamInit<D>(std::marker::PhantomData<D>);
impl<D: StreamDriver> DriverInit for StreamInit<D> {
    fn run() -> Result<(), crate::Rejection> {
        D::init()
    }
}

unsafe extern "C" fn init<I: DriverInit>(
    host: *const HostServices,
    message: *mut MessageBuf,
) -> Status {
    guard("init", message, || {
        // SAFETY: the host passes a valid `HostServices` for the call (or null, refused here).
        let Some(host) = (unsafe { host.as_ref() }) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "init was called without host services",
            );
        };
        if host.abi_version != ABI_VERSION {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                &format!(
                    "the host speaks plugin ABI {}, this plugin ABI {ABI_VERSION}",
                    host.abi_version
                ),
            );
        }
        if let Some(log) = host.log {
            logger::install(host.context, log, host.max_log_level);
        }
        match I::run() {
            Ok(()) => Status::OK,
            Err(e) => reject(message, Status::FAILED, &e.to_string()),
        }
    })
}

// ---------------------------------------------------------------------------------------------------
// Meter driver

unsafe extern "C" fn meter_open<D: MeterDriver>(
    address: BytesRef,
    config: StrRef,
    out_meter: *mut *mut c_void,
    message: *mut MessageBuf,
) -> Status {
    guard("open", message, || {
        if out_meter.is_null() {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "open was called without an output handle",
            );
        }
        // SAFETY: the host passes slices valid for the call.
        let (Some(address), Some(config)) =
            (unsafe { address.as_slice() }, unsafe { config.as_bytes() })
        else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "open was called with a null address or config",
            );
        };
        let Ok(config) = std::str::from_utf8(config) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "the meter's config is not UTF-8",
            );
        };
        match D::open(address, config) {
            Ok(driver) => {
                // SAFETY: `out_meter` is non-null and writable (host contract).
                unsafe { out_meter.write(Box::into_raw(Box::new(driver)).cast::<c_void>()) };
                Status::OK
            }
            Err(e) => reject(message, Status::CONFIG_REJECTED, &e.to_string()),
        }
    })
}

unsafe extern "C" fn meter_close<D: MeterDriver>(meter: *mut c_void) {
    let _ = guard("close", std::ptr::null_mut(), || {
        if !meter.is_null() {
            // SAFETY: `meter` came from `meter_open::<D>` (Box<D>::into_raw) and the host never uses it
            // again after close.
            drop(unsafe { Box::from_raw(meter.cast::<D>()) });
        }
        Status::OK
    });
}

/// The driver behind a handle.
///
/// # Safety
/// `meter` is null or came from `meter_open::<D>` and is not used by another thread during the call.
unsafe fn driver_mut<'a, D>(meter: *mut c_void) -> Option<&'a mut D> {
    // SAFETY: per the function's contract.
    unsafe { meter.cast::<D>().as_mut() }
}

unsafe extern "C" fn meter_begin<D: MeterDriver>(
    meter: *mut c_void,
    task: *const RawTask,
    now: RawTime,
    out: *mut RawRequest,
    message: *mut MessageBuf,
) -> Status {
    guard("begin", message, || {
        // SAFETY: host contract: a handle from our `open`, valid pointers for the call.
        let (Some(driver), Some(task), Some(out)) = (
            unsafe { driver_mut::<D>(meter) },
            unsafe { task.as_ref() },
            unsafe { out.as_mut() },
        ) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "begin was called with a null handle, task or output",
            );
        };
        let task = match Task::try_from_raw(task) {
            Ok(task) => task,
            Err(e) => return reject(message, Status::TASK_REJECTED, &e.to_string()),
        };
        match driver.begin(&task, Now::from_raw(now)) {
            Ok(request) => write_request(out, &request, message),
            Err(e) => reject(message, Status::TASK_REJECTED, &e.to_string()),
        }
    })
}

unsafe extern "C" fn meter_is_complete<D: MeterDriver>(
    meter: *mut c_void,
    reply: BytesRef,
    out_complete: *mut u8,
) -> Status {
    guard("is_complete", std::ptr::null_mut(), || {
        // SAFETY: host contract, as in `meter_begin`.
        let (Some(driver), Some(bytes)) = (unsafe { driver_mut::<D>(meter) }, unsafe {
            reply.as_slice()
        }) else {
            return Status::INVALID_ARGUMENT;
        };
        if out_complete.is_null() {
            return Status::INVALID_ARGUMENT;
        }
        let complete = driver.is_complete(bytes);
        // SAFETY: checked non-null; writable for the call (host contract).
        unsafe { out_complete.write(u8::from(complete)) };
        Status::OK
    })
}

unsafe extern "C" fn meter_finish<D: MeterDriver>(
    meter: *mut c_void,
    reply: RawReply,
    now: RawTime,
    out: *mut RawOutcome,
    message: *mut MessageBuf,
) -> Status {
    guard("finish", message, || {
        // SAFETY: host contract, as in `meter_begin`.
        let (Some(driver), Some(bytes), Some(out)) = (
            unsafe { driver_mut::<D>(meter) },
            unsafe { reply.bytes.as_slice() },
            unsafe { out.as_mut() },
        ) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "finish was called with a null handle, reply or output",
            );
        };
        let reply = match reply.kind {
            reply_kind::COMPLETE => Reply::Complete(bytes),
            reply_kind::SILENCE => Reply::Silence(bytes),
            reply_kind::TIMEOUT => Reply::Timeout,
            reply_kind::SENT => Reply::Sent,
            other => {
                return reject(
                    message,
                    Status::INVALID_ARGUMENT,
                    &format!("reply kind {other} is not defined"),
                )
            }
        };
        match driver.finish(reply, Now::from_raw(now)) {
            Outcome::Done(readings) => {
                out.kind = outcome::DONE;
                write_readings(out, &readings, message)
            }
            Outcome::DeviceException(exception) => {
                out.kind = outcome::DEVICE_EXCEPTION;
                out.exception_code = exception.code;
                out.readings_len = 0;
                write_message(message, &exception.text);
                Status::OK
            }
            Outcome::NeedAnotherExchange { readings, next } => {
                out.kind = outcome::NEED_ANOTHER_EXCHANGE;
                match write_readings(out, &readings, message) {
                    Status::OK => write_request(&mut out.next, &next, message),
                    status => status,
                }
            }
            Outcome::ProtocolError(text) => {
                out.kind = outcome::PROTOCOL_ERROR;
                out.readings_len = 0;
                write_message(message, &text);
                Status::OK
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------------
// Stream driver

/// A stream driver with the frame it could not yet hand over (the host's buffer was too small).
struct StreamCell<D> {
    driver: D,
    pending: Option<Vec<u8>>,
    pending_notice: Option<String>,
}

unsafe extern "C" fn stream_open<D: StreamDriver>(
    config: StrRef,
    now: RawTime,
    out_stream: *mut *mut c_void,
    message: *mut MessageBuf,
) -> Status {
    guard("open", message, || {
        // SAFETY: host contract: a string valid for the call.
        let Some(config) = (unsafe { config.as_bytes() }) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "open was called with a null config",
            );
        };
        if out_stream.is_null() {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "open was called without an output handle",
            );
        }
        let Ok(config) = std::str::from_utf8(config) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "the stream's config is not UTF-8",
            );
        };
        match D::open(config, Now::from_raw(now)) {
            Ok(driver) => {
                let cell = Box::new(StreamCell {
                    driver,
                    pending: None,
                    pending_notice: None,
                });
                // SAFETY: checked non-null; writable (host contract).
                unsafe { out_stream.write(Box::into_raw(cell).cast::<c_void>()) };
                Status::OK
            }
            Err(e) => reject(message, Status::CONFIG_REJECTED, &e.to_string()),
        }
    })
}

unsafe extern "C" fn stream_close<D: StreamDriver>(stream: *mut c_void) {
    let _ = guard("close", std::ptr::null_mut(), || {
        if !stream.is_null() {
            // SAFETY: `stream` came from `stream_open::<D>` and is not used again.
            drop(unsafe { Box::from_raw(stream.cast::<StreamCell<D>>()) });
        }
        Status::OK
    });
}

unsafe extern "C" fn stream_on_bytes<D: StreamDriver>(
    stream: *mut c_void,
    bytes: BytesRef,
    message: *mut MessageBuf,
) -> Status {
    guard("on_bytes", message, || {
        // SAFETY: a handle from our `open`; a slice valid for the call.
        let (Some(cell), Some(bytes)) = (unsafe { driver_mut::<StreamCell<D>>(stream) }, unsafe {
            bytes.as_slice()
        }) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "on_bytes was called with a null handle or bytes",
            );
        };
        match cell.driver.on_bytes(bytes) {
            Ok(()) => Status::OK,
            Err(e) => reject(message, Status::FAILED, &e.to_string()),
        }
    })
}

unsafe extern "C" fn stream_poll_transmit<D: StreamDriver>(
    stream: *mut c_void,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
    message: *mut MessageBuf,
) -> Status {
    guard("poll_transmit", message, || {
        // SAFETY: a handle from our `open`.
        let Some(cell) = (unsafe { driver_mut::<StreamCell<D>>(stream) }) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "poll_transmit was called with a null handle",
            );
        };
        if out_len.is_null() || out.is_null() {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "poll_transmit was called without an output buffer",
            );
        }
        let frame = match cell.pending.take() {
            Some(frame) => frame,
            None => cell.driver.poll_transmit().unwrap_or_default(),
        };
        if frame.len() > cap {
            let needed = frame.len();
            cell.pending = Some(frame);
            return reject(
                message,
                Status::BUFFER_TOO_SMALL,
                &format!("the frame to send is {needed} bytes; the host's buffer holds {cap}"),
            );
        }
        // SAFETY: `out` holds `cap` writable bytes (host contract), `frame.len() <= cap`; `out_len` is
        // non-null and writable.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), out, frame.len());
            out_len.write(frame.len());
        }
        Status::OK
    })
}

unsafe extern "C" fn stream_on_tick<D: StreamDriver>(
    stream: *mut c_void,
    now: RawTime,
    message: *mut MessageBuf,
) -> Status {
    guard("on_tick", message, || {
        // SAFETY: a handle from our `open`.
        let Some(cell) = (unsafe { driver_mut::<StreamCell<D>>(stream) }) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "on_tick was called with a null handle",
            );
        };
        match cell.driver.on_tick(Now::from_raw(now)) {
            Ok(()) => Status::OK,
            Err(e) => reject(message, Status::FAILED, &e.to_string()),
        }
    })
}

unsafe extern "C" fn stream_poll_event<D: StreamDriver>(
    stream: *mut c_void,
    out: *mut RawStreamEvent,
    out_has: *mut u8,
    message: *mut MessageBuf,
) -> Status {
    guard("poll_event", message, || {
        // SAFETY: a handle from our `open`.
        let Some(cell) = (unsafe { driver_mut::<StreamCell<D>>(stream) }) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "poll_event was called with a null handle",
            );
        };
        if out.is_null() || out_has.is_null() {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "poll_event was called without outputs",
            );
        }
        let event = match cell.driver.poll_event().map(|e| e.try_to_raw()) {
            None => None,
            Some(Ok(raw)) => Some(raw),
            Some(Err(e)) => return reject(message, Status::FAILED, &e.to_string()),
        };
        // SAFETY: both outputs are non-null and writable for the call (host contract).
        unsafe {
            out_has.write(u8::from(event.is_some()));
            if let Some(raw) = event {
                out.write(raw);
            }
        }
        Status::OK
    })
}

unsafe extern "C" fn stream_command<D: StreamDriver>(
    stream: *mut c_void,
    command: StrRef,
    now: RawTime,
    message: *mut MessageBuf,
) -> Status {
    guard("command", message, || {
        // SAFETY: a handle from our `open`; a string valid for the call.
        let (Some(cell), Some(command)) =
            (unsafe { driver_mut::<StreamCell<D>>(stream) }, unsafe {
                command.as_bytes()
            })
        else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "command was called with a null handle or command",
            );
        };
        let Ok(command) = std::str::from_utf8(command) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "the command is not UTF-8",
            );
        };
        match cell.driver.on_command(command, Now::from_raw(now)) {
            Ok(()) => Status::OK,
            Err(e) => reject(message, Status::TASK_REJECTED, &e.to_string()),
        }
    })
}

unsafe extern "C" fn stream_poll_notice<D: StreamDriver>(
    stream: *mut c_void,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
    message: *mut MessageBuf,
) -> Status {
    guard("poll_notice", message, || {
        // SAFETY: a handle from our `open`.
        let Some(cell) = (unsafe { driver_mut::<StreamCell<D>>(stream) }) else {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "poll_notice was called with a null handle",
            );
        };
        if out_len.is_null() || out.is_null() {
            return reject(
                message,
                Status::INVALID_ARGUMENT,
                "poll_notice was called without an output buffer",
            );
        }
        let notice = match cell.pending_notice.take() {
            Some(notice) => notice,
            None => cell.driver.poll_notice().unwrap_or_default(),
        };
        if notice.len() > cap {
            let needed = notice.len();
            cell.pending_notice = Some(notice);
            return reject(
                message,
                Status::BUFFER_TOO_SMALL,
                &format!("the notice is {needed} bytes; the host's buffer holds {cap}"),
            );
        }
        // SAFETY: `out` holds `cap` writable bytes (host contract), `notice.len() <= cap`; `out_len`
        // is non-null and writable.
        unsafe {
            std::ptr::copy_nonoverlapping(notice.as_ptr(), out, notice.len());
            out_len.write(notice.len());
        }
        Status::OK
    })
}
