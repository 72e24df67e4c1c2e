//! The head-end's errors: each names the thing, the place and what to do about it.

use std::path::{Path, PathBuf};

/// Why a head-end operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HeadEndError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}; {fix}")]
    Io {
        /// What the file is (e.g. "configuration", "CA key").
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What to do.
        fix: &'static str,
    },
    /// The configuration (`headend.toml`) is wrong.
    #[error("configuration {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The provisioning file is wrong.
    #[error("provisioning file {path}: {message}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A key or certificate is missing, unreadable or does not fit.
    #[error("{what} {path}: {reason}")]
    Pki {
        /// Which key or certificate.
        what: &'static str,
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Generating keys or certificates failed.
    #[error("openssl failed while {doing}: {source}")]
    Openssl {
        /// What was being made.
        doing: &'static str,
        /// openssl's error.
        source: openssl::error::ErrorStack,
    },
    /// The MQTT side could not start.
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// Refused because it would overwrite something.
    #[error("{0}")]
    Exists(String),
    /// Refused because it would lose something (money, a subscriber still in use): why and the fix.
    #[error("{0}")]
    Refused(String),
}

impl HeadEndError {
    /// An I/O error on `path`.
    pub fn io(
        what: &'static str,
        path: &Path,
        fix: &'static str,
    ) -> impl FnOnce(std::io::Error) -> HeadEndError {
        let path = path.to_path_buf();
        move |source| HeadEndError::Io {
            what,
            path,
            source,
            fix,
        }
    }

    /// An openssl failure while `doing`.
    pub fn openssl(doing: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> HeadEndError {
        move |source| HeadEndError::Openssl { doing, source }
    }
}

/// Results of this crate.
pub type Result<T, E = HeadEndError> = std::result::Result<T, E>;
