//! What the whole-system tests need from the machine, and the one way they may do without it: a
//! missing Mosquitto fails the test with the install command, unless `CONCENTRATOR_ALLOW_SKIP=1` is set;
//! then the test prints `SKIPPED` and appends a line to `target/skipped-tests.txt` (`.ci/run` and the
//! README's test command report how many were skipped).

use std::io::Write;
use std::path::PathBuf;

use crate::broker;

/// The opt-out variable.
pub const ALLOW_SKIP: &str = "CONCENTRATOR_ALLOW_SKIP";

/// Whether `test` can run: `Ok(true)` with Mosquitto installed. Without it, an error with the install
/// command (the test fails with it), or `Ok(false)` after recording the skip when [`ALLOW_SKIP`] is `1`.
pub fn mosquitto_or_skip(test: &str) -> Result<bool, String> {
    if broker::find_mosquitto().is_some() {
        return Ok(true);
    }
    let why = "no Mosquitto on this machine (/usr/sbin/mosquitto or on PATH)";
    if std::env::var(ALLOW_SKIP).as_deref() != Ok("1") {
        return Err(format!(
            "{test}: {why}; install it with `sudo apt-get install mosquitto` (or set {ALLOW_SKIP}=1 to skip, and the skip is counted in target/skipped-tests.txt)"
        ));
    }
    println!("SKIPPED {test}: {why}");
    let file = target_file("skipped-tests.txt");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| writeln!(f, "{test}: {why}"));
    if let Err(e) = written {
        eprintln!("{test}: cannot record the skip in {}: {e}", file.display());
    }
    Ok(false)
}

/// `target/<name>`: in `CARGO_TARGET_DIR`, else the `target` directory above the running test
/// executable, else `./target`.
pub fn target_file(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().ok();
    let target = exe
        .as_deref()
        .and_then(|e| e.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()))
        .map(std::path::Path::to_path_buf);
    target.unwrap_or_else(|| PathBuf::from("target")).join(name)
}
