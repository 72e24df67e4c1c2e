//! The SDK for writing concentrator driver plugins.
//!
//! Who uses it: meter vendors (and the project's own first-party drivers). A driver is a sans-IO state
//! machine: it never opens a port, spawns a thread or sleeps. It implements one safe trait —
//! [`MeterDriver`] for RS485 meters, [`StreamDriver`] for Zigbee coordinators and modems — and declares
//! itself with one macro; the SDK generates the C entry points, catches every panic and turns it into a
//! status, and forwards the driver's `log` records and panic messages to the host's log.
//!
//! ```
//! use concentrator_plugin_sdk::{MeterDriver, Now, Outcome, Rejection, Reply, Request, Task};
//!
//! #[derive(Debug)]
//! pub struct MyMeter {
//!     address: u8,
//! }
//!
//! impl MeterDriver for MyMeter {
//!     fn open(address: &[u8], _config: &str) -> Result<Self, Rejection> {
//!         match address {
//!             [a] => Ok(MyMeter { address: *a }),
//!             _ => Err("a MyMeter address is one byte".into()),
//!         }
//!     }
//!     fn begin(&mut self, task: &Task, _now: Now) -> Result<Request, Rejection> {
//!         log::debug!("{task} for meter {}", self.address);
//!         Ok(Request::new(vec![self.address, 0x01]))
//!     }
//!     fn is_complete(&mut self, reply: &[u8]) -> bool {
//!         reply.len() >= 2
//!     }
//!     fn finish(&mut self, _reply: Reply<'_>, _now: Now) -> Outcome {
//!         Outcome::Done(Vec::new())
//!     }
//! }
//!
//! concentrator_plugin_sdk::declare_meter_driver!(MyMeter, name = "my-meter", version = "1.0.0");
//! // In the crate that is built as the cdylib the vendor ships:
//! concentrator_plugin_sdk::export_plugin!();
//! ```
//!
//! `docs/plugins.md` walks a vendor from `cargo new` to a signed plugin loaded in the appliance.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod driver;
mod logger;
#[doc(hidden)]
pub mod shim;

pub use concentrator_plugin_api as api;
pub use concentrator_plugin_api::values::{
    Decimal, DeviceException, Phase, Quantity, Reading, RelayCommand, RelayState, StreamEvent,
    Task, Unit, Value,
};
pub use driver::{MeterDriver, Now, Outcome, Rejection, Reply, Request, StreamDriver, Timing};
pub use shim::{meter_declaration, meter_vtable, stream_declaration, stream_vtable};

/// Declares an RS485 meter driver: generates its entry-point table and declaration, and a
/// `pub fn plugin_declaration() -> &'static PluginDeclaration` for static registration with the host.
///
/// `name` is the plugin's name (letters, digits, `-`, `_`; at most 64 bytes); `version` its version.
/// Follow it with [`export_plugin!`] in a crate built as a cdylib.
#[macro_export]
macro_rules! declare_meter_driver {
    ($driver:ty, name = $name:expr, version = $version:expr $(,)?) => {
        static __CONCENTRATOR_METER_VTABLE: $crate::api::MeterDriverVTable =
            $crate::meter_vtable::<$driver>();
        #[doc(hidden)]
        pub static __CONCENTRATOR_PLUGIN_DECLARATION: $crate::api::PluginDeclaration =
            $crate::meter_declaration::<$driver>($name, $version, &__CONCENTRATOR_METER_VTABLE);

        /// This driver's plugin declaration, for static registration with the plugin host.
        pub fn plugin_declaration() -> &'static $crate::api::PluginDeclaration {
            &__CONCENTRATOR_PLUGIN_DECLARATION
        }
    };
}

/// Declares a stream driver (a Zigbee coordinator when `kind = coordinator`, a modem when
/// `kind = modem`), like [`declare_meter_driver!`].
#[macro_export]
macro_rules! declare_stream_driver {
    ($driver:ty, kind = coordinator, name = $name:expr, version = $version:expr $(,)?) => {
        $crate::declare_stream_driver!(@ $driver, $crate::api::codes::driver_kind::STREAM_COORDINATOR, $name, $version);
    };
    ($driver:ty, kind = modem, name = $name:expr, version = $version:expr $(,)?) => {
        $crate::declare_stream_driver!(@ $driver, $crate::api::codes::driver_kind::MODEM, $name, $version);
    };
    (@ $driver:ty, $kind:expr, $name:expr, $version:expr) => {
        static __CONCENTRATOR_STREAM_VTABLE: $crate::api::StreamDriverVTable = $crate::stream_vtable::<$driver>();
        #[doc(hidden)]
        pub static __CONCENTRATOR_PLUGIN_DECLARATION: $crate::api::PluginDeclaration =
            $crate::stream_declaration::<$driver>($kind, $name, $version, &__CONCENTRATOR_STREAM_VTABLE);

        /// This driver's plugin declaration, for static registration with the plugin host.
        pub fn plugin_declaration() -> &'static $crate::api::PluginDeclaration {
            &__CONCENTRATOR_PLUGIN_DECLARATION
        }
    };
}

/// Exports the declaration made by [`declare_meter_driver!`] or [`declare_stream_driver!`] under the
/// symbol the host looks up, so that the cdylib can be loaded.
///
/// A crate linked statically into a binary together with other drivers must not export (the symbols
/// would clash). A vendor's single driver crate may export directly (as `plugins/example-meter` does,
/// behind a default feature); drivers that are also linked into the appliance keep the export in a
/// separate cdylib crate that calls [`export_declaration!`] with the driver's declaration, as
/// `plugins/dlt645-plugin` does, because cargo unifies features across a workspace build and a feature
/// switch alone cannot keep the symbol out.
#[macro_export]
macro_rules! export_plugin {
    () => {
        $crate::export_declaration!(__CONCENTRATOR_PLUGIN_DECLARATION);
    };
}

/// Exports a given `static` [`api::PluginDeclaration`] under the symbol the host looks up. For tests
/// that need a hand-made declaration; drivers use [`export_plugin!`].
#[macro_export]
macro_rules! export_declaration {
    ($declaration:path) => {
        #[doc(hidden)]
        #[unsafe(export_name = "concentrator_plugin_declaration")]
        pub static __CONCENTRATOR_PLUGIN_DECLARATION_EXPORT: $crate::api::DeclarationRef =
            $crate::api::DeclarationRef(&$declaration);
    };
}
