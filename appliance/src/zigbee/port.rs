//! The coordinator's byte stream: a serial port (`backend = "linux"`), or our coordinator emulator with
//! its emulated meters in the daemon (`backend = "sim"`), on an in-process stream.

use concentrator_builtin_drivers::zigbee_sim::{SimCoordinator, SimMeter};
use concentrator_hal::linux::SerialStreamPort;
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
pub fn emulator(config: &Config, z: &ZigbeeConfig) -> SimCoordinator {
    let count = z.sim_meters.as_ref().map_or(0, |n| *n.get_ref());
    let meters: Vec<SimMeter> = (1..=count)
        .map(|n| {
            let ieee = sim_meter_ieee(n);
            let address = format!("{ieee:016x}");
            let configured = config.meters.iter().find(|m| {
                m.zigbee
                    .as_ref()
                    .is_some_and(|c| c.get_ref() == z.name.get_ref())
                    && *m.address.get_ref() == address
            });
            let sim = configured.and_then(|m| m.sim.as_ref());
            SimMeter {
                ieee,
                nwk: 0x1000 + n as u16,
                load_w: sim.map_or(DEFAULT_SIM_LOAD_W, |s| s.load_w),
                // The emulated register counts Wh (divisor 1000 kWh).
                start_wh: sim
                    .filter(|s| s.start_kwh > 0.0)
                    .map_or(0, |s| (s.start_kwh * 1000.0).round() as u64),
            }
        })
        .collect();
    SimCoordinator::new(z.sim_formed, z.sim_paired, &meters)
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
    /// The emulator, running on its own thread from the first open.
    Sim(Box<SimCoordinator>),
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
            _ => PortSource::Sim(Box::new(emulator(config, z))),
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
            PortSource::Sim(sim) => Ok(OpenPort {
                stream: sim.open(name)?,
                description: "sim (coordinator emulator in the daemon)".into(),
            }),
        }
    }
}
