//! The stable binary interface between the concentrator's plugin host and driver plugins.
//!
//! Who uses it: the plugin host (`concentrator-plugin-host`, in the daemon) and the plugin SDK
//! (`concentrator-plugin-sdk`, which vendors depend on). Vendors normally never touch the raw types
//! here; the SDK generates them. The design, the call flows and the rules are written down in
//! `docs/plugins.md`.
//!
//! What crosses the boundary:
//! - one exported symbol, [`DECLARATION_SYMBOL`], whose value is a [`DeclarationRef`] pointing at a
//!   [`PluginDeclaration`]: ABI version (always the first field, a `u32`), API semver, target triple,
//!   panic strategy, name, version, driver kind and the entry points;
//! - `#[repr(C)]` data and borrowed slices only ([`StrRef`], [`BytesRef`]); every output buffer is
//!   allocated by the host and filled by the plugin up to its capacity, and every per-meter or
//!   per-stream handle is allocated by the plugin and freed by the plugin's `close` entry point;
//! - enumerations travel as plain `u32` codes ([`codes`]), so a plugin that sends an unknown value
//!   cannot cause undefined behaviour in the host; [`values`] converts them to Rust enums with checks.
//!
//! Time is passed into every call that needs it; logging goes through the callback in
//! [`HostServices`].
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod codes;
pub mod coordinator;
mod ffi;
pub mod line;
pub mod values;

pub use ffi::{
    ApiVersion, BytesRef, DeclarationRef, HostServices, InitFn, LogFn, MessageBuf,
    MeterDriverVTable, PluginDeclaration, RawOutcome, RawReading, RawReply, RawRequest,
    RawStreamEvent, RawTask, RawTime, RawTiming, Status, StrRef, StreamDriverVTable,
    MAX_EVENT_ADDRESS, STREAM_VTABLE_1_0_SIZE,
};

/// Version of the binary layout. The host loads a plugin only when this is equal to its own: any change
/// to a `#[repr(C)]` type or an entry point's signature increments it.
pub const ABI_VERSION: u32 = 1;

/// Version of the API's meaning (codes, call flows). A host accepts a plugin with the same major
/// version and a minor version not newer than its own.
///
/// 1.1 appended `command` and `poll_notice` to [`StreamDriverVTable`] (commands from the host to a
/// stream driver's devices, and the driver's notices back).
/// 1.2 defined what a coordinator driver's commands and notices mean ([`coordinator`]: typed, one JSON
/// encoding for every vendor) and that every meter driver's config carries the bus's `line`; a
/// coordinator plugin built against 1.1 (which spoke its own notices) is refused.
/// 1.3 added the meter task `READ_HISTORY` ([`Task::ReadHistory`], a record of the meter's stored
/// interval history, for reading backfill); a 1.2 driver rejects it as a task it does not know.
pub const API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 3,
    patch: 0,
};

/// The name of the one symbol a plugin exports (NUL-terminated for `dlsym`). Its value is a
/// [`DeclarationRef`].
pub const DECLARATION_SYMBOL: &[u8] = b"concentrator_plugin_declaration\0";

/// The target triple this crate was compiled for (from Cargo's `TARGET`). A plugin's declaration carries
/// the one it was built for; the host requires it to equal its own.
pub const BUILD_TARGET: &str = env!("CONCENTRATOR_PLUGIN_TARGET");

/// The panic strategy this crate was compiled with, as a [`codes::panic_strategy`] code. Cargo builds
/// every crate of one build with the same strategy, so this is the plugin's strategy.
pub const BUILD_PANIC_STRATEGY: u32 = if cfg!(panic = "unwind") {
    codes::panic_strategy::UNWIND
} else {
    codes::panic_strategy::ABORT
};

/// Longest plugin name the host accepts, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest plugin version string the host accepts, in bytes.
pub const MAX_VERSION_LEN: usize = 64;
/// Longest target triple the host accepts, in bytes.
pub const MAX_TARGET_LEN: usize = 128;
