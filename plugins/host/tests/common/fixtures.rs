//! Builds the plugin cdylibs the tests load (the example vendor plugin and the bad-plugin fixtures) with
//! the same toolchain, and prepares plugin directories, keys and signatures. Shared by the host's tests
//! and the appliance's CLI tests (included with `#[path]`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use concentrator_plugin_host::{generate_key_pem, Algorithm, SigningKey};

/// The repository's root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("rust-toolchain.toml").exists())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            Path::to_path_buf,
        )
}

/// A target directory of its own, so the nested cargo does not wait on the outer build's lock.
fn fixture_target_dir() -> PathBuf {
    let outer = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    outer.join("plugin-fixtures")
}

fn cargo(args: &[&str], manifest: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(manifest)
        .args(args)
        .arg("--target-dir")
        .arg(fixture_target_dir())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(workspace_root())
        .status()
        .expect("run cargo to build the plugin fixtures");
    assert!(
        status.success(),
        "building the plugin fixtures failed: {status}"
    );
}

/// Builds every fixture once per test process; returns the directory holding the `.so` files.
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        cargo(
            &["-p", "concentrator-example-meter"],
            &root.join("Cargo.toml"),
        );
        cargo(
            &["--workspace"],
            &root.join("tests/plugin-fixtures/workspace/Cargo.toml"),
        );
        fixture_target_dir().join("debug")
    })
}

/// Builds one package of the repository's workspace (a driver's cdylib crate) into the fixtures'
/// target directory; returns its shared library.
pub fn build_package(crate_name: &str) -> PathBuf {
    cargo(&["-p", crate_name], &workspace_root().join("Cargo.toml"));
    fixture_target_dir()
        .join("debug")
        .join(format!("lib{}.so", crate_name.replace('-', "_")))
}

/// The built shared library of a crate (`concentrator-example-meter`, `concentrator-fixture-wrong-abi`).
pub fn library(crate_name: &str) -> PathBuf {
    built().join(format!("lib{}.so", crate_name.replace('-', "_")))
}

/// A fresh, empty directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "concentrator-plugin-tests-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A vendor key pair written into `dir` as `<name>.pem` (private) and `<name>.pub.pem` (public).
pub fn key_pair(dir: &Path, name: &str, algorithm: Algorithm) -> (PathBuf, PathBuf) {
    let (private, public) = generate_key_pem(algorithm).expect("generate a key");
    let (private_path, public_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.pub.pem")),
    );
    std::fs::write(&private_path, private).expect("write the private key");
    std::fs::write(&public_path, public).expect("write the public key");
    (private_path, public_path)
}

/// Copies a built library into `dir` under `file_name` and, when `key` is given, signs it.
pub fn install(crate_name: &str, dir: &Path, file_name: &str, key: Option<&Path>) -> PathBuf {
    install_file(&library(crate_name), dir, file_name, key)
}

/// Copies the shared library at `library` into `dir` under `file_name` and, when `key` is given, signs it.
pub fn install_file(library: &Path, dir: &Path, file_name: &str, key: Option<&Path>) -> PathBuf {
    let path = dir.join(file_name);
    std::fs::copy(library, &path).expect("copy the plugin");
    if let Some(key) = key {
        // The signature binds the declared name and version; a fixture whose declaration cannot be
        // read (the point of it) is signed under a stand-in name, and refused before that matters.
        let (name, version) = concentrator_plugin_host::read_declaration(library)
            .unwrap_or_else(|_| (String::from("unreadable"), String::from("0.0.0")));
        SigningKey::from_pem_file(key)
            .expect("read the signing key")
            .sign_file(&path, &name, &version)
            .expect("sign the plugin");
    }
    path
}
