//! `concentrator`: the installer's and operator's command-line tool.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use concentrator_appliance::cli;

#[derive(Debug, Parser)]
#[command(name = "concentrator", version, about = "Commission, inspect and operate a meter concentrator")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Authentication-vector and cipher tools (Milenage, KASUMI, EEA2/EIA2, SUCI), printing NAME=hex lines.
    Crypto {
        #[command(subcommand)]
        command: cli::crypto::CryptoCommand,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match args.command {
        Command::Crypto { command } => cli::crypto::run(command, &mut out),
    };
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("concentrator: error: {err:#}");
            ExitCode::from(err.exit_code())
        }
    }
}
