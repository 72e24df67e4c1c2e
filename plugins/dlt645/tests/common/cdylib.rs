//! Loads a first-party driver's cdylib build through `dlopen`, signed with a throwaway key, as the
//! appliance loads a vendor's plugin. The build itself is the plugin host's fixture builder.

#[path = "../../../host/tests/common/fixtures.rs"]
mod fixtures;

use std::sync::Arc;

use concentrator_plugin_host::{Algorithm, Plugin, PluginLoader, PluginPolicy, TrustedKeys};

/// Builds `crate_name` (a cdylib), signs a copy named after `plugin_name`, and loads it.
pub fn load_signed(crate_name: &str, plugin_name: &str) -> Arc<Plugin> {
    let library = fixtures::build_package(crate_name);
    let dir = fixtures::scratch_dir(&format!("driver-{plugin_name}"));
    let (private, public) = fixtures::key_pair(&dir, plugin_name, Algorithm::Ed25519);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("create the plugin directory");
    let path = fixtures::install_file(
        &library,
        &plugins,
        &format!("lib{plugin_name}.so"),
        Some(&private),
    );
    let trusted = TrustedKeys::from_pem_files(&[public]).expect("trust the test key");
    let policy = PluginPolicy {
        max_faults: 3,
        require_root_owned: false,
        ..PluginPolicy::default()
    };
    let plugin = PluginLoader::new(&plugins, trusted, policy)
        .load_file(&path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    let _ = std::fs::remove_dir_all(&dir);
    plugin
}
