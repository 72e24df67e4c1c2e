//! Runs third-party protocol peers for the driver plugins' acceptance tests.
//!
//! Who uses it: the tests in `tests/peers/tests/`, which read meters served by implementations we did
//! not write — a Modbus RTU server from **pymodbus** and a DL/T 645 meter from the **`dlt645`** package,
//! both from PyPI — through the `modbus` and `dlt645` driver plugins, the plugin host's bridge and the
//! HAL's serial bus on a pseudo-terminal. The Python side lives in `tests/peers/python/`; its pinned
//! packages are installed by `tests/peers/setup.sh` into `target/peer-venv`.
//!
//! A missing interpreter or package fails the test with the command to run, unless
//! `CONCENTRATOR_ALLOW_SKIP=1` is set (the project's one opt-out, `concentrator-test-prerequisite`),
//! in which case the test says it skipped and the skip is counted in `target/skipped-tests.txt`.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The environment variable that names another Python interpreter to use.
pub const PYTHON_VARIABLE: &str = "CONCENTRATOR_PEER_PYTHON";

/// How long a peer has to open its port and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a peer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No interpreter, or one without the packages.
    #[error("{0}")]
    NotInstalled(String),
    /// The peer did not start.
    #[error("the peer `{script}` did not start: {reason}\n--- its log ---\n{log}")]
    Start {
        /// The script.
        script: String,
        /// What went wrong.
        reason: String,
        /// What it wrote to stderr.
        log: String,
    },
}

/// The repository's root (where `rust-toolchain.toml` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("rust-toolchain.toml").exists())
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            Path::to_path_buf,
        )
}

/// The command that installs what the peer tests need.
pub const INSTALL: &str =
    "bash tests/peers/setup.sh (needs python3 with venv: sudo apt-get install python3-venv; or run bash tests/setup.sh)";

/// [`python`] for a test: the interpreter, or `None` when it or a package is missing and
/// `CONCENTRATOR_ALLOW_SKIP=1` is set (the skip is printed and counted). Without the opt-out a missing
/// interpreter or package fails the calling test with [`INSTALL`].
#[track_caller]
pub fn python_or_skip(modules: &[&str]) -> Option<PathBuf> {
    match python(modules) {
        Ok(python) => Some(python),
        Err(e) => {
            let missing = concentrator_test_prerequisite::Missing::new(e.to_string(), INSTALL);
            // Panics with the fix unless skipping is allowed.
            let skipped = concentrator_test_prerequisite::skip(Some(missing));
            debug_assert!(skipped);
            None
        }
    }
}

/// Runs `tests/peers/setup.sh` (under a lock, since several test binaries may ask at once), so that a
/// fresh machine's `cargo test` installs the pinned peers by itself.
fn install_peers() -> Result<(), PeerError> {
    let root = workspace_root();
    let lock = root.join("target/peer-venv.lock");
    let _ = std::fs::create_dir_all(root.join("target"));
    let status = Command::new("flock")
        .arg(&lock)
        .arg("bash")
        .arg(root.join("tests/peers/setup.sh"))
        .stdin(Stdio::null())
        .status()
        .map_err(|e| PeerError::NotInstalled(format!("cannot run tests/peers/setup.sh: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(PeerError::NotInstalled(format!(
            "tests/peers/setup.sh failed: {status}"
        )))
    }
}

/// The Python interpreter with the peer packages: `$CONCENTRATOR_PEER_PYTHON`, else the venv that
/// `tests/peers/setup.sh` makes (made now if it is missing), else `python3`; checked by importing
/// `modules`.
pub fn python(modules: &[&str]) -> Result<PathBuf, PeerError> {
    let venv = workspace_root().join("target/peer-venv/bin/python");
    if std::env::var_os(PYTHON_VARIABLE).is_none() {
        let usable = venv.exists()
            && Command::new(&venv)
                .args(["-c", &format!("import {}", modules.join(", "))])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
        if !usable {
            install_peers()?;
        }
    }
    let python = match std::env::var_os(PYTHON_VARIABLE) {
        Some(path) => PathBuf::from(path),
        None if venv.exists() => venv,
        None => PathBuf::from("python3"),
    };
    let imports = format!("import {}", modules.join(", "));
    let output = Command::new(&python)
        .args(["-c", &imports])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PeerError::NotInstalled(format!("cannot run {}: {e}", python.display())))?;
    if !output.status.success() {
        return Err(PeerError::NotInstalled(format!(
            "{} cannot `{imports}`: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(python)
}

/// A peer process serving on a pseudo-terminal's slave side; killed when dropped.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    log: PathBuf,
}

impl Peer {
    /// Starts `tests/peers/python/<script> <args…>` with `python` and waits until it prints `ready`.
    pub fn start(python: &Path, script: &str, args: &[String]) -> Result<Peer, PeerError> {
        let path = workspace_root().join("tests/peers/python").join(script);
        let log = std::env::temp_dir().join(format!(
            "concentrator-peer-{}-{script}.log",
            std::process::id()
        ));
        let fail = |reason: String, log_path: &Path| PeerError::Start {
            script: script.to_string(),
            reason,
            log: std::fs::read_to_string(log_path).unwrap_or_default(),
        };
        let stderr = std::fs::File::create(&log).map_err(|e| {
            fail(
                format!("cannot create its log {}: {e}", log.display()),
                &log,
            )
        })?;
        let mut child = Command::new(python)
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", python.display()), &log))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(fail(String::from("no stdout pipe"), &log));
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            let ready = lines.read_line(&mut line).is_ok() && line.trim() == "ready";
            let _ = ready_tx.send(ready);
            // Keep draining so that the peer never blocks on a full pipe.
            let _ = lines.read_to_end(&mut Vec::new());
        });
        let mut peer = Peer { child, log };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(true) => Ok(peer),
            Ok(false) => {
                let status = peer.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(fail(
                    format!("it exited ({status}) before saying ready"),
                    &peer.log,
                ))
            }
            Err(_) => Err(fail(
                format!("it did not say ready within {READY_TIMEOUT:?}"),
                &peer.log,
            )),
        }
    }

    /// What the peer wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Only the child this value started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
