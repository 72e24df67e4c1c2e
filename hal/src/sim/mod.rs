//! The simulation backend: virtual RS485 buses with virtual devices, a virtual clock, fault injection,
//! in-memory serial streams and GPIO lines.
//!
//! A [`SimBus`] advances its [`SimClock`] by the real wire time of every byte at the bus's line
//! settings, plus each device's reply latency, so a test can state to the microsecond how long a poll
//! cycle takes on a real bus. The clock is either purely virtual (tests: no real waiting) or paced (the
//! daemon on simulated hardware: it also sleeps for real, so the demo runs at the speed of the wire).
//!
//! Devices are anything implementing [`SimDevice`]; protocol-specific meter simulators live with their
//! drivers, not here. Faults ([`Fault`]) are injected per device through a [`SimBusHandle`], which
//! tests keep while the bus itself is owned by a scheduler thread.

mod bus;
mod clock;
mod device;
mod fault;
mod pin;
mod serve;
mod stream;

pub use bus::{DeviceId, SimBus, SimBusHandle, SimBusStats};
pub use clock::SimClock;
pub use device::{ScriptedDevice, SimDevice, SimReply};
pub use fault::Fault;
pub use pin::SimPin;
pub use serve::PtyServer;
pub use stream::{SimStream, SimStreamPeer};
