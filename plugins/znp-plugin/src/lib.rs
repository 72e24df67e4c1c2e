//! The ZNP (TI Z-Stack 3.x coordinator) driver built as a plugin: a shared library exporting the
//! driver's declaration under the symbol the plugin host looks up. The appliance links the driver in
//! already; this build is for loading a newer driver from the plugin directory (signed, like any
//! vendor's).

concentrator_plugin_sdk::export_declaration!(
    concentrator_driver_znp::plugin::__CONCENTRATOR_PLUGIN_DECLARATION
);
