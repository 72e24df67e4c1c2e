//! `concentrator web hash-password`: the `password` value for a user of the web UI's users file
//! (`[web] users`), read from standard input so that it stays out of the shell history.

use std::io::{BufRead, Write};

use anyhow::Context;

use super::CliError;

/// Subcommands of `concentrator web`.
#[derive(Debug, clap::Subcommand)]
pub enum WebCommand {
    /// Read a password from standard input (one line) and print its scrypt hash for the users file.
    HashPassword,
}

/// The shortest password accepted.
pub const MIN_CHARS: usize = 10;

/// Runs `concentrator web ...`.
pub fn run(
    command: WebCommand,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        WebCommand::HashPassword => {
            let mut line = String::new();
            input.read_line(&mut line).context("reading the password")?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.chars().count() < MIN_CHARS {
                return Err(CliError::usage(format!(
                    "the password has {} characters; the web UI's passwords need at least {MIN_CHARS} (the box sits where anyone can plug in a cable)",
                    password.chars().count()
                )));
            }
            let hash = concentrator_mpc::password::hash(password)
                .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
            writeln!(out, "{hash}").context("writing")?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_short_passwords_are_refused() {
        let mut out = Vec::new();
        run(
            WebCommand::HashPassword,
            &mut "correct horse battery\n".as_bytes(),
            &mut out,
        )
        .unwrap();
        let hash = String::from_utf8(out).unwrap();
        assert!(concentrator_mpc::password::verify("correct horse battery", hash.trim()).unwrap());
        let e = run(
            WebCommand::HashPassword,
            &mut "short\n".as_bytes(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("at least 10"), "{e}");
    }
}
