//! The Modbus RTU driver built as a plugin: a shared library exporting the driver's declaration under the
//! symbol the plugin host looks up. The appliance links the driver in already; this build is for
//! loading a newer driver from the plugin directory (signed, like any vendor's), and for the tests that
//! prove the first-party drivers load through `dlopen` like a vendor's.

concentrator_plugin_sdk::export_declaration!(
    concentrator_driver_modbus::plugin::__CONCENTRATOR_PLUGIN_DECLARATION
);
