//! `concentratord`: the concentrator daemon.
//!
//! `concentratord [--config FILE]` runs the daemon (with no file, on the embedded example configuration
//! with simulated buses); `concentratord validate FILE` only checks a configuration (systemd's
//! `ExecStartPre`) and exits 0 when it is usable, 1 with every mistake listed when it is not.
//! `concentratord --plugin-child FILE` is the child process of a plugin configured with
//! `isolation = "process"`; the daemon starts it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use concentrator_appliance::config::{Config, ConfigError};
use concentrator_appliance::{daemon, logging, notify};

#[derive(Debug, Parser)]
#[command(
    name = "concentratord",
    version,
    about = "The meter concentrator daemon"
)]
struct Args {
    /// The configuration file; without one, the built-in example with simulated buses is used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Check a configuration file and exit: 0 when it is usable, 1 with every mistake listed.
    Validate {
        /// The configuration file.
        file: PathBuf,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load_checked(path),
        None => Config::embedded_sim(),
    }
}

fn main() -> ExitCode {
    // An isolated plugin's child (docs/plugins.md §2.8): started by the daemon itself, never by hand.
    let mut raw = std::env::args();
    if raw.nth(1).as_deref() == Some("--plugin-child") {
        let label = raw.next().unwrap_or_default();
        let code = concentrator_plugin_host::child::serve_child(&label);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let args = Args::parse();
    match args.command {
        Some(Command::Validate { file }) => match Config::load_checked(&file) {
            Ok(config) => {
                let warnings = config.plugin_warnings();
                if !warnings.is_empty() {
                    let text = std::fs::read_to_string(&file).unwrap_or_default();
                    eprint!(
                        "{}",
                        concentrator_appliance::config::render_warnings(
                            &file.display().to_string(),
                            &text,
                            &warnings
                        )
                    );
                }
                println!(
                    "{}: ok ({} buses, {} meters{})",
                    file.display(),
                    config.buses.len(),
                    config.meters.len(),
                    match warnings.len() {
                        0 => String::new(),
                        n => format!(
                            "; {} above: the daemon starts, those meters are not read",
                            concentrator_appliance::words::count(n, "warning", "warnings")
                        ),
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run) | None => {
            let config = match load(args.config.as_ref()) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("concentratord: not started");
                    return ExitCode::FAILURE;
                }
            };
            let sink = logging::init(config.gateway.log_level.into());
            let origin = args
                .config
                .as_ref()
                .map_or("the built-in example (simulated buses)".to_string(), |p| {
                    p.display().to_string()
                });
            log::info!("configuration {origin}; logging to {sink:?}");
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                    log::error!("cannot install the handler for signal {signal}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let notifier = notify::Notifier::from_env();
            match daemon::run(&config, &stop, &notifier) {
                Ok(()) if daemon::restart_requested() => {
                    // Commissioning wrote a new configuration: start again on it, same process id.
                    use std::os::unix::process::CommandExt;
                    log::info!("restarting on the new configuration");
                    let exe =
                        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
                    let e = std::process::Command::new(exe)
                        .args(std::env::args_os().skip(1))
                        .exec();
                    log::error!("cannot restart: {e}; systemd restarts the daemon");
                    ExitCode::FAILURE
                }
                // Stopped on the reserve after a last gasp: systemd (Restart=on-failure) starts it
                // again, and it waits for the supply.
                Ok(()) if concentrator_appliance::power::stopping_for_power() => {
                    ExitCode::from(concentrator_appliance::power::EXIT_POWER_FAILED)
                }
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("not started: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
