//! What the whole-system tests need from the machine: Mosquitto. The rule is the project's one, kept in
//! `tests/prerequisite`: a missing Mosquitto fails the test with the install command, unless
//! `CONCENTRATOR_ALLOW_SKIP=1` is set; then the test says it skipped and the skip is counted in
//! `target/skipped-tests.txt` (`.ci/run` and the README's test command report how many were skipped).
//!
//! ```no_run
//! # fn a_test() {
//! use concentrator_system::prereq;
//! if prereq::skip(prereq::mosquitto_missing()) {
//!     return;
//! }
//! # }
//! ```

use std::path::PathBuf;

pub use concentrator_test_prerequisite::{skip, Missing};

use crate::broker;

/// `Some(Missing)` when this machine has no Mosquitto (`/usr/sbin/mosquitto` or on `PATH`).
pub fn mosquitto_missing() -> Option<Missing> {
    broker::find_mosquitto().is_none().then(|| {
        Missing::new(
            "Mosquitto is not installed (/usr/sbin/mosquitto or on PATH)",
            "sudo apt-get install mosquitto",
        )
    })
}

/// `target/<name>`, where the tests leave their reports (the money test's `money-report.txt`).
pub fn target_file(name: &str) -> PathBuf {
    concentrator_test_prerequisite::target_dir().join(name)
}
