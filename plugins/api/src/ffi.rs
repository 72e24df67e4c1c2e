//! The `#[repr(C)]` types that cross the boundary.
//!
//! Rules every entry point follows (the SDK generates code that does):
//! - pointers passed in are valid for the duration of the call only;
//! - output buffers are the host's: the plugin writes at most `cap` bytes or items and sets the length;
//!   a length above the capacity is a misbehaviour the host catches;
//! - a handle (`*mut c_void`) made by `open` belongs to the plugin and is freed by its `close`;
//! - one handle is never used by two threads at once; different handles may be;
//! - every entry point returns a [`Status`] and never unwinds into the host.

use std::ffi::c_void;
use std::fmt;

/// Semantic version of the API ([`crate::API_VERSION`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    /// Incompatible changes of meaning.
    pub major: u16,
    /// Additions (new codes, new entry points at the end of a table).
    pub minor: u16,
    /// Fixes of documentation or behaviour.
    pub patch: u16,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A borrowed UTF-8 string: pointer and length, no terminating NUL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StrRef {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl StrRef {
    /// Borrows a string with a static lifetime (usable in `static` initialisers).
    pub const fn from_static(s: &'static str) -> Self {
        StrRef {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Borrows a string for the duration of a call.
    pub fn new(s: &str) -> Self {
        StrRef {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes, or `None` when the pointer is null and the length is not 0.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid for `'a` (or be null).
    pub unsafe fn as_bytes<'a>(&self) -> Option<&'a [u8]> {
        if self.len == 0 {
            return Some(&[]);
        }
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: the caller guarantees `ptr` points to `len` readable bytes living for `'a`.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }
}

/// A borrowed byte slice: pointer and length.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BytesRef {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl BytesRef {
    /// Borrows a slice for the duration of a call.
    pub fn new(bytes: &[u8]) -> Self {
        BytesRef {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The bytes, or `None` when the pointer is null and the length is not 0.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid for `'a` (or be null).
    pub unsafe fn as_slice<'a>(&self) -> Option<&'a [u8]> {
        if self.len == 0 {
            return Some(&[]);
        }
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: the caller guarantees `ptr` points to `len` readable bytes living for `'a`.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }
}

/// A host-owned text buffer that the plugin fills with a message (a panic, a rejection, a device
/// exception's text). The plugin writes at most `cap` bytes of UTF-8 and sets `len`.
#[repr(C)]
#[derive(Debug)]
pub struct MessageBuf {
    /// The host's buffer.
    pub ptr: *mut u8,
    /// Its capacity in bytes.
    pub cap: usize,
    /// Bytes written by the plugin.
    pub len: usize,
}

/// The result of an entry point. Any `u32` is a valid value; unknown codes are misbehaviour.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    /// Success; the outputs are filled.
    pub const OK: Status = Status(0);
    /// The plugin panicked; the message buffer holds the panic message. The call had no effect the host
    /// can rely on.
    pub const PANICKED: Status = Status(1);
    /// The host passed a null or inconsistent argument.
    pub const INVALID_ARGUMENT: Status = Status(2);
    /// The per-meter or per-stream config was rejected; the message says why.
    pub const CONFIG_REJECTED: Status = Status(3);
    /// The driver does not support this task for this meter; the message says why.
    pub const TASK_REJECTED: Status = Status(4);
    /// An output buffer was too small (a frame longer than the host's buffer, too many readings).
    pub const BUFFER_TOO_SMALL: Status = Status(5);
    /// `init` has not been called, or failed.
    pub const NOT_INITIALISED: Status = Status(6);
    /// The plugin failed for another reason; the message says why.
    pub const FAILED: Status = Status(7);

    /// A short name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Status::OK => "ok",
            Status::PANICKED => "panicked",
            Status::INVALID_ARGUMENT => "invalid argument",
            Status::CONFIG_REJECTED => "config rejected",
            Status::TASK_REJECTED => "task rejected",
            Status::BUFFER_TOO_SMALL => "buffer too small",
            Status::NOT_INITIALISED => "not initialised",
            Status::FAILED => "failed",
            _ => "unknown status",
        }
    }
}

/// The host's logging callback: `(context, level, target, message)`; see [`crate::codes::log_level`].
pub type LogFn =
    unsafe extern "C" fn(context: *const c_void, level: u32, target: StrRef, message: StrRef);

/// What the host gives a plugin in `init`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostServices {
    /// The host's [`crate::ABI_VERSION`].
    pub abi_version: u32,
    /// The most verbose level the host wants ([`crate::codes::log_level`]).
    pub max_log_level: u32,
    /// Passed back unchanged as the first argument of `log`.
    pub context: *const c_void,
    /// Where the plugin's log records go. `None` when the plugin is linked statically into the host and
    /// shares its `log` crate: the plugin must then not install a logger of its own.
    pub log: Option<LogFn>,
}

/// The plugin's one-time initialisation, called after the declaration checks and before anything else.
pub type InitFn =
    unsafe extern "C" fn(host: *const HostServices, message: *mut MessageBuf) -> Status;

/// The declaration a plugin exports. Its first field is the ABI version, forever; the host reads nothing
/// else until that matches.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDeclaration {
    /// [`crate::ABI_VERSION`] the plugin was built with.
    pub abi_version: u32,
    /// The plugin's driver kind ([`crate::codes::driver_kind`]).
    pub kind: u32,
    /// [`crate::API_VERSION`] the plugin was built with.
    pub api_version: ApiVersion,
    /// [`crate::codes::panic_strategy`] the plugin was built with.
    pub panic_strategy: u32,
    /// The target triple the plugin was built for ([`crate::BUILD_TARGET`]).
    pub target: StrRef,
    /// The plugin's name (UTF-8, at most [`crate::MAX_NAME_LEN`] bytes: letters, digits, `-`, `_`).
    pub name: StrRef,
    /// The plugin's version (UTF-8, at most [`crate::MAX_VERSION_LEN`] bytes).
    pub version: StrRef,
    /// One-time initialisation.
    pub init: Option<InitFn>,
    /// Entry points of an RS485 meter driver; null for other kinds.
    pub meter: *const MeterDriverVTable,
    /// Entry points of a stream driver (coordinator, modem); null for other kinds.
    pub stream: *const StreamDriverVTable,
}

// SAFETY: a declaration is immutable static data (string literals and tables of function pointers in
// the plugin's read-only memory); sharing references to it between threads cannot race.
unsafe impl Sync for PluginDeclaration {}
// SAFETY: as above; the raw pointers refer to immutable statics.
unsafe impl Send for PluginDeclaration {}

/// The value of the exported [`crate::DECLARATION_SYMBOL`]: a pointer to the declaration.
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct DeclarationRef(pub &'static PluginDeclaration);

/// A point in time, passed into calls that need it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawTime {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_millis: i64,
    /// The host's monotonic time, microseconds since its start.
    pub monotonic_micros: u64,
}

/// Timing hints for one exchange; 0 means "the host's default".
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawTiming {
    /// How long to wait for the first byte of the reply, in microseconds.
    pub reply_timeout_micros: u32,
    /// Longest gap between two reply bytes, in microseconds.
    pub inter_byte_timeout_micros: u32,
    /// Silence required on the line before sending, in microseconds.
    pub min_idle_before_micros: u32,
    /// Delay after sending before listening, in microseconds.
    pub turnaround_micros: u32,
    /// The wake-up byte sent before the frame.
    pub preamble_byte: u8,
    /// How many wake-up bytes (0: none).
    pub preamble_count: u8,
    /// Reserved, 0.
    pub reserved: [u8; 2],
}

/// A request frame the driver writes into the host's buffer.
#[repr(C)]
#[derive(Debug)]
pub struct RawRequest {
    /// The host's frame buffer.
    pub frame: *mut u8,
    /// Its capacity.
    pub frame_cap: usize,
    /// Bytes written by the plugin.
    pub frame_len: usize,
    /// Timing of the exchange.
    pub timing: RawTiming,
    /// 1 if a reply is expected; 0 for a broadcast.
    pub expects_reply: u8,
}

/// A task for a meter.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawTask {
    /// [`crate::codes::task`].
    pub kind: u32,
    /// For `READ`: the quantity ([`crate::codes::quantity`]).
    pub quantity: u32,
    /// For `RELAY`: the command ([`crate::codes::relay_command`]).
    pub relay: u32,
    /// For `READ_HISTORY`: the record, 1 = the newest (API 1.3); otherwise 0.
    pub reserved: u32,
    /// For `SET_CLOCK`: the time to set, Unix seconds.
    pub unix_time: i64,
}

/// The reply handed to `finish`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawReply {
    /// [`crate::codes::reply`].
    pub kind: u32,
    /// The bytes received (empty for a timeout or a broadcast).
    pub bytes: BytesRef,
}

/// One typed value read from a meter.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawReading {
    /// [`crate::codes::quantity`].
    pub quantity: u32,
    /// [`crate::codes::value_kind`].
    pub value_kind: u32,
    /// The number, the Unix seconds, or the relay-state code.
    pub mantissa: i64,
    /// Decimal exponent of a decimal value (-20..=20).
    pub exponent: i32,
    /// [`crate::codes::unit`] of a decimal value.
    pub unit: u32,
}

/// What `finish` returns, in host-owned memory.
#[repr(C)]
#[derive(Debug)]
pub struct RawOutcome {
    /// [`crate::codes::outcome`].
    pub kind: u32,
    /// For `DEVICE_EXCEPTION`: the meter's exception code.
    pub exception_code: u32,
    /// The host's readings array.
    pub readings: *mut RawReading,
    /// Its capacity.
    pub readings_cap: usize,
    /// Readings written by the plugin.
    pub readings_len: usize,
    /// For `NEED_ANOTHER_EXCHANGE`: the next request.
    pub next: RawRequest,
}

/// The entry points of an RS485 meter driver.
///
/// Call flow for one task: `begin` → (exchange on the bus, calling `is_complete` as bytes arrive) →
/// `finish` → if the outcome is `NEED_ANOTHER_EXCHANGE`, exchange `next` and `finish` again.
#[repr(C)]
#[derive(Debug)]
pub struct MeterDriverVTable {
    /// `size_of::<MeterDriverVTable>()` in the plugin, so a newer host can tell which entries exist.
    pub size: usize,
    /// Makes the per-meter state from the meter's address and its config (a TOML fragment).
    pub open: Option<
        unsafe extern "C" fn(
            address: BytesRef,
            config: StrRef,
            out_meter: *mut *mut c_void,
            message: *mut MessageBuf,
        ) -> Status,
    >,
    /// Frees the per-meter state. The handle is not used again.
    pub close: Option<unsafe extern "C" fn(meter: *mut c_void)>,
    /// Starts a task: writes the first request.
    pub begin: Option<
        unsafe extern "C" fn(
            meter: *mut c_void,
            task: *const RawTask,
            now: RawTime,
            out: *mut RawRequest,
            message: *mut MessageBuf,
        ) -> Status,
    >,
    /// Whether the bytes received so far are a whole reply (sets `*out_complete` to 1 or 0).
    pub is_complete: Option<
        unsafe extern "C" fn(meter: *mut c_void, reply: BytesRef, out_complete: *mut u8) -> Status,
    >,
    /// Takes the reply (or the timeout) and says what came of it.
    pub finish: Option<
        unsafe extern "C" fn(
            meter: *mut c_void,
            reply: RawReply,
            now: RawTime,
            out: *mut RawOutcome,
            message: *mut MessageBuf,
        ) -> Status,
    >,
}

/// Longest device address in a stream event, in bytes (an IEEE EUI-64 is 8, an IMEI in BCD is 8).
pub const MAX_EVENT_ADDRESS: usize = 16;

/// An event a stream driver reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawStreamEvent {
    /// [`crate::codes::stream_event`].
    pub kind: u32,
    /// Bytes of `address` in use.
    pub address_len: u32,
    /// The device's address on the stream's network.
    pub address: [u8; MAX_EVENT_ADDRESS],
    /// For `READING`.
    pub reading: RawReading,
}

/// The entry points of a stream driver (Zigbee coordinator, modem): bytes in, bytes out, ticks of time,
/// events out.
#[repr(C)]
#[derive(Debug)]
pub struct StreamDriverVTable {
    /// `size_of::<StreamDriverVTable>()` in the plugin.
    pub size: usize,
    /// Makes the per-stream state from its config (a TOML fragment).
    pub open: Option<
        unsafe extern "C" fn(
            config: StrRef,
            now: RawTime,
            out_stream: *mut *mut c_void,
            message: *mut MessageBuf,
        ) -> Status,
    >,
    /// Frees the per-stream state.
    pub close: Option<unsafe extern "C" fn(stream: *mut c_void)>,
    /// Bytes received from the device.
    pub on_bytes: Option<
        unsafe extern "C" fn(
            stream: *mut c_void,
            bytes: BytesRef,
            message: *mut MessageBuf,
        ) -> Status,
    >,
    /// Bytes to send to the device: writes at most `cap` into `out` and sets `*out_len` (0: nothing).
    pub poll_transmit: Option<
        unsafe extern "C" fn(
            stream: *mut c_void,
            out: *mut u8,
            cap: usize,
            out_len: *mut usize,
            message: *mut MessageBuf,
        ) -> Status,
    >,
    /// Time has passed.
    pub on_tick: Option<
        unsafe extern "C" fn(stream: *mut c_void, now: RawTime, message: *mut MessageBuf) -> Status,
    >,
    /// The next event, if any: sets `*out_has` to 1 and fills `*out`, or sets `*out_has` to 0.
    pub poll_event: Option<
        unsafe extern "C" fn(
            stream: *mut c_void,
            out: *mut RawStreamEvent,
            out_has: *mut u8,
            message: *mut MessageBuf,
        ) -> Status,
    >,
    // ---- API 1.1: entries appended after this point; a 1.0 table ends here
    // ([`STREAM_VTABLE_1_0_SIZE`]) and the host treats them as absent.
    /// A command from the host for a device behind the stream ("read these attributes", "top up this
    /// meter"), as UTF-8 text in the driver's documented command language (JSON for `znp`). `OK` when
    /// accepted (its result comes later as a notice), `TASK_REJECTED` with the reason otherwise.
    pub command: Option<
        unsafe extern "C" fn(
            stream: *mut c_void,
            command: StrRef,
            now: RawTime,
            message: *mut MessageBuf,
        ) -> Status,
    >,
    /// The next notice, if any: UTF-8 text in the driver's documented form (a command's result, a
    /// change to the driver's device table). Written like `poll_transmit`: at most `cap` bytes into
    /// `out`, `*out_len` set (0: nothing); `BUFFER_TOO_SMALL` keeps the notice for a larger buffer.
    pub poll_notice: Option<
        unsafe extern "C" fn(
            stream: *mut c_void,
            out: *mut u8,
            cap: usize,
            out_len: *mut usize,
            message: *mut MessageBuf,
        ) -> Status,
    >,
}

/// Size of a [`StreamDriverVTable`] as API 1.0 defined it (up to `poll_event`): a plugin built
/// against API 1.0 declares this size, and the host reads only that far.
pub const STREAM_VTABLE_1_0_SIZE: usize = std::mem::offset_of!(StreamDriverVTable, command);
