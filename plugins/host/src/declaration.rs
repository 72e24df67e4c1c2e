//! Checking a plugin's declaration before anything in the plugin is called.

use std::ffi::c_void;
use std::fmt;

use concentrator_plugin_api::codes::{driver_kind, panic_strategy};
use concentrator_plugin_api::{
    ApiVersion, BytesRef, InitFn, MessageBuf, MeterDriverVTable, PluginDeclaration, RawOutcome,
    RawReply, RawRequest, RawStreamEvent, RawTask, RawTime, Status, StrRef, StreamDriverVTable,
    ABI_VERSION, API_VERSION, BUILD_TARGET, MAX_NAME_LEN, MAX_TARGET_LEN, MAX_VERSION_LEN,
    STREAM_VTABLE_1_0_SIZE,
};

use crate::error::DeclarationError;

/// What kind of driver a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// An RS485 meter driver (DL/T 645, Modbus).
    Rs485Meter,
    /// A serial-stream coordinator driver (Zigbee).
    StreamCoordinator,
    /// A modem driver.
    Modem,
}

impl DriverKind {
    /// A short name for listings and errors.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Rs485Meter => "rs485-meter",
            DriverKind::StreamCoordinator => "stream-coordinator",
            DriverKind::Modem => "modem",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub(crate) type OpenMeterFn =
    unsafe extern "C" fn(BytesRef, StrRef, *mut *mut c_void, *mut MessageBuf) -> Status;
pub(crate) type CloseFn = unsafe extern "C" fn(*mut c_void);
pub(crate) type BeginFn = unsafe extern "C" fn(
    *mut c_void,
    *const RawTask,
    RawTime,
    *mut RawRequest,
    *mut MessageBuf,
) -> Status;
pub(crate) type IsCompleteFn = unsafe extern "C" fn(*mut c_void, BytesRef, *mut u8) -> Status;
pub(crate) type FinishFn = unsafe extern "C" fn(
    *mut c_void,
    RawReply,
    RawTime,
    *mut RawOutcome,
    *mut MessageBuf,
) -> Status;
pub(crate) type OpenStreamFn =
    unsafe extern "C" fn(StrRef, RawTime, *mut *mut c_void, *mut MessageBuf) -> Status;
pub(crate) type OnBytesFn = unsafe extern "C" fn(*mut c_void, BytesRef, *mut MessageBuf) -> Status;
pub(crate) type PollTransmitFn =
    unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize, *mut MessageBuf) -> Status;
pub(crate) type OnTickFn = unsafe extern "C" fn(*mut c_void, RawTime, *mut MessageBuf) -> Status;
pub(crate) type PollEventFn =
    unsafe extern "C" fn(*mut c_void, *mut RawStreamEvent, *mut u8, *mut MessageBuf) -> Status;
pub(crate) type CommandFn =
    unsafe extern "C" fn(*mut c_void, StrRef, RawTime, *mut MessageBuf) -> Status;

/// The checked entry points of a meter driver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MeterEntries {
    pub open: OpenMeterFn,
    pub close: CloseFn,
    pub begin: BeginFn,
    pub is_complete: IsCompleteFn,
    pub finish: FinishFn,
}

/// The checked entry points of a stream driver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamEntries {
    pub open: OpenStreamFn,
    pub close: CloseFn,
    pub on_bytes: OnBytesFn,
    pub poll_transmit: PollTransmitFn,
    pub on_tick: OnTickFn,
    pub poll_event: PollEventFn,
    /// API 1.1; `None` for a plugin whose table ends at `poll_event`.
    pub command: Option<CommandFn>,
    /// API 1.1; `None` for a plugin whose table ends at `poll_event`.
    pub poll_notice: Option<PollTransmitFn>,
}

#[derive(Debug, Clone)]
pub(crate) enum Entries {
    Meter(MeterEntries),
    Stream(StreamEntries),
    /// A meter driver in a child process (the isolated mode).
    Child(std::sync::Arc<crate::child::Supervisor>),
}

/// A declaration that passed every check.
#[derive(Debug)]
pub(crate) struct Checked {
    pub name: String,
    pub version: String,
    pub kind: DriverKind,
    pub api_version: ApiVersion,
    pub init: InitFn,
    pub entries: Entries,
}

/// Reads a bounded UTF-8 string from a declaration.
///
/// # Safety
/// When `s.ptr` is non-null and `s.len <= max`, it must point to `s.len` readable bytes that live forever.
unsafe fn bounded_str(
    s: &StrRef,
    field: &'static str,
    max: usize,
) -> Result<String, DeclarationError> {
    let bad = |reason: String| DeclarationError::BadString { field, reason };
    if s.len == 0 {
        return Err(bad(String::from("is empty")));
    }
    if s.len > max {
        return Err(bad(format!(
            "is {} bytes long; at most {max} are allowed",
            s.len
        )));
    }
    // SAFETY: length bounded above; the caller guarantees the pointer (null is handled by `as_bytes`).
    let bytes = unsafe { s.as_bytes() }.ok_or_else(|| bad(String::from("is a null pointer")))?;
    let text = std::str::from_utf8(bytes).map_err(|_| bad(String::from("is not UTF-8")))?;
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(format!(
            "`{}` contains whitespace or control characters",
            text.escape_debug()
        )));
    }
    Ok(text.to_owned())
}

/// Checks a declaration: ABI version first (nothing else is read before it matches), then target, panic
/// strategy, API version, strings, kind and entry points.
///
/// # Safety
/// `declaration` is null or points to readable memory holding at least a `u32`, and, when that equals
/// [`ABI_VERSION`], a whole [`PluginDeclaration`] whose pointers refer to memory that lives forever
/// (a library is never unloaded; a static driver is `'static`).
pub(crate) unsafe fn check(
    declaration: *const PluginDeclaration,
) -> Result<Checked, DeclarationError> {
    if declaration.is_null() {
        return Err(DeclarationError::Null);
    }
    // SAFETY: non-null; the ABI fixes a u32 ABI version as the first field of every declaration version.
    let abi_version = unsafe { declaration.cast::<u32>().read_unaligned() };
    if abi_version != ABI_VERSION {
        return Err(DeclarationError::AbiVersion {
            found: abi_version,
            expected: ABI_VERSION,
        });
    }
    // SAFETY: the ABI version matches, so the memory holds a `PluginDeclaration` of our layout.
    let d = unsafe { &*declaration };

    // SAFETY: pointers of a declaration live forever (caller's guarantee); lengths are bounded.
    let target = unsafe { bounded_str(&d.target, "target triple", MAX_TARGET_LEN) }?;
    if target != BUILD_TARGET {
        return Err(DeclarationError::Target {
            found: target,
            expected: BUILD_TARGET,
        });
    }
    if d.panic_strategy != panic_strategy::UNWIND {
        let found = match d.panic_strategy {
            panic_strategy::ABORT => String::from("\"abort\""),
            other => format!("code {other} (unknown)"),
        };
        return Err(DeclarationError::PanicStrategy { found });
    }
    let api = d.api_version;
    if api.major != API_VERSION.major || api.minor > API_VERSION.minor {
        return Err(DeclarationError::ApiVersion {
            found: api,
            host: API_VERSION,
        });
    }
    // SAFETY: as above.
    let name = unsafe { bounded_str(&d.name, "name", MAX_NAME_LEN) }?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(DeclarationError::BadString {
            field: "name",
            reason: format!("`{name}` may only hold ASCII letters, digits, `-` and `_`"),
        });
    }
    // SAFETY: as above.
    let version = unsafe { bounded_str(&d.version, "version", MAX_VERSION_LEN) }?;
    let kind = match d.kind {
        driver_kind::RS485_METER => DriverKind::Rs485Meter,
        driver_kind::STREAM_COORDINATOR => DriverKind::StreamCoordinator,
        driver_kind::MODEM => DriverKind::Modem,
        other => return Err(DeclarationError::Kind(other)),
    };
    if kind == DriverKind::StreamCoordinator && api.minor < 2 {
        return Err(DeclarationError::OldCoordinatorApi { found: api });
    }
    let missing = |missing: String| DeclarationError::Entries {
        kind: kind.name(),
        missing,
    };
    let init = d
        .init
        .ok_or_else(|| missing(String::from("its `init` entry point is null")))?;
    let entries = match kind {
        DriverKind::Rs485Meter => {
            // SAFETY: the pointer is the plugin's static table (caller's guarantee); size checked first.
            let table =
                unsafe { read_table::<MeterDriverVTable>(d.meter.cast()) }.map_err(missing)?;
            let entry = |name: &str| missing(format!("its meter entry point `{name}` is null"));
            Entries::Meter(MeterEntries {
                open: table.open.ok_or_else(|| entry("open"))?,
                close: table.close.ok_or_else(|| entry("close"))?,
                begin: table.begin.ok_or_else(|| entry("begin"))?,
                is_complete: table.is_complete.ok_or_else(|| entry("is_complete"))?,
                finish: table.finish.ok_or_else(|| entry("finish"))?,
            })
        }
        DriverKind::StreamCoordinator | DriverKind::Modem => {
            // SAFETY: as above.
            let table = unsafe { read_stream_table(d.stream) }.map_err(missing)?;
            let entry = |name: &str| missing(format!("its stream entry point `{name}` is null"));
            Entries::Stream(StreamEntries {
                open: table.open.ok_or_else(|| entry("open"))?,
                close: table.close.ok_or_else(|| entry("close"))?,
                on_bytes: table.on_bytes.ok_or_else(|| entry("on_bytes"))?,
                poll_transmit: table.poll_transmit.ok_or_else(|| entry("poll_transmit"))?,
                on_tick: table.on_tick.ok_or_else(|| entry("on_tick"))?,
                poll_event: table.poll_event.ok_or_else(|| entry("poll_event"))?,
                command: table.command,
                poll_notice: table.poll_notice,
            })
        }
    };
    Ok(Checked {
        name,
        version,
        kind,
        api_version: api,
        init,
        entries,
    })
}

/// Reads a stream driver's table: a 1.0 table (up to `poll_event`) or a longer one. The entries a
/// shorter table lacks come back as `None`.
///
/// # Safety
/// As [`read_table`].
unsafe fn read_stream_table(
    table: *const StreamDriverVTable,
) -> Result<StreamDriverVTable, String> {
    if table.is_null() {
        return Err(String::from("its entry-point table is null"));
    }
    // SAFETY: non-null; every table starts with its size.
    let size = unsafe { table.cast::<usize>().read_unaligned() };
    if size >= size_of::<StreamDriverVTable>() {
        // SAFETY: the whole table is there (checked) and static (caller's guarantee).
        let full = unsafe { &*table };
        return Ok(StreamDriverVTable { ..*full });
    }
    if size < STREAM_VTABLE_1_0_SIZE {
        return Err(format!(
            "its entry-point table is {size} bytes, this host needs at least {STREAM_VTABLE_1_0_SIZE}"
        ));
    }
    // SAFETY: the table holds at least the 1.0 fields (checked); each is read through a raw place
    // without making a reference to the (shorter) whole.
    unsafe {
        Ok(StreamDriverVTable {
            size,
            open: (&raw const (*table).open).read(),
            close: (&raw const (*table).close).read(),
            on_bytes: (&raw const (*table).on_bytes).read(),
            poll_transmit: (&raw const (*table).poll_transmit).read(),
            on_tick: (&raw const (*table).on_tick).read(),
            poll_event: (&raw const (*table).poll_event).read(),
            command: None,
            poll_notice: None,
        })
    }
}

/// Reads an entry-point table whose first field is its size.
///
/// # Safety
/// `table` is null or points to a table that starts with a `usize` size and holds that many readable bytes.
unsafe fn read_table<'a, T>(table: *const T) -> Result<&'a T, String> {
    if table.is_null() {
        return Err(String::from("its entry-point table is null"));
    }
    // SAFETY: non-null; every table starts with its size.
    let size = unsafe { table.cast::<usize>().read_unaligned() };
    if size < size_of::<T>() {
        return Err(format!(
            "its entry-point table is {size} bytes, this host needs {}",
            size_of::<T>()
        ));
    }
    // SAFETY: the table is at least as large as `T` (checked) and static (caller's guarantee).
    Ok(unsafe { &*table })
}

#[cfg(test)]
mod stream_table_tests {
    use super::*;

    unsafe extern "C" fn open(
        _: StrRef,
        _: RawTime,
        _: *mut *mut c_void,
        _: *mut MessageBuf,
    ) -> Status {
        Status::OK
    }
    unsafe extern "C" fn close(_: *mut c_void) {}
    unsafe extern "C" fn on_bytes(_: *mut c_void, _: BytesRef, _: *mut MessageBuf) -> Status {
        Status::OK
    }
    unsafe extern "C" fn poll_transmit(
        _: *mut c_void,
        _: *mut u8,
        _: usize,
        _: *mut usize,
        _: *mut MessageBuf,
    ) -> Status {
        Status::OK
    }
    unsafe extern "C" fn on_tick(_: *mut c_void, _: RawTime, _: *mut MessageBuf) -> Status {
        Status::OK
    }
    unsafe extern "C" fn poll_event(
        _: *mut c_void,
        _: *mut RawStreamEvent,
        _: *mut u8,
        _: *mut MessageBuf,
    ) -> Status {
        Status::OK
    }
    unsafe extern "C" fn command(
        _: *mut c_void,
        _: StrRef,
        _: RawTime,
        _: *mut MessageBuf,
    ) -> Status {
        Status::OK
    }

    fn table(size: usize) -> StreamDriverVTable {
        StreamDriverVTable {
            size,
            open: Some(open),
            close: Some(close),
            on_bytes: Some(on_bytes),
            poll_transmit: Some(poll_transmit),
            on_tick: Some(on_tick),
            poll_event: Some(poll_event),
            command: Some(command),
            poll_notice: Some(poll_transmit),
        }
    }

    #[test]
    fn a_1_0_table_loads_without_the_1_1_entries() {
        let full = table(size_of::<StreamDriverVTable>());
        // SAFETY: a valid table of the declared size.
        let read = unsafe { read_stream_table(&full) }.unwrap();
        assert!(read.command.is_some() && read.poll_notice.is_some());
        // A 1.0 plugin declares the shorter size; the entries after it are not read.
        let old = table(STREAM_VTABLE_1_0_SIZE);
        // SAFETY: the table is in fact longer than it declares, which is allowed.
        let read = unsafe { read_stream_table(&old) }.unwrap();
        assert!(read.command.is_none() && read.poll_notice.is_none());
        assert!(read.poll_event.is_some());
        let short = table(STREAM_VTABLE_1_0_SIZE - 1);
        // SAFETY: as above.
        let error = unsafe { read_stream_table(&short) }.unwrap_err();
        assert!(error.contains("needs at least"), "{error}");
    }
}
