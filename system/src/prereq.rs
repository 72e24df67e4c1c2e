//! What the whole-system tests need from the machine, and the one way they may do without it: a
//! missing Mosquitto fails the test with the install command, unless `CONCENTRATOR_ALLOW_SKIP=1` is set;
//! then the test prints `SKIPPED` and appends a line to `target/skipped-tests.txt` (`.ci/run` and the
//! README's test command report how many were skipped).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::broker;

/// The opt-out variable.
pub const ALLOW_SKIP: &str = "CONCENTRATOR_ALLOW_SKIP";

/// Whether `test` can run: `Ok(true)` with Mosquitto installed. Without it, an error with the install
/// command (the test fails with it), or `Ok(false)` after recording the skip when [`ALLOW_SKIP`] is `1`.
pub fn mosquitto_or_skip(test: &str) -> Result<bool, String> {
    let allow = std::env::var(ALLOW_SKIP).as_deref() == Ok("1");
    decide(
        test,
        broker::find_mosquitto().is_some(),
        allow,
        &target_file("skipped-tests.txt"),
    )
}

fn decide(test: &str, installed: bool, allow_skip: bool, skipped: &Path) -> Result<bool, String> {
    if installed {
        return Ok(true);
    }
    let why = "no Mosquitto on this machine (/usr/sbin/mosquitto or on PATH)";
    if !allow_skip {
        return Err(format!(
            "{test}: {why}; install it with `sudo apt-get install mosquitto` (or set {ALLOW_SKIP}=1 to skip, and the skip is counted in target/skipped-tests.txt)"
        ));
    }
    println!("SKIPPED {test}: {why}");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skipped)
        .and_then(|mut f| writeln!(f, "{test}: {why}"));
    if let Err(e) = written {
        eprintln!(
            "{test}: cannot record the skip in {}: {e}",
            skipped.display()
        );
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
        .map(Path::to_path_buf);
    target.unwrap_or_else(|| PathBuf::from("target")).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mosquitto_fails_with_the_install_command_unless_skipping_is_allowed() {
        let dir = std::env::temp_dir().join(format!("prereq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("skipped-tests.txt");
        assert_eq!(decide("t", true, false, &file), Ok(true));
        let err = decide("t", false, false, &file).unwrap_err();
        assert!(err.contains("sudo apt-get install mosquitto"), "{err}");
        assert!(!file.exists(), "a failure is not a skip");
        assert_eq!(decide("t1", false, true, &file), Ok(false));
        assert_eq!(decide("t2", false, true, &file), Ok(false));
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.starts_with("t1: no Mosquitto"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
