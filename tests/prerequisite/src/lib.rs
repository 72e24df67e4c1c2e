//! What a test does when this machine lacks something it needs: a program (Mosquitto), a privilege
//! (root for network namespaces), a Python peer, a hardware device named by an environment variable.
//!
//! Who uses it: the tests of every crate that start outside programs or need hardware (uplink's testkit
//! for Mosquitto and link cuts, so the appliance's, head-end's and system's tests through it; the peer
//! tests; the Pi's hardware-in-the-loop tests).
//!
//! The rule (docs in README.md, "Run the tests"): a missing prerequisite FAILS the test, with what is
//! missing and the command that supplies it. Only when [`ALLOW_SKIP`]`=1` is set does the test skip; then
//! it says so on the terminal (outside the test harness's captured output) and appends a line to
//! `target/skipped-tests.txt`, which `tests/skipped-summary.sh` counts after the run (`.ci/run` fails
//! when `CI=true` and anything was skipped without the opt-out).
//!
//! ```no_run
//! use concentrator_test_prerequisite::{program, skip};
//! # fn a_test() {
//! if skip(program("/usr/sbin/mosquitto", "Mosquitto", "sudo apt-get install mosquitto")) {
//!     return;
//! }
//! // … the test proper …
//! # }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The one opt-out for the whole project: `CONCENTRATOR_ALLOW_SKIP=1` turns a missing prerequisite from
/// a failure into a counted, printed skip.
pub const ALLOW_SKIP: &str = "CONCENTRATOR_ALLOW_SKIP";
/// The file (under the target directory) that collects one line per skipped test.
pub const SKIPPED_FILE: &str = "skipped-tests.txt";

/// Something this machine lacks, and how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing, for people: "Mosquitto is not installed (/usr/sbin/mosquitto)".
    pub what: String,
    /// The command or step that supplies it: "sudo apt-get install mosquitto".
    pub fix: String,
}

impl Missing {
    /// A missing thing and its fix.
    pub fn new(what: impl Into<String>, fix: impl Into<String>) -> Missing {
        Missing {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// The failure message: what, the fix, and the opt-out.
    pub fn message(&self, test: &str) -> String {
        format!(
            "{test}: {what}: {fix}\n(or set {ALLOW_SKIP}=1 to skip the tests that need it; \
             tests/skipped-summary.sh then counts them)",
            what = self.what,
            fix = self.fix
        )
    }
}

/// `Some(Missing)` when `program` (an absolute path, or a name looked up in `PATH`) is not there.
/// `name` is how people call it, `install` the command that installs it.
pub fn program(program: &str, name: &str, install: &str) -> Option<Missing> {
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    (!found).then(|| Missing::new(format!("{name} is not installed ({program})"), install))
}

/// `Ok(value)` of environment variable `name` when set and not blank, else `Err(Missing)` whose fix
/// says what to set it to (`meaning`, e.g. "the RS485 bus's device, e.g. /dev/ttyUSB0").
pub fn variable(name: &str, meaning: &str) -> Result<String, Missing> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(Missing::new(
            format!("{name} is not set"),
            format!("set {name} to {meaning}"),
        )),
    }
}

/// Whether the calling test is to return now. `None` (nothing missing): false, the test runs.
/// `Some(missing)`: panics with what is missing and the fix, unless [`ALLOW_SKIP`]`=1`; then it prints
/// the skip to the terminal, records it in `target/skipped-tests.txt` and returns true.
#[track_caller]
pub fn skip(missing: Option<Missing>) -> bool {
    let Some(missing) = missing else {
        return false;
    };
    let allowed = std::env::var(ALLOW_SKIP).is_ok_and(|v| v.trim() == "1");
    let test = test_name(std::panic::Location::caller());
    match decide(&test, &missing, allowed, &skipped_file()) {
        Ok(line) => {
            // Straight to the process's stderr: the harness captures only print!/eprint!, and a skip
            // must be seen without --nocapture.
            let _ = writeln!(std::io::stderr(), "SKIPPED {line}");
            true
        }
        #[allow(clippy::panic)]
        Err(message) => panic!("{message}"),
    }
}

/// The decision without the environment: `Ok(line recorded)` when skipping is allowed, else
/// `Err(failure message)`.
pub fn decide(test: &str, missing: &Missing, allowed: bool, file: &Path) -> Result<String, String> {
    if !allowed {
        return Err(missing.message(test));
    }
    let line = format!("{test}: {} ({ALLOW_SKIP}=1)", missing.what);
    let recorded = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
        })
        // One write of one line: O_APPEND keeps lines from parallel test binaries whole.
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    match recorded {
        Ok(()) => Ok(line),
        Err(e) => Err(format!(
            "{test}: skipped ({}), but the skip cannot be recorded in {}: {e}; \
             a skip that is not counted is not allowed",
            missing.what,
            file.display()
        )),
    }
}

/// `$CARGO_TARGET_DIR/skipped-tests.txt`, else `<repository>/target/skipped-tests.txt`.
pub fn skipped_file() -> PathBuf {
    target_dir().join(SKIPPED_FILE)
}

/// The build's target directory, where tests leave reports and artifacts: `$CARGO_TARGET_DIR` (relative
/// to the repository when relative), else `<repository>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || repository_root().join("target"),
        |dir| {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repository_root().join(dir)
            }
        },
    )
}

/// The repository's root (where `rust-toolchain.toml` is), found from this crate's own directory.
pub fn repository_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|p| p.join("rust-toolchain.toml").exists())
        .unwrap_or(here)
        .to_path_buf()
}

/// "binary: test" for the line: the test binary's name without cargo's hash, and the harness's thread
/// name (the test's path), or the caller's file and line where the test runs on the main thread.
fn test_name(caller: &std::panic::Location<'_>) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash))
                if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                name.to_string()
            }
            _ => stem,
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name.to_string(),
        _ => format!("{}:{}", caller.file(), caller.line()),
    };
    format!("{binary} {test}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "concentrator-prerequisite-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_missing_prerequisite_fails_with_the_fix_and_the_opt_out() {
        let dir = scratch("fail");
        let file = dir.join(SKIPPED_FILE);
        let missing = Missing::new(
            "Mosquitto is not installed",
            "sudo apt-get install mosquitto",
        );
        let err = decide("mqtt t1", &missing, false, &file).unwrap_err();
        assert!(
            err.contains("mqtt t1: Mosquitto is not installed: sudo apt-get install mosquitto"),
            "{err}"
        );
        assert!(err.contains("CONCENTRATOR_ALLOW_SKIP=1"), "{err}");
        assert!(!file.exists(), "a failure records no skip");
    }

    #[test]
    fn an_allowed_skip_is_recorded_one_line_each() {
        let dir = scratch("skip");
        let file = dir.join(SKIPPED_FILE);
        let missing = Missing::new("root is needed", "sudo -E cargo test");
        decide("uplink a", &missing, true, &file).unwrap();
        decide("uplink b", &missing, true, &file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("uplink a: root is needed"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unrecordable_skip_fails() {
        let dir = scratch("unrecordable");
        std::fs::create_dir_all(&dir).unwrap();
        // The file's place is a directory: it cannot be appended to.
        let file = dir.join(SKIPPED_FILE);
        std::fs::create_dir_all(&file).unwrap();
        let err = decide("x", &Missing::new("y", "z"), true, &file).unwrap_err();
        assert!(err.contains("cannot be recorded"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn programs_are_found_by_path_or_in_path() {
        assert_eq!(program("/bin/sh", "sh", "-"), None);
        assert_eq!(program("sh", "sh", "-"), None);
        let missing = program(
            "/nonexistent/mosquitto",
            "Mosquitto",
            "sudo apt-get install mosquitto",
        )
        .unwrap();
        assert_eq!(
            missing.what,
            "Mosquitto is not installed (/nonexistent/mosquitto)"
        );
        assert_eq!(missing.fix, "sudo apt-get install mosquitto");
    }

    #[test]
    fn a_skip_call_with_nothing_missing_runs_the_test() {
        assert!(!skip(None));
    }
}
