//! The first-party drivers the daemon links in, and the simulated hardware that stands in for them.
//!
//! The daemon (appliance/) reaches every driver through the plugin host by its name and every Zigbee
//! coordinator through the coordinator API (plugins/api); the only places that name a driver crate are
//! here: the list of built-in drivers, the decoders behind `concentrator decode`, and the `sim`
//! coordinator (our Z-Stack ZNP emulator on an in-process stream) behind neutral types. A vendor's
//! coordinator plugin is handled exactly like the ZNP driver.

use concentrator_hal::sim::SimStream;
use concentrator_hal::SerialStream;
use concentrator_plugin_host::StaticDriver;

/// The drivers linked into the daemon, registered with the plugin host like loaded plugins.
pub fn drivers() -> [StaticDriver; 3] {
    [
        StaticDriver::new(concentrator_driver_dlt645::plugin_declaration()),
        StaticDriver::new(concentrator_driver_modbus::plugin_declaration()),
        StaticDriver::new(concentrator_driver_znp::plugin_declaration()),
    ]
}

/// A Z-Stack MT frame (as captured from a coordinator's port) as JSON, for `concentrator decode znp`;
/// the error says why the octets are not a valid frame.
pub fn decode_znp(bytes: &[u8]) -> Result<serde_json::Value, String> {
    concentrator_driver_znp::decode_to_json(bytes).map_err(|e| e.to_string())
}

/// The simulated Zigbee coordinator (`backend = "sim"`): a formed or unformed network with emulated
/// Smart Energy meters, served over an in-process stream.
pub mod zigbee_sim {
    use super::*;
    use concentrator_driver_znp::sim::{EmulatedMeter, EmulatorThread, ZnpEmulator};
    use concentrator_driver_znp::IeeeAddress;

    /// One emulated meter.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SimMeter {
        /// Its IEEE address.
        pub ieee: u64,
        /// Its network address.
        pub nwk: u16,
        /// Its load, watts.
        pub load_w: u32,
        /// Its register at start, Wh (zero when not given).
        pub start_wh: u64,
    }

    /// The emulator, built once per daemon run: its network and meters outlive a reopened stream, as a
    /// real stick's NV memory does.
    pub struct SimCoordinator {
        fresh: Option<ZnpEmulator>,
        running: Option<EmulatorThread>,
    }

    impl std::fmt::Debug for SimCoordinator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SimCoordinator")
        }
    }

    impl SimCoordinator {
        /// A coordinator whose network is `formed` (else it forms one when started), with `meters`
        /// already `paired` (announced when the driver registers its endpoint) or waiting for
        /// permit-join.
        pub fn new(formed: bool, paired: bool, meters: &[SimMeter]) -> SimCoordinator {
            let mut emulator = ZnpEmulator::new(formed);
            emulator.announce_on_register = paired;
            for m in meters {
                let mut meter = EmulatedMeter::new(IeeeAddress(m.ieee), m.nwk);
                meter.load_w = m.load_w;
                if m.start_wh > 0 {
                    meter.summation = m.start_wh;
                }
                if paired {
                    emulator.add_paired_meter(meter);
                } else {
                    emulator.add_meter(meter);
                }
            }
            SimCoordinator {
                fresh: Some(emulator),
                running: None,
            }
        }

        /// A new stream to the coordinator named `name`; a reopen moves the running emulator (and its
        /// network) onto the new stream.
        pub fn open(&mut self, name: &str) -> Result<Box<dyn SerialStream>, String> {
            let (host, peer) = SimStream::pair(name);
            let emulator = match (self.fresh.take(), self.running.take()) {
                (Some(e), _) => e,
                (None, Some(thread)) => thread.into_inner(),
                (None, None) => {
                    return Err(
                        "the simulated coordinator's emulator is gone (it panicked); restart the daemon"
                            .into(),
                    )
                }
            };
            self.running = Some(EmulatorThread::spawn(emulator, peer));
            Ok(Box::new(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_drivers_are_built_in_and_a_bad_frame_is_named() {
        assert_eq!(drivers().len(), 3);
        assert!(decode_znp(&[0x00]).is_err());
        let mut sim = zigbee_sim::SimCoordinator::new(
            true,
            true,
            &[zigbee_sim::SimMeter {
                ieee: 0x0012_4B00_0000_0001,
                nwk: 0x1001,
                load_w: 800,
                start_wh: 0,
            }],
        );
        assert!(sim.open("z1").is_ok());
        assert!(sim.open("z1").is_ok(), "a reopen moves the emulator");
    }
}
