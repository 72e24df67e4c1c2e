//! Subcommands of the `concentrator` command-line tool, one module each.
//!
//! Every subcommand returns `Result<(), CliError>`; the binary prints the error on stderr and exits with
//! the error's code (2 for bad input, as clap does for bad arguments; 1 for a failure while doing the work).

pub mod accounts;
pub mod audit;
pub mod crypto;
pub mod decode;
pub mod demo;
pub mod plugins;
pub mod relay;
pub mod scan;
pub mod status;
pub mod topup;
pub mod update;
pub mod web;
pub mod zigbee;

/// An error from a subcommand, with the exit code the binary uses for it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The user's input (an argument's value, a file's content) is wrong; exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The work itself failed (I/O, a device, the store); exit code 1.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }

    /// A usage error (bad value, wrong length, missing argument) with a message that names the thing and the fix.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }
}
