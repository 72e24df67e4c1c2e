//! `concentrator-system`: the whole system on this machine, on simulated meters (the README's first
//! command). Sets up a pilot in `target/system`, starts a broker (Mosquitto if installed, else an embedded
//! one), the head-end and a gateway, registers two customers, and shows the block until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use concentrator_system::{demo, BrokerChoice};

#[derive(Debug, Parser)]
#[command(
    name = "concentrator-system",
    version,
    about = "The whole concentrator system on this machine, on simulated meters"
)]
struct Args {
    /// Where the pilot, the gateway's store and the phone profiles go (emptied first).
    #[arg(long, default_value = "target/system")]
    dir: PathBuf,
    /// Which MQTT broker: Mosquitto when installed (TLS, client certificates, ACL), else rumqttd in
    /// this process on loopback.
    #[arg(long, value_enum, default_value_t = BrokerChoice::Auto)]
    broker: BrokerChoice,
    /// The log on stderr: error, warn (the default: cuts, low credit, problems), info (every reading
    /// and message), debug.
    #[arg(long, default_value = "warn")]
    log: log::LevelFilter,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _sink = concentrator_appliance::logging::init(args.log);
    if std::env::var_os("CONCENTRATOR_BROKER_LOG").is_none() {
        // rumqttd logs every span of every packet at error level; CONCENTRATOR_BROKER_LOG=1 shows them.
        concentrator_appliance::logging::quiet("rumqttd");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("concentrator-system: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    match demo::run(&args.dir, args.broker, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concentrator-system: {e:#}");
            ExitCode::FAILURE
        }
    }
}
