//! The concentrator daemon's plugin host.
//!
//! Who uses it: the daemon (`concentratord`: its config loader builds a [`PluginLoader`], its bus
//! scheduler runs tasks through [`MeterSession::run`]) and the `concentrator plugins` command.
//!
//! - [`TrustedKeys`] and [`SigningKey`]: detached Ed25519 or ECDSA P-256 signatures of plugin files.
//! - [`PluginLoader`]: loads signed plugins from the plugin directory and registers drivers linked into
//!   the appliance ([`StaticDriver`]); checks each declaration before calling anything; never unloads.
//! - [`Plugin`]: a loaded driver with its health; after [`PluginPolicy::max_faults`] panics or broken
//!   rules it is quarantined, and every call fails fast with [`TaskError::Quarantined`].
//! - [`MeterSession`]: the bridge that runs a meter driver's task over any
//!   [`concentrator_hal::Rs485Bus`]; [`StreamSession`] does the same for stream drivers.
//!
//! ```
//! use concentrator_hal::sim::{SimBus, SimClock};
//! use concentrator_hal::LineSettings;
//! use concentrator_plugin_host::{PluginLoader, PluginPolicy, StaticDriver, TrustedKeys};
//! use concentrator_plugin_api::values::{Quantity, Task};
//! use concentrator_example_meter::sim::SimExampleMeter;
//!
//! let mut loader = PluginLoader::new("/usr/lib/concentrator/plugins", TrustedKeys::none(), PluginPolicy::default());
//! let plugin = loader.register_static(StaticDriver::new(concentrator_example_meter::plugin_declaration())).unwrap();
//!
//! let clock = SimClock::new_virtual();
//! let mut bus = SimBus::new("bus-1", LineSettings::new(9600, 8, concentrator_hal::Parity::None, 1).unwrap(), clock.clone());
//! bus.attach(SimExampleMeter::new(7));
//! let mut meter = plugin.open_meter(&[7], "model = \"em-1\"").unwrap();
//! let readings = meter.run(&mut bus, &clock, Task::Read(Quantity::EnergyImportTotal)).unwrap().unwrap();
//! assert_eq!(readings[0].to_string(), "energy-import-total = 1234500 Wh");
//! ```
//!
//! The design and the vendor's side are in `docs/plugins.md`.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod bridge;
pub mod child;
mod declaration;
mod error;
mod identity;
mod loader;
mod plugin;
mod signature;
mod stream;
mod versions;

pub use bridge::{
    Exchange, MeterSession, TaskResult, MAX_EXCHANGES, MAX_FRAME, MAX_READINGS, MAX_TIMEOUT,
};
pub use child::{ChildOptions, Isolation};
pub use concentrator_plugin_api::coordinator::{
    CommandRequest as CoordinatorRequest, CoordinatorCommand, CoordinatorEvent, DeviceAddress,
    DeviceInfo, WireReading,
};
pub use concentrator_plugin_api::values::{
    Decimal, DeviceException, Phase, Quantity, Reading, RelayCommand, RelayState, StreamEvent,
    Task, Unit, Value,
};
pub use declaration::DriverKind;
pub use error::{DeclarationError, KeyError, LoadError, SignatureError, TaskError};
pub use loader::{read_declaration, LoadReport, PluginLoader, PluginPolicy, StaticDriver};
pub use plugin::{Plugin, PluginInfo, PluginOrigin, PluginStatus};
pub use signature::{
    generate_key_pem, signature_path, Algorithm, Signature, SigningKey, TrustedKeys, Verified,
};
pub use stream::{StreamSession, MAX_STREAM_FRAME};
pub use versions::{compare_versions, VersionStore};
