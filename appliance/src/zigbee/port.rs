//! The coordinator's byte stream: a serial port (`backend = "linux"`), or our coordinator emulator with
//! its emulated meters in the daemon (`backend = "sim"`), on an in-process stream.

use concentrator_driver_znp::sim::{EmulatedMeter, EmulatorThread, ZnpEmulator};
use concentrator_driver_znp::IeeeAddress;
use concentrator_hal::linux::SerialStreamPort;
use concentrator_hal::sim::SimStream;
use concentrator_hal::{LineSettings, SerialStream};

use crate::config::zigbee::sim_meter_ieee;
use crate::config::{Config, ZigbeeBackend, ZigbeeConfig};

/// Consumption of an emulated Zigbee meter without a `[meter.sim]` table, watts.
const DEFAULT_SIM_LOAD_W: u32 = 800;

/// An open stream to the coordinator.
pub struct OpenPort {
    /// The stream.
    pub stream: Box<dyn SerialStream>,
    /// What it is, for the log and the status.
    pub description: String,
}

impl std::fmt::Debug for OpenPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenPort")
            .field("description", &self.description)
            .finish()
    }
}

/// The emulator of a sim coordinator, built once per daemon run (its network and meters outlive a
/// reopened stream, like a real stick's NV memory).
pub fn emulator(config: &Config, z: &ZigbeeConfig) -> ZnpEmulator {
    let mut emulator = ZnpEmulator::new(z.sim_formed);
    emulator.announce_on_register = z.sim_paired;
    let count = z.sim_meters.as_ref().map_or(0, |n| *n.get_ref());
    for n in 1..=count {
        let ieee = IeeeAddress(sim_meter_ieee(n));
        let mut meter = EmulatedMeter::new(ieee, 0x1000 + n as u16);
        meter.load_w = DEFAULT_SIM_LOAD_W;
        let configured = config.meters.iter().find(|m| {
            m.zigbee
                .as_ref()
                .is_some_and(|c| c.get_ref() == z.name.get_ref())
                && *m.address.get_ref() == ieee.to_string()
        });
        if let Some(sim) = configured.and_then(|m| m.sim.as_ref()) {
            meter.load_w = sim.load_w;
            if sim.start_kwh > 0.0 {
                // The emulated register counts Wh (divisor 1000 kWh).
                meter.summation = (sim.start_kwh * 1000.0).round() as u64;
            }
        }
        if z.sim_paired {
            emulator.add_paired_meter(meter);
        } else {
            emulator.add_meter(meter);
        }
    }
    emulator
}

/// Where a coordinator's stream comes from.
pub enum PortSource {
    /// A serial device.
    Serial {
        /// The path.
        path: String,
        /// Baud rate (8N1).
        baud: u32,
    },
    /// The emulator, running on its own thread; taken by the first open.
    Sim(Box<(Option<ZnpEmulator>, Option<EmulatorThread>)>),
}

impl std::fmt::Debug for PortSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortSource::Serial { path, .. } => write!(f, "Serial({path})"),
            PortSource::Sim(..) => write!(f, "Sim"),
        }
    }
}

impl PortSource {
    /// The source for coordinator `z`.
    pub fn new(config: &Config, z: &ZigbeeConfig) -> PortSource {
        match (z.backend.get_ref(), &z.path) {
            (ZigbeeBackend::Linux, Some(path)) => PortSource::Serial {
                path: path.get_ref().display().to_string(),
                baud: *z.baud.get_ref(),
            },
            // Validation requires a path for linux; without one the emulator stands in.
            _ => PortSource::Sim(Box::new((Some(emulator(config, z)), None))),
        }
    }

    /// Opens the stream.
    pub fn open(&mut self, name: &str) -> Result<OpenPort, String> {
        match self {
            PortSource::Serial { path, baud } => {
                let line = LineSettings::with_format(*baud, "8N1").map_err(|e| e.to_string())?;
                let port = SerialStreamPort::open(name, path, line).map_err(|e| {
                    format!("{e}; check the coordinator's `path` (ls -l /dev/serial/by-id/) and that nothing else holds the port")
                })?;
                Ok(OpenPort {
                    stream: Box::new(port),
                    description: format!("{path} at {baud} baud"),
                })
            }
            PortSource::Sim(sim) => {
                let (fresh, running) = &mut **sim;
                let (host, peer) = SimStream::pair(name);
                let emulator = match (fresh.take(), running.take()) {
                    (Some(e), _) => e,
                    // Reopened: move the emulator (and its network) onto the new stream.
                    (None, Some(thread)) => thread.into_inner(),
                    (None, None) => return Err("the emulator is gone".into()),
                };
                *running = Some(EmulatorThread::spawn(emulator, peer));
                Ok(OpenPort {
                    stream: Box::new(host),
                    description: "sim (coordinator emulator in the daemon)".into(),
                })
            }
        }
    }
}
