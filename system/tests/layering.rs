//! The crate boundaries docs/ARCHITECTURE.md promises, checked on the manifests and the sources, so that a
//! dependency added back for convenience fails here with the reason rather than slipping in.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every dependency named in any dependency table of a crate's manifest.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(manifest))
        .unwrap_or_else(|e| panic!("cannot read {manifest}: {e}"));
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{manifest} is not TOML: {e}"));
    let mut names = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(table).and_then(|t| t.as_table()) {
            names.extend(t.keys().cloned());
        }
    }
    names
}

/// Files under `dir` (recursively) whose text contains `needle`.
fn files_naming(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            found.extend(files_naming(&p, needle));
        } else if p.extension().is_some_and(|x| x == "rs")
            && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle))
        {
            found.push(p);
        }
    }
    found
}

#[test]
fn the_daemon_names_no_coordinator_driver() {
    let deps = dependencies("appliance/Cargo.toml");
    assert!(
        !deps.iter().any(|d| d == "concentrator-driver-znp"),
        "appliance/Cargo.toml depends on concentrator-driver-znp; the daemon reaches coordinators through \
         the coordinator API (plugins/api) and concentrator-builtin-drivers, and tests that need the ZNP \
         emulator belong in system/tests"
    );
    let users = files_naming(&root().join("appliance"), "concentrator_driver_znp");
    assert!(
        users.is_empty(),
        "these files under appliance/ use concentrator_driver_znp: {users:?}; use the neutral types of \
         plugins/api and plugins/builtin"
    );
}

#[test]
fn the_uplink_does_not_know_the_ledger() {
    let deps = dependencies("uplink/Cargo.toml");
    assert!(
        !deps.iter().any(|d| d == "concentrator-ledger"),
        "uplink/Cargo.toml depends on concentrator-ledger; the ledger's outbox adapter belongs to the \
         daemon (appliance/src/uplink) and the durable sync helper to concentrator-durable"
    );
    let users = files_naming(&root().join("uplink"), "concentrator_ledger");
    assert!(
        users.is_empty(),
        "these files under uplink/ use concentrator_ledger: {users:?}"
    );
}
