//! What the daemon hands every worker that reads meters (the bus workers and the Zigbee coordinators).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::Config;
use crate::drivers::Drivers;
use crate::health::Health;
use crate::prepay::{Prepay, SchedulerHandles};
use crate::status::StatusBoard;
use crate::uplink::UplinkQueue;

/// What the meter-reading workers share with the rest of the daemon.
#[derive(Debug)]
pub struct WorkerContext<'a> {
    /// The configuration (the buses and coordinators, and the meters on each).
    pub config: &'a Config,
    /// The loaded drivers.
    pub drivers: &'a Arc<Drivers>,
    /// The status board.
    pub status: &'a Arc<StatusBoard>,
    /// The workers' health.
    pub health: &'a Health,
    /// Set to stop.
    pub stop: &'a Arc<AtomicBool>,
    /// With `[ledger]`: where readings go.
    pub prepay: Option<&'a Prepay>,
    /// With `[uplink]`: the outbox readings are queued in.
    pub queue: Option<&'a UplinkQueue>,
    /// Where each bus's or coordinator's relay handle is registered.
    pub handles: &'a SchedulerHandles,
    /// The meters' time authority (the bus workers read and set their meters' clocks).
    pub time: Option<&'a Arc<crate::timekeeper::TimeKeeper>>,
    /// With a feeder meter: the block balance (the bus workers hand it their energy registers).
    pub balance: Option<&'a Arc<crate::balance::BlockBalance>>,
}
