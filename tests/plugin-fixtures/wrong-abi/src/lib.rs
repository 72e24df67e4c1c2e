//! Plugin-host test fixture (wrong-abi): a working meter driver whose declaration is wrong in one field, which
//! the host must refuse before calling anything.

use concentrator_fixture_common::QuietMeter;
#[allow(unused_imports)]
use concentrator_plugin_sdk::api::{MeterDriverVTable, PluginDeclaration, StrRef};

static TABLE: MeterDriverVTable = concentrator_plugin_sdk::meter_vtable::<QuietMeter>();
static DECLARATION: PluginDeclaration = PluginDeclaration {
    abi_version: 999,
    ..concentrator_plugin_sdk::meter_declaration::<QuietMeter>("wrong-abi", "0.1.0", &TABLE)
};

concentrator_plugin_sdk::export_declaration!(DECLARATION);
