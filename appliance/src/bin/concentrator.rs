//! `concentrator`: the installer's and operator's command-line tool.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use concentrator_appliance::cli;

#[derive(Debug, Parser)]
#[command(
    name = "concentrator",
    version,
    about = "Commission, inspect and operate a meter concentrator"
)]
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
    /// Decode a captured frame (hex) and print it as JSON, or say exactly what is wrong with it.
    Decode {
        #[command(subcommand)]
        command: cli::decode::DecodeCommand,
    },
    /// Driver plugins: list the loaded ones, verify a file's signature, sign a file with a vendor key.
    Plugins {
        #[command(subcommand)]
        command: cli::plugins::PluginsCommand,
    },
    /// Find the meters on a bus (DL/T 645 and Modbus) and print the [[meter]] tables to paste into the
    /// config. Stop the daemon first: it holds the port.
    Scan {
        #[command(flatten)]
        args: cli::scan::ScanArgs,
    },
    /// What the running daemon sees: buses, meters, last readings, statistics and what is wrong.
    Status {
        #[command(flatten)]
        args: cli::status::StatusArgs,
    },
    /// Prepayment accounts: balance, state, last top-up and debt per dwelling.
    Accounts {
        #[command(flatten)]
        args: cli::accounts::AccountsArgs,
    },
    /// Apply a credit token locally (e.g. while the uplink is down); the receipt waits in the outbox.
    Topup {
        #[command(flatten)]
        args: cli::topup::TopupArgs,
    },
    /// Throwaway keys and credit tokens for the prepaid simulation (appliance/examples/prepaid-sim.toml).
    Demo {
        #[command(subcommand)]
        command: cli::demo::DemoCommand,
    },
    /// Zigbee meters while the daemon runs: permit joining, list the devices, remove one.
    Zigbee {
        #[command(subcommand)]
        command: cli::zigbee::ZigbeeCommand,
    },
    /// Test a meter's relay: open or close it through the running daemon's ledger and show the read-back.
    Relay {
        #[command(flatten)]
        args: cli::relay::RelayArgs,
    },
    /// The installer web UI: make password hashes for its users file.
    Web {
        #[command(subcommand)]
        command: cli::web::WebCommand,
    },
    /// The ledger's hash-chained audit log: verify it against the accounts, or export it as JSON lines.
    Audit {
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
    },
    /// Signed A/B updates: make a bundle, apply one to the inactive slot, commit a healthy trial boot.
    Update {
        #[command(subcommand)]
        command: cli::update::UpdateCommand,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match args.command {
        Command::Crypto { command } => cli::crypto::run(command, &mut out),
        Command::Decode { command } => cli::decode::run(command, &mut out),
        Command::Plugins { command } => cli::plugins::run(command, &mut out),
        Command::Status { args } => cli::status::run(args, &mut out),
        Command::Scan { args } => cli::scan::run(args, &mut out),
        Command::Accounts { args } => cli::accounts::run(args, &mut out),
        Command::Topup { args } => cli::topup::run(args, &mut out),
        Command::Audit { command } => cli::audit::run(command, &mut out),
        Command::Demo { command } => cli::demo::run(command, &mut out),
        Command::Zigbee { command } => cli::zigbee::run(command, &mut out),
        Command::Relay { args } => cli::relay::run(args, &mut out),
        Command::Update { command } => cli::update::run(command, &mut out),
        Command::Web { command } => cli::web::run(command, &mut std::io::stdin().lock(), &mut out),
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
