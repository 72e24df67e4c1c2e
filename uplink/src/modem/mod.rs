//! The cellular modem: an AT command engine ([`at`]), parsers for its answers ([`parse`]), a blocking
//! port over a HAL serial stream ([`AtPort`]), the supervisor with staged recovery ([`Supervisor`]) and
//! text-mode SMS ([`Supervisor::send_sms`], [`Supervisor::receive_sms`]), the data link through the
//! appliance's privileged pppd unit ([`ppp_unit`]) and a simulated modem for tests and demos ([`sim`]).

pub mod at;
pub mod parse;
mod port;
pub mod ppp_unit;
pub mod sim;
mod supervisor;

use thiserror::Error;

pub use port::AtPort;
pub use supervisor::{
    DataLink, ModemConfig, ModemStatus, NoDataLink, Stage, Supervisor, SupervisorEvent,
};

/// A failure of the modem's port or power key (not of the modem's answers, which are states).
#[derive(Debug, Error)]
pub enum ModemError {
    /// The serial port failed.
    #[error("modem AT port: {0}")]
    Port(#[from] concentrator_hal::HalError),
}
