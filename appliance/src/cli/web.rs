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
    /// Read a tenant's BAL PIN (4 to 8 digits) from standard input and print its scrypt hash for
    /// `[modem] bal_pins_file` (docs/install.md, *The SMS path*).
    HashPin,
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
        WebCommand::HashPin => {
            let mut line = String::new();
            input.read_line(&mut line).context("reading the PIN")?;
            let pin = line.trim();
            if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CliError::usage(
                    "a BAL PIN is 4 to 8 digits (the tenant texts it from a phone keypad)",
                ));
            }
            let hash = concentrator_mpc::password::hash(pin)
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

    #[test]
    fn pins_are_hashed_and_non_pins_refused() {
        let mut out = Vec::new();
        run(WebCommand::HashPin, &mut "4711\n".as_bytes(), &mut out).unwrap();
        let hash = String::from_utf8(out).unwrap();
        assert!(concentrator_mpc::password::verify("4711", hash.trim()).unwrap());
        assert!(!hash.contains("4711"));
        for bad in ["12\n", "12a4\n", "123456789\n"] {
            let e = run(WebCommand::HashPin, &mut bad.as_bytes(), &mut Vec::new()).unwrap_err();
            assert!(e.to_string().contains("4 to 8 digits"), "{e}");
        }
    }
}
