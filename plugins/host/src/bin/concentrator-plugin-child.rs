//! The isolated mode's child program: `concentrator-plugin-child PLUGIN-PATH`, started by the plugin
//! host with the verified plugin at descriptor 4 and its socket at descriptor 3 (docs/plugins.md §2.8).
//! `concentratord --plugin-child PLUGIN-PATH` does the same.

fn main() {
    let label = std::env::args().nth(1).unwrap_or_default();
    std::process::exit(concentrator_plugin_host::child::serve_child(&label));
}
