//! Builds a first-party driver's cdylib with the same toolchain (a nested `cargo build` into a target
//! directory of its own, as the plugin host's fixtures are built), signs it with a key made for the
//! test, and loads it through the host's loader (`dlopen`). Shared by the `dlt645` and `modbus` driver
//! tests (the latter includes it with `#[path]`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use concentrator_plugin_host::{
    generate_key_pem, Algorithm, Plugin, PluginLoader, PluginPolicy, SigningKey, TrustedKeys,
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("rust-toolchain.toml").exists())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            Path::to_path_buf,
        )
}

/// The nested build's target directory: beside the outer one, shared with the host's plugin fixtures,
/// so that the nested cargo never waits on the outer build's lock.
fn nested_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("plugin-fixtures")
}

/// Builds `crate_name` (with its default features, so the declaration is exported) and returns its
/// shared library.
fn build(crate_name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", crate_name, "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(nested_target_dir())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(&root)
        .status()
        .expect("run cargo to build the driver's cdylib");
    assert!(
        status.success(),
        "building {crate_name} as a cdylib failed: {status}"
    );
    nested_target_dir()
        .join("debug")
        .join(format!("lib{}.so", crate_name.replace('-', "_")))
}

/// The driver's cdylib, copied into a fresh plugin directory, signed by a new Ed25519 key and loaded by
/// a loader that trusts that key.
pub fn load_signed(crate_name: &str, plugin_name: &str) -> Arc<Plugin> {
    let library = build(crate_name);
    let dir = std::env::temp_dir().join(format!(
        "concentrator-driver-cdylib-{}-{plugin_name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the plugin directory");
    let path = dir.join(format!("lib{plugin_name}.so"));
    std::fs::copy(&library, &path).expect("copy the driver's cdylib");
    let (private, public) = generate_key_pem(Algorithm::Ed25519).expect("make a test key");
    SigningKey::from_pem(&private, "test key")
        .expect("read the test key")
        .sign_file(&path)
        .expect("sign the driver");
    let trusted = TrustedKeys::from_pem(&public, "test key").expect("trust the test key");
    let policy = PluginPolicy {
        max_faults: 3,
        require_root_owned: false,
    };
    let plugin = PluginLoader::new(&dir, trusted, policy)
        .load_file(&path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    let _ = std::fs::remove_dir_all(&dir);
    plugin
}
